"""``make_text_backend``: a ``CausalLM`` -> the torch backend over packed texts.

Texts enter the torch backend as one float64 row each: the right-padded
token ids followed by the padding mask (ids are exact in float64 up to
2**53). The module wrapper unpacks a row and returns the flattened logits;
the loss is the per-text mean token cross-entropy, so every calculus of the
torch backend (per-example gradients, exact Hessian products, conjugate
gradients) applies unchanged, in the space of the model's trainable
parameters only (e.g. LoRA matrices).
"""

import numpy as np
import torch

from ..torch._causal_lm import CausalLM, token_mean_cross_entropy
from ._torch import TorchBackend
from ._torch_options import AUTO_KFAC_PARAMS, DEFAULT_TARGET_RANK


class PackedLM(torch.nn.Module):
    """``x`` ``(b, 2L)`` packed ids and mask -> logits ``(b, L * V)``."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, x):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        L = x.shape[1] // 2
        # the math kernel of scaled-dot-product attention is composite, so it
        # supports forward-mode AD (Hessian-vector products); fused ones do not
        with sdpa_kernel(SDPBackend.MATH):
            logits = CausalLM.logits(self.lm, x[:, :L].long())
        return logits.reshape(x.shape[0], -1)


class TokenMeanLoss:
    """Per-text mean token cross-entropy from flattened logits and packed texts."""

    def __call__(self, z, y):
        L = y.shape[1] // 2
        ids, mask = y[:, :L].long(), y[:, L:]
        return token_mean_cross_entropy(z.reshape(z.shape[0], L, -1), ids, mask)


class TextTarget:
    """``phi(y, z)``: the mean token cross-entropy of each target text."""

    def __call__(self, y, z):
        return TokenMeanLoss()(z, y)


class TextEncoder:
    """Texts -> packed float64 rows (features and labels are the same rows)."""

    def __init__(self, lm, device, dtype):
        self.lm, self.device, self.dtype = lm, device, dtype

    def pack(self, X):
        ids, mask = self.lm.encode(X)
        packed = np.concatenate([ids, mask], axis=1).astype(np.float64)
        return torch.as_tensor(packed, dtype=self.dtype, device=self.device)

    def tensor(self, a):
        return torch.as_tensor(
            np.ascontiguousarray(a), dtype=self.dtype, device=self.device
        )

    def __call__(self, X, y=None):
        packed = self.pack(X)
        return packed, packed


def make_text_backend(
    est,
    X,
    y=None,
    *,
    feature_map=None,
    sample_weight=None,
    X_target=None,
    y_target=None,
    target_weight=None,
    target="default",
    curvature="auto",
    curvature_options=None,
    target_rank=None,
):
    """Build the torch backend of a ``CausalLM`` on texts ``X`` (``y`` unused).

    The target is the weighted mean token cross-entropy of ``X_target`` (the
    training texts when ``None``). ``curvature``: ``"exact"`` uses the
    exact Hessian (dense up to 4,096 trainable parameters, conjugate
    gradients above); ``"kfac"`` / ``"ekfac"`` the Kronecker-factored
    Gauss-Newton matrix over the ``nn.Linear`` layers (e.g. LoRA matrices)
    with token positions as extra examples and, by default, labels drawn
    from the model (``curvature_options={"fisher": "sampled"}``; ``"exact"``
    for tiny vocabularies); ``"auto"``: ``"exact"`` up to 4,096 trainable
    parameters, ``"ekfac"`` above.
    """
    if feature_map is not None:
        raise ValueError(
            "A CausalLM cannot be the final step of a Pipeline: its input is "
            "text. Pass the CausalLM (or FrozenEstimator(CausalLM)) itself."
        )
    if target != "default":
        raise ValueError(
            f"target={target!r} is not supported for a CausalLM; its target is "
            "the mean token cross-entropy of X_target (target='default')."
        )
    if y is not None or y_target is not None:
        raise ValueError(
            "A CausalLM predicts the next token of X itself; pass y=None and "
            "y_target=None."
        )
    module, device, dtype = est._setup()
    enc = TextEncoder(est, device, dtype)
    Xp = enc.pack(X)
    Xt = Xp if X_target is None else enc.pack(X_target)
    n, m = len(Xp), len(Xt)
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
    wt = np.ones(m) if target_weight is None else np.asarray(target_weight, float)
    named = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(
            "The CausalLM's model has no trainable parameters (requires_grad): "
            "influence is computed over them. Unfreeze some, e.g. a LoRA adapter."
        )
    opts = dict(curvature_options or {})
    n_params = sum(p.numel() for _, p in named)
    if curvature == "ggn":
        raise ValueError(
            "curvature='ggn' is not available for a CausalLM (its dense output "
            "Hessian is (L V)^2 per text); use 'exact', or 'ekfac' / 'kfac' "
            "(Kronecker-factored Gauss-Newton over the LoRA layers)."
        )
    if curvature == "auto":
        curvature = "ekfac" if n_params > AUTO_KFAC_PARAMS else "exact"
    common = dict(
        sample_weight=enc.tensor(s),
        weight_decay=est.weight_decay,
        mask=[torch.ones_like(p) for _, p in named],
        penalty_form="sum",
        X_target=Xt,
        y_target=Xt,
        target_weight=enc.tensor(wt),
        target=TextTarget(),
        target_name="token_cross_entropy",
        encoder=enc,
        batch_size=opts.get("batch_size") or est.batch_size,
    )
    if curvature in ("kfac", "ekfac"):
        from ._kfac_tokens import TextKroneckerBackend

        return TextKroneckerBackend(
            PackedLM(module),
            TokenMeanLoss(),
            Xp,
            Xp,
            kind=curvature,
            fisher=opts.get("fisher") or "sampled",
            n_draws=opts.get("n_draws") or 1,
            target_rank=DEFAULT_TARGET_RANK if target_rank is None else target_rank,
            target_sketch=opts.get("target_sketch") or "shifts",
            random_state=opts.get("random_state", 0),
            **common,
        )
    return TorchBackend(
        PackedLM(module),
        TokenMeanLoss(),
        Xp,
        Xp,
        curvature="hessian",
        hessian_solver=opts.get("hessian_solver", "auto"),
        cg_tol=opts.get("cg_tol", 1e-10),
        cg_max_iter=opts.get("cg_max_iter", 1000),
        **common,
    )
