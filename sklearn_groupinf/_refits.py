"""The refits behind :func:`sklearn_groupinf.evaluation.leave_group_out`.

One refit = a warm-started clone of the reference model fitted without a group,
measured by the same backend code that :class:`GroupInfluence` uses: the
target value and the stationarity ``||grad J|| / median_i ||q_i||`` of the
refitted parameters.

scikit-learn estimators are refitted by their own solver at a tight ``tol``.
Torch models (``TorchModel``, skorch nets) are not: float64 L-BFGS cannot
reach such tolerances and would burn its whole iteration budget. They keep
their own ``tol``, start from the reference fit's module (``warm_start`` with
``module_``), run at most ``_TORCH_LBFGS_ITER`` L-BFGS iterations (the new
minimum is near: the quadratic convergence of Newton's method finishes the job
faster than L-BFGS's linear one), and are finished by Newton steps to the
stationarity of the influence state. Newton steps are taken only in the
minimum's quadratic basin (positive definite Hessian, full steps accepted);
until then L-BFGS runs again from where it stopped, in rounds of
``_TORCH_LBFGS_ITER`` iterations (a gradient each, against a Hessian per
Newton step). The last of the ``_TORCH_ROUNDS`` rounds follows
Levenberg-Marquardt steps wherever they lead.
"""

import copy
import numbers
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import _safe_indexing

from ._groups import GroupMembership
from ._hessian import stationarity
from ._utils import _fit_with_weight
from .backends import get_backend, is_torch_model, unwrap_estimator

#: L-BFGS + Newton-polish rounds of one torch refit.
_TORCH_ROUNDS = 8
#: L-BFGS iterations per round of a warm-started torch refit.
_TORCH_LBFGS_ITER = 250
#: Hessians formed per round of a torch refit (Newton finish).
_NEWTON_STEPS = 30
#: All Newton steps (fresh and chord) per round of a torch refit.
_CHORD_MAX_STEPS = 200
#: Fresh Hessians in a row with neither progress before giving up: halving the
#: best stationarity, or lowering J by more than ``_STALL_DECREASE * |J|``.
_STALL_HESSIANS = 5
_STALL_DECREASE = 1e-10
#: A chord step must divide the stationarity by this to keep its Hessian.
_CHORD_CONTRACTION = 4.0


def check_membership(groups, n_samples):
    """Labels -> ``(labels, sizes, list of removed-row masks)``."""
    if sp.issparse(groups) or (
        isinstance(groups, np.ndarray)
        and groups.ndim == 2
        and (groups.dtype == bool or min(groups.shape) > 1)
    ):
        values = groups.data if sp.issparse(groups) else groups
        if values.dtype.kind not in "biuf":
            raise ValueError(
                f"groups has shape {groups.shape} with {values.dtype} values: pass "
                "one label per example (labels from several columns combined into "
                "one, e.g. site + '|' + year) or a boolean membership matrix with "
                "one row per group."
            )
        if not np.all((values == 0) | (values == 1)):
            odd = np.unique(values[(values != 0) & (values != 1)])[:3].tolist()
            raise ValueError(
                "A membership matrix in groups must hold booleans or 0/1 (row g "
                f"marks the examples of group g); got values {odd}."
            )
        M = sp.csr_matrix(groups, dtype=bool)
        if M.shape[1] != n_samples:
            raise ValueError(
                f"A membership matrix in groups must have shape (n_groups, "
                f"{n_samples}); got {M.shape}. Pass one label per example or a "
                "boolean matrix with one row per group."
            )
        removed = [M[g].toarray().ravel() for g in range(M.shape[0])]
        labels = np.arange(M.shape[0])
    else:
        membership = GroupMembership(groups, n_samples)
        labels = membership.labels
        removed = [membership.inverse == g for g in range(membership.n_groups)]
    sizes = np.array([int(r.sum()) for r in removed])
    if np.any(sizes == 0):
        raise ValueError(
            f"groups has {int(np.sum(sizes == 0))} empty groups (rows "
            f"{np.flatnonzero(sizes == 0)[:5].tolist()} of the membership matrix); "
            "every group needs at least one training example."
        )
    return labels, sizes, removed


