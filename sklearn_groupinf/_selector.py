"""``GroupSelector``: influence-based removal of training rows as a pipeline step.

A scikit-learn transformer must keep the number of rows, so removal of harmful
examples (or whole groups) is exposed as a meta-estimator in the style of
``SelectFromModel`` / ``SelfTrainingClassifier``: ``fit`` chooses the rows to
drop with :meth:`GroupInfluence.select` and refits a clone of the wrapped
estimator on the rest; prediction methods delegate to that clone. The
imbalanced-learn sampler protocol (``fit_resample``) is provided as well.
"""

import numbers

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, _fit_context, clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import (
    GroupKFold,
    KFold,
    ShuffleSplit,
    StratifiedGroupKFold,
    StratifiedKFold,
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
from sklearn.utils.metadata_routing import UNCHANGED
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    _check_sample_weight,
    _num_samples,
    check_is_fitted,
    validate_data,
)

from ._group_influence import GroupInfluence
from ._utils import _estimator_has, _fit_with_weight, _wrapped_tags


class GroupSelector(MetaEstimatorMixin, BaseEstimator):
    """Remove the most harmful training examples or groups, then refit.

    ``fit`` splits off a target set, estimates with
    :class:`~sklearn_groupinf.GroupInfluence` how the estimator's usual metric
    on that target set (log-loss for classifiers, mean squared error for
    least squares, the deviance for GLMs) changes when training units are
    removed, greedily removes the ``budget`` units whose joint removal most
    decreases it (:meth:`GroupInfluence.select`, interaction-aware by default),
    and fits a clone of ``estimator`` on the kept rows. The selector is a
    classifier or a regressor according to ``estimator``; ``predict``,
    ``predict_proba``, ``decision_function`` and ``score`` delegate to the
    refitted clone. Selection happens at fit time only: data passed to
    ``predict`` or ``score`` is never filtered.

    Parameters
    ----------
    estimator : estimator object
        An unfitted estimator supported by :class:`GroupInfluence` (e.g.
        ``LogisticRegression``, ``Ridge``, or a ``Pipeline`` ending in one).
    budget : int or float, default=0.05
        How many units to remove: an int is a number of units (examples, or
        groups with ``groups_as_units=True``); a float in ``[0, 1)`` is a
        fraction of all units (at least one when positive). ``0`` removes
        nothing (the estimator is fitted on all rows), which lets a grid
        search compare cleaning against no cleaning. Must be smaller than the
        candidate pool.
    method : {"interaction", "first_order", "second_order"}, \
            default="interaction"
        Estimate of the target change driving the greedy removal:
        ``interaction`` (arXiv 2605.15675) adds the pairwise interaction of
        the removed units to the first-order sum, so redundant units are not
        removed together for the same reason; ``first_order`` is top-k on
        individual influences; ``second_order`` also adds the parameter
        response to second order.
    groups_as_units : bool, default=False
        Remove whole groups (the ``groups`` passed to ``fit``) instead of
        single examples.
    validation : "cross_fit" or float in (0, 1), default="cross_fit"
        How the target set is obtained; its labels are the training labels
        (no clean data is assumed). ``"cross_fit"``: the rows are split in two
        halves (stratified by class for classifiers, whole groups when
        ``groups`` is given); each half is scored with the other half as the
        target set and the budget is shared in proportion to the halves'
        sizes, so every row is a candidate. A float: that fraction of the
        rows is held out (stratified / by group likewise); the held-out rows
        are the target set, are never candidates for removal, and are part
        of the final refit. Cross-fitting is the default because it scores
        every row against a larger target set; in the label-noise benchmark
        (``doc/results_label_noise.rst``) it caught more flipped labels than
        a 20 % hold-out on all three datasets.
    damping : float, default=0.0
        Hessian damping of the influence model (see :class:`GroupInfluence`).
    n_rounds : int, default=1
        Adaptive rounds of :meth:`GroupInfluence.select` (select a slice,
        refit, rescore); capped at the number of units removed per split.
    stop_early : bool, default=False
        Remove fewer than ``budget`` units when no further removal is
        estimated to decrease the target.
    random_state : int, RandomState instance or None, default=None
        Seed of the split that gives the target set.

    Attributes
    ----------
    estimator_ : estimator
        Clone of ``estimator`` fitted on the kept rows (not set by
        :meth:`fit_resample`).
    removed_indices_ : ndarray of int
        Removed rows, in greedy order within each split.
    removed_groups_ : ndarray
        Removed group labels in greedy order (``groups_as_units=True`` only).
    sample_indices_ : ndarray of int
        Kept rows, sorted (imbalanced-learn's name).
    selections_ : list of Selection
        The :meth:`GroupInfluence.select` result of each split, with the
        estimated target change after each removal (target units).
    splits_ : list of tuple of ndarray
        ``(pool_rows, target_rows)`` of each split: the rows the influence
        model was fitted on (candidates) and the rows of its target set.
    classes_ : ndarray
        Class labels (classifiers only).
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of str
        Feature names seen during ``fit`` (DataFrame input only).

    See Also
    --------
    GroupInfluence.select : the greedy selection this estimator applies.

    Notes
    -----
    ``groups`` and ``sample_weight`` are consumed by ``fit`` and, with
    ``sklearn.set_config(enable_metadata_routing=True)``, are routed to it
    once requested with ``set_fit_request(groups=True, sample_weight=True)``
    (``score`` requests ``sample_weight`` with ``set_score_request``). The
    weights are given to every internal fit (sliced to the pool) and to the
    final refit, sliced to ``sample_indices_``; the target set's weights
    weight the target metric. They are not routed on to ``estimator`` a
    second time.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn_groupinf import GroupSelector
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> clf = GroupSelector(make_pipeline(StandardScaler(), LogisticRegression()),
    ...                     budget=0.05, random_state=0).fit(X, y)
    >>> clf.removed_indices_.shape, clf.sample_indices_.shape
    ((28,), (541,))
    >>> clf.predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit"])],
        "budget": [
            Interval(numbers.Integral, 0, None, closed="left"),
            Interval(RealNotInt, 0, 1, closed="left"),
        ],
        "method": [StrOptions({"interaction", "first_order", "second_order"})],
        "groups_as_units": ["boolean"],
        "validation": [
            Interval(RealNotInt, 0, 1, closed="neither"),
            StrOptions({"cross_fit"}),
        ],
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
        damping=0.0,
        n_rounds=1,
        stop_early=False,
        random_state=None,
    ):
        self.estimator = estimator
        self.budget = budget
        self.method = method
        self.groups_as_units = groups_as_units
        self.validation = validation
        self.damping = damping
        self.n_rounds = n_rounds
        self.stop_early = stop_early
        self.random_state = random_state

    def __sklearn_tags__(self):
        return _wrapped_tags(super().__sklearn_tags__(), self.estimator)

    @property
    def _is_classifier(self):
        return get_tags(self.estimator).estimator_type == "classifier"

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, groups=None, sample_weight=None):
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
            ``groups_as_units=True``; in any case the split that gives the
            target set keeps each group on one side.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the estimator's objective, sliced to the rows of each
            internal fit and to the kept rows for the final fit.

        Returns
        -------
        self : GroupSelector
        """
        return self._fit(X, y, groups, sample_weight, refit=True)

    def fit_resample(self, X, y, groups=None, sample_weight=None):
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
            X, y = validate_data(
                self,
                X,
                y,
                accept_sparse=False,
                ensure_min_samples=2,
                y_numeric=not self._is_classifier,
                multi_output=get_tags(self.estimator).target_tags.multi_output,
            )
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
                sample_weight, X, ensure_non_negative=True
            )
        return X, y, groups, sample_weight

    def _splits(self, y, groups, seed):
        """``[(pool_rows, target_rows), ...]`` for the chosen validation mode."""
        n = len(y)
        strat = self._is_classifier and np.ndim(y) == 1
        if self.validation == "cross_fit":
            n_splits = 2
        elif groups is None:
            cls = StratifiedShuffleSplit if strat else ShuffleSplit
            splitter = cls(n_splits=1, test_size=self.validation, random_state=seed)
            try:
                pool, target = next(splitter.split(np.zeros((n, 1)), y))
            except ValueError as exc:
                raise ValueError(
                    f"validation={self.validation!r} cannot hold out a stratified "
                    f"target set from these {n} rows ({exc}). Use more data, a "
                    "larger validation fraction, or validation='cross_fit'."
                ) from exc
            return [(np.sort(pool), np.sort(target))]
        else:
            n_splits = max(2, int(round(1.0 / self.validation)))
        if groups is None:
            cls = StratifiedKFold if strat else KFold
        else:
            cls = StratifiedGroupKFold if strat else GroupKFold
        splitter = cls(n_splits=n_splits, shuffle=True, random_state=seed)
        try:
            folds = [test for _, test in splitter.split(np.zeros((n, 1)), y, groups)]
        except ValueError as exc:
            what = "groups" if groups is not None else "rows"
            raise ValueError(
                f"validation={self.validation!r} needs {n_splits} folds of {what} "
                f"but the split failed ({exc}). Pass more {what}, a different "
                "validation fraction, or validation='cross_fit'."
            ) from exc
        everything = np.arange(n)
        if self.validation == "cross_fit":
            return [(np.setdiff1d(everything, f), np.sort(f)) for f in folds]
        return [(np.setdiff1d(everything, folds[0]), np.sort(folds[0]))]

    def _n_remove(self, n_units):
        if isinstance(self.budget, numbers.Integral):
            return int(self.budget)
        if self.budget == 0:
            return 0
        return max(1, int(np.floor(self.budget * n_units)))

    def _allocate(self, k, pool_sizes, unit_name, n_units):
        """Share ``k`` removals among the splits' pools (each keeps one unit)."""
        total = sum(pool_sizes)
        if k >= total or k > sum(s - 1 for s in pool_sizes):
            held = n_units - total
            where = (
                f" (the other {held} are the validation split, which is never removed)"
                if held > 0
                else ""
            )
            limit = sum(s - 1 for s in pool_sizes)
            raise ValueError(
                f"budget={self.budget!r} means removing {k} {unit_name}, but the "
                f"candidate pool has {total} {unit_name}{where} and each internal "
                f"fit must keep at least one; pass budget <= {limit} (an int), or "
                f"a smaller fraction of the {n_units} {unit_name}."
            )
        if len(pool_sizes) == 1:
            return [k]
        share = [int(round(k * s / total)) for s in pool_sizes]
        share[-1] = k - sum(share[:-1])
        for i in range(len(share)):  # move any excess to the other pool
            excess = share[i] - (pool_sizes[i] - 1)
            if excess > 0:
                share[i] -= excess
                share[1 - i] += excess
        return share

    def _fit(self, X, y, groups, sample_weight, *, refit):
        X, y, groups, sample_weight = self._validate_input(X, y, groups, sample_weight)
        n = len(y)
        if self.groups_as_units:
            unit_labels, unit_of_row = np.unique(groups, return_inverse=True)
            unit_name = "groups"
        else:
            unit_labels, unit_of_row = None, np.arange(n)
            unit_name = "examples"
        n_units = n if unit_labels is None else len(unit_labels)
        k = self._n_remove(n_units)

        removed, removed_units = [], []
        self.selections_, self.splits_ = [], []
        if k > 0 and self._is_classifier:
            weighted = y if sample_weight is None else y[sample_weight > 0]
            if len(np.unique(weighted)) < 2:
                raise ValueError(
                    "GroupSelector needs at least two classes with positive "
                    f"sample_weight to score removals; got only class(es) "
                    f"{np.unique(weighted).tolist()}. Pass data with several "
                    "classes, or budget=0 to fit the estimator as it is."
                )
        if k > 0:
            rng = check_random_state(self.random_state)
            seed = int(rng.randint(np.iinfo(np.int32).max))
            splits = self._splits(y, groups, seed)
            pool_units = [len(np.unique(unit_of_row[pool])) for pool, _ in splits]
            shares = self._allocate(k, pool_units, unit_name, n_units)
            for (pool, target), k_s in zip(splits, shares):
                self.splits_.append((pool, target))
                if k_s == 0:
                    continue
                sel = self._select_in_split(
                    X, y, groups, sample_weight, pool, target, k_s, unit_of_row
                )
                self.selections_.append(sel)
                removed.append(pool[sel.indices])
                if self.groups_as_units:
                    removed_units.append(unit_labels[sel.groups])
        removed = np.concatenate(removed) if removed else np.zeros(0, dtype=int)
        keep = np.ones(n, dtype=bool)
        keep[removed] = False
        if self._is_classifier:
            self._check_no_class_vanishes(y, keep, k, unit_name)
        self.removed_indices_ = removed.astype(int)
        self.sample_indices_ = np.flatnonzero(keep)
        if self.groups_as_units:
            self.removed_groups_ = (
                np.concatenate(removed_units) if removed_units else unit_labels[:0]
            )
        if refit:
            sw = None if sample_weight is None else sample_weight[keep]
            self.estimator_ = _fit_with_weight(
                clone(self.estimator),
                _safe_indexing(X, self.sample_indices_),
                _safe_indexing(y, self.sample_indices_),
                sw,
            )
            if hasattr(self.estimator_, "classes_"):
                self.classes_ = self.estimator_.classes_
        elif self._is_classifier:
            self.classes_ = np.unique(y)
        return self

    def _select_in_split(
        self, X, y, groups, sample_weight, pool, target, k, unit_of_row
    ):
        def rows(a, idx):
            return None if a is None else _safe_indexing(a, idx)

        gi = GroupInfluence(
            clone(self.estimator), method=self.method, damping=self.damping
        )
        gi.fit(
            rows(X, pool),
            rows(y, pool),
            rows(sample_weight, pool),
            X_target=rows(X, target),
            y_target=rows(y, target),
            target_weight=rows(sample_weight, target),
        )
        return gi.select(
            k,
            groups=unit_of_row[pool] if self.groups_as_units else None,
            goal="decrease",
            action="remove",
            method=self.method,
            n_rounds=min(self.n_rounds, k),
            stop_early=self.stop_early,
        )

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
