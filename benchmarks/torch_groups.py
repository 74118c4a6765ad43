"""Torch adapter cost on MNIST: influence for 100 groups vs refitting them.

An MLP (784-h-10, tanh; h=16 gives 12,730 parameters, h=13 gives 10,355)
trained by ``TorchModel`` (full-batch L-BFGS, weight decay 1) on the first
``--n-train`` rows of the 5,000-image MNIST subset; the target is log-loss on
the last 1,000. Timed stages, all through ``TorchBackend`` with the
matrix-free path (``curvature="ggn"``, ``hessian_solver="cg"``):

1. per-example gradients of all training rows (``vmap(grad)``, batches);
2. curvature solves: ``H^{-1}`` applied to the 100 group gradient sums and to
   the target gradient (block conjugate gradients on GGN-vector products);
3. scoring the 100 groups with ``interaction`` (target GGN-vector products);
4. refitting without a group (warm-started L-BFGS); the time of 100 refits is
   extrapolated from ``--n-refits`` measured ones.

Group scores need only ``U_S = H^{-1} sum_{i in S} q_i``, so this script solves
101 systems rather than the ``n`` per-example ones that
``GroupInfluence.fit`` solves (it keeps ``U`` for every row).

Run (CPU; no GPU was available when the committed results were made). The
committed ``doc/results_torch.rst`` came from the second, reduced command
(float32, 1,000 training rows), sized to finish on 2 heavily shared cores::

    nice python benchmarks/torch_groups.py --threads 2
    nice -n 2 python benchmarks/torch_groups.py --n-train 1000 --hidden 13 \\
        --damping 1e-2 --cg-tol 1e-3 --cg-max-iter 150 --max-iter 1500 \\
        --n-refits 2 --dtype float32 --batch-size 500

Writes ``doc/results_torch.rst``.
"""

import argparse
import pathlib
import platform
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import log_loss

