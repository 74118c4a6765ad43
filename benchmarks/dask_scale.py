"""Dask: GroupInfluence on 10^7 rows read from Parquet, through a LocalCluster.

Synthetic binary logistic regression: ``n`` rows x ``p`` correlated features,
labels from a logistic model and a ``merchant`` column of ``n_groups``
random group labels, written chunk by chunk as Parquet files on local disk
(``--data``; written once, reused when the files match). A
``distributed.LocalCluster`` of 2 worker processes (1 thread each) on
loopback, with a memory limit per worker well below the data size, runs the
pipeline a user would write::

    df = dd.read_parquet(path)
    gi = GroupInfluence(LogisticRegression(C=1.0), method="interaction")
    gi.fit(df[features], df["label"], X_target=X_valid, y_target=y_valid)

Stages, each timed, with the peak resident memory (``ru_maxrss``) of the
client process and of each worker process after it:

* ``read_parquet`` (lazy: the files' metadata),
* ``fit`` (rows of each partition counted, scikit-learn on the first
  100,000 rows, then Newton polish over the chunks to the optimum of the
  full objective),
* ``influence_`` (a Dask array chunked like ``X``) written to Parquet,
* ``score_groups`` of the ``merchant`` column (a Dask column: the labels
  are coded on the workers, never gathered),
* ``select(k)``: first-order top-k and the interaction-aware greedy,
* ``select(k_groups, groups=merchant, method="newton")``: the greedy over
  merchants on exact group-Newton estimates (per-merchant Hessians and
  gradient sums reduced in one pass).

Then the same pipeline on the first ``--compare-n`` rows (the first files):
through the cluster from Parquet, and in memory (the files read with
pandas), with the largest relative differences between the two. Target:
log-loss on 10,000 held-out rows (in memory).

Usage::

    nice .venv/bin/python benchmarks/dask_scale.py [--quick] [--n 10000000]
        [--data /tmp/groupinf_dask_scale] [--memory-limit 2GiB] [--no-doc]

Writes ``doc/results_dask_scale.rst`` (not with ``--quick`` or ``--no-doc``).
"""

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import time
import warnings

import numpy as np
from _common import fmt_table, write_doc
from sklearn.linear_model import LogisticRegression

from sklearn_groupinf import GroupInfluence


def maxrss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _block(seed, i, rows, p, beta, n_groups, rho=0.5):
    """Rows of chunk ``i``: ``(X, y, merchant)`` from the chunk's own seed."""
    rng = np.random.default_rng([seed, i])
    X = rng.standard_normal((rows, p))
    for j in range(1, p):
        X[:, j] *= np.sqrt(1 - rho**2)
        X[:, j] += rho * X[:, j - 1]
    z = X @ beta + 0.2
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-z))).astype(np.int64)
    return X, y, rng.integers(0, n_groups, rows)


def _beta(p, seed):
    return np.random.default_rng(seed).standard_normal(p) * 1.5 / np.sqrt(p)