def _warm_start_from(est, warm_from):
    """Copy the fitted parameters of ``warm_from`` into ``est`` (warm start)."""
    if warm_from is None:
        return est
    if hasattr(warm_from, "module_"):  # TorchModel
        est.module_ = copy.deepcopy(warm_from.module_)
        if hasattr(warm_from, "classes_"):
            est.classes_ = np.array(warm_from.classes_, copy=True)
        return est
    for attr in ("coef_", "intercept_"):
        if hasattr(warm_from, attr):
            setattr(est, attr, np.array(getattr(warm_from, attr), copy=True))
    return est


def tight_clone(est, warm_from, *, tol, max_iter, class_weight):
    """A clone with a tight tolerance, enough iterations and a warm start.

    Torch models keep their own ``tol`` and ``max_iter`` (they are polished
    after fitting, see the module docstring); ``TorchModel`` starts from
    ``warm_from.module_``.
    """
    est = clone(est)
    params = est.get_params(deep=False)
    new = {}
    torch_model = is_torch_model(est)
    if isinstance(params.get("tol"), numbers.Real) and not torch_model:
        new["tol"] = min(float(params["tol"]), tol)
    if "max_iter" in params and not torch_model:
        current = params["max_iter"]
        new["max_iter"] = max(
            current if isinstance(current, numbers.Integral) else 0, max_iter
        )
    if class_weight is not None and "class_weight" in params:
        new["class_weight"] = class_weight
    warm = "warm_start" in params and params.get("solver") != "liblinear"
    warm = warm and (not torch_model or hasattr(warm_from, "module_"))
    if warm:
        new["warm_start"] = True
    if warm and torch_model:  # near the new minimum: a short L-BFGS, then Newton
        new["max_iter"] = min(params["max_iter"], _TORCH_LBFGS_ITER)
        new["optimizer"] = "lbfgs"
    est.set_params(**new)
    return _warm_start_from(est, warm_from) if warm else est


def clone_warm(est):
    """``clone`` that keeps the warm start (``coef_``/``intercept_``, ``module_``)."""
    new = clone(est)
    return _warm_start_from(new, est) if getattr(est, "warm_start", False) else new


