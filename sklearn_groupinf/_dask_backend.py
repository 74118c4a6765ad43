"""The linear-model backend over Dask arrays: reductions over row chunks.

:class:`DaskLinearBackend` follows the :class:`~.backends._base.ModelBackend`
protocol for a scikit-learn linear model whose training data are Dask arrays.
Every per-chunk quantity is the in-memory backend's
(:class:`~.backends._sklearn_linear.SklearnLinearBackend` on the chunk), so
the calculus is the same code: the objective, its gradient and Hessian are
sums of per-chunk terms (a tree reduction, ``P x P`` per chunk), per-example
quantities (``Q V``, ``||q_i||``) are Dask arrays chunked like ``X``, and
group sums ``M Q`` are reduced chunk by chunk.

The penalty: a sum-form objective ``sum_i s_i l_i + R(theta)`` has its
penalty once (each chunk's own is subtracted); a mean-form objective's
penalty is spread over the examples (``sum_i s_i (l_i + R)``) and adds up
over chunks as it is.

The target set is held in memory, or given as Dask arrays: its value,
gradient and Hessian are then weighted sums over its chunks as well.
"""

import time

import numpy as np
import scipy.sparse as sp

from ._dask_groups import DaskGroupMethods, GroupRows, local_matrix
from ._dask_reduce import tree_sum
from .backends._base import ModelBackend
from .backends._sklearn_linear import SklearnLinearBackend


def is_dask(x):
    """Whether ``x`` is a Dask collection (without importing dask)."""
    return type(x).__module__.split(".")[0] in ("dask", "dask_expr")


def _as_column(a, like):
    """``a`` as an ``(n, k)`` Dask array with the row chunks of ``like``."""
    import dask.array as da

    a = a if is_dask(a) else da.from_array(np.asarray(a))
    if a.ndim == 1:
        a = a[:, None]
    return a.rechunk((like.chunks[0], -1))


