"""Cleaning noisy labels without clean data: GroupSelector against cleanlab.

Protocol: five real tabular classification sets that load offline (digits,
breast cancer, German credit, wine, iris), a 70/30 stratified train/test split
(``random_state=0``), features standardised on the training part, 10 % or 20 %
of the training labels flipped to a uniformly drawn other class (seeds
0..n-1). Every method uses ``LogisticRegression(C=1)``; after cleaning, that
estimator is refitted on the kept rows and scored on the clean test labels.

Row methods (budget k = number of flipped rows where a method takes one):

* ``none``, ``oracle`` (removes exactly the flipped rows), ``random``;
* ``cleanlab top-k``: 5-fold out-of-sample probabilities
  (``cross_val_predict``), rows ranked by cleanlab's self-confidence
  (``cleanlab.rank.get_label_quality_scores(method="self_confidence")``), the
  k lowest removed;
* ``cleanlab own count``: ``cleanlab.filter.find_label_issues`` on the same
  probabilities, without a count (its own estimate of how many);
* ``CleanLearning``: ``cleanlab.classification.CleanLearning`` as is (its own
  cross-validation, count and refit);
* ``GroupSelector k``: ``GroupSelector(LogisticRegression(C=1), budget=k)``
  with its defaults (noisy labels only);
* ``GroupSelector auto``: the same with ``budget="auto"``;
* ``GroupSelector k 1 round``: the same with ``n_rounds=1`` (no refits
  between slices), to measure what the default's 3 rounds bring;
* ``GroupSelector k cross_fit``: ``validation="cross_fit"`` (the cross-fitted
  robust target with the interaction-aware greedy, the default for groups)
  on single rows, to compare with the default leave-one-out ranking;
* ``GI clean target``: ``GroupInfluence(...).fit(X, y, X_target=Xv,
  y_target=yv_clean).select(k, n_rounds=5)`` with a clean target, a stratified
  20 % of the training rows with their true labels (an upper reference: it
  uses clean labels the others do not have).

Whole groups: 20 k-means clusters of the training rows, the labels of 2
clusters flipped (to another class); recall@2 of the flipped clusters and test
log-loss for ``GroupSelector(groups_as_units=True, budget=2)`` (default: the
relabel likelihood ratio with two classes, the leave-group-out flip ratio
with more; ``validation="leave_group_out"`` on every set; and
``validation="cross_fit"``, the cross-fitted robust target with the
interaction-aware greedy), cleanlab's
self-confidence averaged per cluster (the 2 lowest), the clean-target
``GroupInfluence.select(2, groups=...)``, and ``exact leave-group-out``: the
leave-group-out rule with one exact refit per group in place of the Newton
step (a reference for that statistic, not a competitor). ``--group-seeds``
sets the number of seeds of this part (default: ``--seeds``).

Usage::

    nice .venv/bin/python benchmarks/cleaning_vs_cleanlab.py [--quick] \
        [--seeds 5] [--group-seeds 20]

Prints the tables and paired win counts; writes doc/cleaning_vs_cleanlab.rst.
"""

import argparse
import time
import warnings

import numpy as np
import sklearn
from _common import fmt_table, write_doc
from sklearn.cluster import KMeans
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import (
    StratifiedKFold,
    cross_val_predict,
    train_test_split,
)
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from sklearn_groupinf import GroupInfluence, GroupSelector
from sklearn_groupinf._cleaning import round_sizes
from sklearn_groupinf._selector_groups import flip_log_likelihood_ratio
from sklearn_groupinf.datasets import load_german_credit

DATASETS = ("digits", "breast_cancer", "german_credit", "wine", "iris")
RATES = (0.1, 0.2)
ROW_METHODS = (
    "none",
    "oracle",
    "random",
    "cleanlab top-k",
    "cleanlab own count",
    "CleanLearning",
    "GroupSelector k",
    "GroupSelector auto",
    "GroupSelector k 1 round",
    "GroupSelector k cross_fit",
    "GI clean target",
)


def lr():
    return LogisticRegression(C=1.0, max_iter=5000)


