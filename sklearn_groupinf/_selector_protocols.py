"""What ``GroupSelector`` offers besides ``fit``, as mixins.

``_RefittedDelegationMixin``: prediction methods that delegate to the
estimator refitted on the kept rows (each exists exactly when the wrapped
estimator has it). ``_SamplerMixin``: the imbalanced-learn sampler protocol
(``fit_resample`` and its metadata request). ``_RoutingMixin``: metadata
routing of ``fit`` and the final refit on the kept rows.
"""

from sklearn.base import clone
from sklearn.utils import _safe_indexing
from sklearn.utils._metadata_requests import SIMPLE_METHODS, RequestMethod
from sklearn.utils.metadata_routing import (
    UNCHANGED,
    MetadataRouter,
    MethodMapping,
    _routing_enabled,
    process_routing,
)
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ._utils import _estimator_has, _fit_with_weight


class _RoutingMixin:
    """Metadata routing: ``fit`` consumes ``groups``/``sample_weight`` and
    routes what the estimator requests to its final refit (as
    ``SelectFromModel`` does)."""

    def get_metadata_routing(self):
        """Metadata routing: ``fit`` consumes and routes to ``estimator``.

        Returns
        -------
        routing : MetadataRouter
            The selector's own requests (``groups``, ``sample_weight``) and
            the estimator's ``fit`` requests, used by the final refit.
        """
        return (
            MetadataRouter(owner=type(self).__name__)
            .add_self_request(self)
            .add(
                estimator=self.estimator,
                method_mapping=MethodMapping().add(caller="fit", callee="fit"),
            )
        )

    def _routed_fit_params(self, groups, sample_weight, fit_params):
        """The estimator's ``fit`` metadata under routing, else ``None``."""
        est_params = None
        if _routing_enabled():
            given = {"groups": groups, "sample_weight": sample_weight}
            given = {k: v for k, v in given.items() if v is not None}
            routed = process_routing(self, "fit", **given, **fit_params)
            est_params = dict(routed.estimator.fit)
            if sample_weight is not None and "sample_weight" not in est_params:
                raise ValueError(
                    "GroupSelector.fit got sample_weight, but the estimator does "
                    "not request it, so the refit would ignore the weights the "
                    "influences use. Request it, e.g. "
                    "LogisticRegression().set_fit_request(sample_weight=True)."
                )
        elif fit_params:
            raise TypeError(
                f"GroupSelector.fit got unexpected keyword arguments "
                f"{sorted(fit_params)}; pass them through metadata routing "
                "(sklearn.set_config(enable_metadata_routing=True))."
            )
        return est_params

    def _refit(self, X, y, sample_weight, params):
        rows = self.sample_indices_
        Xk, yk = _safe_indexing(X, rows), _safe_indexing(y, rows)
        if params is None:
            sw = None if sample_weight is None else sample_weight[rows]
            self.estimator_ = _fit_with_weight(clone(self.estimator), Xk, yk, sw)
        else:  # metadata routing: what the estimator requested, sliced
            n = len(y)
            sliced = {
                key: _safe_indexing(v, rows)
                if hasattr(v, "__len__") and not isinstance(v, str) and len(v) == n
                else v
                for key, v in params.items()
            }
            self.estimator_ = clone(self.estimator).fit(Xk, yk, **sliced)
        if hasattr(self.estimator_, "classes_"):
            self.classes_ = self.estimator_.classes_


class _SamplerMixin:
    """``fit_resample`` for ``imblearn.pipeline.Pipeline``."""

    def fit_resample(self, X, y, *, groups=None, sample_weight=None):
        """Select the rows to remove and return the kept rows.

        The imbalanced-learn sampler protocol, so the selector can be a step
        of ``imblearn.pipeline.Pipeline`` (for classifiers and regressors).
        The final estimator is not refitted here (``estimator_`` is not set):
        the next pipeline step fits its own model on the returned rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,)
            Training targets.
        groups : array-like of shape (n_samples,), default=None
            Group labels, as in :meth:`fit`.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the influence model's objective, as in :meth:`fit`.
            They are not returned: imbalanced-learn pipelines do not resample
            the metadata of later steps.

        Returns
        -------
        X_resampled : array-like of shape (n_kept, n_features)
            ``X`` restricted to ``sample_indices_`` (same container type).
        y_resampled : array-like of shape (n_kept,)
            ``y`` restricted to ``sample_indices_``.
        """
        self._validate_params()
        self._fit(X, y, groups, sample_weight, refit=False)
        return (
            _safe_indexing(X, self.sample_indices_),
            _safe_indexing(y, self.sample_indices_),
        )

    def set_fit_resample_request(self, *, groups=UNCHANGED, sample_weight=UNCHANGED):
        """Request metadata passed to :meth:`fit_resample` (metadata routing).

        imbalanced-learn's ``Pipeline`` passes metadata to a sampler only
        through metadata routing (``sklearn.set_config(
        enable_metadata_routing=True)``); this declares that ``groups`` and
        ``sample_weight`` given to the pipeline's ``fit`` go to this step.
        Needs imbalanced-learn to be imported (it registers ``fit_resample``
        with scikit-learn's routing).

        Parameters
        ----------
        groups : bool, str or None, default=UNCHANGED
            ``True`` to request ``groups``, ``False`` to ignore it, a string
            to request it under another name (alias).
        sample_weight : bool, str or None, default=UNCHANGED
            Likewise for ``sample_weight``.

        Returns
        -------
        self : GroupSelector
        """
        if "fit_resample" not in SIMPLE_METHODS:
            raise RuntimeError(
                "set_fit_resample_request needs imbalanced-learn: `import imblearn` "
                "(it registers fit_resample with scikit-learn's metadata routing) "
                "before calling it."
            )
        setter = RequestMethod("fit_resample", ["groups", "sample_weight"])
        return setter.__get__(self, type(self))(
            groups=groups, sample_weight=sample_weight
        )


class _RefittedDelegationMixin:
    """Prediction methods of the estimator refitted on the kept rows."""

    @available_if(_estimator_has("predict"))
    def predict(self, X):
        """Predict with the estimator refitted on the kept rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(X)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities of the estimator refitted on the kept rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(X)

    @available_if(_estimator_has("predict_log_proba"))
    def predict_log_proba(self, X):
        """Log class probabilities of the estimator refitted on the kept rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_log_proba(X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X):
        """Decision function of the estimator refitted on the kept rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        check_is_fitted(self, "estimator_")
        return self.estimator_.decision_function(X)

    @available_if(_estimator_has("score"))
    def score(self, X, y, sample_weight=None):
        """Score of the refitted estimator (its own ``score`` method).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        score : float
            Accuracy for classifiers, R^2 for regressors (all rows of ``X``;
            nothing is removed at scoring time).
        """
        check_is_fitted(self, "estimator_")
        return self.estimator_.score(X, y, sample_weight=sample_weight)
