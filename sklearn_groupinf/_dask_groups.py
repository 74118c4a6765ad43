"""Group labels on a Dask cluster: codes per chunk, group sums as reductions.

With Dask training data, group labels (a Dask array, a Dask DataFrame
column, or an in-memory array) are never gathered row by row.
:class:`DaskGroupMembership` finds the sorted unique labels and the group
sizes by a reduction (each chunk's unique labels and counts, merged on the
workers: ``n_groups`` values come to the client), then codes every chunk
(the group number of each row) where it lives and keeps the codes on the
workers, chunked like ``X``. Everything the estimators ask of a membership
is answered from the codes:

* group sums ``M A`` of per-example rows: each chunk's sums over the groups
  present in it, merged group by group in a tree (:meth:`~DaskGroupMembership.reduce`);
* the membership matrix ``M`` is never formed: the Dask backend builds each
  chunk's columns on the worker;
* the rows of a group, or of a union of groups, are a :class:`GroupRows`
  (the group numbers and their total size, no row indices): the Dask backend
  answers their gradient sum and Hessian from per-group sums reduced in one
  pass;
* the rows of chosen groups (a selection's result) come in one pass.

:class:`DaskGroupMethods` holds the Dask backend's group methods (the
memberships it keeps, the per-group sums, the answers for unions of groups).
"""

import numpy as np
import scipy.sparse as sp

from ._dask_reduce import is_dask
from ._groups import check_groups, mixed_key, unique_labels


def tree_reduce(parts, combine, fan_in=8):
    """``combine`` of delayed ``parts`` as a tree of ``fan_in``-way combines."""
    import dask

    parts = list(parts)
    if len(parts) == 1:
        return dask.delayed(combine)(parts)
    while len(parts) > 1:
        parts = [
            dask.delayed(combine)(parts[i : i + fan_in])
            for i in range(0, len(parts), fan_in)
        ]
    return parts[0]


def group_column(groups, like):
    """Group labels as a 1-D Dask array of ``like``'s length.

    In-memory labels get the row chunks of ``like``; a Dask column keeps its
    own (its codes are rechunked, once).
    """
    import dask.array as da

    from ._dask_fit import _to_dask_array

    n = int(like.shape[0])
    if groups is None or not is_dask(groups):
        groups = check_groups(groups, n)  # refuses None, wrong shapes, NaN
        return da.from_array(groups, chunks=(like.chunks[0],))
    g = _to_dask_array(groups, "groups")
    if g.ndim == 2 and g.shape[1] == 1:
        g = g[:, 0]
    if g.ndim != 1 or g.shape[0] != n:
        raise ValueError(
            f"groups must have shape ({n},), one label per training example; "
            f"got a Dask array of shape {g.shape}."
        )
    return g


def _chunk_unique(b):
    b = check_groups(np.asarray(b).reshape(-1), len(b))  # NaN / None refused
    labels, inverse = unique_labels(b)
    return labels, np.bincount(inverse, minlength=len(labels))


def _merge_unique(parts):
    parts = [p for p in parts if len(p[0])] or parts[:1]
    labels = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    u, inv = unique_labels(labels)
    return u, np.bincount(inv, weights=counts, minlength=len(u)).astype(np.int64)


def _positions(labels, values):
    """Index of each of ``values`` (all present) in the sorted ``labels``."""
    try:
        pos = np.searchsorted(labels, values)
        if np.all(pos < len(labels)) and np.all(labels[pos] == values):
            return pos
    except TypeError:  # labels of several types: ordered by mixed_key
        pass
    index = {mixed_key(v): i for i, v in enumerate(labels)}
    return np.fromiter(
        (index[mixed_key(v)] for v in values), dtype=np.int64, count=len(values)
    )


def _chunk_codes(b, labels, dtype):
    lab_b, inv_b = unique_labels(np.asarray(b).reshape(-1))
    return _positions(labels, lab_b)[inv_b].astype(dtype)


def _group_part(fn, codes, *blocks):
    """``(present groups, fn(n_present, local codes, *blocks))`` of one chunk."""
    present, inv = np.unique(codes, return_inverse=True)
    return present, np.asarray(fn(len(present), inv.reshape(-1), *blocks))


def _merge_parts(parts):
    idx = np.concatenate([p[0] for p in parts])
    vals = np.concatenate([p[1] for p in parts])
    u, inv = np.unique(idx, return_inverse=True)
    out = np.zeros((len(u),) + vals.shape[1:])
    np.add.at(out, inv, vals)
    return u, out


def local_matrix(n_present, inv):
    """The chunk's membership matrix over its ``n_present`` groups (sparse)."""
    m = len(inv)
    return sp.csr_matrix((np.ones(m), (inv, np.arange(m))), shape=(n_present, m))


def _sums(n_present, inv, Ab):
    return local_matrix(n_present, inv) @ np.asarray(Ab, dtype=np.float64)


