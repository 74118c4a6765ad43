"""Backends: the model-specific calculus behind :class:`GroupInfluence`.

``get_backend`` unwraps ``FrozenEstimator`` and ``Pipeline`` and dispatches on
the final estimator. Backends register themselves with
:func:`register_backend`; the torch backend is imported lazily.
"""

import sys

from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline

from ._base import ModelBackend
from ._linear_specs import UnsupportedEstimatorError, unsupported_error

_REGISTRY = []


def register_backend(predicate, factory):
    """Register ``factory(estimator, X, y, **kw)`` for matching estimators.

    Later registrations take precedence.
    """
    _REGISTRY.insert(0, (predicate, factory))


def unwrap_estimator(estimator):
    """Return ``(final_estimator, feature_map)`` of a fitted (frozen/pipelined) model.

    ``feature_map`` is ``None`` or the ``transform`` of the pipeline prefix,
    treated as a fixed feature map.
    """
    if isinstance(estimator, FrozenEstimator):
        estimator = estimator.estimator
    feature_map = None
    if isinstance(estimator, Pipeline):
        prefix = estimator[:-1]
        samplers = [n for n, step in prefix.steps if hasattr(step, "fit_resample")]
        if samplers:  # e.g. imbalanced-learn's RandomUnderSampler
            raise UnsupportedEstimatorError(
                f"The pipeline step {samplers[0]!r} resamples the rows (it has "
                "fit_resample), so the final estimator is not fitted on the rows "
                "given and removing a row has no defined effect. Remove the "
                "sampler: weight the classes instead (class_weight, or "
                "sample_weight passed to fit)."
            )
        feature_map = prefix.transform if len(estimator.steps) > 1 else None
        estimator = estimator.steps[-1][1]
        if isinstance(estimator, FrozenEstimator):
            estimator = estimator.estimator
    return estimator, feature_map


def _is_sklearn_linear(est):
    from ._linear_specs import SUPPORTED_CLASSES

    return isinstance(est, SUPPORTED_CLASSES)


def _sklearn_linear_factory(est, X, y, *, feature_map=None, **kw):
    from ._sklearn_linear import SklearnLinearBackend

    return SklearnLinearBackend(est, X, y, feature_map=feature_map, **kw)


def is_torch_model(est):
    """``est`` is a ``TorchModel`` (or subclass) or a skorch ``NeuralNet``.

    Checked without importing torch: such an object exists only once its
    module has been imported.
    """
    torch_model = sys.modules.get("sklearn_groupinf.torch._model")
    if torch_model is not None and isinstance(est, torch_model.TorchModel):
        return True
    skorch = sys.modules.get("skorch")
    return skorch is not None and isinstance(est, skorch.NeuralNet)


def _torch_factory(est, X, y, *, feature_map=None, **kw):
    from ._torch_factory import make_torch_backend  # lazy: imports torch

    return make_torch_backend(est, X, y, feature_map=feature_map, **kw)


def is_text_model(est):
    """``est`` is a :class:`~sklearn_groupinf.torch.CausalLM` (checked lazily)."""
    causal_lm = sys.modules.get("sklearn_groupinf.torch._causal_lm")
    return causal_lm is not None and isinstance(est, causal_lm.CausalLM)


def _text_factory(est, X, y, *, feature_map=None, **kw):
    from ._text_factory import make_text_backend  # lazy: imports torch

    return make_text_backend(est, X, y, feature_map=feature_map, **kw)


register_backend(is_torch_model, _torch_factory)
register_backend(is_text_model, _text_factory)
register_backend(_is_sklearn_linear, _sklearn_linear_factory)


def get_backend(estimator, X, y, **kwargs):
    """Build the backend of a fitted estimator on its training data and target.

    Parameters
    ----------
    estimator : fitted estimator, ``FrozenEstimator`` or ``Pipeline``
    X, y : training data as passed to the estimator's ``fit``.
    **kwargs : ``sample_weight``, ``X_target``, ``y_target``, ``target_weight``,
        ``target``, and backend options.

    Returns
    -------
    backend : ModelBackend
    """
    final, feature_map = unwrap_estimator(estimator)
    for predicate, factory in _REGISTRY:
        if predicate(final):
            return factory(final, X, y, feature_map=feature_map, **kwargs)
    raise unsupported_error(final)


__all__ = [
    "ModelBackend",
    "UnsupportedEstimatorError",
    "get_backend",
    "is_text_model",
    "register_backend",
    "unwrap_estimator",
]
