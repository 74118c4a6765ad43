"""Torch building blocks shared by ``TorchModel`` and the torch backend.

Losses of raw module outputs, the decay mask, device and dtype resolution, and
the checks that a module's output fits the loss and the labels. Every callable
here is a module-level function or a small class, so that fitted objects that
hold them can be pickled.
"""

import warnings

import numpy as np
import torch

CLASSIFICATION_LOSSES = ("cross_entropy", "binary_cross_entropy")
LOSSES = CLASSIFICATION_LOSSES + ("squared_error",)


class DeviceWarning(UserWarning):
    """The requested device is not available; the computation falls back to CPU."""


def resolve_torch_device(device):
    """``"auto"``: CUDA if present, else CPU; ``"cuda"`` without CUDA: CPU, warning."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device={device!r} is not a torch device; pass 'auto', 'cpu', "
            "'cuda' or 'cuda:<index>'."
        ) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"device={device!r} was requested but torch sees no CUDA device; "
            "computing on the CPU. Pass device='auto' or 'cpu' to silence this.",
            DeviceWarning,
            stacklevel=3,
        )
        return torch.device("cpu")
    return dev


def resolve_torch_dtype(dtype):
    if dtype in ("float64", np.float64, torch.float64):
        return torch.float64
    if dtype in ("float32", np.float32, torch.float32):
        return torch.float32
    raise ValueError(f"dtype must be 'float64' or 'float32'; got {dtype!r}.")


def per_example_loss(loss, z, y):
    """Per-example loss ``(n,)`` from raw outputs ``z`` ``(n, K)`` and encoded ``y``.

    ``cross_entropy``: ``y`` class indices (long); ``binary_cross_entropy``:
    ``y`` in {0, 1} (float), ``z`` one logit; ``squared_error``:
    ``1/2 ||y_i - z_i||^2``; a callable ``loss(z, y)`` must return ``(n,)``.
    """
    # written out (not F.cross_entropy) so that third derivatives work
    # under nested torch.func transforms
    if loss == "cross_entropy":
        return torch.logsumexp(z, dim=1) - torch.gather(z, 1, y[:, None])[:, 0]
    if loss == "binary_cross_entropy":
        return torch.nn.functional.softplus(z[:, 0]) - y * z[:, 0]
    if loss == "squared_error":
        return 0.5 * ((z - y.reshape(z.shape)) ** 2).sum(dim=1)
    return loss(z, y).reshape(-1)


class ExampleLoss:
    """Picklable ``loss(z, y) -> (n,)`` for a ``TorchModel`` loss (name or callable)."""

    def __init__(self, loss):
        self.loss = loss

    def __call__(self, z, y):
        return per_example_loss(self.loss, z, y)


def raw_output(module, x):
    """Module output as ``(n, K)``."""
    out = module(x)
    return out.reshape(out.shape[0], -1)


def decay_mask(named_params, decay_bias):
    """1 for decayed parameters, 0 for undecayed biases; list of tensors."""
    return [
        torch.zeros_like(p)
        if (not decay_bias and name.split(".")[-1] == "bias")
        else torch.ones_like(p)
        for name, p in named_params
    ]


def probe_output_width(module, x, n_features):
    """Number of outputs of ``module`` on the rows ``x``; a clear error if it fails.

    Raises ``ValueError`` naming the width of ``X`` when the module cannot take
    rows of ``n_features`` values (the raw torch error is chained).
    """
    try:
        with torch.no_grad():
            out = module(x)
    except (RuntimeError, ValueError, IndexError) as err:
        raise ValueError(
            f"module cannot be applied to X with {n_features} features (columns): "
            f"{type(err).__name__}: {str(err).splitlines()[0]}. Give the module an "
            f"input layer for {n_features} features (e.g. nn.Linear({n_features}, "
            "...)), or pass X with the number of columns the module expects."
        ) from err
    if out.dim() == 0 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"module must return one output row per input row: for {x.shape[0]} "
            f"rows it returned shape {tuple(out.shape)}."
        )
    return int(out.reshape(out.shape[0], -1).shape[1])


def check_output_width(loss, n_outputs, *, n_classes=None, y_width=None):
    """``ValueError`` naming ``loss`` and the fix when outputs and labels disagree."""
    if loss == "cross_entropy" and n_outputs != n_classes:
        raise ValueError(
            f"loss='cross_entropy' needs one logit per class: y has {n_classes} "
            f"classes but the module returns {n_outputs} outputs. Give the last "
            f"layer {n_classes} outputs"
            + (
                ", or use loss='binary_cross_entropy' with 1 output."
                if n_classes == 2
                else "."
            )
        )
    if loss == "binary_cross_entropy" and n_outputs != 1:
        raise ValueError(
            f"loss='binary_cross_entropy' takes one logit per row, but the module "
            f"returns {n_outputs} outputs (all but the first would be ignored). Give "
            "the last layer 1 output, or use loss='cross_entropy' with "
            f"{n_outputs} outputs (one per class)."
        )
    if loss == "squared_error" and n_outputs != y_width:
        raise ValueError(
            f"loss='squared_error' compares each row of y ({y_width} value(s)) with "
            f"the module's output, which has {n_outputs}. Give the last layer "
            f"{y_width} output(s), or pass y with {n_outputs} column(s)."
        )


def check_module(model, X, y):
    """Apply ``model.module_`` to two rows of ``X``: input and output must fit.

    ``model`` is a ``TorchModel`` being fitted (``classes_`` set for
    classifiers); a callable loss must return one value per row.
    """
    x = model._tensor(X[:2])
    n_out = probe_output_width(model.module_, x, X.shape[1])
    if isinstance(model.loss, str):
        check_output_width(
            model.loss,
            n_out,
            n_classes=len(getattr(model, "classes_", ())),
            y_width=1 if np.ndim(y) == 1 else np.shape(y)[1],
        )
        return
    with torch.no_grad():
        val = model.loss(raw_output(model.module_, x), model._encode_y(y[:2]))
    if not (torch.is_tensor(val) and val.numel() == x.shape[0]):
        shape = tuple(val.shape) if torch.is_tensor(val) else type(val).__name__
        raise ValueError(
            "A callable loss must return one value per row, shape (n,), from "
            f"loss(z, y); on {x.shape[0]} rows it returned {shape}."
        )
