"""A 1M-parameter ResNet-style CNN on Fashion-MNIST: EK-FAC influence vs retraining.

Setup (all fixed seeds): 10,000 training rows drawn at random from the
Fashion-MNIST training file, 1,000 target rows from its test file (Debian
package ``dataset-fashion-mnist``, ``apt-get install dataset-fashion-mnist``:
idx files under ``/usr/share/datasets/fashion-mnist``, read offline; pixels
scaled to [0, 1]). The network: a 3x3 convolution (16 channels), max-pooling,
a residual block (two 3x3 convolutions, identity skip), a convolution to 32
channels, max-pooling, a second residual block, then ``Linear(1568, 640)``,
ReLU and ``Linear(640, 10)``: 1,038,506 parameters, most of them in the first
linear layer (no batch normalisation). It is trained by
``TorchModel(optimizer="adam", lr=1e-3, batch_size=128, weight_decay=1e-4)``
in float32 for ``--epochs`` (2) epochs (one L-BFGS step after them, as
``TorchModel`` always ends); ``GroupInfluence(curvature="ekfac",
damping=1e-3)`` (sampled-label Fisher, rank ``--target-rank`` (64, the
default) target factor; the default samples of 2,000 rows for the
Kronecker factors and for the eigenvalue correction, whose accuracy
against every row ``benchmarks/kfac_sample_rows.py`` measures on this
network) computes in the network's precision (float32).

What it measures:

1. Wall time of ``GroupInfluence(curvature="ekfac")`` ``fit`` and of
   ``score_groups`` (first_order, interaction) for 100 groups of 100 rows
   (class-coherent: rows sorted by class and cut into blocks of 100, so at
   most 9 blocks straddle two classes; random), against one training epoch
   measured in the same run (a plain Adam pass over the same rows with the
   same batch size: float32, as trained and as the package computes, and
   float64 for comparison), and the peak resident memory of the process
   during each step (sampled every 50 ms; the step's increase over its start
   is printed too).
2. Kronfluence 1.0.1 EK-FAC on the same trained network (its defaults:
   sampled-label Fisher, float32 factors and scores, float64
   eigendecomposition; ``damping_factor`` set to this package's per-example
   damping; the eigenvalue correction fitted on ``--kron-lambda-rows``
   (1,000) rows through its ``lambda_max_examples``, because on this CPU it
   rotates each row's full per-example gradient, about 2.2e9 multiply-adds
   a row for the 1568 x 640 layer; the 1,000 target rows' gradients summed
   (``aggregate_query_gradients``), so that its pairwise
   score of a training row is the first-order effect of that row on the
   summed target loss): Spearman and Pearson with this package's
   ``influence_`` (the same quantity up to the positive factor
   ``1 / (n m)``), wall time and peak memory.
3. TRAK (``traker`` 0.3.2, one checkpoint, ``BasicProjector`` with a
   Gaussian projection of ``--proj-dim`` dimensions held in memory, float32:
   the CUDA projector needs ``fast_jl`` and a GPU): wall time, peak memory
   and LDS. Its score of a training row for a target row is the effect on
   the target's correct-class margin, so its estimate of the change of the
   target loss when rows are removed is the sum of their scores (a
   positive score: the row raises the target's margin, i.e. lowers its
   loss; ``benchmarks/kfac_lds_check.py`` checks this sign against exact
   refits).
4. Accuracy against retraining.

   - LDS (linear datamodeling score): ``--lds-subsets`` (10) random halves
     of the training rows; on each, the network is retrained from scratch
     (``--lds-seeds`` (2) seeds: initialisation and batch order) and the
     target log-loss averaged over the seeds; LDS is the Spearman
     correlation over the subsets between that mean and each method's
     estimate of the change when the other half is removed. The Spearman
     correlation between two seeds' own outcomes is printed too (how
     reproducible the truth is at this number of seeds).
   - Group removal: ``--group-refits`` (5) groups of each kind (class groups
     spread over the classes, random groups) are removed by retraining with
     their ``sample_weight`` set to zero (removal under the objective's
     contract) from the same initialisation and batch order as the trained
     network, so that the only difference is the removed rows; Spearman of
     the estimates against the actual change of the target log-loss.

Measured on 2 shared CPU cores (no GPU was lent to the session that wrote
this; ``--device cuda`` runs the network and both influence methods on a GPU)
with the command below; the figures are in ``doc/results_cnn.rst``, which
the script writes.

Install (torch 2.13.0 CPU first, as ``scripts/test.sh`` does; kronfluence
without its torchvision requirement, whose CPU-compatible wheel PyPI lacks
and which kronfluence never imports)::

    pip install -e ".[benchmarks]" && pip install --no-deps kronfluence==1.0.1

Run::

    nice python benchmarks/cnn_groups.py            # 22-55 min on 2 loaded cores
    nice python benchmarks/cnn_groups.py --quick    # 2,000 rows, 9 min
    nice python benchmarks/cnn_groups.py --no-refits --no-kronfluence --no-trak

The last is timing only (no retraining, no peers, no doc page); add
``--profile FILE`` to see where ``fit`` and the first ``score_groups``
calls spend their time (cProfile, cumulative seconds).

``--quick``: 2,000 training rows, 200 target rows, 20 groups of 100, 6 LDS
subsets x 2 seeds, 3 group refits per kind, Kronfluence's correction on
300 rows, TRAK with 128 dimensions; it prints and does not write the doc
page.
"""

