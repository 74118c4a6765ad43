"""Data cleaning: removing rows with flipped labels.

On digits (multinomial LR) and breast cancer (binary LR), flip the labels of
10 % / 20 % of the training rows (binary: 0 <-> 1; multiclass: a uniformly
drawn different class), then remove the same share of training rows chosen by
``GroupInfluence.select(budget, action="remove", goal="decrease")`` on the
validation log-loss (clean validation labels), refit and report the log-loss
and accuracy on a separate clean test split. Selectors: first-order (top-k)
and interaction-aware greedy, one-shot and with adaptive rounds
(``n_rounds=10``), against no removal, random removal of the same size, and
the oracle that removes exactly the flipped rows. "flipped share" is the
fraction of removed rows whose label had been flipped. Mean over seeds; each
seed draws its own split and flips.

Usage::

    nice .venv/bin/python benchmarks/cleaning.py [--device auto|cpu|cuda]

Writes ``doc/results_cleaning.rst``.
"""

import argparse
import time
import warnings

import numpy as np
from _common import fmt_table, set_up, write_doc
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss

from sklearn_groupinf import GroupInfluence

ESTIMATOR = LogisticRegression(C=1.0, max_iter=2000)
SELECTORS = [  # label, method, rounds
    ("no removal", "none", False),
    ("random removal", "random", False),
    ("first-order, one-shot", "first_order", False),
    ("interaction, one-shot", "interaction", False),
    ("first-order, rounds", "first_order", True),
    ("interaction, rounds", "interaction", True),
    ("oracle (flipped rows)", "oracle", False),
]


def prepare(name, seed):
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        X = X / 16.0
        n_test, n_val = 360, 270
    else:
        X, y = load_breast_cancer(return_X_y=True)
        n_test, n_val = 170, 114
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    test, val, train = (
        perm[:n_test],
        perm[n_test : n_test + n_val],
        perm[n_test + n_val :],
    )
    if name == "breast cancer":  # standardize with training statistics
        mu, sd = X[train].mean(0), X[train].std(0)
        X = (X - mu) / sd
    return X, y, train, val, test, rng


def flip(y, rate, rng):
    classes = np.unique(y)
    n_flip = int(round(rate * len(y)))
    idx = rng.choice(len(y), n_flip, replace=False)
    y = y.copy()
    for i in idx:
        y[i] = rng.choice(classes[classes != y[i]])
    return y, idx


def run(name, rate, seeds, n_rounds, device, log):
    out = {}
    P = n_train = None
    for seed in seeds:
        X, y, train, val, test, rng = prepare(name, seed)
        Xtr = X[train]
        ytr, flipped = flip(y[train], rate, rng)
        n_train = len(ytr)
        k = len(flipped)  # budget = the same share as flipped
        t0 = time.perf_counter()
        gi = GroupInfluence(ESTIMATOR, device=device).fit(
            Xtr, ytr, X_target=X[val], y_target=y[val]
        )
        t_fit = time.perf_counter() - t0
        P = gi.n_params_
        for label, method, rounds in SELECTORS:
            t0 = time.perf_counter()
            est = np.nan
            if method == "none":
                drop = np.zeros(0, dtype=int)
            elif method == "random":
                drop = rng.choice(n_train, k, replace=False)
            elif method == "oracle":
                drop = flipped
            else:
                sel = gi.select(
                    k,
                    action="remove",
                    goal="decrease",
                    method=method,
                    n_rounds=n_rounds if rounds else 1,
                )
                drop = sel.indices
                est = gi.target_value_ + sel.estimates[-1]
                assert len(np.unique(drop)) == k
            dt = (
                time.perf_counter()
                - t0
                + (t_fit if method in ("first_order", "interaction") else 0)
            )
            keep = np.setdiff1d(np.arange(n_train), drop)
            m = clone(ESTIMATOR).fit(Xtr[keep], ytr[keep])
            ll = log_loss(y[test], m.predict_proba(X[test]), labels=m.classes_)
            acc = accuracy_score(y[test], m.predict(X[test]))
            vll = log_loss(y[val], m.predict_proba(X[val]), labels=m.classes_)
            hit = np.isin(drop, flipped).mean() if len(drop) else np.nan
            out.setdefault(label, []).append((ll, acc, vll, est, hit, dt))
        log(f"  {name} {int(rate * 100)}% seed {seed} done")
    return out, P, n_train


