"""The fitted influence state as the package's selection and estimators see it.

:class:`GroupInfluence` keeps one :class:`InfluenceFit`: the calculus cache
(``state``: backend, Hessian solver, ``w = H^{-1} grad f``), the data it was
fitted on, and the interaction settings. Selection rounds receive it instead
of the estimator, build interaction operators through it, refit through it,
and choose the group estimator of ``method="auto"``
(:meth:`InfluenceFit.auto_method`). ``fit`` computes the state with
:func:`solve_influence`.
"""

import time

import numpy as np
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import _num_samples

from ._estimators import _direct_cost, _FitState, _woodbury_cost, pairwise_form
from ._groups import group_membership
from ._hessian import polish_parameters
from ._interaction import make_interaction
from ._progress import log

#: Largest estimated cost (floating-point operations) for which
#: ``method="auto"`` uses the exact group-Newton estimator; above it,
#: ``interaction``. ``benchmarks/auto_method.py`` measures about 1e9 to 5e9
#: estimated flops per second on one shared CPU core (the lower end under
#: load): 2e10 is 4 to 20 s.
AUTO_NEWTON_MAX_FLOPS = 2e10

#: Fixed cost of one group-Newton estimate, in flops at that rate: about 1 ms
#: of per-group work (measured by ``benchmarks/auto_method.py`` on the small
#: models, where it dominates).
NEWTON_GROUP_OVERHEAD = 2.5e6


def newton_cost(n_params, sizes, *, n_outputs=1, n_target=0):
    """Estimated flops of group-Newton estimates of groups of ``sizes`` rows.

    Per group: the cheaper of a Woodbury solve with the factored Hessian
    (rank about ``n_outputs`` per row) and a new Cholesky factorisation of
    ``H - H_S``, plus one evaluation of the target (about ``n_target * P``)
    and a fixed ``NEWTON_GROUP_OVERHEAD``.
    """
    P = n_params
    sizes = np.asarray(sizes, dtype=np.float64)
    wood = np.array([_woodbury_cost(P, n_outputs * s) for s in sizes])
    direct = np.array([_direct_cost(P, s) for s in sizes])
    per_group = n_target * P + NEWTON_GROUP_OVERHEAD
    return float(np.minimum(wood, direct).sum() + len(sizes) * per_group)


def solve_influence(gi, backend, *, frozen, weighted, t0):
    """Polish (unless frozen), factor the damped Hessian and solve once.

    Returns ``(state, influence, stationarity)``: the :class:`_FitState`,
    the first-order influences ``a_i = q_i' H^{-1} grad f`` (one solve, the
    removal gradients streamed by the backend) and the relative gradient norm
    before and after polishing.
    """
    log(
        f"GroupInfluence: per-example removal gradient norms ({backend.n_samples} "
        f"x {backend.n_params}) [{time.perf_counter() - t0:.1f} s]",
        verbose=gi.verbose,
    )
    polishable = getattr(backend, "polishable", True)
    if not polishable and gi.polish is True:
        raise ValueError(
            f"polish=True needs Newton steps with the exact curvature, which "
            f"curvature={gi.curvature!r} does not form: the network is used at "
            "its trained parameters. Pass polish='auto' (the stationarity is "
            "measured and reported), or curvature='exact' for a small network."
        )
    # never polished (K-FAC): the norms come from the pass of the influences
    one_pass = not polishable and hasattr(
        backend, "removal_gradient_norms_and_products"
    )

    kw = dict(
        tol=gi.stationarity_tol,
        polish=gi.polish,
        frozen=frozen,
        weighted=weighted,
        polishable=polishable,
    )
    stationarity = None
    if not one_pass:
        norms = backend.removal_gradient_norms()
        stationarity = polish_parameters(backend, norms, **kw)
        log(
            f"GroupInfluence: stationarity {stationarity[0]:.2g} -> "
            f"{stationarity[1]:.2g} [{time.perf_counter() - t0:.1f} s]",
            verbose=gi.verbose,
        )
    log(
        "GroupInfluence: solving the Hessian system H w = grad f "
        f"[{time.perf_counter() - t0:.1f} s]",
        verbose=gi.verbose,
    )
    solver = backend.hessian_solver(float(gi.damping))
    grad_f = backend.target_gradient()
    w = solver.solve(grad_f)
    f0 = backend.target_value()
    if one_pass:
        norms, influence = backend.removal_gradient_norms_and_products(
            w[:, None], sample_norms=True
        )
        influence = influence[:, 0]
        stationarity = polish_parameters(backend, norms, **kw)
        log(
            f"GroupInfluence: stationarity {stationarity[0]:.2g} (used as "
            f"trained) [{time.perf_counter() - t0:.1f} s]",
            verbose=gi.verbose,
        )
    else:
        influence = backend.removal_gradient_products(w[:, None])[:, 0]
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(influence))):
        raise FloatingPointError(
            "Influence computation produced non-finite values; the Hessian is "
            "numerically singular. Increase damping."
        )
    state = _FitState(backend, solver, grad_f, w, f0, max_bytes=gi.max_dense_bytes)
    return state, influence, stationarity