import argparse
import copy
import gzip
import os
import tempfile
import threading
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _common import fmt_table, set_up, write_doc  # noqa: E402
from scipy.stats import pearsonr, spearmanr  # noqa: E402
from sklearn.frozen import FrozenEstimator  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


# ---------------------------------------------------------------- data, model
def load_fashion_mnist(kind):
    """``(X, y)`` of the ``train`` or ``t10k`` idx files, pixels in [0, 1]."""
    path = os.path.join(DATA, f"{kind}-images-idx3-ubyte.gz")
    if not os.path.exists(path):
        raise SystemExit(
            f"{path} not found: install the Debian package dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist)."
        )
    with gzip.open(path) as fh:
        X = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(os.path.join(DATA, f"{kind}-labels-idx1-ubyte.gz")) as fh:
        y = np.frombuffer(fh.read(), np.uint8, offset=8)
    return X / 255.0, y.astype(np.int64)


def resnet_like(seed):
    """The CNN described in the module docstring, initialised from ``seed``."""
    import torch

    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(x + self.conv2(self.relu(self.conv1(x))))

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        Residual(16),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        Residual(32),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 640),
        nn.ReLU(),
        nn.Linear(640, 10),
    )


def make_net(seed, args, dev):
    from sklearn_groupinf.torch import TorchModel

    return TorchModel(
        resnet_like(seed),
        optimizer="adam",
        lr=1e-3,
        max_epochs=args.epochs,
        max_iter=1,
        batch_size=128,
        weight_decay=args.weight_decay,
        dtype="float32",
        device=dev.type,
        random_state=seed,
    )


