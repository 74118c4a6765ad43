"""Greedy selection on a quadratic estimate: pure functions, no estimator state.

The estimate of a set ``S`` of units (examples or groups) is

    est(S) = b' 1_S + 1/2 1_S' K 1_S,

with ``b = a`` (first-order influences) for removal and ``b = -a`` for adding
(the quadratic term keeps its sign: ``eps_i eps_j = +1``). Greedy adds, at each
step, the unit with the best marginal change

    delta_j = b_j + 1/2 K_jj + sum_{i in S} K_ij,

keeping the running sum ``c = K 1_S`` up to date with one column per step
(``O(n)`` dense, ``O(n r)`` implicit). With ``K = 0`` it is top-k on ``b``.
"""

import numbers

import numpy as np


def resolve_budget(budget, n_pool, name="budget"):
    """An int in ``[1, n_pool]`` or a fraction in ``(0, 1]`` -> number of units."""
    if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, numbers.Real):
        raise TypeError(f"{name} must be an int or a float; got {budget!r}.")
    if isinstance(budget, numbers.Integral):
        k = int(budget)
        if k < 1:
            raise ValueError(f"{name} must be >= 1; got {budget!r}.")
        if k > n_pool:
            raise ValueError(
                f"{name}={budget!r} is larger than the pool of {n_pool} units; "
                f"pass at most {n_pool} (or a fraction in (0, 1])."
            )
        return k
    if not (0.0 < budget <= 1.0):
        raise ValueError(
            f"A fractional {name} must be in (0, 1]; got {budget!r}. Pass an int "
            "for a number of units."
        )
    return max(1, int(np.floor(budget * n_pool)))


def greedy_select(
    b,
    operator,
    k,
    *,
    goal="decrease",
    stop_early=False,
    exclude=None,
    strategy="auto",
    stats=None,
):
    """Greedy minimisation (or maximisation) of ``b' 1_S + 1/2 1_S' K 1_S``.

    Parameters
    ----------
    b : ndarray of shape (n,)
        Linear term, already signed for the action.
    operator : InteractionOperator or None
        Provides ``diag()`` and ``column(j)``; ``None`` means ``K = 0`` (top-k).
    k : int
        Number of units to select.
    goal : {"decrease", "increase"}
        Direction in which the estimate should move.
    stop_early : bool
        Stop when no remaining unit moves the estimate in ``goal``'s direction.
    exclude : array-like of int, optional
        Units that may not be selected.
    strategy : {"auto", "naive", "pruned"}, default="auto"
        How the marginal changes are kept up to date for an implicit operator
        ``K = W diag(sigma) W'``: ``"naive"`` adds one column of ``K`` per step
        (a pass over ``W``); ``"pruned"`` evaluates exactly only the units
        that bounds cannot rule out (:func:`_greedy_pruned`), with the same
        picks. ``"auto"`` prunes implicit operators of at least
        ``PRUNE_MIN_UNITS`` units. Dense operators always use ``"naive"``.
    stats : dict, optional
        Receives ``passes``: full passes over the factor ``W`` (the naive
        rule: one for ``diag(K)`` and one per pick), and for the pruned rule
        ``evaluated`` (units scored exactly).

    Returns
    -------
    order : ndarray of int
        Selected units in greedy order.
    estimates : ndarray
        ``est(S_t)`` after each step ``t``.
    """
    if goal not in ("decrease", "increase"):
        raise ValueError(f"goal must be 'decrease' or 'increase'; got {goal!r}.")
    if strategy not in ("auto", "naive", "pruned"):
        raise ValueError(
            f"strategy must be 'auto', 'naive' or 'pruned'; got {strategy!r}."
        )
    direction = 1.0 if goal == "decrease" else -1.0
    if _on_workers(b, operator):  # Dask: O(n) vectors stay on the workers
        return _greedy_select_dask(
            b, operator, k, direction, stop_early, exclude, stats=stats
        )
    b = np.asarray(b, dtype=np.float64)
    n = b.shape[0]
    available = np.ones(n, dtype=bool)
    if exclude is not None:
        available[np.asarray(exclude, dtype=int)] = False
    if operator is None:
        # K = 0: the greedy rule is top-k. A stable sort gives the same order
        # (ties by lowest index, as argmin) in O(n log n) instead of O(n k).
        score = np.where(available, direction * b, np.inf)
        order = np.argsort(score, kind="stable")[: min(k, int(available.sum()))]
        if stop_early:
            order = order[: int(np.searchsorted(score[order] >= 0, True))]
        return order.astype(int), np.cumsum(b[order])
    implicit = getattr(operator, "form", None) == "implicit"
    if strategy == "pruned" or (
        strategy == "auto" and implicit and n >= PRUNE_MIN_UNITS
    ):
        if not implicit:
            raise ValueError(
                "strategy='pruned' needs an implicit operator (K = W diag(s) W'); "
                "a dense one has no factor to bound with. Use strategy='auto'."
            )
        from ._lazy_rows import row_stats

        # one chunked pass gives the row norms and diag(K)
        sq, signed = row_stats(operator.W, operator.sigma)
        out = _greedy_pruned(
            b,
            operator.W,
            operator.sigma,
            0.5 * signed,
            k,
            direction,
            available,
            stop_early,
            norms=np.sqrt(np.maximum(sq, 0.0)),
            stats=stats,
        )
        if stats is not None:
            stats["passes"] += 1  # the one for the row norms and diag(K)
        return out
    half_diag = 0.5 * np.asarray(operator.diag())
    c = np.zeros(n)
    order, estimates = [], []
    total = 0.0
    for _ in range(min(k, int(available.sum()))):
        delta = b + half_diag + c
        score = np.where(available, direction * delta, np.inf)
        j = int(np.argmin(score))
        if stop_early and score[j] >= 0:
            break
        order.append(j)
        total += delta[j]
        estimates.append(total)
        available[j] = False
        if operator is not None:
            c += np.asarray(operator.column(j), dtype=np.float64)
    if stats is not None:  # diag(K), then one column per pick
        stats.update(passes=1 + len(order))
    return np.asarray(order, dtype=int), np.asarray(estimates, dtype=np.float64)


