"""Torch adapter cost on MNIST: influence for 100 groups vs refitting them.

An MLP (784-h-10, tanh; h=13 gives 10,345 parameters) is trained by
``TorchModel`` (full-batch L-BFGS, weight decay 1, float64 by default) on the
first ``--n-train`` rows of the shuffled 5,000-image MNIST subset; the target
is log-loss on the last 1,000 rows. Everything runs through the public API
with the matrix-free path (``curvature="ggn"``, ``hessian_solver="cg"``):

1. ``GroupInfluence(FrozenEstimator(net)).fit``: per-example gradients
   streamed in batches (never ``n x P``), the stationarity check, one
   conjugate-gradient solve ``w = H^{-1} grad f`` and ``influence_ = Q w``;
2. ``score_groups(groups, method="interaction")``: one CG solve per group
   (block CG) and one target GGN-vector product per group;
3. refitting without a group (``TorchModel`` warm-started from the trained
   module, ``--refit-max-iter`` L-BFGS iterations, then the same Newton polish
   to stationarity that ``GroupInfluence.fit`` applies, repeated up to
   ``--refit-retries`` times when polishing stalls); the time of all
   refits is extrapolated from ``--n-refits`` measured ones, whose actual
   target changes are compared with the estimates (Spearman, median relative
   error).

Half of the 100 groups are class-coherent (rows of one class), half random.
The committed ``doc/results_torch.rst`` came from (CPU; no GPU was lent; the
default 4,000-row run took 75 min on 2 shared cores, two of its refits did
not reach stationarity, and its figures are in the issue's closing note)::

    python benchmarks/torch_groups.py --threads 1 --n-train 2000 \
        --n-refits 6 --refit-retries 0

Options: ``--device {auto,cpu,cuda}``, ``--threads``, ``--no-doc``; see
``--help``.
"""

import argparse
import resource
import time
import warnings

import numpy as np
import torch
from _common import fmt_table, set_up, write_doc
from scipy.stats import spearmanr
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator

from sklearn_groupinf import GroupInfluence, NotStationaryWarning
from sklearn_groupinf._hessian import polish_parameters
from sklearn_groupinf.backends._torch_factory import make_torch_backend
from sklearn_groupinf.datasets import load_mnist_subset
from sklearn_groupinf.torch import TorchModel


