"""Core speed: GroupInfluence vs leave-group-out refits.

Part A -- on bundled real data (breast cancer binary LR, digits multinomial LR,
concrete Ridge), the wall time of ``GroupInfluence.fit`` + ``score_groups`` for
100 random groups, against refitting the estimator once without each of those
100 groups, both measured in this run (ratio = refit time / GroupInfluence
time). Refits are timed at a tight solver tolerance (the fair ground truth) and
at the estimator's default tolerance. The tight refits also give the actual
target change, so the table reports how well the estimates track it.

Part B -- the time to compute ``influence_`` (``GroupInfluence.fit``) for a
binary LogisticRegression with n = 2000, d = 20 (synthetic correlated
features), median of repeats, with a breakdown of where the time goes.

Usage::

    nice .venv/bin/python benchmarks/core_speed.py [--device auto|cpu|cuda]

Writes ``doc/results_core.rst``.
"""

import argparse
import os
import platform
import time
import warnings

import numpy as np
from _common import fmt_table, write_doc
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import log_loss, mean_squared_error
from sklearn.model_selection import train_test_split

from sklearn_groupinf import GroupInfluence
from sklearn_groupinf._hessian import polish_parameters
from sklearn_groupinf._interaction import resolve_device
from sklearn_groupinf.backends import get_backend
from sklearn_groupinf.datasets import load_concrete

N_GROUPS = 100
REPEATS = 3  # timings are the best of REPEATS runs (shared machine)
SEED = 0


# --------------------------------------------------------------- helpers
def device_note(device):
    dev = resolve_device(device)
    name = "cpu (numpy)" if dev is None else str(dev)
    note = ""
    if dev is None or dev.type == "cpu":
        note = "no GPU available in this session; all figures are CPU figures"
    return name, note


def standardize(X_tr, *others):
    mu, sd = X_tr.mean(0), X_tr.std(0)
    sd[sd == 0] = 1.0
    return [(A - mu) / sd for A in (X_tr,) + others]


def target_metric(est, X, y, kind):
    if kind == "clf":
        return log_loss(y, est.predict_proba(X), labels=est.classes_)
    return mean_squared_error(y, est.predict(X))


def tight(est):
    """The same estimator with a tight solver tolerance (fair ground truth)."""
    params = est.get_params()
    new = clone(est)
    if "tol" in params:
        new.set_params(tol=1e-10)
    if "max_iter" in params and isinstance(est, LogisticRegression):
        new.set_params(max_iter=10_000)
    return new


# ------------------------------------------------------------ part A
def datasets():
    Xb, yb = load_breast_cancer(return_X_y=True)
    Xd, yd = load_digits(return_X_y=True)
    Xc, yc = load_concrete()
    return [
        (
            "breast cancer",
            "LogisticRegression (binary)",
            Xb,
            yb,
            LogisticRegression(C=1.0),
            "clf",
        ),
        (
            "digits",
            "LogisticRegression (multinomial)",
            Xd,
            yd,
            LogisticRegression(C=1.0),
            "clf",
        ),
        ("concrete", "Ridge(alpha=1)", Xc, yc, Ridge(alpha=1.0), "reg"),
    ]