def _fit_recording(est, X, y, sample_weight):
    """Fit; ``True`` when the solver raised no ``ConvergenceWarning``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        _fit_with_weight(est, X, y, sample_weight)
    converged = True
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            converged = False
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return converged


def _newton_solver(backend):
    """``(solve with H + mu I, mu == 0)`` for the exact Hessian ``H`` (dense).

    ``mu = 0`` where ``H`` is positive definite (Newton steps); elsewhere (away
    from the minimum of a non-convex model) ``mu`` is just above
    ``-lambda_min(H)`` (Levenberg-Marquardt steps, descent directions). The
    factorisation is computed once and reused by the chord steps of
    :func:`newton_finish`. ``(None, False)`` when it cannot be formed.
    """
    H = backend.exact_hessian()
    lam, U = np.linalg.eigh(H)
    mu = 0.0 if lam[0] > 0 else -1.5 * lam[0] + 1e-6 * max(abs(lam[-1]), 1e-300)
    d = lam + mu
    if not np.all(d > 0) or not np.all(np.isfinite(d)):
        return None, False
    return (lambda g: U @ ((U.T @ g) / d)), mu == 0.0


def newton_finish(backend, norms, *, tol, max_steps=_NEWTON_STEPS, basin_only=False):
    """Newton steps with a backtracking line search until stationarity <= ``tol``.

    Unlike the polish of ``GroupInfluence.fit`` (a few steps near a minimum,
    which keeps the most stationary point it saw), this follows the descent
    path of the objective from the L-BFGS iterate to the nearby minimum,
    however far the gradient norm first rises. A step is accepted when the
    objective does not rise beyond round-off.

    Dense backends reuse one factorised Hessian for further steps (chord
    steps: a gradient each, about a hundredth of the cost of a Hessian on a
    small network) while a full step is accepted and divides the
    stationarity by at least ``_CHORD_CONTRACTION``; otherwise the next step
    forms the Hessian afresh. ``max_steps`` bounds the Hessians formed,
    ``_CHORD_MAX_STEPS`` all steps; ``_STALL_HESSIANS`` fresh Hessians in a
    row that neither halve the best stationarity seen nor lower the objective
    beyond round-off end the finish (a flat valley: more steps would not
    help). Matrix-free backends take the backend's own Newton direction
    (conjugate gradients) at every step, at most ``max_steps`` of them.
    Returns the stationarity reached; stops early when no descent step is
    found.

    ``basin_only=True`` stops as soon as a freshly formed Hessian is
    indefinite or its Newton step needs a line search: the iterate is not yet
    in the minimum's quadratic basin, where L-BFGS (a gradient per iteration)
    travels far more cheaply than Levenberg-Marquardt steps (a Hessian each).
    """
    stat = stationarity(backend, norms)
    solve, n_hessians, fresh = None, 0, False
    best, stalled = stat, 0
    for _ in range(_CHORD_MAX_STEPS):
        if stat <= tol:
            break
        if backend.matrix_free:
            if n_hessians >= max_steps:
                break
            step, fresh = backend.newton_direction(), True
            n_hessians += 1
        else:
            if solve is None:
                if n_hessians >= max_steps or stalled >= _STALL_HESSIANS:
                    break
                solve, pd, fresh = *_newton_solver(backend), True
                n_hessians += 1
                if solve is None or (basin_only and not pd):
                    break
            else:
                fresh = False
            step = solve(backend.gradient())
        if step is None:
            break
        theta, J0 = backend.get_theta(), backend.objective()
        t = 1.0
        while t > 1e-10:
            if backend.objective(theta - t * step) <= J0 + 1e-12 * abs(J0):
                break
            t *= 0.5
        if t <= 1e-10:
            if fresh:
                break
            solve = None  # a stale Hessian: form it afresh and retry
            continue
        backend.set_theta(theta - t * step)
        gained = J0 - backend.objective() > _STALL_DECREASE * abs(J0)
        new_stat = stationarity(backend, norms)
        if basin_only and fresh and t < 1.0:
            return new_stat
        if t < 1.0 or new_stat * _CHORD_CONTRACTION > stat:
            solve = None
        stat = new_stat
        if fresh:
            stalled = 0 if gained or 2.0 * stat < best else stalled + 1
            best = min(best, stat)
    return stat


def refit_one(
    est, X, y, sample_weight, keep, target_kw, *, stationarity_tol, return_model=False
):
    """Refit ``est`` on the rows ``keep`` (all when ``None``) and measure it.

    Returns ``(target_value, n_iter, converged, stationarity, model)``.
    ``converged``: the solver met its tolerance (scikit-learn estimators), or
    the polished parameters met ``stationarity_tol`` (torch models).
    """
    if keep is None:
        Xk, yk, swk = X, y, sample_weight
    else:
        Xk, yk = _safe_indexing(X, np.flatnonzero(keep)), y[keep]
        swk = None if sample_weight is None else sample_weight[keep]
    final, _ = unwrap_estimator(est)
    torch_model = is_torch_model(final)
    n_iter = 0
    n_rounds = _TORCH_ROUNDS if torch_model and hasattr(final, "module_") else 1
    previous = np.inf
    for r in range(n_rounds):
        converged = _fit_recording(est, Xk, yk, swk)
        it = getattr(final, "n_iter_", None)
        n_iter = -1 if it is None or n_iter < 0 else n_iter + int(np.max(it))
        backend = get_backend(est, Xk, yk, sample_weight=swk, **target_kw)
        norms = backend.removal_gradient_norms()
        if not torch_model:
            stat = stationarity(backend, norms)
            break
        last = r == n_rounds - 1
        stat = newton_finish(backend, norms, tol=stationarity_tol, basin_only=not last)
        converged = stat <= stationarity_tol
        if (
            converged
            or last
            or (it is not None and np.max(it) == 0 and stat * 2 > previous)
        ):
            break  # (or L-BFGS is at its own tolerance and Newton stalled)
        previous = stat
        backend.write_module()  # not in Newton's basin yet: L-BFGS from here
        final.set_params(warm_start=True)
    model = est if return_model else None
    return float(backend.target_value()), n_iter, converged, stat, model
