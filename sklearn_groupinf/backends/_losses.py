"""Pointwise losses of raw predictions and their first three derivatives.

Conventions
-----------
* ``z`` is the raw prediction (decision function / linear predictor), of shape
  ``(n, K)``; ``K = 1`` for binary classification and single-output regression.
* ``y`` is the encoded target: class index ``(n,)`` for the multinomial loss,
  ``(n,)`` in ``{0, 1}`` for the binomial loss, ``(n, K)`` floats otherwise.
* ``gradient_hessian(y, z)`` returns ``g`` of shape ``(n, K)`` and ``h`` of shape
  ``(n, K, K)``: the derivatives of the per-example loss with respect to ``z``.
* ``third(y, z, a, b, c)`` returns the per-example contraction
  ``sum_{klm} d^3 loss / dz_k dz_l dz_m a_k b_l c_m`` of shape ``(n,)``.
* ``value(y, z)`` returns the per-example loss ``(n,)`` including the constants
  that make it equal to the scikit-learn metric (see ``metric_scale``).

The losses are the "half" losses scikit-learn minimises (``sklearn._loss``),
written out here because third derivatives are needed and ``sklearn._loss`` is
private. Every formula is checked against finite differences in the tests.
"""

import numpy as np
from scipy.special import expit, log_softmax, softmax


class PointwiseLoss:
    """Base class: a twice (thrice) differentiable loss of the raw prediction."""

    #: name used in error messages and docs
    name = "loss"

    def __init__(self, n_outputs=1):
        self.n_outputs = n_outputs

    def value(self, y, z):  # pragma: no cover - abstract
        raise NotImplementedError

    def gradient_hessian(self, y, z):  # pragma: no cover - abstract
        raise NotImplementedError

    def third(self, y, z, a, b, c):  # pragma: no cover - abstract
        raise NotImplementedError


class _ScalarOutputLoss(PointwiseLoss):
    """Loss of one raw output per example and per column (outputs independent)."""

    def _derivs(self, y, z):  # returns d1, d2, d3 elementwise, shape (n, K)
        raise NotImplementedError

    def gradient_hessian(self, y, z):
        d1, d2, _ = self._derivs(y, z)
        n, k = d1.shape
        h = np.zeros((n, k, k))
        idx = np.arange(k)
        h[:, idx, idx] = d2
        return d1, h

    def third(self, y, z, a, b, c):
        _, _, d3 = self._derivs(y, z)
        return np.sum(d3 * a * b * c, axis=1)


class HalfSquaredError(_ScalarOutputLoss):
    """``0.5 * sum_k (y_k - z_k)**2`` (Ridge, LinearRegression, RidgeClassifier)."""

    name = "squared_error"

    def value(self, y, z):
        return 0.5 * np.sum((y - z) ** 2, axis=1)

    def _derivs(self, y, z):
        return z - y, np.ones_like(z), np.zeros_like(z)


class HalfBinomialLoss(_ScalarOutputLoss):
    """``log(1 + exp(z)) - y z`` with ``y`` in ``{0, 1}`` (binary logistic)."""

    name = "log_loss"

    def value(self, y, z):
        z = z[:, 0]
        return np.logaddexp(0.0, z) - y * z

    def _derivs(self, y, z):
        p = expit(z)
        d2 = p * (1.0 - p)
        return p - y[:, None], d2, d2 * (1.0 - 2.0 * p)


class HalfMultinomialLoss(PointwiseLoss):
    """``logsumexp(z) - z_y`` (multinomial logistic regression)."""

    name = "log_loss"

    def value(self, y, z):
        return -log_softmax(z, axis=1)[np.arange(len(y)), y]

    def gradient_hessian(self, y, z):
        p = softmax(z, axis=1)
        g = p.copy()
        g[np.arange(len(y)), y] -= 1.0
        h = -p[:, :, None] * p[:, None, :]
        idx = np.arange(p.shape[1])
        h[:, idx, idx] += p
        return g, h

    def third(self, y, z, a, b, c):
        p = softmax(z, axis=1)
        pa, pb, pc = (np.sum(p * v, axis=1) for v in (a, b, c))
        return (
            np.sum(p * a * b * c, axis=1)
            - np.sum(p * a * b, axis=1) * pc
            - np.sum(p * a * c, axis=1) * pb
            - np.sum(p * b * c, axis=1) * pa
            + 2.0 * pa * pb * pc
        )


class HalfTweedieLoss(_ScalarOutputLoss):
    """Half Tweedie deviance with log link, ``power`` in ``{0} U [1, inf)``.

    Up to a constant in ``y``: ``power=1`` Poisson ``exp(z) - y z``; ``power=2``
    Gamma ``z + y exp(-z)``; otherwise
    ``-y exp((1-p) z) / (1-p) + exp((2-p) z) / (2-p)``.
    ``value`` returns the full half deviance so that ``2 * mean(value)`` equals
    ``sklearn.metrics.mean_tweedie_deviance``.
    """

    name = "tweedie_deviance"

    def __init__(self, power, n_outputs=1):
        super().__init__(n_outputs)
        self.power = float(power)

    def value(self, y, z):
        p = self.power
        z = z[:, 0]
        mu = np.exp(z)
        if p == 1:
            with np.errstate(divide="ignore", invalid="ignore"):
                ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0)), 0.0)
            return ylogy - y - y * z + mu
        if p == 2:
            return z - np.log(y) + y / mu - 1.0
        y0 = np.maximum(y, 0.0)
        return (
            y0 ** (2 - p) / ((1 - p) * (2 - p))
            - y * mu ** (1 - p) / (1 - p)
            + mu ** (2 - p) / (2 - p)
        )

    def _derivs(self, y, z):
        p = self.power
        y = y[:, None]
        if p == 1:
            mu = np.exp(z)
            return mu - y, mu, mu
        if p == 2:
            e = y * np.exp(-z)
            return 1.0 - e, e, -e
        a = y * np.exp((1 - p) * z)
        b = np.exp((2 - p) * z)
        return (
            -a + b,
            -(1 - p) * a + (2 - p) * b,
            -((1 - p) ** 2) * a + (2 - p) ** 2 * b,
        )
