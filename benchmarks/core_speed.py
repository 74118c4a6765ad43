"""Core speed: GroupInfluence vs leave-group-out refits.

Part A -- on bundled real data (breast cancer binary LR, digits multinomial LR,
concrete Ridge), the CPU time of ``GroupInfluence.fit`` + ``score_groups`` for
100 random groups, against refitting the estimator once without each of those
100 groups, both measured in this run (ratio = refit time / GroupInfluence
time). Refits are timed at a tight solver tolerance (the fair ground truth) and
at the estimator's default tolerance. The tight refits also give the actual
target change, so the table reports how well the estimates track it.

Part B -- the time to compute ``influence_`` (``GroupInfluence.fit``) for a
binary LogisticRegression with n = 2000, d = 20 (synthetic correlated
features), median of repeats, with a breakdown of where the time goes (a
profile of ``fit`` itself: the functions it calls directly).

All times are CPU seconds of this process (``time.process_time``) with BLAS
and torch on one thread (``--threads 1``, the default): load from other jobs on
a shared machine inflates them far less than wall time (though shared caches
still slow every job down).

Usage::

    nice .venv/bin/python benchmarks/core_speed.py [--device auto|cpu|cuda]

Writes ``doc/results_core.rst``.
"""

import argparse
import cProfile
import os
import platform
import pstats
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
from sklearn_groupinf._interaction import resolve_device
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
            t0 = time.process_time()
            gi = GroupInfluence(est_t, method="interaction", device=device).fit(
                X_tr, y_tr, X_target=X_va, y_target=y_va
            )
            res = gi.score_groups(groups)
            t_gi = min(t_gi, time.process_time() - t0)
        first = res.first_order
        inter = res.estimate

        # refits without each group: tight tolerance (truth) and default tol
        f0 = target_metric(gi.estimator_, X_va, y_va, kind)
        actual = np.empty(N_GROUPS)
        t_tight = t_default = np.inf
        for _ in range(REPEATS):
            t0 = time.process_time()
            for g in range(N_GROUPS):
                keep = groups != g
                m = clone(est_t).fit(X_tr[keep], y_tr[keep])
                actual[g] = target_metric(m, X_va, y_va, kind) - f0
            t_tight = min(t_tight, time.process_time() - t0)
            t0 = time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # default tol may not converge
                for g in range(N_GROUPS):
                    keep = groups != g
                    clone(est).fit(X_tr[keep], y_tr[keep])
            t_default = min(t_default, time.process_time() - t0)

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
def _label(key):
    """``module.function`` of a pstats key (file, line, name)."""
    path, _, name = key
    if path == "~":  # a builtin
        return name
    parts = os.path.normpath(path).split(os.sep)
    if "sklearn_groupinf" in parts:
        parts = parts[parts.index("sklearn_groupinf") :]
    elif "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    else:
        parts = parts[-1:]
    module = ".".join(parts)[: -len(".py")] if path.endswith(".py") else path
    return f"{module}.{name}"


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
        t0 = time.process_time()
        gi = run_fit()
        totals.append(time.process_time() - t0)
    stat = gi.stationarity_

    # breakdown: profile GroupInfluence.fit itself and report the time of each
    # function it calls directly (cumulative, callers' share only), so the
    # table follows whatever fit does today instead of a hand-made replica
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(repeats):
        run_fit()
    prof.disable()
    stats = pstats.Stats(prof).stats
    fit_key = next(
        k
        for k in stats
        if k[2] == "fit"
        and k[0].endswith(os.path.join("sklearn_groupinf", "_group_influence.py"))
    )
    n_fit = stats[fit_key][1]
    fit_ct = stats[fit_key][3] / n_fit
    callees = []
    for key, (_, _, _, _, callers) in stats.items():
        if fit_key in callers:
            ct = callers[fit_key][3] / n_fit
            callees.append((ct, _label(key)))
    callees.sort(reverse=True)
    best = float(np.min(totals))
    rows = [
        [
            "GroupInfluence.fit total (not profiled)",
            f"{best * 1e3:.2f}",
            f"{np.median(totals) * 1e3:.2f}",
            "",
        ],
        ["GroupInfluence.fit under the profiler", f"{fit_ct * 1e3:.2f}", "", "100%"],
    ]
    shown = 0.0
    for ct, name in callees:
        if ct < 0.01 * fit_ct:
            continue
        shown += ct
        rows.append([f"  {name}", f"{ct * 1e3:.2f}", "", f"{100 * ct / fit_ct:.0f}%"])
    rows.append(
        [
            "  (rest: fit's own lines and calls under 1 %)",
            f"{(fit_ct - shown) * 1e3:.2f}",
            "",
            f"{100 * (fit_ct - shown) / fit_ct:.0f}%",
        ]
    )
    header = [
        "binary LR, n=2000, d=20 (correlated, rho=0.6)",
        "best [ms]",
        "median [ms]",
        "share",
    ]
    extra = (
        f"Relative gradient norm ||grad J|| / median ||q_i|| at sklearn's "
        f"default-tol solution before / after the Newton polish: "
        f"{stat[0]:.2g} / {stat[1]:.2g}. Best / median / worst of {len(totals)} "
        f"totals: {min(totals) * 1e3:.2f} / {np.median(totals) * 1e3:.2f} / "
        f"{max(totals) * 1e3:.2f} ms. The breakdown is the mean over the profiled "
        "fits; profiling adds overhead to every call, so its total is above "
        "the unprofiled one"
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
    load = "1-minute load average {:.1f} at the end, on {} cores".format(
        os.getloadavg()[0], os.cpu_count()
    )
    text = f"""\
.. Generated by benchmarks/core_speed.py -- do not edit by hand.

Core speed
==========

Produced by ``nice .venv/bin/python benchmarks/core_speed.py --device {args.device}``.
Environment: {env}. All times are CPU time of the benchmark process
(``time.process_time``, one BLAS/torch thread), which load from other jobs on
the shared machine inflates far less than wall time. Load during this run:
{load}.
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
on 1000 held-out rows. The breakdown profiles ``GroupInfluence.fit``
(``cProfile``) and lists each function it calls directly that takes at least
1 % of it, with its cumulative time.

{tb}

{extra}.
"""
    print()
    write_doc("results_core.rst", text)


if __name__ == "__main__":
    main()
