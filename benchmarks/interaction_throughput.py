"""Dense interaction matrix throughput.

Builds the dense interaction matrix ``K = W diag(sigma) W'`` for n = 20,000
units and rank p = 100 with ``sklearn_groupinf._interaction.dense_from_factors``
(the routine behind ``make_interaction(..., form="dense")`` and
``GroupInfluence(interaction="dense")``), and reports the achieved GFLOP/s
(2 n^2 p flops) next to a plain ``torch.matmul`` of the same shapes
(``(n, p) @ (p, n)``, float64 and float32) measured in the same run. The ratio
is the figure of merit (aim >= 0.5). Also checks that the result does not
depend on the tile size and that ``make_interaction(form="dense")`` agrees with
the implicit operator.

Usage::

    nice .venv/bin/python benchmarks/interaction_throughput.py [--device auto|cpu|cuda]
        [--n 20000] [--p 100]

Writes ``doc/results_throughput.rst``. Peak memory: about two n x n matrices
(6.4 GB in float64 at n = 20,000).
"""

import argparse
import gc
import os
import platform
import time

import numpy as np
from _common import fmt_table, write_doc

from sklearn_groupinf._interaction import (
    dense_from_factors,
    make_interaction,
    resolve_device,
)

SEED = 0


def best_time(fn, repeats, sync):
    best = np.inf
    for _ in range(repeats):
        gc.collect()
        sync()
        t0 = time.perf_counter()
        res = fn()
        sync()
        best = min(best, time.perf_counter() - t0)
        del res
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--p", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    import torch

    dev = resolve_device(args.device)
    on_cpu = dev.type == "cpu"
    note = (
        "no GPU available in this session; all figures are CPU figures"
        if on_cpu
        else ""
    )
    env = (
        f"device: {dev}; torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}; numpy {np.__version__}; "
        f"{platform.machine()}, {os.cpu_count()} cores"
    )
    print(env)
    if note:
        print("NOTE:", note)
    sync = (lambda: None) if on_cpu else torch.cuda.synchronize

    n, p = args.n, args.p
    rng = np.random.default_rng(SEED)
    W = rng.standard_normal((n, p))
    sigma = np.where(rng.random(p) < 0.8, 1.0, -1.0)  # signed (indefinite H_f)
    flops = 2.0 * n * n * p
    rows = []
    results = {}
    for dt_name, np_dt, t_dt in [
        ("float64", np.float64, torch.float64),
        ("float32", np.float32, torch.float32),
    ]:
        # plain torch matmul of the same shapes, on the same device
        A = torch.as_tensor(W * sigma, dtype=t_dt, device=dev)
        B = torch.as_tensor(W.T.copy(), dtype=t_dt, device=dev)
        t_mm = best_time(lambda: torch.matmul(A, B), args.repeats, sync)  # noqa: F821
        out_buf = torch.empty((n, n), dtype=t_dt, device=dev)
        out_buf.zero_()  # pre-touched output: the matmul kernel alone
        t_mm_out = best_time(
            lambda: torch.matmul(A, B, out=out_buf),  # noqa: F821
            args.repeats,
            sync,
        )
        del A, B, out_buf
        gc.collect()
        # the package's tiled dense builder (returns a numpy array on the host)
        t_k = best_time(
            lambda: dense_from_factors(W, sigma, device=dev, dtype=np_dt),
            args.repeats,
            sync,
        )
        g = lambda t: flops / t / 1e9  # noqa: E731
        rows.append(
            [
                dt_name,
                f"{t_mm:.3f}",
                f"{g(t_mm):.1f}",
                f"{t_mm_out:.3f}",
                f"{g(t_mm_out):.1f}",
                f"{t_k:.3f}",
                f"{g(t_k):.1f}",
                f"{t_mm / t_k:.2f}",
                f"{t_mm_out / t_k:.2f}",
            ]
        )
        results[dt_name] = (t_mm, t_mm_out, t_k)
        print(
            f"  {dt_name}: matmul {t_mm:.3f} s, matmul(out=) {t_mm_out:.3f} s, "
            f"dense_from_factors {t_k:.3f} s",
            flush=True,
        )

    header = [
        "dtype",
        "torch.matmul [s]",
        "GFLOP/s",
        "matmul out= [s]",
        "GFLOP/s",
        "dense_from_factors [s]",
        "GFLOP/s",
        "ratio vs matmul",
        "ratio vs matmul out=",
    ]
    t1 = fmt_table(header, rows)

    # tile-size independence (float64) and dense vs implicit agreement
    tiles = [256, 1000, 4096, n]
    ref = dense_from_factors(W, sigma, device=dev, tile_size=tiles[-1])
    scale = float(np.abs(ref).max())
    rows2 = []
    for ts in tiles[:-1]:
        K = dense_from_factors(W, sigma, device=dev, tile_size=ts)
        diff = float(np.abs(K - ref).max())
        rows2.append(
            [
                str(ts),
                f"{diff:.2e}",
                f"{diff / scale:.2e}",
                str(bool(np.array_equal(K, ref))),
            ]
        )
        del K
        gc.collect()
    K32 = dense_from_factors(W, sigma, device=dev, dtype=np.float32)
    d32 = float(np.abs(K32 - ref).max())
    rows2.append(["float32 vs float64", f"{d32:.2e}", f"{d32 / scale:.2e}", "-"])
    del K32
    gc.collect()
    # make_interaction(form="dense") against the implicit operator (columns)
    A0 = rng.standard_normal((n, p))
    M0 = rng.standard_normal((p, p))
    M0 = M0 + M0.T
    t0 = time.perf_counter()
    dense = make_interaction(
        A0, M0, form="dense", device=dev, max_dense_bytes=8 * n * n
    )
    t_make = time.perf_counter() - t0
    impl = make_interaction(A0, M0, form="implicit")
    cols = rng.choice(n, 20, replace=False)
    dmax = max(float(np.abs(dense.column(j) - impl.column(j)).max()) for j in cols)
    dscale = float(np.abs(dense.K).max())
    del dense
    gc.collect()
    rows2.append(
        [
            "make_interaction dense vs implicit (20 cols)",
            f"{dmax:.2e}",
            f"{dmax / dscale:.2e}",
            "-",
        ]
    )
    t2 = fmt_table(
        [
            "tile_size (vs one tile of n rows)",
            "max abs diff",
            "relative to max abs K",
            "bitwise equal",
        ],
        rows2,
    )

    print(
        f"\nDense K = W diag(sigma) W', n = {n}, p = {p} "
        f"({flops / 1e9:.0f} GFLOP), best of {args.repeats}"
    )
    print(t1)
    print(
        f"\nmake_interaction(form='dense') end to end (eigen-factor of M, "
        f"W = A C, tiles): {t_make:.3f} s"
    )
    print("\nTile-size independence and agreement")
    print(t2)
    if args.no_doc:
        return
    cmd = (
        "nice .venv/bin/python benchmarks/interaction_throughput.py --device "
        f"{args.device}"
    )
    text = f"""\
.. Generated by benchmarks/interaction_throughput.py -- do not edit by hand.

Dense interaction matrix throughput
===================================

Produced by ``{cmd}``.
Environment: {env}.
{("**" + note + ".**") if note else ""}

``dense_from_factors`` builds ``K = W diag(sigma) W'`` (n = {n}, rank
p = {p}, {flops / 1e9:.0f} GFLOP) in row tiles with torch and returns a numpy
array. It is compared with a plain ``torch.matmul`` of the same shapes in the
same run: once allocating its result (what user code does) and once into a
pre-allocated, already-touched output (the matrix-multiply kernel alone).
Times are the best of {args.repeats}; GFLOP/s = 2 n^2 p / time.

{t1}

``make_interaction(form="dense")`` end to end (eigen-factor the middle matrix,
``W = A C``, then the tiles): {t_make:.3f} s.

Tile-size independence (float64, against a single tile of all n rows), float32
against float64, and the dense operator against the implicit one:

{t2}
"""
    print()
    write_doc("results_throughput.rst", text)


if __name__ == "__main__":
    main()
