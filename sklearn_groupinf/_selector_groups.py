"""Whole-group cleaning: likelihood ratios of a label flip, two rules.

``GroupSelector(groups_as_units=True)`` with its default
``validation="auto"`` on a classifier fitted with a log-loss: the relabel
rule for two classes, the leave-group-out rule for more.

**Relabel rule** (two classes, ``validation="relabel"``). With two classes
"the group's labels were flipped" says what its true labels are, so the two
hypotheses can be compared as fitted models: ``J`` is the fitted objective
(``C sum_i s_i l_i + |w|^2 / 2`` for ``LogisticRegression``), ``J_G`` the
same with the labels of ``G`` swapped, and the score is the penalised
log-likelihood gained by refitting with them swapped,
``(J(theta) - min J_G) / C``. The minimum is taken over the fitted
``theta`` and the points ``theta + t d`` of a line search
(``t = 1, 1/2, 1/4, 1/8``) along the Newton step ``d = -H^{-1} grad J_G``
with the Hessian ``H`` of the fit; every point is evaluated exactly, so the
score is a lower bound of the refit's gain (equal to it when the step lands
on the refit) and a group in a region no other row constrains (where a
Newton step overshoots) is never overstated. Unlike the leave-group-out rule
it keeps the group in the fit under both labelings, so a flipped group is
not judged by a model that another flipped group still pulls (the
comparison on real sets is in the documentation's cleanlab benchmark page,
written by ``benchmarks/cleaning_vs_cleanlab.py``).

**Leave-group-out rule** (``validation="leave_group_out"``, the default for
more than two classes, where "flipped" leaves the true labels unknown: any of
the other classes). A group whose
labels were flipped as a block is fitted by a model that contains it (its own
loss is low), but the model *without* it predicts other labels there. So each
group ``G`` is judged by the model fitted without it, ``theta_{-G}``,
estimated from one fit by the group-Newton step
``theta + (H - H_G)^{-1} sum_{i in G} q_i`` (exact for a quadratic objective,
close to a refit for linear models), with the class prior put back to the
frequencies of all kept rows (removing a group that holds most of a class
changes the prior the model without it has learned; the probabilities are
re-weighted by ``pi_c / pi_{-G,c}``, class counts plus one).

The score of ``G`` is the log-likelihood ratio of "the group's labels are
wrong, the given label drawn uniformly from the other classes" against "the
labels are right" under those probabilities,

    LLR_G = sum_{i in G} [log((1 - p_i) / (K - 1)) - log p_i],

``p_i`` the probability of row ``i``'s given label, ``K`` the number of
classes. For a single row ``LLR > 0`` is the row rule of
:func:`~sklearn_groupinf._cleaning.looks_noisy` (label less likely than
chance). Groups are removed by decreasing ``LLR`` in rounds, every round
refitted without the groups removed so far; ``k="auto"`` removes the groups
with a positive ``LLR`` (at most as many as in the first round); both rules
share these rounds and this ``"auto"`` rule. Nothing here
differentiates a model: the backend gives gradients, Hessian solves and
log-probabilities.
"""

import numpy as np
from scipy.special import logsumexp

from ._cleaning import (
    LeaveGroupOutUnsupported,
    leave_group_out_log_proba,
    round_sizes,
)

__all__ = [
    "LeaveGroupOutUnsupported",
    "clean_leave_group_out",
    "flip_log_likelihood_ratio",
    "leave_group_out_log_proba",
]


def flip_log_likelihood_ratio(log_proba, y_idx, local, n_units):
    """``LLR_G`` of every group (module docstring), prior put back.

    ``log_proba`` from :func:`leave_group_out_log_proba`; ``y_idx`` the class
    index of each row's given label; ``local`` each row's group.
    """
    n_classes = log_proba[0].shape[1] if log_proba else 2
    counts = np.bincount(y_idx, minlength=n_classes).astype(float)
    llr = np.empty(n_units)
    for u, lp in enumerate(log_proba):
        rows = local == u
        rest = counts - np.bincount(y_idx[rows], minlength=n_classes)
        shift = np.log(counts + 1.0) - np.log(rest + 1.0)
        lp = lp + shift[None, :]
        lp = lp - logsumexp(lp, axis=1, keepdims=True)
        ly = np.minimum(lp[np.arange(len(lp)), y_idx[rows]], 0.0)
        wrong = np.log(np.maximum(-np.expm1(ly), 1e-300)) - np.log(n_classes - 1)
        llr[u] = float(np.sum(wrong - ly))
    if not np.all(np.isfinite(llr)):
        raise FloatingPointError(
            "The leave-group-out likelihood ratio is not finite for some group."
        )
    return llr


