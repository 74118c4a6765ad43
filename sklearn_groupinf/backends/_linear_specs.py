"""What each supported scikit-learn linear estimator minimises, as data.

``linear_spec(estimator)`` reads a *fitted* estimator and returns a
:class:`LinearSpec`: the pointwise loss, the data scaling ``c``, the L2 penalty
per parameter, the objective form (sum or mean) and the target encoding. The
objectives are those scikit-learn documents for each estimator (least squares
halved, which keeps the minimiser and puts ``alpha`` itself on the Hessian) and
are checked by ``grad J(theta_hat) ~ 0`` at scikit-learn's own fitted
parameters in the tests.

=========================  ===========================================  ======
estimator                  objective (s_i = sample_weight x class_weight)  form
=========================  ===========================================  ======
LogisticRegression         C sum s_i l_i + 1/2 ||W||^2 (+ 1/2 (b/iota)^2   sum
                           for liblinear)
Ridge / RidgeClassifier    1/2 sum s_i (y_i - z_i)^2 + alpha/2 ||W||^2      sum
LinearRegression           1/2 sum s_i (y_i - z_i)^2                        sum
Poisson/Gamma/Tweedie      (1/S) sum s_i l_i + alpha/2 ||w||^2              mean
=========================  ===========================================  ======
"""

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import (
    GammaRegressor,
    LinearRegression,
    LogisticRegression,
    LogisticRegressionCV,
    PoissonRegressor,
    Ridge,
    RidgeClassifier,
    TweedieRegressor,
)
from sklearn.utils.class_weight import compute_class_weight, compute_sample_weight

from ._losses import (
    HalfBinomialLoss,
    HalfMultinomialLoss,
    HalfSquaredError,
    HalfTweedieLoss,
)
from ._targets import ScaledLoss

SUPPORTED_CLASSES = (
    LogisticRegression,
    Ridge,
    RidgeClassifier,
    LinearRegression,
    PoissonRegressor,
    GammaRegressor,
    TweedieRegressor,
)

SUPPORTED = (
    "LogisticRegression (L2 or no penalty, binary or multinomial), Ridge, "
    "RidgeClassifier, LinearRegression, PoissonRegressor, GammaRegressor, "
    "TweedieRegressor (log link, or power=0 with identity link), or a Pipeline "
    "ending in one of these"
)


class UnsupportedEstimatorError(TypeError, ValueError):
    """The estimator, its loss or its penalty has no supported influence model."""


#: estimators that choose their penalty by cross-validation -> the fixed model
_CV_FIXED = {
    "LogisticRegressionCV": "LogisticRegression(C=model.C_[0])",
    "RidgeCV": "Ridge(alpha=model.alpha_)",
    "RidgeClassifierCV": "RidgeClassifier(alpha=model.alpha_)",
}


def unsupported_error(est):
    """The :class:`UnsupportedEstimatorError` for an estimator with no backend."""
    name = type(est).__name__
    msg = (
        f"GroupInfluence does not support {name}. Supported: {SUPPORTED}; torch "
        "modules through sklearn_groupinf.torch.TorchModel."
    )
    if name in _CV_FIXED:
        msg += (
            f" {name} chooses its penalty by cross-validation, and removing a "
            "group would change that choice; fit it on all the data (model = "
            f"{name}(...).fit(X, y)), then pass {_CV_FIXED[name]}, which holds "
            "the chosen penalty fixed."
        )
    return UnsupportedEstimatorError(msg)