class DaskGroupMembership:
    """Group labels of Dask training rows, kept on the cluster (see the module).

    Parameters
    ----------
    groups : Dask array or Dask DataFrame column, or array-like
        One label per training row.
    like : Dask array
        The training ``X``: the codes get its row chunks.

    Attributes
    ----------
    labels : ndarray of shape (n_groups,)
        Sorted unique labels (as :class:`~._groups.GroupMembership`'s).
    sizes : ndarray of shape (n_groups,)
    codes : Dask array of shape (n_samples,)
        Group number of each row, persisted on the workers.
    """

    #: group sums are reductions over the chunks (read by the Dask backend)
    distributed = True

    def __init__(self, groups, like):
        import dask
        import dask.array as da

        g = group_column(groups, like)
        blocks = g.to_delayed().ravel()
        parts = [dask.delayed(_chunk_unique)(b) for b in blocks]
        self.labels, self.sizes = tree_reduce(parts, _merge_unique).compute()
        self.n_samples = int(g.shape[0])
        dtype = np.int32 if len(self.labels) < 2**31 - 1 else np.int64
        labels = dask.delayed(self.labels, pure=True)  # one copy in the graph
        codes = [
            da.from_delayed(
                dask.delayed(_chunk_codes)(b, labels, dtype), (int(c),), dtype=dtype
            )
            for b, c in zip(blocks, g.chunks[0])
        ]
        codes = da.concatenate(codes)
        if codes.chunks[0] != like.chunks[0]:  # the row chunks of X
            codes = codes.rechunk((like.chunks[0],))
        self.codes = codes.persist()

    @property
    def n_groups(self):
        return len(self.labels)

    @property
    def shape(self):
        """``(n_groups, n_samples)``, the shape of the membership matrix."""
        return (self.n_groups, self.n_samples)

    @property
    def matrix(self):
        """The membership itself: the Dask backend builds ``M`` per chunk."""
        return self

    @property
    def inverse(self):
        """Group number of each row: the Dask codes (not gathered)."""
        return self.codes

    def reduce(self, fn, *arrays):
        """``sum over chunks`` of per-group rows, as a dense ``(n_groups, ...)``.

        ``fn(n_present, local_codes, *blocks)`` gives one row per group
        present in the chunk (``local_codes``: each row's index among them);
        ``arrays`` are Dask arrays with the row chunks of :attr:`codes`.
        """
        import dask

        cb = self.codes.to_delayed().ravel()
        blocks = [a.to_delayed().ravel() for a in arrays]
        parts = [
            dask.delayed(_group_part)(fn, cb[i], *(b[i] for b in blocks))
            for i in range(len(cb))
        ]
        idx, vals = tree_reduce(parts, _merge_parts).compute()
        out = np.zeros((self.n_groups,) + vals.shape[1:])
        out[idx] = vals
        return out

    def aggregate(self, A):
        """Per-group sums ``M @ A`` of per-example rows ``A`` (Dask or in memory)."""
        import dask.array as da

        A2 = A if is_dask(A) else da.from_array(np.asarray(A, dtype=np.float64))
        one_d = A2.ndim == 1
        A2 = (A2[:, None] if one_d else A2).rechunk((self.codes.chunks[0], -1))
        out = self.reduce(_sums, A2)
        return out[:, 0] if one_d else out

    def members(self, g):
        """The rows of group number ``g`` (a :class:`GroupRows`)."""
        return GroupRows(self, [g])

    def rows_of(self, group_indices):
        """The rows of the union of groups ``group_indices`` (a :class:`GroupRows`)."""
        return GroupRows(self, group_indices)

    def mask(self, group_indices):
        """Whether each row is in one of ``group_indices`` (a Dask bool array)."""
        ids = np.unique(np.asarray(group_indices, dtype=np.int64))
        return self.codes.map_blocks(np.isin, ids, dtype=bool)

    def rows_in_order(self, group_indices):
        """Row indices of groups ``group_indices``, group after group (one pass)."""
        from ._dask_reduce import _per_block

        ids = np.asarray(group_indices, dtype=np.int64)
        if len(ids) == 0:
            return np.zeros(0, dtype=np.intp)
        srt = np.argsort(ids, kind="stable")
        sorted_ids = ids[srt]

        def part(c, offset):
            # this chunk's rows of the groups, group after group in ``ids``
            # order, and how many of each (only the rows come back)
            hit = np.flatnonzero(np.isin(c, sorted_ids))
            rank = srt[np.searchsorted(sorted_ids, c[hit])]
            order = np.lexsort((hit, rank))
            return hit[order] + offset, np.bincount(rank, minlength=len(ids))

        parts = _per_block(part, self.codes)
        pieces = [np.split(rows, np.cumsum(counts)[:-1]) for rows, counts in parts]
        out = [piece[j] for j in range(len(ids)) for piece in pieces]
        return np.concatenate(out).astype(np.intp)