def train(seed, X, y, args, dev, sample_weight=None):
    net = make_net(seed, args, dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return net.fit(X, y, sample_weight=sample_weight)


def target_loss(net, X, y):
    return log_loss(y, net.predict_proba(X), labels=np.arange(10))


def epoch_seconds(X, y, dtype, dev):
    """One plain Adam epoch (batch 128) over ``X`` from a fresh network."""
    import torch

    module = resnet_like(0).to(device=dev, dtype=dtype)
    Xt = torch.as_tensor(X, dtype=dtype, device=dev)
    yt = torch.as_tensor(y, device=dev)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    perm = torch.randperm(len(X), device=dev)
    for i0 in range(0, len(X), 128):
        idx = perm[i0 : i0 + 128]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(module(Xt[idx]), yt[idx]).backward()
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


# ------------------------------------------------------------------ metering
class Meter:
    """Wall time and peak RSS (sampled every 50 ms) of named steps."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.rows = []

    def rss(self):
        return self.proc.memory_info().rss / 1024**3

    def __call__(self, name, fn):
        start = self.rss()
        peak = [start]
        done = threading.Event()

        def sample():
            while not done.wait(0.05):
                peak[0] = max(peak[0], self.rss())

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn()
        wall = time.perf_counter() - t0
        done.set()
        th.join()
        peak[0] = max(peak[0], self.rss())
        self.rows.append([name, wall, peak[0], peak[0] - start])
        print(f"  {name}: {wall:.1f} s, peak RSS {peak[0]:.2f} GB", flush=True)
        return out


# ------------------------------------------------------------------- methods
def kronfluence_scores(module, X, y, Xt, yt, damping, lambda_rows, dev, workdir):
    """Per-training-row EK-FAC scores of Kronfluence on the summed target loss."""
    import torch
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    F = torch.nn.functional

    class Classification(Task):
        def compute_train_loss(self, batch, model, sample=False):
            xb, yb = batch
            logits = model(xb)
            if sample:
                with torch.no_grad():
                    probs = torch.softmax(logits.detach(), dim=-1)
                    yb = torch.multinomial(probs, 1).flatten()
            return F.cross_entropy(logits, yb, reduction="sum")

        def compute_measurement(self, batch, model):
            xb, yb = batch
            return F.cross_entropy(model(xb), yb, reduction="sum")

    def dataset(A, b):
        return torch.utils.data.TensorDataset(
            torch.as_tensor(A, dtype=torch.float32), torch.as_tensor(b)
        )

    task = Classification()
    model = prepare_model(copy.deepcopy(module).to(torch.float32).eval(), task)
    analyzer = Analyzer(
        "cnn_groups",
        model,
        task,
        cpu=dev.type == "cpu",
        disable_tqdm=True,
        output_dir=workdir,
    )
    analyzer.fit_all_factors(
        "ekfac",
        dataset=dataset(X, y),
        per_device_batch_size=128,
        factor_args=FactorArguments(strategy="ekfac", lambda_max_examples=lambda_rows),
        overwrite_output_dir=True,
    )
    analyzer.compute_pairwise_scores(
        "scores",
        factors_name="ekfac",
        query_dataset=dataset(Xt, yt),
        train_dataset=dataset(X, y),
        per_device_query_batch_size=128,
        per_device_train_batch_size=128,
        score_args=ScoreArguments(
            damping_factor=damping, aggregate_query_gradients=True
        ),
        overwrite_output_dir=True,
    )
    scores = analyzer.load_pairwise_scores("scores")["all_modules"]
    return scores.to(torch.float64).sum(0).cpu().numpy()


def trak_scores(module, X, y, Xt, yt, proj_dim, dev, workdir):
    """TRAK scores ``(m, n)`` (one checkpoint, Gaussian projection)."""
    import torch
    from trak import TRAKer
    from trak.projectors import BasicProjector, ProjectionType

    model = copy.deepcopy(module).to(torch.float32).eval()
    n_params = sum(p.numel() for p in model.parameters())
    projector = BasicProjector(
        grad_dim=n_params,
        proj_dim=proj_dim,
        seed=0,
        proj_type=ProjectionType.normal,
        device=dev.type,
        block_size=proj_dim,
    )
    traker = TRAKer(
        model=model,
        task="image_classification",
        train_set_size=len(X),
        save_dir=workdir,
        device=dev.type,
        projector=projector,
        proj_dim=proj_dim,
        use_half_precision=False,
        logging_level=40,
    )
    Xf = torch.as_tensor(X, dtype=torch.float32, device=dev)
    yf = torch.as_tensor(y, device=dev)
    traker.load_checkpoint(model.state_dict(), model_id=0)
    for i0 in range(0, len(X), 100):
        traker.featurize(
            batch=(Xf[i0 : i0 + 100], yf[i0 : i0 + 100]),
            num_samples=len(Xf[i0 : i0 + 100]),
        )
    traker.finalize_features()
    # finalize_features frees a one-block BasicProjector's matrix and project()
    # does not regenerate it (traker 0.3.2): regenerate it from its seed
    projector.generate_sketch_matrix(projector.generator_states[0])
    Xq = torch.as_tensor(Xt, dtype=torch.float32, device=dev)
    yq = torch.as_tensor(yt, device=dev)
    traker.start_scoring_checkpoint(
        exp_name="target",
        checkpoint=model.state_dict(),
        model_id=0,
        num_targets=len(Xt),
    )
    for i0 in range(0, len(Xt), 100):
        traker.score(
            batch=(Xq[i0 : i0 + 100], yq[i0 : i0 + 100]),
            num_samples=len(Xq[i0 : i0 + 100]),
        )
    scores = traker.finalize_scores(exp_name="target")  # (n_train, n_targets)
    return np.asarray(scores, dtype=np.float64).T


# ------------------------------------------------------------------- helpers
def removal_estimates(removed, n, infl, K=None, kron=None, trak=None, name="ekfac"):
    """Each method's estimate of the change of the target loss when the rows
    ``removed[s]`` are removed (this package's sign: positive = removal
    raises the loss).

    ``infl``: ``influence_``; ``K``: the per-row interaction operator;
    ``kron``: Kronfluence's per-row scores on the summed target loss (same
    sign as ``influence_``); ``trak``: TRAK scores ``(m, n)``, positive when a
    training row raises a target's correct-class margin, i.e. lowers its
    loss, so removing it raises the loss: the estimate is ``+`` their sum.
    ``benchmarks/kfac_lds_check.py`` checks every sign against exact refits.
    """
    out = {f"first_order ({name})": [infl[r].sum() for r in removed]}
    if K is not None:
        ones = [np.isin(np.arange(n), r).astype(float) for r in removed]
        out[f"interaction ({name})"] = [
            infl[r].sum() + 0.5 * o @ (K @ o) for r, o in zip(removed, ones)
        ]
    if kron is not None:
        out["Kronfluence EK-FAC (first order)"] = [kron[r].sum() for r in removed]
    if trak is not None:
        out["TRAK"] = [trak[:, r].sum() for r in removed]
    return out


def class_groups(y, n_groups, rng):
    order = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    )
    out = np.empty(len(y), int)
    out[order] = np.arange(len(y)) * n_groups // len(y)
    return out


def profile_start(path):
    if not path:
        return None
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    return prof


def profile_stop(prof, path):
    if prof is None:
        return
    import pstats

    prof.disable()
    prof.dump_stats(path)
    pstats.Stats(prof).sort_stats("cumulative").print_stats("sklearn_groupinf", 40)


def corr(a, b):
    return spearmanr(a, b)[0] if len(a) >= 3 else np.nan


def median_abs(values, spec):
    """``median(|values|)`` formatted, or a dash when there are none (no
    refits: ``--no-refits``)."""
    return format(np.median(np.abs(values)), spec) if len(values) else "—"


def fmt(x, nd=3):
    return "—" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-target", type=int, default=None)
    parser.add_argument("--n-groups", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--damping", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--lds-subsets", type=int, default=None)
    parser.add_argument("--lds-seeds", type=int, default=2)
    parser.add_argument("--group-refits", type=int, default=None)
    parser.add_argument("--proj-dim", type=int, default=None)
    parser.add_argument("--target-rank", type=int, default=64)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="rows per batch of GroupInfluence's passes (training: always 128)",
    )
    parser.add_argument("--kron-lambda-rows", type=int, default=None)
    parser.add_argument("--no-kronfluence", action="store_true")
    parser.add_argument("--no-trak", action="store_true")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument(
        "--profile",
        default=None,
        metavar="FILE",
        help="cProfile fit and the first score_groups calls (class groups), "
        "write the stats to FILE and print the largest cumulative entries "
        "(the profiler's overhead is in that run's timings)",
    )
    parser.add_argument(
        "--no-refits",
        action="store_true",
        help="timing only: no LDS or group refits (implies --no-doc)",
    )
    args = parser.parse_args(argv)
    q = args.quick
    defaults = dict(
        n_train=2000 if q else 10000,
        n_target=200 if q else 1000,
        n_groups=20 if q else 100,
        epochs=2,
        lds_subsets=6 if q else 10,
        group_refits=3 if q else 5,
        proj_dim=128 if q else 256,
        kron_lambda_rows=300 if q else 1000,
    )
    if args.no_refits:
        args.lds_subsets, args.group_refits, args.no_doc = 0, 0, True
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    import torch

    from sklearn_groupinf import GroupInfluence

    dev, env, note = set_up(args.device, args.threads)
    t_start = time.perf_counter()
    Xall, yall = load_fashion_mnist("train")
    Xtest, ytest = load_fashion_mnist("t10k")
    rng = np.random.default_rng(0)
    rows = rng.choice(len(Xall), args.n_train, replace=False)
    X, y = Xall[rows], yall[rows]
    trows = rng.choice(len(Xtest), args.n_target, replace=False)
    Xt, yt = Xtest[trows], ytest[trows]
    n, m, ng = len(X), len(Xt), args.n_groups
    groups = {
        "class": class_groups(y, ng, rng),
        "random": rng.permutation(n) % ng,
    }
    meter = Meter()

    # ------------------------------------------------------------ training
    net = meter(
        f"train ({args.epochs} Adam epochs, float32)", lambda: train(0, X, y, args, dev)
    )
    P = net.n_params_
    base_loss = target_loss(net, Xt, yt)
    acc = float(np.mean(net.predict(Xt) == yt))
    print(
        f"CNN with {P:,} parameters; target log-loss {base_loss:.4f}, "
        f"accuracy {acc:.3f}"
    )
    ep32 = meter(
        "one epoch, float32 (plain Adam)",
        lambda: epoch_seconds(X, y, torch.float32, dev),
    )
    ep64 = meter(
        "one epoch, float64 (plain Adam)",
        lambda: epoch_seconds(X, y, torch.float64, dev),
    )

    # ------------------------------------------------------------- ours
    gi = GroupInfluence(
        FrozenEstimator(net),
        curvature="ekfac",
        damping=args.damping,
        target_rank=args.target_rank,
        curvature_options={"fisher": "sampled", "batch_size": args.batch_size},
    )
    prof = profile_start(args.profile)
    meter("GroupInfluence.fit", lambda: gi.fit(X, y, X_target=Xt, y_target=yt))
    est = {}
    for kind in ["class", "random"]:
        for method in ["first_order", "interaction"]:
            name = f"score_groups {kind} {method}"
            est[kind, method] = meter(
                name, lambda g=groups[kind], mt=method: gi.score_groups(g, method=mt)
            ).estimate
            if (kind, method) == ("class", "interaction"):
                profile_stop(prof, args.profile)
    K = meter(
        "interaction_matrix (rows, implicit)",
        lambda: gi.interaction_matrix(method="interaction", form="implicit"),
    )
    infl = gi.influence_
    # the machine's load changes during a run: the epoch again, after our steps
    ep32_after = meter(
        "one epoch, float32 (again, after the steps above)",
        lambda: epoch_seconds(X, y, torch.float32, dev),
    )

    # ------------------------------------------------------------ peers
    kron = trak = None
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_kronfluence:
            kron = meter(
                "Kronfluence EK-FAC (factors + pairwise scores)",
                lambda: kronfluence_scores(
                    net.module_,
                    X,
                    y,
                    Xt,
                    yt,
                    args.damping + args.weight_decay / n,
                    args.kron_lambda_rows,
                    dev,
                    os.path.join(tmp, "kron"),
                ),
            )
        if not args.no_trak:
            trak = meter(
                f"TRAK (proj_dim {args.proj_dim}, featurize + score)",
                lambda: trak_scores(
                    net.module_,
                    X,
                    y,
                    Xt,
                    yt,
                    args.proj_dim,
                    dev,
                    os.path.join(tmp, "trak"),
                ),
            )

    # ------------------------------------------------------ LDS refits
    lrng = np.random.default_rng(1)
    keeps = [
        np.sort(lrng.choice(n, n // 2, replace=False)) for _ in range(args.lds_subsets)
    ]
    actual = np.empty((args.lds_subsets, args.lds_seeds))
    t0 = time.perf_counter()
    for s, keep in enumerate(keeps):
        for k in range(args.lds_seeds):
            refit = train(100 + k, X[keep], y[keep], args, dev)
            actual[s, k] = target_loss(refit, Xt, yt) - base_loss
        print(
            f"  LDS subset {s + 1}/{len(keeps)} done "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    lds_time = time.perf_counter() - t0
    removed = [np.setdiff1d(np.arange(n), keep) for keep in keeps]
    lds_est = removal_estimates(removed, n, infl, K, kron, trak, name="ekfac")
    mean_actual = actual.mean(1)
    seeds_agree = corr(actual[:, 0], actual[:, 1]) if args.lds_seeds > 1 else np.nan

    # ---------------------------------------------------- group refits
    picks = {
        kind: np.unique(groups[kind])[:: max(1, ng // max(1, args.group_refits))][
            : args.group_refits
        ]
        for kind in groups
    }
    grp_actual = {}
    t0 = time.perf_counter()
    for kind, labels in picks.items():
        for g in labels:
            w = (groups[kind] != g).astype(float)
            refit = train(0, X, y, args, dev, sample_weight=w)
            grp_actual[kind, g] = target_loss(refit, Xt, yt) - base_loss
    grp_time = time.perf_counter() - t0
    grp_rows = []
    for kind, labels in picks.items():
        truth = [grp_actual[kind, g] for g in labels]
        row = [kind, len(labels)]
        for method in ["first_order", "interaction"]:
            row.append(fmt(corr(est[kind, method][labels], truth)))
        if kron is not None:
            row.append(
                fmt(corr([kron[groups[kind] == g].sum() for g in labels], truth))
            )
        row.append(median_abs(truth, ".2g"))
        grp_rows.append(row)

    # ------------------------------------------------------------ report
    total = time.perf_counter() - t_start
    ep = 0.5 * (ep32 + ep32_after)  # the unit of the epoch columns
    time_rows = [
        [r[0], f"{r[1]:.1f}", f"{r[1] / ep:.1f}", f"{r[2]:.2f}", f"{r[3]:+.2f}"]
        for r in meter.rows
    ]
    t_fit = next(r[1] for r in meter.rows if r[0] == "GroupInfluence.fit")
    t_first = sum(r[1] for r in meter.rows if r[0].startswith("score_groups class"))
    summary = (
        "``fit`` + ``score_groups`` first_order + interaction (class groups, the "
        f"first calls): {t_fit + t_first:.0f} s = "
        f"{(t_fit + t_first) / ep:.1f} float32 epochs = "
        f"{(t_fit + t_first) / ep64:.1f} float64 epochs (goal: 5)."
    )
    agree = None
    if kron is not None:
        agree = (corr(kron, infl), pearsonr(kron, infl)[0])
    lds_rows = [[name, fmt(corr(v, mean_actual))] for name, v in lds_est.items()]
    print()
    print(env)
    header = f"CNN {P:,} parameters, {n} training rows, {m} target rows, {ng} groups"
    print(header)
    t_time = fmt_table(
        ["step", "wall (s)", "float32 epochs", "peak RSS (GB)", "rise (GB)"], time_rows
    )
    print(t_time)
    print(summary)
    if agree is not None:
        print(
            f"Kronfluence vs ekfac influence_ per row: Spearman {agree[0]:.3f}, "
            f"Pearson {agree[1]:.3f}"
        )
    t_lds = fmt_table(["method", "LDS (Spearman)"], lds_rows)
    print(t_lds)
    print(
        "seeds' own agreement (Spearman of seed 1 vs seed 2 outcomes): "
        f"{fmt(seeds_agree)}; "
        f"median |actual change| {median_abs(mean_actual, '.3g')}; "
        f"LDS refits {lds_time:.0f} s"
    )
    hdr = ["groups", "refits", "first_order", "interaction"]
    if kron is not None:
        hdr.append("Kronfluence")
    hdr.append("median abs actual")
    t_grp = fmt_table(hdr, grp_rows)
    print(t_grp)
    print(f"group refits {grp_time:.0f} s; total {total:.0f} s")
    if args.no_doc or args.quick:
        return
    write_doc("results_cnn.rst", render(locals()))


def render(v):
    a = v["args"]
    lines = [
        ".. This page is written by benchmarks/cnn_groups.py; do not edit by hand.",
        "",
        "A million-parameter CNN on Fashion-MNIST",
        "========================================",
        "",
        f"``benchmarks/cnn_groups.py``: a ResNet-style CNN of {v['P']:,} parameters",
        "(two residual blocks of 3x3 convolutions, max-pooling, ``Linear(1568, 640)``,",
        f"``Linear(640, 10)``) trained for {a.epochs} Adam epochs in float32 on",
        f"{v['n']:,} Fashion-MNIST training rows; {v['m']:,} target rows from the test",
        f"file (target: their log-loss, {v['base_loss']:.4f} at the trained network,",
        f'accuracy {v["acc"]:.3f}); ``GroupInfluence(curvature="ekfac",',
        f"damping={a.damping:g})`` with a sampled-label Fisher, the default",
        "rank-64 target factor and the default samples of 2,000 rows for the",
        "Kronecker factors and the eigenvalue correction,",
        f"{v['ng']} groups of {v['n'] // v['ng']} rows. The data",
        "come from the Debian package ``dataset-fashion-mnist``. Command::",
        "",
        "    nice python benchmarks/cnn_groups.py",
        "",
        f"Environment: {v['env']}.",
    ]
    if v["note"]:
        lines += ["", f"Note: {v['note']}."]
    lines += [
        "",
        "Time and memory",
        "---------------",
        "",
        "Wall time of each step, in units of one float32 training epoch measured",
        "in the same run (the mean of its two measurements, before and after",
        "this package's steps), and the peak resident memory of the process during the",
        "step (with its rise over the step's start). The score_groups rows run in",
        "the order shown: the first call builds the rank-r target factor (and,",
        "for the ``reliable`` column of first_order, the interaction estimate it",
        "is compared with), each new grouping costs one pass of group sums, the",
        "same grouping again none; ``interaction_matrix`` over rows builds the",
        "per-row factor ``Q H^-1 B`` (one pass of ``r`` products per row).",
        "",
        v["t_time"],
        "",
        v["summary"],
        "",
    ]
    if v["agree"] is not None:
        lines += [
            "Kronfluence 1.0.1 EK-FAC on the same network and damping, per training",
            f"row against ``influence_``: Spearman {v['agree'][0]:.3f}, Pearson",
            f"{v['agree'][1]:.3f}.",
            "",
        ]
    lines += [
        "Accuracy against retraining",
        "---------------------------",
        "",
        f"LDS over {a.lds_subsets} random halves of the training rows, each",
        f"retrained from scratch with {a.lds_seeds} seeds ({v['lds_time']:.0f} s of",
        "refits); the estimate is the change when the other half is removed:",
        "",
        v["t_lds"],
        "",
        f"The two seeds' own outcomes agree with Spearman {fmt(v['seeds_agree'])}",
        "(the ceiling a method can reach at this number of seeds is about there);",
        "median absolute change of the target "
        f"{np.median(np.abs(v['mean_actual'])):.3g}. The estimates come from the",
        "same code (``removal_estimates``) that ``benchmarks/kfac_lds_check.py``",
        "checks against exact refits of a small network (:doc:`curvature`).",
        "",
        "Group removal: groups retrained with zero weight from the trained",
        "network's initialisation and batch order; Spearman of the estimates",
        f"against the actual change ({v['grp_time']:.0f} s of refits):",
        "",
        v["t_grp"],
        "",
        f"Total run time {v['total'] / 60:.1f} min.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
