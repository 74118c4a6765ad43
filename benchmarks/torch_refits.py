"""Ground truth for a small torch MLP: ``leave_group_out`` time and agreement.

A 10-16-1 tanh MLP (193 parameters, logistic loss on one logit, weight decay
1e-2, float64) is trained by ``TorchModel`` on 1,500 rows of
``make_classification`` (10 standardised features); the target is log-loss
on 500 other rows; the groups are the 15 k-means clusters of the training
rows. ``leave_group_out`` refits the network without each cluster (warm-started
from the fitted module, finished by Newton steps to the stationarity of the
influence state) and the package's estimates
(``GroupInfluence.score_groups``) are compared with those refits: Spearman
rank correlation and median relative error.

Usage::

    python benchmarks/torch_refits.py --threads 1 --n-jobs 1
    python benchmarks/torch_refits.py --threads 2 --n-jobs 2

Times are wall-clock seconds; with ``--n-jobs 1`` the CPU seconds of
``leave_group_out`` are printed too (on a shared machine wall time depends on
the load).

``--quick`` runs 5 clusters on 600 rows (a smoke run); ``--seeds`` repeats
with other data and initialisation seeds; ``--n-jobs`` runs the refits in
parallel processes (``leave_group_out(n_jobs=...)``).
"""

import argparse
import time
import warnings

import numpy as np
import torch
from _common import fmt_table, set_up
from sklearn.cluster import KMeans
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler

from sklearn_groupinf import GroupInfluence
from sklearn_groupinf.evaluation import agreement, leave_group_out
from sklearn_groupinf.torch import TorchModel

METHODS = ("first_order", "interaction", "second_order", "newton")


def make_problem(n_train, n_groups, seed):
    X, y = make_classification(
        n_samples=n_train + 500,
        n_features=10,
        n_informative=6,
        flip_y=0.05,
        random_state=seed,
    )
    X = StandardScaler().fit_transform(X)
    Xtr, ytr, Xt, yt = X[:n_train], y[:n_train], X[n_train:], y[n_train:]
    groups = KMeans(n_groups, n_init=10, random_state=seed).fit_predict(Xtr)
    torch.manual_seed(seed)
    module = torch.nn.Sequential(
        torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
    )
    net = TorchModel(
        module, loss="binary_cross_entropy", weight_decay=1e-2, device="cpu"
    )
    return net, Xtr, ytr, Xt, yt, groups


def run(n_train, n_groups, seed, n_jobs):
    net, Xtr, ytr, Xt, yt, groups = make_problem(n_train, n_groups, seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # TorchModel's tol (GroupInfluence polishes); reliability flags
        warnings.simplefilter("ignore")
        gi = GroupInfluence(net).fit(Xtr, ytr, X_target=Xt, y_target=yt)
        scores = {m: gi.score_groups(groups, method=m) for m in METHODS}
    t_est = time.perf_counter() - t0
    c0 = time.process_time()
    refits = leave_group_out(
        net, Xtr, ytr, groups, X_target=Xt, y_target=yt, n_jobs=n_jobs
    )
    refits.cpu = time.process_time() - c0  # this process only (n_jobs=1: all)
    acc = {m: agreement(scores[m], refits) for m in METHODS}
    return gi, refits, acc, t_est


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=1500)
    ap.add_argument("--n-groups", type=int, default=15)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.n_train, args.n_groups = 600, 5
    set_up("cpu", args.threads)
    rows, acc_rows = [], []
    for seed in args.seeds:
        gi, refits, acc, t_est = run(args.n_train, args.n_groups, seed, args.n_jobs)
        rows.append(
            [
                str(seed),
                f"{gi.stationarity_[1]:.0e}",
                f"{t_est:.1f}",
                f"{refits.elapsed:.1f}",
                f"{refits.cpu:.1f}" if args.n_jobs == 1 else "-",
                str(int(np.sum(refits.n_iter))),
                f"{np.max(refits.stationarity):.0e}",
                f"{int(refits.converged.sum())}/{len(refits.converged)}",
            ]
        )
        for m, a in acc.items():
            acc_rows.append(
                [
                    str(seed),
                    m,
                    f"{a.spearman:.3f}",
                    f"{a.pearson:.3f}",
                    f"{a.median_relative_error:.3f}",
                ]
            )
    print(
        f"MLP 10-16-1 tanh, {gi.n_params_} parameters, {args.n_train} rows, "
        f"{args.n_groups} k-means groups, weight decay 1e-2, target log-loss on "
        "500 rows\n"
    )
    print(
        fmt_table(
            [
                "seed",
                "influence stationarity",
                "estimates s",
                "leave_group_out s",
                "its CPU s",
                "L-BFGS iterations",
                "max refit stationarity",
                "converged",
            ],
            rows,
        )
    )
    print()
    print(
        fmt_table(
            ["seed", "method", "Spearman", "Pearson", "median rel. error"], acc_rows
        )
    )


if __name__ == "__main__":
    main()
