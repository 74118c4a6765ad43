"""Input validation of :class:`GroupInfluence` (what ``fit`` and ``select`` accept).

Data enter in three places: the training data and the target set at ``fit``
and candidate examples at ``select``. Target and candidate rows must have the
training data's columns, checked as scikit-learn checks ``predict`` input
(number of features, and the column names of a DataFrame). Through a
``Pipeline`` the pipeline checks its own input; the features it produces are
then checked for NaN, infinity and width before any calculus sees them.
"""

import numpy as np
import scipy.sparse as sp
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import (
    _check_sample_weight,
    _num_samples,
    check_array,
    check_consistent_length,
    validate_data,
)

from ._utils import _plain, check_weights
from .backends import is_text_model, is_torch_model, unwrap_estimator
from .backends._torch_options import check_curvature_options


class TorchDevice(HasMethods):
    """Parameter constraint: a ``torch.device`` (checked without importing torch).

    A ``HasMethods`` only so that scikit-learn's parameter validation accepts
    it as a constraint; it checks the type by name.
    """

    def __init__(self):
        super().__init__([])

    def is_satisfied_by(self, val):
        return type(val).__name__ == "device" and type(val).__module__ == "torch"

    def __str__(self):
        return "an instance of 'torch.device'"


def is_pipeline(estimator):
    """Whether ``estimator`` (possibly frozen) is a ``Pipeline``."""
    return isinstance(_plain(estimator), Pipeline)


def check_options(gi):
    """Checks of parameters that their constraints cannot express.

    ``device`` must name a usable device (torch is imported only when it
    names an accelerator); ``curvature`` and ``curvature_options`` must apply
    to the estimator (only torch models have a choice of curvature).
    """
    from ._interaction import validate_device

    validate_device(gi.device)
    final, _ = unwrap_estimator(gi.estimator)
    check_curvature_options(
        gi.curvature,
        gi.curvature_options,
        torch_model=is_torch_model(final) or is_text_model(final),
        estimator_name=type(final).__name__,
    )


def curvature_settings(gi):
    """Backend keyword arguments of the curvature settings (torch models only)."""
    final, _ = unwrap_estimator(gi.estimator)
    if not (is_torch_model(final) or is_text_model(final)):
        return {}
    return dict(
        curvature=gi.curvature,
        curvature_options=gi.curvature_options,
        target_rank=gi.target_rank,
    )


def validate_training_data(gi, X, y, sample_weight):
    """Validate ``X, y, sample_weight`` of ``fit``.

    Returns
    -------
    X_fit : the ``X`` the estimator is fitted on (the caller's object, so that
        a DataFrame keeps its column names).
    X : ndarray of float64 (or, through a ``Pipeline``, ``X`` as given).
    y : ndarray
    sample_weight : ndarray or None
    """
    if is_text_model(unwrap_estimator(gi.estimator)[0]):
        # texts: the CausalLM tokenises and checks them; there is no y
        if y is not None:
            raise ValueError(
                "A CausalLM predicts the next token of X itself: pass y=None "
                f"(got an object of type {type(y).__name__})."
            )
        return X, X, None, _text_weights(X, sample_weight)
    if is_pipeline(gi.estimator):
        # a pipeline validates its own inputs (it may take DataFrames)
        check_consistent_length(X, y)
        y = np.asarray(y)
        X_arr = X
    else:
        final, _ = unwrap_estimator(gi.estimator)
        X_arr, y = validate_data(
            gi,
            X,
            y,
            dtype=np.float64,
            multi_output=True,
            y_numeric=get_tags(final).estimator_type == "regressor",
        )
        if not (hasattr(X, "__array__") or sp.issparse(X)):
            X = X_arr  # lists: fit on the validated array
    if sample_weight is not None:
        sample_weight = _check_sample_weight(
            sample_weight, np.empty((len(y), 0)), ensure_non_negative=True
        )
    return X, X_arr, y, sample_weight


def _text_weights(X, weight, name="sample_weight"):
    """Weights of a sequence of texts (``None`` stays ``None``)."""
    if isinstance(X, str) or not hasattr(X, "__len__"):
        raise TypeError(
            "A CausalLM takes a sequence of texts (strings) or of token-id "
            f"sequences; got {type(X).__name__}."
        )
    if weight is None:
        return None
    w = _check_sample_weight(weight, np.empty((len(X), 0)), ensure_non_negative=True)
    if w.sum() <= 0:
        raise ValueError(f"{name} sums to zero; give some weight.")
    return w


def validate_target_data(gi, X_target, y_target, target_weight):
    """Validate the target set of ``fit`` (before the estimator is fitted).

    Returns ``(X_target, y_target, target_weight)``; ``X_target`` is checked
    against the training columns unless the estimator is a ``Pipeline``
    (checked after fitting by :func:`check_transformed`).
    """
    if X_target is None:
        if y_target is not None:
            raise ValueError("y_target was given without X_target; pass both.")
        return None, None, target_weight
    if is_text_model(unwrap_estimator(gi.estimator)[0]):
        if y_target is not None:
            raise ValueError("A CausalLM's target set has no y_target; pass None.")
        return X_target, None, _text_weights(X_target, target_weight, "target_weight")
    if not is_pipeline(gi.estimator):
        X_target = check_new_data(gi, X_target, "X_target")
    if y_target is None and not callable(gi.target):
        raise ValueError(
            "y_target is required with the default target (a metric needs the "
            "true labels); pass y_target, or a callable target."
        )
    n_t = _num_samples(X_target)
    if y_target is not None:
        y_target = np.asarray(y_target)
        _check_label_count(y_target, n_t, "y_target", "X_target")
        if y_target.dtype.kind == "f" and not np.all(np.isfinite(y_target)):
            raise ValueError("y_target contains NaN or infinity.")
    if target_weight is not None:
        target_weight = check_weights(target_weight, n_t, "target_weight", "X_target")
    return X_target, y_target, target_weight


