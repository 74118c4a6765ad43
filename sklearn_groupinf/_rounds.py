"""Selection orchestration: pools, budgets, and adaptive rounds with refits.

One round scores the current pool with the current model's pairwise form and
runs the pure greedy rule of :mod:`._selection`. With ``n_rounds > 1`` the
budget is split into slices; after each slice the estimator is refitted on the
updated training data and the influence state recomputed, because the
quadratic estimate is a local expansion around the fitted parameters.
"""

import numbers

import numpy as np
from sklearn.utils import _safe_indexing
from sklearn.utils.validation import _num_samples

from ._estimators import newton_estimates, pairwise_form
from ._groups import GroupMembership
from ._results import Selection
from ._selection import greedy_refined, greedy_select, resolve_budget

#: Candidates per greedy step that ``method="newton"`` evaluates exactly.
NEWTON_CHECK = 8


def _concat(A, B):
    if hasattr(A, "iloc"):
        import pandas as pd

        if not hasattr(B, "iloc"):  # validated candidates: an array, same columns
            B = pd.DataFrame(np.asarray(B), columns=A.columns)
        return pd.concat([A, B], ignore_index=True)
    if isinstance(A, list) and isinstance(B, list):
        # texts: strings or pre-tokenised id lists of different lengths
        return A + B
    return np.concatenate([np.asarray(A), np.asarray(B)], axis=0)


def _round_terms(fit, method, action, membership, cand, form=None):
    """Signed linear term ``b`` and operator over the current pool."""
    st = fit.state
    if cand is not None:  # adding examples from outside the training set
        Xc, yc, wc = cand
        Qc = st.backend.candidate_gradients(Xc, yc, wc)
        b = -(Qc @ st.w)
        if method == "first_order":
            return b, None
        A, M = st.gradient_rows(Qc)
        return b, fit.operator(A, M, method, form)
    A, M = pairwise_form(method, st, membership)
    b = fit.influence
    if membership is not None:
        b = membership.aggregate(b[:, None])[:, 0]
    if action == "add":
        b = -b
    return b, None if A is None else fit.operator(A, M, method, form)


class _Union:
    """One group: the union of rows ``rows`` (for ``newton_estimates``)."""

    n_groups = 1

    def __init__(self, rows):
        self.rows = rows

    def members(self, g):
        return self.rows


def _newton_evaluator(fit, membership):
    """``S -> newton estimate of removing the union of groups S``."""

    def evaluate(units):
        rows = membership.rows_of(units)
        return float(newton_estimates(fit.state, _Union(rows))[0])

    return evaluate


def _round_method(fit, method, membership, action, k, n_check):
    """Resolve ``"auto"`` for one round (``newton`` for affordable group removal)."""
    if method != "auto":
        return method
    if membership is None or action != "remove":
        return "interaction"
    # greedy evaluates up to n_check sets per step, of t groups at step t
    mean = membership.sizes.mean()
    n_eval = min(n_check, membership.n_groups)
    sizes = np.repeat(np.arange(1, k + 1) * mean, n_eval)
    return fit.auto_method(np.maximum(1, np.round(sizes)))


