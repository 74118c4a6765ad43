"""Accuracy of the rank-r target curvature of K-FAC / EK-FAC as r grows.

With ``curvature="kfac"`` or ``"ekfac"`` the target's Gauss-Newton matrix
``H_f`` enters the interaction term ``1/2 U_S' H_f U_S`` (``U_S = H^{-1} q_S``)
through a rank-``r`` factor found by randomized range finding on target
GGN-vector products. This script measures, on a tanh MLP trained on the
digits data, how far the interaction term of 100 groups (50 class-coherent,
50 random, 10 rows each) is from the one with the full target GGN (dense,
from the same products), for three ways of finding the factor:

* ``plain``: randomized range finding on ``H_f`` itself (``r + 10`` test
  vectors, ``2 (r + 10)`` products);
* ``preconditioned``: the same on ``H^{-1/2} H_f H^{-1/2}`` (the metric of
  ``H^{-1}``), mapped back with ``H^{1/2}``;
* ``shifts`` (``target_sketch="shifts"``): the Nystrom approximation on ``r``
  random combinations of the training rows' shifts ``H^{-1} q_i``, exact on
  their span (``r`` products, one pass over the training rows, ``r`` solves).

Columns: the relative error of the groups' interaction terms
(``||est - full|| / ||full||``), the Spearman correlation of the groups'
interaction estimates (first order + interaction term) with those of the full
target GGN, the time to build the factor, and the memory of its test matrix
(``(r + 10) P`` or ``r P`` float64).
EK-FAC training curvature, damping 0.1 (per-example units) throughout.

Run::

    OMP_NUM_THREADS=1 python benchmarks/kfac_target_rank.py [--quick]

``--quick`` uses a smaller MLP (64-16-10, 1,210 parameters), 1,000 L-BFGS
iterations and fewer ranks.
"""

import argparse
import os
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from sklearn_groupinf import GroupInfluence, NotStationaryWarning  # noqa: E402
from sklearn_groupinf._estimators import quadratic_rows  # noqa: E402
from sklearn_groupinf._groups import GroupMembership  # noqa: E402
from sklearn_groupinf.backends._kfac_target import low_rank_target_ggn  # noqa: E402
from sklearn_groupinf.torch import TorchModel  # noqa: E402


def data(n_train):
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    perm = np.random.default_rng(0).permutation(len(y))
    X, y = X[perm], y[perm]
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def groups_of(y, rng, size=10):
    """50 class-coherent and 50 random groups of ``size`` rows (first 1000 rows)."""
    n = len(y)
    labels = np.full(n, -1)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in range(10)])
    coherent = order[: 50 * size]
    labels[coherent] = np.arange(50 * size) // size
    rest = rng.permutation(np.setdiff1d(np.arange(n), coherent))[: 50 * size]
    labels[rest] = 50 + np.arange(50 * size) // size
    return labels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    hidden, max_iter = (16, 1000) if args.quick else (32, 3000)
    n_train = 1000
    ranks = [4, 16, 64] if args.quick else [4, 8, 16, 32, 64, 128, 256]
    X, y, Xt, yt = data(n_train)
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 10)
    )
    net = TorchModel(module, weight_decay=1.0, device="cpu", max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotStationaryWarning)
        gi = GroupInfluence(net, curvature="ekfac", damping=0.1).fit(
            X, y, X_target=Xt, y_target=yt
        )
    st = gi._state
    be = st.backend
    P = be.n_params
    labels = groups_of(y, np.random.default_rng(1))
    member = GroupMembership(np.where(labels < 0, 100, labels), len(y))
    U = st.shifts(member)[:100]  # H^-1 q_S of the 100 groups (the rest: label 100)
    first = member.aggregate(gi.influence_[:, None])[:100, 0]
    t0 = time.perf_counter()
    H_f = be.target_hessian_products(np.eye(P))
    t_full = time.perf_counter() - t0
    full = 0.5 * np.einsum("ij,ij->i", U @ H_f, U)
    print(
        f"MLP 64-{hidden}-10 ({P} parameters), {n_train} training rows, "
        f"{len(yt)} target rows; EK-FAC, damping 0.1; stationarity "
        f"{gi.stationarity_[1]:.2g}. Full target GGN: {t_full:.1f} s "
        f"({P} products). Interaction term / first order (median |.|): "
        f"{np.median(np.abs(full)) / np.median(np.abs(first)):.2f}"
    )
    print()
    header = (
        f"{'variant':<15} {'r':>4} {'rel. err':>9} {'rho coh.':>9} "
        f"{'rho rand.':>9} {'time s':>7} {'MB':>6}"
    )
    print(header)
    print("-" * len(header))
    variants = {
        "plain": lambda r: low_rank_target_ggn(be.target_hessian_products, P, r),
        "preconditioned": lambda r: low_rank_target_ggn(
            be.target_hessian_products, P, r, precondition=st.solver
        ),
        "shifts": lambda r: be.target_hessian_factor(),  # the package's default
    }
    for variant, factor in variants.items():
        for r in ranks:
            be.target_rank = r
            t0 = time.perf_counter()
            B, M = factor(r)
            took = time.perf_counter() - t0
            est = 0.5 * quadratic_rows(U @ B, M)
            err = np.linalg.norm(est - full) / np.linalg.norm(full)
            rho = [
                spearmanr(first[s] + full[s], first[s] + est[s])[0]
                for s in (slice(0, 50), slice(50, 100))
            ]
            mb = (r + 10 * (variant != "shifts")) * P * 8 / 1e6
            print(
                f"{variant:<15} {r:>4} {err:>9.3f} {rho[0]:>9.3f} {rho[1]:>9.3f} "
                f"{took:>7.2f} {mb:>6.1f}"
            )


if __name__ == "__main__":
    main()
