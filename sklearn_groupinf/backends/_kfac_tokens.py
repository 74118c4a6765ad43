"""K-FAC / EK-FAC for causal language models: examples that are token sequences.

A text ``i`` enters the torch backend as one packed row (right-padded ids and
padding mask); the network's output is its logits ``z_i`` ``(L, V)`` and its
loss the mean token cross-entropy ``l_i = sum_t w_it CE(z_it, x_i,t+1)`` with
``w_it = 1 / (T_i - 1)`` on the ``T_i - 1`` positions that predict a real token
and 0 elsewhere (the last real token and the padding). Its output Hessian is
block-diagonal over positions, ``Lambda_i = blockdiag_t w_it (diag p_it -
p_it p_it')`` (``p_it`` the softmax of ``z_it``), so the Gauss-Newton matrix
``F = sum_i s_i J_i' Lambda_i J_i`` has the output-Hessian factors

* ``fisher="exact"``: one row per (position, class),
  ``u_(t,c) = e_t (x) sqrt(w_it) (diag(sqrt p_it) - p_it sqrt(p_it)')[:, c]``
  (``(L - 1) V`` back-propagations per batch: tiny vocabularies only,
  :data:`MAX_EXACT_ROWS`);
* ``fisher="sampled"`` (the default for texts, as Kronfluence does): per
  draw one row ``u = [sqrt(w_it) (p_it - e_(y_it))]_t / sqrt(m)`` with a
  label ``y_it`` drawn from ``p_it`` independently per position; cross-position
  terms vanish in expectation, so ``E[U_i' U_i] = Lambda_i``.

A ``torch.nn.Linear`` layer (e.g. each matrix of a ``peft`` LoRA adapter)
applied to the token axis sees inputs ``a_it`` and output gradients ``g_it``
per position ``t``; the Kronecker factors treat positions as extra examples
("expand" convention) and count only the loss-carrying positions::

    A = sum_i s_i sum_t m_it a_it a_it' / sum_i s_i (T_i - 1)
    G = sum_i s_i sum_u sum_t g_iut g_iut'

(``m_it`` the 0/1 position mask; output gradients vanish off those positions
anyway, since a causal model's later positions never feed earlier ones). The
per-example gradient is ``D_iu = sum_t g_iut a_it'``, so EK-FAC's corrected
eigenvalues, the removal-gradient products and group sums of
:mod:`~sklearn_groupinf.backends._kfac_group_sums` apply unchanged. Padding
therefore changes nothing: neither the factors nor any gradient.

Trainable parameters outside ``nn.Linear`` layers (layer norms, embeddings)
get the exact GGN diagonal; GPT-2's own ``Conv1D`` layers and weights tied
to another module (GPT-2's ``lm_head`` and token embedding) are refused with
a message: train a LoRA adapter on them instead, or use the exact curvature.

The target curvature is the exact Gauss-Newton matrix of the target's mean
token cross-entropy, applied by products (forward-mode Jacobian-vector
product, the closed-form ``Lambda`` above, a vector-Jacobian product):
:meth:`TextKroneckerBackend.target_hessian_products`.
"""

import numpy as np

from ._kfac import KroneckerCurvature
from ._kfac_layers import _acts
from ._torch_cg import _to_numpy
from ._torch_kfac import KroneckerBackend
from ._torch_kfac_target import TARGET_PRODUCT_BLOCK

#: Largest ``batch rows x factor rows x L x V`` of the exact output-Hessian
#: factors (``fisher="exact"``) held at once (32 Mi values, 256 MiB).
MAX_EXACT_ROWS = 2**25


def unpack(y, V):
    """``(ids (b, L), w (b, L))``: packed rows -> ids and per-position weights.

    ``w[:, t] = mask[:, t + 1] / (T_i - 1)`` (``T_i`` real tokens), 0 at the
    last position: the weight of position ``t``'s prediction in ``l_i``.
    """
    import torch

    L = y.shape[1] // 2
    ids, mask = y[:, :L].long(), y[:, L:]
    w = torch.zeros_like(mask)
    w[:, :-1] = mask[:, 1:]
    w = w / w.sum(1, keepdim=True)
    return ids, w


