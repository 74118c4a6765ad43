"""``TorchBackend``: the :class:`ModelBackend` of a torch module, by ``torch.func``.

Conventions
-----------
* ``theta`` is the flat concatenation of the module's trainable parameters in
  ``named_parameters()`` order (``p.reshape(-1)`` each).
* Training objective (sum form, see :mod:`sklearn_groupinf.backends._base`)::

      J = sum_i s_i l~_i(theta) + R0(theta)

  ``TorchModel``: ``l~_i = l_i``, ``R0 = weight_decay/2 ||theta_D||^2``.
  skorch nets minimise a mean loss plus the optimiser's L2 ``weight_decay``;
  the penalty is folded into every example (``l~_i = l_i + R``, ``R0 = 0``),
  which has the same minimiser for every subset of the data.
* Removal gradients ``q_i = s_i grad l~_i``, computed with
  ``vmap(grad(l_i))`` on ``batch_size`` rows at a time.
* Curvature ``"hessian"`` (exact, forward-over-reverse products) or ``"ggn"``
  (``sum_i s_i J_i' Lambda_i J_i`` with the loss's output Hessian
  ``Lambda_i``). ``hessian_solver="dense"`` forms it (``P x P``) and uses a
  Cholesky factor; ``"cg"`` solves by conjugate gradients on
  curvature-vector products and never forms a ``P x P`` matrix.
* The target ``f = sum_t w_t phi(y_t, z_t) / sum_t w_t`` with ``z_t`` the raw
  output; its gradient by autograd, its Hessian exact or GGN (a thin factor
  ``B`` of width ``m * K`` with ``hessian_solver="cg"`` and ``curvature="ggn"``).

Peak memory (``P`` parameters, ``b`` = ``batch_size``, ``k`` =
``cg_block_size``, float64 = 8 bytes): per-example gradients hold ``b x P``
values on the device at a time; the dense solver holds the ``P x P``
curvature twice (torch and its Cholesky factor); CG holds ``5 k P`` values
plus the activations of ``b`` examples for ``k`` tangents.
"""

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from ._base import ModelBackend
from ._torch_cg import _to_numpy
from ._torch_curvature import TorchCurvature
from ._torch_options import AUTO_KFAC_PARAMS

#: ``hessian_solver="auto"`` forms the curvature up to this many parameters.
MAX_AUTO_DENSE_PARAMS = AUTO_KFAC_PARAMS


