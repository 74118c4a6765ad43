"""Kronecker-factored curvature (K-FAC, EK-FAC) of a torch network.

The curvature approximated is the generalised Gauss-Newton matrix (GGN) of the
training objective in sum form, ``F = sum_i s_i J_i' Lambda_i J_i`` (``J_i`` the
Jacobian of example ``i``'s output, ``Lambda_i`` the loss's output Hessian,
``s_i`` the sample weights), damped in per-example units:
``A = F + damping * W * I`` with ``W = sum_i s_i``.

``Lambda_i`` enters through factors ``U_i`` with ``U_i' U_i = Lambda_i``:
exactly (``fisher="exact"``; for softmax cross-entropy
``diag(p) - p p' = L L'`` with ``L = diag(sqrt p) - p sqrt(p)'``) or, for
the "true" Fisher, in expectation from labels drawn from the model's predictive
distribution (``fisher="sampled"``, ``U_i`` rows ``grad_z l(z_i, y_hat) /
sqrt(m)`` for ``m`` draws, seeded). Each row ``u`` of ``U_i`` is back-propagated
once; it gives every supported layer its pre-activation gradients ``g``.

Layers. ``torch.nn.Linear`` and ``torch.nn.Conv2d`` (``groups=1``, zero padding)
with a trainable weight get a Kronecker block ``G (x) A`` acting on the layer's
matrix ``[weight | bias]`` (weight flattened to ``(out, in)`` row-major, for a
convolution ``(out, in_channels * kh * kw)``; the bias, when trainable, is the
extra column of an input augmented with a 1)::

    A = 1 / (W T) * sum_i s_i sum_t a_it a_it'       (a: layer input / patch)
    G =             sum_i s_i sum_u sum_t g_iut g_iut'  (g: output gradient)

``T`` is the number of positions (patches of a convolution, extra leading
dimensions of a linear layer's input; 1 for a plain linear layer). This is the
"expand" convention (KFC of Grosse & Martens): positions are treated as extra
examples and cross-position terms are dropped. The block is exact when ``T = 1``
and ``sum_u g_iu g_iu'`` does not depend on ``i`` (a last linear layer under
squared loss: linear regression) or the inputs ``a_i`` are constant; for
``T > 1`` it also needs spatially uncorrelated, homogeneous output gradients.
K-FAC uses the eigenvalues ``dg_j * da_k`` of ``G (x) A``; EK-FAC keeps the
eigenbasis ``Q_G (x) Q_A`` and replaces them by the exact second moments of the
per-example gradients projected into it,
``sum_i s_i sum_u ((Q_G' D_iu Q_A)_jk)^2`` with ``D_iu = sum_t g_iut a_it'``
(computed layer by layer, a batch at a time). In that eigenbasis EK-FAC's
diagonal is the exact GGN block's, so its Frobenius error is never larger.
With ``correction_rows`` below the number of rows, the second moments come
from a seeded uniform sample of that many rows, scaled by ``n / n_sample``
(an unbiased estimate of the full sum): the correction pass then costs
``n_sample / n`` of a pass. ``factor_rows`` does the same for the sums of
``A``, ``G`` and the diagonal (another seeded sample; ``W`` stays the total
weight of every row).

Every other trainable parameter (normalisation layers, embeddings, grouped or
padded convolutions, a frozen layer's trainable bias) gets the exact GGN
diagonal ``sum_i s_i sum_u (J_i' u)_p^2`` with the same ``U_i``.

Parameter order: the module's trainable parameters in ``named_parameters()``
order, each flattened row-major; this is
``torch.nn.utils.parameters_to_vector(module.parameters())`` when every
parameter is trainable. Peak memory: the factors (``sum_l out_l^2 + in_l^2``),
one batch of layer inputs/outputs and, for EK-FAC, one batch of one layer's
per-example gradients; never ``n x P``.
"""

import numpy as np

from .._hessian import HessianSolver
from ._kfac_apply import KroneckerProducts
from ._kfac_layers import (
    _acts,
    _grads,
    _Layout,
    _loss_name,
    _other_vjps,
    _Recorder,
    output_factors,
)
from ._kfac_products import per_example_products