def write_parquet(path, n, p, chunk, n_groups, seed=0):
    """One Parquet file per ``chunk`` rows (skipped when already written)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = dict(n=n, p=p, chunk=chunk, n_groups=n_groups, seed=seed, version=1)
    meta_file = os.path.join(path, "meta.json")
    if os.path.exists(meta_file):
        with open(meta_file) as fh:
            if json.load(fh) == meta:
                return False
        shutil.rmtree(path)
    os.makedirs(path)
    beta = _beta(p, seed)
    for i, start in enumerate(range(0, n, chunk)):
        X, y, g = _block(seed, i, min(chunk, n - start), p, beta, n_groups)
        cols = {f"x{j}": X[:, j] for j in range(p)}
        cols.update(label=y, merchant=g)
        pq.write_table(pa.table(cols), os.path.join(path, f"part-{i:05d}.parquet"))
    with open(meta_file, "w") as fh:
        json.dump(meta, fh)
    return True


def target_data(p, seed=1, rows=10_000):
    X, y, _ = _block(seed, 0, rows, p, _beta(p, 0), 1)
    return X, y


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--p", type=int, default=50, help="features")
    ap.add_argument("--chunk", type=int, default=100_000, help="rows per file")
    ap.add_argument("--n-groups", type=int, default=1000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--k-groups", type=int, default=10, help="merchants (newton)")
    ap.add_argument("--compare-n", type=int, default=1_000_000)
    ap.add_argument("--data", default="/tmp/groupinf_dask_scale")
    ap.add_argument("--memory-limit", default="2GiB", help="per worker")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="n=400,000, compare 100,000")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.n, args.chunk, args.k, args.compare_n = 400_000, 50_000, 200, 100_000
        args.data = args.data.rstrip("/") + "_quick"
    import dask
    import dask.dataframe as dd
    from distributed import Client, LocalCluster
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    n, p = args.n, args.p
    t0 = time.perf_counter()
    wrote = write_parquet(args.data, n, p, args.chunk, args.n_groups)
    size = sum(
        os.path.getsize(os.path.join(args.data, f)) for f in os.listdir(args.data)
    )
    print(
        f"{'wrote' if wrote else 'reusing'} {args.data}: {n:,} rows x {p} "
        f"features, {size / 1e9:.2f} GB of Parquet [{time.perf_counter() - t0:.0f} s]",
        flush=True,
    )
    cluster = LocalCluster(
        n_workers=args.workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit=args.memory_limit,
    )
    client = Client(cluster)
    print(
        f"LocalCluster: {args.workers} worker processes, 1 thread each, memory "
        f"limit {args.memory_limit} per worker",
        flush=True,
    )
    Xt, yt = target_data(p)
    feats = [f"x{j}" for j in range(p)]
    rows, out = [], {}

    def worker_peaks():
        return sorted(client.run(maxrss_gb).values())

    def stage(name, fn, *, cluster_stage=True):
        t = time.perf_counter()
        res = fn()
        dt = time.perf_counter() - t
        w = worker_peaks() if cluster_stage else []
        wtxt = ", ".join(f"{v:.2f}" for v in w) if w else "-"
        rows.append([name, f"{dt:.1f}", f"{maxrss_gb():.2f}", wtxt])
        print(f"  {name}: {dt:.1f} s, client {maxrss_gb():.2f} GB, workers {wtxt}")
        sys.stdout.flush()
        return res

    def read(n_rows):
        files = sorted(f for f in os.listdir(args.data) if f.endswith(".parquet"))
        files = files[: -(-n_rows // args.chunk)]
        df = dd.read_parquet([os.path.join(args.data, f) for f in files])
        # given as Dask DataFrame / Series: GroupInfluence counts the rows of
        # the arrays' own partitions (dask 2026.8 fuses small Parquet reads,
        # so to_dask_array(lengths=True) can count other partitions than the
        # array has, and reductions then fail with "lost dependencies")
        return df[feats], df["label"], df["merchant"]

    def pipeline(tag, data, *, on_cluster=True, influence_to=None):
        X, y, g = data
        gi = GroupInfluence(LogisticRegression(C=1.0), method="interaction")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lbfgs at default tol; GI polishes
            stage(
                f"{tag}: fit",
                lambda: gi.fit(X, y, X_target=Xt, y_target=yt),
                cluster_stage=on_cluster,
            )
        if influence_to is not None:
            infl = stage(
                f"{tag}: influences written to Parquet",
                lambda: dd.from_dask_array(
                    gi.influence_[:, None], columns=["influence"]
                ).to_parquet(influence_to, write_index=False),
            )
        elif on_cluster:
            infl = stage(f"{tag}: influences computed", gi.influence_.compute)
        else:
            infl = gi.influence_
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unreliable-group flags
            sc = stage(
                f"{tag}: score_groups, {args.n_groups} merchants",
                lambda: gi.score_groups(g),
                cluster_stage=on_cluster,
            )
        top = stage(
            f"{tag}: select({args.k}) first-order top-k",
            lambda: gi.select(args.k, method="first_order"),
            cluster_stage=on_cluster,
        )
        greedy = stage(
            f"{tag}: select({args.k}) interaction greedy",
            lambda: gi.select(args.k, method="interaction"),
            cluster_stage=on_cluster,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            by_group = stage(
                f"{tag}: select({args.k_groups} merchants) newton greedy",
                lambda: gi.select(args.k_groups, groups=g, method="newton"),
                cluster_stage=on_cluster,
            )
        out[tag] = (gi, infl, sc, top, greedy, by_group)

    big = f"Dask {n:,}"
    data = stage(f"{big}: read_parquet", lambda: read(n))
    infl_path = os.path.join(args.data + "_out", "influence")
    shutil.rmtree(infl_path, ignore_errors=True)
    pipeline(big, data, influence_to=infl_path)
    client_peak_big = maxrss_gb()
    gi_big = out[big][0]
    m = args.compare_n
    small = f"Dask {m:,}"
    pipeline(small, stage(f"{small}: read_parquet", lambda: read(m)))
    workers = worker_peaks()
    client.close()
    cluster.close()

    def load_memory():
        import pandas as pd

        files = sorted(f for f in os.listdir(args.data) if f.endswith(".parquet"))
        df = pd.concat(
            [
                pd.read_parquet(os.path.join(args.data, f))
                for f in files[: -(-m // args.chunk)]
            ]
        )
        return (
            df[feats].to_numpy(),
            df["label"].to_numpy(),
            df["merchant"].to_numpy(),
        )

    mem = f"memory {m:,}"
    with dask.config.set(scheduler="synchronous"):
        pipeline(
            mem,
            stage(f"{mem}: read with pandas", load_memory, cluster_stage=False),
            on_cluster=False,
        )

    def rel(a, b):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

    d, mm = out[small], out[mem]
    facts = [
        f"{n:,} rows from Parquet ({size / 1e9:.2f} GB on disk) through "
        f"{args.workers} workers with a {args.memory_limit} memory limit each: "
        f"stationarity after the chunked Newton polish "
        f"{gi_big.stationarity_[1]:.1e} (||grad J|| / median ||q_i||, from "
        f"{gi_big.stationarity_[0]:.1e} after scikit-learn's fit on the first "
        "100,000 rows); target log-loss "
        f"{gi_big.target_value_:.6f}; peak RSS of the client during the "
        f"{n:,}-row stages {client_peak_big:.2f} GB; peak RSS per worker over the "
        "whole cluster run " + ", ".join(f"{v:.2f} GB" for v in workers) + ".",
        f"{m:,} rows, Dask (cluster, Parquet) vs in memory: theta rel. diff "
        f"{rel(d[0].theta_, mm[0].theta_):.1e}, influence "
        f"{rel(d[1], mm[1]):.1e}, group estimates "
        f"{rel(d[2].estimate, mm[2].estimate):.1e}; same merchants: "
        f"{bool(np.array_equal(d[2].groups, mm[2].groups))}; same top-k: "
        f"{bool(np.array_equal(d[3].indices, mm[3].indices))}; same greedy picks: "
        f"{bool(np.array_equal(d[4].indices, mm[4].indices))} (estimates rel. diff "
        f"{rel(d[4].estimates, mm[4].estimates):.1e}); same merchants picked by "
        f"the newton greedy: {bool(np.array_equal(d[5].groups, mm[5].groups))} "
        f"(estimates rel. diff {rel(d[5].estimates, mm[5].estimates):.1e}).",
    ]
    table = fmt_table(
        ["stage", "wall [s]", "client max RSS [GB]", "worker max RSS [GB]"], rows
    )
    print()
    print(table)
    for f in facts:
        print(f)
    if args.quick or args.no_doc:
        return
    cmd = "nice .venv/bin/python benchmarks/dask_scale.py" + (
        "" if n == 10_000_000 else f" --n {n}"
    )
    env = (
        f"dask {dask.__version__}; numpy {np.__version__}; BLAS threads 1; "
        f"{platform.machine()}, {os.cpu_count()} cores (shared with other jobs)"
    )
    text = f""".. Generated by benchmarks/dask_scale.py -- do not edit by hand.

