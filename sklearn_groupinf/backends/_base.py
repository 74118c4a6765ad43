"""The ``ModelBackend`` protocol: all model-specific calculus lives behind it.

Conventions
-----------
Every backend represents the training objective in **sum form**

.. math::

    J(\\theta) = \\sum_i s_i \\tilde\\ell_i(\\theta) + R_0(\\theta),

where removing example ``i`` sets ``s_i = 0``. Mean-form objectives
``(1/S) sum_i s_i l_i + R`` (GLMs) have the same minimiser as
``sum_i s_i (l_i + R)`` for every subset of the data, so backends fold the
penalty into each example (``l~_i = l_i + R``, ``R_0 = 0``). This makes every
estimator (first order, interaction, second order, Newton) exact in the
re-normalisation that a refit without the group performs.

* ``theta`` : flat float64 vector of the ``n_params`` parameters.
* removal gradient ``q_i = s_i grad l~_i(theta)``: to first order, removing a
  set ``S`` moves the parameters by ``H^{-1} sum_{i in S} q_i``.
* ``hessian()`` is ``grad^2 J`` (no damping; the estimator adds it).
* the target ``f(theta)`` is a weighted mean over target examples.

Capabilities are class attributes: ``supports_second_order`` (per-example
Hessian-vector products and third derivatives are available) and
``supports_newton`` (group Hessians are available).
"""

from abc import ABC, abstractmethod

import numpy as np


