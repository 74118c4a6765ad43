"""``CausalLM``: a Hugging Face causal language model as a scikit-learn estimator.

``X`` is a sequence of texts (strings, tokenised by ``tokenizer``) or of
pre-tokenised id sequences; there is no ``y`` (next-token prediction). The
per-example loss is the mean token cross-entropy of a text over its own
tokens; sequences are right-padded and never given an attention mask, so a
causal model's logits at a text's real positions do not depend on the
padding, and results do not depend on ``batch_size``.
"""

import copy
import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions

from ._functional import resolve_torch_device, resolve_torch_dtype


def token_mean_cross_entropy(logits, ids, mask):
    """Per-sequence mean next-token cross-entropy ``(b,)``.

    ``logits`` ``(b, L, V)``, ``ids`` ``(b, L)`` long, ``mask`` ``(b, L)``
    (1 on real tokens, 0 on padding). Position ``t`` predicts token ``t + 1``;
    only real target tokens count. Written out (``logsumexp`` minus the
    gathered logit) so that it composes with ``torch.func`` transforms.
    """
    z = logits[:, :-1]
    target = ids[:, 1:]
    w = mask[:, 1:].to(z.dtype)
    ce = torch.logsumexp(z, dim=-1) - torch.gather(z, 2, target[..., None])[..., 0]
    return (ce * w).sum(dim=1) / w.sum(dim=1)


