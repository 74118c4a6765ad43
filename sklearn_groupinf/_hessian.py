"""Factorising the damped Hessian, and making sure theta_hat is stationary.

Every influence formula assumes ``grad J(theta_hat) = 0``. scikit-learn's
default tolerances can leave a gradient as large as the quantities estimated,
so :func:`polish_parameters` takes a few Newton steps on the backend's
analytic objective (the user's estimator is never touched).
"""

import warnings

import numpy as np
import scipy.linalg as sla
from sklearn.exceptions import ConvergenceWarning


class IndefiniteHessianError(np.linalg.LinAlgError):
    """The (damped) Hessian is singular or not positive definite."""


class IllConditionedHessianWarning(UserWarning):
    """The Hessian is nearly singular; influence estimates may be unstable."""


class NotStationaryWarning(ConvergenceWarning):
    """The fitted parameters are not a stationary point of the objective."""


class CGConvergenceWarning(ConvergenceWarning):
    """Conjugate gradients stopped before reaching their tolerance."""


class HessianSolver:
    """The protocol of the solvers that ``ModelBackend.hessian_solver`` returns.

    A solver applies the inverse of the damped Hessian
    ``A = grad^2 J + damping * W * I`` (``W`` the data weight). Backends may
    return any object with these members; subclassing gives the defaults.

    Attributes
    ----------
    H : ndarray of shape (P, P) or None
        The damped Hessian ``A`` when the solver formed it, else ``None``
        (matrix-free solvers). The ``newton`` estimator needs it, or low-rank
        group Hessians, to solve with ``A - H_S``.
    rcond : float
        Reciprocal condition number estimate of ``A`` after scaling it to a
        unit diagonal (what governs round-off); NaN when unknown.
    """

    H = None
    rcond = float("nan")

    def solve(self, V):
        """``A^{-1} V`` for ``V`` of shape ``(P,)`` or ``(P, k)``."""
        raise NotImplementedError


def damping_advice(H, need, *, damping, data_weight):
    """What to do about a singular or ill-conditioned damped Hessian ``H``.

    Damping is suggested only where it is the fix: when the damping that
    helps (``need``, per-example units) adds little to the curvature of every
    parameter. Otherwise (badly scaled or offset features, where that damping
    would dwarf the curvature of some parameters and change the model) the
    advice is to standardise the features.
    """
    diag = np.diag(H)
    flat = np.flatnonzero(diag <= 0)
    if len(flat) and damping == 0:
        return (
            f"Parameter(s) {flat[:10].tolist()} have no curvature at all (a "
            "constant or all-zero feature column, or a class no row carries): "
            "drop those features, or pass damping>0 (per-example units) to "
            "GroupInfluence or GroupSelector."
        )
    smallest = float(np.min(diag[diag > 0])) if np.any(diag > 0) else 0.0
    extra = max(need - damping, 0.0) * data_weight
    if smallest > 0 and extra <= 1e-3 * smallest:
        return (
            f"Pass damping>={need:.3g} (per-example units) to GroupInfluence "
            "or GroupSelector."
        )
    spread = float(np.max(diag) / smallest) if smallest > 0 else np.inf
    return (
        "Standardise the features (centre and scale them, e.g. with "
        "StandardScaler in a Pipeline): the curvature of the parameters spans a "
        f"factor {spread:.2g}, and a damping that would help (damping>={need:.3g}) "
        "would dominate the curvature of some parameters and change the model "
        "the influences describe."
    )


