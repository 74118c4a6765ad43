"""``GroupSelector``: removal of harmful training rows as a pipeline step.

A scikit-learn transformer must keep the number of rows, so removal of harmful
examples (or whole groups) is exposed as a meta-estimator in the style of
``SelectFromModel`` / ``SelfTrainingClassifier``: ``fit`` chooses the rows to
drop (:mod:`sklearn_groupinf._cleaning` for the cross-fitted default,
:meth:`GroupInfluence.select` for a hold-out target) and refits a clone of the
wrapped estimator on the rest; prediction methods delegate to that clone. The
imbalanced-learn sampler protocol (``fit_resample``) is provided as well.
"""

import numbers

import numpy as np
from sklearn import config_context
from sklearn.base import BaseEstimator, MetaEstimatorMixin, _fit_context, clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import (
    GroupShuffleSplit,
    ShuffleSplit,
    StratifiedShuffleSplit,
)
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing, check_random_state, get_tags
from sklearn.utils._metadata_requests import SIMPLE_METHODS, RequestMethod
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    RealNotInt,
    StrOptions,
)
from sklearn.utils.metadata_routing import (
    UNCHANGED,
    MetadataRouter,
    MethodMapping,
    _routing_enabled,
    process_routing,
)
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    _num_samples,
    check_is_fitted,
    validate_data,
)

from ._cleaning import approximate_loo_loss, clean_cross_fit, looks_noisy
from ._group_influence import GroupInfluence
from ._utils import _estimator_has, _fit_with_weight, _wrapped_tags