@dataclass
class LinearSpec:
    """The objective of a fitted linear estimator, in the backend's conventions.

    The objective is ``c * sum_i s_i loss(y_i, z_i) + 1/2 theta' diag(D) theta``
    times ``S`` for the penalty when ``mean_form`` (GLMs), with
    ``z_i = Theta [x_i, 1]`` and ``theta = Theta.ravel()`` (one row of
    ``Theta`` per output, intercept last).
    """

    loss: object
    target: object
    c: float
    alpha: np.ndarray  # (K,) L2 strength on the coefficients of each output
    intercept_penalty: float
    mean_form: bool
    fit_intercept: bool
    coef: np.ndarray  # (K, d)
    intercept: np.ndarray  # (K,)
    classes: np.ndarray = None
    class_weight: dict = None
    y_encoding: str = "float"  # "binary", "index", "pm1", "float"
    gauge: bool = False  # multinomial: objective invariant along 1_K

    @property
    def n_outputs(self):
        return self.coef.shape[0]

    def encode_y(self, y, name="y"):
        """Encode labels / targets the way the estimator's loss sees them.

        ``name`` is the argument the labels came in (``y``, ``y_target``,
        ``y_candidates``), used in the error messages: labels the estimator was
        not fitted on, missing labels, non-finite targets, a number of target
        columns other than the estimator's outputs, and targets outside the
        range of a GLM's deviance are refused.
        """
        y = np.asarray(y)
        if self.y_encoding in ("binary", "index", "pm1"):
            index = self.class_index(y, name)
            if self.y_encoding == "binary":
                return (index == 1).astype(np.float64)
            if self.y_encoding == "index":
                return index
            Y = -np.ones((len(y), len(self.classes)))
            Y[np.arange(len(y)), index] = 1.0
            return Y[:, 1:2] if len(self.classes) == 2 else Y
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name} must hold numbers (the estimator is a regressor); got "
                f"values of dtype {y.dtype}, e.g. {y.ravel()[:3].tolist()}."
            ) from None
        y = y.reshape(len(y), -1)
        if not np.all(np.isfinite(y)):
            raise ValueError(
                f"{name} contains {int(np.sum(~np.isfinite(y)))} NaN or infinite "
                "values; drop those rows or fill them."
            )
        if y.shape[1] != self.n_outputs:
            raise ValueError(
                f"{name} has {y.shape[1]} column(s) but the estimator predicts "
                f"{self.n_outputs} output(s); pass {name} with one column per "
                "output, like the y it was fitted on."
            )
        self._check_range(y, name)
        return y

    def class_index(self, y, name="y"):
        """Index of each label in ``classes`` (refusing unknown or missing ones)."""
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(
                f"{name} must be 1-D (one class label per row) for a classifier; "
                f"got shape {y.shape}."
            )
        if y.dtype.kind == "O":
            missing = sum(v is None or (isinstance(v, float) and v != v) for v in y)
        else:
            missing = int(np.isnan(y).sum()) if y.dtype.kind == "f" else 0
        if missing:
            raise ValueError(
                f"{name} contains {missing} missing labels (None/NaN); drop "
                "those rows or give them a class."
            )
        try:
            index = np.searchsorted(self.classes, y)
            index = np.clip(index, 0, len(self.classes) - 1)
            unknown = self.classes[index] != y
        except TypeError:  # labels of other types than classes_ (e.g. str vs int)
            position = {c: i for i, c in enumerate(self.classes.tolist())}
            index = np.array([position.get(v, 0) for v in y.tolist()], dtype=np.intp)
            unknown = np.array([v not in position for v in y.tolist()])
        if np.any(unknown):
            bad = list(dict.fromkeys(y[unknown].tolist()))
            try:
                bad = sorted(bad)[:5]
            except TypeError:  # labels of several types: in order of appearance
                bad = bad[:5]
            raise ValueError(
                f"{name} contains labels {bad} that the estimator was not fitted "
                f"on; classes_ = {self.classes.tolist()}. Pass {name} with the "
                "training labels."
            )
        return index

    def _check_range(self, y, name):
        """Targets outside the domain of a Tweedie deviance are refused."""
        power = getattr(self.loss, "power", None)
        if power is None or power == 0:
            return
        bad = y < 0 if power < 2 else y <= 0
        if np.any(bad):
            need = ">= 0" if power < 2 else "> 0"
            raise ValueError(
                f"{name} contains values {np.unique(y[bad])[:5].tolist()} outside "
                f"the range of the {self.target.name} (power={power:g}), which "
                f"needs {name} {need}; drop those rows, or use a model whose "
                "deviance accepts them."
            )

    def class_weights_of(self, y):
        """Per-example class weights (ones when the estimator has none)."""
        if not self.class_weight:
            return np.ones(len(y))
        return np.array([self.class_weight.get(v, 1.0) for v in np.asarray(y)])


