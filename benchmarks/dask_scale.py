"""Dask: GroupInfluence on chunked data, against the same pipeline in memory.

Synthetic binary logistic regression: ``n`` rows x ``p`` correlated features
generated chunk by chunk as a Dask array (each chunk from its own seed, so
the data are never formed whole on the client), labels from a logistic
model, target = log-loss on 10,000 held-out rows. Stages, each timed:

* ``GroupInfluence.fit`` on the Dask arrays (scikit-learn on the first
  100,000 rows, then Newton polish over the chunks),
* ``influence_`` (a Dask array chunked like ``X``) computed,
* ``score_groups`` of ``n_groups`` random groups given as a Dask array
  (``method="interaction"``),
* ``select(k)``: first-order top-k and the interaction-aware greedy (the
  per-example factor kept as chunked products),

then the same pipeline on the data computed into memory, and the largest
relative differences between the two. Peak resident memory of the process
(``ru_maxrss``) is reported after each stage. The Dask scheduler is the
threaded one in this process, or with ``--cluster`` a
``distributed.LocalCluster`` of worker processes on loopback (their peak
resident memory is reported at the end).

Usage::

    nice .venv/bin/python benchmarks/dask_scale.py [--n 1000000] [--quick] [--cluster]

Prints a table (no results page).
"""

import argparse
import resource
import time
import warnings

import numpy as np
from _common import fmt_table
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from sklearn_groupinf import GroupInfluence


def maxrss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _block(block_id, rows, p, beta, seed, rho=0.5):
    rng = np.random.default_rng([seed, block_id[0]])
    X = rng.standard_normal((rows, p))
    for j in range(1, p):
        X[:, j] *= np.sqrt(1 - rho**2)
        X[:, j] += rho * X[:, j - 1]
    z = X @ beta + 0.2
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    return np.column_stack([X, y])


def dask_data(n, p, chunk, seed):
    """``(X, y)`` as Dask arrays, generated per chunk."""
    import dask.array as da

    beta = np.random.default_rng(seed).standard_normal(p) * 1.5 / np.sqrt(p)
    rows = tuple(min(chunk, n - i) for i in range(0, n, chunk))
    Z = da.map_blocks(
        lambda block_id=None: _block(block_id, rows[block_id[0]], p, beta, seed),
        chunks=(rows, (p + 1,)),
        dtype=float,
    )
    return Z[:, :p], Z[:, p].astype(np.int64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--p", type=int, default=50, help="features")
    ap.add_argument("--chunk", type=int, default=100_000, help="rows per chunk")
    ap.add_argument("--n-groups", type=int, default=1000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads")
    ap.add_argument("--workers", type=int, default=2, help="Dask threads")
    ap.add_argument("--quick", action="store_true", help="n=100,000, k=100")
    ap.add_argument(
        "--cluster",
        action="store_true",
        help="run through a distributed.LocalCluster (processes, --workers)",
    )
    args = ap.parse_args()
    if args.quick:
        args.n, args.chunk, args.k, args.n_groups = 100_000, 20_000, 100, 100
    import dask

    threadpool_limits(args.threads)
    if args.cluster:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        client = Client(cluster)
        print(f"LocalCluster: {args.workers} worker processes, 1 thread each")
    else:
        dask.config.set(scheduler="threads", num_workers=args.workers)
    n, p = args.n, args.p
    X, y = dask_data(n, p, args.chunk, seed=0)
    Xt, yt = (np.asarray(a) for a in dask.compute(*dask_data(10_000, p, 10_000, 1)))
    groups = np.random.default_rng(2).integers(0, args.n_groups, n)
    import dask.array as da

    dgroups = da.from_array(groups, chunks=args.chunk)
    rows, out = [], {}

    def stage(name, fn):
        t0 = time.perf_counter()
        res = fn()
        dt = time.perf_counter() - t0
        rows.append([name, f"{dt:.1f}", f"{maxrss_gb():.2f}"])
        print(f"  {name}: {dt:.1f} s, max RSS {maxrss_gb():.2f} GB", flush=True)
        return res

    def pipeline(tag, Xa, ya, g):
        gi = GroupInfluence(LogisticRegression(C=1.0), method="interaction")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lbfgs at default tol; GI polishes
            stage(f"{tag}: fit", lambda: gi.fit(Xa, ya, X_target=Xt, y_target=yt))
        infl = stage(
            f"{tag}: influence_ computed",
            lambda: (
                np.asarray(getattr(gi.influence_, "compute", lambda: None)())
                if hasattr(gi.influence_, "compute")
                else gi.influence_
            ),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unreliable-group flags
            sc = stage(
                f"{tag}: score_groups, {args.n_groups} groups",
                lambda: gi.score_groups(g),
            )
        top = stage(
            f"{tag}: select({args.k}) first-order top-k",
            lambda: gi.select(args.k, method="first_order"),
        )
        greedy = stage(
            f"{tag}: select({args.k}) interaction greedy",
            lambda: gi.select(args.k, method="interaction"),
        )
        out[tag] = (gi, infl, sc, top, greedy)

    print(f"n = {n:,} rows x {p} features in chunks of {args.chunk:,}", flush=True)
    pipeline("dask", X, y, dgroups)
    Xm, ym = stage("compute the data into memory", lambda: dask.compute(X, y))
    pipeline("memory", Xm, ym, groups)

    def rel(a, b):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

    d, m = out["dask"], out["memory"]
    facts = (
        f"dask vs in memory: theta rel. diff {rel(d[0].theta_, m[0].theta_):.1e}, "
        f"influence {rel(d[1], m[1]):.1e}, group estimates "
        f"{rel(d[2].estimate, m[2].estimate):.1e}; same top-k: "
        f"{bool(np.array_equal(d[3].indices, m[3].indices))}; same greedy picks: "
        f"{bool(np.array_equal(d[4].indices, m[4].indices))}; stationarity after "
        f"polish {d[0].stationarity_[1]:.1e} (dask) / {m[0].stationarity_[1]:.1e}; "
        f"peak RSS of the whole run {maxrss_gb():.2f} GB"
    )
    if args.cluster:
        peaks = client.run(maxrss_gb)
        facts += "; peak RSS per worker " + ", ".join(
            f"{v:.2f} GB" for v in peaks.values()
        )
        client.close()
        cluster.close()
    print()
    print(fmt_table(["stage", "wall [s]", "max RSS so far [GB]"], rows))
    print(facts)


if __name__ == "__main__":
    main()
