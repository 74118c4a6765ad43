"""K-FAC factors and EK-FAC's correction from row samples: accuracy vs all rows.

The network and data of ``benchmarks/cnn_groups.py`` (the ResNet-style CNN
of 1.04 M parameters, 2 Adam epochs in float32 on 10,000 Fashion-MNIST rows,
1,000 target rows; ``--quick``: 2,000 rows, 200 target rows). The EK-FAC
curvature (sampled-label Fisher, ``damping=1e-3`` per example, weight decay
``1e-4`` as a penalty on every parameter) is fitted with the factors and
the correction on every row, and with either from seeded uniform samples
(``factor_rows``, ``correction_rows``). Printed per setting:

- the relative Frobenius error of the corrected eigenvalues (all layers;
  only with the factors of every row, which fix the eigenbasis);
- the relative error and the Spearman correlation of the first-order
  influences ``q_i' H^-1 grad f`` of the training rows and of the sums over
  100 class-coherent groups of 100 rows (as in ``cnn_groups.py``), against
  the factors and the correction on every row (the last row: every row,
  with the labels of the sampled Fisher drawn from another seed, which is
  the variation that the sampled Fisher has anyway);
- the wall time of the curvature fit.

Run::

    nice python benchmarks/kfac_sample_rows.py           # 3.6 min on 2 cores
    nice python benchmarks/kfac_sample_rows.py --quick
"""

import argparse
import os
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _common import fmt_table, set_up  # noqa: E402
from cnn_groups import class_groups, load_fashion_mnist, train  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument(
        "--factor-rows", type=int, nargs="+", default=[1000, 2000, 5000]
    )
    parser.add_argument("--with-correction-rows", type=int, default=2000)
    args = parser.parse_args(argv)
    import torch

    from sklearn_groupinf.backends._kfac import KroneckerCurvature
    from sklearn_groupinf.backends._kfac_products import per_example_products

    dev, env, _ = set_up("cpu", 1)
    n, m = (2000, 200) if args.quick else (10000, 1000)
    Xall, yall = load_fashion_mnist("train")
    Xtest, ytest = load_fashion_mnist("t10k")
    rng = np.random.default_rng(0)
    rows = rng.choice(len(Xall), n, replace=False)
    X, y = Xall[rows], yall[rows]
    trows = rng.choice(len(Xtest), m, replace=False)
    Xt, yt = Xtest[trows], ytest[trows]
    groups = class_groups(y, n // 100, rng)

    class Args:
        epochs, weight_decay = 2, 1e-4

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = train(0, X, y, Args, dev)
    module = net.module_
    Xf = torch.as_tensor(X, dtype=torch.float32)
    yf = torch.as_tensor(y)
    Xtf = torch.as_tensor(Xt, dtype=torch.float32)
    module.eval()
    module.zero_grad()
    torch.nn.functional.cross_entropy(module(Xtf), torch.as_tensor(yt)).backward()
    grad_f = torch.cat([p.grad.reshape(-1) for p in module.parameters()])
    grad_f = grad_f.to(torch.float64).numpy()
    module.zero_grad()

    settings = [(None, None)] + [(None, r) for r in args.rows if r < n]
    settings += [(f, args.with_correction_rows) for f in args.factor_rows if f < n]
    # the noise floor: every row, the labels of the sampled Fisher drawn anew
    settings.append(("all, other draws", None))
    lams, ws, times = {}, {}, {}
    for r in settings:
        t0 = time.perf_counter()
        curv = KroneckerCurvature(
            module,
            "cross_entropy",
            kind="ekfac",
            fisher="sampled",
            damping=1e-3,
            batch_size=128,
            penalty=1e-4,
            factor_rows=r[0] if isinstance(r[0], int) else None,
            correction_rows=r[1],
            random_state=1 if isinstance(r[0], str) else 0,
        ).fit(Xf, yf)
        times[r] = time.perf_counter() - t0
        lams[r] = np.concatenate(
            [f["lam"].double().reshape(-1).numpy() for f in curv.factors_]
        )
        ws[r] = curv.solve(grad_f)
        print(f"  factor_rows, correction_rows={r}: fit {times[r]:.1f} s", flush=True)
    W = np.stack([ws[r] for r in settings], 1)
    infl = per_example_products(module, "cross_entropy", Xf, yf, W, batch_size=128)
    M = np.zeros((groups.max() + 1, n))
    M[groups, np.arange(n)] = 1.0
    gsum = M @ infl

    def rel(a, b):
        return np.linalg.norm(a - b) / np.linalg.norm(b)

    out = []
    for j, r in enumerate(settings):
        out.append(
            [
                "all" if r[0] is None else r[0],
                "all" if r[1] is None else r[1],
                f"{rel(lams[r], lams[None, None]):.3f}"
                if not isinstance(r[0], int)
                else "—",
                f"{rel(infl[:, j], infl[:, 0]):.3f}",
                f"{spearmanr(infl[:, j], infl[:, 0])[0]:.4f}",
                f"{rel(gsum[:, j], gsum[:, 0]):.3f}",
                f"{spearmanr(gsum[:, j], gsum[:, 0])[0]:.4f}",
                f"{times[r]:.1f}",
            ]
        )
    print()
    print(env)
    print(f"CNN, {n} training rows, {m} target rows, {n // 100} class groups")
    print(
        fmt_table(
            [
                "factor rows",
                "correction rows",
                "eigenvalues rel. err",
                "influence rel. err",
                "influence Spearman",
                "group sums rel. err",
                "group sums Spearman",
                "fit (s)",
            ],
            out,
        )
    )


if __name__ == "__main__":
    main()
