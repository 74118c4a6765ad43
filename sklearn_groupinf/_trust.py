"""When to distrust a group estimate: signals computed without refitting.

Every group estimator is an expansion in the removal weights around the fitted
parameters. Two signals tell when a group lies outside its regime:

* the **curvature share** ``lambda_S = lambda_max(H^{-1} H_S)``, the largest
  share of the curvature of the objective, along any direction, that the
  group carries (``H`` damped, ``H_S`` the group's part of it). The
  first-order shift ``H^{-1} q`` is the first term of the Neumann series
  ``(H - H_S)^{-1} q = H^{-1/2} (I + A + A^2 + ...) H^{-1/2} q`` with
  ``A = H^{-1/2} H_S H^{-1/2}``, whose largest eigenvalue is ``lambda_S``;
  the series converges only for ``lambda_S < 1`` and its tail is of relative
  size ``lambda_S / (1 - lambda_S)``. Near 1 the group constrains directions
  that nothing else does (most rows of a one-hot level, a whole class, a
  cluster that alone covers a region of feature space);
* the **spread** ``|estimate - reference|`` against an estimator that keeps
  the terms the method drops: ``newton`` (the group-removed Hessian, the
  target evaluated exactly) when the backend has group Hessians. A spread
  larger than ``|estimate|`` means the reference disagrees in sign or is more
  than twice as large: the left-out terms are as large as what the method
  keeps. A ``newton`` estimate is compared with ``interaction`` the same way
  (when they differ that much, the group moves the model far).

:func:`rule` says which reference judges an estimate and how: with group
Hessians (and references affordable: at most ``MAX_REFERENCE_FLOPS`` for all
groups) the reference is ``newton`` (for ``newton`` itself ``interaction``)
and a group is flagged when ``|estimate - reference| > |estimate|`` or
``lambda_S > 0.95``. Without them (matrix-free backends) the two pairwise
estimators judge each other, ``interaction`` by ``first_order`` (flagged when
the quadratic term exceeds ``0.5 |estimate|``) and ``first_order`` by
``interaction`` (``0.3 |estimate|``), and ``lambda_S`` is not computed (its
power iteration would need many iterative solves). The thresholds are
calibrated against leave-group-out refits by ``benchmarks/trust_flags.py``:
the Newton reference makes the flag sharp; the fallback is coarser.
"""

import warnings

import numpy as np

from ._estimators import (
    _direct_cost,
    _woodbury_cost,
    newton_estimates,
    pairwise_form,
    quadratic_rows,
)

#: flag when the curvature share exceeds this (with a Newton reference)
MAX_SHARE = 0.95
#: flag when ``|estimate - reference|`` exceeds this multiple of ``|estimate|``,
#: by (method, reference)
MAX_RELATIVE_SPREAD = {
    "newton": 1.0,
    ("interaction", "first_order"): 0.5,
    ("second_order", "interaction"): 0.5,
    ("first_order", "interaction"): 0.3,
}
#: largest estimated cost (floating-point operations) of all Newton references
MAX_REFERENCE_FLOPS = 2e10


class UnreliableEstimateWarning(UserWarning):
    """Some group estimates are outside the regime of their expansion.

    Issued by :meth:`GroupInfluence.score_groups
    <sklearn_groupinf.GroupInfluence.score_groups>` when its ``reliable``
    column flags at least one group. Check those groups by refitting
    (:func:`sklearn_groupinf.evaluation.leave_group_out`).
    """


def group_hessian_products(backend, rows, V):
    """``H_S v`` for the columns ``v`` of ``V`` ``(P, k)``: ``(P, k)``."""
    cached = getattr(backend, "cached_group_hessian", lambda rows: None)(rows)
    if cached is not None:  # e.g. Dask: group Hessians reduced in one pass
        return cached @ V
    return np.column_stack(
        [backend.example_hessian_vector(v, rows).sum(axis=0) for v in V.T]
    )


