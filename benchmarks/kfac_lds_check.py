"""Sign check of the CNN benchmark's LDS and group-removal code on a small network.

``benchmarks/cnn_groups.py`` compares influence estimates with retraining
(LDS over random halves, Spearman over group removals). Its networks are
retrained by two Adam epochs, whose outcome varies from seed to seed about
as much as between subsets, so a wrong sign there would not show. This
script runs the same estimate code (``cnn_groups.removal_estimates``,
``kronfluence_scores``, ``trak_scores``) on a network small enough to
retrain exactly: a 196-8-10 tanh MLP (1,666 parameters) on Fashion-MNIST
images averaged to 14 x 14 (``--n-train`` rows, ``--n-target`` target rows
from the test file, the Debian package ``dataset-fashion-mnist``), trained
by ``TorchModel`` (full-batch L-BFGS, weight decay 1, float64) to a
stationary point. Every "actual" value is an exact refit: L-BFGS from the
trained parameters with the removed rows' ``sample_weight`` set to zero
(removal under the same objective), so the truth has no seed noise and every
method's LDS and group Spearman must come out clearly positive.

Methods: ``GroupInfluence`` with the exact (dense, polished) curvature and
with ``curvature="ekfac"`` as the CNN benchmark uses it (frozen network,
sampled-label Fisher, damping 1e-3), Kronfluence 1.0.1 EK-FAC and TRAK
(``traker`` 0.3.2), each through the CNN benchmark's functions.

``--adam`` also runs the CNN benchmark's protocol on the same small network:
trained by Adam (float32, batch 32, ``--adam-epochs`` epochs, no stationary
point), LDS against retraining from scratch with 2 seeds per half, group
removal retrained from the same initialisation and batch order. It shows
what that protocol can resolve when the estimates are known to have the
right sign.

Run::

    nice python benchmarks/kfac_lds_check.py [--adam]
"""

import argparse
import os
import sys
import tempfile
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from cnn_groups import (  # noqa: E402
    class_groups,
    fmt,
    kronfluence_scores,
    load_fashion_mnist,
    removal_estimates,
    trak_scores,
)
from scipy.stats import spearmanr  # noqa: E402
from sklearn.frozen import FrozenEstimator  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402


def mlp(seed, hidden=8):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(196, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 10)
    )


