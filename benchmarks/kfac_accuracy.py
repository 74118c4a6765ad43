"""K-FAC and EK-FAC against the exact Gauss-Newton matrix on small networks.

Two models small enough to form the exact GGN ``F`` with ``torch.func``:

* MLP: 10-16-3 tanh on ``make_classification`` (3 classes), 227 parameters;
* CNN: ``Conv2d(1, 4, 3)`` + tanh + ``Linear(144, 10)`` on 8x8 digits,
  1,490 parameters;

each trained by full-batch Adam (float64, softmax cross-entropy). For each
curvature (exact GGN; K-FAC and EK-FAC with exact output-Hessian factors;
EK-FAC with one sampled label per example, the "true" Fisher) and each damping
``lambda = c * trace(F) / (W P)`` (``c`` times the mean eigenvalue of the
per-example GGN), the table gives the relative Frobenius error of the damped
curvature ``||A_approx - A|| / ||A||``, the Spearman correlation with the exact
scores of the influence-style scores ``g_target' A^-1 g_i`` (per training row,
summed over class-coherent groups of 10 rows and over random groups of 10) and
the time to fit the curvature and solve once ("block-diag" is the exact GGN
restricted to the layers' blocks: the best any layer-wise method can do).

``--scale`` instead times the factor code on a CNN of about a million
parameters (two 3x3 convolutions with max-pooling, two linear layers, 28x28
inputs; random inputs and labels, float64): K-FAC and EK-FAC with one sampled
label per example (the scalable setting: one back-propagation per batch for the
factors), one solve, and per-example products ``Q V`` for ``k`` directions;
peak resident memory of the process. No exact reference exists at that size.

Run (``--quick``: 200 training rows instead of 500)::

    python benchmarks/kfac_accuracy.py [--quick] [--threads 1]
    python benchmarks/kfac_accuracy.py --scale [--n-scale 1000]
"""

import argparse
import time

import numpy as np
import torch
from _common import fmt_table
from scipy.stats import spearmanr
from torch.func import functional_call, grad, hessian, jacrev, vmap

from sklearn_groupinf.backends._kfac import KroneckerCurvature
from sklearn_groupinf.torch._functional import per_example_loss

DT = torch.float64
LOSS = "cross_entropy"


def flat_model(net):
    named = list(net.named_parameters())
    names, shapes = [k for k, _ in named], [p.shape for _, p in named]
    numels = [p.numel() for _, p in named]
    theta = torch.cat([p.detach().reshape(-1) for _, p in named])

    def out(th, x):
        ps = {k: t.view(s) for k, t, s in zip(names, torch.split(th, numels), shapes)}
        return functional_call(net, ps, (x[None],)).reshape(-1)

    return theta, out


def exact_ggn(net, X, y):
    theta, out = flat_model(net)
    J = vmap(jacrev(out), in_dims=(None, 0))(theta, X)
    Z = vmap(out, in_dims=(None, 0))(theta, X)
    Lam = vmap(hessian(lambda z, yi: per_example_loss(LOSS, z[None], yi[None])[0]))(
        Z, y
    )
    return torch.einsum("nkp,nkl,nlq->pq", J, Lam, J).numpy()


def example_grads(net, X, y):
    theta, out = flat_model(net)

    def li(th, x, yi):
        return per_example_loss(LOSS, out(th, x)[None], yi[None])[0]

    return vmap(grad(li), in_dims=(None, 0, 0))(theta, X, y).numpy()


def block_index(net, layer_names):
    offs, start = {}, 0
    for k, p in net.named_parameters():
        offs[k] = (start, p.numel())
        start += p.numel()
    return [
        np.concatenate(
            [np.arange(offs[n][0], sum(offs[n])) for n in (f"{m}.weight", f"{m}.bias")]
        )
        for m in layer_names
    ]


def models(n_train):
    from sklearn.datasets import load_digits, make_classification

    X, y = make_classification(
        n_samples=n_train + 100,
        n_features=10,
        n_informative=6,
        n_classes=3,
        random_state=0,
    )
    X, y = torch.tensor(X, dtype=DT), torch.tensor(y)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)
    ).to(DT)
    yield "MLP 10-16-3", mlp, X, y, n_train, 300
    Xd, yd = load_digits(return_X_y=True)
    Xd = torch.tensor(Xd / 16.0, dtype=DT).reshape(-1, 1, 8, 8)
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(144, 10),
    ).to(DT)
    yield (
        "CNN conv3x3-4 + linear",
        cnn,
        Xd[: n_train + 100],
        torch.tensor(yd)[: n_train + 100],
        n_train,
        200,
    )


def train(net, X, y, steps):
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        per_example_loss(LOSS, net(X).reshape(len(X), -1), y).mean().backward()
        opt.step()


