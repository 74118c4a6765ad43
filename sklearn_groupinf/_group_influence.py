"""``GroupInfluence``: validation and orchestration (no calculus here)."""

import numbers
import time

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, _fit_context, clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods, Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ._estimators import (
    _FitState,
    check_method,
    newton_estimates,
    pairwise_form,
    quadratic_rows,
)
from ._fitted import InfluenceFit
from ._groups import GroupMembership
from ._hessian import polish_parameters
from ._interaction import DEFAULT_MAX_DENSE_BYTES
from ._progress import log
from ._results import GroupScores
from ._rounds import run_selection
from ._self_influence import self_influence
from ._trust import assess_groups, warn_unreliable
from ._utils import _estimator_has, _fit_routed, _fit_router, _plain, _wrapped_tags
from ._validation import (
    TorchDevice,
    check_candidates,
    check_fitted_inputs,
    check_options,
    is_pipeline,
    validate_target_data,
    validate_training_data,
)
from .backends import get_backend, unwrap_estimator


class GroupInfluence(MetaEstimatorMixin, BaseEstimator):
    """Interaction-aware influence of groups of training examples.

    Estimates, without retraining, how a target quantity (by default the
    estimator's usual metric on a target set) changes when a group of training
    examples is removed, and greedily selects examples or groups to remove or
    add.

    **Sign and units.** Every score is the estimated change of the target, in
    the target's own units, when the example or group is removed:
    ``f(theta_without_S) - f(theta_hat)``. Positive means removal raises the
    target (for a loss target: the data was helping).

    Parameters
    ----------
    estimator : estimator object
        A supported scikit-learn linear model (``LogisticRegression`` with L2 or
        no penalty, ``Ridge``, ``RidgeClassifier``, ``LinearRegression``,
        ``PoissonRegressor``, ``GammaRegressor``, ``TweedieRegressor``), a
        ``Pipeline`` ending in one (earlier steps are a fixed feature map), a
        :class:`sklearn_groupinf.torch.TorchModel`, or any of these wrapped in
        ``sklearn.frozen.FrozenEstimator`` to use an already-fitted model as is.
    method : {"auto", "interaction", "first_order", "second_order", "newton"}, \
            default="auto"
        Group estimator used by ``score_groups`` and ``select``:
        ``first_order`` sums the members' influences; ``interaction`` adds the
        pairwise term of the target's second-order expansion (arXiv
        2605.15675); ``second_order`` adds the parameter response to second
        order in the removal weights; ``newton`` takes one Newton step with the
        group-removed Hessian and evaluates the target exactly (the most
        accurate; scikit-learn linear models only). ``"auto"`` uses ``newton``
        where the model affords it and its estimated cost is at most
        ``AUTO_NEWTON_MAX_FLOPS`` (2e10 floating-point operations, a few
        seconds; see Notes), else ``interaction``.
    target : "default" or callable, default="default"
        ``"default"`` is the scikit-learn metric of the estimator on the target
        set: ``log_loss`` for ``LogisticRegression``, ``mean_squared_error`` for
        least squares (``RidgeClassifier``: on the ``{-1, +1}`` encoding), the
        mean Poisson / Gamma / Tweedie deviance for the GLMs. A callable
        ``phi(y, z)`` written with torch operations returns one value per target
        example from labels ``y`` and raw predictions ``z``; the target is the
        ``target_weight``-weighted mean of ``phi``.
    damping : float, default=0.0
        ``lambda`` added to the Hessian as ``lambda * W * I`` where ``W`` is the
        total data weight of the objective (per-example units).
    polish : {"auto", True, False}, default="auto"
        Newton-polish the fitted parameters on the analytic objective when
        ``||grad J||`` exceeds ``stationarity_tol`` times a typical
        per-example gradient (the user's estimator is not modified). ``False``
        only warns.
    stationarity_tol : float, default=1e-6
        Relative gradient norm regarded as stationary.
    interaction : {"auto", "dense", "implicit"}, default="auto"
        Form of interaction matrices: dense ``n_units x n_units`` (built in
        tiles on ``device``) or an implicit low-rank operator; ``"auto"`` picks
        dense when it fits in ``max_dense_bytes``.
    max_dense_bytes : int, default=2 GiB
        Memory budget for a dense interaction matrix.
    device : str, default="auto"
        Compute device of the interaction matrix: ``"auto"`` (CUDA when
        available, else CPU), ``"cpu"`` or ``"cuda"``.
    dtype : {None, "float32", "float64"}, default=None
        Precision of dense interaction matrices (``None``: float64).
    tile_size : int, default=4096
        Rows per tile when building a dense interaction matrix.
    verbose : int, default=0
        Verbosity.

    Attributes
    ----------
    estimator_ : estimator
        The fitted estimator (the given one itself when it is a
        ``FrozenEstimator``).
    influence_ : ndarray of shape (n_samples,)
        First-order estimated change of the target when each training example
        is removed.
    target_value_ : float
        Target value at the fitted parameters.
    target_name_ : str
        Name of the target (e.g. ``"log_loss"``).
    theta_ : ndarray of shape (n_params,)
        Parameters the estimates expand around (after polishing).
    n_params_ : int
    stationarity_ : tuple of float
        Relative gradient norm before and after polishing.
    hessian_rcond_ : float
        Reciprocal condition number estimate of the damped Hessian scaled to
        a unit diagonal (what governs round-off).
    n_features_in_ : int
    classes_ : ndarray
        Class labels (classifiers only).

    See Also
    --------
    sklearn_groupinf.evaluation.leave_group_out : actual refits, for checking.

    Notes
    -----
    With removal gradients :math:`q_i` (``s_i`` times the example's gradient;
    mean-form GLM objectives include the penalty, see the user guide),
    :math:`H = \\nabla^2 J + \\lambda W I`, :math:`u_i = H^{-1} q_i`,
    :math:`g_f = \\nabla f`, :math:`H_f = \\nabla^2 f`:

    .. math::

        a_i = g_f^\\top u_i, \\qquad
        \\kappa_{ij} = u_i^\\top H_f u_j, \\qquad
        \\widehat{\\Delta f}(S) = \\sum_{i \\in S} a_i
            + \\tfrac12 U_S^\\top H_f U_S,\\; U_S = \\sum_{i\\in S} u_i .

    The second term equals :math:`\\sum_i \\tfrac12\\kappa_{ii} +
    \\sum_{i<j}\\kappa_{ij}`; group scores use only :math:`U_S`.

    ``method="auto"`` estimates the cost of ``newton`` per group as the
    cheaper of a Woodbury solve (about :math:`2P^2 K n_S` for a group of
    :math:`n_S` rows and :math:`K` outputs) and a Cholesky factorisation of
    :math:`H - H_S` (about :math:`P^3/3 + P^2 n_S`), plus one target
    evaluation; ``select`` multiplies it by the number of candidate sets it
    evaluates.

    A ``FrozenEstimator`` is never changed (no polishing): the influences
    expand around its parameters, and ``fit`` warns
    (:class:`NotStationaryWarning`) when they are not stationary for the data
    and weights given, e.g. when ``sample_weight`` it was fitted with was not
    passed.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn_groupinf import GroupInfluence
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> model = make_pipeline(StandardScaler(), LogisticRegression())
    >>> gi = GroupInfluence(model).fit(X[:400], y[:400],
    ...                                X_target=X[400:], y_target=y[400:])
    >>> gi.influence_.shape
    (400,)
    >>> sources = np.arange(400) % 8         # eight "data sources" as groups
    >>> res = gi.score_groups(sources)
    >>> res.groups, res.size
    (array([0, 1, 2, 3, 4, 5, 6, 7]), array([50, 50, 50, 50, 50, 50, 50, 50]))
    >>> # group scores are in log-loss units; singleton groups give influence_
    >>> single = gi.score_groups(np.arange(400), method="first_order")
    >>> bool(np.allclose(single.estimate, gi.influence_))
    True
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit"])],
        "method": [
            StrOptions({"auto", "interaction", "first_order", "second_order", "newton"})
        ],
        "target": [StrOptions({"default"}), callable],
        "damping": [Interval(numbers.Real, 0, None, closed="left")],
        "polish": [StrOptions({"auto"}), "boolean"],
        "stationarity_tol": [Interval(numbers.Real, 0, None, closed="neither")],
        "interaction": [StrOptions({"auto", "dense", "implicit"})],
        "max_dense_bytes": [Interval(numbers.Integral, 1, None, closed="left")],
        "device": [str, TorchDevice()],
        "dtype": [
            StrOptions({"float32", "float64"}),
            Options(type, {np.float32, np.float64}),
            None,
        ],
        "tile_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        estimator,
        *,
        method="auto",
        target="default",
        damping=0.0,
        polish="auto",
        stationarity_tol=1e-6,
        interaction="auto",
        max_dense_bytes=DEFAULT_MAX_DENSE_BYTES,
        device="auto",
        dtype=None,
        tile_size=4096,
        verbose=0,
    ):
        self.estimator = estimator
        self.method = method
        self.target = target
        self.damping = damping
        self.polish = polish
        self.stationarity_tol = stationarity_tol
        self.interaction = interaction
        self.max_dense_bytes = max_dense_bytes
        self.device = device
        self.dtype = dtype
        self.tile_size = tile_size
        self.verbose = verbose

    def __sklearn_tags__(self):
        return _wrapped_tags(super().__sklearn_tags__(), self.estimator)

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(
        self,
        X,
        y,
        sample_weight=None,
        *,
        X_target=None,
        y_target=None,
        target_weight=None,
        **fit_params,
    ):
        """Fit the estimator (unless frozen) and compute the influence state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (what the estimator is fitted on).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Training targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Training sample weights (passed to the estimator's ``fit``). With a
            ``FrozenEstimator``, pass the weights it was trained with.
        X_target, y_target : array-like, default=None
            Target set on which the target metric is evaluated (e.g. validation
            data), with the columns of ``X``. Without it the target is the
            metric on the training data, weighted by ``sample_weight``.
        target_weight : array-like of shape (n_target,), default=None
            Weights of the target examples (the metric's ``sample_weight``).
        **fit_params : dict
            Other parameters of the estimator's ``fit``. With
            ``sklearn.set_config(enable_metadata_routing=True)`` these and
            ``sample_weight`` are routed as the estimator requests them (e.g.
            ``LogisticRegression().set_fit_request(sample_weight=True)`` in a
            ``Pipeline``).

        Returns
        -------
        self : GroupInfluence
        """
        check_options(self)
        X_fit, X, y, sample_weight = validate_training_data(self, X, y, sample_weight)
        X_t, y_t, w_t = validate_target_data(self, X_target, y_target, target_weight)
        t0 = time.perf_counter()
        frozen = isinstance(self.estimator, FrozenEstimator)
        log(
            f"GroupInfluence: fitting {type(_plain(self.estimator)).__name__} on "
            f"{len(y)} examples",
            verbose=self.verbose,
        )
        if frozen:
            check_is_fitted(self.estimator.estimator)
            self.estimator_ = self.estimator
        else:  # fitted on the caller's X: a DataFrame keeps its column names
            est = clone(self.estimator)
            self.estimator_ = _fit_routed(
                self, est, X_fit, y, sample_weight, **fit_params
            )
        check_fitted_inputs(self, X_fit, X, X_t, y_t)
        if (
            np.ndim(y) == 2
            and np.shape(y)[1] == 1
            and get_tags(self.estimator_).estimator_type == "classifier"
        ):
            # the estimator warned (DataConversionWarning) and used y.ravel()
            y = np.asarray(y).ravel()
        if X_t is None:  # the target is the metric on the training data
            X_t, y_t = X, y
            w_t = sample_weight if target_weight is None else target_weight
        backend = get_backend(
            self.estimator_,
            X,
            y,
            sample_weight=sample_weight,
            X_target=X_t,
            y_target=y_t,
            target_weight=w_t,
            target=self.target,
        )
        log(
            f"GroupInfluence: per-example removal gradient norms ({len(y)} x "
            f"{backend.n_params}) [{time.perf_counter() - t0:.1f} s]",
            verbose=self.verbose,
        )
        self.stationarity_ = polish_parameters(
            backend,
            backend.removal_gradient_norms(),
            tol=self.stationarity_tol,
            polish=self.polish,
            frozen=frozen,
            weighted=sample_weight is not None,
        )
        log(
            f"GroupInfluence: stationarity {self.stationarity_[0]:.2g} -> "
            f"{self.stationarity_[1]:.2g}; solving the Hessian system H w = grad f "
            f"[{time.perf_counter() - t0:.1f} s]",
            verbose=self.verbose,
        )
        solver = backend.hessian_solver(float(self.damping))
        grad_f = backend.target_gradient()
        w = solver.solve(grad_f)
        f0 = backend.target_value()
        # a_i = g_f' H^{-1} q_i = q_i' w: one solve, Q streamed by the backend
        influence = backend.removal_gradient_products(w[:, None])[:, 0]
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(influence))):
            raise FloatingPointError(
                "Influence computation produced non-finite values; the Hessian is "
                "numerically singular. Increase damping."
            )
        self._state = _FitState(
            backend, solver, grad_f, w, f0, max_bytes=self.max_dense_bytes
        )
        self._fitted = InfluenceFit(
            self,
            self._state,
            train=(X_fit, y, sample_weight),
            target=(X_target, y_target, target_weight),
            influence=influence,
        )
        self.influence_ = influence
        self.target_value_ = f0
        self.target_name_ = backend.target_name
        self.theta_ = backend.get_theta()
        self.n_params_ = backend.n_params
        self.hessian_rcond_ = getattr(solver, "rcond", np.nan)
        final, _ = unwrap_estimator(self.estimator_)
        if hasattr(final, "classes_"):
            self.classes_ = final.classes_
        if is_pipeline(self.estimator):  # not set by validate_data
            for attr in ("n_features_in_", "feature_names_in_"):
                if hasattr(self.estimator_, attr):
                    setattr(self, attr, getattr(self.estimator_, attr))
        log(
            f"GroupInfluence: done, target {self.target_name_} = {f0:.6g} "
            f"[{time.perf_counter() - t0:.1f} s]",
            verbose=self.verbose,
        )
        return self

    def get_metadata_routing(self):
        """Routing of ``fit`` metadata to the estimator (see ``fit``).

        Returns
        -------
        routing : MetadataRouter
        """
        return _fit_router(self)

    # ------------------------------------------------------------- scoring
    def _resolve_method(self, method, *, pairwise=False, name="method", sizes=None):
        method = self.method if method is None else method
        if method == "auto":
            if sizes is None:
                return "interaction"
            return self._fitted.auto_method(sizes)
        return check_method(method, pairwise=pairwise, name=name)

    def score_groups(self, groups, *, method=None):
        """Estimated change of the target when each group is removed.

        Parameters
        ----------
        groups : array-like of shape (n_samples,)
            Group label of each training example (like ``GroupKFold``'s).
        method : str, default=None
            Overrides the ``method`` parameter for this call (``"auto"``:
            ``newton`` where affordable for these groups, see the class).

        Returns
        -------
        result : GroupScores
            Aligned arrays ``groups`` (sorted labels), ``size``, ``first_order``
            and ``estimate``, in the target's units (positive: removing the
            group raises the target), and ``reliable`` (``False`` where the
            group is outside the regime of the expansion; computed without
            refitting, see :class:`~sklearn_groupinf.GroupScores`).
            ``result.to_frame()`` gives a DataFrame.

        Warns
        -----
        UnreliableEstimateWarning
            When some group is flagged (``reliable`` is ``False``).
        """
        check_is_fitted(self, "influence_")
        st = self._state
        membership = GroupMembership(groups, len(self.influence_))
        method = self._resolve_method(method, sizes=membership.sizes)
        first = membership.aggregate(self.influence_[:, None])[:, 0]
        if method == "newton":
            estimate = newton_estimates(st, membership)
        else:
            estimate = first.copy()
            A, M = pairwise_form(method, st, membership)
            if A is not None:
                estimate += 0.5 * quadratic_rows(A, M)
        reliable, _ = assess_groups(st, membership, method, estimate, first)
        warn_unreliable(membership.labels, reliable, method)
        return GroupScores(
            groups=membership.labels,
            size=membership.sizes,
            first_order=first,
            estimate=estimate,
            reliable=reliable,
            method=method,
        )

    def self_influence(self, groups=None):
        """First-order rise of each training unit's own loss when it is removed.

        Needs no target set: a unit that only the rest of the data would
        predict badly (e.g. a wrong label) has a large self-influence.

        Parameters
        ----------
        groups : array-like of shape (n_samples,), default=None
            Score groups of training examples (sorted labels, as in
            :meth:`score_groups`) instead of single examples.

        Returns
        -------
        sigma : ndarray of shape (n_samples,) or (n_groups,)
            Estimated rise of the example's loss ``l_i`` (for a group: of its
            members' summed loss) when it is removed, in the units of ``l_i``
            (see Notes). Positive: the unit's own loss rises without it.

        Notes
        -----
        With removal gradients :math:`q_i` (see the class Notes) and
        :math:`H` the damped Hessian of the training objective,

        .. math::

            \\sigma_i = \\nabla \\ell_i(\\hat\\theta)^\\top H^{-1} q_i, \\qquad
            \\sigma_S = \\Big(\\sum_{i\\in S} \\nabla \\ell_i\\Big)^\\top
                H^{-1} \\sum_{i \\in S} q_i ,

        where :math:`\\ell_i` is the example's data loss as the objective
        counts it, without its sample weight and without the penalty:
        ``C`` times the log-loss for ``LogisticRegression`` (the log-loss
        itself with no penalty), half the squared error for the least-squares
        models (whose objective the backend halves, penalty included), the
        half deviance for the GLMs, and the module's training loss for a
        ``TorchModel``. For sum-form objectives :math:`q_i = s_i \\nabla
        \\ell_i`, so with unit weights :math:`\\sigma_i = \\nabla\\ell_i^\\top
        H^{-1} \\nabla\\ell_i \\ge 0`. For the mean-form GLM objectives
        :math:`q_i` also carries the example's share of the penalty gradient,
        so :math:`\\sigma_i` can be slightly negative. :math:`\\sigma_S`
        includes the cross terms between members; it is not the sum of their
        :math:`\\sigma_i`. Per-example scores cost one solve with :math:`H`
        per example (in blocks).

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_breast_cancer
        >>> from sklearn.linear_model import LogisticRegression
        >>> from sklearn.pipeline import make_pipeline
        >>> from sklearn.preprocessing import StandardScaler
        >>> from sklearn_groupinf import GroupInfluence
        >>> X, y = load_breast_cancer(return_X_y=True)
        >>> y_noisy = y.copy()
        >>> y_noisy[:10] = 1 - y_noisy[:10]             # ten flipped labels
        >>> model = make_pipeline(StandardScaler(), LogisticRegression())
        >>> gi = GroupInfluence(model).fit(X, y_noisy)
        >>> sigma = gi.self_influence()
        >>> sigma.shape, bool(np.all(sigma >= 0))
        ((569,), True)
        >>> # the flipped rows rank high: most of them are in the top 20
        >>> int(np.isin(np.arange(10), np.argsort(-sigma)[:20]).sum()) >= 7
        True
        >>> gi.self_influence(groups=np.arange(569) % 4).shape
        (4,)
        """
        check_is_fitted(self, "influence_")
        membership = (
            None if groups is None else GroupMembership(groups, len(self.influence_))
        )
        return self_influence(self._state, membership)

    def interaction_matrix(self, groups=None, *, method=None, form=None):
        """Pairwise interactions ``K`` among examples or groups.

        ``est(S) = b' 1_S + 1/2 1_S' K 1_S`` for the pairwise ``method``; for
        ``interaction`` ``K_ij = u_i' H_f u_j`` (target units).

        Parameters
        ----------
        groups : array-like of shape (n_samples,), default=None
            When given, interactions among groups (sorted labels).
        method : {"interaction", "second_order", "first_order"}, default=None
            Defaults to the estimator's ``method`` ("interaction" when that is
            ``newton`` or ``auto``: ``newton`` has no pairwise form).
        form : {"auto", "dense", "implicit"}, default=None
            Overrides the ``interaction`` parameter.

        Returns
        -------
        K : ndarray of shape (n_units, n_units) or scipy LinearOperator
            Dense when it fits in ``max_dense_bytes`` (or ``form="dense"``),
            otherwise a symmetric ``LinearOperator`` that never forms ``K``.
        """
        check_is_fitted(self, "influence_")
        if method is None and self.method == "newton":
            method = "interaction"
        method = self._resolve_method(method, pairwise=True)
        fitted = self._fitted
        membership = None if groups is None else fitted.membership(groups)
        op = fitted.unit_operator(method, membership, form)
        return op.K if op.form == "dense" else op.as_linear_operator()

    def select(
        self,
        budget,
        *,
        groups=None,
        goal="decrease",
        action="remove",
        method=None,
        X_candidates=None,
        y_candidates=None,
        candidate_weight=None,
        n_rounds=1,
        stop_early=False,
    ):
        """Greedily choose examples or groups to remove or add.

        Parameters
        ----------
        budget : int or float
            Number of units to select, or a fraction of the pool in (0, 1].
        groups : array-like of shape (n_samples,), default=None
            Select whole groups of training examples (``action="remove"``).
        goal : {"decrease", "increase"}, default="decrease"
            Whether the selection should decrease or increase the target.
        action : {"remove", "add"}, default="remove"
            ``remove`` training units; ``add`` candidates ``X_candidates`` (or,
            without candidates, up-weight training examples).
        method : {"auto", "interaction", "first_order", "second_order", \
                "newton"}, default=None
            Estimator (default: the ``method`` parameter). Pairwise estimators
            run a greedy rule on their quadratic estimate (``first_order`` is
            top-k). ``newton`` (group removal only) is greedy on exact
            group-Newton estimates: at each step the 8 groups ranked best by
            ``interaction`` are evaluated with one Newton step of their union
            with the selected groups, and the best is taken. ``"auto"`` uses
            ``newton`` for group removal where its cost is affordable (see the
            class), else ``interaction``.
        X_candidates, y_candidates : array-like, default=None
            Candidate examples for ``action="add"``.
        candidate_weight : array-like, default=None
            Sample weights the candidates would get when added.
        n_rounds : int, default=1
            Adaptive rounds: select ``budget / n_rounds`` units, refit, recompute
            and repeat. Keeps the local expansion honest when the selection
            moves the model far.
        stop_early : bool, default=False
            Stop when no unit moves the estimate in the direction of ``goal``.

        Returns
        -------
        selection : Selection
            ``indices`` (rows, greedy order), ``groups`` (group selection),
            ``estimates`` (estimated target change after each step, in the
            target's units), ``round``, ``measured`` (target after each round's
            refit; ``measured[0]`` is the current value).
        """
        check_is_fitted(self, "influence_")
        method = self.method if method is None else method
        if method != "auto":
            check_method(method)
        return run_selection(
            self._fitted,
            budget,
            groups=groups,
            goal=goal,
            action=action,
            method=method,
            candidates=check_candidates(
                self, X_candidates, y_candidates, candidate_weight
            ),
            n_rounds=n_rounds,
            stop_early=stop_early,
        )

    # ---------------------------------------------------------- delegation
    @available_if(_estimator_has("predict"))
    def predict(self, X):
        """Predict with the fitted estimator."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(X)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities from the fitted estimator."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(X)

    @available_if(_estimator_has("predict_log_proba"))
    def predict_log_proba(self, X):
        """Log of the class probabilities from the fitted estimator."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_log_proba(X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X):
        """Decision function of the fitted estimator."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.decision_function(X)

    @available_if(_estimator_has("score"))
    def score(self, X, y, sample_weight=None):
        """Score of the fitted estimator (its own ``score`` method)."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.score(X, y, sample_weight=sample_weight)