def load(name):
    loaders = {
        "digits": lambda: load_digits(return_X_y=True),
        "breast_cancer": lambda: load_breast_cancer(return_X_y=True),
        "german_credit": load_german_credit,
        "wine": lambda: load_wine(return_X_y=True),
        "iris": lambda: load_iris(return_X_y=True),
    }
    X, y = loaders[name]()
    Xtr, Xte, ytr, yte = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=0
    )
    scaler = StandardScaler().fit(Xtr)
    return scaler.transform(Xtr), scaler.transform(Xte), ytr, yte


def flip(y, rows, rng):
    classes = np.unique(y)
    y_noisy = y.copy()
    for i in rows:
        y_noisy[i] = rng.choice(classes[classes != y[i]])
    return y_noisy


def oof_proba(X, y):
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    return cross_val_predict(lr(), X, y, cv=cv, method="predict_proba")


def row_removal(method, X, y, y_clean, k, flipped, seed):
    """Removed rows, or ``("model", fitted)`` for CleanLearning."""
    from cleanlab.classification import CleanLearning
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    n = len(y)
    if method == "none":
        return np.zeros(0, dtype=int)
    if method == "oracle":
        return flipped
    if method == "random":
        return np.random.default_rng(1000 + seed).choice(n, size=k, replace=False)
    enc = np.searchsorted(np.unique(y), y)
    if method == "cleanlab top-k":
        scores = get_label_quality_scores(
            enc, oof_proba(X, y), method="self_confidence"
        )
        return np.argsort(scores, kind="stable")[:k]
    if method == "cleanlab own count":
        return np.flatnonzero(find_label_issues(enc, oof_proba(X, y)))
    if method == "CleanLearning":
        cl = CleanLearning(lr(), seed=seed).fit(X, y)
        return ("model", cl, np.flatnonzero(cl.get_label_issues()["is_label_issue"]))
    if method.startswith("GroupSelector"):
        budget = "auto" if method.endswith("auto") else k
        validation = "cross_fit" if method.endswith("cross_fit") else "auto"
        n_rounds = 1 if method.endswith("1 round") else 3
        sel = GroupSelector(
            lr(),
            budget=budget,
            validation=validation,
            n_rounds=n_rounds,
            random_state=seed,
        ).fit(X, y)
        return sel.removed_indices_
    # clean target: a stratified 20 % of the training rows, true labels
    rows = train_test_split(
        np.arange(n), test_size=0.2, stratify=y_clean, random_state=seed
    )[1]
    gi = GroupInfluence(lr()).fit(X, y, X_target=X[rows], y_target=y_clean[rows])
    return gi.select(k, n_rounds=5).indices


def test_scores(X, y, Xte, yte, removed):
    if isinstance(removed, tuple):
        model = removed[1]
    else:
        keep = np.setdiff1d(np.arange(len(y)), removed)
        model = lr().fit(X[keep], y[keep])
    proba = model.predict_proba(Xte)
    return log_loss(yte, proba, labels=np.unique(yte)), accuracy_score(
        yte, model.predict(Xte)
    )


def mean_sd(v, digits=3):
    v = np.asarray(v, dtype=float)
    if len(v) == 0 or np.all(np.isnan(v)):
        return "-"
    v = v[~np.isnan(v)]
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def run_rows(datasets, seeds):
    tables, pairs = [], {}
    for name in datasets:
        X, Xte, y, yte = load(name)
        for rate in RATES:
            res = {
                m: {"prec": [], "n": [], "ll": [], "acc": [], "t": []}
                for m in ROW_METHODS
            }
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                k = int(round(rate * len(y)))
                flipped = np.sort(rng.choice(len(y), size=k, replace=False))
                y_noisy = flip(y, flipped, rng)
                for m in ROW_METHODS:
                    t = time.perf_counter()
                    removed = row_removal(m, X, y_noisy, y, k, flipped, seed)
                    t = time.perf_counter() - t
                    ll, acc = test_scores(X, y_noisy, Xte, yte, removed)
                    rows = removed[2] if isinstance(removed, tuple) else removed
                    prec = np.isin(rows, flipped).mean() if len(rows) else np.nan
                    r = res[m]
                    r["prec"].append(prec)
                    r["n"].append(len(rows))
                    r["ll"].append(ll)
                    r["acc"].append(acc)
                    r["t"].append(t)
            pairs[(name, rate)] = res
            title = (
                f"{name}: n_train={len(y)}, {len(np.unique(y))} classes, "
                f"{int(rate * 100)} % flipped (k = {int(round(rate * len(y)))})"
            )
            rows = [
                [
                    m,
                    mean_sd(res[m]["n"], 0) if m != "none" else "0",
                    mean_sd(res[m]["prec"], 2),
                    mean_sd(res[m]["ll"]),
                    mean_sd(res[m]["acc"]),
                    f"{np.mean(res[m]['t']):.2f}",
                ]
                for m in ROW_METHODS
            ]
            table = fmt_table(
                [
                    "method",
                    "removed",
                    "precision",
                    "test log-loss",
                    "test accuracy",
                    "time (s)",
                ],
                rows,
            )
            print(title)
            print(table, flush=True)
            tables.append((title, table))
    return tables, pairs