#: implicit operators with at least this many units use the pruned greedy
PRUNE_MIN_UNITS = 20_000
#: shortlist size of the pruned greedy on Dask rows (units gathered per checkpoint)
DASK_SHORTLIST = 16384


def _on_workers(b, operator):
    """Whether ``b`` is a Dask vector and ``K`` is zero or a factor over Dask rows."""
    if type(b).__module__.split(".")[0] not in ("dask", "dask_expr"):
        return False
    if operator is None:
        return True
    W = getattr(operator, "W", None)
    return getattr(getattr(W, "backend", None), "distributed", False)


def _greedy_select_dask(b, operator, k, direction, stop_early, exclude, *, stats):
    """:func:`greedy_select` for a Dask ``b`` (and a factor over Dask rows).

    Top-k from each chunk's own best units; the pruned greedy with its
    checkpoints computed and kept on the workers
    (:class:`~._dask_reduce.DaskCheckpoints`). Same picks and estimates as
    in memory; only ``O(k + shortlist)`` numbers come to the client.
    """
    from ._dask_reduce import DaskCheckpoints, dask_topk

    n = int(b.shape[0])
    excl = np.zeros(0, np.int64) if exclude is None else np.asarray(exclude, int)
    n_available = n - len(np.unique(excl))
    if operator is None:
        order, vals = dask_topk(direction * b, min(k, n_available), excl)
        if stop_early:
            order = order[: int(np.searchsorted(vals >= 0, True))]
            vals = vals[: len(order)]
        return order.astype(int), np.cumsum(direction * vals)
    log = getattr(operator.W.backend, "log", None)
    checkpoints = DaskCheckpoints(
        b,
        operator.W,
        operator.sigma,
        direction,
        excl,
        shortlist=DASK_SHORTLIST,
        log=log,
    )
    out = _greedy_pruned(
        None,
        operator.W,
        operator.sigma,
        None,
        k,
        direction,
        None,
        stop_early,
        stats=stats,
        checkpoints=checkpoints,
        n_available=n_available,
    )
    if stats is not None:
        stats["passes"] += 1  # the one for the row norms and diag(K)
    return out


