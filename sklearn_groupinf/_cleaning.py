"""Cleaning without clean data: leave-one-out signals and row rankings.

The per-row signal behind ``GroupSelector``: the approximate leave-one-out
(LOO) loss of a row from one :class:`GroupInfluence` fit (an n-fold
out-of-sample loss): for classifiers the log-loss of its label one Newton step
after removing it, ``theta + (H - H_i)^{-1} q_i``, where the backend gives
Newton steps and probabilities; otherwise its own loss plus its
self-influence ``l_i(theta_hat) + sigma_i``; and the rule that says a row
looks noisy. A
classifier's row looks noisy when its approximate LOO probability of its given
label, ``exp(-LOO loss)``, is below chance (``1 / n_classes``); a regressor's
when its approximate LOO squared residual is over 9 robust variances (a
3-sigma rule, the variance from the median). :func:`clean_loo` removes rows by
that signal in rounds; the cross-fitted, group-capable cleaning is in
:mod:`sklearn_groupinf._cross_fit`, the leave-group-out one in
:mod:`sklearn_groupinf._selector_groups`. Nothing here differentiates a model:
the backend gives gradients, Hessian solves and log-probabilities.
"""

import numpy as np
from sklearn.model_selection import (
    GroupShuffleSplit,
    ShuffleSplit,
    StratifiedShuffleSplit,
)

from ._estimators import group_newton_step


def own_losses(estimator, X, y, classifier):
    """Each row's loss under the fitted ``estimator`` (metric units).

    Log-loss of the given label for classifiers with ``predict_proba``,
    squared error otherwise.
    """
    if classifier and hasattr(estimator, "predict_proba"):
        proba = estimator.predict_proba(X)
        idx = np.searchsorted(estimator.classes_, y)
        p = proba[np.arange(len(y)), np.clip(idx, 0, proba.shape[1] - 1)]
        return -np.log(np.clip(p, 1e-300, None))
    if classifier:  # e.g. RidgeClassifier: no probabilities
        return (estimator.predict(X) != y).astype(float)
    n = len(y)
    pred = np.asarray(estimator.predict(X), dtype=float).reshape(n, -1)
    r = np.asarray(y, dtype=float).reshape(n, -1) - pred
    return np.sum(r**2, axis=1)


class LeaveGroupOutUnsupported(Exception):
    """The estimator's backend gives no group-Newton step or probabilities."""


def leave_group_out_log_proba(state, local, n_units):
    """Class log-probabilities of each unit's rows under ``theta_{-G}``.

    Parameters
    ----------
    state : _FitState
        A fitted :class:`GroupInfluence`'s cache (backend and Hessian solver).
    local : ndarray of int of shape (n_rows,)
        Unit (a group, or the row itself; ``0 .. n_units - 1``) of each
        training row of that fit.
    n_units : int

    Returns
    -------
    log_proba : list of ndarray
        Per unit, ``(n_rows_in_unit, n_classes)`` log-probabilities at the
        group-Newton parameters ``theta + (H - H_G)^{-1} sum_G q_i``: one
        Newton step of the objective without the unit, from the full fit.

    Raises
    ------
    LeaveGroupOutUnsupported
        When the backend gives no group-Newton step or class probabilities.
    """
    backend = state.backend
    if not getattr(backend, "supports_newton", False):
        raise LeaveGroupOutUnsupported(type(backend).__name__)
    theta = backend.get_theta()
    try:
        backend.example_log_proba(np.zeros(0, dtype=int))
    except NotImplementedError as exc:
        raise LeaveGroupOutUnsupported(str(exc)) from exc
    order = np.argsort(local, kind="stable")
    bounds = np.searchsorted(local[order], np.arange(n_units + 1))
    out = []
    for u in range(n_units):
        rows = order[bounds[u] : bounds[u + 1]]
        q = backend.removal_gradients(rows).sum(axis=0)
        step = group_newton_step(backend, state.solver, rows, q)
        out.append(backend.example_log_proba(rows, theta + step))
    return out


def approximate_loo_loss(gi, X, y, classifier):
    """Each row's approximate leave-one-out loss (metric units), one fit.

    Classifiers whose backend gives group-Newton steps and probabilities:
    ``-log p_i`` of the given label at ``theta + (H - H_i)^{-1} q_i`` (one
    Newton step without the row; for a row of high leverage far closer to a
    refit than the first-order value). Otherwise ``l_i(theta_hat) +
    sigma_i``, own loss plus self-influence.
    """
    if classifier:
        n = len(y)
        try:
            log_proba = leave_group_out_log_proba(gi._state, np.arange(n), n)
        except LeaveGroupOutUnsupported:
            pass
        else:
            idx = np.searchsorted(gi.estimator_.classes_, y)
            return -np.array([lp[0, c] for lp, c in zip(log_proba, idx)])
    own = own_losses(gi.estimator_, X, y, classifier)
    return own + gi.self_influence()  # both in the metric's units


def looks_noisy(loo_loss, y, classifier):
    """Rows whose approximate LOO loss says the given label is unlikely.

    Classifiers: ``exp(-loo_loss) < 1 / n_classes`` (the given label is less
    likely than chance without the row). Regressors: squared LOO residual
    above ``9 * median / 0.455`` (three robust standard deviations).
    """
    if classifier:
        n_classes = max(2, len(np.unique(y)))
        return loo_loss > np.log(n_classes)
    scale = np.median(loo_loss) / 0.455
    return loo_loss > 9.0 * scale