def curvature_share(state, rows, *, n_iter=30, tol=1e-3, seed=0):
    """``lambda_max(H^{-1} H_S)`` of the group with training rows ``rows``.

    Exact from an eigenvalue problem of size ``m`` when the backend gives a
    rank-``m`` factor of ``H_S`` with ``m <= n_iter`` (single rows, small
    groups). Otherwise power iteration on ``H^{-1} H_S`` (self-adjoint in the
    ``H`` inner product), started from ``H^{-1} H_S`` applied to a fixed random vector;
    each step costs one group-Hessian product and one solve with ``H``. The
    Rayleigh quotient ``x' H_S x / x' H x`` approaches ``lambda_max`` from
    below; iteration stops when it changes by less than ``tol`` (absolute: for
    a convex objective the share lies in ``[0, 1]``). Returns ``nan`` when
    the backend has no per-example Hessian products.
    """
    backend, solver = state.backend, state.solver
    rows = rows if hasattr(rows, "groups") else np.asarray(rows)  # Dask GroupRows
    if len(rows) == 0:
        return 0.0
    exact = _share_from_factor(state, rows, max_rank=n_iter)
    if exact is not None:
        return exact
    y = np.random.default_rng(seed).standard_normal(backend.n_params)
    try:
        y = group_hessian_products(backend, rows, y[:, None])[:, 0]
    except NotImplementedError:
        return np.nan
    lam = 0.0
    for _ in range(n_iter):
        x = solver.solve(y)
        xHx = float(x @ y)  # x' H x, since H x = y
        if not xHx > 0:
            return 0.0
        y = group_hessian_products(backend, rows, x[:, None])[:, 0]
        new = float(x @ y) / xHx
        y /= np.sqrt(xHx)  # unit H-norm iterates
        if abs(new - lam) < tol:
            return new
        lam = new
    return lam


def _share_from_factor(state, rows, *, max_rank):
    """Exact share from a low-rank group Hessian ``V diag(signs) V'``, or None.

    ``lambda_max(H^{-1} V C V') = lambda_max(C V' H^{-1} V)``: ``m`` solves for
    a rank-``m`` factor, used when ``m <= max_rank`` (e.g. single rows).
    """
    try:
        factor = state.backend.group_hessian_factor(rows, max_rank=max_rank)
    except NotImplementedError:
        return None
    if factor is None:
        return None
    V, signs, diag = factor
    if diag is not None and np.any(diag):
        return None  # the penalty share of mean-form objectives is full rank
    if V.shape[1] == 0:
        return 0.0
    G = V.T @ state.solver.solve(V)
    G = 0.5 * (G + G.T)
    if np.all(signs > 0):
        return float(np.linalg.eigvalsh(G)[-1])
    return float(np.max(np.linalg.eigvals(signs[:, None] * G).real))


def rule(method, *, newton_reference):
    """``(reference, max_spread, use_share)`` of the trust rule for ``method``.

    ``newton_reference``: whether group-Newton estimates (and dense solves for
    the curvature share) are available and affordable. A ``newton`` estimate
    is judged by ``interaction`` (cheap for every backend; on the benchmark
    as sharp as ``second_order``) and the share.
    """
    if method == "newton":
        return "interaction", MAX_RELATIVE_SPREAD["newton"], True
    if newton_reference:
        return "newton", MAX_RELATIVE_SPREAD["newton"], True
    ref = {"interaction": "first_order"}.get(method, "interaction")
    return ref, MAX_RELATIVE_SPREAD[method, ref], False


def trust_flags(estimate, reference, share=None, *, max_spread=1.0):
    """``reliable`` per group from the estimate, its reference and the share.

    Parameters
    ----------
    estimate : ndarray of shape (n_groups,)
        The estimates being judged.
    reference : ndarray of shape (n_groups,)
        The reference estimates (see :func:`rule`).
    share : ndarray of shape (n_groups,), default=None
        Curvature shares ``lambda_max(H^{-1} H_S)``; ``None`` (or ``nan``
        entries) skips that test.
    max_spread : float, default=1.0
        Flag when ``|estimate - reference| > max_spread * |estimate|``.

    Returns
    -------
    reliable : ndarray of bool, shape (n_groups,)
    """
    estimate = np.asarray(estimate, dtype=np.float64)
    spread = np.abs(estimate - np.asarray(reference, dtype=np.float64))
    reliable = spread <= max_spread * np.abs(estimate)
    if share is not None:
        share = np.nan_to_num(np.asarray(share, dtype=np.float64), nan=0.0)
        reliable &= share <= MAX_SHARE
    return reliable


