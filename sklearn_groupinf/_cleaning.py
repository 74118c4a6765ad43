"""Cleaning without clean data: leave-one-out signals and row rankings.

The per-row signal behind ``GroupSelector``: the approximate leave-one-out
(LOO) loss of a row, its own loss plus its self-influence
``l_i(theta_hat) + sigma_i`` (an n-fold out-of-sample loss from one
:class:`GroupInfluence` fit), and the rule that says a row looks noisy. A
classifier's row looks noisy when its approximate LOO probability of its given
label, ``exp(-LOO loss)``, is below chance (``1 / n_classes``); a regressor's
when its approximate LOO squared residual is over 9 robust variances (a
3-sigma rule, the variance from the median). :func:`clean_loo` removes rows by
that signal in rounds; the cross-fitted, group-capable cleaning is in
:mod:`sklearn_groupinf._cross_fit`. Nothing here differentiates a model.
"""

import numpy as np
from sklearn.model_selection import (
    GroupShuffleSplit,
    ShuffleSplit,
    StratifiedShuffleSplit,
)


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


def approximate_loo_loss(gi, X, y, classifier):
    """``l_i(theta_hat) + sigma_i`` in metric units, from one fitted ``gi``."""
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


def round_sizes(k, n_rounds):
    """Split a budget of ``k`` units into ``n_rounds`` near-equal slices."""
    n_rounds = max(1, min(n_rounds, k))
    return [int(s) for s in np.diff(np.linspace(0, k, n_rounds + 1).round())]


def clean_loo(fit_influence, take, y, *, k, n_rounds, classifier):
    """Remove rows by approximate leave-one-out loss, in rounds.

    Each round fits the influence model on the rows still kept, scores each
    by its approximate LOO loss (own loss plus self-influence) and removes
    the round's slice of the budget with the highest scores. ``k="auto"``:
    the budget is the number of rows that look noisy in the first round; a
    round removes only rows that still look noisy, and cleaning stops when
    none do.

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