from sklearn_groupinf.datasets import load_mnist_subset
from sklearn_groupinf.torch import TorchModel
from sklearn_groupinf.torch._cg import CGConvergenceWarning, CGHessianSolver
from sklearn_groupinf.torch._factory import make_torch_backend


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--n-groups", type=int, default=100)
    ap.add_argument("--n-refits", type=int, default=3)
    ap.add_argument("--damping", type=float, default=1e-3)
    ap.add_argument("--cg-tol", type=float, default=1e-6)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--max-iter", type=int, default=3000)
    ap.add_argument("--cg-max-iter", type=int, default=2000)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parents[1]
                                         / "doc" / "results_torch.rst"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    X, y = load_mnist_subset()
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    X, y = X[perm], y[perm]
    Xtr, ytr = X[: args.n_train], y[: args.n_train]
    Xt, yt = X[4000:], y[4000:]
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(784, args.hidden), torch.nn.Tanh(),
                                 torch.nn.Linear(args.hidden, 10))
    kw = dict(weight_decay=1.0, curvature="ggn", hessian_solver="cg",
              batch_size=args.batch_size, cg_tol=args.cg_tol,
              cg_max_iter=args.cg_max_iter, dtype=args.dtype,
              cg_block_size=128, device=args.device, max_iter=args.max_iter)
    rows = []

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        net = TorchModel(module, **kw).fit(Xtr, ytr)
    t_fit = time.perf_counter() - t0
    conv = "" if not [w for w in caught if issubclass(w.category,
                                                       ConvergenceWarning)] \
        else " (did not reach tol)"
    P = net.n_params_
    rows.append(("initial fit (L-BFGS)", t_fit,
                 f"{net.n_iter_} iterations, max|grad J|/n = "
                 f"{net.gradient_norm_:.1e}{conv}"))

    print(f"fit done ({t_fit:.1f} s, {net.n_iter_} iterations)", flush=True)
    be = make_torch_backend(net, Xtr, ytr, X_target=Xt, y_target=yt)
    dev = str(be.device)
    groups = rng.integers(0, args.n_groups, size=len(ytr))
    # class-coherent half of the groups: a slice of one class each
    for g in range(args.n_groups // 2):
        members = np.flatnonzero((ytr == g % 10) & (groups == g))
        groups[members] = g

    t0 = time.perf_counter()
    Q = be.removal_gradients()
    t_grad = time.perf_counter() - t0
    print(f"gradients done ({t_grad:.1f} s)", flush=True)
    rows.append(("per-example gradients", t_grad,
                 f"{len(ytr)} x {P} (vmap(grad), batches of {args.batch_size})"))

    t0 = time.perf_counter()
    member = np.zeros((args.n_groups, len(ytr)))
    member[groups, np.arange(len(ytr))] = 1.0
    QG = member @ Q  # (n_groups, P) group gradient sums
    g_f = be.target_gradient()
    solver = CGHessianSolver(be, args.damping)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CGConvergenceWarning)
        W = solver.solve(np.column_stack([QG.T, g_f]))
    cg_warn = [w for w in caught if issubclass(w.category, CGConvergenceWarning)]
    cg_note = "" if not cg_warn else f" -- NOT converged: {cg_warn[0].message}"
    t_solve = time.perf_counter() - t0
    print(f"solves done ({t_solve:.1f} s, {solver.n_iter_} CG iterations)",
          flush=True)
    UG, w = W[:, :-1].T, W[:, -1]
    rows.append(("curvature solves", t_solve,
                 f"{args.n_groups + 1} right-hand sides, CG iterations "
                 f"{max(solver.n_iter_)} (tol {args.cg_tol:g}, damping "
                 f"{args.damping:g}){cg_note}"))

    t0 = time.perf_counter()
    first = QG @ w
    HfU = be._target_hvp(torch.as_tensor(UG, dtype=be.dtype, device=be.device))
    quad = np.einsum("ij,ij->i", UG, HfU.detach().cpu().double().numpy())
    interaction = first + 0.5 * quad
    t_score = time.perf_counter() - t0
    rows.append(("scoring groups (interaction)", t_score,
                 f"{args.n_groups} groups, target GGN-vector products"))
    t_influence = t_grad + t_solve + t_score

    f0 = be.target_value()
    params = net.get_params()
    refit_times, actual, chosen = [], [], []
    for g in range(args.n_refits):
        keep = groups != g
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m = TorchModel(**{**params, "module": net.module_}).fit(Xtr[keep],
                                                                   ytr[keep])
        refit_times.append(time.perf_counter() - t0)
        print(f"refit {g} done ({refit_times[-1]:.1f} s)", flush=True)
        actual.append(log_loss(yt, m.predict_proba(Xt), labels=np.arange(10)) - f0)
        chosen.append(g)
    t_refit = float(np.mean(refit_times)) * args.n_groups
    rows.append((f"refits ({args.n_groups}, extrapolated)", t_refit,
                 f"mean of {args.n_refits} warm-started refits: "
                 f"{np.mean(refit_times):.1f} s each"))

    ratio = t_refit / t_influence
    lines = [
        f"{'stage':<36}{'seconds':>10}  notes",
        "-" * 100,
    ]
    for name, sec, note in rows:
        lines.append(f"{name:<36}{sec:>10.1f}  {note}")
    lines.append(f"{'influence total (grads+solves+score)':<36}{t_influence:>10.1f}")
    lines.append(f"refit / influence time ratio: {ratio:.1f}x")
    lines.append("")
    lines.append("group  size  first_order  interaction  actual (refit)")
    for g, a in zip(chosen, actual):
        lines.append(f"{g:>5}  {int((groups == g).sum()):>4}  {first[g]:>11.2e}  "
                     f"{interaction[g]:>11.2e}  {a:>14.2e}")
    env = (f"device {dev}, {args.dtype}, torch {torch.__version__}, "
           f"{args.threads} threads, "
           f"{platform.processor() or platform.machine()}, n_params {P}")
    print(env)
    print("\n".join(lines))
    write_rst(pathlib.Path(args.out), env, rows, t_influence, ratio, chosen,
              groups, first, interaction, actual, args)


def write_rst(path, env, rows, t_influence, ratio, chosen, groups, first,
              interaction, actual, args):
    out = [
        "Torch adapter benchmark (MNIST MLP)",
        "===================================",
        "",
        "Generated by ``benchmarks/torch_groups.py`` (do not edit by hand).",
        "",
        f"Setting: {env}. MLP 784-{args.hidden}-10 (tanh) trained by "
        f"``TorchModel`` (L-BFGS, weight decay 1) on {args.n_train:,} MNIST "
        "images; target: log-loss on 1,000 others; GGN curvature, conjugate "
        "gradients, damping "
        f"{args.damping:g}. {args.n_groups} groups (half of them slices of one "
        "class). No GPU was available for this run.",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - stage",
        "     - seconds",
        "     - notes",
    ]
    for name, sec, note in rows:
        out += [f"   * - {name}", f"     - {sec:.1f}", f"     - {note}"]
    out += ["   * - influence total", f"     - {t_influence:.1f}",
            "     - gradients + solves + scoring", "",
            f"Refitting the {args.n_groups} groups takes **{ratio:.1f}x** the "
            "influence computation (refit time extrapolated from "
            f"{args.n_refits} measured warm-started refits).", "",
            "Estimates for the refitted groups (change of the target log-loss "
            "when the group is removed):", "",
            ".. list-table::", "   :header-rows: 1", "",
            "   * - group", "     - size", "     - first_order", "     - interaction",
            "     - actual (refit)"]
    for g, a in zip(chosen, actual):
        out += [f"   * - {g}", f"     - {int((groups == g).sum())}",
                f"     - {first[g]:.3e}", f"     - {interaction[g]:.3e}",
                f"     - {a:.3e}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