class GroupSelector(MetaEstimatorMixin, BaseEstimator):
    """Remove the most harmful training examples or groups, then refit.

    Cleaning without clean data: every label may be wrong, so the target that
    decides what to remove is built from the training rows in a way noisy
    labels cannot steer (``validation="cross_fit"``, the default):

    1. each row's approximate leave-one-out loss, its own loss plus its
       self-influence (:meth:`GroupInfluence.self_influence`), flags the rows
       that look noisy (the given label less likely than chance without the
       row);
    2. the units are split in ``n_folds`` folds (stratified by class, whole
       groups together); per fold a :class:`GroupInfluence` fitted on the
       other folds estimates how removing its units changes the log-loss (the
       estimator's metric) of the fold's rows that do not look noisy;
    3. the folds' estimates are added into one global estimate and the
       greedy rule (interaction-aware by default) removes a slice of the
       budget; this repeats for ``n_rounds`` rounds, each refitted without the
       rows removed so far.

    A clone of ``estimator`` is then fitted on the kept rows; ``predict``,
    ``predict_proba``, ``decision_function`` and ``score`` delegate to it.
    Selection happens at fit time only: data passed to ``predict`` or
    ``score`` is never filtered.

    Parameters
    ----------
    estimator : estimator object
        An unfitted estimator supported by :class:`GroupInfluence` (e.g.
        ``LogisticRegression``, ``Ridge``, or a ``Pipeline`` ending in one).
    budget : int, float or "auto", default=0.05
        How many units to remove: an int is a number of units (examples, or
        groups with ``groups_as_units=True``); a float in ``[0, 1)`` a
        fraction of all units (at least one when positive); ``0`` removes
        nothing. ``"auto"`` removes at most the units that look noisy in the
        first round (rows: approximate leave-one-out probability of the given
        label below ``1 / n_classes``; regressors: a squared leave-one-out
        residual over 9 robust variances; groups: most of their rows), and
        stops earlier when no unit is estimated to lower the robust target
        any more; ``removed_indices_`` tells how many were removed.
    method : {"interaction", "first_order", "second_order"}, \
            default="interaction"
        Estimate driving the greedy removal: ``interaction`` adds the pairwise
        interaction of the removed units to the first-order sum, so redundant
        units are not removed together for the same reason; ``first_order``
        is top-k on the summed influences; ``second_order`` also adds the
        parameter response to second order.
    groups_as_units : bool, default=False
        Remove whole groups (the ``groups`` passed to ``fit``) instead of
        single examples. Groups are ranked globally across the folds.
    validation : "cross_fit" or float in (0, 1), default="cross_fit"
        ``"cross_fit"``: the cross-fitted robust target described above; every
        unit is a candidate. A float: that fraction of the rows (whole groups
        when ``groups`` is given) is held out, its rows (noisy labels and all)
        are the target set, are never removed and are part of the final
        refit; the selection is :meth:`GroupInfluence.select` on that split.
    n_folds : int, default=5
        Folds of ``"cross_fit"`` (lowered to the number of units available).
    damping : float, default=0.0
        Hessian damping of the influence model (see :class:`GroupInfluence`).
    n_rounds : int, default=5
        Rounds of removal: the budget is removed in ``n_rounds`` slices, and
        every influence fit is redone without the rows removed so far (capped
        at the number of units removed).
    stop_early : bool, default=False
        Remove fewer than ``budget`` units when no further removal is
        estimated to lower the target (always on with ``budget="auto"``).
    random_state : int, RandomState instance or None, default=None
        Seed of the folds (or of the hold-out split).

    Attributes
    ----------
    estimator_ : estimator
        Clone of ``estimator`` fitted on the kept rows (not set by
        :meth:`fit_resample`).
    removed_indices_ : ndarray of int
        Removed rows, in removal order.
    removed_groups_ : ndarray
        Removed group labels in removal order (``groups_as_units=True`` only).
    sample_indices_ : ndarray of int
        Kept rows, sorted (imbalanced-learn's name).
    rounds_ : list of dict
        ``"cross_fit"`` only. Per round: ``units`` removed, ``estimates``
        (estimated change of the robust target, summed over the folds' target
        rows in the metric's units, after each removal), ``n_noisy_rows`` and
        ``folds`` (``(pool_rows, target_rows)`` of each fold).
    selections_ : list of Selection
        Hold-out only: the :meth:`GroupInfluence.select` result.
    splits_ : list of tuple of ndarray
        ``(pool_rows, target_rows)``: the folds of the first round, or the
        hold-out split.
    classes_ : ndarray
        Class labels (classifiers only).
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of str
        Feature names seen during ``fit`` (DataFrame input only).

    See Also
    --------
    GroupInfluence.self_influence : the leave-one-out signal of step 1.
    GroupInfluence.select : the greedy selection of the hold-out mode.

    Notes
    -----
    The approximate leave-one-out loss of row :math:`i` is
    :math:`\\ell_i(\\hat\\theta) + \\sigma_i`, :math:`\\sigma_i =
    \\nabla\\ell_i^\\top H^{-1} q_i`: a first-order, n-fold out-of-sample loss
    from one fit. Step 2's estimate of removing a set :math:`S` is
    :math:`\\sum_f (b_f^\\top 1_S + \\tfrac12 1_S^\\top K_f 1_S)`, fold
    :math:`f`'s first-order and pairwise terms scaled to its target rows'
    summed loss. Measured against cleanlab on real tabular sets in
    ``benchmarks/cleaning_vs_cleanlab.py`` (the documentation page
    "Cleaning labels: compared with cleanlab").

    ``groups`` and ``sample_weight`` are keyword-only. The weights enter every
    influence fit (sliced to its rows) and the final refit, sliced to
    ``sample_indices_``. With ``sklearn.set_config(enable_metadata_routing=
    True)`` the selector consumes ``groups`` and ``sample_weight`` once
    requested with ``set_fit_request``, and the final refit of ``estimator``
    receives the metadata it requests (sliced to the kept rows); weights the
    selector consumes must then be requested by the estimator as well, so the
    refit is weighted like the influence fits.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn_groupinf import GroupSelector
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> y_noisy = y.copy()
    >>> y_noisy[:20] = 1 - y_noisy[:20]                 # twenty flipped labels
    >>> clf = GroupSelector(make_pipeline(StandardScaler(), LogisticRegression()),
    ...                     budget=20, random_state=0).fit(X, y_noisy)
    >>> clf.removed_indices_.shape, clf.sample_indices_.shape
    ((20,), (549,))
    >>> int((clf.removed_indices_ < 20).sum())          # how many were flipped
    14
    >>> clf.predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit"])],
        "budget": [
            Interval(numbers.Integral, 0, None, closed="left"),
            Interval(RealNotInt, 0, 1, closed="left"),
            StrOptions({"auto"}),
        ],
        "method": [StrOptions({"interaction", "first_order", "second_order"})],
        "groups_as_units": ["boolean"],
        "validation": [
            Interval(RealNotInt, 0, 1, closed="neither"),
            StrOptions({"cross_fit"}),
        ],
        "n_folds": [Interval(numbers.Integral, 2, None, closed="left")],
        "damping": [Interval(numbers.Real, 0, None, closed="left")],
        "n_rounds": [Interval(numbers.Integral, 1, None, closed="left")],
        "stop_early": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        estimator,
        *,
        budget=0.05,
        method="interaction",
        groups_as_units=False,
        validation="cross_fit",
        n_folds=5,
        damping=0.0,
        n_rounds=5,
        stop_early=False,
        random_state=None,
    ):
        self.estimator = estimator
        self.budget = budget
        self.method = method
        self.groups_as_units = groups_as_units
        self.validation = validation
        self.n_folds = n_folds
        self.damping = damping
        self.n_rounds = n_rounds
        self.stop_early = stop_early
        self.random_state = random_state

    def __sklearn_tags__(self):
        return _wrapped_tags(super().__sklearn_tags__(), self.estimator)

    @property
    def _is_classifier(self):
        return get_tags(self.estimator).estimator_type == "classifier"

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

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, *, groups=None, sample_weight=None, **fit_params):
        """Select the rows to remove and fit the estimator on the others.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (a DataFrame when ``estimator`` is a Pipeline that
            needs one).
        y : array-like of shape (n_samples,)
            Training targets.
        groups : array-like of shape (n_samples,), default=None
            Group label of each row. Units of removal with
            ``groups_as_units=True``; in any case folds and hold-out splits
            keep each group on one side.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the estimator's objective, sliced to the rows of each
            internal fit and to the kept rows for the final fit.
        **fit_params : dict
            Only with metadata routing enabled: further metadata for the
            estimator's final ``fit`` (sliced to the kept rows).

        Returns
        -------
        self : GroupSelector
        """
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
        return self._fit(X, y, groups, sample_weight, refit=True, params=est_params)

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

    def _validate_input(self, X, y, groups, sample_weight):
        if isinstance(self.estimator, FrozenEstimator):
            raise TypeError(
                "GroupSelector refits its estimator on the kept rows, so it cannot "
                "use a FrozenEstimator; pass the unfitted estimator instead."
            )
        if isinstance(self.estimator, Pipeline):
            # a pipeline validates its own input (it may take DataFrames)
            validate_data(self, X, skip_check_array=True)
            y = np.asarray(y)
            if y.ndim == 2 and y.shape[1] == 1:
                y = y.ravel()
        else:
            Xa, y = validate_data(
                self,
                X,
                y,
                accept_sparse=False,
                ensure_min_samples=2,
                y_numeric=not self._is_classifier,
                multi_output=get_tags(self.estimator).target_tags.multi_output,
            )
            # fit the clones on DataFrames as given (feature names), else arrays
            X = X if hasattr(X, "iloc") else Xa
        n = _num_samples(X)
        if len(y) != n:
            raise ValueError(f"X has {n} rows but y has {len(y)}; pass one y per row.")
        if self._is_classifier:
            check_classification_targets(y)
        if groups is not None:
            groups = np.asarray(groups)
            if groups.ndim != 1 or len(groups) != n:
                raise ValueError(
                    f"groups has shape {groups.shape} but X has {n} rows; pass one "
                    "group label per row of X (the same array you would give "
                    "GroupKFold)."
                )
        elif self.groups_as_units:
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

    def _n_remove(self, n_units, unit_name):
        if isinstance(self.budget, str):
            return "auto"
        if isinstance(self.budget, numbers.Integral):
            k = int(self.budget)
        else:
            k = 0 if self.budget == 0 else max(1, int(np.floor(self.budget * n_units)))
        if k > n_units - 2:
            raise ValueError(
                f"budget={self.budget!r} means removing {k} {unit_name}, but there "
                f"are {n_units} {unit_name} and every internal fit must keep some; "
                f"pass budget <= {n_units - 2} (an int), or a smaller fraction."
            )
        return k

    def _fit(self, X, y, groups, sample_weight, *, refit, params=None):
        X, y, groups, sample_weight = self._validate_input(X, y, groups, sample_weight)
        n = len(y)
        if self.groups_as_units:
            unit_labels, unit_of_row = np.unique(groups, return_inverse=True)
            unit_name = "groups"
        else:
            unit_labels, unit_of_row = None, np.arange(n)
            unit_name = "examples"
        n_units = n if unit_labels is None else len(unit_labels)
        k = self._n_remove(n_units, unit_name)
        if k != 0 and self._is_classifier:
            weighted = y if sample_weight is None else y[sample_weight > 0]
            if len(np.unique(weighted)) < 2:
                raise ValueError(
                    "GroupSelector needs at least two classes with positive "
                    f"sample_weight to score removals; got only class(es) "
                    f"{np.unique(weighted).tolist()}. Pass data with several "
                    "classes, or budget=0 to fit the estimator as it is."
                )
        self.splits_, self.rounds_, self.selections_ = [], [], []
        removed_units = np.zeros(0, dtype=int)
        if k != 0:
            seed = int(check_random_state(self.random_state).randint(2**31 - 1))
            # internal fits get the weights by hand (the last step's fit)
            with config_context(enable_metadata_routing=False):
                if self.validation == "cross_fit":
                    removed_units = self._cross_fit(
                        X, y, sample_weight, unit_of_row, k, seed
                    )
                else:
                    removed_units = self._hold_out(
                        X, y, groups, sample_weight, unit_of_row, k, seed
                    )
        removed = np.flatnonzero(np.isin(unit_of_row, removed_units))
        rank = np.full(n_units, len(removed_units))
        rank[removed_units] = np.arange(len(removed_units))
        removed = removed[np.argsort(rank[unit_of_row[removed]], kind="stable")]
        keep = np.ones(n, dtype=bool)
        keep[removed] = False
        if self._is_classifier:
            self._check_no_class_vanishes(y, keep, len(removed_units), unit_name)
        self.removed_indices_ = removed.astype(int)
        self.sample_indices_ = np.flatnonzero(keep)
        if self.groups_as_units:
            self.removed_groups_ = unit_labels[removed_units]
        if refit:
            self._refit(X, y, sample_weight, params)
        elif self._is_classifier:
            self.classes_ = np.unique(y)
        return self

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

    def _influence(self, X, y, sample_weight, pool, target):
        """A GroupInfluence fitted on ``pool`` with the metric on ``target``."""

        def rows(a, idx):
            return None if a is None or idx is None else _safe_indexing(a, idx)

        gi = GroupInfluence(
            clone(self.estimator), method=self.method, damping=self.damping
        )
        return gi.fit(
            rows(X, pool),
            rows(y, pool),
            rows(sample_weight, pool),
            X_target=rows(X, target),
            y_target=rows(y, target),
            target_weight=rows(sample_weight, target),
        )

    def _cross_fit(self, X, y, sample_weight, unit_of_row, k, seed):
        removed, self.rounds_ = clean_cross_fit(
            lambda pool, target: self._influence(X, y, sample_weight, pool, target),
            lambda rows: _safe_indexing(X, rows),
            y,
            unit_of_row,
            k=k,
            n_folds=self.n_folds,
            n_rounds=self.n_rounds,
            method=self.method,
            seed=seed,
            classifier=self._is_classifier,
            stop_early=self.stop_early,
        )
        self.splits_ = self.rounds_[0]["folds"] if self.rounds_ else []
        return removed

    def _hold_out(self, X, y, groups, sample_weight, unit_of_row, k, seed):
        n = len(y)
        if groups is not None:
            splitter = GroupShuffleSplit(
                n_splits=1, test_size=self.validation, random_state=seed
            )
        elif self._is_classifier and np.ndim(y) == 1:
            splitter = StratifiedShuffleSplit(
                n_splits=1, test_size=self.validation, random_state=seed
            )
        else:
            splitter = ShuffleSplit(
                n_splits=1, test_size=self.validation, random_state=seed
            )
        try:
            pool, target = next(splitter.split(np.zeros((n, 1)), y, groups))
        except ValueError as exc:
            raise ValueError(
                f"validation={self.validation!r} cannot hold out a target set from "
                f"these {n} rows ({exc}). Use more data, a larger validation "
                "fraction, or validation='cross_fit'."
            ) from exc
        pool, target = np.sort(pool), np.sort(target)
        self.splits_ = [(pool, target)]
        gi = self._influence(X, y, sample_weight, pool, target)
        units, local = np.unique(unit_of_row[pool], return_inverse=True)
        auto = isinstance(k, str)
        if auto:
            loo = approximate_loo_loss(
                gi, _safe_indexing(X, pool), y[pool], self._is_classifier
            )
            noisy = looks_noisy(loo, y[pool], self._is_classifier)
            bad = np.bincount(local, weights=noisy, minlength=len(units))
            k = int(np.sum(bad > 0.5 * np.bincount(local)))
        elif k > len(units) - 1:
            raise ValueError(
                f"budget={self.budget!r} means removing {k} units, but the "
                f"candidate pool has {len(units)} (the other rows are the "
                "validation split, which is never removed); pass budget <= "
                f"{len(units) - 1} (an int), or a smaller fraction."
            )
        if k == 0:
            return np.zeros(0, dtype=int)
        sel = gi.select(
            k,
            groups=local if self.groups_as_units else None,
            goal="decrease",
            action="remove",
            method=self.method,
            n_rounds=min(self.n_rounds, k),
            stop_early=self.stop_early or auto,
        )
        self.selections_ = [sel]
        if self.groups_as_units:
            return units[np.asarray(sel.groups, dtype=int)]
        return pool[sel.indices]

    def _check_no_class_vanishes(self, y, keep, k, unit_name):
        classes, counts = np.unique(y, return_counts=True)
        kept = np.unique(y[keep])
        gone = [(c, m) for c, m in zip(classes, counts) if c not in kept]
        if gone:
            c, m = gone[0]
            c = c.item() if isinstance(c, np.generic) else c
            raise ValueError(
                f"Removing the {k} selected {unit_name} (budget={self.budget!r}) "
                f"would remove every row of class {c!r} ({m} rows), so the "
                "refitted classifier could never predict it. Lower budget, or use "
                "a validation split that keeps rows of every class "
                "(validation=<fraction> holds them out of removal)."
            )

    # ---------------------------------------------------------- delegation
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