class CausalLM(BaseEstimator):
    """A causal language model (optionally a ``peft`` model) as an estimator.

    Only the parameters that require gradients are trained and
    differentiated (for a ``peft`` LoRA model: the LoRA matrices), so
    :class:`~sklearn_groupinf.GroupInfluence` works in their space.

    Parameters
    ----------
    model : torch.nn.Module
        A ``transformers`` causal LM (``model(input_ids=...)`` returns an
        object with ``.logits``), or a ``peft`` model around one. It is
        copied by ``fit``; without ``fit`` (e.g. inside
        :class:`~sklearn.frozen.FrozenEstimator`) it is used as it is.
    tokenizer : callable or None, default=None
        A ``transformers`` tokenizer; required when ``X`` holds strings.
    max_length : int, default=512
        Texts are truncated to this many tokens.
    batch_size : int, default=8
        Sequences per forward pass (and per AdamW step in ``fit``). Results do
        not depend on it.
    lr : float, default=5e-5
        AdamW learning rate.
    max_epochs : int, default=1
        Passes over ``X`` in ``fit``.
    weight_decay : float, default=0.0
        ``lambda`` of the L2 penalty in the objective (see Notes). AdamW's
        own decoupled decay is not used: it is not the gradient of any
        objective, and influence functions need one.
    device : str, default="auto"
        ``"auto"``: CUDA when available, else the CPU.
    dtype : {"float64", "float32"} or None, default=None
        ``None``: float64 on the CPU, float32 on CUDA.
    random_state : int or None, default=None
        Seeds the shuffling of ``fit``.

    Attributes
    ----------
    model_ : torch.nn.Module
        The fine-tuned copy of ``model`` (in evaluation mode).
    n_params_ : int
        Number of trainable parameters (those influence is computed over).
    n_iter_ : int
        Epochs run.

    Notes
    -----
    With ``T_i`` tokens ``x_{i,1..T_i}`` in text ``i``, its loss is
    ``l_i = 1/(T_i - 1) sum_{t=2}^{T_i} -log p_theta(x_{i,t} | x_{i,<t})``
    and the objective in the package's sum form is
    ``J(theta) = sum_i s_i l_i + (weight_decay / 2) ||theta||^2`` over the
    trainable parameters ``theta``; ``fit`` minimises ``J / sum_i s_i`` with
    minibatch AdamW. Every text needs at least two tokens.

    Examples
    --------
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from sklearn_groupinf.torch import CausalLM
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> cfg = GPT2Config(vocab_size=20, n_positions=16, n_embd=8, n_layer=1, n_head=2)
    >>> lm = CausalLM(GPT2LMHeadModel(cfg), max_epochs=2, lr=1e-2, random_state=0)
    >>> X = [[1, 2, 3, 4], [1, 2, 3], [5, 6, 7, 8, 9]]
    >>> before = lm.per_example_loss(X)
    >>> after = lm.fit(X).per_example_loss(X)
    >>> bool(after.mean() < before.mean())
    True
    """

    _parameter_constraints = {
        "model": [object],
        "tokenizer": [callable, None],
        "max_length": [Interval(numbers.Integral, 2, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "max_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "device": [str],
        "dtype": [StrOptions({"float64", "float32"}), None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        model,
        *,
        tokenizer=None,
        max_length=512,
        batch_size=8,
        lr=5e-5,
        max_epochs=1,
        weight_decay=0.0,
        device="auto",
        dtype=None,
        random_state=None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.lr = lr
        self.max_epochs = max_epochs
        self.weight_decay = weight_decay
        self.device = device
        self.dtype = dtype
        self.random_state = random_state

    def __sklearn_is_fitted__(self):
        # a wrapped language model predicts as it is; ``fit`` fine-tunes it
        return True

    # ------------------------------------------------------------- helpers
    def _setup(self):
        """``(module, device, dtype)`` in evaluation mode; the module is ours."""
        device = resolve_torch_device(self.device)
        if self.dtype is None:
            dtype = torch.float64 if device.type == "cpu" else torch.float32
        else:
            dtype = resolve_torch_dtype(self.dtype)
        module = getattr(self, "model_", None)
        if module is None:  # used as given: never modify the user's model
            if not isinstance(self.model, torch.nn.Module):
                raise TypeError(
                    f"model must be a torch.nn.Module (a transformers causal LM "
                    f"or a peft model); got {type(self.model).__name__}."
                )
            module = self.model
            p = next(module.parameters(), None)
            other = p is not None and (p.dtype != dtype or p.device != device)
            if other or module.training:  # a converted copy in eval mode, cached
                cache = getattr(self, "_converted", None)
                if cache is None or cache[0] is not module:
                    cache = (module, copy.deepcopy(module).to(device, dtype).eval())
                    self._converted = cache
                module = cache[1]
        else:
            module.to(device=device, dtype=dtype)
        module.eval()
        return module, device, dtype

    def encode(self, X):
        """Texts -> ``(ids, mask)`` int64 arrays ``(n, L)``, right-padded.

        ``X``: a sequence of strings (needs ``tokenizer``) or of id sequences.
        Each text is truncated to ``max_length`` tokens and must keep two.
        """
        if isinstance(X, str) or not hasattr(X, "__len__"):
            raise TypeError(
                "X must be a sequence of texts (strings) or of token-id "
                f"sequences; got {type(X).__name__}. Wrap a single text in a list."
            )
        if len(X) == 0:
            raise ValueError("X is empty; pass at least one text.")
        seqs = []
        if all(isinstance(x, str) for x in X):
            if self.tokenizer is None:
                raise ValueError(
                    "X holds strings but tokenizer=None; pass the model's "
                    "tokenizer (CausalLM(model, tokenizer=tok)) or token ids."
                )
            enc = self.tokenizer(list(X), truncation=True, max_length=self.max_length)
            seqs = [np.asarray(ids, dtype=np.int64) for ids in enc["input_ids"]]
        else:
            for i, x in enumerate(X):
                a = np.asarray(x)
                if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
                    raise ValueError(
                        f"X[{i}] is neither a string nor a 1-D sequence of token "
                        f"ids (got dtype {a.dtype}, shape {a.shape}); pass all "
                        "texts as strings or all as id sequences."
                    )
                seqs.append(a[: self.max_length].astype(np.int64))
        short = [i for i, s in enumerate(seqs) if len(s) < 2]
        if short:
            raise ValueError(
                f"Texts {short[:5]} have fewer than 2 tokens after tokenisation; "
                "a causal LM's loss needs a token to predict. Drop them."
            )
        L = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), L), dtype=np.int64)
        mask = np.zeros((len(seqs), L), dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, : len(s)], mask[i, : len(s)] = s, 1
        return ids, mask

    @staticmethod
    def logits(module, ids):
        """``(b, L, V)`` logits of right-padded ``ids`` (no attention mask)."""
        return module(input_ids=ids).logits

    def _batch_losses(self, module, ids, mask, device, grad):
        ids_t = torch.as_tensor(ids, device=device)
        mask_t = torch.as_tensor(mask, device=device)
        with torch.set_grad_enabled(grad):
            return token_mean_cross_entropy(self.logits(module, ids_t), ids_t, mask_t)

    # ---------------------------------------------------------------- API
    def fit(self, X, y=None, sample_weight=None):
        """Fine-tune a copy of ``model`` on the texts ``X`` with AdamW.

        Parameters
        ----------
        X : sequence of str or of int sequences
        y : None
            Ignored (next-token prediction).
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : CausalLM
        """
        self._validate_params()
        if y is not None:
            raise ValueError(
                "CausalLM learns next-token prediction from X alone; y must be "
                f"None, got an object of type {type(y).__name__}."
            )
        ids, mask = self.encode(X)
        n = len(ids)
        s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
        if s.shape != (n,) or np.any(s < 0) or not np.all(np.isfinite(s)):
            raise ValueError(
                f"sample_weight must be {n} finite non-negative values; got shape "
                f"{s.shape}."
            )
        if hasattr(self, "model_"):
            del self.model_
        self.model_ = copy.deepcopy(self.model)
        module, device, dtype = self._setup()
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                "model has no trainable parameters (requires_grad); unfreeze the "
                "parameters to fine-tune, e.g. a peft LoRA adapter."
            )
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)
        rng = np.random.RandomState(self.random_state)
        s_t = torch.as_tensor(s, dtype=dtype, device=device)
        s_sum = float(s.sum()) or 1.0
        seed = int(rng.randint(2**31 - 1))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)  # dropout masks follow random_state
            self._train(module, params, opt, ids, mask, s_t, s_sum, rng, device)
        module.eval()
        self.n_iter_ = self.max_epochs
        self.n_params_ = int(sum(p.numel() for p in params))
        return self

    def _train(self, module, params, opt, ids, mask, s_t, s_sum, rng, device):
        """Minibatch AdamW on ``J / sum(s)``; dropout as the model configures it."""
        n = len(ids)
        module.train()
        for _ in range(self.max_epochs):
            order = rng.permutation(n)
            for i0 in range(0, n, self.batch_size):
                b = order[i0 : i0 + self.batch_size]
                opt.zero_grad()
                losses = self._batch_losses(module, ids[b], mask[b], device, True)
                obj = (s_t[b] * losses).sum() / s_sum
                if self.weight_decay > 0:
                    sq = torch.stack([(p * p).sum() for p in params]).sum()
                    obj = obj + 0.5 * self.weight_decay * sq * len(b) / s_sum
                obj.backward()
                opt.step()

    def per_example_loss(self, X):
        """Mean token cross-entropy of each text ``(n_samples,)`` (nats)."""
        module, device, _ = self._setup()
        ids, mask = self.encode(X)
        out = []
        for i0 in range(0, len(ids), self.batch_size):
            sl = slice(i0, i0 + self.batch_size)
            # trim each batch's padding: it changes nothing at real positions
            width = int(mask[sl].sum(axis=1).max())
            losses = self._batch_losses(
                module, ids[sl, :width], mask[sl, :width], device, False
            )
            out.append(losses.detach().cpu().numpy().astype(np.float64))
        return np.concatenate(out)

    def score(self, X, y=None, sample_weight=None):
        """Minus the (weighted) mean per-text loss: higher is better."""
        losses = self.per_example_loss(X)
        return -float(np.average(losses, weights=sample_weight))

    def trainable_parameter_count(self):
        """Number of parameters that require gradients (fitted or as given)."""
        module = getattr(self, "model_", self.model)
        return int(sum(p.numel() for p in module.parameters() if p.requires_grad))
