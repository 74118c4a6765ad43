"""Analytic backend for scikit-learn linear models (and pipelines ending in one).

Conventions
-----------
* Parameters ``theta = Theta.ravel()`` with ``Theta`` of shape ``(K, d~)``:
  one row per output (class for multinomial, target column for multi-output
  Ridge), coefficients then the intercept (when fitted).
* Features ``x~_i = [phi(x_i), 1]`` where ``phi`` is the fixed feature map of the
  pipeline steps before the final estimator (identity without a pipeline).
  Earlier steps are treated as fixed: their own fitted state does not move when
  a group is removed (documented in the user guide).
* Per-example objective ``l~_i = c * loss(y_i, z_i) [+ 1/2 theta' D theta`` for
  mean-form GLMs``]``, ``z_i = Theta x~_i``; see :mod:`._base`.
* Gradients of a linear model factor as ``g_i (x) x~_i`` and Hessians as
  ``h_i (x) x~_i x~_i'`` with ``g_i = dloss/dz``, ``h_i = d^2loss/dz^2``.
"""

import os

import numpy as np
import scipy.sparse as sp
from scipy.special import log_softmax

from .._utils import check_weights
from ._base import ModelBackend
from ._design import DesignMatrix, row_chunks, row_sq_norms
from ._linear_specs import linear_spec
from ._losses import (
    HalfBinomialLoss,
    HalfMultinomialLoss,
    HalfSquaredError,
    HalfTweedieLoss,
)
from ._targets import TorchCallableTarget, weighted_mean


def _dense(X):
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    return np.asarray(X, dtype=np.float64)


def _weights(weight, n, name, rows, *, positive_sum=True):
    """``weight`` as finite non-negative float64 of length ``n`` (ones if None)."""
    if weight is None:
        return np.ones(n)
    return check_weights(weight, n, name, rows, positive_sum=positive_sum)