Scale on Dask: ten million rows from Parquet
============================================

Produced by ``{cmd}``.
Environment: {env}.

Synthetic binary ``LogisticRegression(C=1.0)`` with {n:,} training rows and
{p} correlated features (P = {p + 1} parameters), a ``merchant`` column of
{args.n_groups:,} random group labels, written as {size / 1e9:.2f} GB of Parquet
({-(-n // args.chunk)} files of {args.chunk:,} rows). Target: log-loss on 10,000
held-out rows. A ``distributed.LocalCluster`` of {args.workers} worker processes
(one thread each, memory limit {args.memory_limit} per worker, well below the data
size) runs ``GroupInfluence(LogisticRegression(C=1.0),
method="interaction")`` on ``dd.read_parquet(...)[features]`` and the
label column (rows per partition counted in the fit): the estimator is
fitted by scikit-learn on the first 100,000 rows and polished by Newton
steps over the chunks (``P x P`` tree reductions) to the optimum of the
full objective; per-example vectors (influences, row norms, greedy scores)
stay on the workers and are reduced there (median, top-k, the greedy's
checkpoints); the merchant labels are coded chunk by chunk on the workers
(only the {args.n_groups:,} unique labels and their counts reach the
client) and group sums, per-merchant Hessians included, are tree
reductions. Then the same pipeline on the first {m:,} rows, through the
cluster and in memory (pandas), for equality.
Memory is the peak resident set size (``ru_maxrss``) of the client process
and of each worker process after each stage (cumulative).

{table}

{chr(10).join(facts)}
"""
    write_doc("results_dask_scale.rst", text)


if __name__ == "__main__":
    main()