def _freeze_class_weight(est, y, sample_weight):
    cw = getattr(est, "class_weight", None)
    if cw is None:
        return None
    classes = est.classes_
    if isinstance(cw, dict):
        return {c: float(cw.get(c, 1.0)) for c in classes}
    if cw == "balanced":
        if isinstance(est, RidgeClassifier):
            sw = compute_sample_weight("balanced", y)
            frozen = {c: float(sw[np.asarray(y) == c][0]) for c in classes}
        else:
            w = compute_class_weight(
                "balanced", classes=classes, y=y, sample_weight=sample_weight
            )
            frozen = dict(zip(classes, map(float, w)))
        warnings.warn(
            "class_weight='balanced' is recomputed by scikit-learn at every fit, "
            "so removing rows would change every example's weight. GroupInfluence "
            f"freezes it to the fitted weights {frozen}; pass this dict as "
            "class_weight to make refits agree with the estimates.",
            UserWarning,
            stacklevel=4,
        )
        return frozen
    raise UnsupportedEstimatorError(f"Unsupported class_weight={cw!r}.")


def _logistic_penalty(est):
    """Return (C, penalised) or raise for L1 / elastic-net."""
    penalty = getattr(est, "penalty", "deprecated")
    l1_ratio = est.l1_ratio if est.l1_ratio is not None else 0.0
    if penalty == "deprecated":
        if l1_ratio > 0:
            raise UnsupportedEstimatorError(
                f"LogisticRegression with l1_ratio={est.l1_ratio!r} (an L1 or "
                "elastic-net penalty) has no Hessian; influence functions need a "
                "twice-differentiable objective. Use l1_ratio=0 (L2) or C=np.inf."
            )
        return est.C, np.isfinite(est.C)
    if penalty is None:
        return np.inf, False
    if penalty != "l2":
        raise UnsupportedEstimatorError(
            f"LogisticRegression with penalty={penalty!r} has no Hessian; "
            "influence functions need an L2 penalty or none."
        )
    return est.C, np.isfinite(est.C)


def _logistic_spec(est, y, sample_weight):
    C, penalised = _logistic_penalty(est)
    classes = est.classes_
    coef = np.asarray(est.coef_, dtype=np.float64)
    intercept = np.asarray(est.intercept_, dtype=np.float64).reshape(-1)
    binary = len(classes) == 2
    # The data term is C * sum s_i l_i; with no penalty scale it to 1.
    c = float(C) if penalised else 1.0
    b_pen = 0.0
    if est.solver == "liblinear" and est.fit_intercept:
        b_pen = 1.0 / est.intercept_scaling**2
    loss = HalfBinomialLoss() if binary else HalfMultinomialLoss(len(classes))
    return LinearSpec(
        loss=loss,
        target=ScaledLoss(loss, 1.0, "log_loss"),
        c=c,
        alpha=np.full(coef.shape[0], 1.0 if penalised else 0.0),
        intercept_penalty=b_pen,
        mean_form=False,
        fit_intercept=est.fit_intercept,
        coef=coef,
        intercept=intercept if est.fit_intercept else np.zeros(coef.shape[0]),
        classes=classes,
        class_weight=_freeze_class_weight(est, y, sample_weight),
        y_encoding="binary" if binary else "index",
        gauge=not binary,
    )