AUTO_CHANCE_FRACTION = 0.35
"""``budget="auto"`` on a classifier's rows: a row is removed when its
approximate leave-one-out probability of its label is below this fraction of
chance, ``AUTO_CHANCE_FRACTION / n_classes``. Chosen among 0.25, 0.35, 0.5 and
1 on flips drawn with seeds other than those of the published cleaning
benchmark (``benchmarks/cleaning_auto_threshold.py``)."""


def clearly_noisy(loo_loss, y):
    """Classifier rows whose label is below ``AUTO_CHANCE_FRACTION`` of chance.

    ``exp(-loo_loss) < AUTO_CHANCE_FRACTION / n_classes``: without the row,
    the model gives its label well under chance. Stricter than
    :func:`looks_noisy`: on data with a high Bayes error (German credit) many
    correct rows are below chance, and removing them makes the refitted model
    overconfident.
    """
    n_classes = max(2, len(np.unique(y)))
    return loo_loss > np.log(n_classes / AUTO_CHANCE_FRACTION)


def round_sizes(k, n_rounds):
    """Split a budget of ``k`` units into ``n_rounds`` near-equal slices."""
    n_rounds = max(1, min(n_rounds, k))
    return [int(s) for s in np.diff(np.linspace(0, k, n_rounds + 1).round())]


def clean_loo(fit_influence, take, y, *, k, n_rounds, classifier):
    """Remove rows by approximate leave-one-out loss, in rounds.

    Each round fits the influence model on the rows still kept, scores each
    by its approximate LOO loss (own loss plus self-influence) and removes
    the round's slice of the budget with the highest scores. ``k="auto"``,
    classifiers: each round removes every row that is clearly noisy
    (:func:`clearly_noisy`) under the model refitted without the rows
    removed so far, and cleaning stops when none is; regressors: the budget
    is the number of rows that look noisy in the first round, a round removes
    only rows that still look noisy, and cleaning stops when none do.

    Returns
    -------
    removed : ndarray of int
        Removed rows in removal order.
    rounds : list of dict
        Per round: ``units`` removed, ``loo_loss`` of those rows (metric
        units) and ``n_noisy_rows`` (rows that looked noisy).
    """
    n = len(y)
    kept = np.ones(n, dtype=bool)
    removed, rounds, sizes = [], [], None
    auto = isinstance(k, str)
    for r in range(n_rounds):
        rows = np.flatnonzero(kept)
        gi = fit_influence(rows, None)
        loo = approximate_loo_loss(gi, take(rows), y[rows], classifier)
        if auto and classifier:  # every clearly noisy row, no first-round cap
            noisy = clearly_noisy(loo, y[rows])
            sizes = [max(0, len(rows) - 2)] * n_rounds
        else:
            noisy = looks_noisy(loo, y[rows], classifier)
        if sizes is None:
            cap = min(int(noisy.sum()), n - 2) if auto else k
            sizes = round_sizes(cap, n_rounds) if cap > 0 else []
        if r >= len(sizes):
            break
        order = np.argsort(-loo, kind="stable")[: sizes[r]]
        if auto:
            order = order[noisy[order]]
        rounds.append(
            {
                "units": rows[order],
                "loo_loss": loo[order],
                "n_noisy_rows": int(noisy.sum()),
            }
        )
        if len(order) == 0:
            break
        kept[rows[order]] = False
        removed.append(rows[order])
    removed = np.concatenate(removed) if removed else np.zeros(0, dtype=int)
    return removed.astype(int), rounds


def hold_out_split(y, groups, fraction, seed, stratify):
    """``(pool_rows, target_rows)``: ``fraction`` of the rows held out.

    Whole groups when ``groups`` is given, else stratified by class for
    classifiers.
    """
    n = len(y)
    if groups is not None:
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    elif stratify:
        splitter = StratifiedShuffleSplit(
            n_splits=1, test_size=fraction, random_state=seed
        )
    else:
        splitter = ShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    try:
        pool, target = next(splitter.split(np.zeros((n, 1)), y, groups))
    except ValueError as exc:
        raise ValueError(
            f"validation={fraction!r} cannot hold out a target set from these {n} "
            f"rows ({exc}). Use more data, a larger validation fraction, or "
            "validation='auto'."
        ) from exc
    return np.sort(pool), np.sort(target)


def clean_hold_out(gi, take, y, pool, unit_of_row, *, k, budget, classifier, select):
    """Greedy removal on a hold-out split (``validation=<fraction>``).

    ``gi`` is fitted on ``pool`` with the held-out rows as target;
    ``select(gi, k, local_units, auto)`` runs :meth:`GroupInfluence.select`.
    ``k="auto"``: the units of the pool most of whose rows look noisy (the
    greedy rule then stops early). Returns ``(removed units, selection)``.
    """
    units, local = np.unique(unit_of_row[pool], return_inverse=True)
    auto = isinstance(k, str)
    if auto:
        loo = approximate_loo_loss(gi, take(pool), y[pool], classifier)
        noisy = looks_noisy(loo, y[pool], classifier)
        bad = np.bincount(local, weights=noisy, minlength=len(units))
        k = int(np.sum(bad > 0.5 * np.bincount(local)))
    elif k > len(units) - 1:
        raise ValueError(
            f"budget={budget!r} means removing {k} units, but the candidate pool "
            f"has {len(units)} (the other rows are the validation split, which "
            f"is never removed); pass budget <= {len(units) - 1} (an int), or a "
            "smaller fraction."
        )
    if k == 0:
        return np.zeros(0, dtype=int), None
    sel = select(gi, k, local, auto)
    if sel.get("groups") is not None:  # local group labels, greedy order
        return units[np.asarray(sel["groups"], dtype=int)], sel
    return unit_of_row[pool[sel["indices"]]], sel
