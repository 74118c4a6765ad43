"""Order statistics and selection on Dask vectors, reduced where the data live.

Per-example vectors of a Dask fit (influences, row norms, greedy scores) are
Dask arrays of length ``n`` chunked like the training rows. The functions
here answer what the in-memory code asks of them -- a median, a top-k, the
greedy checkpoints of :func:`~._selection._greedy_pruned` -- from per-chunk
summaries (counts, minima, the chunk's own best units), so that only
``O(k + n_chunks)`` numbers come to the client, never ``n``:

* :func:`exact_median`: ``np.median`` of a Dask vector, exactly (the two
  middle order statistics found by histogram refinement, then the few
  values of the last window gathered);
* :func:`dask_topk`: the ``k`` smallest scores with ties to the lowest
  index (what a stable ``argsort`` gives), from each chunk's own ``k``
  smallest;
* :class:`DaskCheckpoints`: the checkpoint step of the pruned greedy (exact
  scores at the current running sum, the shortlist radius, the shortlisted
  units) with the scores kept on the workers.
"""

import numpy as np

#: a window of at most this many values is gathered and sorted
GATHER_MAX = 100_000
#: bins per refinement step of :func:`exact_median`
N_BINS = 1024


def is_dask(x):
    """Whether ``x`` is a Dask collection (without importing dask)."""
    return type(x).__module__.split(".")[0] in ("dask", "dask_expr")


def _per_block(fn, *arrays, combine=None):
    """``[fn(block_0, ..., offset_0), ...]`` over aligned 1-D Dask arrays.

    With ``combine``, ``combine(list of parts)`` is computed on the workers
    and only its result comes back.
    """
    import dask

    a0 = arrays[0]
    offsets = np.cumsum((0,) + a0.chunks[0])[:-1]
    blocks = [a.to_delayed().ravel() for a in arrays]
    parts = [
        dask.delayed(fn)(*(b[i] for b in blocks), int(offsets[i]))
        for i in range(len(offsets))
    ]
    if combine is not None:
        return dask.delayed(combine)(parts).compute()
    return list(dask.compute(*parts))


def tree_sum(parts, fan_in=4):
    """The sum of delayed ``parts`` as a tree of ``fan_in``-way sums (delayed).

    A worker holds at most ``fan_in`` parts at a time, not all of them.
    """
    import dask

    parts = list(parts)
    while len(parts) > 1:
        parts = [
            dask.delayed(sum)(parts[i : i + fan_in])
            for i in range(0, len(parts), fan_in)
        ]
    return parts[0]


def _combine_window(parts):
    return (
        sum(p[0] for p in parts),
        sum(p[1] for p in parts),
        min(p[2] for p in parts),
        max(p[3] for p in parts),
        sum(p[4] for p in parts),
    )


def _min_rows(parts):
    return np.min(np.asarray(parts), axis=0)


def _sum_rows(parts):
    return np.sum(np.asarray(parts), axis=0)


# -- median -----------------------------------------------------------------
def _window_stats(x, lo, hi, edges, _offset):
    x = x[np.isfinite(x)]
    below = int(np.count_nonzero(x < lo))
    w = x[(x >= lo) & (x <= hi)]
    if len(w) == 0:
        return below, 0, np.inf, -np.inf, np.zeros(max(len(edges) - 1, 0), int)
    hist = np.histogram(w, bins=edges)[0] if len(edges) else np.zeros(0, int)
    return below, len(w), float(w.min()), float(w.max()), hist


def _window_values(x, lo, hi, _offset):
    return x[(x >= lo) & (x <= hi)]


def _order_statistics(x, ranks):
    """Values of order ``ranks`` (0-based, ascending) of the 1-D Dask ``x``."""
    ranks = sorted(int(r) for r in ranks)
    lo, hi = -np.inf, np.inf
    for _ in range(200):
        if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
            edges = np.linspace(lo, hi, N_BINS + 1)
        else:
            edges = np.zeros(0)
        below, count, wmin, wmax, hist = _per_block(
            lambda b, o: _window_stats(b, lo, hi, edges, o), x, combine=_combine_window
        )
        if count <= GATHER_MAX or wmin == wmax:
            if wmin == wmax:
                return [wmin] * len(ranks)
            vals = np.sort(
                np.concatenate(_per_block(lambda b, o: _window_values(b, lo, hi, o), x))
            )
            return [float(vals[r - below]) for r in ranks]
        if not len(edges):  # first pass: the window becomes [min, max]
            lo, hi = wmin, wmax
            continue
        cum = below + np.cumsum(hist)  # values < edges[i + 1] (last: <=)
        first = int(np.searchsorted(cum, ranks[0], side="right"))
        last = int(np.searchsorted(cum, ranks[-1], side="right"))
        # values equal to an inner edge fall in the upper bin; a closed
        # window [edges[first], edges[last + 1]] holds both order statistics
        lo, hi = float(edges[first]), float(edges[min(last + 1, N_BINS)])
    raise RuntimeError("exact_median did not converge")  # pragma: no cover


