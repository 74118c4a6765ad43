"""``make_torch_backend``: a fitted ``TorchModel`` or skorch net -> ``TorchBackend``.

Losses, targets and the label encoder are small module-level classes (not
closures), so that a fitted ``GroupInfluence`` holding the backend pickles.
"""

import copy

import numpy as np
import torch

from ..torch._functional import (
    ExampleLoss,
    decay_mask,
    per_example_loss,
    resolve_torch_device,
)
from ..torch._model import TorchModel
from ._torch import TorchBackend
from ._torch_options import AUTO_KFAC_PARAMS, CURVATURE_OPTIONS, DEFAULT_TARGET_RANK


class DefaultTarget:
    """``phi(y, z)``: the scikit-learn metric of a loss kind, per target example."""

    names = {
        "cross_entropy": "log_loss",
        "binary_cross_entropy": "log_loss",
        "squared_error": "mean_squared_error",
    }

    def __init__(self, kind, log_probs=False):
        self.kind, self.log_probs = kind, log_probs

    def __call__(self, y, z):
        if self.log_probs:  # skorch's NeuralNetClassifier outputs probabilities
            z = torch.log(z + 1e-7)
        if self.kind == "cross_entropy":
            return per_example_loss(self.kind, z, y.long())
        if self.kind == "binary_cross_entropy":
            return per_example_loss(self.kind, z.reshape(-1, 1), y)
        return ((z - y.reshape(z.shape)) ** 2).reshape(z.shape[0], -1).mean(dim=1)


class LossTarget:
    """``phi(y, z)``: the training loss itself (callable or unknown losses)."""

    def __init__(self, loss):
        self.loss = loss

    def __call__(self, y, z):
        return self.loss(z.reshape(z.shape[0], -1), y)


class UserTarget:
    """A user's ``phi(y, z)`` (y float: class index for classifiers), shape-checked."""

    def __init__(self, func):
        self.func = func

    def __call__(self, y, z):
        out = self.func(y, z)
        if out.shape[0] != z.shape[0] or out.dim() != 1:
            raise ValueError(
                "The target callable must return one value per target example, "
                f"shape ({z.shape[0]},); got shape {tuple(out.shape)}. Return "
                "per-example values, not their mean: GroupInfluence takes the "
                "weighted mean."
            )
        return out


class SkorchLoss:
    """Per-example loss of a skorch net's criterion (``reduction="none"``)."""

    def __init__(self, criterion, kind, log_probs):
        self.criterion, self.kind, self.log_probs = criterion, kind, log_probs

    def __call__(self, z, y):
        zz = torch.log(z + 1e-7) if self.log_probs else z  # NeuralNetClassifier
        if self.kind == "binary_cross_entropy":
            zz = zz.reshape(-1)
        elif y.is_floating_point() and y.numel() == z.numel():
            y = y.reshape(z.shape)
        return self.criterion(zz, y).reshape(z.shape[0], -1).mean(dim=1)


class Encoder:
    """Raw ``X``, ``y`` -> tensors: the pipeline prefix, then the label encoding."""

    def __init__(self, kind, classes, feature_map, device, dtype):
        self.kind, self.classes, self.feature_map = kind, classes, feature_map
        self.device, self.dtype = device, dtype

    def tensor(self, a, dtype=None):
        return torch.as_tensor(
            np.ascontiguousarray(a), dtype=dtype or self.dtype, device=self.device
        )

    def features(self, X):
        X = self.feature_map(X) if self.feature_map is not None else X
        return self.tensor(np.asarray(X, dtype=np.float64))

    def labels(self, y):
        y = np.asarray(y)
        if self.kind == "cross_entropy":
            idx = np.searchsorted(self.classes, y) if self.classes is not None else y
            return self.tensor(idx, torch.long)
        if self.kind == "binary_cross_entropy" and self.classes is not None:
            return self.tensor((y == self.classes[1]).astype(np.float64))
        return self.tensor(y.astype(np.float64))

    def __call__(self, X, y):
        return self.features(X), self.labels(y)


