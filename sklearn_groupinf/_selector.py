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
from sklearn.utils import _safe_indexing, check_random_state, get_tags
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    RealNotInt,
    StrOptions,
)

from ._cleaning import clean_hold_out, clean_loo, hold_out_split
from ._cross_fit import clean_cross_fit
from ._group_influence import GroupInfluence
from ._selector_checks import check_no_class_vanishes, check_selector_input
from ._selector_groups import LeaveGroupOutUnsupported, clean_leave_group_out
from ._selector_protocols import (
    _RefittedDelegationMixin,
    _RoutingMixin,
    _SamplerMixin,
)
from ._utils import _wrapped_tags


class GroupSelector(
    _RefittedDelegationMixin,
    _RoutingMixin,
    _SamplerMixin,
    MetaEstimatorMixin,
    BaseEstimator,
):
    """Remove the most harmful training examples or groups, then refit.

    Cleaning without clean data: every label may be wrong, so what decides
    the removal is built from the training rows in ways noisy labels cannot
    steer. With the default ``validation="auto"``:

    * single rows (``validation="loo"``): each row's approximate
      leave-one-out loss, an n-fold out-of-sample loss from one fit: for a
      classifier whose influence model gives Newton steps and probabilities
      (e.g. ``LogisticRegression``) the log-loss of its label one Newton step
      after removing the row, otherwise its own loss plus its self-influence
      (:meth:`GroupInfluence.self_influence`); the rows with the highest are
      removed, in ``n_rounds`` slices, each round refitted without the rows
      removed so far;
    * whole groups of a two-class classifier whose influence model gives
      Newton steps and probabilities (``groups_as_units=True``,
      ``validation="relabel"``): each group is judged by the penalised
      log-likelihood gained by refitting with its labels swapped (one
      Newton step with the fit's Hessian and a line search on the exact
      objective, so never more than a refit would gain); the groups with the
      largest gain are removed, in ``n_rounds`` slices, each round refitted
      without the groups removed so far;
    * whole groups of a classifier with more classes
      (``validation="leave_group_out"``): each group is judged by the model
      fitted without it (one group-Newton step from one fit, class prior put
      back to all kept rows'): the log-likelihood ratio of "the group's
      labels are wrong" against "they are right" under that model; the
      groups with the largest ratio are removed, in ``n_rounds`` slices, each
      round refitted without the groups removed so far;
    * whole groups of a regressor, or of a classifier whose influence model
      gives no group-Newton step or probabilities (``validation="cross_fit"``):
      the groups are split in ``n_folds`` folds (stratified by class); rows
      whose out-of-fold probability of their label is below chance look
      noisy; per fold a :class:`GroupInfluence` fitted on the other folds
      estimates how removing each of its groups changes the log-loss (the
      estimator's metric) of the fold's rows that do not look noisy (a robust,
      held-out target); the folds' estimates are added into one global
      estimate and the interaction-aware greedy rule removes a slice of the
      budget, in ``n_rounds`` rounds. For rows, ``validation="cross_fit"``
      does the same with approximate leave-one-out losses flagging the noisy
      rows.

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
        nothing. ``"auto"``, a classifier's rows (``"loo"``): each of the
        ``n_rounds`` rounds removes every row whose approximate leave-one-out
        probability of its label is below ``0.35 / n_classes`` under the model
        refitted without the rows removed so far, and cleaning stops when
        none is (a stricter rule than "below chance": on data with a high
        Bayes error many correct rows are below chance, and removing them
        makes the refit overconfident). Otherwise ``"auto"`` removes at most
        the units that look noisy in the first round (regressors' rows: a
        squared leave-one-out residual over 9 robust variances; groups with
        ``"leave_group_out"``:
        a positive flip likelihood ratio, ``"relabel"``: a positive gain;
        groups with ``"cross_fit"``: most
        of their rows), and stops earlier when no unit looks noisy any more
        (``"cross_fit"``: when no unit is estimated to lower the robust
        target); ``removed_indices_`` tells how many were removed.
    method : {"interaction", "first_order", "second_order"}, \
            default="interaction"
        Estimate driving the greedy removal (``"cross_fit"`` and hold-out;
        ``"loo"`` ranks by the leave-one-out loss, ``"relabel"`` and
        ``"leave_group_out"`` by their flip likelihood ratios):
        ``interaction`` adds the pairwise interaction of the removed units to
        the first-order sum, so redundant units are not removed together for
        the same reason; ``first_order``
        is top-k on the summed influences; ``second_order`` also adds the
        parameter response to second order.
    groups_as_units : bool, default=False
        Remove whole groups (the ``groups`` passed to ``fit``) instead of
        single examples. Groups are ranked globally across the folds.
    validation : {"auto", "loo", "relabel", "leave_group_out", "cross_fit"} \
            or float in (0, 1), default="auto"
        ``"loo"``, ``"relabel"``, ``"leave_group_out"`` and ``"cross_fit"``:
        as described above; every unit is a candidate. ``"auto"``: ``"loo"``
        for rows; for groups of a classifier fitted with a log-loss whose
        influence model gives group-Newton steps (e.g.
        ``LogisticRegression``) ``"relabel"`` with two classes and
        ``"leave_group_out"`` with more, else ``"cross_fit"``. A float: that
        fraction of the rows (whole groups when ``groups`` is given) is held
        out, its rows (noisy labels and all) are the target set, are never
        removed and are part of the final refit; the selection is
        :meth:`GroupInfluence.select` on that split.
    n_folds : int, default=5
        Folds of ``"cross_fit"`` (lowered to the number of units available).
    damping : float, default=0.0
        Hessian damping of the influence model (see :class:`GroupInfluence`).
    n_rounds : int, default=3
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
        Per round: ``units`` removed (rows or group indices into the sorted
        labels) and ``n_noisy_rows`` (rows that looked noisy); ``"loo"``:
        ``loo_loss`` of the removed rows (metric units);
        ``"leave_group_out"``: ``flip_llr`` of the removed groups and
        ``n_noisy_units`` (groups with a positive ratio) instead of
        ``n_noisy_rows``; ``"cross_fit"``:
        ``estimates`` (estimated change of the robust target, summed over the
        folds' target rows in the metric's units, after each removal) and
        ``folds`` (``(pool_rows, target_rows)`` of each fold).
    selections_ : list of Selection
        Hold-out only: the :meth:`GroupInfluence.select` result.
    splits_ : list of tuple of ndarray
        ``(pool_rows, target_rows)``: the folds of the first round
        (``"cross_fit"``), the hold-out split, or empty (``"loo"``,
        ``"leave_group_out"``).
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
    :math:`\\ell_i(\\hat\\theta + (H - H_i)^{-1} q_i)`, the loss one Newton
    step after removing the row (a classifier's log-loss; :math:`H_i` the
    row's Hessian term, a rank-``n_classes`` update), or, where the backend
    gives no probabilities, the first-order
    :math:`\\ell_i(\\hat\\theta) + \\sigma_i`, :math:`\\sigma_i =
    \\nabla\\ell_i^\\top H^{-1} q_i` (the loss is :math:`\\ell_i` of
    :meth:`GroupInfluence.self_influence` converted to the metric's units).
    On the benchmark sets the Newton value ranks better: for rows of high
    leverage (digits: 650 parameters, 1,257 rows) the first-order value is
    far from a refit.
    The cross-fitted estimate of removing a set :math:`S` is
    :math:`\\sum_f (b_f^\\top 1_S + \\tfrac12 1_S^\\top K_f 1_S)`, fold
    :math:`f`'s first-order and pairwise terms scaled to its target rows'
    summed loss. The flip likelihood ratio of a group :math:`G` is
    :math:`\\sum_{i\\in G} [\\log((1 - p_i)/(K - 1)) - \\log p_i]`,
    :math:`p_i` the probability of row :math:`i`'s label under
    :math:`\\theta + (H - H_G)^{-1}\\sum_{i\\in G} q_i` (the model without
    :math:`G`, one Newton step), re-weighted by the class frequencies with
    and without :math:`G`; :math:`K` classes. The relabel score of a group
    of a two-class classifier is :math:`(J(\\hat\\theta) - \\min J_G) / C`,
    :math:`J_G` the objective with the labels of :math:`G` swapped, minimised
    over :math:`\\hat\\theta + t d`, :math:`t \\in \\{0, 1, 1/2, 1/4, 1/8\\}`,
    :math:`d = -H^{-1} \\nabla J_G(\\hat\\theta)`, each point evaluated
    exactly (a lower bound of the refit's gain). Measured against cleanlab on
    real tabular sets in ``benchmarks/cleaning_vs_cleanlab.py`` (the documentation page
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
    13
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
            StrOptions({"auto", "loo", "cross_fit", "leave_group_out", "relabel"}),
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
        validation="auto",
        n_folds=5,
        damping=0.0,
        n_rounds=3,
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
        est_params = self._routed_fit_params(groups, sample_weight, fit_params)
        return self._fit(X, y, groups, sample_weight, refit=True, params=est_params)

    def _n_remove(self, n_units, unit_name):
        if isinstance(self.budget, str):
            return "auto"
        if isinstance(self.budget, numbers.Integral):
            k = int(self.budget)
        else:
            k = 0 if self.budget == 0 else max(1, int(np.floor(self.budget * n_units)))
        if k > n_units - 2:
            fix = (
                f"pass budget <= {n_units - 2} (an int), or a smaller fraction."
                if n_units > 2
                else f"use data with at least 3 {unit_name}, or budget=0."
            )
            raise ValueError(
                f"budget={self.budget!r} means removing {k} {unit_name}, but there "
                f"are {n_units} {unit_name} and every internal fit must keep some; "
                f"{fix}"
            )
        return k

    def _fit(self, X, y, groups, sample_weight, *, refit, params=None):
        X, y, groups, sample_weight = check_selector_input(
            self, X, y, groups, sample_weight
        )
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
                mode = self.validation
                if mode == "auto" and self.groups_as_units:
                    mode = "leave_group_out" if self._is_classifier else "cross_fit"
                    if mode == "leave_group_out" and len(np.unique(y)) == 2:
                        mode = "relabel"
                elif mode == "auto":
                    mode = "loo"
                if mode in ("leave_group_out", "relabel"):
                    removed_units = self._leave_group_out(
                        X, y, sample_weight, unit_of_row, k, mode
                    )
                    if removed_units is None:  # no probabilities: cross-fit
                        mode = "cross_fit"
                if mode == "loo":
                    if self.groups_as_units:
                        raise ValueError(
                            "validation='loo' ranks single rows; with "
                            "groups_as_units=True use validation='leave_group_out', "
                            "'cross_fit' or 'auto'."
                        )
                    removed_units = self._loo(X, y, sample_weight, k)
                elif mode in ("leave_group_out", "relabel"):
                    pass
                elif mode == "cross_fit":
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
            check_no_class_vanishes(self.budget, y, keep, len(removed_units), unit_name)
        self.removed_indices_ = removed.astype(int)
        self.sample_indices_ = np.flatnonzero(keep)
        if self.groups_as_units:
            self.removed_groups_ = unit_labels[removed_units]
        if refit:
            self._refit(X, y, sample_weight, params)
        elif self._is_classifier:
            self.classes_ = np.unique(y)
        return self

    def _influence(self, X, y, sample_weight, pool, target):
        """A GroupInfluence fitted on ``pool`` with the metric on ``target``."""

        def rows(a, idx):
            return None if a is None or idx is None else _safe_indexing(a, idx)

        if self._is_classifier and pool is not None:
            _check_two_classes(self, y, sample_weight, pool)
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

    def _loo(self, X, y, sample_weight, k):
        removed, self.rounds_ = clean_loo(
            lambda pool, target: self._influence(X, y, sample_weight, pool, target),
            lambda rows: _safe_indexing(X, rows),
            y,
            k=k,
            n_rounds=self.n_rounds,
            classifier=self._is_classifier,
        )
        return removed

    def _leave_group_out(self, X, y, sample_weight, unit_of_row, k, rule):
        """Groups by a flip likelihood ratio; ``None`` when unsupported."""
        if not (self.groups_as_units and self._is_classifier):
            raise ValueError(
                f"validation={rule!r} ranks whole groups of a classifier; "
                f"got groups_as_units={self.groups_as_units} and a "
                f"{'classifier' if self._is_classifier else 'regressor'}. Pass "
                "groups_as_units=True with a classifier, or validation='auto'."
            )
        if rule == "relabel" and len(np.unique(y)) != 2:
            raise ValueError(
                "validation='relabel' swaps the labels of a group and needs "
                f"exactly two classes; got {len(np.unique(y))}. Use "
                "validation='leave_group_out' (or 'auto') with more classes."
            )
        try:
            removed, self.rounds_ = clean_leave_group_out(
                lambda pool, target: self._influence(X, y, sample_weight, pool, target),
                y,
                unit_of_row,
                k=k,
                n_rounds=self.n_rounds,
                rule=rule,
            )
        except (LeaveGroupOutUnsupported, NotImplementedError) as exc:
            if self.validation == "auto":
                return None
            raise ValueError(
                f"validation={rule!r} needs an estimator fitted with a "
                f"log-loss whose influence model gives group-Newton steps ({exc}); "
                "use validation='cross_fit' or 'auto'."
            ) from exc
        return removed

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
            groups_out_of_fold=self.groups_as_units,
        )
        self.splits_ = self.rounds_[0]["folds"] if self.rounds_ else []
        return removed

    def _hold_out(self, X, y, groups, sample_weight, unit_of_row, k, seed):
        strat = self._is_classifier and np.ndim(y) == 1
        pool, target = hold_out_split(y, groups, self.validation, seed, strat)
        self.splits_ = [(pool, target)]

        def select(gi, k, local, auto):
            return gi.select(
                k,
                groups=local if self.groups_as_units else None,
                goal="decrease",
                action="remove",
                method=self.method,
                n_rounds=min(self.n_rounds, k),
                stop_early=self.stop_early or auto,
            )

        removed, sel = clean_hold_out(
            self._influence(X, y, sample_weight, pool, target),
            lambda rows: _safe_indexing(X, rows),
            y,
            pool,
            unit_of_row,
            k=k,
            budget=self.budget,
            classifier=self._is_classifier,
            select=select,
        )
        self.selections_ = [] if sel is None else [sel]
        return removed


def _check_two_classes(selector, y, sample_weight, pool):
    """An internal fit on ``pool`` needs two classes with positive weight."""
    kept = np.asarray(y)[pool]
    if sample_weight is not None:
        kept = kept[np.asarray(sample_weight)[pool] > 0]
    present = np.unique(kept)
    if len(present) < 2:
        raise ValueError(
            f"An internal fit of GroupSelector (validation={selector.validation!r})"
            f" would see {len(kept)} rows of the single class "
            f"{present.tolist()}: the rows it keeps (after the removals so far, "
            "or outside the fold) lack the other classes. Use more data, groups "
            "that each hold rows of several classes, fewer n_folds, or budget=0."
        )