class DaskLinearBackend(DaskGroupMethods, ModelBackend):
    """A fitted scikit-learn linear model and Dask training data.

    Parameters
    ----------
    estimator : fitted supported linear estimator
    X : dask array of shape (n_samples, n_features)
    y : dask array of shape (n_samples,) or (n_samples, n_outputs)
    sample_weight : dask array of shape (n_samples,) or None
    X_target, y_target, target_weight : arrays or Dask arrays (the target set)
        In memory, or Dask arrays whose value, gradient and Hessian are
        reduced over their chunks (weighted sums, divided by the total
        weight).
    target : "default" or callable
    """

    supports_newton = True  # group Hessians reduced per group (DaskGroupMethods)
    newton_by_default = True
    #: products are passes over the chunks: per-example interaction factors
    #: are kept as products (``_lazy_rows``), never gathered as ``n x r``
    cheap_removal_products = True
    #: per-example vectors are Dask arrays: selection reduces them on workers
    distributed = True
    #: progress lines on stderr when > 0 (set from GroupInfluence.verbose)
    verbose = 0

    def __init__(
        self,
        estimator,
        X,
        y,
        *,
        sample_weight=None,
        X_target=None,
        y_target=None,
        target_weight=None,
        target="default",
    ):
        self._t0 = time.perf_counter()
        self.estimator = estimator
        self.X = X.rechunk({1: -1})
        self.y = _as_column(y, self.X)
        self._y_1d = np.ndim(y) == 1
        self.sw = None if sample_weight is None else _as_column(sample_weight, self.X)
        # the target set, and the parameter layout, through an in-memory backend
        self._target_chunks = None
        if is_dask(X_target):  # reduced over its chunks; layout from one row
            tX = X_target.rechunk({1: -1})
            tw = None if target_weight is None else _as_column(target_weight, tX)
            self._target_chunks = (tX, _as_column(y_target, tX), tw, target)
            X_target, y_target, target_weight = (
                np.asarray(tX[:1].compute()),
                np.asarray(y_target[:1].compute()),
                None,
            )
        self._tgt = SklearnLinearBackend(
            estimator,
            X_target,
            y_target,
            sample_weight=None,
            X_target=X_target,
            y_target=y_target,
            target_weight=target_weight,
            target=target,
        )
        self.spec = self._tgt.spec
        self.null_space = self._tgt.null_space
        self.target_name = self._tgt.target_name
        self._theta = self._tgt.get_theta()
        self._cache = {}
        self._trial = None  # (theta, terms) of the last trial objective

    def log(self, message):
        """A progress line on stderr when :attr:`verbose` (with elapsed time)."""
        if self.verbose:
            from ._progress import log

            t = time.perf_counter() - self._t0
            log(
                f"GroupInfluence (dask): {message} [{t:.1f} s since the backend]",
                verbose=self.verbose,
            )

    # -- per-chunk backends ----------------------------------------------------
    def _chunk_maker(self):
        """``(Xb, yb, sb) -> in-memory backend`` at the current parameters.

        Captures only the estimator and the parameters (not this object), so
        that the task graph stays small.
        """
        return _ChunkMaker(self.estimator, self._y_1d, self._theta.copy())

    def _args(self):
        return [self.X, self.y] + ([] if self.sw is None else [self.sw])

    def _blockwise(self, fn, width):
        """``fn(chunk_backend) -> (rows, width)`` over the row chunks: a dask array."""
        import dask.array as da

        make = self._chunk_maker()

        def block(Xb, yb, sb=None):
            return fn(make(Xb, yb, sb))

        return da.map_blocks(
            block, *self._args(), chunks=(self.X.chunks[0], (width,)), dtype=float
        )

    def _reduce(self, fn, width):
        """``sum over chunks of fn(chunk_backend)`` (length ``width``), a tree sum."""
        import dask.array as da

        args = self._args()
        n_blocks = len(self.X.chunks[0])
        make = self._chunk_maker()

        def block(Xb, yb, sb=None):
            return np.asarray(fn(make(Xb, yb, sb)), dtype=np.float64)[None, :]

        parts = da.map_blocks(
            block, *args, chunks=((1,) * n_blocks, (width,)), dtype=float
        )
        return np.asarray(parts.sum(axis=0).compute())

    def _terms(self):
        """``[J, grad J, H, sum s]`` at the current parameters (one pass)."""
        if "terms" not in self._cache:
            P = self.n_params
            mean_form = self.spec.mean_form

            def fn(be):
                # a sum-form penalty is counted once, below, not per chunk
                pen = 0.0 if mean_form else be._pen_mult
                th = be.get_theta()
                J = be.objective() - pen * 0.5 * np.dot(be._D * th, th)
                g = be.gradient() - pen * be._D * th
                H = be.hessian()
                H[np.diag_indices_from(H)] -= pen * be._D
                return np.concatenate([[J], g, H.ravel(), [be._s.sum()]])

            t = self._reduce(fn, 2 + P + P * P)
            self.log(f"objective, gradient and {P} x {P} Hessian over the chunks")
            self._cache["terms"] = (t[0], t[1 : 1 + P], t[1 + P : -1], t[-1])
        return self._cache["terms"]

    # -- protocol ----------------------------------------------------------------
    @property
    def n_params(self):
        return self._tgt.n_params

    @property
    def n_samples(self):
        return int(self.X.shape[0])

    @property
    def data_weight(self):
        return float(self.spec.c * self._terms()[3])

    def get_theta(self):
        return self._theta.copy()

    def set_theta(self, theta):
        self._theta = np.asarray(theta, dtype=np.float64).copy()
        self._tgt.set_theta(self._theta)
        self._cache = {}
        trial, self._trial = self._trial, None
        if trial is not None and np.array_equal(trial[0], self._theta):
            self._cache["terms"] = trial[1]  # computed by objective(theta)

    def _pen_mult(self):
        return self._terms()[3] if self.spec.mean_form else 1.0

    def objective(self, theta=None):
        """The objective at ``theta`` (default: the current parameters).

        One pass gives the objective with its gradient and Hessian; at a
        trial ``theta`` (a line search) they are kept, and :meth:`set_theta`
        to that point reuses them: a Newton step costs one pass, not three.
        """
        if theta is None or np.array_equal(theta, self._theta):
            th, terms = self._theta, self._terms()
        else:
            saved, saved_cache = self._theta, self._cache
            self._theta, self._cache = np.asarray(theta, dtype=np.float64).copy(), {}
            try:
                th, terms = self._theta, self._terms()
            finally:
                self._theta, self._cache = saved, saved_cache
            self._trial = (th, terms)
        if self.spec.mean_form:
            return float(terms[0])
        return float(terms[0] + 0.5 * np.dot(self._tgt._D * th, th))

    def gradient(self):
        _, g, _, _ = self._terms()
        extra = 0.0 if self.spec.mean_form else self._tgt._D * self._theta
        return g + extra

    def hessian(self):
        P = self.n_params
        H = self._terms()[2].reshape(P, P).copy()
        if not self.spec.mean_form:
            H[np.diag_indices_from(H)] += self._tgt._D
        return H

    def removal_gradient_norms(self):
        """Row norms kept on the workers; their median is reduced there."""
        from ._dask_reduce import DistributedNorms

        norms = self._blockwise(lambda be: be.removal_gradient_norms()[:, None], 1)
        return DistributedNorms(norms[:, 0])

    def removal_gradient_products(self, V):
        """``Q V``: a Dask array chunked like ``X``."""
        V = np.asarray(V, dtype=np.float64)
        V2 = V.reshape(self.n_params, -1)
        out = self._blockwise(lambda be: be.removal_gradient_products(V2), V2.shape[1])
        return out[:, 0] if V.ndim == 1 else out

    def aggregated_removal_gradients(self, matrix):
        """``M Q`` for a ``(g, n)`` (sparse) matrix, reduced over chunks."""
        return self._aggregate(matrix, "aggregated_removal_gradients")

    def aggregated_loss_gradients(self, matrix, batch_size=None):
        """``M L`` (``L`` the loss gradients), reduced over chunks."""
        return self._aggregate(matrix, "aggregated_loss_gradients")

    @property
    def metric_scale(self):
        return self._tgt.metric_scale

    def loss_gradients(self, rows=None):
        return self._rows_backend(rows).loss_gradients()

    def _aggregate(self, matrix, name):
        """``sum over chunks of chunk_backend.<name>(M[:, chunk])``.

        ``matrix`` is a :class:`~._dask_groups.DaskGroupMembership` (each
        chunk's columns built on its worker from the codes) or a (sparse)
        ``(g, n)`` matrix in memory (sliced per chunk).
        """
        make = self._chunk_maker()
        if getattr(matrix, "distributed", False):

            def fn(n_present, inv, Xb, yb, sb=None):
                Mb = local_matrix(n_present, inv)
                return np.asarray(getattr(make(Xb, yb, sb), name)(Mb))

            out = matrix.reduce(fn, *self._args())
        else:
            import dask

            M = sp.csc_matrix(matrix)
            bounds = np.cumsum((0,) + self.X.chunks[0])
            Xd = self.X.to_delayed().ravel()
            yd = self.y.to_delayed().ravel()
            sd = [None] * len(Xd) if self.sw is None else self.sw.to_delayed().ravel()

            def part(Xb, yb, sb, Mb):
                return np.asarray(getattr(make(Xb, yb, sb), name)(Mb))

            parts = [
                dask.delayed(part)(Xd[i], yd[i], sd[i], M[:, bounds[i] : bounds[i + 1]])
                for i in range(len(Xd))
            ]
            out = tree_sum(parts).compute()
        self.log(f"{name}: sums of {matrix.shape[0]} groups over the chunks")
        return out

    def _rows_backend(self, rows):
        """The in-memory backend of training rows ``rows`` (gathered).

        ``rows`` are row indices or a :class:`~._dask_groups.GroupRows`
        (the rows of some groups, selected on the workers).
        """
        n_rows = self.n_samples if rows is None else len(rows)
        need = 8 * n_rows * (self.X.shape[1] + self.n_params)
        if need > self.max_gather_bytes:
            raise MemoryError(
                f"This needs {n_rows} training rows on the client ({need / 1e9:.1f} "
                f"GB, more than max_gather_bytes={self.max_gather_bytes / 1e9:.1f} "
                "GB): use group-level results (score_groups, select with groups) "
                "or a method that reduces over the chunks, or raise "
                "DaskLinearBackend.max_gather_bytes if the client has the memory."
            )
        import dask

        if isinstance(rows, GroupRows):
            mask = rows.mask()
            parts = [a[mask] for a in self._args()]
            self.log(f"gathering the {n_rows} rows of {len(rows.groups)} groups")
        else:
            r = np.arange(self.n_samples) if rows is None else np.asarray(rows)
            parts = [a[r] for a in self._args()]
        return self._chunk_maker()(*map(np.asarray, dask.compute(*parts)))

    def self_influences(self, solver):
        """Per-example self-influence, a Dask array chunked like ``X``.

        ``metric_scale * grad l_i' H^{-1} q_i`` per chunk, with ``H^{-1}``
        (``P x P``, the solver's) sent to the workers.
        """
        P = self.n_params
        Hinv = solver.solve(np.eye(P))
        if not np.all(np.isfinite(Hinv)):
            raise FloatingPointError(
                "Self-influence produced non-finite values; the Hessian is "
                "numerically singular. Increase damping."
            )
        scale = float(self.metric_scale)

        def fn(be):
            out = scale * np.einsum(
                "ij,ij->i", be.loss_gradients(), be.removal_gradients() @ Hinv.T
            )
            if not np.all(np.isfinite(out)):
                raise FloatingPointError(
                    "Self-influence produced non-finite values in a chunk; the "
                    "Hessian is numerically singular. Increase damping."
                )
            return out[:, None]

        return self._blockwise(fn, 1)[:, 0]

    def removal_gradients(self, rows=None):
        return self._rows_backend(rows).removal_gradients()

    #: largest size (bytes) of training rows gathered to the client at once
    max_gather_bytes = 2 * 1024**3

    def example_hessian_vector(self, v, rows=None):
        if rows is None:
            raise NotImplementedError(
                "Per-example Hessian-vector products of every row are not "
                "available on Dask data (method='second_order'); use "
                "method='interaction' or 'newton'."
            )
        return self._rows_backend(rows).example_hessian_vector(v)

    def candidate_gradients(self, X, y, sample_weight=None):
        return self._tgt.candidate_gradients(X, y, sample_weight)

    def target_value(self, theta=None):
        if self._target_chunks is None:
            return self._tgt.target_value(theta)
        if theta is None:
            return self._target_terms()[0]
        return self._target_reduce(np.asarray(theta, dtype=np.float64), False)[0]

    def target_gradient(self):
        if self._target_chunks is None:
            return self._tgt.target_gradient()
        return self._target_terms()[1]

    def target_hessian(self):
        if self._target_chunks is None:
            return self._tgt.target_hessian()
        return self._target_terms()[2]

    def _target_terms(self):
        if "target" not in self._cache:
            self._cache["target"] = self._target_reduce(self._theta, True)
        return self._cache["target"]

    def _target_reduce(self, theta, derivatives):
        """``(f, grad f, H_f)`` at ``theta`` as weighted sums over target chunks.

        Each chunk's in-memory backend gives its weighted mean; times the
        chunk's weight, summed, and divided by the total weight.
        """
        import dask.array as da

        tX, ty, tw, target = self._target_chunks
        P = self.n_params
        width = 2 + (P + P * P if derivatives else 0)
        y_1d = self._y_1d
        est = self.estimator

        def block(Xb, yb, wb=None):
            y = yb[:, 0] if y_1d else yb
            w = np.ones(len(Xb)) if wb is None else wb[:, 0]
            be = SklearnLinearBackend(
                est, Xb, y, X_target=Xb, y_target=y, target_weight=w, target=target
            )
            be.set_theta(theta)
            W = float(w.sum())
            out = [[W, W * be.target_value()]]
            if derivatives:
                out += [W * be.target_gradient(), W * be.target_hessian().ravel()]
            return np.concatenate(out)[None, :]

        args = [tX, ty] + ([] if tw is None else [tw])
        n_blocks = len(tX.chunks[0])
        parts = da.map_blocks(
            block, *args, chunks=((1,) * n_blocks, (width,)), dtype=float
        )
        t = np.asarray(parts.sum(axis=0).compute())
        self.log(
            "target value"
            + (" and derivatives" if derivatives else "")
            + " over the target chunks"
        )
        W = t[0]
        f = float(t[1] / W)
        if not derivatives:
            return (f,)
        return f, t[2 : 2 + P] / W, t[2 + P :].reshape(P, P) / W


class _ChunkMaker:
    """Builds the in-memory backend of one row chunk at fixed parameters."""

    def __init__(self, estimator, y_1d, theta):
        self.estimator = estimator
        self.y_1d = y_1d
        self.theta = theta

    def __call__(self, Xb, yb, sb=None):
        y = yb[:, 0] if self.y_1d else yb
        be = SklearnLinearBackend(
            self.estimator,
            Xb,
            y,
            sample_weight=None if sb is None else sb[:, 0],
            X_target=Xb[:1],
            y_target=y[:1],
        )
        be.set_theta(self.theta)
        return be