def _kind_of(criterion):
    if isinstance(criterion, (torch.nn.CrossEntropyLoss, torch.nn.NLLLoss)):
        return "cross_entropy"
    if isinstance(criterion, torch.nn.BCEWithLogitsLoss):
        return "binary_cross_entropy"
    if isinstance(criterion, torch.nn.MSELoss):
        return "squared_error"
    return "other"


def _skorch_parts(net):
    """``(module, loss, weight_decay, mask, kind, classes, device, log_probs)``."""
    from skorch.utils import check_is_fitted as skorch_check

    skorch_check(net)
    device = resolve_torch_device(getattr(net, "device", "cpu"))
    module = copy.deepcopy(net.module_).to(device=device, dtype=torch.float64)
    crit = copy.deepcopy(net.criterion_)
    if hasattr(crit, "reduction"):
        crit.reduction = "none"
    log_probs = isinstance(net.criterion_, torch.nn.NLLLoss)
    kind = _kind_of(net.criterion_)
    classes = getattr(net, "classes_", None)
    # the optimiser's L2 weight decay: one value per parameter group
    wd_of = {}
    for grp in net.optimizer_.param_groups:
        for p in grp["params"]:
            wd_of[id(p)] = float(grp.get("weight_decay", 0.0))
    if "AdamW" in type(net.optimizer_).__name__ and any(wd_of.values()):
        raise ValueError(
            "skorch net trained with AdamW: decoupled weight decay is not the "
            "gradient of any objective, so influence functions do not apply. Use "
            "an optimiser with L2 weight_decay (SGD, Adam) or TorchModel."
        )
    named = [(k, p) for k, p in net.module_.named_parameters() if p.requires_grad]
    values = sorted(set(wd_of.get(id(p), 0.0) for _, p in named))
    wd = values[-1] if values else 0.0
    mask = [
        torch.full_like(
            p,
            (wd_of.get(id(p), 0.0) / wd) if wd else 0.0,
            dtype=torch.float64,
            device=device,
        )
        for _, p in named
    ]
    loss = SkorchLoss(crit, kind, log_probs)
    return module, loss, wd, mask, kind, classes, device, log_probs


def make_torch_backend(
    est,
    X,
    y,
    *,
    feature_map=None,
    sample_weight=None,
    X_target=None,
    y_target=None,
    target_weight=None,
    target="default",
    curvature="auto",
    curvature_options=None,
    target_rank=None,
):
    """Build a :class:`TorchBackend` for a fitted ``TorchModel`` or skorch net.

    Parameters
    ----------
    est : TorchModel or skorch.NeuralNet
        Fitted. A skorch net is used with its ``module_``, ``criterion_`` (mean
        loss) and its optimiser's L2 ``weight_decay`` (mean form), computed in
        float64 on a copy (the net is not modified).
    X, y : training data (raw; ``feature_map`` is applied).
    feature_map : callable or None
        Fixed transform of a pipeline prefix.
    sample_weight, X_target, y_target, target_weight, target :
        As in :meth:`GroupInfluence.fit`.
    curvature, curvature_options, target_rank :
        ``GroupInfluence``'s parameters (see :func:`resolve_curvature`).

    Returns
    -------
    backend : TorchBackend or KroneckerBackend
    """
    if isinstance(est, TorchModel):
        if not hasattr(est, "module_"):
            raise ValueError(
                "TorchModel is not fitted; call fit or let GroupInfluence fit it."
            )
        module, device, dtype = est.module_, est.device_, est.dtype_
        kind = est.loss if isinstance(est.loss, str) else "other"
        loss = ExampleLoss(est.loss)
        named = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
        wd, mask = est.weight_decay, decay_mask(named, est.decay_bias)
        penalty_form = "sum"
        classes = getattr(est, "classes_", None)
        opts = dict(
            curvature=est.curvature,
            hessian_solver=est.hessian_solver,
            batch_size=est.batch_size,
            cg_tol=est.cg_tol,
            cg_max_iter=est.cg_max_iter,
            cg_block_size=est.cg_block_size,
        )
        log_probs = False
    else:  # skorch
        module, loss, wd, mask, kind, classes, device, log_probs = _skorch_parts(est)
        dtype = torch.float64
        penalty_form = "mean"
        opts = dict(curvature="hessian", hessian_solver="auto")
    backend_cls, opts = resolve_curvature(
        curvature, curvature_options, target_rank, opts, module
    )
    enc = Encoder(kind, classes, feature_map, device, dtype)

    n = len(y)
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
    Xf = X if X_target is None else X_target
    m = len(Xf)
    wt = np.ones(m) if target_weight is None else np.asarray(target_weight, float)
    if callable(target):
        phi, name = UserTarget(target), "callable"
        if y_target is None:
            yf = enc.tensor(np.zeros(m))
        elif classes is not None:
            idx = np.searchsorted(classes, np.asarray(y_target)).astype(float)
            yf = enc.tensor(idx)
        else:
            yf = enc.tensor(np.asarray(y_target, dtype=np.float64))
    else:
        if kind in DefaultTarget.names:
            phi, name = DefaultTarget(kind, log_probs), DefaultTarget.names[kind]
        else:  # callable or unknown training loss: its mean
            phi, name = LossTarget(loss), "loss"
        yf = enc.labels(y if y_target is None and X_target is None else y_target)
    return backend_cls(
        module,
        loss,
        enc.features(X),
        enc.labels(y),
        sample_weight=enc.tensor(s),
        weight_decay=wd,
        mask=mask,
        penalty_form=penalty_form,
        X_target=enc.features(Xf),
        y_target=yf,
        target_weight=enc.tensor(wt),
        target=phi,
        target_name=name,
        encoder=enc,
        **opts,
    )


