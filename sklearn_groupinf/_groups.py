"""Group labels <-> membership matrix, and segment sums over groups.

No other module handles raw group labels: everything downstream sees the
sparse ``(n_groups, n_samples)`` membership matrix ``M`` and per-group rows
``M @ A`` of per-example rows ``A``.
"""

import numbers

import numpy as np
import scipy.sparse as sp


def group_membership(groups, n_samples, backend=None):
    """The membership of ``groups`` for a fit on ``backend``.

    A backend whose training data are Dask arrays (``backend.distributed``)
    gets a :class:`~._dask_groups.DaskGroupMembership`: the labels stay on
    the cluster, coded chunk by chunk where the rows live, and only the
    ``n_groups`` unique labels and sizes come to the client. Otherwise a
    :class:`GroupMembership` (Dask labels of an in-memory fit are computed).
    """
    if getattr(backend, "distributed", False):
        return backend.membership(groups)
    return GroupMembership(groups, n_samples)


class GroupMembership:
    """Encode group labels of ``n_samples`` examples.

    Parameters
    ----------
    groups : array-like of shape (n_samples,)
        One label per training example, like the ``groups`` of ``GroupKFold``.
    n_samples : int
        Expected length.

    Attributes
    ----------
    labels : ndarray of shape (n_groups,)
        Sorted unique labels (the order of every per-group output).
    inverse : ndarray of shape (n_samples,)
        Group index of each example.
    sizes : ndarray of shape (n_groups,)
    matrix : scipy.sparse.csr_matrix of shape (n_groups, n_samples)
    """

    def __init__(self, groups, n_samples):
        groups = check_groups(groups, n_samples)
        self.labels, self.inverse = unique_labels(groups)
        self.sizes = np.bincount(self.inverse, minlength=len(self.labels))
        self.matrix = sp.csr_matrix(
            (np.ones(n_samples), (self.inverse, np.arange(n_samples))),
            shape=(len(self.labels), n_samples),
        )

    @property
    def n_groups(self):
        return len(self.labels)

    def aggregate(self, A):
        """Per-group sums ``M @ A`` of per-example rows ``A`` ``(n_samples, k)``."""
        if type(A).__module__.split(".")[0] == "dask":  # reduced on the workers
            from ._dask_reduce import group_sums

            return group_sums(self.matrix, A)
        return np.asarray(self.matrix @ A)

    def members(self, g):
        """Row indices of group number ``g``."""
        return np.flatnonzero(self.inverse == g)

    def rows_of(self, group_indices):
        """Row indices of the union of the groups numbered ``group_indices``."""
        return np.flatnonzero(np.isin(self.inverse, np.asarray(group_indices)))

    def rows_in_order(self, group_indices):
        """Rows of the groups ``group_indices``, group after group (in that order)."""
        if len(group_indices) == 0:
            return np.zeros(0, dtype=np.intp)
        return np.concatenate([self.members(g) for g in group_indices])


def check_groups(groups, n_samples):
    """Validate group labels: 1-D, right length, no missing values."""
    if groups is None:
        raise ValueError(
            "groups is None; pass one label per training example (shape "
            f"({n_samples},)), e.g. a data source or annotator id."
        )
    groups = np.asarray(groups)
    if groups.ndim != 1:
        if groups.ndim == 2 and 1 in groups.shape:
            groups = groups.reshape(-1)
    if groups.ndim != 1 or groups.shape[0] != n_samples:
        raise ValueError(
            f"groups must have shape ({n_samples},), one label per training "
            f"example; got shape {groups.shape}."
        )
    if groups.dtype.kind == "f" and np.any(~np.isfinite(groups)):
        raise ValueError(
            "groups contains NaN or infinite labels; give every example a group "
            "(e.g. fill missing values with a label of its own)."
        )
    if groups.dtype.kind in "mM" and np.any(np.isnat(groups)):
        raise ValueError(
            f"groups contains {int(np.isnat(groups).sum())} missing labels (NaT); "
            "give every example a group (e.g. fill missing dates)."
        )
    if groups.dtype.kind == "O":
        missing = [_is_missing(g) for g in groups]
        if any(missing):
            raise ValueError(
                f"groups contains {sum(missing)} missing labels (None, NaN, NaT or "
                "pandas.NA); give every example a group."
            )
    return groups


def _is_missing(g):
    """A missing label: None, NaN, NaT or ``pandas.NA`` (pandas not imported)."""
    if g is None or type(g).__name__ in ("NAType", "NaTType"):
        return True
    if isinstance(g, (np.datetime64, np.timedelta64)):
        return bool(np.isnat(g))
    return isinstance(g, numbers.Real) and g != g


def mixed_key(g):
    """Sort key of a label among labels of several types (see below)."""
    if isinstance(g, numbers.Real):
        return (0, "", g)
    if isinstance(g, str):
        return (1, "", g)
    return (2, type(g).__name__, g)


def unique_labels(groups):
    """``np.unique(groups, return_inverse=True)``, also for mixed label types."""
    try:
        labels, inverse = np.unique(groups, return_inverse=True)
    except TypeError:  # object labels of several types, e.g. 1 and "1"
        labels, inverse = _unique_mixed(groups)
    return labels, inverse.reshape(-1)


def _unique_mixed(groups):
    """``np.unique(groups, return_inverse=True)`` for labels of several types.

    Labels of different kinds stay distinct (``1`` and ``"1"`` are two
    groups): numbers first, then strings, then other types by type name, each
    sorted by value. Labels keep their type.
    """

    keys = [mixed_key(g) for g in groups]
    try:
        unique = sorted(set(keys))
    except TypeError:
        raise ValueError(
            "groups mixes labels that cannot be ordered (e.g. "
            f"{sorted({type(g).__name__ for g in groups})}); give all labels one "
            "type, e.g. groups.astype(str)."
        ) from None
    index = {k: i for i, k in enumerate(unique)}
    inverse = np.fromiter((index[k] for k in keys), dtype=np.intp, count=len(keys))
    labels = np.empty(len(unique), dtype=object)
    labels[:] = [k[2] for k in unique]
    return labels, inverse