def run_selection(
    fit,
    budget,
    *,
    groups,
    goal,
    action,
    method,
    candidates,
    n_rounds,
    stop_early,
    n_check=NEWTON_CHECK,
):
    """Implementation of :meth:`GroupInfluence.select` (see its docstring).

    ``fit`` is the :class:`~._fitted.InfluenceFit` of the fitted estimator and
    ``candidates`` the validated ``(X, y, weight)`` or ``None``. ``method`` may
    be ``"auto"`` (resolved per round by :func:`_round_method`) or
    ``"newton"`` (group removal only: greedy on exact group-Newton estimates
    of the top ``n_check`` candidates of each step, ranked by ``interaction``).
    """
    if action not in ("remove", "add"):
        raise ValueError(f"action must be 'remove' or 'add'; got {action!r}.")
    if goal not in ("decrease", "increase"):
        raise ValueError(f"goal must be 'decrease' or 'increase'; got {goal!r}.")
    if (
        isinstance(n_rounds, bool)
        or not isinstance(n_rounds, numbers.Integral)
        or n_rounds < 1
    ):
        raise ValueError(f"n_rounds must be a positive integer; got {n_rounds!r}.")
    cand = candidates
    if method == "newton" and (groups is None or action != "remove"):
        raise ValueError(
            "method='newton' selects groups to remove (groups=..., "
            "action='remove'); for examples or adding, use 'interaction' or "
            "'second_order'."
        )
    if action == "remove" and cand is not None:
        raise ValueError("X_candidates are only used with action='add'.")
    if groups is not None and action == "add":
        raise ValueError("Group selection (groups=...) supports action='remove' only.")
    if cand is not None and method in ("second_order", "newton"):
        raise ValueError(
            "method='second_order' is not available for adding candidates; use "
            "'interaction' or 'first_order'."
        )
    X, y, sw = fit.train
    n = _num_samples(X)
    if n_rounds > 1 and getattr(fit.state.backend, "distributed", False):
        raise ValueError(
            f"n_rounds={n_rounds} refits on the remaining rows after each round, "
            "which is not available for Dask training data; use n_rounds=1 and "
            "fit a new GroupInfluence on the remaining rows (e.g. X[~g.isin("
            "selection.groups)]) for the next round."
        )
    membership = None if groups is None else fit.membership(groups)
    group_labels = None if membership is None else membership.labels
    unit_of_row = None if membership is None else membership.inverse
    n_pool = (
        _num_samples(cand[0])
        if cand is not None
        else membership.n_groups
        if membership is not None
        else n
    )
    k = resolve_budget(budget, n_pool)
    if n_rounds > k:
        raise ValueError(f"n_rounds={n_rounds} exceeds the budget of {k} units.")
    slices = [len(s) for s in np.array_split(np.arange(k), n_rounds)]

    f_start = fit.target_value
    chosen, estimates, rounds, measured, methods = [], [], [], [f_start], []
    current = fit
    # original index of each current training row (None: all, one round) and
    # of each remaining candidate: no n-sized array for one round (Dask)
    rows = np.arange(n) if n_rounds > 1 else None
    pool = np.arange(n_pool) if cand is not None else None
    extra = []  # candidates / up-weighted rows added so far (original ids)
    for r, k_r in enumerate(slices):
        cur_membership = None
        if membership is not None:
            if r == 0:  # every group (Dask labels stay on the cluster)
                cur_membership, pool = membership, np.arange(membership.n_groups)
            else:
                cur_membership = GroupMembership(unit_of_row[rows], len(rows))
                pool = cur_membership.labels  # original group numbers still present
        cur_cand = None
        if cand is not None:
            cur_cand = tuple(
                None if a is None else _safe_indexing(a, pool) for a in cand
            )
        method_r = _round_method(current, method, cur_membership, action, k_r, n_check)
        methods.append(method_r)
        pairwise = "interaction" if method_r == "newton" else method_r
        # newton only ranks candidates with the pairwise form: implicit suffices
        form = "implicit" if method_r == "newton" else None
        b, op = _round_terms(
            current, pairwise, action, cur_membership, cur_cand, form=form
        )
        if method_r == "newton":
            order, est = greedy_refined(
                b,
                op,
                k_r,
                _newton_evaluator(current, cur_membership),
                goal=goal,
                stop_early=stop_early,
                n_check=n_check,
            )
        else:
            order, est = greedy_select(b, op, k_r, goal=goal, stop_early=stop_early)
        offset = measured[-1] - f_start
        # current training rows are ``rows`` followed by the up-weighted copies
        # ``extra`` (see _refit), so map greedy positions through both
        picked = (
            pool[order]
            if (cand is not None or membership is not None)
            else order
            if rows is None
            else np.concatenate([rows, np.asarray(extra, dtype=int)])[order]
        )
        chosen.extend(picked.tolist())
        estimates.extend((offset + est).tolist())
        rounds.extend([r] * len(order))
        if len(order) < k_r or n_rounds == 1:
            break
        # refit on the updated data
        if action == "remove":
            if membership is not None:
                drop = np.isin(unit_of_row[rows], picked)
            else:
                drop = np.isin(rows, picked)
            rows = rows[~drop]
        else:
            extra.extend(picked.tolist())
            if cand is not None:
                pool = np.setdiff1d(pool, picked)
        current = _refit(fit, X, y, sw, rows, extra, cand)
        measured.append(current.target_value)
    result = Selection(
        estimates=np.asarray(estimates),
        round=np.asarray(rounds, dtype=int),
        measured=np.asarray(measured),
        method=methods[0] if len(set(methods)) == 1 else "+".join(methods),
        action=action,
        goal=goal,
    )
    chosen = np.asarray(chosen, dtype=int)
    if membership is not None:
        result["groups"] = group_labels[chosen]
        result["indices"] = membership.rows_in_order(chosen)
    else:
        result["indices"] = chosen
    return result


def _refit(fit, X, y, sw, rows, extra, cand):
    """A new fit on rows ``rows`` plus added units ``extra`` (an InfluenceFit)."""
    Xn = _safe_indexing(X, rows)
    yn = None if y is None else np.asarray(y)[rows]  # None: a CausalLM's texts
    swn = None if sw is None else np.asarray(sw)[rows]
    if extra:
        extra = np.asarray(extra, dtype=int)
        if cand is not None:
            Xa, ya, wa = (
                _safe_indexing(cand[0], extra),
                None if cand[1] is None else cand[1][extra],
                None if cand[2] is None else cand[2][extra],
            )
        else:  # up-weighting training rows = adding a copy
            Xa = _safe_indexing(X, extra)
            ya = None if y is None else np.asarray(y)[extra]
            wa = None if sw is None else np.asarray(sw)[extra]
        Xn = _concat(Xn, Xa)
        yn = None if yn is None else np.concatenate([yn, ya])
        if swn is not None or wa is not None:
            swn = np.concatenate(
                [
                    np.ones(len(rows)) if swn is None else swn,
                    np.ones(len(extra)) if wa is None else wa,
                ]
            )
    return fit.refit(Xn, yn, swn)