__all__ = ["KroneckerCurvature", "output_factors", "per_example_products"]

FISHER = ("exact", "sampled")

KINDS = ("kfac", "ekfac")


class KroneckerCurvature(KroneckerProducts, HessianSolver):
    """K-FAC / EK-FAC approximation of the damped Gauss-Newton matrix of a network.

    Parameters
    ----------
    module : torch.nn.Module
        Trained network, evaluated in eval mode (restored afterwards); its
        examples must be independent (no batch statistics).
    loss : {"cross_entropy", "binary_cross_entropy", "squared_error"} or callable
        Per-example loss of the raw outputs ``(n, K)``; a callable
        ``loss(z, y) -> (n,)`` needs ``fisher="exact"``.
    kind : {"ekfac", "kfac"}, default="ekfac"
        EK-FAC corrects the Kronecker eigenvalues (one more pass over the data).
    fisher : {"exact", "sampled"}, default="exact"
        Output-Hessian factors: exact (``K`` back-propagations per batch) or
        labels drawn from the model (``n_draws`` back-propagations).
    damping : float, default=0.0
        ``lambda`` in per-example units: the solver applies
        ``(F + lambda * W * I)^{-1}``, ``W`` the total sample weight.
    n_draws : int, default=1
        Labels drawn per example for ``fisher="sampled"``.
    batch_size : int, default=256
    random_state : int, numpy Generator or None, default=0
        Seed of the drawn labels (drawn once for all rows, so the result does
        not depend on ``batch_size``) and of the rows of ``correction_rows``.
    correction_rows : int or None, default=None
        EK-FAC only: rows whose projected second moments correct the
        eigenvalues (a seeded uniform sample, scaled to all rows, see the
        module docstring); ``None`` or at least ``n``: every row.
    factor_rows : int or None, default=None
        Rows whose sums give the factors ``A``, ``G`` and the diagonal (a
        seeded uniform sample, scaled to all rows); ``None`` or at least
        ``n``: every row.
    penalty : float, array-like of shape (P,) or None, default=None
        Diagonal Hessian of a penalty term of the objective (e.g. weight
        decay in sum form, zero for undecayed biases), added to ``F``. Exact
        for the diagonal parameters and where it is constant over a layer's
        ``[weight | bias]`` block; otherwise the block gets its best diagonal
        in the Kronecker eigenbasis, ``(Q_G^2)' D (Q_A^2)``.

    Attributes
    ----------
    layers_ : list of str
        Names of the Kronecker-factored layers.
    diagonal_parameters_ : list of str
        Trainable parameters outside them (exact GGN diagonal).
    n_params_ : int
    data_weight_ : float
        ``W``.
    factors_ : list of dict
        Per layer: ``A``, ``G``, their eigenpairs ``qa, da, qg, dg`` and the
        eigenvalues ``lam`` (``dg da'`` for K-FAC, corrected for EK-FAC) and
        ``pen``, the penalty's in the same basis.

    Notes
    -----
    See the module docstring for the factors and their exactness conditions.
    ``H`` is ``None`` and ``rcond`` NaN: the solver never forms ``P x P``.

    Examples
    --------
    >>> import torch
    >>> from sklearn_groupinf.backends._kfac import KroneckerCurvature
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Linear(3, 2).double()
    >>> X, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 2).double()
    >>> curv = KroneckerCurvature(net, "squared_error", damping=1e-3).fit(X, y)
    >>> v = torch.randn(8, dtype=torch.float64).numpy()
    >>> bool(abs(curv.solve(curv.matvec(v)) - v).max() < 1e-10)
    True
    """

    H = None
    rcond = float("nan")

    def __init__(
        self,
        module,
        loss,
        *,
        kind="ekfac",
        fisher="exact",
        damping=0.0,
        n_draws=1,
        batch_size=256,
        random_state=0,
        penalty=None,
        correction_rows=None,
        factor_rows=None,
    ):
        self.module = module
        self.loss = loss
        self.kind = kind
        self.fisher = fisher
        self.damping = damping
        self.n_draws = n_draws
        self.batch_size = batch_size
        self.random_state = random_state
        self.penalty = penalty
        self.correction_rows = correction_rows
        self.factor_rows = factor_rows

    # ------------------------------------------------------------------ fit
    def _check_params(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}.")
        if self.fisher not in FISHER:
            raise ValueError(f"fisher must be one of {FISHER}, got {self.fisher!r}.")
        if not (np.isfinite(self.damping) and self.damping >= 0):
            raise ValueError(
                f"damping must be a finite number >= 0, got {self.damping!r}."
            )
        for name in ("correction_rows", "factor_rows"):
            rows = getattr(self, name)
            integral = isinstance(rows, (int, np.integer)) and not isinstance(
                rows, bool
            )
            if rows is not None and not (integral and rows >= 1):
                raise ValueError(f"{name} must be an int >= 1 or None, got {rows!r}.")
        if int(self.n_draws) < 1 or int(self.batch_size) < 1:
            raise ValueError(
                f"n_draws and batch_size must be >= 1, got {self.n_draws!r} and "
                f"{self.batch_size!r}."
            )

    def _passes(self, X, y, s, draws):
        """Yield ``(rows, acts, grads, U)`` per batch: layer inputs and gradients."""
        for i0 in range(0, X.shape[0], int(self.batch_size)):
            sl = slice(i0, i0 + int(self.batch_size))
            z = self._rec.forward(self.module, X[sl])
            U = output_factors(
                self.loss, z, y[sl], None if draws is None else draws[sl]
            )
            idx = self._recorded_layers()
            acts = {i: _acts(self._layout.layers[i], self._rec.inputs[i]) for i in idx}
            yield sl, acts, self._output_gradients(z, U, idx), U

    def _recorded_layers(self):
        """Indices of the factored layers the last forward pass went through."""
        return [i for i in range(len(self._layout.layers)) if i in self._rec.outputs]

    def _output_gradients(self, z, U, idx):
        """Per column ``c`` of ``U``: each layer's output gradient of ``z . U_c``."""
        import torch

        outs = [self._rec.outputs[i] for i in idx]
        grads = []
        for c in range(U.shape[1]):
            gs = torch.autograd.grad(
                z, outs, U[:, c], retain_graph=True, allow_unused=True
            )
            grads.append(
                {
                    i: _grads(self._layout.layers[i], g)
                    for i, g in zip(idx, gs)
                    if g is not None
                }
            )
        return grads

    def fit(self, X, y, sample_weight=None):
        """Accumulate the factors over ``(X, y)`` and eigendecompose them.

        Parameters
        ----------
        X : torch.Tensor of shape (n, ...)
        y : torch.Tensor of shape (n, ...)
            Encoded as the loss expects (class indices for cross-entropy).
        sample_weight : torch.Tensor of shape (n,) or None

        Returns
        -------
        self
        """
        import torch

        self._check_params()
        layout = self._layout = _Layout(self.module)
        ref = next(iter(layout.params.values()))
        X = torch.as_tensor(X, dtype=ref.dtype, device=ref.device)
        y = torch.as_tensor(y, device=ref.device)
        n = X.shape[0]
        s = (
            torch.ones(n, dtype=ref.dtype, device=ref.device)
            if sample_weight is None
            else torch.as_tensor(sample_weight, dtype=ref.dtype, device=ref.device)
        )
        if y.shape[0] != n or s.shape != (n,):
            raise ValueError(
                f"X, y and sample_weight must have the same number of rows, got "
                f"{n}, {y.shape[0]} and {tuple(s.shape)}."
            )
        if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
            raise ValueError("sample_weight must be finite and >= 0.")
        self.data_weight_ = float(s.sum())
        if not self.data_weight_ > 0:
            raise ValueError("sample_weight sums to 0: there is no data to fit.")
        self.n_params_ = layout.n_params
        self.layers_ = [layer["name"] for layer in layout.layers]
        self.diagonal_parameters_ = list(layout.other)
        draws = None
        if self.fisher == "sampled":
            rng = np.random.default_rng(self.random_state)
            m = int(self.n_draws)
            if _loss_name(self.loss) == "squared_error":
                with torch.no_grad():
                    K = self.module(X[:1]).reshape(1, -1).shape[1]
                d = rng.standard_normal((n, m, K))
            else:
                d = rng.random((n, m))
            draws = torch.as_tensor(d, dtype=ref.dtype, device=ref.device)
        training = self.module.training
        self.module.eval()
        try:
            with _Recorder(layout) as self._rec:
                self._fit(X, y, s, draws)
        finally:
            self.module.train(training)
            del self._rec
        return self

    def _fit(self, X, y, s, draws):
        import torch

        layout, W = self._layout, self.data_weight_
        L = len(layout.layers)
        A = [None] * L
        G = [None] * L
        T = [1] * L
        diag = {k: torch.zeros_like(layout.params[k]) for k in layout.other}
        sample = self._row_sample(X, y, s, draws, self.factor_rows, 0)
        self.factor_rows_ = sample[0].shape[0]
        for sl, acts, grads, U in self._passes(*sample):
            sb = sample[2][sl]
            for i, a in acts.items():
                T[i] = a.shape[2]
                Ai = torch.einsum("b,bdt,bet->de", sb, a, a)
                A[i] = Ai if A[i] is None else A[i] + Ai
                for gc in grads:
                    if i in gc:
                        g = gc[i]
                        Gi = torch.einsum("b,bot,bpt->op", sb, g, g)
                        G[i] = Gi if G[i] is None else G[i] + Gi
            if layout.other:
                self._rec.enabled = False
                try:
                    vj = _other_vjps(self.module, layout, sample[0][sl], U)
                finally:
                    self._rec.enabled = True
                for k in layout.other:
                    v = vj[k].reshape(vj[k].shape[0], -1, *diag[k].shape)
                    diag[k] += torch.einsum("b,bc...->...", sb, v**2)
        self.factors_ = []
        for i, layer in enumerate(layout.layers):
            n_in, n_out = layer["n_in"], layer["n_out"]
            Ai = (
                A[i] / self._position_weight(W, T[i])
                if A[i] is not None
                else X.new_zeros(n_in, n_in)
            )
            Gi = G[i] if G[i] is not None else X.new_zeros(n_out, n_out)
            da, qa = _eigh64(Ai)
            dg, qg = _eigh64(Gi)
            if not bool(torch.isfinite(da).all() and torch.isfinite(dg).all()):
                raise FloatingPointError(
                    f"The Kronecker factors of layer {layer['name']!r} have "
                    "non-finite entries (overflow in the activations or the "
                    "loss?). Scale the inputs or check the network for divergence."
                )
            da, dg = da.clamp_min(0), dg.clamp_min(0)
            self.factors_.append(
                {
                    "A": Ai,
                    "G": Gi,
                    "qa": qa,
                    "da": da,
                    "qg": qg,
                    "dg": dg,
                    "lam": dg[:, None] * da[None, :],
                    "T": T[i],
                }
            )
        self._diag = (
            torch.cat([diag[k].reshape(-1) for k in layout.other])
            if layout.other
            else None
        )
        if self.kind == "ekfac":
            sample = self._row_sample(X, y, s, draws, self.correction_rows, 1)
            self.correction_rows_ = sample[0].shape[0]
            self._correct_eigenvalues(*sample)
        self._add_penalty(X)

    def _row_sample(self, X, y, s, draws, rows, stream):
        """``(X, y, s, draws)``: every row, or a seeded uniform sample of
        ``rows`` rows (``stream`` 0: factors, 1: correction) with weights
        scaled by ``n / rows``; ``_sample_idx`` keeps the rows (or None)."""
        import torch

        n = X.shape[0]
        self._sample_idx = None
        if rows is None or rows >= n:
            return X, y, s, draws
        seed = int(np.random.default_rng(self.random_state).integers(2**31))
        rng = np.random.default_rng([seed, stream])
        idx = np.sort(rng.choice(n, int(rows), replace=False))
        it = self._sample_idx = torch.as_tensor(idx, device=X.device)
        scaled = s[it] * (n / len(idx))
        return X[it], y[it], scaled, None if draws is None else draws[it]

    def _position_weight(self, W, T):
        """Normaliser of ``A``: ``W T`` (token models count their positions)."""
        return W * T

    def _add_penalty(self, X):
        """Penalty eigenvalues per block (``pen``) and on the diagonal parameters."""
        import torch

        layout, P = self._layout, self.n_params_
        pen = np.zeros(P) if self.penalty is None else np.asarray(self.penalty, float)
        if pen.ndim == 0:
            pen = np.full(P, float(pen))
        if pen.shape != (P,) or not np.all(np.isfinite(pen)) or np.any(pen < 0):
            raise ValueError(
                f"penalty must be a finite number >= 0 or an array of shape ({P},) "
                f"of them (one per trainable parameter), got shape {pen.shape}."
            )
        pen = torch.as_tensor(pen, dtype=X.dtype, device=X.device)
        for layer, f in zip(layout.layers, self.factors_):
            D = layout.block(pen[:, None], layer)[..., 0]
            f["pen"] = (f["qg"] ** 2).T @ D @ f["qa"] ** 2
        if layout.other:
            self._diag_pen = torch.cat([pen[layout.slices[k]] for k in layout.other])

    def _correct_eigenvalues(self, X, y, s, draws):
        import torch

        lam = [torch.zeros_like(f["lam"]) for f in self.factors_]
        for sl, acts, grads, _ in self._passes(X, y, s, draws):
            sb = s[sl]
            for i, a in acts.items():
                f = self.factors_[i]
                if _rotate_gradients(a.shape, f["qg"].shape[0], len(grads)):
                    # Q_G' D Q_A with D = sum_t g_t a_t' formed first: cheaper
                    # than rotating every position's a_t and g_t when the
                    # positions outnumber the channels
                    for gc in grads:
                        if i in gc:
                            D = torch.einsum("bot,bdt->bod", gc[i], a)
                            D = torch.einsum("op,bod,de->bpe", f["qg"], D, f["qa"])
                            lam[i] += torch.einsum("b,bpe->pe", sb, D**2)
                    continue
                at = torch.einsum("bdt,de->bet", a, f["qa"])
                for gc in grads:
                    if i not in gc:
                        continue
                    gt = torch.einsum("bot,op->bpt", gc[i], f["qg"])
                    if a.shape[2] == 1:
                        lam[i] += torch.einsum(
                            "b,bp,be->pe", sb, gt[..., 0] ** 2, at[..., 0] ** 2
                        )
                    else:
                        D = torch.einsum("bpt,bet->bpe", gt, at)
                        lam[i] += torch.einsum("b,bpe->pe", sb, D**2)
        for f, li in zip(self.factors_, lam):
            f["lam"] = li


def _eigh64(M):
    """Eigenpairs of the symmetric part of ``M``, computed in float64.

    Returned in ``M``'s dtype. float32 ``eigh`` returned non-finite
    eigenvalues for a finite, rank-deficient 640 x 640 factor (dead ReLU
    units) of the Fashion-MNIST CNN; in float64 it is fine, and costs little
    next to the passes over the data.
    """
    import torch

    S = 0.5 * (M + M.T)
    d, q = torch.linalg.eigh(S.to(torch.float64))
    return d.to(M.dtype), q.to(M.dtype)


def _rotate_gradients(a_shape, n_out, n_cols):
    """Whether to rotate per-example gradients ``D`` rather than ``a_t, g_t``.

    Multiply-adds per row: rotating the positions costs ``d^2 T`` once and
    ``o^2 T + o d T`` per output column, rotating ``D`` (after forming it)
    ``o d T + o^2 d + o d^2`` per column; ``a`` of shape ``(b, d, T)``.
    """
    _, d, T = a_shape
    if T == 1:
        return False
    o = n_out
    return n_cols * (o * d * T + o * o * d + o * d * d) < d * d * T + n_cols * (
        o * o * T + o * d * T
    )
