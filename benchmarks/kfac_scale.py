"""Time and peak memory of ``GroupInfluence(curvature="ekfac")`` on a ~1M-parameter CNN.

A CNN of about a million parameters (two 3x3 convolutions with max-pooling,
two linear layers, 28x28 inputs; float64) is trained briefly on synthetic
images (Gaussian pixels, labels from a random linear teacher) with
``TorchModel(optimizer="adam")``, then used through ``GroupInfluence`` with
EK-FAC (one sampled label per example for the factors) and the default
low-rank target curvature: ``fit``, ``score_groups`` of 100 groups of 10 rows
(``first_order`` and ``interaction``), top-k and greedy selection, and the
group interaction matrix. No ``n x P`` matrix is formed; the table prints the
wall time of each step and the peak resident memory of the process after it
(``ru_maxrss``: monotone, so a step's figure includes every earlier one, the
training included). The accuracy of EK-FAC is measured where the exact
curvature can be formed (``benchmarks/kfac_accuracy.py``,
``tests/test_curvature.py``); there is no reference at this size.

Run::

    OMP_NUM_THREADS=1 python benchmarks/kfac_scale.py [--quick]

``--quick``: 500 training rows, 100 target rows, 50 groups and a CNN with a
quarter of the hidden units (about 250k parameters).
"""

import argparse
import os
import resource
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import fmt_table  # noqa: E402
from sklearn.frozen import FrozenEstimator  # noqa: E402

from sklearn_groupinf import GroupInfluence  # noqa: E402
from sklearn_groupinf.torch import TorchModel  # noqa: E402


def cnn(hidden):
    nn = torch.nn
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n, m, n_groups, hidden = (500, 100, 50, 80) if args.quick else (1000, 200, 100, 320)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n + m, 784))
    y = np.argmax(X @ rng.standard_normal((784, 10)), axis=1)
    torch.manual_seed(0)
    net = TorchModel(
        cnn(hidden),
        weight_decay=1e-2,
        optimizer="adam",
        lr=1e-3,
        max_epochs=2,
        max_iter=1,
        batch_size=128,
        device="cpu",
    )
    rows = []
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net.fit(X[:n], y[:n])
    P = sum(p.numel() for p in net.module_.parameters())
    rows.append(["train (Adam, 2 epochs)", time.perf_counter() - t0, rss_gb()])
    frozen = GroupInfluence(
        FrozenEstimator(net),
        curvature="ekfac",
        damping=1e-3,
        curvature_options={"fisher": "sampled", "batch_size": 128},
    )
    groups = rng.permutation(n) % n_groups

    def step(name, fn):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn()
        rows.append([name, time.perf_counter() - t, rss_gb()])
        return out

    step("fit", lambda: frozen.fit(X[:n], y[:n], X_target=X[n:], y_target=y[n:]))
    step(
        "score_groups first_order",
        lambda: frozen.score_groups(groups, method="first_order"),
    )
    step(
        "score_groups interaction",
        lambda: frozen.score_groups(groups, method="interaction"),
    )
    step("select 50 rows, first_order", lambda: frozen.select(50, method="first_order"))
    step(
        "select 10 groups, interaction",
        lambda: frozen.select(10, groups=groups, method="interaction"),
    )
    step("interaction_matrix(groups)", lambda: frozen.interaction_matrix(groups))
    print(
        f"CNN with {P:,} parameters, {n} training rows, {m} target rows, "
        f"{n_groups} groups; EK-FAC (sampled labels), target_rank "
        f"{frozen._state.backend.target_rank}; stationarity "
        f"{frozen.stationarity_[1]:.2g}. n x P in float64 would be "
        f"{n * P * 8 / 1e9:.1f} GB."
    )
    print(
        fmt_table(
            ["step", "wall (s)", "peak RSS so far (GB)"],
            [[r[0], f"{r[1]:.1f}", f"{r[2]:.2f}"] for r in rows],
        )
    )


if __name__ == "__main__":
    main()
