"""The group estimators of DESIGN.md section 2.3, in pairwise form.

With ``u_i = H^{-1} q_i`` (rows of ``U``), ``w = H^{-1} grad f``,
``H_f = grad^2 f``, ``r_i = H_i w`` and ``T_w = grad^3 J[w, ., .]``, every
estimator except ``newton`` is ``est(S) = b' 1_S + 1/2 1_S' A M A' 1_S`` with
``b = U grad f`` and

============  ======================  =====================================
method        A (per example)         M
============  ======================  =====================================
first_order   (none)                  0
interaction   U                       H_f
second_order  [U, R]                  [[H_f - T_w, I], [I, 0]]
============  ======================  =====================================

so group scores need only the per-group sums ``M_groups @ A`` (never an
``n x n`` matrix), and selection uses the same ``(b, A, M)``.
``newton`` evaluates the target exactly after one group-Newton step
``(H - H_S)^{-1} sum_{i in S} q_i``.
"""

import warnings

import numpy as np
import scipy.linalg as sla

PAIRWISE_METHODS = ("first_order", "interaction", "second_order")
METHODS = PAIRWISE_METHODS + ("newton",)


def check_method(method, *, pairwise=False, name="method"):
    allowed = PAIRWISE_METHODS if pairwise else METHODS
    if method not in allowed:
        extra = (
            " 'newton' has no pairwise form, so selection and interaction "
            "matrices cannot use it; use 'second_order' or 'interaction'."
            if method == "newton"
            else ""
        )
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, allowed))}; got "
            f"{method!r}.{extra}"
        )
    return method


def pairwise_form(method, state):
    """Return ``(A, M)`` per example for ``method`` (``A=None`` when ``K = 0``).

    ``state`` is the fitted :class:`GroupInfluence`'s cache (``_FitState``).
    """
    if method == "first_order":
        return None, None
    U = state.U
    B, Mf = state.target_factor
    if method == "interaction":
        return (U if B is None else U @ B), Mf
    # second_order (backends that support it give a dense target Hessian)
    R, T = state.second_order_terms()
    H_f = Mf if B is None else B @ Mf @ B.T
    P = U.shape[1]
    M = np.zeros((2 * P, 2 * P))
    M[:P, :P] = H_f - T
    M[:P, P:] = np.eye(P)
    M[P:, :P] = np.eye(P)
    return np.hstack([U, R]), M


def quadratic_rows(A, M):
    """``diag(A M A')`` without forming ``A M A'``."""
    return np.einsum("ij,ij->i", A @ M, A)


class _FitState:
    """Everything ``fit`` computes that the estimators reuse."""

    def __init__(self, backend, solver, U, grad_f, target_factor, w, f0):
        self.backend = backend
        self.solver = solver
        self.U = U
        self.grad_f = grad_f
        self.target_factor = target_factor
        self.w = w
        self.f0 = f0
        self._second = None

    def second_order_terms(self):
        if not self.backend.supports_second_order:
            raise ValueError(
                f"method='second_order' needs per-example Hessian-vector products "
                f"and third derivatives, which {type(self.backend).__name__} does "
                "not provide; use method='interaction'."
            )
        if self._second is None:
            R = self.backend.example_hessian_vector(self.w)
            T = self.backend.third_derivative_matrix(self.w)
            self._second = (R, T)
        return self._second


def newton_estimates(state, membership, group_ids=None):
    """``f(theta + (H - H_S)^{-1} sum_S q_i) - f(theta)`` for each group.

    Uses a direct Cholesky solve of the group-removed Hessian when
    ``n_params <= 2000`` and conjugate gradients preconditioned by the full
    Hessian's factor otherwise.
    """
    backend = state.backend
    if not backend.supports_newton:
        raise ValueError(
            f"method='newton' needs group Hessians, which {type(backend).__name__} "
            "does not provide; use method='second_order' or 'interaction'."
        )
    theta = backend.get_theta()
    ids = range(membership.n_groups) if group_ids is None else group_ids
    out = np.empty(len(ids))
    for t, g in enumerate(ids):
        rows = membership.members(g)
        q = backend.removal_gradients(rows).sum(axis=0)
        H_S = backend.group_hessian(rows)
        A = state.solver.H - H_S
        step = _solve_group(A, q, state.solver, H_S)
        out[t] = backend.target_value(theta + step) - state.f0
    if not np.all(np.isfinite(out)):
        raise FloatingPointError(
            "The Newton estimate is not finite for some groups: the target "
            "overflowed at the stepped parameters. Use method='second_order'."
        )
    return out


def _solve_group(A, q, solver, H_S):
    P = A.shape[0]
    if P <= 2000:
        try:
            return sla.cho_solve(sla.cho_factor(A, lower=True, check_finite=False), q)
        except np.linalg.LinAlgError:
            warnings.warn(
                "The Hessian without this group is not positive definite (the "
                "group carries curvature the rest of the data lacks, e.g. a whole "
                "class); the Newton step uses a least-squares solve. Add damping.",
                UserWarning,
                stacklevel=4,
            )
            return np.linalg.lstsq(A, q, rcond=None)[0]
    # preconditioned CG on (H - H_S) x = q with preconditioner H^{-1}
    x = solver.solve(q)
    r = q - A @ x
    z = solver.solve(r)
    p = z.copy()
    rz = r @ z
    qn = np.linalg.norm(q)
    for _ in range(500):
        if np.linalg.norm(r) <= 1e-12 * qn:
            break
        Ap = A @ p
        alpha = rz / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        z = solver.solve(r)
        rz_new = r @ z
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x
