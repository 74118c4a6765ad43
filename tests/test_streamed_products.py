"""The linear backend's streamed products equal the ones from the full ``Q``.

The backend keeps ``[X, 1]`` implicit (:class:`DesignMatrix`) and computes
``||q_i||``, ``Q V`` and ``M Q`` as passes over the design matrix; the
references here form the removal-gradient matrix ``Q`` row by row
(``removal_gradients``) and the Hessian as an explicit sum of per-row terms.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import (
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
    Ridge,
)

from sklearn_groupinf.backends import _design, get_backend
from sklearn_groupinf.backends._design import DesignMatrix, row_chunks


def _case(name, rng):
    n, d = 240, 5
    X = rng.standard_normal((n, d))
    if name == "logistic":
        y = (X[:, 0] + rng.standard_normal(n) > 0).astype(int)
        return LogisticRegression(C=0.7), X, y, rng.uniform(0.5, 2.0, n)
    if name == "multinomial":
        y = np.digitize(X[:, 0] + 0.5 * rng.standard_normal(n), [-0.5, 0.5])
        return LogisticRegression(C=2.0), X, y, None
    if name == "ridge_multi":
        Y = X @ rng.standard_normal((d, 2)) + rng.standard_normal((n, 2))
        return Ridge(alpha=3.0), X, Y, rng.uniform(0.5, 2.0, n)
    if name == "poisson":  # mean-form objective: q_i carries the penalty
        y = rng.poisson(np.exp(0.3 * X[:, 0]))
        return PoissonRegressor(alpha=0.1), X, y, rng.uniform(0.5, 2.0, n)
    y = X @ rng.standard_normal(d) + rng.standard_normal(n)
    return LinearRegression(fit_intercept=False), X, y, None


CASES = ["logistic", "multinomial", "ridge_multi", "poisson", "no_intercept"]


@pytest.mark.parametrize("name", CASES)
def test_streamed_products_match_full_matrix(name, monkeypatch):
    monkeypatch.setattr(_design, "CHUNK_FLOATS", 64)  # several row chunks
    rng = np.random.default_rng(3)
    est, X, y, sw = _case(name, rng)
    est.fit(X, y, sample_weight=sw)
    be = get_backend(est, X, y, sample_weight=sw, X_target=X[:40], y_target=y[:40])
    Q = np.vstack([be.removal_gradients([i]) for i in range(len(X))])
    P = be.n_params
    np.testing.assert_allclose(
        be.removal_gradient_norms(), np.linalg.norm(Q, axis=1), rtol=1e-12
    )
    V = rng.standard_normal((P, 3))
    np.testing.assert_allclose(be.removal_gradient_products(V), Q @ V, rtol=1e-11)
    np.testing.assert_allclose(
        be.removal_gradient_products(V[:, 0]), Q @ V[:, 0], rtol=1e-11
    )
    rows = np.array([7, 3, 100, 3])
    np.testing.assert_allclose(
        be.removal_gradient_row_products(rows, V), Q[rows] @ V, rtol=1e-11
    )
    np.testing.assert_allclose(
        be.removal_gradient_row_products(slice(10, 90), V), Q[10:90] @ V, rtol=1e-11
    )
    groups = rng.integers(0, 7, len(X))
    M = sp.csr_matrix((np.ones(len(X)), (groups, np.arange(len(X)))))
    np.testing.assert_allclose(
        be.aggregated_removal_gradients(M), M @ Q, rtol=1e-11, atol=1e-12
    )
    v = rng.standard_normal((2, len(X)))
    np.testing.assert_allclose(
        be.aggregated_removal_gradients(v), v @ Q, rtol=1e-11, atol=1e-12
    )
    # Hessian as a sum of per-row terms (group Hessians of single rows)
    H = sum(be.group_hessian([i]) for i in range(len(X)))
    if not be.spec.mean_form:
        H[np.diag_indices_from(H)] += be._D
    np.testing.assert_allclose(be.hessian(), H, rtol=1e-10, atol=1e-10)


def test_design_matrix_products():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    full = np.hstack([X, np.ones((50, 1))])
    D = DesignMatrix(X)
    B = rng.standard_normal((5, 3))
    A = rng.standard_normal((2, 50))
    np.testing.assert_allclose(D @ B, full @ B)
    np.testing.assert_allclose(D @ B[:, 0], full @ B[:, 0])
    np.testing.assert_allclose(A @ D, A @ full)
    np.testing.assert_allclose(D.__rmatmul__(sp.csr_matrix(A)), A @ full)
    np.testing.assert_array_equal(D[[3, 1]], full[[3, 1]])
    np.testing.assert_array_equal(D[7], full[7])
    np.testing.assert_array_equal(np.asarray(D), full)
    np.testing.assert_allclose(D.row_sq_norms(), np.sum(full**2, axis=1))
    np.testing.assert_allclose(D.rows_matmul([4, 0], B), full[[4, 0]] @ B)
    assert D.X is X  # no copy
    assert row_chunks(10, 3, chunk_floats=12) == [
        slice(0, 4),
        slice(4, 8),
        slice(8, 10),
    ]