class InfluenceFit:
    """What a fitted :class:`GroupInfluence` knows (package-internal).

    Parameters
    ----------
    owner : GroupInfluence
        The fitted estimator (its parameters are kept for refits; the object
        itself is not referenced).
    state : _FitState
        Backend, solver, ``w`` and ``f0``.
    train : tuple
        ``(X, y, sample_weight)`` as the estimator was fitted on.
    target : tuple
        ``(X_target, y_target, target_weight)`` as given to ``fit``.
    influence : ndarray of shape (n_samples,)
    """

    def __init__(self, owner, state, *, train, target, influence):
        self.state = state
        self.train = train
        self.target = target
        self.influence = influence
        self.target_value = state.f0
        self.n_target = len(train[1]) if target[0] is None else _num_samples(target[0])
        self._cls = type(owner)
        self._params = owner.get_params(deep=False)

    @property
    def n_samples(self):
        return len(self.influence)

    def operator(self, A, M, method, form=None):
        """The interaction operator ``K = A M A'`` with the fitted settings."""
        p = self._params
        return make_interaction(
            A,
            M,
            form=p["interaction"] if form is None else form,
            max_dense_bytes=p["max_dense_bytes"],
            device=p["device"],
            dtype=p["dtype"],
            tile_size=p["tile_size"],
            factor=self.state.middle_factor(method, M),
        )

    def unit_operator(self, method, membership=None, form=None):
        """``method``'s interaction operator among examples or groups."""
        n = self.n_samples if membership is None else membership.n_groups
        A, M = pairwise_form(method, self.state, membership)
        if A is None:
            A, M = np.zeros((n, 0)), np.zeros((0, 0))
        return self.operator(A, M, method, form)

    def auto_method(self, sizes, *, max_flops=AUTO_NEWTON_MAX_FLOPS):
        """``"newton"`` when the backend affords it, else ``"interaction"``.

        ``newton`` needs group Hessians and a convex objective (the backends
        with ``newton_by_default``: the scikit-learn linear models), a dense
        Hessian, and its estimated cost (:func:`newton_cost` of
        evaluating sets of ``sizes`` rows) must be at most ``max_flops``.
        """
        backend = self.state.backend
        affords = backend.supports_newton and getattr(
            backend, "newton_by_default", False
        )
        if not affords or getattr(self.state.solver, "H", None) is None:
            return "interaction"
        spec = getattr(backend, "spec", None)
        cost = newton_cost(
            backend.n_params,
            sizes,
            n_outputs=getattr(spec, "n_outputs", 1),
            n_target=self.n_target,
        )
        return "newton" if cost <= max_flops else "interaction"

    def membership(self, groups):
        return group_membership(groups, self.n_samples, self.state.backend)

    def refit(self, X, y, sample_weight):
        """A new fit of the same configuration on other training data.

        A ``FrozenEstimator`` cannot be refitted: its inner estimator is.
        """
        params = dict(self._params)
        est = params["estimator"]
        params["estimator"] = (
            clone(est.estimator) if isinstance(est, FrozenEstimator) else est
        )
        X_t, y_t, w_t = self.target
        new = self._cls(**params).fit(
            X, y, sample_weight, X_target=X_t, y_target=y_t, target_weight=w_t
        )
        return new._fitted
