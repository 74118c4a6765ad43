"""Helpers shared by the package's meta-estimators.

``GroupInfluence``, ``GroupSelector`` and :mod:`sklearn_groupinf.evaluation`
all wrap a user estimator (possibly a ``Pipeline`` or a ``FrozenEstimator``);
the small rules for delegating methods, tags and ``sample_weight`` live here.
"""

import numpy as np
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


def _fit_with_weight(estimator, X, y, sample_weight, **fit_params):
    """``estimator.fit`` with ``sample_weight`` (to the last step of a Pipeline)."""
    if sample_weight is None:
        return estimator.fit(X, y, **fit_params)
    if isinstance(estimator, Pipeline):
        name = estimator.steps[-1][0]
        fit_params[f"{name}__sample_weight"] = sample_weight
        return estimator.fit(X, y, **fit_params)
    return estimator.fit(X, y, sample_weight=sample_weight, **fit_params)


def _plain(est):
    """The estimator inside a ``FrozenEstimator`` (``est`` itself otherwise)."""
    return est.estimator if isinstance(est, FrozenEstimator) else est


def _fit_router(owner):
    """``get_metadata_routing`` of a meta-estimator that fits ``owner.estimator``.

    ``fit`` metadata go to the estimator's ``fit`` as it requests them (a
    ``Pipeline`` passes them on to the steps that request them).
    """
    from sklearn.utils.metadata_routing import MetadataRouter, MethodMapping

    return MetadataRouter(owner=owner).add(
        estimator=owner.estimator,
        method_mapping=MethodMapping().add(caller="fit", callee="fit"),
    )


def _fit_routed(owner, estimator, X, y, sample_weight=None, **fit_params):
    """Fit ``estimator`` with ``sample_weight`` and ``fit_params``.

    With ``sklearn.set_config(enable_metadata_routing=True)`` the metadata are
    routed through ``owner.get_metadata_routing()`` (see :func:`_fit_router`)
    as the estimator requests them; ``sample_weight`` given to ``owner`` must
    then reach the estimator (the influences use the same weights as the
    fit). Without routing, ``sample_weight`` goes to the estimator's ``fit``
    (the last step of a ``Pipeline``) and ``fit_params`` as they are.
    """
    from sklearn.utils.metadata_routing import _routing_enabled, process_routing

    if not _routing_enabled():
        return _fit_with_weight(estimator, X, y, sample_weight, **fit_params)
    if sample_weight is not None:
        if not owner.get_metadata_routing().consumes("fit", ["sample_weight"]):
            raise ValueError(
                f"{type(owner).__name__}.fit got sample_weight, but the estimator "
                "does not request it, so it would be fitted without the weights "
                "the influences use. Request it, e.g. "
                "LogisticRegression().set_fit_request(sample_weight=True)."
            )
        fit_params["sample_weight"] = sample_weight
    params = process_routing(owner, "fit", **fit_params).estimator.fit
    return estimator.fit(X, y, **params)


def check_weights(weight, n, name, rows, *, positive_sum=True):
    """``weight`` (an array or a scalar) as ``n`` finite non-negative floats.

    The errors name the argument (``target_weight``, ``candidate_weight``)
    and the rows it weighs.
    """
    try:
        w = np.asarray(weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must hold numbers, one weight per row of {rows}; got "
            f"{type(weight).__name__}."
        ) from None
    if w.ndim == 0:
        w = np.full(n, float(w))
    if w.shape != (n,):
        raise ValueError(
            f"{name} has shape {w.shape}; pass one weight per row of {rows} "
            f"(shape ({n},))."
        )
    bad = ~(np.isfinite(w) & (w >= 0))
    if np.any(bad):
        raise ValueError(
            f"{name} must be finite and non-negative; got "
            f"{np.unique(w[bad])[:5].tolist()}."
        )
    if positive_sum and w.sum() <= 0:
        raise ValueError(f"{name} sums to zero; give some rows a positive weight.")
    return w
