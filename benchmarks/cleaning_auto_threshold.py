"""How strict should ``budget="auto"`` be? Chosen on flips the benchmark never uses.

``GroupSelector(budget="auto")`` on a classifier's rows removes, in each of
its 3 rounds, every row whose approximate leave-one-out probability of its
label is below ``fraction / n_classes`` (the model refitted without the rows
removed so far). This script compares ``fraction`` in {0.25, 0.35, 0.5, 1}
(removing in 3 rounds without a cap), and the rule used before (``fraction``
1 with the first round's count as a cap, removed in 3 slices), against
cleanlab's own count (``find_label_issues`` on 5-fold out-of-sample
probabilities, no count given) on the protocol of
``benchmarks/cleaning_vs_cleanlab.py``, but with the flips of seeds 5..9:
that script uses seeds 0..4, so its ``GroupSelector auto`` figures are a
held-out check of the choice made here. The default,
``sklearn_groupinf._cleaning.AUTO_CHANCE_FRACTION``, is the fraction with the
most wins here.

Instead of these rules (one option at a time): ``--rounds 3 6 10`` compares
the uncapped fractions 0.25, 0.35 and 0.5 with up to that many rounds (each
stopping earlier when no row is below the threshold); ``--null`` the rules
that stop at the count a calibrated model expects below the threshold
(:func:`null_rules`); ``--prior`` chance as the label's frequency
(:func:`prior_rules`); ``--late`` a stricter threshold after the third
round (:func:`late_rules`). Each of these sets runs the default rule beside them.

Usage::

    nice .venv/bin/python benchmarks/cleaning_auto_threshold.py [--seeds 5 10]
    nice .venv/bin/python benchmarks/cleaning_auto_threshold.py \
        --seeds 5 15 --rounds 3 6 10
    nice .venv/bin/python benchmarks/cleaning_auto_threshold.py --seeds 5 15 --null
    nice .venv/bin/python benchmarks/cleaning_auto_threshold.py --seeds 5 15 --prior
    nice .venv/bin/python benchmarks/cleaning_auto_threshold.py --seeds 5 15 --late

Prints per set and noise rate the wins and mean number removed, then the
totals (wins against cleanlab's own count, mean test log-loss difference).
"""

import argparse
import time
import warnings

import numpy as np
from _common import fmt_table
from cleaning_variants import loo_proba
from cleaning_vs_cleanlab import (
    DATASETS,
    RATES,
    flip,
    load,
    lr,
    row_removal,
    test_scores,
)
from threadpoolctl import threadpool_limits

from sklearn_groupinf import GroupInfluence
from sklearn_groupinf._cleaning import approximate_loo_loss, round_sizes

RULES = (
    ("1 x chance, first-round cap (previous)", 1.0, True, 3, None),
    ("1 x chance", 1.0, False, 3, None),
    ("0.5 x chance", 0.5, False, 3, None),
    ("0.35 x chance", 0.35, False, 3, None),
    ("0.25 x chance", 0.25, False, 3, None),
)


def round_rules(rounds):
    """``--rounds``: the uncapped fractions 0.25/0.35/0.5 at each round count."""
    return tuple(
        (f"{f} x chance, {r} rounds", f, False, r, None)
        for f in (0.25, 0.35, 0.5)
        for r in rounds
    )


def null_rules():
    """``--null``: a round removes rows only beyond what the model expects.

    If the model refitted on the kept rows were right, row ``i``'s label
    would be drawn from its leave-one-out probabilities ``p_i``, and it
    would fall below the threshold ``tau`` with probability
    ``e_i = sum_c [p_ic < tau] p_ic``. ``"stop"``: a round removes every row
    below ``tau`` only while their number exceeds ``E = sum_i e_i``, else
    the rule stops; ``"excess"``: a round removes the ``round(N - E)`` rows
    lowest below ``tau`` (``N`` of them).
    """
    return (
        ("0.35 x chance, 3 rounds", 0.35, False, 3, None),
        ("0.35, null stop, 3 rounds", 0.35, False, 3, "stop"),
        ("0.35, null stop, 10 rounds", 0.35, False, 10, "stop"),
        ("0.35, null excess, 10 rounds", 0.35, False, 10, "excess"),
        ("0.5, null stop, 10 rounds", 0.5, False, 10, "stop"),
    )


def prior_rules():
    """``--prior``: chance is the label's frequency among the kept rows, not
    ``1 / n_classes`` (a row is removed when its leave-one-out probability is
    below ``fraction`` times its label's frequency)."""
    return (
        ("0.35 x chance, 3 rounds", 0.35, False, 3, None),
        ("0.35 x prior, 3 rounds", 0.35, False, 3, "prior"),
        ("0.5 x prior, 3 rounds", 0.5, False, 3, "prior"),
    )


def late_rules():
    """``--late``: the default's 3 rounds at ``0.35 / n_classes``, then up to
    7 more rounds at a stricter ``late / n_classes`` (stopping when no row is
    below it): the rows still far below chance after 3 rounds (flipped rows
    deep in another class where the classes separate well) are removed, the
    rows just below the default threshold where the classes overlap are not."""
    return (
        ("0.35 x chance, 3 rounds", 0.35, False, 3, None),
        ("0.35 x chance, then 0.1 up to 10 rounds", 0.35, False, 10, ("late", 0.1)),
        ("0.35 x chance, then 0.2 up to 10 rounds", 0.35, False, 10, ("late", 0.2)),
    )


