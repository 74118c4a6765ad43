"""``KroneckerBackend``: the torch backend with K-FAC / EK-FAC curvature.

For networks too large for the exact curvature. It differs from
:class:`~sklearn_groupinf.backends._torch.TorchBackend` in four places:

* the damped training curvature is the Kronecker-factored Gauss-Newton
  matrix of :class:`~sklearn_groupinf.backends._kfac.KroneckerCurvature`
  (the penalty ``pen_mult * weight_decay * mask`` on its diagonal);
* removal-gradient products, norms and group sums are computed layer by
  layer from the layers' inputs and output gradients
  (:mod:`~sklearn_groupinf.backends._kfac_products`,
  :mod:`~sklearn_groupinf.backends._kfac_group_sums`): never ``n x P``, nor
  ``batch_size x P``;
* the target curvature is a rank-``r`` factor of the target's Gauss-Newton
  matrix ``H_f`` (:func:`~sklearn_groupinf.backends._kfac_target.low_rank_target_ggn`)
  from exact target GGN products computed layer by layer, built and used
  in the mixed coordinates of ``KroneckerCurvature.eigen_bases`` (where
  the curvature's solve rotates no single-position layer);
* the parameters are used as trained (no Newton polishing: it would need the
  exact curvature); ``GroupInfluence`` reports the stationarity it measured.

Removal gradients follow the torch backend: ``q_i = s_i (grad l_i + c)`` with
``c = weight_decay * mask * theta`` in mean form (skorch) and ``c = 0`` in sum
form (``TorchModel``).
"""

import numpy as np

from ._kfac import KroneckerCurvature
from ._kfac_group_sums import aggregated_gradients, sq_norms_and_sum
from ._kfac_products import per_example_products
from ._torch import TorchBackend
from ._torch_cg import _to_numpy
from ._torch_kfac_target import (
    KroneckerTargetFactor,
    count_sketch,
)
from ._torch_options import (
    DEFAULT_CORRECTION_ROWS,
    DEFAULT_FACTOR_ROWS,
    DEFAULT_TARGET_RANK,
)

#: Rows whose removal-gradient norms ``fit``'s one pass computes (a seeded
#: sample; all rows when there are fewer): their median is the scale of
#: the reported stationarity, ``||grad J|| / median_i ||q_i||``. On the
#: Fashion-MNIST CNN of ``benchmarks/cnn_groups.py`` the convolutions'
#: per-example gradients that every row's norm needs were most of the
#: pass's extra cost.
NORM_SAMPLE_ROWS = 1000

#: Largest block of per-example gradients of all parameters (bytes) that
#: the few estimators not streamed layer by layer may form (per-example
#: self-influence, candidate rows); above it they raise ``MemoryError``.
MAX_ROW_BLOCK_BYTES = 2**30