def token_output_factors(z, y, draws=None):
    """``U (b, C, L V)`` with ``sum_c U_c U_c' = Lambda_i`` (exactly or in mean).

    ``z`` ``(b, L V)`` logits, ``y`` packed rows ``(b, 2L)``; ``draws`` ``None``
    (exact factors) or uniform numbers ``(b, m, L)`` (one label per draw and
    position, drawn from the model's predictive distribution).
    """
    import torch

    z = z.detach()
    b = z.shape[0]
    L = y.shape[1] // 2
    V = z.shape[1] // L
    _, w = unpack(y, V)
    p = torch.softmax(z.reshape(b, L, V), -1)
    sw = w.sqrt()
    if draws is not None:
        m = draws.shape[1]
        cdf = p.cumsum(-1)
        yhat = (cdf[:, None] < draws[..., None]).sum(-1).clamp(max=V - 1)
        onehot = torch.nn.functional.one_hot(yhat, V).to(z.dtype)  # (b, m, L, V)
        U = (p[:, None] - onehot) * sw[:, None, :, None] / m**0.5
        return U.reshape(b, m, L * V)
    pos = torch.nonzero(w.sum(0) > 0)[:, 0]  # positions carrying loss in the batch
    C = len(pos) * V
    if b * C * L * V > MAX_EXACT_ROWS:
        raise MemoryError(
            f"fisher='exact' for texts needs {len(pos)} x {V} (positions x "
            f"vocabulary) back-propagations per batch and {b * C * L * V} values; "
            "it is meant for tiny vocabularies. Use curvature_options="
            "{'fisher': 'sampled'} (the default for texts)."
        )
    sp = p[:, pos].sqrt()  # (b, n_pos, V)
    M = torch.diag_embed(sp) - p[:, pos, :, None] * sp[:, :, None, :]
    rows = M.transpose(2, 3) * sw[:, pos, None, None]  # (b, n_pos, c, V)
    U = z.new_zeros(b, len(pos), V, L, V)
    for j, t in enumerate(pos.tolist()):
        U[:, j, :, t, :] = rows[:, j]
    return U.reshape(b, C, L * V)


def token_ggn_product(z, y, Jv):
    """``Lambda_i (J_i v)`` for tangents ``Jv`` ``(k, b, L V)`` (closed form)."""
    b = z.shape[0]
    L = y.shape[1] // 2
    V = z.shape[1] // L
    _, w = unpack(y, V)
    import torch

    p = torch.softmax(z.detach().reshape(b, L, V), -1)
    t = Jv.reshape(Jv.shape[0], b, L, V)
    out = p * t - p * (p * t).sum(-1, keepdim=True)
    return (out * w[None, :, :, None]).reshape(Jv.shape)


def check_token_layers(module):
    """Refuse trainable ``Conv1D`` layers and tied weights (see the module doc)."""
    owners = {}
    for name, m in module.named_modules(remove_duplicate=False):
        for pname, p in m.named_parameters(recurse=False):
            if p.requires_grad:
                owners.setdefault(id(p), set()).add((name, type(m).__name__))
    conv1d = sorted({n for v in owners.values() for n, t in v if t == "Conv1D"})
    if conv1d:
        raise ValueError(
            f"curvature='kfac'/'ekfac' for a CausalLM factors torch.nn.Linear "
            f"layers; the trainable GPT-2 Conv1D layers {conv1d[:4]} are not "
            "supported. Train a LoRA adapter on them (peft: "
            "target_modules=['c_attn'], fan_in_fan_out=True) or use "
            "curvature='exact'."
        )
    tied = sorted(
        sorted(n for n, _ in v) for v in owners.values() if len({n for n, _ in v}) > 1
    )
    if tied:
        raise ValueError(
            f"curvature='kfac'/'ekfac' for a CausalLM needs every trainable "
            f"weight in one module; {tied[0]} share one (tied weights). Freeze "
            "it (train a LoRA adapter instead) or use curvature='exact'."
        )