def rows_of(out):
    rows = []
    base = np.array(out["no removal"])[:, 0]
    for label, method, _ in SELECTORS:
        a = np.array(out[label])
        wins = (
            "-"
            if method in ("none", "oracle")
            else f"{int(np.sum(a[:, 0] < base))}/{len(a)}"
        )
        rows.append(
            [
                label,
                f"{a[:, 0].mean():.3f} ± {a[:, 0].std():.3f}",
                f"{a[:, 1].mean():.3f}",
                f"{a[:, 2].mean():.3f}",
                "-" if np.all(np.isnan(a[:, 3])) else f"{np.nanmean(a[:, 3]):.3f}",
                "-" if np.all(np.isnan(a[:, 4])) else f"{np.nanmean(a[:, 4]):.2f}",
                wins,
                "-"
                if method in ("none", "random", "oracle")
                else f"{a[:, 5].mean():.2f}",
            ]
        )
    return rows


HEADER = [
    "removal",
    "test log-loss (mean ± sd)",
    "test acc",
    "val log-loss",
    "val log-loss est.",
    "flipped share",
    "beats no removal",
    "time [s]",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--rates", default="0.1,0.2")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/torch threads (default 1: shared, loaded machine)",
    )
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    dev, env, note = set_up(args.device, args.threads)
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:6.0f} s]{msg}", flush=True)

    sections = []
    for name in ["breast cancer", "digits"]:
        for rate in [float(r) for r in args.rates.split(",")]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UserWarning)
                out, P, n_train = run(
                    name, rate, range(args.seeds), args.rounds, args.device, log
                )
            model = "multinomial" if name == "digits" else "binary"
            title = (
                f"{name}, {int(rate * 100)} % labels flipped, remove "
                f"{int(rate * 100)} % ({int(round(rate * n_train))} of "
                f"{n_train} training rows); {model} LogisticRegression(C=1), "
                f"P = {P}; {args.seeds} seeds"
            )
            t = fmt_table(HEADER, rows_of(out))
            print(f"\n{title}\n{t}\n", flush=True)
            sections.append((title, t))
    total = time.perf_counter() - t_start
    print(f"total wall time {total:.0f} s")
    if args.no_doc:
        return
    cmd = (
        f"nice .venv/bin/python benchmarks/cleaning.py --device {args.device} "
        f"--seeds {args.seeds} --rounds {args.rounds}"
    )
    body = "\n".join(f"{title}\n\n{t}\n" for title, t in sections)
    text = f"""\
.. Generated by benchmarks/cleaning.py -- do not edit by hand.

Data cleaning (removing flipped labels)
=======================================

Produced by ``{cmd}`` (total wall time {total:.0f} s).
Environment: {env}.
{("**" + note + ".**") if note else ""}

A share of the training labels is flipped (binary: 0 <-> 1; digits: a random
other class); ``GroupInfluence.select(budget, action="remove",
goal="decrease")`` then removes the same share of training rows to decrease the
log-loss on a clean validation split, the model is refitted, and evaluated on a
clean test split. "rounds" is ``n_rounds={args.rounds}``. "val log-loss est."
is the selection's own estimate of the validation loss after removal
(``target_value_ + estimates[-1]``). "flipped share" is the fraction of removed
rows that were flipped; "beats no removal" counts seeds with a lower test
log-loss than no removal; "time" is GroupInfluence fit + selection. Splits:
breast cancer test 170 / validation 114 / train 285; digits test 360 /
validation 270 / train 1167.

{body}"""
    write_doc("results_cleaning.rst", text)


if __name__ == "__main__":
    main()
