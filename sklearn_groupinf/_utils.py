"""Helpers shared by the package's meta-estimators.

``GroupInfluence``, ``GroupSelector`` and :mod:`sklearn_groupinf.evaluation`
all wrap a user estimator (possibly a ``Pipeline`` or a ``FrozenEstimator``);
the small rules for delegating methods, tags and ``sample_weight`` live here.
"""

from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags


def _estimator_has(attr):
    """``available_if`` check: the (fitted or given) estimator has ``attr``."""

    def check(self):
        if hasattr(self, "estimator_"):
            return hasattr(self.estimator_, attr)
        return hasattr(self.estimator, attr)

    return check


def _wrapped_tags(tags, estimator):
    """Tags of a meta-estimator that acts as ``estimator`` (dense input only)."""
    inner = get_tags(estimator)
    tags.estimator_type = inner.estimator_type
    tags.classifier_tags = inner.classifier_tags
    tags.regressor_tags = inner.regressor_tags
    tags.target_tags.required = True
    tags.target_tags.multi_output = inner.target_tags.multi_output
    tags.input_tags.sparse = False
    tags.input_tags.allow_nan = False
    return tags


def _fit_with_weight(estimator, X, y, sample_weight):
    """``estimator.fit`` with ``sample_weight`` (to the last step of a Pipeline)."""
    if sample_weight is None:
        return estimator.fit(X, y)
    if isinstance(estimator, Pipeline):
        name = estimator.steps[-1][0]
        return estimator.fit(X, y, **{f"{name}__sample_weight": sample_weight})
    return estimator.fit(X, y, sample_weight=sample_weight)


def _plain(est):
    """The estimator inside a ``FrozenEstimator`` (``est`` itself otherwise)."""
    return est.estimator if isinstance(est, FrozenEstimator) else est