def pooled(X):
    return X.reshape(-1, 14, 2, 14, 2).mean((2, 4)).reshape(-1, 196)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--n-target", type=int, default=200)
    parser.add_argument("--subsets", type=int, default=20)
    parser.add_argument("--n-groups", type=int, default=20)
    parser.add_argument("--adam", action="store_true")
    parser.add_argument("--adam-epochs", type=int, default=2)
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from sklearn_groupinf import GroupInfluence
    from sklearn_groupinf.torch import TorchModel

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    t_start = time.perf_counter()
    Xall, yall = load_fashion_mnist("train")
    Xte, yte = load_fashion_mnist("t10k")
    rng = np.random.default_rng(0)
    rows = rng.choice(len(Xall), args.n_train, replace=False)
    X, y = pooled(Xall[rows]), yall[rows]
    trows = rng.choice(len(Xte), args.n_target, replace=False)
    Xt, yt = pooled(Xte[trows]), yte[trows]
    n = len(X)
    groups = class_groups(y, args.n_groups, rng)
    lrng = np.random.default_rng(1)
    removed = [
        np.sort(lrng.choice(n, n - n // 2, replace=False)) for _ in range(args.subsets)
    ]
    dev = torch.device("cpu")

    def target(model):
        return log_loss(yt, model.predict_proba(Xt), labels=np.arange(10))

    net = TorchModel(mlp(0), weight_decay=1.0, device="cpu", max_iter=5000)
    net.fit(X, y)
    base = target(net)
    print(f"MLP 1,666 parameters, {n} rows; target log-loss {base:.4f}", flush=True)

    def refit(w):
        r = TorchModel(**{**net.get_params(), "module": net.module_})
        return target(r.fit(X, y, sample_weight=w)) - base

    def weights_without(rows):
        w = np.ones(n)
        w[rows] = 0.0
        return w

    t0 = time.perf_counter()
    lds_actual = np.array([refit(weights_without(r)) for r in removed])
    grp_actual = np.array(
        [refit((groups != g).astype(float)) for g in np.unique(groups)]
    )
    print(f"exact refits: {time.perf_counter() - t0:.0f} s", flush=True)

    rows_out, lds = [], {}
    for name, gi in [
        ("exact", GroupInfluence(FrozenEstimator(net), curvature="exact")),
        (
            "ekfac",
            GroupInfluence(
                FrozenEstimator(net),
                curvature="ekfac",
                damping=1e-3,
                curvature_options={"fisher": "sampled", "batch_size": 128},
            ),
        ),
    ]:
        gi.fit(X, y, X_target=Xt, y_target=yt)
        K = gi.interaction_matrix(method="interaction", form="implicit")
        est = removal_estimates(removed, n, gi.influence_, K, name=name)
        lds.update(est)
        for method in ["first_order", "interaction"]:
            g_est = gi.score_groups(groups, method=method).estimate
            rows_out.append(
                [
                    f"{method} ({name})",
                    fmt(spearmanr(est[f"{method} ({name})"], lds_actual)[0]),
                    fmt(spearmanr(g_est, grp_actual)[0]),
                ]
            )
        if name == "ekfac":
            infl = gi.influence_
    if not args.no_peers:
        with tempfile.TemporaryDirectory() as tmp:
            kron = kronfluence_scores(
                net.module_,
                X,
                y,
                Xt,
                yt,
                1e-3 + 1.0 / n,
                None,
                dev,
                os.path.join(tmp, "kron"),
            )
            trak = trak_scores(
                net.module_, X, y, Xt, yt, 128, dev, os.path.join(tmp, "t")
            )
        est = removal_estimates(removed, n, infl, kron=kron, trak=trak)
        labels = np.unique(groups)
        for key, per_row in [
            ("Kronfluence EK-FAC (first order)", kron),
            ("TRAK", trak.sum(0)),
        ]:
            g_est = [per_row[groups == g].sum() for g in labels]
            rows_out.append(
                [
                    key,
                    fmt(spearmanr(est[key], lds_actual)[0]),
                    fmt(spearmanr(g_est, grp_actual)[0]),
                ]
            )
        agree = [spearmanr(kron, infl)[0], spearmanr(trak.sum(0), infl)[0]]
        print(
            "per-row Spearman with the ekfac influence_: Kronfluence "
            f"{agree[0]:.3f}, TRAK {agree[1]:.3f}"
        )
    from _common import fmt_table

    print()
    print(
        f"Exact refits: LDS over {args.subsets} random halves, group removal of "
        f"{args.n_groups} class groups"
    )
    print(fmt_table(["method", "LDS", "group Spearman"], rows_out))
    print(
        f"median |actual| halves {np.median(np.abs(lds_actual)):.3g}, "
        f"groups {np.median(np.abs(grp_actual)):.3g}"
    )
    if args.adam:
        adam_protocol(args, X, y, Xt, yt, groups, removed, target)
    print(f"total {time.perf_counter() - t_start:.0f} s")


def adam_protocol(args, X, y, Xt, yt, groups, removed, target):
    """The CNN benchmark's retraining protocol on the small network."""
    from sklearn_groupinf import GroupInfluence
    from sklearn_groupinf.torch import TorchModel

    n = len(X)

    def train(seed, Xs, ys, w=None):
        return TorchModel(
            mlp(seed),
            optimizer="adam",
            lr=1e-2,
            max_epochs=args.adam_epochs,
            max_iter=1,
            batch_size=32,
            weight_decay=1.0,
            dtype="float32",
            device="cpu",
            random_state=seed,
        ).fit(Xs, ys, sample_weight=w)

    net = train(0, X, y)
    base = target(net)
    gi = GroupInfluence(
        FrozenEstimator(net),
        curvature="ekfac",
        damping=1e-3,
        curvature_options={"fisher": "sampled", "batch_size": 128},
    ).fit(X, y, X_target=Xt, y_target=yt)
    K = gi.interaction_matrix(method="interaction", form="implicit")
    est = removal_estimates(removed, n, gi.influence_, K)
    keep = [np.setdiff1d(np.arange(n), r) for r in removed]
    actual = np.array(
        [[target(train(100 + k, X[kp], y[kp])) - base for k in range(2)] for kp in keep]
    )
    labels = np.unique(groups)
    grp = np.array(
        [target(train(0, X, y, (groups != g).astype(float))) for g in labels]
    )
    rows = []
    for method in ["first_order", "interaction"]:
        g_est = gi.score_groups(groups, method=method).estimate
        rows.append(
            [
                f"{method} (ekfac)",
                fmt(spearmanr(est[f"{method} (ekfac)"], actual.mean(1))[0]),
                fmt(spearmanr(g_est, grp - base)[0]),
            ]
        )
    from _common import fmt_table

    print()
    print(
        f"CNN benchmark protocol on the same MLP: Adam {args.adam_epochs} epochs "
        f"(stationarity {gi.stationarity_[1]:.2g}), 2 seeds per half, groups "
        "from the same initialisation and batch order"
    )
    print(fmt_table(["method", "LDS", "group Spearman"], rows))
    print(
        f"seeds' own agreement {fmt(spearmanr(actual[:, 0], actual[:, 1])[0])}; "
        f"median |actual| halves {np.median(np.abs(actual.mean(1))):.3g}, "
        f"groups {np.median(np.abs(grp - base)):.3g}"
    )


if __name__ == "__main__":
    main()