def paired_wins(pairs, ours, theirs):
    """(wins, ties, runs, datasets failing the precision rule) on log-loss."""
    wins = ties = runs = 0
    prec_gaps = []
    for key, res in pairs.items():
        a, b = np.array(res[ours]["ll"]), np.array(res[theirs]["ll"])
        wins += int(np.sum(a < b - 1e-12))
        ties += int(np.sum(np.abs(a - b) <= 1e-12))
        runs += len(a)
        gap = np.nanmean(res[ours]["prec"]) - np.nanmean(res[theirs]["prec"])
        prec_gaps.append((key, gap))
    return wins, ties, runs, prec_gaps


def exact_leave_group_out(X, y, g, *, k, n_rounds=3):
    """The default's group rule with exact refits in place of Newton steps.

    Same flip likelihood ratio (class prior put back) and the same rounds as
    ``GroupSelector(groups_as_units=True)``; each group's probabilities come
    from ``LogisticRegression`` refitted without it. A reference for what the
    statistic can find, not a competitor (one refit per group and round).
    """
    classes = np.unique(y)
    kept = np.ones(g.max() + 1, dtype=bool)
    removed = []
    for size in round_sizes(k, n_rounds):
        rows = np.flatnonzero(kept[g])
        units, local = np.unique(g[rows], return_inverse=True)
        log_proba = []
        for u in range(len(units)):
            out = rows[local != u]
            model = lr().fit(X[out], y[out])
            # a class the refit never saw: probability 1e-300, not 0
            lp = np.full((np.sum(local == u), len(classes)), np.log(1e-300))
            lp[:, np.searchsorted(classes, model.classes_)] = model.predict_log_proba(
                X[rows[local == u]]
            )
            log_proba.append(lp)
        llr = flip_log_likelihood_ratio(
            log_proba, np.searchsorted(classes, y[rows]), local, len(units)
        )
        for u in range(len(units)):  # never remove the last rows of a class
            if len(np.unique(y[rows[local != u]])) < len(classes):
                llr[u] = -np.inf
        best = units[np.argsort(-llr, kind="stable")[:size]]
        kept[best] = False
        removed.extend(best.tolist())
    return np.array(removed, dtype=int)