def make_groups(y, n_groups, rng):
    """Half the rows in class-coherent groups (0 .. n/2-1), half in random ones."""
    n_coh = n_groups // 2
    per_class = n_coh // 10
    groups = np.empty(len(y), dtype=int)
    coherent = rng.random(len(y)) < 0.5
    groups[coherent] = y[coherent] + 10 * rng.integers(0, per_class, coherent.sum())
    groups[~coherent] = n_coh + rng.integers(0, n_groups - n_coh, (~coherent).sum())
    return groups


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=13)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-groups", type=int, default=100)
    ap.add_argument("--n-refits", type=int, default=8)
    ap.add_argument("--damping", type=float, default=1e-3)
    ap.add_argument("--cg-tol", type=float, default=1e-8)
    ap.add_argument("--cg-block-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--max-iter", type=int, default=5000)
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--refit-max-iter", type=int, default=2000)
    ap.add_argument("--refit-retries", type=int, default=2)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    dev, env, note = set_up(args.device, args.threads)

    X, y = load_mnist_subset()
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    X, y = X[perm], y[perm]
    Xtr, ytr, Xt, yt = X[: args.n_train], y[: args.n_train], X[4000:], y[4000:]
    groups = make_groups(ytr, args.n_groups, rng)
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(784, args.hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(args.hidden, 10),
    )
    kw = dict(
        weight_decay=1.0,
        curvature="ggn",
        hessian_solver="cg",
        batch_size=args.batch_size,
        cg_tol=args.cg_tol,
        cg_block_size=args.cg_block_size,
        dtype=args.dtype,
        device=str(dev),
        max_iter=args.max_iter,
        tol=args.tol,
    )
    rows = []

    def stage(name, seconds, notes):
        rows.append([name, f"{seconds:.1f}", notes])
        print(f"{name}: {seconds:.1f} s  {notes}", flush=True)

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        net = TorchModel(module, **kw).fit(Xtr, ytr)
    conv = (
        " (did not reach tol)"
        if any(issubclass(w.category, ConvergenceWarning) for w in caught)
        else ""
    )
    P = net.n_params_
    stage(
        "TorchModel.fit (L-BFGS)",
        time.perf_counter() - t0,
        f"{net.n_iter_} iterations, max abs grad J / n = "
        f"{net.gradient_norm_:.1e}{conv}",
    )

    t0 = time.perf_counter()
    # polish=True: a frozen net is polished only on request
    gi = GroupInfluence(FrozenEstimator(net), damping=args.damping, polish=True)
    gi.fit(Xtr, ytr, X_target=Xt, y_target=yt)
    t_fit = time.perf_counter() - t0
    be, solver = gi._state.backend, gi._state.solver  # for the breakdown only
    stage(
        "GroupInfluence.fit",
        t_fit,
        f"stationarity {gi.stationarity_[0]:.1e} -> {gi.stationarity_[1]:.1e}; "
        f"1 CG solve ({solver.n_iter_[-1]} iterations, tol {args.cg_tol:g}, "
        f"damping {args.damping:g})",
    )
    t0 = time.perf_counter()
    be.removal_gradient_norms()
    stage(
        "  of which: one pass of per-example gradients",
        time.perf_counter() - t0,
        f"{len(ytr)} x {P}, vmap(grad) in batches of {args.batch_size}",
    )

    t0 = time.perf_counter()
    first = gi.score_groups(groups, method="first_order")
    stage(
        "score_groups, first_order",
        time.perf_counter() - t0,
        f"{args.n_groups} groups: sums of influences",
    )
    t0 = time.perf_counter()
    n_before = len(solver.n_iter_)
    inter = gi.score_groups(groups, method="interaction")
    iters = solver.n_iter_[n_before:]
    t_score = time.perf_counter() - t0
    stage(
        "score_groups, interaction",
        t_score,
        f"{args.n_groups} CG solves in {len(iters)} blocks (max "
        f"{max(iters)} iterations) + {args.n_groups} target GGN products",
    )
    t_influence = t_fit + t_score

    params = net.get_params()
    half = args.n_refits // 2
    chosen = list(range(half)) + list(
        range(args.n_groups // 2, args.n_groups // 2 + args.n_refits - half)
    )
    times, actual, stats = [], [], []
    for g in chosen:
        keep = groups != inter.groups[g]
        t0 = time.perf_counter()
        start = net.module_
        for attempt in range(1 + args.refit_retries):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.simplefilter("ignore", NotStationaryWarning)
                m = TorchModel(
                    **{**params, "module": start, "max_iter": args.refit_max_iter}
                ).fit(Xtr[keep], ytr[keep])
                # to the same stationarity as the influence state: Newton polish
                bk = make_torch_backend(
                    m, Xtr[keep], ytr[keep], X_target=Xt, y_target=yt
                )
                stat = polish_parameters(
                    bk, bk.removal_gradient_norms(), tol=gi.stationarity_tol
                )
            if stat[1] <= gi.stationarity_tol:
                break
            start = m.module_  # polishing stalled: more L-BFGS, polish again
        times.append(time.perf_counter() - t0)
        stats.append(stat[1])
        actual.append(bk.target_value() - gi.target_value_)
        print(
            f"refit {g}: {times[-1]:.1f} s, {attempt + 1} L-BFGS run(s), "
            f"stationarity {stat[0]:.1e} -> {stat[1]:.1e}",
            flush=True,
        )
    t_refit = float(np.mean(times)) * args.n_groups
    stage(
        f"refits of all {args.n_groups} groups (extrapolated)",
        t_refit,
        f"mean of {len(times)} warm-started refits: {np.mean(times):.1f} s each",
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    gpu = (
        f", peak GPU memory {torch.cuda.max_memory_allocated() / 1e9:.2f} GB"
        if dev.type == "cuda"
        else ""
    )
    ratio = t_refit / t_influence

    actual = np.asarray(actual)
    # only refits that reached the influence state's stationarity count
    ok = np.asarray(stats) <= gi.stationarity_tol
    used = np.asarray(chosen)[ok]
    acc = []
    for name, res in [("first_order", first), ("interaction", inter)]:
        est = res.estimate[used]
        rel = np.median(np.abs(est - actual[ok]) / np.abs(actual[ok]))
        acc.append([name, f"{spearmanr(est, actual[ok])[0]:.2f}", f"{rel:.3f}"])
    per_group = [
        [
            str(inter.groups[g]),
            "class" if g < args.n_groups // 2 else "random",
            str(inter.size[g]),
            f"{first.estimate[g]:.2e}",
            f"{inter.estimate[g]:.2e}",
            f"{a:.2e}",
            f"{st:.0e}",
        ]
        for g, a, st in zip(chosen, actual, stats)
    ]

    t1 = fmt_table(["stage", "seconds", "notes"], rows)
    t2 = fmt_table(["method", "Spearman vs refits", "median rel. error"], acc)
    t3 = fmt_table(
        [
            "group",
            "kind",
            "size",
            "first_order",
            "interaction",
            "refit",
            "refit stationarity",
        ],
        per_group,
    )
    summary = (
        f"Influence (fit + interaction scores) {t_influence:.1f} s vs "
        f"{t_refit:.1f} s of refits: **{ratio:.1f}x**. Peak host memory "
        f"(max RSS) {peak:.2f} GB{gpu}."
    )
    for t in (t1, summary, t2, t3):
        print(t + "\n")
    if args.no_doc:
        return
    title = "Torch adapter benchmark (MNIST MLP)"
    text = "\n\n".join(
        [
            title + "\n" + "=" * len(title),
            "Generated by ``benchmarks/torch_groups.py`` (do not edit by hand).",
            f"Environment: {env}. {note}".strip(),
            f"MLP 784-{args.hidden}-10 (tanh, {P:,} parameters, {args.dtype}) "
            f"trained by ``TorchModel`` (L-BFGS, weight decay 1) on {args.n_train:,} "
            "MNIST images; target: log-loss on 1,000 others; GGN curvature, "
            f"conjugate gradients, damping {args.damping:g}. {args.n_groups} groups "
            "of about "
            f"{args.n_train // args.n_groups} rows, half class-coherent, half random.",
            t1,
            summary,
            f"Accuracy on the {ok.sum()} of {len(chosen)} refitted groups whose refit "
            f"reached the stationarity of the influence state "
            f"(<= {gi.stationarity_tol:g}; change of the target log-loss when the "
            "group is removed):",
            t2,
            t3,
        ]
    )
    write_doc("results_torch.rst", text + "\n")


if __name__ == "__main__":
    main()