def _least_squares_spec(est, alpha, y, sample_weight, classifier):
    coef = np.asarray(est.coef_, dtype=np.float64)
    k = 1 if coef.ndim == 1 else coef.shape[0]
    coef = coef.reshape(k, -1)
    intercept = np.broadcast_to(
        np.asarray(est.intercept_, dtype=np.float64).reshape(-1), (k,)
    ).copy()
    if getattr(est, "positive", False):
        raise UnsupportedEstimatorError(
            f"{type(est).__name__}(positive=True) solves a bound-constrained "
            "problem that is not smooth at the bound; use positive=False."
        )
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64).reshape(-1), (k,))
    loss = HalfSquaredError(k)
    return LinearSpec(
        loss=loss,
        target=ScaledLoss(loss, 2.0 / k, "mean_squared_error"),
        c=1.0,
        alpha=alpha.copy(),
        intercept_penalty=0.0,
        mean_form=False,
        fit_intercept=est.fit_intercept,
        coef=coef,
        intercept=intercept if est.fit_intercept else np.zeros(k),
        classes=est.classes_ if classifier else None,
        class_weight=(
            _freeze_class_weight(est, y, sample_weight) if classifier else None
        ),
        y_encoding="pm1" if classifier else "float",
    )


def _glm_spec(est):
    if isinstance(est, PoissonRegressor):
        power, link = 1.0, "log"
    elif isinstance(est, GammaRegressor):
        power, link = 2.0, "log"
    else:
        power = float(est.power)
        link = est.link if est.link != "auto" else ("identity" if power <= 0 else "log")
    if link == "identity" and power == 0:
        loss = HalfSquaredError(1)
        name = "mean_squared_error"
    elif link == "log" and (power == 0 or power >= 1):
        loss = HalfTweedieLoss(power)
        name = {1.0: "mean_poisson_deviance", 2.0: "mean_gamma_deviance"}.get(
            power, "mean_tweedie_deviance"
        )
    else:
        raise UnsupportedEstimatorError(
            f"TweedieRegressor(power={power}, link={link!r}) is not supported: the "
            "identity link with power > 0 is non-convex. Use link='log'."
        )
    coef = np.asarray(est.coef_, dtype=np.float64).reshape(1, -1)
    return LinearSpec(
        loss=loss,
        target=ScaledLoss(loss, 2.0, name),
        c=1.0,
        alpha=np.array([float(est.alpha)]),
        intercept_penalty=0.0,
        mean_form=True,
        fit_intercept=est.fit_intercept,
        coef=coef,
        intercept=np.array([float(est.intercept_) if est.fit_intercept else 0.0]),
        y_encoding="float",
    )


def linear_spec(est, y, sample_weight=None):
    """Describe the objective of a fitted supported linear estimator.

    Parameters
    ----------
    est : fitted estimator
        One of the estimators listed in :data:`SUPPORTED` (not a pipeline).
    y : array-like of shape (n_samples,)
        Training labels, needed to freeze ``class_weight='balanced'``.
    sample_weight : array-like of shape (n_samples,), default=None
        Training sample weights.

    Returns
    -------
    spec : LinearSpec
    """
    if isinstance(est, LogisticRegressionCV):  # a subclass with other parameters
        raise unsupported_error(est)
    if isinstance(est, LogisticRegression):
        return _logistic_spec(est, y, sample_weight)
    if isinstance(est, RidgeClassifier):
        return _least_squares_spec(est, est.alpha, y, sample_weight, True)
    if isinstance(est, Ridge):
        return _least_squares_spec(est, est.alpha, y, sample_weight, False)
    if isinstance(est, LinearRegression):
        return _least_squares_spec(est, 0.0, y, sample_weight, False)
    if isinstance(est, (PoissonRegressor, GammaRegressor, TweedieRegressor)):
        return _glm_spec(est)
    raise unsupported_error(est)