def _newton_cost(backend, membership):
    P = backend.n_params
    return sum(min(_direct_cost(P, n), _woodbury_cost(P, n)) for n in membership.sizes)


def assess_groups(state, membership, method, estimate, first, *, estimates=None):
    """Trust signals of the estimates of ``method`` for every group.

    Parameters
    ----------
    state : _FitState
    membership : GroupMembership
    method : str
        The estimator of ``estimate``.
    estimate : ndarray of shape (n_groups,)
    first : ndarray of shape (n_groups,)
        The groups' first-order estimates (the linear term of every estimator).
    estimates : dict, default=None
        Estimates already computed, by method name (reused as references).

    Returns
    -------
    reliable : ndarray of bool, shape (n_groups,)
    share : ndarray of shape (n_groups,)
        Curvature shares (``nan`` where not computed).
    """
    backend = state.backend
    estimates = dict(estimates or {})
    newton_ok = (
        backend.supports_newton
        and not backend.matrix_free
        and state.solver.H is not None
        and (
            "newton" in estimates
            or _newton_cost(backend, membership) <= MAX_REFERENCE_FLOPS
        )
    )
    ref_name, max_spread, use_share = rule(method, newton_reference=newton_ok)
    with warnings.catch_warnings():
        # a group-removed Hessian that is not positive definite is flagged
        # through its curvature share; its warning would only repeat it
        warnings.simplefilter("ignore")
        reference = estimates.get(ref_name)
        if reference is None:
            reference = _estimate(state, membership, ref_name, first)
    share = np.full(len(estimate), np.nan)
    if use_share:
        share = np.array(
            [
                curvature_share(state, membership.members(g))
                for g in range(len(estimate))
            ]
        )
    if method == "newton" and _newton_is_exact(state, membership):
        # quadratic objective, no damping: the group-Newton step is the refit
        # itself, wrong only where H - H_S is singular (a share of 1)
        return ~(np.nan_to_num(share) >= 1.0 - 1e-9), share
    return trust_flags(estimate, reference, share, max_spread=max_spread), share


def _newton_is_exact(state, membership):
    """Group-Newton estimates equal refits: a quadratic loss, an undamped ``H``
    and parameters at the optimum (the Newton step ``H^-1 grad J`` negligible,
    in the ``H`` norm, against every group's shift ``H^-1 sum_S q_i``; e.g. a
    frozen model that was not solved exactly is not)."""
    backend, solver = state.backend, state.solver
    if not getattr(backend, "newton_is_exact", False) or solver.damping != 0:
        return False
    g = backend.gradient()
    step = float(g @ solver.solve(g))
    Q = np.asarray(backend.aggregated_removal_gradients(membership.matrix))
    shifts = np.einsum("gp,pg->g", Q, solver.solve(Q.T))
    return step <= 1e-12 * float(np.min(shifts, initial=np.inf))


def _estimate(state, membership, method, first):
    if method == "newton":
        return newton_estimates(state, membership)
    A, M = pairwise_form(method, state, membership)
    return first if A is None else first + 0.5 * quadratic_rows(A, M)


def warn_unreliable(labels, reliable, method, stacklevel=3):
    """Warn with :class:`UnreliableEstimateWarning` when a group is flagged."""
    bad = np.flatnonzero(~np.asarray(reliable))
    if len(bad) == 0:
        return
    shown = ", ".join(map(repr, np.asarray(labels)[bad][:5].tolist()))
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    hint = "" if method == "newton" else ", use method='newton',"
    warnings.warn(
        f"{len(bad)} of {len(reliable)} group estimates (method={method!r}) are "
        f"flagged as unreliable (groups {shown}{more}; see the 'reliable' column): "
        "the group carries most of the curvature along some direction, or the "
        "terms the estimate leaves out are as large as the estimate, so even its "
        "sign is uncertain. Check them by refitting "
        f"(sklearn_groupinf.evaluation.leave_group_out){hint} or split the groups.",
        UnreliableEstimateWarning,
        stacklevel=stacklevel,
    )
