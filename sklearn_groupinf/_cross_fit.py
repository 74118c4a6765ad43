"""Cross-fitted cleaning with a robust target, ranked globally across folds.

``GroupSelector(validation="cross_fit")`` (the default for whole groups). One
round, on the units (rows or groups) still kept:

1. *Rows that look noisy* (:func:`~sklearn_groupinf._cleaning.looks_noisy`):
   for groups, by each row's loss under the model fitted without its fold
   (exact, and right for large groups); for rows, by the approximate
   leave-one-out loss.
2. *Robust target, cross-fitted.* The kept units are split in ``n_folds``
   folds (stratified by class, whole groups together). For each fold, the
   influence model is fitted on the other folds and its target is the
   log-loss (the estimator's metric) of the fold's rows that do not look
   noisy: held-out rows, so the target is out of sample, and trimmed, so noisy
   labels cannot steer it.
3. *Global ranking.* The per-fold quadratic estimates (first-order term and,
   for ``interaction``, the pairwise term, both scaled to summed target
   loss) are added over the folds into one estimate over all kept units, and
   the greedy rule (:func:`~sklearn_groupinf._selection.greedy_select`)
   removes this round's slice of the budget from that single ranking.
"""

import warnings

import numpy as np
from sklearn.model_selection import (
    GroupKFold,
    KFold,
    StratifiedGroupKFold,
    StratifiedKFold,
)

from ._cleaning import approximate_loo_loss, looks_noisy, own_losses, round_sizes
from ._selection import greedy_select

#: above this many bytes the summed dense pairwise matrices are not formed and
#: row cleaning falls back to first-order scores (with a warning)
MAX_SUMMED_BYTES = 2**30