def _check_label_count(y, n, name, rows):
    """``y`` (an array) holds one label per row of ``rows`` (``n`` rows)."""
    if y.ndim == 0 or len(y) != n:
        got = len(y) if y.ndim else "a single value"
        raise ValueError(
            f"{rows} has {n} rows but {name} has {got}; pass one label per row "
            f"of {rows} (an array of shape ({n},))."
        )


def check_new_data(gi, X, name):
    """Rows for a fitted model: the training columns, by number and by name.

    Without a ``Pipeline`` the check is scikit-learn's own (``validate_data``
    with ``reset=False``: a DataFrame with reordered, renamed or missing
    columns is refused). Through a ``Pipeline`` the pipeline checks its input
    and :func:`check_transformed` checks the features it produces.
    """
    if is_pipeline(gi.estimator):
        if hasattr(gi, "estimator_"):
            check_transformed(gi.estimator_, X, name)
        return X
    if sp.issparse(X):  # named here: scikit-learn's message says "X"
        raise TypeError(
            f"{name} is a scipy sparse matrix, but GroupInfluence takes dense data "
            f"(as for the training X); pass {name}.toarray()."
        )
    try:
        return validate_data(gi, X, reset=False, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(
            f"{name} does not match the training data X: {exc} Pass {name} with "
            "the columns of X, in the same order."
        ) from exc


def check_transformed(estimator, X, name):
    """Check the features a fitted ``Pipeline``'s transformers produce from ``X``.

    Sparse output is accepted (densified by the backend); NaN, infinity and a
    width other than the final estimator's are refused.
    """
    final, feature_map = unwrap_estimator(estimator)
    if feature_map is None:
        return
    try:
        Z = feature_map(X)
    except ValueError as exc:  # e.g. a missing column, an unknown category
        raise ValueError(
            f"The pipeline's transformers, fitted on X, cannot transform {name}: {exc}"
        ) from exc
    check_array(
        Z,
        accept_sparse=True,
        dtype=np.float64,
        input_name=f"{name} after the pipeline's transformers",
    )
    width = Z.shape[1] if Z.ndim == 2 else 1
    expected = getattr(final, "n_features_in_", width)
    if width != expected:
        raise ValueError(
            f"The pipeline's transformers map {name} to {width} features, but its "
            f"final estimator was fitted on {expected}."
        )


def check_fitted_inputs(gi, X_fit, X, X_target, y_target):
    """Checks that need the fitted estimator (``gi.estimator_``).

    * a ``FrozenEstimator`` must have been fitted on data with the columns of
      ``X`` (number and names);
    * through a ``Pipeline``, the features of the target data (and of the
      training data of a frozen pipeline) must be finite and of the final
      estimator's width;
    * a callable target's ``y_target`` must hold only classes the classifier
      knows (they are encoded by their index in ``classes_``).
    """
    final, _ = unwrap_estimator(gi.estimator_)
    frozen = isinstance(gi.estimator, FrozenEstimator)
    if is_pipeline(gi.estimator_):
        if frozen:
            check_transformed(gi.estimator_, X, "X")
        if X_target is not None:
            check_transformed(gi.estimator_, X_target, "X_target")
    elif frozen:
        try:
            validate_data(final, X_fit, reset=False, skip_check_array=True)
        except ValueError as exc:
            raise ValueError(
                f"The frozen {type(final).__name__} does not match X: {exc} Pass "
                "the data (columns) it was fitted on."
            ) from exc
    classes = getattr(final, "classes_", None)
    if callable(gi.target) and y_target is not None and classes is not None:
        unknown = ~np.isin(y_target, classes)
        if np.any(unknown):
            raise ValueError(
                f"y_target contains labels {np.unique(y_target[unknown])[:5].tolist()}"
                f" that the estimator was not fitted on; classes_ = "
                f"{np.asarray(classes).tolist()}. Pass y_target with the training "
                "labels."
            )


def check_candidates(gi, X_candidates, y_candidates, candidate_weight):
    """Validate ``select``'s candidates: ``None`` or ``(X, y, weight)``."""
    if X_candidates is None:
        if y_candidates is not None:
            raise ValueError("y_candidates was given without X_candidates.")
        return None
    if is_text_model(unwrap_estimator(gi.estimator_)[0]):  # texts: no labels
        if y_candidates is not None:
            raise ValueError("A CausalLM's candidates have no y_candidates; pass None.")
        w = _text_weights(X_candidates, candidate_weight, "candidate_weight")
        return X_candidates, None, w
    if y_candidates is None:
        raise ValueError("y_candidates is required with X_candidates.")
    X_candidates = check_new_data(gi, X_candidates, "X_candidates")
    y_candidates = np.asarray(y_candidates)
    n_c = _num_samples(X_candidates)
    _check_label_count(y_candidates, n_c, "y_candidates", "X_candidates")
    w = None
    if candidate_weight is not None:
        name, rows = "candidate_weight", "X_candidates"
        w = check_weights(candidate_weight, n_c, name, rows, positive_sum=False)
    return X_candidates, y_candidates, w
