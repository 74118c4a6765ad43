"""Scale: one million examples with the implicit interaction operator.

Synthetic binary logistic regression with n = 1,000,000 training rows and
p = 100 parameters (99 correlated features + intercept); target = log-loss on
10,000 held-out rows. ``GroupInfluence(..., interaction="implicit")``:

* ``fit`` (sklearn fit + influence state),
* ``score_groups`` for 1,000 random groups (the default ``method="auto"``),
* ``select(1000)`` -- greedy interaction-aware removal of 1,000 examples (and
  the first-order top-k for reference),
* the same greedy run twice on the interaction factor: with the naive rule
  (one pass over the n x rank factor per pick: the greedy before pruning) and
  with the pruned rule (bounds; exact scores only where a bound cannot
  decide), timed in passes' worth (CPU time / CPU time of one pass, so that
  other load on a shared machine does not count) and checked to make the
  same picks,
* a check that the greedy's final estimate equals ``b'1_S + 1/2 1_S'K 1_S``
  computed through the ``LinearOperator`` (one matvec, no n x n matrix).

Reports wall time and memory per phase: the process's peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and, for each phase, the peak
of traced allocations (``tracemalloc``; numpy buffers allocated through
Python's allocator hooks are traced, BLAS workspaces are not). An n x n
float64 matrix would need 8 TB. The linear model's implicit path never uses
torch; it is imported (for ``--device``) only when asked for an accelerator.

Usage::

    nice .venv/bin/python benchmarks/scale.py [--n 1000000] [--quick]

Writes ``doc/results_scale.rst``.
"""

import argparse
import os
import platform
import resource
import time
import tracemalloc
import warnings

import numpy as np
from _common import fmt_table, set_up, write_doc
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from sklearn_groupinf import GroupInfluence
from sklearn_groupinf._selection import greedy_select

SEED = 0


def maxrss_gb():
    # ru_maxrss is in KB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _cpu_timed(fn):
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def _set_up(device, threads):
    """Threads, and torch only when an accelerator is asked for."""
    if device != "cpu":
        return set_up(device, threads)
    threadpool_limits(threads)
    env = (
        f"device: cpu (numpy/BLAS; torch not imported); BLAS threads {threads}; "
        f"numpy {np.__version__}; {platform.machine()}, {os.cpu_count()} cores"
    )
    print(env)
    return None, env, ""


