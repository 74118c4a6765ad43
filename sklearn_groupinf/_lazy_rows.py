"""Per-example interaction factors kept as products, never as ``n x r`` arrays.

The interaction operator among the training examples is ``K = W diag(sigma)
W'`` with ``W = Q S``: the removal gradients ``Q`` (``n x P``) times a small
``P x r`` matrix ``S`` (``H^{-1}`` times the factor of the target Hessian).
For a linear model ``Q`` itself is never formed (``q_i = alpha_i (x) x~_i``)
and a product ``W u = Q (S u)`` is one pass over the design matrix, as cheap
as a pass over a stored ``W``; keeping ``W`` as :class:`RemovalProducts`
saves its ``n x r`` floats (0.8 GB for a million rows and ``r = 100``).

:class:`RemovalProducts` supports what :class:`InteractionOperator` and the
greedy rules do with ``W``: ``W @ u``, ``W.T @ v``, ``W[rows]``,
``W.compose(C)`` (``W C``, still lazy), ``shape``, and :meth:`row_stats`
(squared row norms and ``diag(K)`` in one chunked pass).
"""

import numpy as np

from .backends._design import row_chunks


class RemovalProducts:
    """``W = Q S`` for a backend's removal gradients ``Q``, formed by rows only.

    Parameters
    ----------
    backend : ModelBackend
        Gives ``removal_gradient_products(V)`` (``Q V``),
        ``aggregated_removal_gradients(M)`` (``M Q``) and
        ``removal_gradients(rows)``.
    S : ndarray of shape (P, r)
    """

    __array_ufunc__ = None  # ndarray @ RemovalProducts defers to us
    ndim = 2
    dtype = np.dtype(np.float64)

    def __init__(self, backend, S):
        self.backend = backend
        self.S = np.asarray(S, dtype=np.float64)
        self.shape = (backend.n_samples, self.S.shape[1])

    def __len__(self):
        return self.shape[0]

    def compose(self, C):
        """``W C`` (``C`` of shape ``(r, r2)``), itself lazy."""
        return RemovalProducts(self.backend, self.S @ np.asarray(C))

    def __matmul__(self, u):
        """``W u`` for ``u`` of shape ``(r,)`` or ``(r, k)``: one pass."""
        # np.asarray: a Dask backend's products are computed here
        return np.asarray(self.backend.removal_gradient_products(self.S @ u))

    def __getitem__(self, rows):
        if isinstance(rows, tuple):
            return np.asarray(self)[rows]
        fast = getattr(self.backend, "removal_gradient_row_products", None)
        if isinstance(rows, slice):  # a view of the data, no gather
            idx = rows if fast is not None else np.arange(self.shape[0])[rows]
            single = False
        else:
            idx = np.asarray(rows)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
            single = idx.ndim == 0
            idx = np.atleast_1d(idx)
        if fast is not None:  # Q[rows] S without forming Q[rows]
            out = fast(idx, self.S)
        else:
            out = self.backend.removal_gradients(idx) @ self.S
        return out[0] if single else out

    @property
    def T(self):
        return _Transposed(self)

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape)
        for rows in row_chunks(self.shape[0], self.backend.n_params):
            out[rows] = self[rows]
        return out if dtype is None else out.astype(dtype, copy=False)

    def row_stats(self, sigma):
        """``(||w_i||^2, w_i' diag(sigma) w_i)`` for every row, in row chunks."""
        n = self.shape[0]
        sq, signed = np.empty(n), np.empty(n)
        for rows in row_chunks(n, self.backend.n_params):
            _chunk_stats(self[rows], sigma, sq, signed, rows)
        return sq, signed


class _Transposed:
    """``W'`` of a :class:`RemovalProducts` (for ``W.T @ v``)."""

    def __init__(self, W):
        self.W = W
        self.shape = W.shape[::-1]

    def __matmul__(self, v):
        v = np.asarray(v, dtype=np.float64)
        agg = self.W.backend.aggregated_removal_gradients(np.atleast_2d(v.T))
        out = self.W.S.T @ np.asarray(agg).T  # (r, k)
        return out[:, 0] if v.ndim == 1 else out


def row_stats(W, sigma):
    """``(||w_i||^2, w_i' diag(sigma) w_i)`` of an ndarray or lazy ``W``.

    In row chunks: no ``n x r`` temporary.
    """
    if hasattr(W, "row_stats"):
        return W.row_stats(sigma)
    n = W.shape[0]
    sq, signed = np.empty(n), np.empty(n)
    for rows in row_chunks(n, max(1, W.shape[1])):
        _chunk_stats(W[rows], sigma, sq, signed, rows)
    return sq, signed


def _chunk_stats(R, sigma, sq, signed, rows):
    sq[rows] = np.einsum("ij,ij->i", R, R)
    if np.all(sigma > 0):
        signed[rows] = sq[rows]
    else:
        signed[rows] = np.einsum("ij,ij,j->i", R, R, sigma)
