"""Input checks of ``GroupSelector``: data, groups, weights, classes kept."""

import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    _num_samples,
    validate_data,
)

from ._groups import check_groups


def check_selector_input(selector, X, y, groups, sample_weight):
    """Validated ``(X, y, groups, sample_weight)`` for ``selector.fit``.

    ``X`` stays a DataFrame when one is given (the clones are fitted on it,
    so feature names are kept); otherwise it is the validated array.
    """
    if isinstance(selector.estimator, FrozenEstimator):
        raise TypeError(
            "GroupSelector refits its estimator on the kept rows, so it cannot "
            "use a FrozenEstimator; pass the unfitted estimator instead."
        )
    if isinstance(selector.estimator, Pipeline):
        # a pipeline validates its own input (it may take DataFrames)
        validate_data(selector, X, skip_check_array=True)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
    else:
        Xa, y = validate_data(
            selector,
            X,
            y,
            accept_sparse=False,
            ensure_min_samples=2,
            y_numeric=not selector._is_classifier,
            multi_output=get_tags(selector.estimator).target_tags.multi_output,
        )
        # fit the clones on DataFrames as given (feature names), else arrays
        X = X if hasattr(X, "iloc") else Xa
    n = _num_samples(X)
    if len(y) != n:
        raise ValueError(f"X has {n} rows but y has {len(y)}; pass one y per row.")
    if selector._is_classifier:
        check_classification_targets(y)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.ndim != 1 or len(groups) != n:
            raise ValueError(
                f"groups has shape {groups.shape} but X has {n} rows; pass one "
                "group label per row of X (the same array you would give "
                "GroupKFold)."
            )
        groups = check_groups(groups, n)  # no missing (None/NaN) labels
    elif selector.groups_as_units:
        raise ValueError(
            "groups_as_units=True removes whole groups, but fit got groups=None; "
            "pass groups=<one label per row> to fit (with metadata routing: "
            "set_fit_request(groups=True)), or set groups_as_units=False."
        )
    if sample_weight is not None:
        sample_weight = _check_sample_weight(
            sample_weight, np.empty((n, 0)), ensure_non_negative=True
        )
    return X, y, groups, sample_weight


def check_no_class_vanishes(budget, y, keep, k, unit_name):
    """Refuse a removal that deletes every row of a class."""
    classes, counts = np.unique(y, return_counts=True)
    kept = np.unique(y[keep])
    gone = [(c, m) for c, m in zip(classes, counts) if c not in kept]
    if gone:
        c, m = gone[0]
        c = c.item() if isinstance(c, np.generic) else c
        raise ValueError(
            f"Removing the {k} selected {unit_name} (budget={budget!r}) "
            f"would remove every row of class {c!r} ({m} rows), so the "
            "refitted classifier could never predict it. Lower budget, or use "
            "a validation split that keeps rows of every class "
            "(validation=<fraction> holds them out of removal)."
        )