class TorchBackend(TorchCurvature, ModelBackend):
    """Influence calculus of a torch module (see the module docstring).

    Use :func:`~sklearn_groupinf.backends._torch_factory.make_torch_backend`
    to build one from a fitted
    :class:`~sklearn_groupinf.torch.TorchModel` or skorch net.

    Parameters
    ----------
    module : torch.nn.Module
        Trained module (not modified; evaluated with ``functional_call``).
    loss : callable
        ``loss(z, y) -> (n,)`` per-example training loss of raw outputs.
    X, y : torch.Tensor
        Training inputs and encoded labels on ``device``.
    sample_weight : torch.Tensor of shape (n,)
    weight_decay : float
    mask : list of torch.Tensor
        1 where a parameter is decayed.
    penalty_form : {"sum", "mean"}
        ``"sum"``: ``R0 = weight_decay/2 ||theta_D||^2``; ``"mean"``: the
        penalty is folded into every example.
    X_target, y_target, target_weight : torch.Tensor
    target : callable
        ``phi(y, z) -> (m,)`` with ``z`` of shape ``(m,)`` or ``(m, K)``.
    target_name : str
    encoder : callable
        ``encoder(X, y) -> (X, y)`` tensors of raw candidate examples (the
        pipeline prefix and the label encoding), for ``candidate_gradients``.
    curvature : {"hessian", "ggn"}
    hessian_solver : {"auto", "dense", "cg"}
    batch_size, cg_tol, cg_max_iter, cg_block_size : see ``TorchModel``.
    """

    def __init__(
        self,
        module,
        loss,
        X,
        y,
        *,
        sample_weight,
        weight_decay,
        mask,
        penalty_form,
        X_target,
        y_target,
        target_weight,
        target,
        target_name,
        encoder,
        curvature="hessian",
        hessian_solver="auto",
        batch_size=512,
        cg_tol=1e-10,
        cg_max_iter=1000,
        cg_block_size=64,
    ):
        self.module = module
        self._loss = loss
        self._X, self._y, self._s = X, y, sample_weight
        self.weight_decay = float(weight_decay)
        self.penalty_form = penalty_form
        self._Xf, self._yf = X_target, y_target
        self._wt = target_weight / target_weight.sum()
        self._phi = target
        self.target_name = target_name
        self._encoder = encoder
        self.curvature = curvature
        self.batch_size = int(batch_size)
        self.cg_tol, self.cg_max_iter = float(cg_tol), int(cg_max_iter)
        self.cg_block_size = int(cg_block_size)
        named = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
        self._names = [k for k, _ in named]
        self._shapes = [p.shape for _, p in named]
        self._numels = [p.numel() for _, p in named]
        self._const = {
            k: p.detach() for k, p in module.named_parameters() if not p.requires_grad
        }
        self._const.update({k: b for k, b in module.named_buffers()})
        ref = named[0][1]
        self.device, self.dtype = ref.device, ref.dtype
        self._mask = torch.cat([m.reshape(-1) for m in mask]).to(ref)
        self._theta = torch.cat([p.detach().reshape(-1) for _, p in named]).clone()
        self._s_sum = float(sample_weight.sum())
        P = self.n_params
        if hessian_solver == "auto":
            hessian_solver = "dense" if P <= MAX_AUTO_DENSE_PARAMS else "cg"
        self.hessian_solver_kind = hessian_solver
        exact_dense = curvature == "hessian" and hessian_solver == "dense"
        self.supports_second_order = exact_dense
        self.supports_newton = exact_dense
        module.eval()

    # ------------------------------------------------------------ functional
    def _unflatten(self, theta):
        params = dict(
            zip(
                self._names,
                (
                    t.view(s)
                    for t, s in zip(torch.split(theta, self._numels), self._shapes)
                ),
            )
        )
        params.update(self._const)
        return params

    def _out(self, theta, x):
        z = functional_call(self.module, self._unflatten(theta), (x,))
        return z.reshape(x.shape[0], -1)

    def _example_loss(self, theta, x, y):
        return self._loss(self._out(theta, x[None]), y[None])[0]

    def _penalty(self, theta):
        return 0.5 * self.weight_decay * (self._mask * theta * theta).sum()

    @property
    def _pen_mult(self):
        """Multiplier of ``R`` in ``J``: 1 (sum form) or ``sum s`` (mean form)."""
        return 1.0 if self.penalty_form == "sum" else self._s_sum

    def _batches(self, n, rows=None):
        idx = (
            None
            if rows is None
            else torch.as_tensor(np.asarray(rows), device=self.device)
        )
        m = n if idx is None else len(idx)
        for i0 in range(0, m, self.batch_size):
            if idx is None:
                yield slice(i0, i0 + self.batch_size)
            else:
                yield idx[i0 : i0 + self.batch_size]

    def _data_obj(self, theta, x, y, s):
        """``sum_i s_i l_i`` over one batch (no penalty)."""
        return (s * self._loss(self._out(theta, x), y)).sum()

    def _tensor(self, a):
        return torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)

    # ----------------------------------------------------------- protocol
    @property
    def n_params(self):
        return int(self._theta.numel())

    @property
    def n_samples(self):
        return int(self._X.shape[0])

    @property
    def data_weight(self):
        return self._s_sum

    def get_theta(self):
        return _to_numpy(self._theta).copy()

    def set_theta(self, theta):
        self._theta = self._tensor(theta).reshape(-1).clone()

    def write_module(self):
        """Copy the current ``theta`` into the module's parameters, in place.

        The module is the one given at construction (a ``TorchModel``'s
        ``module_``): after a polish, a refit can continue from there.
        """
        params = [p for p in self.module.parameters() if p.requires_grad]
        with torch.no_grad():
            for p, t in zip(params, torch.split(self._theta, self._numels)):
                p.copy_(t.view(p.shape))

    def objective(self, theta=None):
        th = self._theta if theta is None else self._tensor(theta)
        total = 0.0
        with torch.no_grad():
            for b in self._batches(self.n_samples):
                total += float(self._data_obj(th, self._X[b], self._y[b], self._s[b]))
            total += self._pen_mult * float(self._penalty(th))
        return total

    def _gradient_t(self):
        th = self._theta
        g = self._pen_mult * self.weight_decay * self._mask * th
        for b in self._batches(self.n_samples):
            g = g + grad(self._data_obj)(th, self._X[b], self._y[b], self._s[b])
        return g

    def gradient(self):
        return _to_numpy(self._gradient_t())

    def _per_example_grads(self, theta, X, y, s):
        """``(b, P)`` removal gradients of one batch (torch)."""
        G = vmap(grad(self._example_loss), in_dims=(None, 0, 0))(theta, X, y)
        if self.penalty_form == "mean":
            G = G + self.weight_decay * (self._mask * theta)[None, :]
        return G * s[:, None]

    def removal_gradients(self, rows=None):
        n = self.n_samples if rows is None else len(rows)
        out = np.empty((n, self.n_params))
        i = 0
        for b in self._batches(self.n_samples, rows):
            G = self._per_example_grads(self._theta, self._X[b], self._y[b], self._s[b])
            out[i : i + len(G)] = _to_numpy(G)
            i += len(G)
        return out

    def loss_gradients(self, rows=None):
        """``grad l_i`` of training rows (data loss: no weight, no penalty)."""
        n = self.n_samples if rows is None else len(rows)
        out = np.empty((n, self.n_params))
        i = 0
        per_example = vmap(grad(self._example_loss), in_dims=(None, 0, 0))
        for b in self._batches(self.n_samples, rows):
            G = per_example(self._theta, self._X[b], self._y[b])
            out[i : i + len(G)] = _to_numpy(G)
            i += len(G)
        return out

    def _gradient_batches(self):
        """``(slice, G)`` per batch: ``G`` the ``(b, P)`` removal gradients."""
        for b in self._batches(self.n_samples):
            yield (
                b,
                self._per_example_grads(
                    self._theta, self._X[b], self._y[b], self._s[b]
                ),
            )

    def removal_gradient_norms(self):
        return np.concatenate(
            [_to_numpy(G.norm(dim=1)) for _, G in self._gradient_batches()]
        )

    def removal_gradient_products(self, V):
        """``Q V`` ``(n, k)``, streaming ``Q`` in batches (never ``n x P``)."""
        Vt = self._tensor(V)
        return np.concatenate([_to_numpy(G @ Vt) for _, G in self._gradient_batches()])

    def aggregated_removal_gradients(self, matrix):
        """``matrix @ Q`` ``(g, P)`` for a sparse ``(g, n)`` matrix, in batches."""
        import scipy.sparse as sp

        matrix = sp.csc_matrix(matrix)
        out = np.zeros((matrix.shape[0], self.n_params))
        for b, G in self._gradient_batches():
            out += matrix[:, b] @ _to_numpy(G)
        return out

    def candidate_gradients(self, X, y, sample_weight=None):
        X, y = self._encoder(X, y)
        s = (
            torch.ones(X.shape[0], dtype=self.dtype, device=self.device)
            if sample_weight is None
            else self._tensor(sample_weight)
        )
        out = []
        for i0 in range(0, X.shape[0], self.batch_size):
            sl = slice(i0, i0 + self.batch_size)
            out.append(
                _to_numpy(self._per_example_grads(self._theta, X[sl], y[sl], s[sl]))
            )
        return np.concatenate(out) if out else np.zeros((0, self.n_params))

    # ---------------------------------------------------------------- target
    def _target_z(self, theta, x):
        z = self._out(theta, x)
        return z[:, 0] if z.shape[1] == 1 else z

    def _target_obj(self, theta, x, y, w):
        return (w * self._phi(y, self._target_z(theta, x)).reshape(-1)).sum()

    def target_value(self, theta=None):
        th = self._theta if theta is None else self._tensor(theta)
        total = 0.0
        with torch.no_grad():
            for b in self._batches(self._Xf.shape[0]):
                total += float(
                    self._target_obj(th, self._Xf[b], self._yf[b], self._wt[b])
                )
        return total

    def target_gradient(self):
        g = torch.zeros_like(self._theta)
        for b in self._batches(self._Xf.shape[0]):
            g = g + grad(self._target_obj)(
                self._theta, self._Xf[b], self._yf[b], self._wt[b]
            )
        out = _to_numpy(g)
        if not np.all(np.isfinite(out)):
            raise FloatingPointError(
                "The target gradient is not finite at the fitted parameters; "
                "check the target for log(0) or overflow."
            )
        return out

    @property
    def matrix_free(self):
        return self.hessian_solver_kind == "cg"