def part_a(device):
    rows = []
    for name, model, X, y, est, kind in datasets():
        strat = y if kind == "clf" else None
        X_tr, X_va, y_tr, y_va = train_test_split(
            X, y, test_size=0.3, random_state=SEED, stratify=strat
        )
        X_tr, X_va = standardize(X_tr, X_va)
        rng = np.random.default_rng(SEED)
        groups = rng.permutation(np.arange(len(y_tr)) % N_GROUPS)
        est_t = tight(est)

        # GroupInfluence: fit + score_groups (100 groups); the machine is shared,
        # so every timing is the best of REPEATS runs (the refit loops too)
        t_gi = np.inf
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            gi = GroupInfluence(est_t, method="interaction", device=device).fit(
                X_tr, y_tr, X_target=X_va, y_target=y_va
            )
            res = gi.score_groups(groups)
            t_gi = min(t_gi, time.perf_counter() - t0)
        first = res.first_order
        inter = res.estimate

        # refits without each group: tight tolerance (truth) and default tol
        f0 = target_metric(gi.estimator_, X_va, y_va, kind)
        actual = np.empty(N_GROUPS)
        t_tight = t_default = np.inf
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            for g in range(N_GROUPS):
                keep = groups != g
                m = clone(est_t).fit(X_tr[keep], y_tr[keep])
                actual[g] = target_metric(m, X_va, y_va, kind) - f0
            t_tight = min(t_tight, time.perf_counter() - t0)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # default tol may not converge
                for g in range(N_GROUPS):
                    keep = groups != g
                    clone(est).fit(X_tr[keep], y_tr[keep])
            t_default = min(t_default, time.perf_counter() - t0)

        def mre(e):
            return float(np.median(np.abs(e - actual) / np.abs(actual)))

        rows.append(
            [
                name,
                model,
                f"{len(y_tr)} x {X_tr.shape[1]}",
                str(gi.n_params_),
                f"{t_gi:.4f}",
                f"{t_tight:.2f}",
                f"{t_tight / t_gi:.0f}x",
                f"{t_default:.2f}",
                f"{t_default / t_gi:.0f}x",
                f"{spearmanr(first, actual)[0]:.3f} / "
                f"{spearmanr(inter, actual)[0]:.3f}",
                f"{mre(first):.3f} / {mre(inter):.3f}",
            ]
        )
        print(
            f"  done: {name} (GI {t_gi:.3f} s, tight refits {t_tight:.2f} s, "
            f"default refits {t_default:.2f} s)",
            flush=True,
        )
    header = [
        "data",
        "estimator",
        "n_train x d",
        "P",
        "GI fit+score [s]",
        "refits tight [s]",
        "ratio tight",
        "refits default [s]",
        "ratio default",
        "Spearman 1st/inter",
        "med.rel.err 1st/inter",
    ]
    return header, rows


# ------------------------------------------------------------ part B
def synthetic_lr(n, d, seed, rho=0.6):
    rng = np.random.default_rng(seed)
    idx = np.arange(d)
    cov = rho ** np.abs(idx[:, None] - idx[None, :])
    L = np.linalg.cholesky(cov)
    X = rng.standard_normal((n, d)) @ L.T
    beta = rng.standard_normal(d) / np.sqrt(d) * 2.0
    p = 1.0 / (1.0 + np.exp(-(X @ beta + 0.3)))
    y = (rng.random(n) < p).astype(int)
    return X, y