def resolve_curvature(curvature, options, target_rank, model_opts, module):
    """``(backend class, backend options)`` for ``GroupInfluence``'s settings.

    ``curvature="auto"`` keeps the model's own settings (a ``TorchModel``'s
    ``curvature`` and ``hessian_solver``; exact Hessian for a skorch net)
    when they are not the defaults or the module has at most
    :data:`AUTO_KFAC_PARAMS` trainable parameters, and uses ``"ekfac"``
    otherwise. ``"exact"`` and ``"ggn"`` override the model's ``curvature``;
    ``curvature_options`` (checked by
    :func:`~sklearn_groupinf.backends._torch_options.check_curvature_options`)
    override its solver settings.
    """
    from ._torch_kfac import KroneckerBackend

    options = dict(options or {})
    n_params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    auto = curvature == "auto"
    if auto:
        custom = (
            model_opts.get("curvature", "hessian") != "hessian"
            or model_opts.get("hessian_solver", "auto") != "auto"
            or any(k in options for k in ("hessian_solver", "cg_tol", "cg_max_iter"))
        )
        big = n_params > AUTO_KFAC_PARAMS and not custom
        curvature = "ekfac" if big else model_opts.get("curvature", "hessian")
        curvature = {"hessian": "exact"}.get(curvature, curvature)
        # chosen by size: the options of the other curvatures are unused
        options = {
            k: v for k, v in options.items() if curvature in CURVATURE_OPTIONS[k][0]
        }
    opts = dict(model_opts)
    if curvature in ("kfac", "ekfac"):
        opts = {k: opts[k] for k in ("batch_size", "cg_block_size") if k in opts}
        opts.update(
            kind=curvature,
            target_rank=DEFAULT_TARGET_RANK if target_rank is None else target_rank,
        )
        for key, (applies, default, _, _) in CURVATURE_OPTIONS.items():
            if "kfac" in applies and default is not None:
                opts[key] = default
        opts.update({k: v for k, v in options.items() if v is not None})
        return KroneckerBackend, opts
    opts["curvature"] = "hessian" if curvature == "exact" else "ggn"
    opts.update({k: v for k, v in options.items() if v is not None})
    return TorchBackend, opts