def run_groups(datasets, seeds):
    rows, recalls = [], {}
    methods = (
        "GroupSelector groups",
        "GroupSelector groups leave_group_out",
        "GroupSelector groups cross_fit",
        "cleanlab mean per cluster",
        "GI clean target",
        "exact leave-group-out",
    )
    for name in datasets:
        X, Xte, y, yte = load(name)
        res = {m: {"rec": [], "ll": [], "t": []} for m in methods}
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            g = KMeans(20, n_init=3, random_state=seed).fit_predict(X)
            bad = rng.choice(20, size=2, replace=False)
            flipped = np.flatnonzero(np.isin(g, bad))
            y_noisy = flip(y, flipped, rng)
            for m in methods:
                t = time.perf_counter()
                if m.startswith("GroupSelector groups"):
                    rule = m.split()[-1]
                    sel = GroupSelector(
                        lr(),
                        budget=2,
                        groups_as_units=True,
                        validation=rule if rule != "groups" else "auto",
                        random_state=seed,
                    ).fit(X, y_noisy, groups=g)
                    chosen = sel.removed_groups_
                elif m == "cleanlab mean per cluster":
                    from cleanlab.rank import get_label_quality_scores

                    enc = np.searchsorted(np.unique(y_noisy), y_noisy)
                    sc = get_label_quality_scores(
                        enc, oof_proba(X, y_noisy), method="self_confidence"
                    )
                    per = np.bincount(g, weights=sc, minlength=20) / np.maximum(
                        np.bincount(g, minlength=20), 1
                    )
                    chosen = np.argsort(per)[:2]
                elif m == "exact leave-group-out":
                    chosen = exact_leave_group_out(X, y_noisy, g, k=2)
                else:
                    tr = train_test_split(
                        np.arange(len(y)), test_size=0.2, stratify=y, random_state=seed
                    )[1]
                    gi = GroupInfluence(lr()).fit(
                        X, y_noisy, X_target=X[tr], y_target=y[tr]
                    )
                    chosen = gi.select(2, groups=g).groups
                t = time.perf_counter() - t
                keep = ~np.isin(g, chosen)
                ll, _ = test_scores(X, y_noisy, Xte, yte, np.flatnonzero(~keep))
                res[m]["rec"].append(np.isin(bad, chosen).mean())
                res[m]["ll"].append(ll)
                res[m]["t"].append(t)
        recalls[name] = res
        for m in methods:
            rows.append(
                [
                    name,
                    m,
                    mean_sd(res[m]["rec"], 2),
                    f"{np.mean(np.array(res[m]['rec']) == 1):.2f}",
                    mean_sd(res[m]["ll"]),
                    f"{np.mean(res[m]['t']):.2f}",
                ]
            )
    table = fmt_table(
        [
            "dataset",
            "method",
            "recall@2",
            "both found",
            "test log-loss",
            "time (s)",
        ],
        rows,
    )
    print(table, flush=True)
    return table, recalls


def _sets(keys):
    return ", ".join(f"{name} {int(rate * 100)} %" for name, rate in keys) or "none"