def part_b(device, repeats=25):
    X, y = synthetic_lr(3000, 20, SEED)
    X_tr, y_tr, X_va, y_va = X[:2000], y[:2000], X[2000:], y[2000:]
    est = LogisticRegression(C=1.0)  # default tol: polishing is part of the cost

    def run_fit():
        return GroupInfluence(est, device=device).fit(
            X_tr, y_tr, X_target=X_va, y_target=y_va
        )

    for _ in range(3):  # warm-up (imports, BLAS threads, caches)
        gi = run_fit()
    totals = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        gi = run_fit()
        totals.append(time.perf_counter() - t0)
    stat = gi.stationarity_

    # breakdown: the same steps as GroupInfluence.fit, timed one by one
    steps = {}

    def tick(name, t0):
        steps.setdefault(name, []).append(time.perf_counter() - t0)

    for _ in range(repeats):
        t0 = time.perf_counter()
        run_fit()
        totals.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fitted = clone(est).fit(X_tr, y_tr)
        tick("sklearn estimator fit (lbfgs, default tol)", t0)
        t0 = time.perf_counter()
        backend = get_backend(
            fitted, X_tr, y_tr, X_target=X_va, y_target=y_va, target="default"
        )
        tick("backend set-up (design matrix, loss derivatives)", t0)
        t0 = time.perf_counter()
        Q = backend.removal_gradients()
        tick("removal gradients Q (n x P)", t0)
        t0 = time.perf_counter()
        s = polish_parameters(backend, Q, tol=1e-6)
        if s[1] != s[0]:
            Q = backend.removal_gradients()
        tick("stationarity check + Newton polish", t0)
        t0 = time.perf_counter()
        solver = backend.hessian_solver(0.0)
        tick("Hessian build + Cholesky", t0)
        t0 = time.perf_counter()
        U = solver.solve(Q.T).T
        tick("U = H^-1 Q (n solves)", t0)
        t0 = time.perf_counter()
        g = backend.target_gradient()
        _ = solver.solve(g)
        _ = backend.target_hessian_factor()
        _ = U @ g
        tick("target gradient/Hessian factor, influence = U g_f", t0)

    best = float(np.min(totals))
    rows = [
        [
            "GroupInfluence.fit total",
            f"{best * 1e3:.2f}",
            f"{np.median(totals) * 1e3:.2f}",
            "100%",
        ]
    ]
    ssum = 0.0
    for name, ts in steps.items():
        m = float(np.min(ts))
        ssum += m
        rows.append(
            [
                f"  {name}",
                f"{m * 1e3:.2f}",
                f"{np.median(ts) * 1e3:.2f}",
                f"{100 * m / best:.0f}%",
            ]
        )
    rows.append(
        [
            "  (sum of the steps above)",
            f"{ssum * 1e3:.2f}",
            "",
            f"{100 * ssum / best:.0f}%",
        ]
    )
    rows.append(
        [
            "  (rest: validation, clone; best total - sum of bests)",
            f"{(best - ssum) * 1e3:.2f}",
            "",
            f"{100 * (best - ssum) / best:.0f}%",
        ]
    )
    header = [
        "binary LR, n=2000, d=20 (correlated, rho=0.6)",
        "best [ms]",
        "median [ms]",
        "share of best",
    ]
    extra = (
        f"Relative gradient norm ||grad J|| / median ||q_i|| at sklearn's "
        f"default-tol solution before / after the Newton polish: "
        f"{stat[0]:.2g} / {stat[1]:.2g}. Best / median / worst of {len(totals)} "
        f"totals: {min(totals) * 1e3:.2f} / {np.median(totals) * 1e3:.2f} / "
        f"{max(totals) * 1e3:.2f} ms (the spread is load from other jobs on "
        "the shared machine; shares are computed from the best times)"
    )
    return header, rows, extra


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/torch threads (default 1: these problems are small "
        "and a shared machine makes multi-threaded BLAS spin)",
    )
    ap.add_argument("--no-doc", action="store_true", help="do not write doc/")
    args = ap.parse_args()
    dev_name, note = device_note(args.device)
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    torch.set_num_threads(args.threads)

    env = (
        f"device: {dev_name}; torch {torch.__version__}, BLAS/torch threads "
        f"{args.threads}; numpy {np.__version__}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    print(env)
    if note:
        print("NOTE:", note)

    print(
        f"\nA. GroupInfluence fit + score_groups ({N_GROUPS} random groups, "
        "method='interaction') vs leave-group-out refits",
        flush=True,
    )
    ha, ra = part_a(args.device)
    ta = fmt_table(ha, ra)
    print(ta)
    print("\nB. Time to compute influence_ (GroupInfluence.fit)", flush=True)
    hb, rb, extra = part_b(args.device)
    tb = fmt_table(hb, rb)
    print(tb)
    print(extra)

    if args.no_doc:
        return
    text = f"""\
.. Generated by benchmarks/core_speed.py -- do not edit by hand.

Core speed
==========

Produced by ``nice .venv/bin/python benchmarks/core_speed.py --device {args.device}``.
Environment: {env}.
{("**" + note + ".**") if note else ""}

A. Group scores vs leave-group-out refits
-----------------------------------------

Time of ``GroupInfluence(...).fit`` + ``score_groups`` for {N_GROUPS} random
groups (70 % train / 30 % target split, standardized features,
``method="interaction"``, estimator with ``tol=1e-10``) against refitting the
estimator once without each group, measured in the same run. "tight" refits use
``tol=1e-10`` (the ground truth of the accuracy columns); "default" refits use
the estimator's default tolerance. Ridge uses a direct solver, so its two refit
columns differ only by timing noise. Accuracy columns compare the
``first_order`` / ``interaction`` group estimates with the tight refits
(Spearman correlation; median relative error).

{ta}

B. Time to compute ``influence_``
---------------------------------

Binary ``LogisticRegression(C=1.0)`` (default ``tol``) on n = 2000 synthetic
rows with d = 20 correlated features (AR(1) correlation 0.6); target = log-loss
on 1000 held-out rows. The breakdown repeats the steps of
``GroupInfluence.fit`` one by one.

{tb}

{extra}.
"""
    print()
    write_doc("results_core.rst", text)


if __name__ == "__main__":
    main()
