"""Selection orchestration: pools, budgets, and adaptive rounds with refits.

One round scores the current pool with the current model's pairwise form and
runs the pure greedy rule of :mod:`._selection`. With ``n_rounds > 1`` the
budget is split into slices; after each slice the estimator is refitted on the
updated training data and the influence state recomputed, because the
quadratic estimate is a local expansion around the fitted parameters.
"""

import numbers

import numpy as np
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils import _safe_indexing
from sklearn.utils.validation import check_array

from ._estimators import pairwise_form
from ._groups import GroupMembership
from ._interaction import make_interaction
from ._results import Selection
from ._selection import greedy_select, resolve_budget


def _concat(A, B):
    if hasattr(A, "iloc"):
        import pandas as pd

        return pd.concat([A, B], ignore_index=True)
    return np.concatenate([np.asarray(A), np.asarray(B)], axis=0)


def _operator(gi, A, M, method):
    if A is None:
        return None
    return make_interaction(
        A,
        M,
        form=gi.interaction,
        max_dense_bytes=gi.max_dense_bytes,
        device=gi.device,
        dtype=gi.dtype,
        tile_size=gi.tile_size,
        factor=gi._state.middle_factor(method, M),
    )


def _round_terms(gi, method, action, membership, cand):
    """Signed linear term ``b`` and operator over the current pool."""
    st = gi._state
    if cand is not None:  # adding examples from outside the training set
        Xc, yc, wc = cand
        Qc = st.backend.candidate_gradients(Xc, yc, wc)
        b = -(Qc @ st.w)
        if method == "first_order":
            return b, None
        return b, _operator(gi, *st.gradient_rows(Qc), method)
    A, M = pairwise_form(method, st, membership)
    b = gi.influence_
    if membership is not None:
        b = membership.aggregate(b[:, None])[:, 0]
    if action == "add":
        b = -b
    return b, _operator(gi, A, M, method)


def _check_candidates(gi, X_candidates, y_candidates, candidate_weight):
    if X_candidates is None:
        if y_candidates is not None:
            raise ValueError("y_candidates was given without X_candidates.")
        return None
    if y_candidates is None:
        raise ValueError("y_candidates is required with X_candidates.")
    if not hasattr(X_candidates, "iloc"):
        X_candidates = check_array(
            X_candidates, dtype=np.float64, input_name="X_candidates"
        )
        if hasattr(gi, "n_features_in_") and X_candidates.shape[1] != gi.n_features_in_:
            raise ValueError(
                f"X_candidates has {X_candidates.shape[1]} features, but the "
                f"estimator was fitted with {gi.n_features_in_}."
            )
    y_candidates = np.asarray(y_candidates)
    if len(y_candidates) != len(X_candidates):
        raise ValueError(
            f"X_candidates has {len(X_candidates)} rows but y_candidates has "
            f"{len(y_candidates)}."
        )
    w = None if candidate_weight is None else np.asarray(candidate_weight, float)
    if w is not None and (w.shape != (len(y_candidates),) or np.any(w < 0)):
        raise ValueError("candidate_weight must be non-negative, one per candidate.")
    return X_candidates, y_candidates, w


def run_selection(
    gi,
    budget,
    *,
    groups,
    goal,
    action,
    method,
    X_candidates,
    y_candidates,
    candidate_weight,
    n_rounds,
    stop_early,
):
    """Implementation of :meth:`GroupInfluence.select` (see its docstring)."""
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
    cand = _check_candidates(gi, X_candidates, y_candidates, candidate_weight)
    if action == "remove" and cand is not None:
        raise ValueError("X_candidates are only used with action='add'.")
    if groups is not None and action == "add":
        raise ValueError("Group selection (groups=...) supports action='remove' only.")
    if cand is not None and method == "second_order":
        raise ValueError(
            "method='second_order' is not available for adding candidates; use "
            "'interaction' or 'first_order'."
        )
    X, y, sw = gi._train
    n = len(y)
    membership = None if groups is None else GroupMembership(groups, n)
    group_labels = None if membership is None else membership.labels
    unit_of_row = None if membership is None else membership.inverse
    n_pool = (
        len(cand[1])
        if cand is not None
        else membership.n_groups
        if membership is not None
        else n
    )
    k = resolve_budget(budget, n_pool)
    if n_rounds > k:
        raise ValueError(f"n_rounds={n_rounds} exceeds the budget of {k} units.")
    slices = [len(s) for s in np.array_split(np.arange(k), n_rounds)]

    f_start = gi.target_value_
    chosen, estimates, rounds, measured = [], [], [], [f_start]
    current = gi
    rows = np.arange(n)  # original index of each current training row
    pool = np.arange(n_pool)  # original index of each remaining unit
    extra = []  # candidates / up-weighted rows added so far (original ids)
    for r, k_r in enumerate(slices):
        cur_membership = None
        if membership is not None:
            cur_membership = GroupMembership(unit_of_row[rows], len(rows))
            pool = cur_membership.labels  # original group numbers still present
        cur_cand = None
        if cand is not None:
            cur_cand = tuple(
                None if a is None else _safe_indexing(a, pool) for a in cand
            )
        b, op = _round_terms(current, method, action, cur_membership, cur_cand)
        order, est = greedy_select(b, op, k_r, goal=goal, stop_early=stop_early)
        offset = measured[-1] - f_start
        # current training rows are ``rows`` followed by the up-weighted copies
        # ``extra`` (see _refit), so map greedy positions through both
        picked = (
            pool[order]
            if (cand is not None or membership is not None)
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
        current = _refit(gi, X, y, sw, rows, extra, cand)
        measured.append(current.target_value_)
    result = Selection(
        estimates=np.asarray(estimates),
        round=np.asarray(rounds, dtype=int),
        measured=np.asarray(measured),
        method=method,
        action=action,
        goal=goal,
    )
    chosen = np.asarray(chosen, dtype=int)
    if membership is not None:
        result["groups"] = group_labels[chosen]
        result["indices"] = (
            np.concatenate([membership.members(g) for g in chosen])
            if len(chosen)
            else chosen
        )
    else:
        result["indices"] = chosen
    return result


def _refit(gi, X, y, sw, rows, extra, cand):
    """A new fitted GroupInfluence on rows ``rows`` plus added units ``extra``."""
    est = gi.estimator
    if isinstance(est, FrozenEstimator):  # rounds need refits: use the inner model
        est = clone(est.estimator)
    new = clone(gi).set_params(estimator=est)
    Xn, yn = _safe_indexing(X, rows), np.asarray(y)[rows]
    swn = None if sw is None else np.asarray(sw)[rows]
    if extra:
        extra = np.asarray(extra, dtype=int)
        if cand is not None:
            Xa, ya, wa = (
                _safe_indexing(cand[0], extra),
                cand[1][extra],
                None if cand[2] is None else cand[2][extra],
            )
        else:  # up-weighting training rows = adding a copy
            Xa, ya = _safe_indexing(X, extra), np.asarray(y)[extra]
            wa = None if sw is None else np.asarray(sw)[extra]
        Xn, yn = _concat(Xn, Xa), np.concatenate([yn, ya])
        if swn is not None or wa is not None:
            swn = np.concatenate(
                [
                    np.ones(len(rows)) if swn is None else swn,
                    np.ones(len(ya)) if wa is None else wa,
                ]
            )
    X_t, y_t, w_t = gi._target_data
    return new.fit(Xn, yn, swn, X_target=X_t, y_target=y_t, target_weight=w_t)