def verdict(pairs, recalls):
    """Plain sentences on who wins, computed from the measured runs."""
    w_k, t_k, n, gaps = paired_wins(pairs, "GroupSelector k", "cleanlab top-k")
    w_a, _, _, gaps_a = paired_wins(pairs, "GroupSelector auto", "cleanlab own count")
    w_c, _, _, _ = paired_wins(pairs, "GroupSelector k", "CleanLearning")
    w_1, _, _, _ = paired_wins(pairs, "GroupSelector k", "GroupSelector k 1 round")
    w_1c, _, _, _ = paired_wins(pairs, "GroupSelector k 1 round", "cleanlab top-k")
    w_g, _, _, _ = paired_wins(pairs, "GI clean target", "cleanlab top-k")
    w_x, _, _, gaps_x = paired_wins(
        pairs, "GroupSelector k", "GroupSelector k cross_fit"
    )
    worst = min(g for _, g in gaps)
    worst_x = min(g for _, g in gaps_x)

    def mean(res, m, what="ll"):
        return np.nanmean(res[m][what])

    lose_k = [
        key
        for key, res in pairs.items()
        if mean(res, "GroupSelector k") > mean(res, "cleanlab top-k")
    ]
    lose_a = [
        key
        for key, res in pairs.items()
        if mean(res, "GroupSelector auto") > mean(res, "cleanlab own count")
    ]
    more = [
        key
        for key, res in pairs.items()
        if mean(res, "GroupSelector auto", "n") > mean(res, "cleanlab own count", "n")
    ]
    hardest = [
        key
        for key, res in pairs.items()
        if all(
            mean(res, m) > mean(res, "none")
            for m in ROW_METHODS
            if m not in ("none", "oracle")
        )
    ]
    both = {
        name: np.mean(np.array(r["GroupSelector groups"]["rec"]) == 1)
        for name, r in recalls.items()
    }
    both_cf, both_lgo = (
        {name: np.mean(np.array(r[m]["rec"]) == 1) for name, r in recalls.items()}
        for m in (
            "GroupSelector groups cross_fit",
            "GroupSelector groups leave_group_out",
        )
    )
    both_cl, both_gi, both_ex = (
        {name: np.mean(np.array(r[m]["rec"]) == 1) for name, r in recalls.items()}
        for m in (
            "cleanlab mean per cluster",
            "GI clean target",
            "exact leave-group-out",
        )
    )
    short = [name for name, v in both.items() if v < 0.9]

    def met(wins):
        return "met" if wins >= 0.8 * n else "not met"

    return [
        "* **Precision** (flipped rows among the removed, same budget): "
        + (
            f"GroupSelector's default is within {abs(min(worst, 0)):.2f} of "
            "cleanlab's top-k filter or above it on every set and noise rate "
            if worst >= -0.05
            else "GroupSelector's default falls more than 0.05 below cleanlab's "
            "top-k filter on some set "
        )
        + f"(worst gap {worst:+.2f}).",
        f"* **Test log-loss at the same budget**: GroupSelector wins {w_k} of "
        f"{n} paired runs against cleanlab's top-k filter ({t_k} ties; the "
        f"goal of 80 % is {met(w_k)}). Its mean test log-loss is higher than "
        f"cleanlab's on: {_sets(lose_k)}."
        + (
            " The two rankings remove nearly the same number of flipped rows "
            "(precision above); which correct-but-hard rows each also removes "
            "decides the log-loss."
            if worst >= -0.05
            else ""
        )
        + f" For scale: ``GroupInfluence`` given clean labels wins {w_g} of {n}."
        + (
            " Every cleaning method but the oracle ends above the test "
            f"log-loss of no cleaning on: {_sets(hardest)}."
            if hardest
            else ""
        ),
        f"* **Rounds**: the default's 3 rounds beat 1 round in {w_1} of {n} "
        f"runs; with 1 round GroupSelector wins {w_1c} of {n} against "
        "cleanlab's top-k filter.",
        f'* **Choosing the count** (``budget="auto"`` against cleanlab\'s own '
        f"count): GroupSelector wins {w_a} of {n} runs (goal of 80 % "
        f"{met(w_a)}). Its mean test log-loss is higher on: {_sets(lose_a)}; "
        f"it removes more rows than cleanlab on: {_sets(more)}.",
        f"* Against ``CleanLearning`` as is, GroupSelector at the same budget "
        f"wins {w_c} of {n} runs.",
        "* **Rows: leave-one-out ranking against the cross-fitted greedy.** "
        f"The default for rows has the lower test log-loss in {w_x} of {n} "
        'runs against ``validation="cross_fit"`` (robust target, '
        "interaction-aware greedy), a precision never lower than its by more "
        f"than {max(0, -worst_x):.2f}, and is faster (time column)"
        + (
            ": for single rows the greedy does not earn its place."
            if worst_x >= -0.02 and w_x >= n / 2
            else "."
        ),
        "* **Whole groups**: the default for a classifier's groups (the "
        "relabel likelihood ratio with two classes: breast cancer and German "
        "credit; the leave-group-out flip ratio with more) found both flipped "
        "clusters in "
        + ", ".join(f"{k} {v:.0%}" for k, v in both.items())
        + " of the runs (goal: 90 % on each; "
        + (f"short on {', '.join(short)}" if short else "met")
        + "); the leave-group-out rule on every set, the previous default, in "
        + ", ".join(f"{k} {v:.0%}" for k, v in both_lgo.items())
        + "; the cross-fitted interaction-aware greedy in "
        + ", ".join(f"{k} {v:.0%}" for k, v in both_cf.items())
        + "; cleanlab's mean per cluster in "
        + ", ".join(f"{k} {v:.0%}" for k, v in both_cl.items())
        + "; GroupInfluence with a clean target (not a competitor) in "
        + ", ".join(f"{k} {v:.0%}" for k, v in both_gi.items())
        + "; the leave-group-out rule with exact refits in place of the Newton "
        "step (a reference for what that statistic can find) in "
        + ", ".join(f"{k} {v:.0%}" for k, v in both_ex.items())
        + ". Where the exact-refit rule is short too, the Newton step is not "
        "what limits the leave-group-out rule: the other flipped cluster, "
        "still in the model that judges a group, is.",
    ]


