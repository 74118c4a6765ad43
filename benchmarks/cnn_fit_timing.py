"""Wall time of ``fit`` and the first ``score_groups`` on the CNN of ``cnn_groups.py``.

The same network, data, groups and ``GroupInfluence`` settings as
``cnn_groups.py`` (Fashion-MNIST from the Debian package
``dataset-fashion-mnist``; 10,000 training rows, 1,000 target rows, 100
class-coherent groups, EK-FAC with the sampled-label Fisher, rank-64
target factor), without its peers and refits: a quick way to compare two
versions of the package side by side. The trained network's weights are
cached in ``--cache`` (trained on first use, 2 Adam epochs), so that every
run times the same network.

``--tree PATH`` imports ``sklearn_groupinf`` from another checkout (e.g. a
``git worktree`` of an older commit) instead of this one. To compare two
versions, alternate them::

    git worktree add /tmp/old <commit>
    for i in 1 2; do
      nice .venv/bin/python benchmarks/cnn_fit_timing.py --tree /tmp/old
      nice .venv/bin/python benchmarks/cnn_fit_timing.py
    done

Prints one line per run: the package used, ``fit``, the first
``score_groups`` and their sum, in seconds (one BLAS/torch thread).
"""

import argparse
import os
import sys
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", default=None, help="checkout to import from")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--cache", default="/tmp/cnn_fit_timing_weights.pt")
    args = parser.parse_args(argv)
    if args.tree:  # ahead of an editable install's import hook
        sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path.insert(0, os.path.abspath(args.tree))
    import numpy as np
    import torch
    from cnn_groups import class_groups, load_fashion_mnist, make_net
    from sklearn.frozen import FrozenEstimator

    import sklearn_groupinf
    from sklearn_groupinf import GroupInfluence

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    Xall, yall = load_fashion_mnist("train")
    Xtest, ytest = load_fashion_mnist("t10k")
    rng = np.random.default_rng(0)  # the draws of cnn_groups.py
    rows = rng.choice(len(Xall), 10000, replace=False)
    X, y = Xall[rows], yall[rows]
    trows = rng.choice(len(Xtest), 1000, replace=False)
    Xt, yt = Xtest[trows], ytest[trows]
    groups = class_groups(y, 100, rng)

    class Options:
        epochs, weight_decay = 2, 1e-4

    net = make_net(0, Options, torch.device("cpu"))
    if os.path.exists(args.cache):  # fit briefly for the fitted state, then load
        net.set_params(max_epochs=1, max_iter=1).fit(X[:256], y[:256])
        net.module_.load_state_dict(torch.load(args.cache))
    else:
        net.fit(X, y)
        torch.save(net.module_.state_dict(), args.cache)
    gi = GroupInfluence(
        FrozenEstimator(net),
        curvature="ekfac",
        damping=1e-3,
        target_rank=64,
        curvature_options={"fisher": "sampled", "batch_size": args.batch_size},
    )
    t0 = time.perf_counter()
    gi.fit(X, y, X_target=Xt, y_target=yt)
    t1 = time.perf_counter()
    gi.score_groups(groups, method="first_order")
    t2 = time.perf_counter()
    where = os.path.dirname(os.path.dirname(sklearn_groupinf.__file__))
    print(
        f"{where}: fit {t1 - t0:.1f} s, first score_groups {t2 - t1:.1f} s, "
        f"total {t2 - t0:.1f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
