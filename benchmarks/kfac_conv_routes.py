"""When do a convolution's sums go through its own kernels? The two K-FAC routes timed.

A convolution's group sums ``sum_i m_i D_i`` (``D_i`` the per-example weight
gradient) can be formed from per-example gradients (patches, a batched
product per row, ``index_add`` into the groups) or as the convolution's
weight gradient over each run of one group, the rows streamed sorted by
group (``torch.nn.grad.conv2d_weight``: no patches, one call per group and
batch). This script times both on the CNN of ``cnn_groups.py`` (untrained:
the time does not depend on the weights; Fashion-MNIST from the Debian
package ``dataset-fashion-mnist``), one BLAS/torch thread:

1. per layer shape of that CNN, 128 rows of 28 x 28 (or 14 x 14, 7 x 7)
   inputs: the weight gradient in two runs of 64 rows against the
   per-example route (patches and the batched product) -- which chose
   ``CONV_SUMS_MIN_CHANNELS`` in ``sklearn_groupinf/backends/_kfac_one_per_row.py``;
2. ``aggregated_gradients`` with 64 directions over ``--rows`` (4,000)
   training rows for groups of 2 to 32 rows, by groups and by per-example
   gradients -- which chose ``SEGMENT_MIN_ROWS`` there (the sums are
   contracted with the directions as they are formed, so with many groups
   both routes spend most of their time on the ``1568 x 640`` layer's
   blocks, one per group).

Run::

    nice .venv/bin/python benchmarks/kfac_conv_routes.py

Prints two tables (quoted in the constants' comments).
"""

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def best(fn, repeat=10):
    """Lower-quartile wall time of ``fn`` in ms over ``repeat`` calls."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return 1e3 * times[len(times) // 4]


def layer_routes():
    import torch

    from sklearn_groupinf.backends._kfac_layers import _patches

    rows = []
    for c_in, c_out, side in [(1, 16, 28), (3, 16, 28), (16, 16, 14), (32, 32, 7)]:
        b = 128
        m = torch.nn.Conv2d(c_in, c_out, 3, padding=1)
        x, g = torch.randn(b, c_in, side, side), torch.randn(b, c_out, side, side)

        def by_weight_gradient():
            return [
                torch.nn.grad.conv2d_weight(
                    x[i : i + 64], m.weight.shape, g[i : i + 64], padding=1
                )
                for i in (0, 64)
            ]

        def by_examples():
            a = _patches(x, m)
            return torch.einsum("bot,bdt->bod", g.reshape(b, c_out, -1), a).sum(0)

        rows.append(
            [
                f"{c_in} -> {c_out}, {side} x {side}",
                f"{best(by_weight_gradient):.1f}",
                f"{best(by_examples):.1f}",
            ]
        )
    return rows


def group_routes(n):
    import numpy as np
    import scipy.sparse as sp
    import torch
    from cnn_groups import load_fashion_mnist, resnet_like

    from sklearn_groupinf.backends import _kfac_group_sums as kp
    from sklearn_groupinf.backends import _kfac_one_per_row as kr

    X, y = load_fashion_mnist("train")
    Xt = torch.as_tensor(X[:n], dtype=torch.float32)
    yt = torch.as_tensor(y[:n])
    net = resnet_like(0)
    P = sum(p.numel() for p in net.parameters())
    V = torch.randn(P, 64, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    rows = []
    saved = kr.SEGMENT_MIN_ROWS
    try:
        for size in [2, 4, 8, 16, 32]:
            n_g = n // size
            g = rng.permutation(n) % n_g
            M = sp.csr_matrix((np.ones(n), (g, np.arange(n))), shape=(n_g, n))
            line = [f"{size}"]
            for threshold in (1, 10**9):  # by groups, by per-example gradients
                kr.SEGMENT_MIN_ROWS = threshold
                t0 = time.perf_counter()
                kp.aggregated_gradients(
                    net, "cross_entropy", Xt, yt, M, V=V, batch_size=128
                )
                line.append(f"{time.perf_counter() - t0:.2f}")
            rows.append(line)
            print(" | ".join(line), flush=True)
    finally:
        kr.SEGMENT_MIN_ROWS = saved
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=4000)
    args = parser.parse_args()
    import torch
    from _common import fmt_table

    torch.set_num_threads(1)
    print("1. one batch of 128 rows (ms)")
    print(
        fmt_table(
            ["layer", "weight gradient (2 runs)", "per-example gradients"],
            layer_routes(),
        )
    )
    print(f"2. group sums, 64 directions, {args.rows} rows (s)")
    rows = group_routes(args.rows)
    print(fmt_table(["rows per group", "by groups", "per-example"], rows))


if __name__ == "__main__":
    main()