def synthetic(n, d, seed, rho=0.5):
    """Correlated Gaussian features (AR(1) through a running mix), logistic labels."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    for j in range(1, d):  # in place: X_j = rho X_{j-1} + sqrt(1 - rho^2) Z_j
        X[:, j] *= np.sqrt(1 - rho**2)
        X[:, j] += rho * X[:, j - 1]
    beta = rng.standard_normal(d) * 1.5 / np.sqrt(d)
    z = X @ beta + 0.2
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    return X, y


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--p", type=int, default=100, help="parameters (features + 1)")
    ap.add_argument("--n-groups", type=int, default=1000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/torch threads (default 1: multi-threaded OpenBLAS "
        "spins badly on a loaded shared machine)",
    )
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument(
        "--quick", action="store_true", help="n=50,000, k=200, no doc (a smoke run)"
    )
    args = ap.parse_args()
    if args.quick:
        args.n, args.k, args.n_groups, args.no_doc = 50_000, 200, 100, True
    dev, env, note = _set_up(args.device, args.threads)
    n, d = args.n, args.p - 1
    rows = []

    def phase(name, fn):
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        rows.append(
            [
                name,
                f"{dt:.1f}",
                f"{(peak - base) / 1e9:.2f}",
                f"{peak / 1e9:.2f}",
                f"{maxrss_gb():.2f}",
            ]
        )
        print(
            f"  {name}: {dt:.1f} s, traced peak {peak / 1e9:.2f} GB, "
            f"max RSS {maxrss_gb():.2f} GB",
            flush=True,
        )
        return out

    tracemalloc.start()
    X, y = phase(
        "generate data (train + 10,000 target rows)",
        lambda: synthetic(n + 10_000, d, SEED),
    )
    X_tr, y_tr, X_t, y_t = X[:n], y[:n], X[n:], y[n:]
    gi = GroupInfluence(
        LogisticRegression(C=1.0), interaction="implicit", device=args.device
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs at default tol; GI polishes
        phase(
            "GroupInfluence.fit (sklearn lbfgs fit + influence state)",
            lambda: gi.fit(X_tr, y_tr, X_target=X_t, y_target=y_t),
        )
    groups = np.random.default_rng(SEED).integers(0, args.n_groups, n)
    res = phase(
        f"score_groups, {args.n_groups} random groups (default method='auto')",
        lambda: gi.score_groups(groups),
    )
    sel = phase(
        f"select({args.k}), interaction-aware greedy (implicit K)",
        lambda: gi.select(args.k),
    )
    sel1 = phase(
        f"select({args.k}, method='first_order') (top-k)",
        lambda: gi.select(args.k, method="first_order"),
    )

    # the same greedy with the naive rule (one pass over the factor per step)
    # and the pruned rule (bounds; exact scores only where needed), timed in
    # CPU seconds and in passes' worth (CPU time / CPU time of one pass)
    op = gi._fitted.unit_operator("interaction", form="implicit")
    b = gi.influence_

    def one_pass():
        return op.W @ (op.sigma * op.W[0])

    pass_s = min(_cpu_timed(one_pass)[0] for _ in range(5))
    stats_naive, stats_pruned, cpu = {}, {}, {}

    def greedy(strategy, stats):
        cpu[strategy], out = _cpu_timed(
            lambda: greedy_select(b, op, args.k, strategy=strategy, stats=stats)
        )
        return out

    naive = phase(
        f"greedy {args.k} picks, naive rule (a pass per step)",
        lambda: greedy("naive", stats_naive),
    )
    pruned = phase(
        f"greedy {args.k} picks, pruned rule (bounds)",
        lambda: greedy("pruned", stats_pruned),
    )
    c_naive, c_pruned = cpu["naive"], cpu["pruned"]
    same = bool(np.array_equal(naive[0], pruned[0]))
    same_select = bool(np.array_equal(pruned[0], sel.indices))
    kind = type(op.W).__name__
    greedy_facts = (
        f"one pass over the {n:,} x {op.W.shape[1]} factor ({kind}): "
        f"{pass_s:.3f} CPU s; greedy of {args.k} picks: naive {c_naive:.1f} CPU s "
        f"({c_naive / pass_s:.0f} passes' worth; {stats_naive['passes']} full "
        f"passes), pruned {c_pruned:.1f} CPU s ({c_pruned / pass_s:.0f} passes' "
        f"worth; {stats_pruned['passes']} full passes, "
        f"{stats_pruned['evaluated']:,} exact scores); same picks: {same} "
        f"(and as select(): {same_select}); speed-up {c_naive / c_pruned:.1f}x"
    )
    print("  " + greedy_facts, flush=True)

    def check():
        K = gi.interaction_matrix(form="implicit")  # a LinearOperator

        def est(idx):
            v = np.zeros(n)
            v[idx] = 1.0
            return float(gi.influence_ @ v + 0.5 * v @ K.matvec(v))

        return est(sel.indices), est(sel1.indices)

    direct, topk_inter = phase(
        "check: est(S) of both selections via LinearOperator matvecs", check
    )
    tracemalloc.stop()
    overlap = len(np.intersect1d(sel.indices, sel1.indices))
    facts = (
        f"n = {n:,}, P = {gi.n_params_}, relative ||grad J|| before/after polish "
        f"{gi.stationarity_[0]:.2g}/{gi.stationarity_[1]:.2g}; greedy final "
        f"estimate {sel.estimates[-1]:.6g} vs direct quadratic form {direct:.6g} "
        f"(abs diff {abs(sel.estimates[-1] - direct):.1e}); the first-order "
        f"top-{args.k} set: first-order estimate {sel1.estimates[-1]:.6g}, "
        f"interaction estimate {topk_inter:.6g}; overlap of the two selections "
        f"{overlap}/{args.k}; largest group abs estimate "
        f"{np.abs(res.estimate).max():.3g}; an n x n float64 K would need "
        f"{8 * n * n / 1e12:.3g} TB; peak RSS of the whole run {maxrss_gb():.2f} GB"
        f". {greedy_facts}"
    )
    header = [
        "phase",
        "wall [s]",
        "traced peak above start [GB]",
        "traced peak total [GB]",
        "max RSS so far [GB]",
    ]
    table = fmt_table(header, rows)
    print()
    print(table)
    print(facts)
    if args.no_doc:
        return
    cmd = f"nice .venv/bin/python benchmarks/scale.py --n {n}"
    if args.device != "cpu":
        cmd += f" --device {args.device}"
    text = f"""\
.. Generated by benchmarks/scale.py -- do not edit by hand.

Scale: one million examples
===========================

Produced by ``{cmd}``.
Environment: {env}.
{("**" + note + ".**") if note else ""}

Synthetic binary ``LogisticRegression(C=1.0)`` with n = {n:,} training rows
and P = {gi.n_params_} parameters ({d} correlated features + intercept),
target = log-loss on 10,000 held-out rows, ``interaction="implicit"`` (the
interaction matrix is the factor ``W`` of shape n x rank, never n x n).
Memory: "traced" is ``tracemalloc`` (numpy buffers; BLAS workspaces are not
traced), "max RSS" is the process's peak resident set size from
``resource.getrusage``. Phases run in order in one process, so max RSS is
cumulative. The training design ``[X, 1]`` is kept implicit (no copy of
``X``), removal-gradient products are passes over it, and the per-example
interaction factor ``W = Q H^-1 C`` is kept as products (a pass over ``W`` is
a pass over ``X``), so no n x P array is held besides ``X``. The greedy rows
time ``greedy_select`` on the same factor with the naive rule (one pass over
the factor per pick: the greedy before pruning) and with the pruned rule
(Cauchy-Schwarz bounds on each unit's running sum since the last full pass;
both include the pass for ``diag(K)``, the pruned one also the row norms).

{table}

{facts}.
"""
    write_doc("results_scale.rst", text)


if __name__ == "__main__":
    main()