def exact_median(x):
    """``np.median`` of a finite 1-D Dask array, reduced on the workers."""
    n = int(x.shape[0])
    if n == 0:
        return np.nan
    a, b = _order_statistics(x, [(n - 1) // 2, n // 2])
    return float(np.mean([a, b]))


class DistributedNorms:
    """Per-example norms kept on the workers; ``median()`` reduced there.

    Given to the stationarity measure instead of an ``(n,)`` ndarray: it
    only needs their median.
    """

    ndim = 1

    def __init__(self, norms):
        self.array = norms.persist()
        self.shape = tuple(int(s) for s in norms.shape)
        self._median = None

    def median(self):
        if self._median is None:  # the norms do not change: reduced once
            self._median = exact_median(self.array)
        return self._median


# -- top-k -------------------------------------------------------------------
def _block_topk(score, k, offset):
    order = np.argsort(score, kind="stable")[:k]
    order = order[np.isfinite(score[order])]
    return order + offset, score[order]


def _masked(x, idx):
    """``x`` with ``inf`` at the global positions ``idx`` (sorted ints)."""
    import dask.array as da

    if len(idx) == 0:
        return x
    idx = np.asarray(idx, dtype=np.int64)

    def block(xb, block_info=None):
        lo, hi = block_info[0]["array-location"][0]
        sel = idx[(idx >= lo) & (idx < hi)] - lo
        out = np.array(xb, dtype=np.float64, copy=True)
        out[sel] = np.inf
        return out

    return da.map_blocks(block, x, dtype=np.float64)


def dask_topk(score, k, exclude=None):
    """Positions of the ``k`` smallest finite ``score`` (ties: lowest index).

    Parameters
    ----------
    score : 1-D Dask array
    k : int
    exclude : array-like of int, optional
        Positions never returned.

    Returns
    -------
    order : ndarray of int
        What ``np.argsort(score, kind="stable")[:k]`` gives with ``exclude``
        set to ``inf`` (infinite scores left out).
    values : ndarray
        ``score[order]``.
    """
    excl = np.unique(np.asarray([] if exclude is None else exclude, dtype=np.int64))
    s = _masked(score.astype(np.float64), excl)
    parts = _per_block(lambda b, o: _block_topk(b, k, o), s)
    idx = np.concatenate([p[0] for p in parts]).astype(np.int64)
    val = np.concatenate([p[1] for p in parts])
    order = np.lexsort((idx, val))[:k]
    return idx[order], val[order]


def gather_rows(x, rows):
    """``x[rows]`` of a 1-D Dask array for a few positions ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros(0)
    srt = np.argsort(rows, kind="stable")
    vals = np.concatenate(
        _per_block(
            lambda b, o: np.asarray(b)[
                rows[srt][(rows[srt] >= o) & (rows[srt] < o + len(b))] - o
            ],
            x,
        )
    )
    out = np.empty(len(rows))
    out[srt] = vals
    return out


def group_sums(matrix, A):
    """``matrix @ A`` for a sparse ``(g, n)`` matrix and a Dask ``A`` ``(n, k)``.

    Each chunk's part ``M[:, chunk] @ A[chunk]`` is computed where the chunk
    lives; the ``(g, k)`` parts are summed.
    """
    import dask
    import scipy.sparse as sp

    M = sp.csc_matrix(matrix)
    A2 = A if A.ndim == 2 else A[:, None]
    bounds = np.cumsum((0,) + A2.chunks[0])
    blocks = A2.rechunk({1: -1}).to_delayed().ravel()

    def part(Ab, Mb):
        return np.asarray(Mb @ np.asarray(Ab, dtype=np.float64))

    parts = [
        dask.delayed(part)(blocks[i], M[:, bounds[i] : bounds[i + 1]])
        for i in range(len(blocks))
    ]
    out = tree_sum(parts).compute()
    return out if A.ndim == 2 else out[:, 0]


# -- pruned greedy checkpoints --------------------------------------------------
def _radius_min(s, nr, grid, _offset):
    f = np.isfinite(s)
    if not f.any():
        return np.full(len(grid), np.inf)
    return np.min(s[f][:, None] + nr[f][:, None] * grid[None, :], axis=0)


def _radius_count(s, nr, grid, T, _offset):
    f = np.isfinite(s)
    return np.count_nonzero(
        s[f][:, None] - nr[f][:, None] * grid[None, :] <= T[None, :], axis=0
    )


def _range(s, nr, _offset):
    f = np.isfinite(s)
    if not f.any():
        return np.inf, -np.inf, 0.0
    return float(s[f].min()), float(s[f].max()), float(nr[f].max())


def _short(s, base, nr, D, T, offset):
    sel = np.flatnonzero(s - nr * D <= T)
    return sel + offset, s[sel], base[sel], nr[sel]


class DaskCheckpoints:
    """Checkpoints of the pruned greedy for a factor over Dask rows.

    ``W = Q S`` with ``Q`` the removal gradients of a Dask backend: ``W u``
    is one pass over the data chunks. The units' fixed scores ``base =
    direction (b + K_jj / 2)`` and row norms ``||w_j||`` are computed in one
    pass and kept on the workers; a checkpoint computes the exact scores at
    the running sum ``v`` (a pass), keeps them on the workers, finds the
    shortlist radius from per-chunk minima and counts over a grid of radii,
    and gathers the shortlisted units only.
    """

    def __init__(self, b, W, sigma, direction, exclude, *, shortlist, log=None):
        self.W, self.sigma, self.direction = W, sigma, direction
        self.size = shortlist
        self.exclude = (
            np.zeros(0, np.int64) if exclude is None else np.asarray(exclude, np.int64)
        )
        self.log = log or (lambda msg: None)
        backend = W.backend
        WS = backend.removal_gradient_products(W.S)  # (n, r) Dask, never whole
        sq = (WS * WS).sum(axis=1)
        signed = (WS * WS * np.asarray(sigma)[None, :]).sum(axis=1)
        b = b if is_dask(b) else _like(np.asarray(b, np.float64), sq)
        base = direction * (b.astype(np.float64) + 0.5 * signed)
        norms = np.sqrt(np.maximum(sq, 0.0))
        import dask

        self.base, self.norms = dask.persist(base, norms)
        self.log("row norms and diag(K) over the chunks (one pass)")

    def __call__(self, v, picked, D):
        """``(rows, s0, base_rows, norms_rows, D, T)`` at running sum ``v``."""
        import dask

        prod = self.W.backend.removal_gradient_products(self.W.S @ (self.sigma * v))
        s = self.base + self.direction * prod
        s = _masked(s, np.union1d(self.exclude, np.asarray(picked, np.int64)))
        (s,) = dask.persist(s)
        D = self._radius(s, D)
        T = float(
            _per_block(
                lambda a, c, o: _radius_min(a, c, np.array([D]), o),
                s,
                self.norms,
                combine=_min_rows,
            )[0]
        )
        parts = _per_block(
            lambda a, bb, c, o: _short(a, bb, c, D, T, o), s, self.base, self.norms
        )
        rows, s0, base, nr = (np.concatenate([p[i] for p in parts]) for i in range(4))
        self.log(f"greedy checkpoint: shortlist of {len(rows)} units (one pass)")
        return rows.astype(np.int64), s0, base, nr, D, T

    def _radius(self, s, start):
        """The radius of :func:`~._selection._shortlist_radius`, on a grid.

        The largest ``D`` of a doubling (or halving) search from ``start``
        whose shortlist has at most ``size`` units; 0 if none fits.
        """
        if not start:
            r = _per_block(_range, s, self.norms)
            smin = min(p[0] for p in r)
            smax = max(p[1] for p in r)
            nmax = max(p[2] for p in r)
            if not np.isfinite(smin):
                return 0.0
            start = ((smax - smin) or 1.0) / (nmax or 1.0) * 1e-6
        grid = start * 2.0 ** np.arange(-40, 41)
        T = _per_block(
            lambda a, c, o: _radius_min(a, c, grid, o),
            s,
            self.norms,
            combine=_min_rows,
        )
        counts = _per_block(
            lambda a, c, o: _radius_count(a, c, grid, T, o),
            s,
            self.norms,
            combine=_sum_rows,
        )
        fits = counts <= self.size
        i0 = 40  # grid[i0] == start
        if fits[i0]:
            i = i0
            while i + 1 < len(grid) and fits[i + 1]:
                i += 1
            return float(grid[i])
        for i in range(i0 - 1, -1, -1):
            if fits[i]:
                return float(grid[i])
        return 0.0


def _like(a, x):
    """The ndarray ``a`` as a Dask array chunked like the 1-D Dask ``x``."""
    import dask.array as da

    return da.from_array(a, chunks=x.chunks)
