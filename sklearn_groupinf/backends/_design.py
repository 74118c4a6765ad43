"""The design matrix ``[X, 1]`` of a linear model without copying ``X``.

A linear backend works with ``x~_i = [x_i, 1]`` (features, then the intercept
column). Appending the column to ``X`` copies it (``n x d`` floats: 0.8 GB
for a million rows and 100 features); :class:`DesignMatrix` keeps ``X`` and
treats the column implicitly in the products a linear backend needs. Row
blocks (``D[rows]``) are formed on demand, and the Gram-type sums are taken
in row chunks (:func:`row_chunks`), so that no ``n x d`` temporary is made.
"""

import numpy as np

#: floats per row chunk of the chunked sums (about 32 MB of float64)
CHUNK_FLOATS = 1 << 22


def row_chunks(n, width, chunk_floats=None):
    """Slices of about ``chunk_floats / width`` rows covering ``range(n)``.

    ``chunk_floats`` defaults to :data:`CHUNK_FLOATS`.
    """
    chunk_floats = CHUNK_FLOATS if chunk_floats is None else chunk_floats
    step = max(1, chunk_floats // max(1, width))
    return [slice(i0, min(n, i0 + step)) for i0 in range(0, n, step)]


class DesignMatrix:
    """``[X, 1]`` for a float64 array ``X`` of shape ``(n, d)``, never formed.

    Supports what a linear backend does with its design matrix: ``D @ B``,
    ``A @ D`` (``A`` dense or scipy sparse), ``D[rows]`` (an ndarray), ``len``,
    ``shape``, and :meth:`row_sq_norms`. ``np.asarray(D)`` forms it.
    """

    __array_ufunc__ = None  # ``A @ D`` with an ndarray ``A`` calls __rmatmul__
    ndim = 2
    dtype = np.dtype(np.float64)

    def __init__(self, X):
        self.X = X
        self.shape = (X.shape[0], X.shape[1] + 1)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, rows):
        if isinstance(rows, tuple):  # anything but a row selection
            return np.asarray(self)[rows]
        Xr = self.X[rows]
        if Xr.ndim == 1:
            return np.append(Xr, 1.0)
        out = np.empty((Xr.shape[0], self.shape[1]))
        out[:, :-1] = Xr
        out[:, -1] = 1.0
        return out

    def __array__(self, dtype=None, copy=None):
        out = self[slice(None)]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __matmul__(self, B):
        B = np.asarray(B)
        out = self.X @ B[:-1]
        out += B[-1]
        return out

    def __rmatmul__(self, A):
        left = A @ self.X
        ones = np.asarray(A.sum(axis=-1)).reshape(left.shape[:-1] + (1,))
        return np.concatenate([np.asarray(left), ones], axis=-1)

    def rows_matmul(self, rows, B):
        """``D[rows] @ B`` without forming ``D[rows]``."""
        B = np.asarray(B)
        out = self.X[rows] @ B[:-1]
        out += B[-1]
        return out

    def row_sq_norms(self):
        """``||x~_i||^2 = ||x_i||^2 + 1`` for every row ``(n,)``."""
        return row_sq_norms(self.X) + 1.0


def row_sq_norms(X):
    """``||x_i||^2`` of the rows of an ndarray or :class:`DesignMatrix`."""
    if isinstance(X, DesignMatrix):
        return X.row_sq_norms()
    return np.einsum("ij,ij->i", X, X)
