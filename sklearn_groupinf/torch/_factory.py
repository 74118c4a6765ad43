"""``make_torch_backend``: a TorchModel or a fitted skorch net -> TorchBackend."""

import copy

import numpy as np
import torch

from ._backend import TorchBackend
from ._model import TorchModel, decay_mask, per_example_loss, resolve_torch_device


def _default_target(kind):
    """``(phi, name)`` of the default metric for a loss kind."""
    if kind == "cross_entropy":
        return (lambda y, z: per_example_loss(kind, z, y.long())), "log_loss"
    if kind == "binary_cross_entropy":
        return (lambda y, z: per_example_loss(kind, z.reshape(-1, 1), y)), "log_loss"
    if kind == "squared_error":
        return (
            lambda y, z: (
                ((z - y.reshape(z.shape)) ** 2).reshape(z.shape[0], -1).mean(dim=1)
            )
        ), "mean_squared_error"
    return None, None


def _user_target(func, classes):
    """Wrap ``phi(y, z)`` (y float: class index for classifiers)."""

    def phi(y, z):
        out = func(y, z)
        if out.shape[0] != z.shape[0] or out.dim() != 1:
            raise ValueError(
                "The target callable must return one value per target example, "
                f"shape ({z.shape[0]},); got shape {tuple(out.shape)}. Return "
                "per-example values, not their mean: GroupInfluence takes the "
                "weighted mean."
            )
        return out

    return phi


def _skorch_parts(net):
    """``(module, loss, weight_decay, mask, kind, classes, device)`` of a skorch net."""
    from skorch.utils import check_is_fitted as skorch_check

    skorch_check(net)
    device = resolve_torch_device(getattr(net, "device", "cpu"))
    module = copy.deepcopy(net.module_).to(device=device, dtype=torch.float64)
    crit = copy.deepcopy(net.criterion_)
    if hasattr(crit, "reduction"):
        crit.reduction = "none"
    log_probs = isinstance(net.criterion_, torch.nn.NLLLoss)
    classes = getattr(net, "classes_", None)
    if isinstance(net.criterion_, (torch.nn.CrossEntropyLoss, torch.nn.NLLLoss)):
        kind = "cross_entropy"
    elif isinstance(net.criterion_, torch.nn.BCEWithLogitsLoss):
        kind = "binary_cross_entropy"
    elif isinstance(net.criterion_, torch.nn.MSELoss):
        kind = "squared_error"
    else:
        kind = "other"

    def loss(z, y):
        zz = torch.log(z + 1e-7) if log_probs else z  # skorch's NeuralNetClassifier
        if kind == "binary_cross_entropy":
            zz = zz.reshape(-1)
        elif y.is_floating_point() and y.numel() == z.numel():
            y = y.reshape(z.shape)
        return crit(zz, y).reshape(z.shape[0], -1).mean(dim=1)

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

    Returns
    -------
    backend : TorchBackend
    """

    def features(A):
        A = feature_map(A) if feature_map is not None else A
        return np.asarray(A, dtype=np.float64)

    if isinstance(est, TorchModel):
        if not hasattr(est, "module_"):
            raise ValueError(
                "TorchModel is not fitted; call fit or let GroupInfluence fit it."
            )
        module, device, dtype = est.module_, est.device_, est.dtype_
        kind = est.loss if isinstance(est.loss, str) else "other"
        loss_name = est.loss

        def loss(z, yy):
            return per_example_loss(loss_name, z, yy)

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
        opts = {}

    def tensor(a, dt=dtype):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)

    def encode(yy):
        yy = np.asarray(yy)
        if kind == "cross_entropy":
            idx = np.searchsorted(classes, yy) if classes is not None else yy
            return tensor(idx, torch.long)
        if kind == "binary_cross_entropy" and classes is not None:
            return tensor((yy == classes[1]).astype(np.float64))
        return tensor(yy.astype(np.float64))

    n = len(y)
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
    Xf = X if X_target is None else X_target
    m = len(Xf)
    wt = np.ones(m) if target_weight is None else np.asarray(target_weight, float)
    if callable(target):
        phi, name = _user_target(target, classes), "callable"
        if y_target is None:
            yf = tensor(np.zeros(m))
        elif classes is not None:
            yf = tensor(np.searchsorted(classes, np.asarray(y_target)).astype(float))
        else:
            yf = tensor(np.asarray(y_target, dtype=np.float64))
    else:
        phi, name = _default_target(kind)
        if phi is None:  # callable or unknown training loss: its mean

            def phi(yy, z):
                return loss(z.reshape(z.shape[0], -1), yy)

            name = "loss"
        elif log_probs:
            base = phi

            def phi(yy, z):
                return base(yy, torch.log(z + 1e-7))

        yf = encode(y if y_target is None and X_target is None else y_target)
    backend = TorchBackend(
        module,
        loss,
        tensor(features(X)),
        encode(y),
        sample_weight=tensor(s),
        weight_decay=wd,
        mask=mask,
        penalty_form=penalty_form,
        X_target=tensor(features(Xf)),
        y_target=yf,
        target_weight=tensor(wt),
        target=phi,
        target_name=name,
        **opts,
    )

    def encode_candidates(Xc, yc):
        return tensor(features(Xc)), encode(yc)

    backend._encode_candidates = encode_candidates
    return backend