def make_folds(y, unit_of_row, n_folds, seed, stratify):
    """Fold labels of the units: ``(n_units,)`` ints in ``[0, n_splits)``.

    Whole units stay in one fold; classifiers' folds are stratified by class
    (``StratifiedGroupKFold`` over the units). ``n_folds`` is lowered to the
    number of units (and to the largest class count when rows are units),
    and ``ValueError`` names the parameter when fewer than 2 folds remain.
    """
    n_units = int(unit_of_row.max()) + 1
    n_splits = min(n_folds, n_units)
    rows_are_units = n_units == len(y)
    if stratify and rows_are_units:
        n_splits = min(n_splits, int(np.unique(y, return_counts=True)[1].max()))
    if n_splits < 2:
        raise ValueError(
            f"n_folds={n_folds} cross-fitting needs at least 2 units (rows or "
            f"groups) per class; got {n_units} units. Pass more data, or "
            "validation=<fraction> for a hold-out target."
        )
    dummy = np.zeros((len(y), 1))
    if rows_are_units:
        cls = StratifiedKFold if stratify else KFold
        splitter = cls(n_splits=n_splits, shuffle=True, random_state=seed)
        if stratify:
            with warnings.catch_warnings():  # a class with fewer rows than folds
                warnings.simplefilter("ignore", UserWarning)
                folds = [t for _, t in splitter.split(dummy, y)]
        else:
            folds = [t for _, t in splitter.split(dummy)]
    else:
        cls = StratifiedGroupKFold if stratify else GroupKFold
        kw = {"shuffle": True, "random_state": seed} if stratify else {}
        splitter = cls(n_splits=n_splits, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            folds = [t for _, t in splitter.split(dummy, y, unit_of_row)]
    fold_of_unit = np.zeros(n_units, dtype=int)
    for f, rows in enumerate(folds):
        fold_of_unit[unit_of_row[rows]] = f
    return fold_of_unit


class DenseSum:
    """A dense pairwise matrix in the operator interface of ``greedy_select``."""

    def __init__(self, K):
        self.K = K

    def diag(self):
        return np.diag(self.K)

    def column(self, j):
        return self.K[:, j]


def fold_target(y_pool, y_target, classifier):
    """Mask of target rows the pool's model can score (their class is fitted).

    With class-coherent groups a fold's pool can lack a class; its held-out
    rows of that class are left out of that fold's target. Raises when the
    pool has a single class.
    """
    if not classifier:
        return np.ones(len(y_target), dtype=bool)
    present = np.unique(y_pool)
    if len(present) < 2:
        raise ValueError(
            f"A cross-fitting fold's training part holds only class "
            f"{present.tolist()}, so no classifier can be fitted on it (the "
            "groups are class-coherent and too few per class). Pass a smaller "
            "n_folds, groups that mix classes, or validation=<fraction>."
        )
    return np.isin(y_target, present)


def accumulate(fold_scores, n_units, pairwise):
    """Add per-fold ``(units, b, K)`` into one global ``(b, operator)``.

    ``units`` are the fold's pool units (global indices); ``b`` and ``K`` are
    already scaled to summed target loss.
    """
    b = np.zeros(n_units)
    K = np.zeros((n_units, n_units)) if pairwise else None
    for units, b_f, K_f in fold_scores:
        b[units] += b_f
        if pairwise:
            K[np.ix_(units, units)] += K_f
    return b, (None if K is None else DenseSum(K))


def check_pairwise_memory(n_units, n_folds):
    """``True`` when the summed dense pairwise matrices fit; warns otherwise."""
    need = 8.0 * n_units**2 * 2
    if need <= MAX_SUMMED_BYTES:
        return True
    warnings.warn(
        f"Cross-fitted interaction-aware cleaning of {n_units} units would hold "
        f"{need / 2**30:.1f} GiB of pairwise terms; using first-order scores "
        "instead. Pass method='first_order' to silence this, or group the rows.",
        UserWarning,
        stacklevel=3,
    )
    return False


def _noisy_units(noisy_rows, unit_of_rows, n_units):
    """Units most of whose rows look noisy."""
    bad = np.bincount(unit_of_rows, weights=noisy_rows, minlength=n_units)
    size = np.bincount(unit_of_rows, minlength=n_units)
    return np.flatnonzero((size > 0) & (bad > 0.5 * size))


def clean_cross_fit(
    fit_influence,
    take,
    y,
    unit_of_row,
    *,
    k,
    n_folds,
    n_rounds,
    method,
    seed,
    classifier,
    stop_early=False,
    groups_out_of_fold=False,
):
    """Cross-fitted cleaning in rounds with a robust target (module docstring).

    Parameters
    ----------
    fit_influence : callable
        ``fit_influence(pool_rows, target_rows)`` returns a fitted
        ``GroupInfluence`` of the estimator on ``pool_rows`` whose target is
        the metric on ``target_rows`` (``None``: the training rows).
    take : callable
        ``take(rows)`` returns the rows of ``X``.
    y : ndarray of shape (n_samples,)
    unit_of_row : ndarray of int of shape (n_samples,)
        Unit (``0 .. n_units - 1``) of each row.
    k : int or "auto"
        Number of units to remove; ``"auto"``: at most the units that look
        noisy in the first round, fewer when the robust target stops
        improving (greedy with ``stop_early``).
    n_folds, n_rounds : int
    method : {"interaction", "first_order", "second_order"}
    seed : int
    classifier : bool
    stop_early : bool
        Stop a round when no unit is estimated to lower the target (always
        with ``k="auto"``).

    Returns
    -------
    removed : ndarray of int
        Removed units in removal order.
    rounds : list of dict
        Per round: ``units`` removed (order), ``estimates`` (estimated change
        of the summed robust-target loss over the folds after each removal),
        ``n_noisy_rows`` (rows that looked noisy), ``folds``
        (``(pool_rows, target_rows)`` per fold).
    """
    n_units = int(unit_of_row.max()) + 1
    fold_of_unit = make_folds(y, unit_of_row, n_folds, seed, classifier)
    n_splits = int(fold_of_unit.max()) + 1
    pairwise = method != "first_order" and check_pairwise_memory(n_units, n_splits)
    kept = np.ones(n_units, dtype=bool)
    removed, rounds, sizes = [], [], None
    auto = isinstance(k, str)
    for r in range(n_rounds):
        rows = np.flatnonzero(kept[unit_of_row])
        noisy = np.zeros(len(y), dtype=bool)
        if groups_out_of_fold:
            # whole groups: each row's loss under the model fitted without its
            # fold (its group left out: exact, and right for large groups)
            loss = np.zeros(len(y))
            for f in range(n_splits):
                in_fold = fold_of_unit[unit_of_row[rows]] == f
                pool, held = rows[~in_fold], rows[in_fold]
                est = fit_influence(pool, None).estimator_
                held = held[fold_target(y[pool], y[held], classifier)]
                if len(held) == 0:
                    continue
                loss[held] = own_losses(est, take(held), y[held], classifier)
            noisy[rows] = looks_noisy(loss[rows], y[rows], classifier)
        else:
            gi = fit_influence(rows, None)
            loo = approximate_loo_loss(gi, take(rows), y[rows], classifier)
            noisy[rows] = looks_noisy(loo, y[rows], classifier)
        if sizes is None:
            if auto:
                cap = len(_noisy_units(noisy[rows], unit_of_row[rows], n_units))
                cap = min(cap, n_units - n_splits)
            else:
                cap = k
            sizes = round_sizes(cap, n_rounds) if cap > 0 else []
        if r >= len(sizes):
            break
        fold_scores, folds = [], []
        for f in range(n_splits):
            in_fold = fold_of_unit[unit_of_row[rows]] == f
            pool, target = rows[~in_fold], rows[in_fold & ~noisy[rows]]
            target = target[fold_target(y[pool], y[target], classifier)]
            if len(target) == 0 or len(pool) == 0:
                continue
            folds.append((pool, target))
            fold_scores.append(
                _fold_quadratic(
                    fit_influence, pool, target, unit_of_row, method, pairwise
                )
            )
        b, op = accumulate(fold_scores, n_units, pairwise)
        order, est = greedy_select(
            b,
            op,
            sizes[r],
            exclude=np.flatnonzero(~kept),
            stop_early=auto or stop_early,
        )
        rounds.append(
            {
                "units": order,
                "estimates": est,
                "n_noisy_rows": int(noisy.sum()),
                "folds": folds,
            }
        )
        if len(order) == 0:
            break
        kept[order] = False
        removed.append(order)
    removed = np.concatenate(removed) if removed else np.zeros(0, dtype=int)
    return removed.astype(int), rounds


def _fold_quadratic(fit_influence, pool, target, unit_of_row, method, pairwise):
    """One fold's ``(units, b, K)``, scaled to the target rows' summed loss."""
    gi = fit_influence(pool, target)
    scale = float(len(target))
    units, local = np.unique(unit_of_row[pool], return_inverse=True)
    b = np.bincount(local, weights=gi.influence_, minlength=len(units)) * scale
    K = None
    if pairwise:
        # rows as units: the pool's rows are sorted, so its order is ``units``'
        groups = None if len(units) == len(pool) else local
        K = gi.interaction_matrix(groups, method=method, form="dense") * scale
    return units, b, K