class DenseHessianSolver(HessianSolver):
    """Cholesky solver for ``H + lambda * W * I`` (``W`` = data weight).

    Directions in ``null_space`` (the multinomial intercepts) are fixed by adding
    ``N N'``: for right-hand sides orthogonal to them this is the pseudo-inverse.
    The matrix is scaled to a unit diagonal before factorising, so that badly
    scaled features (e.g. in units of 1e8) cost no accuracy and raise no
    warning; a warning means the scaled matrix is nearly singular.

    Parameters
    ----------
    H : ndarray of shape (P, P)
    damping : float
        ``lambda`` in per-example units.
    data_weight : float
        Total data weight ``W`` of the objective.
    null_space : ndarray of shape (P, r) or None
    rcond_warn : float
        Warn when LAPACK's reciprocal condition estimate of the scaled matrix
        falls below this.
    """

    def __init__(self, H, *, damping, data_weight, null_space=None, rcond_warn=1e-11):
        if not np.all(np.isfinite(H)):
            raise FloatingPointError(
                "The Hessian of the training objective has non-finite entries at "
                "the fitted parameters (overflow in the loss?). Scale the features "
                "or check the estimator for divergence."
            )
        A = H.copy()
        A[np.diag_indices_from(A)] += damping * data_weight
        if null_space is not None:
            A += null_space @ null_space.T
        self.H = A
        self.damping = damping
        self.data_weight = data_weight
        d = np.diag(A)
        self._scale = 1.0 / np.sqrt(d) if np.all(d > 0) else np.ones(len(d))
        S = A * self._scale[:, None] * self._scale[None, :]
        norm = np.linalg.norm(S, 1)
        try:
            self._cho = sla.cho_factor(S, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            lam_min = float(sla.eigh(A, eigvals_only=True, subset_by_index=[0, 0])[0])
            need = (
                max(-lam_min, 0.0) + 1e-8 * np.linalg.norm(A, 1)
            ) / data_weight + damping
            advice = damping_advice(A, need, damping=damping, data_weight=data_weight)
            raise IndefiniteHessianError(
                "The Hessian of the training objective (with damping="
                f"{damping!r}) is not positive definite: smallest eigenvalue "
                f"{lam_min:.3g}. This happens with an unpenalised model on "
                "collinear or separable data, badly scaled or offset features, or "
                f"a non-convex loss. {advice}"
            ) from None
        self.rcond = float(sla.lapack.dpocon(self._cho[0], norm, uplo="L")[0])
        if self.rcond < rcond_warn:
            need = 1e-8 * np.linalg.norm(A, 1) / data_weight + damping
            advice = damping_advice(A, need, damping=damping, data_weight=data_weight)
            warnings.warn(
                f"The Hessian is ill-conditioned (reciprocal condition number "
                f"{self.rcond:.2g} after scaling it to a unit diagonal, with "
                f"damping={damping!r}): nearly collinear directions, so influence "
                f"estimates may be dominated by round-off. {advice}",
                IllConditionedHessianWarning,
                stacklevel=3,
            )

    def solve(self, V):
        """``A^{-1} V`` for ``V`` of shape ``(P,)`` or ``(P, k)``."""
        s = self._scale if np.ndim(V) == 1 else self._scale[:, None]
        return s * sla.cho_solve(self._cho, s * V, check_finite=False)


def stationarity(backend, Q=None):
    """``||grad J|| / median_i ||q_i||``: how far theta is from stationary.

    ``Q`` is the removal-gradient matrix ``(n, P)`` or its row norms ``(n,)``
    (computed by the backend when omitted).
    """
    if Q is None:
        Q = backend.removal_gradient_norms()
    if hasattr(Q, "median"):  # e.g. Dask: norms on the workers, median there
        scale = Q.median()
    else:
        norms = np.linalg.norm(Q, axis=1) if np.ndim(Q) == 2 else np.asarray(Q)
        scale = np.median(norms)
    g = backend.gradient()
    if backend.null_space is not None:
        g = g - backend.null_space @ (backend.null_space.T @ g)
    return float(np.linalg.norm(g) / max(scale, np.finfo(float).tiny))


def _newton_direction(backend):
    """``H^{-1} grad J`` (``None`` when the Hessian cannot be solved with).

    The backend's :meth:`~ModelBackend.newton_direction` when it gives one,
    else a dense solve with :meth:`~ModelBackend.hessian`.
    """
    step = backend.newton_direction()
    if step is not None:
        return step
    g = backend.gradient()
    H = backend.hessian()
    if backend.null_space is not None:
        H = H + backend.null_space @ backend.null_space.T
    try:  # convex objectives: Cholesky; otherwise a symmetric solve
        return sla.cho_solve(sla.cho_factor(H, check_finite=False), g)
    except np.linalg.LinAlgError:
        try:
            return sla.solve(H, g, assume_a="sym")
        except (np.linalg.LinAlgError, ValueError):
            return None


def _frozen_message(after, *, weighted):
    causes = [
        "it was fitted on other data than X, y (or other rows)",
        "its solver stopped early (a loose `tol` or a small `max_iter`: refit it "
        "with e.g. tol=1e-10)",
    ]
    weights = (
        "it was fitted with other sample_weight than the ones given"
        if weighted
        else "it was fitted with sample_weight that was not passed to fit"
    )
    if after > 1e-2:  # far: data or weights differ, more likely than a loose tol
        causes.insert(0, weights)
    else:
        causes.insert(1, weights)
    return (
        f"The frozen model's parameters are not a stationary point of its training "
        f"objective on the data and weights given: ||grad J|| is {after:.2g} times "
        "a typical per-example gradient. A frozen model is never changed, so the "
        "influences expand around its parameters and carry an error of about that "
        f"relative size. Likely: {'; or '.join(causes)}. Pass the data and "
        "sample_weight it was fitted with, pass the unfrozen estimator so that "
        "GroupInfluence fits it, or (when the data and weights are right and only "
        "the solver stopped early) pass polish=True to expand around the "
        "polished parameters."
    )


def polish_parameters(
    backend,
    Q,
    *,
    tol,
    max_steps=25,
    polish="auto",
    frozen=False,
    weighted=False,
    polishable=True,
):
    """Newton steps on the backend's objective until ``stationarity <= tol``.

    Parameters
    ----------
    backend : ModelBackend
    Q : ndarray of shape (n, P) or (n,)
        Removal gradients or their row norms, to set the scale of "small".
    tol : float
        Target relative gradient norm.
    polish : {"auto", True, False}
        ``"auto"``/``True`` polish when above ``tol``; ``False`` only warns.
    frozen : bool
        The parameters are a frozen model's: polish only when ``polish`` is
        ``True`` (an explicit request); otherwise warn, naming the likely
        causes, when above ``tol``.
    weighted : bool
        Whether training weights were given (for the frozen warning).
    polishable : bool
        ``False`` for backends whose curvature is not the exact Hessian and
        that never form it (K-FAC): the parameters are used as they are and
        a warning reports the stationarity when above ``tol``.

    Returns
    -------
    before, after : float
        Relative gradient norm before and after polishing.
    """
    before = after = stationarity(backend, Q)
    # a quadratic objective's optimum is one Newton step away, which also
    # fixes directions the relative gradient norm cannot see (e.g. a feature
    # on a scale 1e-6 that lstsq truncated)
    exact_step = (
        getattr(backend, "newton_is_exact", False)
        and not frozen
        and polish is not False
    )
    if after <= tol and not exact_step:
        return before, after
    if not polishable:
        warnings.warn(
            f"The network is used at its trained parameters (Kronecker-factored "
            f"curvature: no Newton polishing, which would need the exact "
            f"curvature): ||grad J|| is {after:.2g} times a typical per-example "
            "gradient, so influence estimates carry an error of about that "
            "relative size beyond the curvature approximation. Train longer or "
            "with a smaller tolerance to reduce it; damping keeps the estimates "
            "defined.",
            NotStationaryWarning,
            stacklevel=3,
        )
        return before, after
    if frozen and polish is not True:
        warnings.warn(
            _frozen_message(after, weighted=weighted),
            NotStationaryWarning,
            stacklevel=3,
        )
        return before, after
    if polish is False:
        warnings.warn(
            f"The fitted parameters are not stationary: ||grad J|| is {after:.2g} "
            "times a typical per-example gradient, so influence estimates carry an "
            "error of that relative size. Refit with a smaller `tol` (e.g. 1e-10) "
            "or pass polish='auto' to GroupInfluence.",
            NotStationaryWarning,
            stacklevel=3,
        )
        return before, after
    best = (after, backend.get_theta())
    n_steps = 0
    for n_steps in range(1, max_steps + 1):
        theta = backend.get_theta()
        if after < best[0]:
            best = (after, theta)
        J0 = backend.objective()
        step = _newton_direction(backend)
        if step is None:
            break
        t = 1.0
        while t > 1e-8:
            if backend.objective(theta - t * step) <= J0 + 1e-12 * abs(J0):
                break
            t *= 0.5
        backend.set_theta(theta - t * step)
        after = stationarity(backend, Q)
        if after <= tol * 1e-3 or t <= 1e-8:
            break
    if after > best[0]:
        # near the optimum the line search cannot tell objective values apart,
        # so an inexact step (e.g. Gauss-Newton curvature) may move away:
        # keep the most stationary parameters seen
        backend.set_theta(best[1])
        after = best[0]
    if after > tol:
        # a backend may know the cause (e.g. separable classes) and its fix
        hint = getattr(backend, "stationarity_hint", lambda: "")()
        warnings.warn(
            f"Polishing did not reach a stationary point in {n_steps} Newton "
            f"step{'s' if n_steps != 1 else ''} (at most {max_steps}): ||grad J|| "
            f"went from {before:.2g} to {after:.2g} times a typical per-example "
            "gradient. Influence estimates carry an error of that relative size; "
            + (hint or "refit the estimator with a tighter `tol`."),
            NotStationaryWarning,
            stacklevel=3,
        )
    return before, after