def physical_memory():
    """Bytes of physical memory of this machine (``None`` where unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # e.g. Windows
        return None


def _check_hessian_memory(backend):
    """Refuse a dense ``P x P`` Hessian that cannot fit in this machine's memory.

    The Hessian, its damped copy and its Cholesky factor are ``3 * 8 P^2``
    bytes; beyond the physical memory the allocation fails or the machine
    swaps for hours, so the user gets the sizes and the fix instead.
    """
    P, memory = backend.n_params, physical_memory()
    need = 3 * 8 * P * P
    if memory is None or need <= memory:
        return
    k, dt = backend._k, backend._dt
    raise MemoryError(
        f"{type(backend.estimator).__name__} has {P} parameters ({k} output(s) x "
        f"{dt} coefficients and intercept): its dense Hessian, damped copy and "
        f"Cholesky factor need {need / 1e9:.3g} GB, more than this machine's "
        f"{memory / 1e9:.3g} GB. Reduce the number of features (fewer one-hot "
        "levels, feature selection, or a projection such as TruncatedSVD) to at "
        f"most about {max(int(np.sqrt(memory / 24) / k) - 1, 0)} features."
    )


def _sandwich(Xt, W):
    """``sum_i W_i (x) x~_i x~_i'`` for ``W`` of shape ``(n, K, K)`` -> ``(P, P)``.

    Summed over row chunks (no ``n x d~`` temporary).
    """
    n, k, _ = W.shape
    dt = Xt.shape[1]
    out = np.zeros((k, dt, k, dt))
    for rows in row_chunks(n, dt):
        Xc, Wc = Xt[rows], W[rows]
        for a in range(k):
            for b in range(a, k):
                out[a, :, b, :] += Xc.T @ (Wc[:, a, b, None] * Xc)
    for a in range(k):
        for b in range(a + 1, k):
            out[b, :, a, :] = out[a, :, b, :].T
    return out.reshape(k * dt, k * dt)


class SklearnLinearBackend(ModelBackend):
    """Backend for a fitted supported scikit-learn linear estimator.

    Parameters
    ----------
    estimator : fitted estimator
        A supported linear estimator (see :data:`._linear_specs.SUPPORTED`).
    X, y : training data (already passed through ``feature_map``).
    sample_weight : ndarray of shape (n_samples,) or None
    X_target, y_target, target_weight : the target set (features mapped).
    target : "default" or callable
    feature_map : callable or None
        Maps raw inputs to the final estimator's features (pipeline prefix).
    """

    supports_second_order = True
    supports_newton = True
    newton_by_default = True
    #: removal-gradient products are passes over the design matrix, so
    #: per-example interaction factors are kept as products (``_lazy_rows``)
    cheap_removal_products = True

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
        feature_map=None,
    ):
        self.estimator = estimator
        self.feature_map = feature_map
        self.spec = spec = linear_spec(estimator, y, sample_weight)
        self._Xt = self._design(X, train=True)
        self._y = spec.encode_y(y)
        sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight)
        self._sw = sw.astype(np.float64)  # without the class weights
        self._s = self._sw * spec.class_weights_of(y)
        self._k = spec.n_outputs
        self._dt = self._Xt.shape[1]
        d = spec.coef.shape[1]
        D = np.zeros((self._k, self._dt))
        D[:, :d] = spec.alpha[:, None]
        if spec.fit_intercept:
            D[:, d] = spec.intercept_penalty
        self._D = D.ravel()
        self._pen_mult = self._s.sum() if spec.mean_form else 1.0
        theta = (
            np.hstack([spec.coef, spec.intercept[:, None]])
            if spec.fit_intercept
            else spec.coef.copy()
        )
        if spec.gauge:
            self.null_space = self._gauge_directions()
        self._set_target(X_target, y_target, target_weight, target)
        self.set_theta(theta.ravel())

    # -- data -------------------------------------------------------------
    def _design(self, X, train=False):
        """``[phi(X), 1]``; for the training data without copying ``phi(X)``."""
        if self.feature_map is not None:
            X = self.feature_map(X)
        X = _dense(X)
        if self.spec.fit_intercept:
            if train:
                return DesignMatrix(X)
            X = np.hstack([X, np.ones((X.shape[0], 1))])
        return X

    def _set_target(self, X_target, y_target, target_weight, target):
        self._Xf = self._design(X_target)
        m = self._Xf.shape[0]
        rows = "X_target (of X when no X_target is given)"
        self._wt = _weights(target_weight, m, "target_weight", rows)
        if y_target is not None and np.ndim(y_target) == 0:
            y_target = np.reshape(y_target, 1)  # a single value: one target row
        if y_target is not None and len(y_target) != m:
            raise ValueError(
                f"X_target has {m} rows but y_target has {len(y_target)}; pass "
                "one label per target row."
            )
        if callable(target):
            self._phi = TorchCallableTarget(target, self._k)
            if y_target is None:
                self._yf = np.zeros(m)
            elif self.spec.classes is not None:
                self._yf = self.spec.class_index(y_target, "y_target").astype(float)
            else:
                self._yf = np.asarray(y_target, dtype=np.float64)
        else:
            self._phi = self.spec.target
            self._yf = self.spec.encode_y(y_target, "y_target")
        self.target_name = self._phi.name

    def _gauge_directions(self):
        """Multinomial: the data term is invariant along ``1_K (x) e_j``."""
        cols = np.flatnonzero(self._D.reshape(self._k, self._dt)[0] == 0)
        V = np.zeros((self.n_params, len(cols)))
        for j, col in enumerate(cols):
            V[col :: self._dt, j] = 1.0 / np.sqrt(self._k)
        return V if len(cols) else None

    def _loss_y(self, y):
        # the Tweedie losses take y of shape (n,); the others as encoded
        return y[:, 0] if isinstance(self.spec.loss, HalfTweedieLoss) else y

    def stationarity_hint(self):
        """The cause of a failed polish and its fix, where known (else "")."""
        if not isinstance(self.spec.loss, (HalfBinomialLoss, HalfMultinomialLoss)):
            return ""
        if np.max(np.abs(self._g), initial=0.0) >= 1e-6:
            return ""
        why = (
            f"the penalty is so weak (C={self.spec.c:g}) that the optimum lies at "
            "parameters too large to reach"
            if np.any(self._D)
            else "with no penalty the parameters grow without bound (the "
            "objective has no optimum to expand around)"
        )
        return (
            "every training row is fitted with probability above 1 - 1e-6: the "
            f"classes are (nearly) linearly separable and {why}. Use a smaller, "
            "finite C (a stronger L2 penalty)."
        )

    # -- protocol -----------------------------------------------------------
    @property
    def newton_is_exact(self):
        """Quadratic loss: a group-Newton step is the exact refit (undamped)."""
        return isinstance(self.spec.loss, HalfSquaredError)

    @property
    def n_params(self):
        return self._k * self._dt

    @property
    def n_samples(self):
        return self._Xt.shape[0]

    @property
    def data_weight(self):
        return float(self.spec.c * self._s.sum())

    def get_theta(self):
        return self._theta.copy()

    def set_theta(self, theta):
        self._theta = np.asarray(theta, dtype=np.float64).copy()
        self._z = self._raw(self._Xt)
        self._g, self._h = self.spec.loss.gradient_hessian(
            self._loss_y(self._y), self._z
        )

    def _raw(self, Xt, theta=None):
        theta = self._theta if theta is None else theta
        return Xt @ theta.reshape(self._k, self._dt).T

    def objective(self, theta=None):
        theta = self._theta if theta is None else np.asarray(theta)
        loss = self.spec.loss.value(self._loss_y(self._y), self._raw(self._Xt, theta))
        pen = 0.5 * np.dot(self._D * theta, theta)
        return float(self.spec.c * np.dot(self._s, loss) + self._pen_mult * pen)

    def _outer(self, G, Xt):
        """Rows ``g_i (x) x~_i`` -> ``(n, P)``."""
        return (G[:, :, None] * Xt[:, None, :]).reshape(len(Xt), -1)

    def gradient(self):
        grad = (self.spec.c * (self._g * self._s[:, None])).T @ self._Xt
        return grad.ravel() + self._pen_mult * self._D * self._theta

    def hessian(self):
        _check_hessian_memory(self)
        H = _sandwich(self._Xt, self.spec.c * self._s[:, None, None] * self._h)
        H[np.diag_indices_from(H)] += self._pen_mult * self._D
        return H

    def _rows(self, rows):
        return slice(None) if rows is None else np.asarray(rows)

    def removal_gradients(self, rows=None):
        r = self._rows(rows)
        s = self._s[r]
        Q = self._outer(self.spec.c * self._g[r] * s[:, None], self._Xt[r])
        if self.spec.mean_form:
            Q += s[:, None] * (self._D * self._theta)[None, :]
        return Q

    # The removal gradient of a linear model is q_i = alpha_i (x) x~_i
    # (+ s_i D theta for mean-form objectives) with alpha_i = c s_i g_i: the
    # streamed products below are passes over the design matrix, with no
    # n x P temporary.
    def _alpha(self):
        return self.spec.c * self._g * self._s[:, None]

    def removal_gradient_norms(self):
        alpha = self._alpha()
        sq = np.sum(alpha**2, axis=1) * row_sq_norms(self._Xt)
        if self.spec.mean_form:
            Dt = (self._D * self._theta).reshape(self._k, self._dt)
            sq += 2.0 * self._s * np.sum(alpha * (self._Xt @ Dt.T), axis=1)
            sq += self._s**2 * float(np.dot(Dt.ravel(), Dt.ravel()))
        return np.sqrt(np.maximum(sq, 0.0))

    def removal_gradient_products(self, V):
        V = np.asarray(V, dtype=np.float64)
        V2 = V.reshape(self.n_params, -1)
        alpha, dt = self._alpha(), self._dt
        out = np.zeros((self.n_samples, V2.shape[1]))
        for a in range(self._k):
            part = self._Xt @ V2[a * dt : (a + 1) * dt]
            part *= alpha[:, a : a + 1]
            out += part
        if self.spec.mean_form:
            out += self._s[:, None] * ((self._D * self._theta) @ V2)[None, :]
        return out.reshape((self.n_samples,) + V.shape[1:])

    def removal_gradient_row_products(self, rows, V):
        """``Q[rows] V`` without forming ``Q[rows]`` (``V`` of shape ``(P, m)``)."""
        V2 = np.asarray(V, dtype=np.float64).reshape(self.n_params, -1)
        dt, Xt = self._dt, self._Xt
        alpha = self.spec.c * self._g[rows] * self._s[rows][:, None]
        out = None
        for a in range(self._k):
            Va = V2[a * dt : (a + 1) * dt]
            part = (
                Xt.rows_matmul(rows, Va)
                if hasattr(Xt, "rows_matmul")
                else Xt[rows] @ Va
            )
            part *= alpha[:, a : a + 1]
            out = part if out is None else out + part
        if self.spec.mean_form:
            out += self._s[rows][:, None] * ((self._D * self._theta) @ V2)[None, :]
        return out

    def aggregated_removal_gradients(self, matrix):
        alpha, blocks = self._alpha(), []
        for a in range(self._k):
            scaled = (
                matrix.multiply(alpha[:, a][None, :]).tocsr()
                if sp.issparse(matrix)
                else np.asarray(matrix) * alpha[:, a][None, :]
            )
            Xt = self._Xt  # sparse @ DesignMatrix would form the design
            blocks.append(
                Xt.__rmatmul__(scaled) if isinstance(Xt, DesignMatrix) else scaled @ Xt
            )
        out = np.hstack(blocks)
        if self.spec.mean_form:
            sw = np.asarray(matrix @ self._s).reshape(-1, 1)
            out += sw * (self._D * self._theta)[None, :]
        return out

    @property
    def metric_scale(self):
        """``l_i`` is ``c`` times the loss; the metric is ``scale`` times it."""
        return self.spec.target.scale / self.spec.c

    def loss_gradients(self, rows=None):
        """``grad l_i = c g_i (x) x~_i``: the data loss, no weight, no penalty."""
        r = self._rows(rows)
        return self._outer(self.spec.c * self._g[r], self._Xt[r])

    def example_log_proba(self, rows=None, theta=None):
        """Class log-probabilities of training rows at ``theta`` (log-loss only)."""
        loss = self.spec.loss
        if not isinstance(loss, (HalfBinomialLoss, HalfMultinomialLoss)):
            raise NotImplementedError(
                f"{type(self.estimator).__name__} is not fitted with a log-loss; "
                "it gives no class probabilities."
            )
        z = self._raw(self._Xt[self._rows(rows)], theta)
        if isinstance(loss, HalfBinomialLoss):
            return np.column_stack(
                [-np.logaddexp(0.0, z[:, 0]), -np.logaddexp(0.0, -z[:, 0])]
            )
        return log_softmax(z, axis=1)

    def candidate_gradients(self, X, y, sample_weight=None):
        Xt = self._design(X)
        yy = self.spec.encode_y(y, "y_candidates")
        name, rows = "candidate_weight", "X_candidates"
        sw = _weights(sample_weight, len(Xt), name, rows, positive_sum=False)
        s = sw * self.spec.class_weights_of(y)
        g, _ = self.spec.loss.gradient_hessian(self._loss_y(yy), self._raw(Xt))
        Q = self._outer(self.spec.c * g * s[:, None], Xt)
        if self.spec.mean_form:
            Q += s[:, None] * (self._D * self._theta)[None, :]
        return Q

    def relabel_change(self, rows, y_new, theta=None, *, gradient=True):
        """``(J' - J, grad (J' - J))`` at ``theta``: rows ``rows`` relabelled.

        Sum-form log-loss objectives (``LogisticRegression``); the rows keep
        their sample weights, and their class weights follow the new labels.
        """
        loss = self.spec.loss
        if self.spec.mean_form or not isinstance(
            loss, (HalfBinomialLoss, HalfMultinomialLoss)
        ):
            raise NotImplementedError(
                f"{type(self.estimator).__name__} is not fitted with a summed "
                "log-loss; relabelling rows is not supported."
            )
        rows = np.asarray(rows, dtype=int)
        theta = self._theta if theta is None else np.asarray(theta)
        Xt = self._Xt[rows]
        raw = self._raw(Xt, theta)
        s_old = self._s[rows]
        s_new = self._sw[rows] * self.spec.class_weights_of(y_new)
        y_old = self._loss_y(self._y[rows])
        y_enc = self._loss_y(self.spec.encode_y(y_new, "y_new"))
        delta = np.dot(s_new, loss.value(y_enc, raw)) - np.dot(
            s_old, loss.value(y_old, raw)
        )
        if not gradient:
            return float(self.spec.c * delta), None
        g_new, _ = loss.gradient_hessian(y_enc, raw)
        g_old, _ = loss.gradient_hessian(y_old, raw)
        G = g_new * s_new[:, None] - g_old * s_old[:, None]
        grad = (self.spec.c * G).T @ Xt
        return float(self.spec.c * delta), np.asarray(grad).ravel()

    def target_value(self, theta=None):
        z = self._raw(self._Xf, theta)
        return weighted_mean(self._phi.value(self._target_y(), z), self._wt)

    def _target_y(self):
        if isinstance(self._phi, TorchCallableTarget):
            return self._yf
        return self._loss_y(self._yf)

    def _target_derivatives(self):
        z = self._raw(self._Xf)
        g, h = self._phi.gradient_hessian(self._target_y(), z)
        w = self._wt / self._wt.sum()
        return g * w[:, None], h * w[:, None, None]

    def target_gradient(self):
        g, _ = self._target_derivatives()
        return (g.T @ self._Xf).ravel()

    def target_hessian(self):
        _, h = self._target_derivatives()
        return _sandwich(self._Xf, h)

    # -- second order / newton ------------------------------------------------
    def example_hessian_vector(self, v, rows=None):
        r = self._rows(rows)
        s = self._s[r]
        zv = self._raw(self._Xt[r], v)
        t = np.einsum("nkl,nl->nk", self._h[r], zv)
        R = self._outer(self.spec.c * t * s[:, None], self._Xt[r])
        if self.spec.mean_form:
            R += s[:, None] * (self._D * v)[None, :]
        return R

    def third_derivative_matrix(self, v):
        zv = self._raw(self._Xt, v)
        k = self._k
        y = self._loss_y(self._y)
        M = np.empty((self.n_samples, k, k))
        eye = np.eye(k)
        for a in range(k):
            for b in range(a, k):
                ea = np.broadcast_to(eye[a], zv.shape)
                eb = np.broadcast_to(eye[b], zv.shape)
                M[:, a, b] = M[:, b, a] = self.spec.loss.third(y, self._z, zv, ea, eb)
        return _sandwich(self._Xt, self.spec.c * self._s[:, None, None] * M)

    def group_hessian(self, rows):
        r = np.asarray(rows)
        s = self._s[r]
        H = _sandwich(self._Xt[r], self.spec.c * s[:, None, None] * self._h[r])
        if self.spec.mean_form:
            H[np.diag_indices_from(H)] += s.sum() * self._D
        return H

    def group_hessian_factor(self, rows, max_rank=None):
        # H_S = sum_i (c s_i h_i) (x) x~_i x~_i' with c s_i h_i = E diag(lam) E':
        # one column sqrt|lam| (e (x) x~_i) per eigenpair that is not round-off
        # (the multinomial gauge direction 1_K has lam = 0 and is dropped).
        r = np.asarray(rows)
        s = self._s[r]
        lam, E = np.linalg.eigh(self.spec.c * s[:, None, None] * self._h[r])
        scale = np.abs(lam).max(initial=0.0)
        ii, jj = np.nonzero(np.abs(lam) > 1e-13 * scale)
        diag = s.sum() * self._D if self.spec.mean_form else None
        if max_rank is not None and len(ii) > max_rank:
            return None
        if len(ii) == 0:  # no curvature (e.g. saturated logistic rows)
            return np.zeros((self.n_params, 0)), np.zeros(0), diag
        coef = E[ii, :, jj] * np.sqrt(np.abs(lam[ii, jj]))[:, None]
        V = self._outer(coef, self._Xt[r][ii]).T
        return V, np.sign(lam[ii, jj]), diag

    # -- helpers for callers ---------------------------------------------------
    @property
    def sample_weight(self):
        """Effective per-example weights ``s_i`` (sample x class weight)."""
        return self._s.copy()
