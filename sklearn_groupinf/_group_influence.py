"""``GroupInfluence``: validation and orchestration (no calculus here)."""

import numbers
import time

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, _fit_context, clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods, Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _num_samples, check_is_fitted

from . import _scoring
from ._fitted import InfluenceFit, solve_influence
from ._interaction import DEFAULT_MAX_DENSE_BYTES
from ._progress import log
from ._utils import _estimator_has, _fit_routed, _fit_router, _plain, _wrapped_tags
from ._validation import (
    TorchDevice,
    check_fitted_inputs,
    check_options,
    curvature_settings,
    is_pipeline,
    validate_target_data,
    validate_training_data,
)
from .backends import get_backend, unwrap_estimator
from .backends._torch_options import CURVATURES


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
        accurate on the convex scikit-learn linear models; torch models need
        the dense solver). ``"auto"`` uses ``newton`` for the scikit-learn
        linear models where its estimated cost is at most
        ``AUTO_NEWTON_MAX_FLOPS`` (2e10 floating-point operations, 4 to 20 s
        on one CPU core; see Notes), else ``interaction``.
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
        per-example gradient (the user's estimator is not modified); the
        least-squares models always take the one Newton step to their optimum
        (a relative gradient norm misses coefficients of features on tiny
        scales). ``False`` only warns. A ``FrozenEstimator`` is polished only
        with ``polish=True``
        (its model is never changed either way): by default the influences
        expand around its own parameters (see Notes).
    stationarity_tol : float, default=1e-6
        Relative gradient norm regarded as stationary.
    curvature : {"auto", "exact", "ggn", "kfac", "ekfac"}, default="auto"
        Curvature of the training objective that ``H`` stands for (torch
        models; the scikit-learn linear models always use their exact
        Hessian and accept only ``"auto"`` and ``"exact"``). ``"exact"``: the
        Hessian; ``"ggn"``: the generalised Gauss-Newton matrix (both dense
        up to 4096 parameters, conjugate gradients above, unless
        ``curvature_options`` says otherwise); ``"kfac"`` / ``"ekfac"``:
        its Kronecker-factored approximation per ``nn.Linear`` and
        ``nn.Conv2d`` layer (EK-FAC with corrected eigenvalues; every other
        parameter gets its exact Gauss-Newton diagonal), with the target
        curvature through a rank-``target_rank`` factor and the parameters
        used as trained (no polishing, see Notes). ``"auto"``: a
        ``TorchModel``'s own ``curvature`` / ``hessian_solver`` when set,
        else ``"exact"`` up to ``AUTO_KFAC_PARAMS`` (4096) trainable
        parameters and ``"ekfac"`` above.
    curvature_options : dict, default=None
        Solver settings of the curvature: ``hessian_solver`` (``"auto"``,
        ``"dense"``, ``"cg"``), ``cg_tol``, ``cg_max_iter`` (``"exact"``,
        ``"ggn"``); ``fisher`` (``"exact"`` output-Hessian factors or
        ``"sampled"`` labels), ``n_draws``, ``random_state`` (``"kfac"``,
        ``"ekfac"``); ``correction_rows`` (``"ekfac"``: rows of a seeded
        sample that correct the eigenvalues, default 2000, every row when
        fewer); ``batch_size`` (rows per pass) and ``cg_block_size``
        (right-hand sides per block) for all. Unset keys keep the
        ``TorchModel``'s values (which they override) or the defaults.
    target_rank : int, default=None
        Rank ``r`` of the target Gauss-Newton factor used by ``"kfac"`` and
        ``"ekfac"`` (``None``: ``DEFAULT_TARGET_RANK``, 64); ignored by the
        other curvatures.
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

    With ``curvature="kfac"`` or ``"ekfac"`` the damped Gauss-Newton matrix
    :math:`F + \\lambda W I` is approximated per layer :math:`l` by
    :math:`G_l \\otimes A_l + \\lambda W I` (:math:`A_l`: second moment of
    the layer's inputs, :math:`G_l`: of its output gradients; EK-FAC keeps
    the eigenbasis :math:`Q_G \\otimes Q_A` and replaces the eigenvalues by
    the exact second moments of the per-example gradients in it). A row's
    product with a direction is :math:`\\sum_t g_t^\\top V_l a_t` over
    the layer's positions, so per-example gradients are never stored: peak
    memory is the factors, one batch of activations and per-example layer
    gradients of at most :math:`2^{24}` values at a time. The target
    curvature enters as :math:`H_f \\approx B \\Lambda B^\\top` of rank
    :math:`r` (``target_rank``): by default the Nystrom approximation
    :math:`Y (\\Omega^\\top Y)^{+} Y^\\top`, :math:`Y = H_f \\Omega`,
    on :math:`r` random combinations :math:`\\Omega = H^{-1} Q^\\top G` of
    the parameter shifts (exact on their span), from exact target
    Gauss-Newton products computed layer by layer; so the interaction rows
    :math:`Q H^{-1} B` cost :math:`r` solves and :math:`n r` values. The
    default :math:`r = 64` had 0.5 % error in the interaction terms of 100
    groups of a 2,410-parameter network (``benchmarks/kfac_target_rank.py``).
    Such networks are used at their trained parameters (Newton
    polishing would need the exact curvature); ``stationarity_`` reports
    the relative gradient norm there, and ``fit`` warns when it exceeds
    ``stationarity_tol``.

    ``method="auto"`` estimates the cost of ``newton`` per group as the
    cheaper of a Woodbury solve (about :math:`2P^2 K n_S` for a group of
    :math:`n_S` rows and :math:`K` outputs) and a Cholesky factorisation of
    :math:`H - H_S` (about :math:`P^3/3 + P^2 n_S`), plus one target
    evaluation and about 1 ms of fixed work per group; ``select`` adds it
    up over the candidate sets it evaluates.

    A ``FrozenEstimator`` is never changed, and not polished unless
    ``polish=True``: by default the influences expand around its
    parameters, and ``fit`` warns
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
        "curvature": [StrOptions(set(CURVATURES))],
        "curvature_options": [dict, None],
        "target_rank": [Interval(numbers.Integral, 1, None, closed="left"), None],
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
        curvature="auto",
        curvature_options=None,
        target_rank=None,
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
        self.curvature = curvature
        self.curvature_options = curvature_options
        self.target_rank = target_rank
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
        y=None,
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
            Training targets. ``None`` only for a
            :class:`~sklearn_groupinf.torch.CausalLM`, whose ``X`` is a
            sequence of texts (its target set ``X_target`` has no
            ``y_target`` either).
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
        from ._dask_fit import any_dask, fit_dask  # Dask arrays: fitted by chunks

        target = (X_target, y_target, target_weight)
        if any_dask(X, y, sample_weight, *target):
            return fit_dask(self, X, y, sample_weight, target, **fit_params)
        X_fit, X, y, sample_weight = validate_training_data(self, X, y, sample_weight)
        X_t, y_t, w_t = validate_target_data(self, X_target, y_target, target_weight)
        t0 = time.perf_counter()
        frozen = isinstance(self.estimator, FrozenEstimator)
        log(
            f"GroupInfluence: fitting {type(_plain(self.estimator)).__name__} on "
            f"{_num_samples(X)} examples",
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
            **curvature_settings(self),
        )
        self._state, influence, self.stationarity_ = solve_influence(
            self, backend, frozen=frozen, weighted=sample_weight is not None, t0=t0
        )
        self._fitted = InfluenceFit(
            self,
            self._state,
            train=(X_fit, y, sample_weight),
            target=(X_target, y_target, target_weight),
            influence=influence,
        )
        self.influence_ = influence
        self.target_value_ = f0 = self._state.f0
        self.target_name_ = backend.target_name
        self.theta_ = backend.get_theta()
        self.n_params_ = backend.n_params
        self.hessian_rcond_ = getattr(self._state.solver, "rcond", np.nan)
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

    # ----------------------------------- scoring and selection (_scoring.py)
    score_groups = _scoring.score_groups
    self_influence = _scoring.self_influence
    interaction_matrix = _scoring.interaction_matrix
    select = _scoring.select

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