class KroneckerBackend(KroneckerTargetFactor, TorchBackend):
    """Torch backend with K-FAC / EK-FAC curvature (see the module docstring).

    Parameters
    ----------
    *args, **kwargs
        As :class:`TorchBackend` (``curvature`` and ``hessian_solver`` are set
        here).
    kind : {"kfac", "ekfac"}
    fisher : {"exact", "sampled"}, default="exact"
    n_draws : int, default=1
    target_rank : int, default=DEFAULT_TARGET_RANK
    target_sketch : {"shifts", "plain"}, default="shifts"
        How the target factor is found (see :meth:`target_hessian_factor`).
    random_state : int, default=0
        Seeds the drawn labels, the rows of the eigenvalue correction and the
        random test matrix of the target factor.
    correction_rows : int, default=DEFAULT_CORRECTION_ROWS
        EK-FAC: rows (a seeded uniform sample) whose second moments correct
        the eigenvalues; every row when there are fewer.
    factor_rows : int, default=DEFAULT_FACTOR_ROWS
        Rows (another seeded uniform sample) whose sums give the Kronecker
        factors; every row when there are fewer.
    """

    matrix_free = True
    supports_second_order = False
    supports_newton = False
    #: Newton polishing needs the exact curvature: never attempted here.
    polishable = False
    #: Interaction terms always use the cached rank-``r`` target factor (its
    #: error is measured by ``benchmarks/kfac_target_rank.py``), also for at
    #: most ``r`` units, where exact target products would cost ``2 K``
    #: passes over the target rows per call (``K`` outputs).
    few_units_by_products = False

    def __init__(
        self,
        *args,
        kind,
        fisher="exact",
        n_draws=1,
        target_rank=DEFAULT_TARGET_RANK,
        target_sketch="shifts",
        random_state=0,
        correction_rows=DEFAULT_CORRECTION_ROWS,
        factor_rows=DEFAULT_FACTOR_ROWS,
        **kwargs,
    ):
        kwargs.update(curvature="ggn", hessian_solver="cg")
        super().__init__(*args, **kwargs)
        self.kind, self.fisher, self.n_draws = kind, fisher, int(n_draws)
        self.target_rank = int(target_rank)
        self.target_sketch = target_sketch
        self.random_state = random_state
        self.correction_rows = correction_rows
        self.factor_rows = factor_rows
        self.supports_second_order = self.supports_newton = False
        self._kfac = None

    # ------------------------------------------------------------ curvature
    #: the curvature :meth:`hessian_solver` fits (a subclass may change it)
    curvature_class = KroneckerCurvature

    def hessian_solver(self, damping):
        """A fitted :attr:`curvature_class` (``solve`` as the protocol asks)."""
        self._check_theta()
        pen = self._pen_mult * self.weight_decay * self._mask
        self._kfac = self.curvature_class(
            self.module,
            self._loss,
            kind=self.kind,
            fisher=self.fisher,
            damping=damping,
            n_draws=self.n_draws,
            batch_size=self.batch_size,
            random_state=self.random_state,
            penalty=_to_numpy(pen),
            correction_rows=self.correction_rows,
            factor_rows=self.factor_rows,
        ).fit(self._X, self._y, self._s)
        return self._kfac

    def _check_theta(self):
        params = [p for p in self.module.parameters() if p.requires_grad]
        current = _to_numpy(self._theta)
        module = np.concatenate([_to_numpy(p.detach().reshape(-1)) for p in params])
        if not np.array_equal(current, module):
            raise RuntimeError(
                "KroneckerBackend: the parameters moved away from the module's "
                "(K-FAC curvature is computed on the module as trained)."
            )

    def newton_direction(self):
        return None

    # --------------------------------------------------- removal gradients
    def _offset(self):
        """``c``: the penalty share of each removal gradient (mean form)."""
        if self.penalty_form == "mean" and self.weight_decay:
            return _to_numpy(self.weight_decay * self._mask * self._theta)
        return None

    def _per_example(self, fn, *args, **kwargs):
        return fn(
            self.module,
            self._loss,
            self._X,
            self._y,
            *args,
            batch_size=self.batch_size,
            **kwargs,
        )

    def gradient(self):
        """``grad J``: kept from the pass of :meth:`removal_gradient_norms`
        when the parameters have not moved since, else a new pass."""
        cached = self._kept_from_pass("grad", curvature=False)
        if cached is not None:
            return cached.copy()
        return super().gradient()

    def _kept_from_pass(self, what, *, curvature=True):
        """What the pass of :meth:`removal_gradient_norms_and_products` kept
        under ``what`` (``"grad"``: ``grad J``; ``"sketch"``: the count-sketch
        sums; ``"rows"``: the single-position layers' rows) while the
        parameters, and with ``curvature`` the fitted curvature, are those it
        ran with; ``None`` otherwise."""
        import torch

        kept = getattr(self, "_pass_kept", None)
        if kept is None or not torch.equal(kept["theta"], self._theta):
            return None
        if curvature and kept["kfac"] is not self._kfac:
            return None
        return kept.get(what)

    def removal_gradient_products(self, V):
        """``Q V`` ``(n, k)`` layer by layer (never ``n x P`` nor ``b x P``)."""
        V = np.asarray(V, dtype=np.float64).reshape(self.n_params, -1)
        out = self._per_example(per_example_products, V)
        c = self._offset()
        if c is not None:
            out = out + (c @ V)[None, :]
        return out * _to_numpy(self._s)[:, None]

    def removal_gradient_norms(self):
        """Row norms of ``Q``; the same pass keeps ``grad J`` (see :meth:`gradient`)
        and, for ``target_sketch="shifts"``, the count-sketch sums ``G Q`` of
        :meth:`target_hessian_factor` (``target_rank x P`` values)."""
        return self.removal_gradient_norms_and_products(None)[0]

    def removal_gradient_norms_and_products(self, V, *, sample_norms=False):
        """``(norms, Q V)``: :meth:`removal_gradient_norms` and, in the same
        pass over the rows, :meth:`removal_gradient_products` (``None`` for
        ``V=None``). ``GroupInfluence`` calls it once the curvature is fitted,
        since the parameters are never polished here.

        ``sample_norms``: the norms of a seeded sample of
        :data:`NORM_SAMPLE_ROWS` rows only (all rows when there are fewer),
        which is what the stationarity's scale (their median) needs. A
        convolution's per-example gradients are then formed for those rows
        alone; its sums and products come from its own convolutions
        (``sq_norms_and_sum(norm_rows=...)``)."""
        matrix = bases = None
        if self.target_sketch == "shifts":
            import scipy.sparse as sp

            G = count_sketch(self.target_rank, self.n_samples, self.random_state)
            matrix = sp.csr_matrix(G) @ sp.diags(_to_numpy(self._s))
            bases = self._bases()
        k = 0
        if V is not None:
            V = np.asarray(V, dtype=np.float64).reshape(self.n_params, -1)
            k = V.shape[1]
        c = self._offset()
        cols = [V] if V is not None else []
        if c is not None:  # the mean form's q_i' c from the same pass
            cols.append(c[:, None])
        Vc = np.hstack(cols) if cols else None
        rows = None
        if sample_norms and self.n_samples > NORM_SAMPLE_ROWS:
            rng = np.random.default_rng(self.random_state)
            rows = np.sort(rng.choice(self.n_samples, NORM_SAMPLE_ROWS, replace=False))
        kept = {} if matrix is not None else None
        out = self._per_example(
            sq_norms_and_sum,
            self._s,
            matrix=matrix,
            V=Vc,
            bases=bases,
            norm_rows=rows,
            keep_rows=kept,
        )
        sq, data_grad = out[:2]
        pen = self._pen_mult * self.weight_decay * self._mask * self._theta
        self._pass_kept = {
            "theta": self._theta.clone(),
            "kfac": self._kfac,
            "grad": data_grad + _to_numpy(pen),
        }
        if matrix is not None:  # in mixed coordinates (see _bases)
            self._pass_kept.update(sketch=(matrix, out[-1]), rows=kept)
        s = _to_numpy(self._s)
        prods = None
        if V is not None:
            prods = out[2][:, :k]
            if c is not None:
                prods = prods + (c @ V)[None, :]
            prods = prods * s[:, None]
        sel = slice(None) if rows is None else rows
        if c is not None:
            sq = sq + 2 * out[2][sel, k] + c @ c
        return np.sqrt(np.maximum(sq, 0.0)) * s[sel], prods

    def aggregated_removal_gradients(self, matrix):
        """``matrix @ Q`` ``(g, P)`` layer by layer."""
        import scipy.sparse as sp

        s = _to_numpy(self._s)
        weighted = sp.csr_matrix(matrix) @ sp.diags(s)
        out = self._per_example(aggregated_gradients, weighted)
        c = self._offset()
        if c is not None:
            out += np.asarray(weighted.sum(axis=1)).reshape(-1, 1) * c[None, :]
        return out

    def aggregated_removal_products(self, matrix, V, *, mixed=False):
        """``(matrix @ Q) @ V`` ``(g, k)``: one pass, group sums layer by layer.

        For a membership matrix (one group per row) the pass costs ``n P``
        whatever ``k``, against ``n P k`` for the per-row products ``Q V``.
        ``mixed``: ``V`` (a ``(P, k)`` array or tensor) is in the mixed
        coordinates of the fitted curvature's ``eigen_bases`` (one entry per
        row of ``matrix`` needed); the group sums are formed in them.
        """
        import scipy.sparse as sp

        s = _to_numpy(self._s)
        weighted = sp.csr_matrix(matrix) @ sp.diags(s)
        bases = self._bases() if mixed else None
        if not mixed:
            V = np.asarray(V, dtype=np.float64).reshape(self.n_params, -1)
        out = self._per_example(
            aggregated_gradients,
            weighted,
            V=V,
            bases=bases,
            rows_cache=self._kept_rows() if mixed else None,
        )
        c = self._offset()
        if c is not None:
            if mixed:
                c = self._kfac.to_mixed(c)
            cV = c @ (_to_numpy(V) if mixed else V)
            out += np.asarray(weighted.sum(axis=1)).reshape(-1, 1) * cV[None, :]
        return out

    def _kept_rows(self):
        """The single-position layers' rotated output gradients and inputs
        over every row, kept from ``fit``'s pass (:meth:`removal_gradient_norms`
        with the sketch; ``None`` when the parameters or the curvature have
        changed since): later group sums in mixed coordinates take them
        instead of forming them again (for a network of such layers only,
        no pass at all)."""
        return self._kept_from_pass("rows") or None

    def aggregated_loss_gradients(self, matrix, batch_size=None):
        """``matrix @ L`` ``(g, P)`` (unweighted loss gradients) layer by layer."""
        return self._per_example(aggregated_gradients, matrix)

    def _check_rows(self, n_rows, what):
        need = 8 * n_rows * self.n_params
        if need > MAX_ROW_BLOCK_BYTES:
            raise MemoryError(
                f"{what} of {n_rows} rows would hold {n_rows} x {self.n_params} "
                f"per-example gradients ({need / 1e9:.2g} GB); with K-FAC / EK-FAC "
                "only influence_, group scores, selection and interaction terms "
                "are streamed layer by layer. Score groups (e.g. "
                "self_influence(groups=...)), or use curvature='exact' or 'ggn' "
                "for a small network."
            )

    def removal_gradients(self, rows=None):
        self._check_rows(self.n_samples if rows is None else len(rows), "This")
        return super().removal_gradients(rows)

    def loss_gradients(self, rows=None):
        self._check_rows(self.n_samples if rows is None else len(rows), "This")
        return super().loss_gradients(rows)

    def candidate_gradients(self, X, y, sample_weight=None):
        self._check_rows(len(X), "Adding candidates")
        return super().candidate_gradients(X, y, sample_weight)
