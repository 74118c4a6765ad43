"""Target functions ``f(theta) = sum_t w_t phi(y_t, z_t(theta)) / sum_t w_t``.

A target is a pointwise function ``phi`` of the raw prediction ``z_t`` of a
target example (decision function, logits or linear predictor) and its label.
The default target of each estimator is the scikit-learn metric its users
already know (``log_loss``, ``mean_squared_error``, the mean deviances); a
user may instead pass any ``phi(y, z)`` written with torch operations, whose
derivatives are then taken by autograd.

Every target object exposes the pointwise interface of
:mod:`sklearn_groupinf.backends._losses`: ``value(y, z)`` ``(m,)`` and
``gradient_hessian(y, z)`` ``(m, K)``, ``(m, K, K)``.
"""

import numpy as np

from ._losses import PointwiseLoss


class ScaledLoss(PointwiseLoss):
    """``scale * loss`` so that its weighted mean equals a scikit-learn metric."""

    def __init__(self, loss, scale, name):
        super().__init__(loss.n_outputs)
        self.loss = loss
        self.scale = float(scale)
        self.name = name

    def value(self, y, z):
        return self.scale * self.loss.value(y, z)

    def gradient_hessian(self, y, z):
        g, h = self.loss.gradient_hessian(y, z)
        return self.scale * g, self.scale * h


class TorchCallableTarget(PointwiseLoss):
    """A user target ``phi(y, z) -> (m,)`` written with torch operations.

    ``y`` is passed as a float64 tensor of shape ``(m,)`` (class labels as their
    index in ``classes_``; ``(m, K)`` for a multi-output regressor) and ``z``
    as ``(m,)`` for single-output models or ``(m, K)`` otherwise. ``phi`` must
    act row by row: ``phi(y, z)[t]`` may only depend on ``y[t]`` and ``z[t]``.
    Derivatives come from ``torch.func``.
    """

    name = "callable"

    def __init__(self, func, n_outputs):
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ImportError(
                "A callable target is differentiated with torch, which is not "
                'installed. Install it with pip install "sklearn-groupinf[torch]", '
                "or use target='default' (the estimator's scikit-learn metric)."
            ) from None
        super().__init__(n_outputs)
        self.func = func

    def _torch_inputs(self, y, z):
        import torch

        yt = torch.as_tensor(np.asarray(y, dtype=np.float64))
        zt = torch.as_tensor(np.asarray(z, dtype=np.float64))
        return torch, yt, zt

    def _single(self, yi, zi):
        # one example: reshape to a batch of one for the user's function
        zb = zi[None] if self.n_outputs > 1 else zi.reshape(1)
        out = self.func(yi[None] if yi.ndim else yi.reshape(1), zb)
        return out.reshape(-1)[0]

    def value(self, y, z):
        torch, yt, zt = self._torch_inputs(y, z)
        zz = zt if self.n_outputs > 1 else zt[:, 0]
        with torch.no_grad():
            out = self.func(yt, zz)
        out = np.asarray(out.detach().cpu().numpy(), dtype=np.float64).reshape(-1)
        if out.shape[0] != len(y):
            raise ValueError(
                "The target callable must return one value per target example, "
                f"shape ({len(y)},); got shape {tuple(out.shape)}. Return per-example "
                "values, not their mean: the weighted mean is taken by GroupInfluence."
            )
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(
                f"The target callable returns {int(np.sum(~np.isfinite(out)))} "
                "non-finite values (NaN or infinity); check it for log of zero or "
                "of a negative number, division by zero or overflow."
            )
        return out

    def gradient_hessian(self, y, z):
        torch, yt, zt = self._torch_inputs(y, z)
        from torch.func import grad, hessian, vmap

        g = vmap(grad(self._single, argnums=1))(yt, zt)
        h = vmap(hessian(self._single, argnums=1))(yt, zt)
        g = g.detach().cpu().numpy().reshape(len(y), self.n_outputs)
        h = h.detach().cpu().numpy().reshape(len(y), self.n_outputs, self.n_outputs)
        if not (np.all(np.isfinite(g)) and np.all(np.isfinite(h))):
            raise FloatingPointError(
                "The target callable has non-finite derivatives at the fitted "
                "parameters; check it for log(0), division by zero or overflow."
            )
        return g, h


def weighted_mean(values, weights):
    """``sum_t w_t v_t / sum_t w_t``."""
    return float(np.dot(weights, values) / np.sum(weights))