def scale(n, k=10):
    import resource

    from sklearn_groupinf.backends._kfac import per_example_products

    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 320),
        nn.ReLU(),
        nn.Linear(320, 10),
    ).to(DT)
    P = sum(p.numel() for p in net.parameters())
    X = torch.randn(n, 1, 28, 28, dtype=DT)
    y = torch.randint(0, 10, (n,))
    rows = []
    for kind in ("kfac", "ekfac"):
        t0 = time.perf_counter()
        curv = KroneckerCurvature(
            net, LOSS, kind=kind, fisher="sampled", damping=1e-3, batch_size=128
        ).fit(X, y)
        t_fit = time.perf_counter() - t0
        V = np.random.default_rng(0).standard_normal((P, k))
        t0 = time.perf_counter()
        W = curv.solve(V)
        t_solve = time.perf_counter() - t0
        t0 = time.perf_counter()
        per_example_products(net, LOSS, X, y, W, batch_size=128)
        t_prod = time.perf_counter() - t0
        rows.append([kind, P, n, k, f"{t_fit:.1f}", f"{t_solve:.2f}", f"{t_prod:.1f}"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(
        fmt_table(
            ["curvature", "P", "n", "k", "fit (s)", "solve k (s)", "Q V (s)"], rows
        )
    )
    print(
        f"peak resident memory of the process: {rss:.2f} GB "
        f"(n x P in float64 would be {n * P * 8 / 1e9:.1f} GB)"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 training rows")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scale", action="store_true", help="time a ~1M-parameter CNN")
    ap.add_argument("--n-scale", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.scale:
        return scale(args.n_scale)
    n_train = 200 if args.quick else 500
    rng = np.random.default_rng(0)
    rows = []
    for name, net, Xall, yall, n, steps in models(n_train):
        X, y, Xt, yt = Xall[:n], yall[:n], Xall[n:], yall[n:]
        train(net, X, y, steps)
        t0 = time.perf_counter()
        F = exact_ggn(net, X, y)
        t_ggn = time.perf_counter() - t0
        Q = example_grads(net, X, y)
        gt = example_grads(net, Xt, yt).sum(0)
        W, P = len(X), len(F)
        mean_eig = np.trace(F) / (W * P)
        yn = y.numpy()
        cls = []
        for c in np.unique(yn):
            ids = rng.permutation(np.flatnonzero(yn == c))
            cls += [ids[k : k + 10] for k in range(0, len(ids), 10)]
        perm = rng.permutation(n)
        rnd = [perm[k : k + 10] for k in range(0, n, 10)]
        layers = [
            k
            for k, m in net.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
        ]
        B = np.zeros_like(F)
        for idx in block_index(net, layers):
            B[np.ix_(idx, idx)] = F[np.ix_(idx, idx)]
        for c in (1.0, 10.0):
            lam = c * mean_eig
            A = F + lam * W * np.eye(P)
            t0 = time.perf_counter()
            exact = Q @ np.linalg.solve(A, gt)
            t_exact = t_ggn + time.perf_counter() - t0

            def row(method, scores, Aapprox, secs):
                err = np.linalg.norm(Aapprox - A) / np.linalg.norm(A)
                sp = [
                    spearmanr(exact, scores)[0],
                    spearmanr(
                        [exact[g].sum() for g in cls], [scores[g].sum() for g in cls]
                    )[0],
                    spearmanr(
                        [exact[g].sum() for g in rnd], [scores[g].sum() for g in rnd]
                    )[0],
                ]
                rows.append(
                    [name, P, n, f"{c:g}", method, f"{err:.3f}"]
                    + [f"{s:.3f}" for s in sp]
                    + [f"{secs:.2f}"]
                )

            row("exact GGN", exact, A, t_exact)
            Ab = B + lam * W * np.eye(P)
            row("block-diag", Q @ np.linalg.solve(Ab, gt), Ab, float("nan"))
            for label, kw in (
                ("K-FAC", dict(kind="kfac")),
                ("EK-FAC", dict(kind="ekfac")),
                ("EK-FAC sampled", dict(kind="ekfac", fisher="sampled", n_draws=1)),
            ):
                t0 = time.perf_counter()
                curv = KroneckerCurvature(net, LOSS, damping=lam, **kw).fit(X, y)
                w = curv.solve(gt)
                secs = time.perf_counter() - t0
                row(label, Q @ w, curv.dense(), secs)
    header = [
        "model",
        "P",
        "n",
        "damping/mean eig",
        "curvature",
        "rel. Frob. err",
        "Spearman rows",
        "Spearman class groups",
        "Spearman random groups",
        "time (s)",
    ]
    print(fmt_table(header, rows))
    print(
        "time: curvature fit + one solve (exact GGN: forming it + one solve); "
        "block-diag has no fast path and no time."
    )


if __name__ == "__main__":
    main()