def _greedy_pruned(
    b,
    W,
    sigma,
    half_diag,
    k,
    direction,
    available,
    stop_early,
    *,
    norms=None,
    shortlist=16384,
    stats=None,
    checkpoints=None,
    n_available=None,
):
    """The greedy rule of :func:`greedy_select` with bounds instead of passes.

    With ``K = W diag(sigma) W'`` (``sigma`` in ``{-1, +1}``) and ``v`` the sum
    of the rows ``w_i`` selected so far, the running sum is ``c_j = w_j'
    diag(sigma) v``. At a *checkpoint* (one pass over ``W``) every ``c_j`` is
    computed exactly for ``v = v0``; afterwards, by Cauchy-Schwarz,

        |c_j(v) - c_j(v0)| <= ||w_j|| * ||v - v0|| = ||w_j|| * d,

    so every unit's score lies in ``[s0_j - ||w_j|| d, s0_j + ||w_j|| d]``.
    A unit whose lower bound exceeds the smallest upper bound ``U`` cannot be
    the greedy pick; the others (at least the unit attaining ``U``) are
    evaluated exactly (``O(r)`` each) and the best is taken, ties to the lowest
    index, as :func:`greedy_select` does. At a checkpoint a shortlist ``L`` of
    units is kept, with its rows of ``W`` (``|L| x r``): those with
    ``s0_j - ||w_j|| D <= T``, ``T`` the smallest upper bound at radius ``D``
    (``D`` chosen so that ``L`` has about ``shortlist`` units). A unit outside
    ``L`` has a lower bound above ``T`` for every ``d <= D``, so ``L`` holds
    every candidate as long as ``d <= D`` and some unit of ``L`` still has an
    upper bound ``<= T`` (selected units leave ``L``); otherwise a new
    checkpoint is taken. The picks and estimates are those of the naive rule
    (up to round-off in the order of summation).

    ``W`` may be an ndarray or a lazy factor (``W @ u``, ``W[rows]``; see
    :mod:`._lazy_rows`); it is read by whole passes only at checkpoints.
    ``norms`` (the row norms ``||w_j||``) are computed when not given.
    ``stats``, when a dict, receives ``passes`` (full passes over ``W`` at
    checkpoints, plus one for the row norms when computed here) and
    ``evaluated`` (exact scores). ``checkpoints`` replaces the in-memory
    checkpoint step (:func:`_memory_checkpoints`), e.g. by one whose scores
    stay on Dask workers (:class:`~._dask_reduce.DaskCheckpoints`); then
    ``available`` may be ``None`` and ``n_available`` gives the number of
    units that may be picked.
    """
    passes = 0
    if checkpoints is None:
        if norms is None:
            from ._lazy_rows import row_stats

            norms = np.sqrt(np.maximum(row_stats(W, sigma)[0], 0.0))
            passes += 1
        checkpoints = _memory_checkpoints(
            direction * (b + half_diag),
            W,
            sigma,
            direction,
            available,
            norms,
            shortlist,
        )
    v = np.zeros(W.shape[1])
    n_steps = min(k, int(available.sum()) if n_available is None else n_available)
    order, estimates = [], []
    total = 0.0
    evaluated = 0
    short = None  # rows, their W rows, s0 (inf once picked), base, norms, T, v0
    D = None  # radius of the last shortlist
    for _ in range(n_steps):
        if short is not None:
            rows, WL, s0, base, nr, T, v0 = short
            d = float(np.linalg.norm(v - v0))
            ub = s0 + nr * d
            if d > D or not np.any(ub <= T):
                short = None
        if short is None:  # checkpoint: exact scores of every unit
            rows, s0, base, nr, D, T = checkpoints(v, order, D)
            passes += 1
            short = (rows, W[rows], s0.copy(), base, nr, T, v.copy())
            rows, WL, s0, base, nr, T, v0 = short
            d = 0.0
            ub = s0.copy()
        cand = np.flatnonzero(s0 - nr * d <= np.min(ub))
        exact = base[cand] + direction * (WL[cand] @ (sigma * v))
        evaluated += len(cand)
        best = int(np.argmin(exact))
        j, score = int(rows[cand[best]]), float(exact[best])
        if stop_early and score >= 0:
            break
        order.append(j)
        total += direction * score
        estimates.append(total)
        if available is not None:
            available[j] = False
        v += WL[cand[best]]
        s0[cand[best]] = np.inf  # picked: leaves the shortlist
    if stats is not None:
        stats.update(passes=passes, evaluated=evaluated)
    return np.asarray(order, dtype=int), np.asarray(estimates, dtype=np.float64)


def _memory_checkpoints(base, W, sigma, direction, available, norms, shortlist):
    """The checkpoint step of :func:`_greedy_pruned` for in-memory scores.

    ``checkpoint(v, picked, D)`` computes every unit's exact score at the
    running sum ``v`` (one pass over ``W``; units no longer ``available``
    get ``inf``), the shortlist radius (starting from ``D``), and returns
    the shortlisted units' ``(rows, scores, base scores, norms)`` with the
    radius and the smallest upper bound ``T``.
    """

    def checkpoint(v, picked, D):
        s_all = base + direction * (W @ (sigma * v))
        s_all[~available] = np.inf
        D = _shortlist_radius(s_all, norms, shortlist, start=D)
        T = np.min(s_all + norms * D)
        rows = np.flatnonzero(s_all - norms * D <= T)
        return rows, s_all[rows], base[rows], norms[rows], D, T

    return checkpoint