class ModelBackend(ABC):
    """Calculus of one fitted model, its training data and its target."""

    supports_second_order = False
    supports_newton = False
    #: ``method="auto"`` may pick ``newton`` (convex objectives, where the
    #: group-Newton step is reliable); otherwise it picks ``interaction``.
    newton_by_default = False

    #: orthonormal directions (n_params, r) along which the objective is
    #: invariant (multinomial intercepts); ``None`` when there are none.
    null_space = None

    @property
    @abstractmethod
    def n_params(self):
        """Number of parameters ``P``."""

    @property
    @abstractmethod
    def n_samples(self):
        """Number of training examples ``n``."""

    @property
    @abstractmethod
    def data_weight(self):
        """Total data weight of the objective; damping is in these units."""

    @abstractmethod
    def get_theta(self):
        """Current parameter vector ``(P,)``."""

    @abstractmethod
    def set_theta(self, theta):
        """Move the backend to parameters ``theta`` (used by polishing)."""

    @abstractmethod
    def objective(self, theta=None):
        """``J(theta)``."""

    @abstractmethod
    def gradient(self):
        """``grad J(theta)`` ``(P,)``."""

    @abstractmethod
    def hessian(self):
        """``grad^2 J(theta)`` ``(P, P)``, without damping."""

    @abstractmethod
    def removal_gradients(self, rows=None):
        """Removal gradients ``q_i`` of training rows ``rows``: ``(len(rows), P)``."""

    # Backends whose ``n x P`` removal-gradient matrix is too large to hold
    # (torch modules) override these three to stream it in batches.
    def removal_gradient_norms(self):
        """``||q_i||`` of every training row ``(n,)``."""
        return np.linalg.norm(self.removal_gradients(), axis=1)

    def removal_gradient_products(self, V):
        """``Q V`` for ``V`` of shape ``(P, k)``: ``(n, k)``."""
        return self.removal_gradients() @ V

    def aggregated_removal_gradients(self, matrix):
        """``matrix @ Q`` for a (sparse) ``(g, n)`` matrix: ``(g, P)``."""
        return np.asarray(matrix @ self.removal_gradients())

    def loss_gradients(self, rows=None):
        """``grad l_i`` of training rows ``rows``: ``(len(rows), P)``.

        ``l_i`` is the example's data loss as the objective counts it, without
        the weight ``s_i`` and without the penalty: ``J = sum_i s_i l_i + R``
        for sum-form objectives (``q_i = s_i grad l_i``); for mean-form
        objectives ``q_i = s_i (grad l_i + grad R)``. Used by self-influence.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not give per-example loss gradients."
        )

    #: factor turning ``l_i`` into the example's term of the estimator's usual
    #: metric (log-loss, squared error, deviance), the units self-influence is
    #: reported in; 1 when ``l_i`` already is that term (a TorchModel's loss).
    metric_scale = 1.0

    def aggregated_loss_gradients(self, matrix, batch_size=2048):
        """``matrix @ L`` (``L`` the loss gradients) for a ``(g, n)`` matrix."""
        return _aggregate_rows(self.loss_gradients, matrix, batch_size)

    def example_log_proba(self, rows=None, theta=None):
        """Log-probability of every class for training rows at ``theta``.

        ``(len(rows), n_classes)``, columns in the order of the estimator's
        ``classes_``; classifiers fitted with a log-loss only. Backends
        without it raise ``NotImplementedError``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not give per-row class probabilities."
        )

    @abstractmethod
    def candidate_gradients(self, X, y, sample_weight=None):
        """Removal gradients of examples not in the training set ``(m, P)``.

        Adding such an example with weight ``s`` moves the parameters by
        ``-H^{-1} q`` to first order.
        """

    def relabel_change(self, rows, y_new, theta=None, *, gradient=True):
        """Objective change when training rows ``rows`` carry labels ``y_new``.

        Returns ``(delta, grad)``: ``J'(theta) - J(theta)``, where ``J'`` is
        the objective with the labels of ``rows`` replaced (their weights
        follow the new labels' class weights), and its gradient ``(P,)`` at
        ``theta`` (the current parameters by default; ``None`` with
        ``gradient=False``). Backends without it raise
        ``NotImplementedError``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot evaluate its objective with other labels."
        )

    @abstractmethod
    def target_value(self, theta=None):
        """``f(theta)`` (at the current parameters by default)."""

    @abstractmethod
    def target_gradient(self):
        """``grad f(theta)`` ``(P,)``."""

    @abstractmethod
    def target_hessian(self):
        """``grad^2 f(theta)`` ``(P, P)``."""

    def target_hessian_factor(self):
        """``(B, M)`` with ``grad^2 f = B M B'``; ``B=None`` means the identity.

        Backends with many parameters return a thin ``B`` (``P x r``, e.g. a
        Gauss-Newton factor) so that no ``P x P`` matrix is formed.
        """
        return None, self.target_hessian()

    def newton_direction(self):
        """``H^{-1} grad J`` for polishing, or ``None`` for the dense default.

        Backends whose influence curvature is not the exact Hessian (e.g. a
        Gauss-Newton approximation) or that never form it override this.
        """
        return None

    #: ``True`` when the backend never forms ``P x P`` matrices (solves by
    #: products); the estimators then prefer target-Hessian products.
    matrix_free = False

    def target_hessian_products(self, V):
        """``V grad^2 f`` for rows ``V`` ``(k, P)``: ``(k, P)``."""
        B, M = self.target_hessian_factor()
        return V @ M if B is None else ((V @ B) @ M) @ B.T

    def target_factor_width(self):
        """Width ``r`` of :meth:`target_hessian_factor`'s ``B`` (without forming it)."""
        return self.n_params

    def hessian_solver(self, damping):
        """A solver for ``grad^2 J + damping * data_weight * I``.

        It follows :class:`sklearn_groupinf._hessian.HessianSolver`:
        ``solve(V)``, the dense damped Hessian ``H`` (``None`` when not
        formed) and ``rcond``.
        """
        from .._hessian import DenseHessianSolver

        return DenseHessianSolver(
            self.hessian(),
            damping=damping,
            data_weight=self.data_weight,
            null_space=self.null_space,
        )

    # -- optional capabilities (second_order / newton) ---------------------
    def example_hessian_vector(self, v, rows=None):
        """``r_i = H_i v`` for training rows: ``(len(rows), P)``."""
        raise NotImplementedError(f"{type(self).__name__} has no per-example HVPs.")

    def third_derivative_matrix(self, v):
        """``T_v = grad^3 J[v, ., .]`` ``(P, P)``."""
        raise NotImplementedError(f"{type(self).__name__} has no third derivatives.")

    def group_hessian(self, rows):
        """``H_S = sum_{i in S} grad^2 (s_i l~_i)`` ``(P, P)``."""
        raise NotImplementedError(f"{type(self).__name__} has no group Hessians.")

    def group_hessian_factor(self, rows, max_rank=None):
        """Signed low-rank factor of the group Hessian (optional, for ``newton``).

        Returns ``(V, signs, diag)`` with
        ``H_S = V @ np.diag(signs) @ V.T + np.diag(diag)``: ``V`` of shape
        ``(P, m)``, ``signs`` of shape ``(m,)`` in ``{-1, +1}`` and ``diag`` of
        shape ``(P,)`` or ``None`` (e.g. the penalty share of a mean-form
        objective). Returns ``None`` when ``m`` would exceed ``max_rank``
        (checked before ``V`` is formed), so callers can fall back to
        :meth:`group_hessian`. With it, the group-Newton step is a Woodbury
        solve with the already factored Hessian instead of a new ``P x P``
        factorisation.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no group Hessian factors."
        )


def _aggregate_rows(rows_fn, matrix, batch_size):
    """``matrix @ rows_fn(all)`` without holding all rows: ``(g, P)``."""
    import scipy.sparse as sp

    matrix = sp.csc_matrix(matrix)
    out = None
    n = matrix.shape[1]
    for i0 in range(0, n, batch_size):
        rows = np.arange(i0, min(n, i0 + batch_size))
        part = np.asarray(matrix[:, rows] @ rows_fn(rows))
        out = part if out is None else out + part
    return out