def group_flip_scores(gi, y, local, n_units):
    """``LLR_G`` of each group for a fitted ``gi`` on rows with labels ``y``."""
    classes = gi.estimator_.classes_
    y_idx = np.searchsorted(classes, y)
    log_proba = leave_group_out_log_proba(gi._state, local, n_units)
    return flip_log_likelihood_ratio(log_proba, y_idx, local, n_units)


#: step lengths of the line search along the Newton step of the relabel rule
RELABEL_STEPS = (1.0, 0.5, 0.25, 0.125)


def relabel_flip_scores(gi, y, local, n_units):
    """Relabel likelihood ratio of each group of a two-class fit (see module).

    ``J`` is the fitted objective, ``J_G`` the same with the labels of group
    ``G`` swapped. The score is ``(J(theta) - min J_G) * metric_scale``, the
    penalised log-likelihood gained by refitting with the group's labels
    swapped; ``min J_G`` is taken over ``theta`` and the points
    ``theta + t d`` (``t`` in :data:`RELABEL_STEPS`), ``d`` the Newton step of
    ``J_G`` with the Hessian of ``J``. Every point is evaluated exactly, so the
    score never overstates the refit's gain; it equals it when the Newton
    step lands on the refit.
    """
    backend, solver = gi._state.backend, gi._state.solver
    classes = gi.estimator_.classes_
    if len(classes) != 2:
        raise ValueError("the relabel rule needs exactly two classes.")
    theta = backend.get_theta()
    j0 = backend.objective(theta)
    swapped = classes[1 - np.searchsorted(classes, y)]
    order = np.argsort(local, kind="stable")
    bounds = np.searchsorted(local[order], np.arange(n_units + 1))
    scores = np.empty(n_units)
    for u in range(n_units):
        rows = order[bounds[u] : bounds[u + 1]]
        delta, grad = backend.relabel_change(rows, swapped[rows])
        step = solver.solve(grad)
        best = -delta
        for t in RELABEL_STEPS:
            th = theta - t * step
            delta_t, _ = backend.relabel_change(rows, swapped[rows], th, gradient=False)
            best = max(best, j0 - backend.objective(th) - delta_t)
        scores[u] = best * backend.metric_scale
    if not np.all(np.isfinite(scores)):
        raise FloatingPointError(
            "The relabel likelihood ratio is not finite for some group."
        )
    return scores


def clean_leave_group_out(
    fit_influence, y, unit_of_row, *, k, n_rounds, rule="leave_group_out"
):
    """Remove groups by leave-group-out flip likelihood ratio, in rounds.

    Parameters
    ----------
    fit_influence : callable
        ``fit_influence(rows, None)`` returns a ``GroupInfluence`` fitted on
        ``rows``.
    y : ndarray of shape (n_samples,)
    unit_of_row : ndarray of int of shape (n_samples,)
        Group (``0 .. n_units - 1``) of each row.
    k : int or "auto"
    n_rounds : int
    rule : {"leave_group_out", "relabel"}
        The group score: the leave-group-out flip ratio, or (two classes) the
        relabel ratio of :func:`relabel_flip_scores`.

    Returns
    -------
    removed : ndarray of int
        Removed groups in removal order.
    rounds : list of dict
        Per round: ``units`` removed, their ``flip_llr`` and ``n_noisy_units``
        (groups with a positive ratio).

    Raises
    ------
    LeaveGroupOutUnsupported
        When the backend gives no group-Newton step or class probabilities.
    """
    n_units = int(unit_of_row.max()) + 1
    kept = np.ones(n_units, dtype=bool)
    removed, rounds, sizes = [], [], None
    auto = isinstance(k, str)
    for r in range(n_rounds):
        rows = np.flatnonzero(kept[unit_of_row])
        units, local = np.unique(unit_of_row[rows], return_inverse=True)
        gi = fit_influence(rows, None)
        score = relabel_flip_scores if rule == "relabel" else group_flip_scores
        llr = score(gi, y[rows], local, len(units))
        noisy = llr > 0
        if sizes is None:
            cap = min(int(noisy.sum()), n_units - 2) if auto else k
            sizes = round_sizes(cap, n_rounds) if cap > 0 else []
        if r >= len(sizes):
            break
        order = np.argsort(-llr, kind="stable")[: sizes[r]]
        if auto:
            order = order[noisy[order]]
        rounds.append(
            {
                "units": units[order],
                "flip_llr": llr[order],
                "n_noisy_units": int(noisy.sum()),
            }
        )
        if len(order) == 0:
            break
        kept[units[order]] = False
        removed.append(units[order])
    removed = np.concatenate(removed) if removed else np.zeros(0, dtype=int)
    return removed.astype(int), rounds