class TokenKroneckerCurvature(KroneckerCurvature):
    """K-FAC / EK-FAC of a language model over packed texts (module docstring).

    Parameters as :class:`~sklearn_groupinf.backends._kfac.KroneckerCurvature`;
    ``loss`` is the per-text mean token cross-entropy and ``X`` = ``y`` the
    packed rows (ids and mask).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from sklearn_groupinf.backends._kfac_tokens import TokenKroneckerCurvature
    >>> from sklearn_groupinf.backends._text_factory import PackedLM, TokenMeanLoss
    >>> torch.manual_seed(0) and None
    >>> cfg = GPT2Config(
    ...     vocab_size=10, n_positions=8, n_embd=4, n_layer=1, n_head=1,
    ...     bos_token_id=0, eos_token_id=0)
    >>> gpt = GPT2LMHeadModel(cfg).double().eval()
    >>> gpt = gpt.requires_grad_(False)
    >>> head = torch.nn.Linear(4, 10, bias=False).double()  # a trainable layer
    >>> gpt.lm_head = head
    >>> ids = np.array([[1, 2, 3], [4, 5, 0]]); mask = np.array([[1, 1, 1], [1, 1, 0]])
    >>> X = torch.as_tensor(np.hstack([ids, mask]), dtype=torch.float64)
    >>> curv = TokenKroneckerCurvature(PackedLM(gpt), TokenMeanLoss(), damping=0.1)
    >>> curv = curv.fit(X, X)
    >>> curv.layers_, curv.n_params_
    (['lm.lm_head'], 40)
    >>> v = np.ones(40)
    >>> bool(np.allclose(curv.solve(curv.matvec(v)), v))
    True
    """

    def fit(self, X, y, sample_weight=None):
        """Accumulate the factors over packed texts ``X`` (``y`` = ``X``)."""
        import torch

        check_token_layers(self.module)
        ref = next(p for p in self.module.parameters() if p.requires_grad)
        Xt = torch.as_tensor(X, dtype=ref.dtype, device=ref.device)
        n, L = Xt.shape[0], Xt.shape[1] // 2
        s = (
            torch.ones(n, dtype=ref.dtype, device=ref.device)
            if sample_weight is None
            else torch.as_tensor(sample_weight, dtype=ref.dtype, device=ref.device)
        )
        counts = Xt[:, L:].sum(1) - 1
        self._positions = float((s * counts).sum())
        self._token_draws = self._all_token_draws = None
        if self.fisher == "sampled":
            rng = np.random.default_rng(self.random_state)
            d = rng.random((n, int(self.n_draws), L))
            self._all_token_draws = torch.as_tensor(
                d, dtype=ref.dtype, device=ref.device
            )
        return super().fit(Xt, Xt, sample_weight)

    def _row_sample(self, X, y, s, draws, rows, stream):
        out = super()._row_sample(X, y, s, draws, rows, stream)
        full = self._all_token_draws
        if full is not None:
            idx = self._sample_idx
            self._token_draws = full if idx is None else full[idx]
        return out

    def _position_weight(self, W, T):
        """``sum_i s_i (T_i - 1)``: the weighted count of loss positions."""
        return self._positions

    def _passes(self, X, y, s, draws):
        L = X.shape[1] // 2
        for i0 in range(0, X.shape[0], int(self.batch_size)):
            sl = slice(i0, i0 + int(self.batch_size))
            z = self._rec.forward(self.module, X[sl])
            dr = None if self._token_draws is None else self._token_draws[sl]
            U = token_output_factors(z, X[sl], dr)
            _, w = unpack(X[sl], z.shape[1] // L)
            on = (w > 0).to(X.dtype)[:, None, :]  # (b, 1, L)
            idx = self._recorded_layers()
            acts = {}
            for i in idx:
                a = _acts(self._layout.layers[i], self._rec.inputs[i])
                if a.shape[2] != L:
                    raise ValueError(
                        f"Layer {self._layout.layers[i]['name']!r} is not applied "
                        f"per token (input {tuple(self._rec.inputs[i].shape)}, "
                        f"{L} positions); freeze it or use curvature='exact'."
                    )
                acts[i] = a * on
            yield sl, acts, self._output_gradients(z, U, idx), U


class TextKroneckerBackend(KroneckerBackend):
    """:class:`KroneckerBackend` of a ``CausalLM`` over packed texts.

    The training curvature is :class:`TokenKroneckerCurvature`; the target
    curvature the exact Gauss-Newton matrix of the target's mean token
    cross-entropy, by products (its rank-``target_rank`` factor as for any
    K-FAC backend). Removal gradients are those of the torch backend.
    """

    curvature_class = TokenKroneckerCurvature

    def _target_ggn(self, V):
        """``(k, P)`` torch: target GGN times the rows of ``V``."""
        import torch
        from torch.func import jvp, vjp, vmap

        th = self._theta
        out = torch.zeros_like(V)
        for b in self._batches(self._Xf.shape[0]):
            x, w = self._Xf[b], self._wt[b]
            z, vjp_fn = vjp(lambda t: self._out(t, x), th)
            Jv = vmap(lambda v: jvp(lambda t: self._out(t, x), (th,), (v,))[1])(V)
            LJv = token_ggn_product(z, x, Jv) * w[None, :, None]
            out = out + vmap(lambda u: vjp_fn(u)[0])(LJv)
        return out

    def target_hessian_products(self, V):
        """``V H_f`` ``(k, P)``: exact target Gauss-Newton products (texts)."""
        V = np.asarray(V, dtype=np.float64)
        out = np.empty_like(V)
        for j0 in range(0, len(V), TARGET_PRODUCT_BLOCK):
            block = self._tensor(V[j0 : j0 + TARGET_PRODUCT_BLOCK])
            out[j0 : j0 + len(block)] = _to_numpy(self._target_ggn(block))
        return out
