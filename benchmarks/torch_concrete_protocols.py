"""Concrete MLP: ``first_order`` vs ``interaction`` against leave-group-out refits.

Measures whether, for a two-layer tanh MLP (8-h-1) fitted by ``TorchModel``
(squared error, L-BFGS, weight decay) on the concrete data, the ``interaction``
group estimates rank the actual leave-group-out changes of the target MSE
better (Spearman) than ``first_order`` for coherent groups. Refits are
warm-started from the trained (polished) module, as in
``tests/test_torch_model.py::_refit_comparison``.

Data: the ``concrete`` fixture of the tests (standardised features, 700 train /
330 target rows after a seed-0 permutation; the target is standardised with the
training mean and sd).

Group protocols ("coherent" = examples with similar target values, the
regression analogue of the class-coherent groups in the classification tests):

* ``deciles``: 10 groups, the target deciles (the original xfail test);
* ``bins20``: 20 groups, 20 target-quantile bins;
* ``dec-halves``: each target decile split into two random halves (20 groups),
  the analogue of ``_class_halves`` -- depends on the split seed;
* ``quint-halves``: each target quintile split into two random halves (10
  groups).

Every configuration row is printed, passing or not. Damping changes only the
estimates (the refits are shared). Run (2 shared cores, one thread: weight
decay 10 takes under a minute per width, 1 takes 9-15 minutes, 0.1 longer;
the full default grid is over an hour)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        python benchmarks/torch_concrete_protocols.py
    # a subset: --hidden 8 --weight-decay 1 --damping 0 --seeds 0 1 2
"""

import argparse
import itertools
import os
import sys
import time
import warnings

import numpy as np
from scipy.stats import spearmanr
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import mean_squared_error
from sklearn.preprocessing import StandardScaler

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # this checkout's sklearn_groupinf
from _common import fmt_table, set_up  # noqa: E402


def load():
    """The tests' ``concrete`` fixture, with the target standardised."""
    from sklearn_groupinf.datasets import load_concrete

    X, y = load_concrete()
    X = StandardScaler().fit_transform(X)
    perm = np.random.default_rng(0).permutation(len(y))
    X, y = X[perm], y[perm]
    X, y, Xt, yt = X[:700], y[:700], X[700:], y[700:]
    mu, sd = y.mean(), y.std()
    return X, (y - mu) / sd, Xt, (yt - mu) / sd


def quantile_bins(y, k):
    return np.searchsorted(np.quantile(y, np.linspace(0, 1, k + 1)[1:-1]), y)


def bin_halves(y, k, rng):
    """Each of ``k`` target-quantile bins split into two random halves."""
    bins = quantile_bins(y, k)
    groups = np.empty(len(y), dtype=int)
    for c in range(k):
        idx = rng.permutation(np.flatnonzero(bins == c))
        half = len(idx) // 2
        groups[idx[:half]], groups[idx[half:]] = 2 * c, 2 * c + 1
    return groups


def make_groups(name, y, seed):
    if name == "deciles":
        return quantile_bins(y, 10)
    if name == "bins20":
        return quantile_bins(y, 20)
    if name == "dec-halves":
        return bin_halves(y, 10, np.random.default_rng(seed))
    if name == "quint-halves":
        return bin_halves(y, 5, np.random.default_rng(seed))
    raise ValueError(name)


def fit_model(X, y, Xt, yt, hidden, weight_decay, model_seed=0):
    import torch

    from sklearn_groupinf import GroupInfluence
    from sklearn_groupinf.torch import TorchModel

    torch.manual_seed(model_seed)
    mod = torch.nn.Sequential(
        torch.nn.Linear(X.shape[1], hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
    )
    net = TorchModel(mod, loss="squared_error", weight_decay=weight_decay, device="cpu")
    gi = GroupInfluence(net).fit(X, y, X_target=Xt, y_target=yt)
    return gi


def refits(gi, X, y, Xt, yt, groups):
    """Actual change of the target MSE per group (sorted labels), warm start."""
    from sklearn_groupinf.torch import TorchModel

    params = gi.estimator_.get_params()
    actual = []
    for g in np.unique(groups):
        keep = groups != g
        m = TorchModel(**{**params, "module": gi.estimator_.module_})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m.fit(X[keep], y[keep])
        actual.append(mean_squared_error(yt, m.predict(Xt)) - gi.target_value_)
    return np.asarray(actual)


def with_damping(gi, X, y, Xt, yt, damping):
    """The same fitted (polished) model, estimates with another damping."""
    from sklearn.frozen import FrozenEstimator

    from sklearn_groupinf import GroupInfluence

    if damping == gi.damping:
        return gi
    return GroupInfluence(
        FrozenEstimator(gi.estimator_), damping=damping, polish=True
    ).fit(X, y, X_target=Xt, y_target=yt)


def compare(gi, groups, actual):
    from sklearn_groupinf.evaluation import agreement

    out = {}
    for method in ("first_order", "interaction"):
        est = gi.score_groups(groups, method=method).estimate
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            a = agreement(est, actual)
        out[method] = (spearmanr(est, actual)[0], a.median_relative_error)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--weight-decay", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    ap.add_argument("--damping", type=float, nargs="+", default=[0.0, 1e-3])
    ap.add_argument(
        "--protocols",
        nargs="+",
        default=["deciles", "bins20", "dec-halves", "quint-halves"],
    )
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="split seeds of the *-halves protocols",
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    set_up("cpu", args.threads)
    import sklearn_groupinf

    print("sklearn_groupinf from", os.path.dirname(sklearn_groupinf.__file__))
    X, y, Xt, yt = load()

    rows = []
    for h, wd in itertools.product(args.hidden, args.weight_decay):
        t0 = time.perf_counter()
        # refits do not depend on damping: fit once, refit once per grouping
        gi = fit_model(X, y, Xt, yt, h, wd)
        net = gi.estimator_
        stat = gi.stationarity_
        gis = {d: with_damping(gi, X, y, Xt, yt, d) for d in args.damping}
        for proto in args.protocols:
            seeds = args.seeds if proto.endswith("halves") else [None]
            for s in seeds:
                groups = make_groups(proto, y, s)
                actual = refits(gi, X, y, Xt, yt, groups)
                for dmp in args.damping:
                    r = compare(gis[dmp], groups, actual)
                    (rf, ef), (ri, ei) = r["first_order"], r["interaction"]
                    row = (
                        h,
                        wd,
                        dmp,
                        proto,
                        "-" if s is None else s,
                        len(actual),
                        f"{rf:.3f}",
                        f"{ri:.3f}",
                        f"{ef:.2f}",
                        f"{ei:.2f}",
                        "yes" if ri > rf else "no",
                    )
                    rows.append(row)
                    print(" ".join(map(str, row)), flush=True)
        print(
            f"# h={h} wd={wd}: {net.n_iter_} L-BFGS its, "
            f"grad {net.gradient_norm_:.1e}"
            f", stationarity before/after polish {stat[0]:.1e}/{stat[1]:.1e}, "
            f"target MSE {gi.target_value_:.3f}, {time.perf_counter() - t0:.0f} s",
            flush=True,
        )

    header = [
        "hidden",
        "wd",
        "damping",
        "groups",
        "seed",
        "n",
        "rho_first",
        "rho_inter",
        "mre_first",
        "mre_inter",
        "inter>first",
    ]
    print()
    print(fmt_table(header, rows))


if __name__ == "__main__":
    main()