def summary_lines(pairs, recalls):
    out = []
    for ours, theirs in (
        ()
        if not pairs
        else (
            ("GroupSelector k", "cleanlab top-k"),
            ("GroupSelector k cross_fit", "cleanlab top-k"),
            ("GroupSelector k", "GroupSelector k cross_fit"),
            ("GroupSelector k 1 round", "cleanlab top-k"),
            ("GroupSelector k", "GroupSelector k 1 round"),
            ("GroupSelector auto", "cleanlab own count"),
            ("GroupSelector k", "CleanLearning"),
            ("GI clean target", "cleanlab top-k"),
        )
    ):
        wins, ties, runs, gaps = paired_wins(pairs, ours, theirs)
        worst = min(gaps, key=lambda kv: kv[1])
        out.append(
            f"{ours} vs {theirs}: lower test log-loss in {wins} of {runs} paired "
            f"runs ({ties} ties); precision minus theirs per set and rate: "
            + ", ".join(f"{k[0]} {int(k[1] * 100)} % {g:+.2f}" for k, g in gaps)
            + f" (worst {worst[1]:+.2f})."
        )
    for (name, rate), res in pairs.items():
        ours, theirs = "GroupSelector k", "cleanlab top-k"
        ll = {m: np.mean(res[m]["ll"]) for m in (ours, theirs)}
        pr = {m: np.nanmean(res[m]["prec"]) for m in (ours, theirs)}
        out.append(
            f"{name} {int(rate * 100)} %: lower mean test log-loss: "
            f"{min(ll, key=ll.get)} ({ll[ours]:.3f} against {ll[theirs]:.3f}); "
            f"precision {pr[ours]:.2f} against {pr[theirs]:.2f}."
        )
    for m, what in (
        ("GroupSelector groups", "GroupSelector(groups_as_units=True, budget=2)"),
        (
            "GroupSelector groups leave_group_out",
            'the same with validation="leave_group_out"',
        ),
        ("GroupSelector groups cross_fit", 'the same with validation="cross_fit"'),
        ("cleanlab mean per cluster", "cleanlab's mean self-confidence per cluster"),
        ("GI clean target", "GroupInfluence with a clean target"),
        ("exact leave-group-out", "the leave-group-out rule with exact refits"),
    ):
        if not recalls:
            break
        both = {n: np.mean(np.array(r[m]["rec"]) == 1) for n, r in recalls.items()}
        out.append(
            f"{what} found both flipped clusters in "
            + ", ".join(f"{n} {v:.0%}" for n, v in both.items())
            + " of the runs."
        )
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--group-seeds",
        type=int,
        default=None,
        help="seeds of the whole-group part (default: --seeds)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 seeds, breast cancer and wine only"
    )
    parser.add_argument("--no-doc", action="store_true", help="do not write the page")
    parser.add_argument(
        "--datasets",
        default=",".join(DATASETS),
        help="comma-separated subset of the sets (the page needs all of them)",
    )
    parser.add_argument(
        "--part",
        choices=("all", "rows", "groups"),
        default="all",
        help="run only the row tables or only the whole-group table",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    threadpool_limits(1)  # 2 shared cores: one BLAS thread keeps timings steady
    seeds = 2 if args.quick else args.seeds
    datasets = tuple(args.datasets.split(","))
    if args.quick:
        datasets = ("breast_cancer", "wine")
    unknown = set(datasets) - set(DATASETS)
    if unknown:
        parser.error(f"unknown --datasets {sorted(unknown)}; choose from {DATASETS}")
    t0 = time.perf_counter()
    tables, pairs, group_table, recalls = [], {}, None, {}
    if args.part in ("all", "rows"):
        tables, pairs = run_rows(datasets, seeds)
    if args.part in ("all", "groups"):
        group_seeds = seeds if args.group_seeds is None else args.group_seeds
        group_table, recalls = run_groups(datasets, group_seeds)
    lines = summary_lines(pairs, recalls)
    elapsed = time.perf_counter() - t0
    for line in lines:
        print(line)
    print(f"total {elapsed:.0f} s")
    full = args.part == "all" and set(datasets) == set(DATASETS)
    if not args.no_doc and not args.quick and full:
        write_doc(
            "cleaning_vs_cleanlab.rst",
            page(
                args,
                seeds,
                tables,
                group_table,
                lines,
                elapsed,
                verdict(pairs, recalls),
            ),
        )


def page(args, seeds, tables, group_table, lines, elapsed, verdicts):
    import cleanlab

    head = "Cleaning labels: compared with cleanlab"
    text = [
        ".. Generated by benchmarks/cleaning_vs_cleanlab.py; do not edit by hand.",
        "",
        head,
        "=" * len(head),
        "",
        "Command: ``nice .venv/bin/python benchmarks/cleaning_vs_cleanlab.py "
        f"--seeds {seeds}"
        + (f" --group-seeds {args.group_seeds}" if args.group_seeds else "")
        + f"`` (scikit-learn {sklearn.__version__}, cleanlab "
        f"{cleanlab.__version__}; BLAS on one thread, 2 cores shared with other "
        f"jobs; {elapsed:.0f} s in all).",
        "",
        "The question: with no clean labels at all, does ``GroupSelector`` "
        "clean a training set as well as cleanlab, the tool such a user would "
        "pick? Protocol (see the script's docstring): five real tabular sets, "
        "70/30 stratified train/test split, 10 % or 20 % of the training "
        "labels flipped, ``LogisticRegression(C=1)`` everywhere, refitted on "
        "the kept rows and scored on clean test labels; mean ± sd over "
        f"{seeds} seeds. *precision* is the share of flipped rows among the "
        "removed ones; *removed* the number of rows removed. "
        "``GroupSelector k`` and ``cleanlab top-k`` remove as many rows as "
        "were flipped; ``auto`` and *own count* choose their number. "
        "``GI clean target`` is given clean labels on 20 % of the training "
        "rows and is an upper reference, not a competitor.",
        "",
        "Where each tool wins",
        "--------------------",
        "",
        *verdicts,
        "",
        "What ``GroupSelector`` does by default: for rows, it ranks each row by "
        "its approximate leave-one-out loss, the log-loss of its label one "
        "Newton step after removing it (an n-fold out-of-sample loss from one "
        "fit, where cleanlab uses 5-fold out-of-sample probabilities), and "
        "removes the budget in 3 rounds, refitting in between so rows already "
        'judged noisy leave the model; ``budget="auto"`` removes, in each of '
        "the 3 rounds, every row whose leave-one-out probability of its label "
        "is below 0.35 of chance (``0.35 / n_classes``) under the model "
        "refitted without the rows removed so far, and stops when none is "
        "(the fraction was chosen on flips of other seeds by "
        "``benchmarks/cleaning_auto_threshold.py``, so the figures here are a "
        "held-out check of that choice). For "
        "whole groups of a two-class classifier, it judges each group by the "
        "penalised log-likelihood gained by refitting with its labels swapped "
        "(one Newton step and a line search on the exact objective); with "
        "more classes by the model without it (one group-Newton step, class "
        "prior put back) through the log-likelihood ratio of the group's "
        "labels being wrong against right; it removes the largest in rounds.",
        "",
        "Paired counts (same data, same flips)",
        "-------------------------------------",
        "",
    ]
    text += [f"* {line}" for line in lines]
    text += [""]
    for title, table in tables:
        text += [title, "-" * len(title), "", table, ""]
    t = "Whole groups: two label-flipped k-means clusters of 20"
    text += [
        t,
        "-" * len(t),
        "",
        f"{args.group_seeds or seeds} seeds. *recall@2*: share of the two "
        "flipped clusters among the two removed; *both found*: share of runs "
        "that removed both.",
        "",
        group_table,
        "",
    ]
    return "\n".join(text) + "\n"


if __name__ == "__main__":
    main()
