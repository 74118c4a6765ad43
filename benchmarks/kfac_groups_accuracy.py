"""``GroupInfluence`` with K-FAC / EK-FAC against the exact Gauss-Newton curvature.

The same fitted network is scored through ``GroupInfluence`` with
``curvature="ggn"`` (the exact Gauss-Newton matrix, dense), ``"ekfac"`` and
``"kfac"`` (the rank-64 target factor by default; ``target_rank=16`` is
also shown), at the same parameters (``polish=False``) and damping.
Networks: the 10-16-3 tanh MLP of ``tests/test_curvature.py`` (227
parameters, 200 training rows of ``make_classification``, L-BFGS with weight
decay 1), a 64-32-10 MLP on 500 digits (2,410 parameters) and a CNN
(``Conv2d(1, 4, 3)`` + tanh + ``Linear(144, 10)``, 1,490 parameters) on 300
digits. The table gives the Spearman correlation with the exact curvature's
values: per training row (``influence_``) and for groups of 10 rows
(``class``: class-coherent; ``random``), each with ``first_order`` and
``interaction``.

Run::

    OMP_NUM_THREADS=1 python benchmarks/kfac_groups_accuracy.py [--quick]

``--quick``: the small MLP only. The CNN's figures are those of
``tests/test_curvature.py``.
"""

import argparse
import os
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import fmt_table  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.datasets import load_digits, make_classification  # noqa: E402
from sklearn.frozen import FrozenEstimator  # noqa: E402

from sklearn_groupinf import GroupInfluence  # noqa: E402
from sklearn_groupinf.torch import TorchModel  # noqa: E402


def models(quick):
    X, y = make_classification(
        n_samples=300, n_features=10, n_informative=6, n_classes=3, random_state=0
    )
    yield "MLP 10-16-3", X[:200], y[:200], X[200:], y[200:], 10, 16, 3
    if quick:
        return
    X, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(y))
    X, y = X[perm] / 16.0, y[perm]
    yield "MLP 64-32-10", X[:500], y[:500], X[500:800], y[500:800], 64, 32, 10
    yield "CNN", X[:300], y[:300], X[300:450], y[300:450], 64, None, 10


def groups_of(y, n_groups):
    rng = np.random.default_rng(0)
    n = len(y)
    size = n // n_groups
    order = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    )
    by_class = np.empty(n, int)
    by_class[order] = np.minimum(np.arange(n) // size, n_groups - 1)
    return {"class": by_class, "random": rng.permutation(n) % n_groups}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for name, X, y, Xt, yt, d, h, k in models(args.quick):
        torch.manual_seed(0)
        if h is None:  # Conv2d(1, 4, 3) + tanh + Linear(144, 10) on 8x8 digits
            module = torch.nn.Sequential(
                torch.nn.Unflatten(1, (1, 8, 8)),
                torch.nn.Conv2d(1, 4, 3),
                torch.nn.Tanh(),
                torch.nn.Flatten(),
                torch.nn.Linear(144, k),
            )
        else:
            module = torch.nn.Sequential(
                torch.nn.Linear(d, h), torch.nn.Tanh(), torch.nn.Linear(h, k)
            )
        net = TorchModel(module, weight_decay=1.0, device="cpu").fit(X, y)
        groups = groups_of(y, len(y) // 10)  # groups of 10 rows
        for damping in (0.01, 0.1, 1.0):
            values = {}
            settings = [
                ("ggn", None),
                ("ekfac", None),
                ("ekfac", 16),
                ("kfac", None),
            ]
            for curvature, rank in settings:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    gi = GroupInfluence(
                        FrozenEstimator(net),
                        curvature=curvature,
                        damping=damping,
                        polish=False,
                        target_rank=rank,
                    ).fit(X, y, X_target=Xt, y_target=yt)
                    vals = [gi.influence_]
                    for g in groups.values():
                        for method in ("first_order", "interaction"):
                            vals.append(gi.score_groups(g, method=method).estimate)
                values[curvature, rank] = vals
            for key in settings[1:]:
                rho = [
                    spearmanr(a, b)[0] for a, b in zip(values["ggn", None], values[key])
                ]
                label = key[0] + ("" if key[1] is None else f" (r={key[1]})")
                rows.append([name, damping, label] + [f"{r:.3f}" for r in rho])
    print(
        fmt_table(
            [
                "model",
                "damping",
                "curvature",
                "per row",
                "class first",
                "class inter.",
                "random first",
                "random inter.",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