class GroupRows:
    """The rows of a union of groups of a :class:`DaskGroupMembership`.

    Holds the group numbers and the number of rows, not the rows' indices:
    the Dask backend answers a group's gradient sum and Hessian from sums it
    reduced per group, or gathers the rows (:meth:`indices`) when it must.
    """

    def __init__(self, membership, groups):
        self.membership = membership
        self.groups = np.unique(np.asarray(groups, dtype=np.int64))

    def __len__(self):
        return int(self.membership.sizes[self.groups].sum())

    def mask(self):
        return self.membership.mask(self.groups)

    def indices(self):
        """The row indices (one pass; ``len(self)`` integers come back)."""
        return np.sort(self.membership.rows_in_order(self.groups))


class DaskGroupMethods:
    """The group methods of :class:`~._dask_backend.DaskLinearBackend`.

    Group memberships of Dask labels (kept per labels), and the Hessians and
    removal-gradient sums of every group reduced in one pass, from which the
    gradient sum and Hessian of any union of groups (:class:`GroupRows`)
    are answered. Uses the backend's ``_chunk_maker``, ``_args``,
    ``_cache``, ``_rows_backend`` and ``log``.
    """

    #: largest size (bytes) of the per-group Hessians kept by prepare_groups
    max_group_bytes = 2 * 1024**3

    #: Dask group labels whose codes (and per-group sums) are kept, by token
    max_memberships = 4

    def membership(self, groups):
        """The :class:`~._dask_groups.DaskGroupMembership` of ``groups``.

        Kept for labels given as a Dask collection (by its token: the same
        column gives the same codes), so that later calls reuse the codes
        and the per-group sums reduced for them.
        """
        if not is_dask(groups):
            return self._coded(groups)
        from dask.base import tokenize

        kept = self.__dict__.setdefault("_memberships", {})
        key = tokenize(groups)
        if key not in kept:
            while len(kept) >= self.max_memberships:
                kept.pop(next(iter(kept)))
            kept[key] = self._coded(groups)
        return kept[key]

    def _coded(self, groups):
        membership = DaskGroupMembership(groups, self.X)
        self.log(
            f"group labels coded on the workers: {membership.n_groups} groups "
            "(unique labels and counts, then the codes, kept there)"
        )
        return membership

    def prepare_groups(self, membership):
        """Reduce ``H_g`` and ``q_g`` of every group over the chunks (one pass).

        Exact group estimates need each group's curvature; gathering the
        rows of every group would read the data once per group. For a
        :class:`~._dask_groups.DaskGroupMembership` each chunk sums the
        Hessians and removal gradients of the groups present in it (its
        codes, on the worker) and the parts are merged group by group; kept
        while ``n_groups * P^2`` floats fit in :attr:`max_group_bytes`. The
        group methods below then answer for any union of groups
        (:class:`~._dask_groups.GroupRows`) from the sums.
        """
        if not getattr(membership, "distributed", False):
            return  # one union of rows, or labels in memory: rows gathered
        cached = self._cache.get("groups")
        if cached is not None and cached[0] is membership:
            return
        G, P = membership.n_groups, self.n_params
        if 8 * G * P * (P + 1) > self.max_group_bytes:
            return
        make = self._chunk_maker()

        def fn(n_present, inv, Xb, yb, sb=None):
            be = make(Xb, yb, sb)
            out = np.empty((n_present, P * P + P))
            order = np.argsort(inv, kind="stable")  # rows group after group
            ends = np.cumsum(np.bincount(inv, minlength=n_present))
            for j, rows in enumerate(np.split(order, ends[:-1])):
                out[j, : P * P] = be.group_hessian(rows).ravel()
            out[:, P * P :] = be.aggregated_removal_gradients(
                local_matrix(n_present, inv)
            )
            return out

        t = membership.reduce(fn, *self._args())
        self.log(f"Hessians and gradient sums of {G} groups over the chunks")
        self._cache["groups"] = (
            membership,
            t[:, : P * P].reshape(G, P, P),
            t[:, P * P :],
        )

    def _group(self, rows):
        """The group numbers of ``rows`` when their sums are reduced, else None."""
        if not isinstance(rows, GroupRows):
            return None
        self.prepare_groups(rows.membership)
        cached = self._cache.get("groups")
        if cached is None or cached[0] is not rows.membership:
            return None
        return rows.groups

    def cached_group_hessian(self, rows):
        g = self._group(rows)
        return None if g is None else self._cache["groups"][1][g].sum(axis=0)

    def group_removal_gradient(self, rows):
        g = self._group(rows)
        if g is None:
            return self.removal_gradients(rows).sum(axis=0)
        return self._cache["groups"][2][g].sum(axis=0)

    def group_hessian(self, rows):
        H = self.cached_group_hessian(rows)
        if H is not None:
            return H
        return self._rows_backend(rows).group_hessian(np.arange(len(rows)))

    def group_hessian_factor(self, rows, max_rank=None):
        if self._group(rows) is not None:
            return None  # the reduced H_g: a direct solve with H - H_g
        be = self._rows_backend(rows)
        return be.group_hessian_factor(np.arange(len(rows)), max_rank=max_rank)