def loo_label_proba(X, y, full=False):
    """The package's approximate leave-one-out probability of each label
    (``full``: and the ``(n, n_classes)`` leave-one-out probabilities)."""
    if not full:
        gi = GroupInfluence(lr()).fit(X, y)
        return np.exp(-approximate_loo_loss(gi, X, y, True))
    P = loo_proba(X, y)
    return P[np.arange(len(y)), np.searchsorted(np.unique(y), y)], P


def auto_removal(X, y, fraction, cap_first, n_rounds=3, mode=None):
    tau = fraction / len(np.unique(y))
    kept = np.ones(len(y), dtype=bool)
    removed, sizes = [], None
    for r in range(n_rounds):
        rows = np.flatnonzero(kept)
        if isinstance(mode, tuple) and r >= 3:
            tau = mode[1] / len(np.unique(y))
        if mode == "prior":
            _, enc = np.unique(y[rows], return_inverse=True)
            tau = fraction * (np.bincount(enc) / len(rows))[enc]
        if mode in (None, "prior") or isinstance(mode, tuple):
            p = loo_label_proba(X[rows], y[rows])
        else:
            p, P = loo_label_proba(X[rows], y[rows], full=True)
        below = np.flatnonzero(p < tau)
        below = below[np.argsort(p[below], kind="stable")]
        if mode in ("stop", "excess"):
            expected = float((P * (P < tau)).sum())
            if mode == "stop" and len(below) <= expected:
                break
            if mode == "excess":
                below = below[: max(0, int(round(len(below) - expected)))]
        if cap_first:
            if sizes is None:
                sizes = round_sizes(len(below), n_rounds) if len(below) else []
            if r >= len(sizes):
                break
            below = below[: sizes[r]]
        if len(below) == 0:
            break
        kept[rows[below]] = False
        removed.append(rows[below])
    return np.concatenate(removed) if removed else np.zeros(0, dtype=int)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs=2, default=(5, 10))
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--rounds",
        type=int,
        nargs="+",
        default=None,
        help="compare these numbers of rounds (up to, stopping when no row "
        "is below the threshold) instead of the default rules",
    )
    which.add_argument(
        "--null",
        action="store_true",
        help="compare the rules that stop at the count the model expects "
        "below the threshold (see null_rules)",
    )
    which.add_argument(
        "--prior",
        action="store_true",
        help="compare chance as the label's frequency (see prior_rules)",
    )
    which.add_argument(
        "--late",
        action="store_true",
        help="compare a stricter threshold after the third round (see late_rules)",
    )
    args = parser.parse_args()
    rules = RULES
    if args.rounds is not None:
        rules = round_rules(args.rounds)
    elif args.null:
        rules = null_rules()
    elif args.prior:
        rules = prior_rules()
    elif args.late:
        rules = late_rules()
    warnings.simplefilter("ignore")
    threadpool_limits(1)
    t0 = time.perf_counter()
    diffs = {name: [] for name, *_ in rules}
    rows = []
    for data in DATASETS:
        X, Xte, y, yte = load(data)
        for rate in RATES:
            per = {name: ([], []) for name, *_ in rules}
            own_n = []
            for seed in range(*args.seeds):
                rng = np.random.default_rng(seed)
                k = int(round(rate * len(y)))
                flipped = np.sort(rng.choice(len(y), size=k, replace=False))
                yn = flip(y, flipped, rng)
                own = row_removal("cleanlab own count", X, yn, y, k, flipped, seed)
                own_n.append(len(own))
                base = test_scores(X, yn, Xte, yte, own)[0]
                for name, fraction, cap, n_rounds, mode in rules:
                    removed = auto_removal(X, yn, fraction, cap, n_rounds, mode)
                    d = test_scores(X, yn, Xte, yte, removed)[0] - base
                    diffs[name].append(d)
                    per[name][0].append(d < -1e-12)
                    per[name][1].append(len(removed))
            line = [f"{data} {int(rate * 100)} %", f"{k}", f"{np.mean(own_n):.0f}"]
            line += [
                f"{int(np.sum(per[n][0]))} ({np.mean(per[n][1]):.0f})"
                for n, *_ in rules
            ]
            rows.append(line)
            print(" | ".join(line), flush=True)
    rows.append(
        ["all", "", ""]
        + [
            f"{int(np.sum(np.array(diffs[n]) < -1e-12))} / {len(diffs[n])}"
            for n, *_ in rules
        ]
    )
    rows.append(
        ["mean log-loss diff", "", ""]
        + [f"{np.mean(diffs[n]):+.4f}" for n, *_ in rules]
    )
    header = ["set, noise", "flipped", "own count"] + [n for n, *_ in rules]
    print(
        "wins against cleanlab's own count (mean number removed), seeds "
        f"{args.seeds[0]}..{args.seeds[1] - 1}"
    )
    print(fmt_table(header, rows))
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