def _shortlist_radius(s, norms, size, start=None):
    """Largest radius ``D`` (of a doubling search) whose shortlist has ``<= size``.

    The shortlist for radius ``D`` holds the units whose lower bound
    ``s_j - ||w_j|| D`` does not exceed the smallest upper bound; it grows with
    ``D``. The search starts at ``start`` (the previous checkpoint's radius)
    and doubles or halves from there. Every shortlist for ``D <= 4 start``
    lies in the one for ``4 start`` (and the smallest upper bound is attained
    inside it), so the search counts on that subset after one pass over the
    ``n`` scores. Returns ``0`` when even the smallest radius tried overflows.
    """
    finite = np.isfinite(s)
    if not np.any(finite):
        return 0.0
    if not start:
        scale = float(np.max(norms[finite])) or 1.0
        start = (float(np.ptp(s[finite])) or 1.0) / scale * 1e-6
    cap = 4.0 * start
    T = np.min(s + norms * cap)
    sub = np.flatnonzero(s - norms * cap <= T)
    s_sub, n_sub = s[sub], norms[sub]

    def fits(D):
        if D <= cap:
            Tl = np.min(s_sub + n_sub * D)
            return np.count_nonzero(s_sub - n_sub * D <= Tl) <= size
        Tl = np.min(s + norms * D)
        return np.count_nonzero(s - norms * D <= Tl) <= size

    D = start
    if fits(D):
        for _ in range(40):
            if not fits(2.0 * D):
                break
            D *= 2.0
        return D
    for _ in range(40):
        D *= 0.5
        if fits(D):
            return D
    return 0.0


def greedy_refined(
    b, operator, k, evaluate, *, goal="decrease", stop_early=False, n_check=8
):
    """Greedy on an exact set function, with candidates ranked by the pairwise one.

    At each step the ``n_check`` remaining units with the best pairwise
    marginal change ``b_j + K_jj / 2 + sum_{i in S} K_ij`` (as in
    :func:`greedy_select`) are evaluated exactly as ``evaluate(S + [j])``, and
    the best of them is added. With ``n_check`` at least the pool size every
    remaining unit is evaluated: the greedy rule on ``evaluate`` itself.

    Parameters
    ----------
    b, operator : as in :func:`greedy_select`
    k : int
    evaluate : callable
        ``evaluate(units)`` -> estimated change for the set ``units`` (a list
        of unit indices), e.g. the group-Newton estimate of their union.
    goal : {"decrease", "increase"}
    stop_early : bool
        Stop when no evaluated unit moves the estimate in ``goal``'s direction.
    n_check : int
        Units evaluated exactly per step.

    Returns
    -------
    order : ndarray of int
    estimates : ndarray
        ``evaluate(S_t)`` after each step ``t``.
    """
    if goal not in ("decrease", "increase"):
        raise ValueError(f"goal must be 'decrease' or 'increase'; got {goal!r}.")
    if n_check < 1:
        raise ValueError(f"n_check must be >= 1; got {n_check!r}.")
    b = np.asarray(b, dtype=np.float64)
    n = b.shape[0]
    direction = 1.0 if goal == "decrease" else -1.0
    half_diag = np.zeros(n) if operator is None else 0.5 * np.asarray(operator.diag())
    c = np.zeros(n)
    available = np.ones(n, dtype=bool)
    order, estimates = [], []
    current = 0.0
    for _ in range(min(k, n)):
        score = np.where(available, direction * (b + half_diag + c), np.inf)
        m = min(n_check, int(available.sum()))
        top = np.argsort(score, kind="stable")[:m]
        values = np.array([evaluate(order + [int(j)]) for j in top])
        best = int(np.argmin(direction * values))
        if stop_early and direction * (values[best] - current) >= 0:
            break
        j = int(top[best])
        order.append(j)
        current = float(values[best])
        estimates.append(current)
        available[j] = False
        if operator is not None:
            c += np.asarray(operator.column(j), dtype=np.float64)
    return np.asarray(order, dtype=int), np.asarray(estimates, dtype=np.float64)


def quadratic_estimate(b, operator, idx):
    """``est(S) = b' 1_S + 1/2 1_S' K 1_S`` computed directly (for checks)."""
    idx = np.asarray(idx, dtype=int)
    lin = float(np.sum(np.asarray(b)[idx]))
    if operator is None or len(idx) == 0:
        return lin
    return lin + 0.5 * operator.quadratic_sum(idx)
