"""The paper's data-selection experiment (issue 3).

From a small random warm-up set (2 rows per class = 20 rows, stratified so
that every class is present), select k examples to ADD from the rest of a pool
(``GroupInfluence.select(k, action="add", X_candidates=..., y_candidates=...)``)
so as to decrease the log-loss on a validation split (the target), by
first-order (top-k) and interaction-aware greedy selection, one-shot and with
adaptive rounds (``n_rounds=10``: select k/10, refit, recompute). Then refit
``LogisticRegression`` on warm-up + selection and report the log-loss and
accuracy on a held-out TEST split (disjoint from the validation split), against
random selection of the same size. Mean over seeds; each seed draws its own
test / validation / pool split and warm-up set.

Data: scikit-learn's digits (1797 x 64, pixels / 16) and the 5,000-image MNIST
subset (``sklearn_groupinf.datasets.load_mnist_subset``). Full-resolution MNIST
multinomial LR has P = 7850 parameters: one ``GroupInfluence`` fit plus one
selection there takes minutes on two shared cores (it did not finish within
400 s when we timed it), far too slow for a grid of 5 seeds x 3 budgets x 4
selectors with 10 refits each. MNIST is therefore projected on its first 50
principal components (PCA fitted on the pool's unlabelled images, never on the
validation or test images), giving P = 510; ``--mnist-pca 0`` runs the raw
pixels. The printed table states what was run.

Usage::

    nice .venv/bin/python benchmarks/data_selection.py [--device auto|cpu|cuda]

Writes ``doc/results_selection.rst``.
"""

import argparse
import os
import platform
import time
import warnings

import numpy as np
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss

from sklearn_groupinf import GroupInfluence
from sklearn_groupinf._interaction import resolve_device
from sklearn_groupinf.datasets import load_mnist_subset

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, os.pardir, "doc")
ESTIMATOR = LogisticRegression(C=1.0, max_iter=2000)
SELECTORS = [  # (label, method, rounds?)
    ("random", None, False),
    ("first-order, one-shot", "first_order", False),
    ("interaction, one-shot", "interaction", False),
    ("first-order, rounds", "first_order", True),
    ("interaction, rounds", "interaction", True),
]


def fmt_table(header, rows):
    cols = [header] + [[str(c) for c in r] for r in rows]
    width = [max(len(r[i]) for r in cols) for i in range(len(header))]
    line = "  ".join("=" * w for w in width)
    out = [line, "  ".join(h.ljust(w) for h, w in zip(header, width)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, width)) for r in cols[1:]]
    out.append(line)
    return "\n".join(out)


def split(y, n_test, n_val, seed, per_class=2):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    test, val, pool = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    warm = np.concatenate([
        rng.choice(pool[y[pool] == c], per_class, replace=False)
        for c in np.unique(y)])
    cand = np.setdiff1d(pool, warm)
    return test, val, pool, warm, cand, rng


def evaluate(X, y, train_idx, val, test):
    m = clone(ESTIMATOR).fit(X[train_idx], y[train_idx])
    return (log_loss(y[test], m.predict_proba(X[test]), labels=m.classes_),
            accuracy_score(y[test], m.predict(X[test])),
            log_loss(y[val], m.predict_proba(X[val]), labels=m.classes_))


def run_dataset(name, X_raw, y, *, seeds, ks, n_rounds, n_test, n_val, pca,
                device, interaction, log):
    res = {}  # (k, label) -> list of (test_ll, acc, val_ll, est_val_ll, time)
    base = []
    P = None
    for seed in seeds:
        test, val, pool, warm, cand, rng = split(y, n_test, n_val, seed)
        X = X_raw
        if pca:
            X = PCA(pca, random_state=seed).fit(X_raw[pool]).transform(X_raw)
        t0 = time.perf_counter()
        gi = GroupInfluence(ESTIMATOR, device=device, interaction=interaction).fit(
            X[warm], y[warm], X_target=X[val], y_target=y[val])
        t_fit = time.perf_counter() - t0
        P = gi.n_params_
        f0 = gi.target_value_
        base.append(evaluate(X, y, warm, val, test))
        Xc, yc = X[cand], y[cand]
        for k in ks:
            if k > len(cand):
                continue
            for label, method, rounds in SELECTORS:
                t0 = time.perf_counter()
                est_val = np.nan
                if method is None:
                    pick = rng.choice(len(cand), k, replace=False)
                else:
                    sel = gi.select(k, action="add", method=method, X_candidates=Xc,
                                    y_candidates=yc,
                                    n_rounds=n_rounds if rounds else 1)
                    pick = sel.indices
                    est_val = f0 + sel.estimates[-1]
                    assert len(np.unique(pick)) == k
                dt = time.perf_counter() - t0 + (0.0 if method is None else t_fit)
                ll, acc, vll = evaluate(X, y, np.concatenate([warm, cand[pick]]),
                                        val, test)
                res.setdefault((k, label), []).append((ll, acc, vll, est_val, dt))
            log(f"  {name} seed {seed} k={k} done")
    return res, base, P


def table_rows(res, base, ks):
    b = np.array(base)
    rows = [["0 (warm-up only)", "-", f"{b[:, 0].mean():.3f} ± {b[:, 0].std():.3f}",
             f"{b[:, 1].mean():.3f}", f"{b[:, 2].mean():.3f}", "-", "-", "-"]]
    for k in ks:
        rand = res.get((k, "random"))
        if rand is None:
            rows.append([str(k), "(k exceeds the pool: skipped)", "", "", "", "", "",
                         ""])
            continue
        r_ll = np.array(rand)[:, 0]
        for label, _, _ in SELECTORS:
            a = np.array(res[(k, label)])
            wins = int(np.sum(a[:, 0] < r_ll)) if label != "random" else None
            rows.append([
                str(k), label, f"{a[:, 0].mean():.3f} ± {a[:, 0].std():.3f}",
                f"{a[:, 1].mean():.3f}", f"{a[:, 2].mean():.3f}",
                "-" if label == "random" else f"{np.mean(a[:, 3]):.3f}",
                "-" if wins is None else f"{wins}/{len(a)}",
                f"{a[:, 4].mean():.1f}",
            ])
    return rows


HEADER = ["k", "selection", "test log-loss (mean ± sd)", "test acc", "val log-loss",
          "val log-loss est.", "beats random", "time [s]"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--datasets", default="digits,mnist")
    ap.add_argument("--ks", default="100,300,1000")
    ap.add_argument("--seeds", type=int, default=5, help="seeds for digits")
    ap.add_argument("--mnist-seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--mnist-pca", type=int, default=50,
                    help="PCA components for MNIST (0: raw 784 pixels)")
    ap.add_argument("--interaction", default="implicit",
                    help="operator form passed to GroupInfluence (selections are "
                         "identical; implicit avoids building K)")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS/torch threads (default 1: on a shared, loaded "
                         "machine multi-threaded OpenBLAS eigh/Cholesky of these "
                         "small matrices is tens of times slower)")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    torch.set_num_threads(args.threads)

    dev = resolve_device(args.device)
    note = ("no GPU available in this session; all figures are CPU figures"
            if dev.type == "cpu" else "")
    env = (f"device: {dev}; torch {torch.__version__}, BLAS/torch threads "
           f"{args.threads}; numpy {np.__version__}; "
           f"{platform.machine()}, {os.cpu_count()} cores")
    print(env)
    if note:
        print("NOTE:", note)
    ks = [int(k) for k in args.ks.split(",")]
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:6.0f} s]{msg}", flush=True)

    sections = []
    for name in args.datasets.split(","):
        if name == "digits":
            X, y = load_digits(return_X_y=True)
            X = X / 16.0
            cfg = dict(n_test=360, n_val=270, pca=0, seeds=range(args.seeds))
            desc = (f"digits (1797 x 64, pixels / 16): test 360, validation 270, "
                    f"pool 1167 (warm-up 20, candidates 1147); P = 650; "
                    f"{args.seeds} seeds")
        elif name == "mnist":
            X, y = load_mnist_subset()
            cfg = dict(n_test=1000, n_val=500, pca=args.mnist_pca,
                       seeds=range(args.mnist_seeds))
            feat = (f"first {args.mnist_pca} principal components of the pixels "
                    "(PCA fitted on the pool only)" if args.mnist_pca
                    else "raw 784 pixels in [0, 1]")
            desc = (f"MNIST subset (5000 images), {feat}: test 1000, validation "
                    f"500, pool 3500 (warm-up 20, candidates 3480); "
                    f"{args.mnist_seeds} seeds")
        else:
            raise ValueError(f"unknown dataset {name!r}")
        log(f" {name}: {desc}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            res, base, P = run_dataset(
                name, X, y, ks=ks, n_rounds=args.rounds, device=args.device,
                interaction=args.interaction, log=log, **cfg)
        desc = desc.replace("P = 650", f"P = {P}") if name == "digits" else \
            desc + f"; P = {P}"
        t = fmt_table(HEADER, table_rows(res, base, ks))
        print(f"\n{name}: {desc}\n{t}\n", flush=True)
        sections.append((name, desc, t))
    total = time.perf_counter() - t_start
    print(f"total wall time {total:.0f} s")
    if args.no_doc:
        return
    cmd = (f"nice .venv/bin/python benchmarks/data_selection.py --device "
           f"{args.device} --seeds {args.seeds} --mnist-seeds {args.mnist_seeds} "
           f"--mnist-pca {args.mnist_pca} --rounds {args.rounds} --ks {args.ks}")
    body = "\n".join(
        f"{name}\n{'-' * len(name)}\n\n{desc}.\n\n{t}\n" for name, desc, t in sections)
    text = f"""\
.. Generated by benchmarks/data_selection.py -- do not edit by hand.

Data selection (adding examples)
================================

Produced by ``{cmd}`` (total wall time {total:.0f} s).
Environment: {env}.
{('**' + note + '.**') if note else ''}

From a random warm-up set of 20 rows (2 per class), ``GroupInfluence.select(k,
action="add", X_candidates=..., y_candidates=...)`` picks k examples from the
rest of the pool to decrease the log-loss on a validation split (the target);
``LogisticRegression(C=1.0)`` is then refitted on warm-up + selection and
evaluated on a separate test split. "rounds" is ``n_rounds={args.rounds}``
(select k/{args.rounds}, refit, recompute). "val log-loss" is the validation
loss after the refit; "val log-loss est." is the selection's own estimate of it
(``target_value_ + estimates[-1]``; with rounds, the last round's estimate
starting from the previous round's refit). "beats random" counts the seeds on
which the selector's test log-loss is below that of the random selection of
the same seed. "time" is the mean wall time of fit + selection (random: 0).

{body}"""
    path = os.path.join(DOC, "results_selection.rst")
    with open(path, "w") as fh:
        fh.write(text)
    print(f"wrote {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
