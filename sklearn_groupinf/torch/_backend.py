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
from torch.func import functional_call, grad, jacrev, jvp, vjp, vmap

from .._hessian import DenseHessianSolver, IndefiniteHessianError
from ..backends._base import ModelBackend
from ._cg import CGHessianSolver, _to_numpy

#: ``hessian_solver="auto"`` forms the curvature up to this many parameters.
MAX_AUTO_DENSE_PARAMS = 4096
#: largest dense ``P x P`` matrix the backend forms (bytes).
MAX_DENSE_BYTES = 4 * 1024**3


class TorchBackend(ModelBackend):
    """Influence calculus of a torch module (see the module docstring).

    Use :func:`make_torch_backend` to build one from a fitted
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
        X, y = self._encode_candidates(X, y)
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

    def _encode_candidates(self, X, y):  # replaced by make_torch_backend
        raise NotImplementedError

    # ------------------------------------------------------------ curvature
    def _check_dense(self, what):
        need = 2 * self.n_params**2 * 8
        if need > MAX_DENSE_BYTES:
            raise MemoryError(
                f"Forming the dense {what} of {self.n_params} parameters needs "
                f"{need / 1e9:.1f} GB (limit {MAX_DENSE_BYTES / 1e9:.1f} GB). Use "
                "TorchModel(hessian_solver='cg', curvature='ggn') (matrix-free), and "
                "make sure the model is fitted to a stationary point so that "
                "GroupInfluence does not polish it with dense Newton steps (a "
                "smaller TorchModel tol, or polish=False)."
            )

    def _data_hvp(self, theta, V, X, y, s):
        """``(k, P)``: data-term curvature times the rows of ``V`` on one batch."""
        if self.curvature == "hessian":
            g = grad(self._data_obj)

            def hv(v):
                return jvp(lambda t: g(t, X, y, s), (theta,), (v,))[1]

            return vmap(hv)(V)
        z, vjp_fn = vjp(lambda t: self._out(t, X), theta)
        Jv = vmap(lambda v: jvp(lambda t: self._out(t, X), (theta,), (v,))[1])(V)
        Lam = self._loss_output_hessian(z, y) * s[:, None, None]
        LJv = torch.einsum("bkl,cbl->cbk", Lam, Jv)
        return vmap(lambda u: vjp_fn(u)[0])(LJv)

    def _loss_output_hessian(self, z, y):
        """``Lambda_i = d^2 l_i / dz^2`` ``(b, K, K)``."""

        def single(zi, yi):
            return self._loss(zi[None], yi[None])[0]

        return vmap(torch.func.hessian(single))(z.detach(), y)

    def curvature_matvec(self, V):
        """``(k, P)`` torch: ``(curvature of J) v`` for the rows ``v`` of ``V``."""
        th = self._theta
        out = self._pen_mult * self.weight_decay * self._mask[None, :] * V
        for b in self._batches(self.n_samples):
            out = out + self._data_hvp(th, V, self._X[b], self._y[b], self._s[b])
        return out

    def _dense_from_matvec(self, matvec, chunk=None):
        P = self.n_params
        chunk = chunk or max(1, min(P, 64))
        H = torch.empty((P, P), dtype=self.dtype, device=self.device)
        eye = torch.eye(P, dtype=self.dtype, device=self.device)
        for j0 in range(0, P, chunk):
            H[j0 : j0 + chunk] = matvec(eye[j0 : j0 + chunk])
        return 0.5 * (H + H.T)

    def _dense_ggn(self, X, y, w, hess_fn, *, extra_diag=None):
        """``sum_i w_i J_i' Lambda_i J_i`` (+ diag) as a dense torch matrix."""
        P = self.n_params
        G = torch.zeros((P, P), dtype=self.dtype, device=self.device)
        jac = vmap(jacrev(lambda t, x: self._out(t, x[None])[0]), in_dims=(None, 0))
        for i0 in range(0, X.shape[0], self.batch_size):
            sl = slice(i0, i0 + self.batch_size)
            J = jac(self._theta, X[sl])  # (b, K, P)
            z = self._out(self._theta, X[sl])
            Lam = hess_fn(z, y[sl]) * w[sl, None, None]
            LJ = torch.einsum("bkl,blp->bkp", Lam, J)
            G += J.reshape(-1, P).T @ LJ.reshape(-1, P)
        if extra_diag is not None:
            G += torch.diag(extra_diag)
        return 0.5 * (G + G.T)

    def _hessian_t(self):
        self._check_dense("Hessian")
        if self.curvature == "ggn":
            diag = self._pen_mult * self.weight_decay * self._mask
            return self._dense_ggn(
                self._X, self._y, self._s, self._loss_output_hessian, extra_diag=diag
            )
        return self._dense_from_matvec(self.curvature_matvec)

    def hessian(self):
        """Dense curvature ``(P, P)`` (``curvature``: exact Hessian or GGN)."""
        return _to_numpy(self._hessian_t())

    def newton_direction(self):
        """Polishing step ``H^{-1} grad J`` with the **exact** Hessian.

        Near a minimum the exact Hessian is positive definite and Newton
        converges quadratically; a Gauss-Newton step (``curvature="ggn"``)
        barely moves a non-linear model. Falls back to the backend's own
        curvature when the exact Hessian is indefinite (or its step is not a
        descent direction), and returns ``None`` when that fails too. CG
        (matrix-free backends) or a dense Cholesky.
        """
        g = self._gradient_t()
        saved = self.curvature
        try:
            for curvature in dict.fromkeys(["hessian", saved]):
                self.curvature = curvature
                if self.matrix_free:
                    try:
                        step = CGHessianSolver(self, 0.0).solve(_to_numpy(g))
                    except IndefiniteHessianError:
                        continue
                else:
                    L, info = torch.linalg.cholesky_ex(self._hessian_t())
                    if int(info) != 0:
                        continue
                    step = _to_numpy(torch.cholesky_solve(g[:, None], L)[:, 0])
                # CG on an indefinite matrix need not meet negative curvature;
                # a step that is not a descent direction is not a Newton step
                if float(_to_numpy(g) @ step) > 0:
                    return step
            return None
        finally:
            self.curvature = saved

    def hessian_solver(self, damping):
        if self.hessian_solver_kind == "dense":
            return DenseHessianSolver(
                self.hessian(), damping=damping, data_weight=self.data_weight
            )
        return CGHessianSolver(self, damping)

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

    def _target_phi_hessian(self, z, y):
        def single(zi, yi):
            zz = zi if zi.shape[0] > 1 else zi.reshape(())
            zz = zz[None]
            return self._phi(yi[None], zz).reshape(-1)[0]

        return vmap(torch.func.hessian(single))(z.detach(), y)

    def _target_hvp(self, V):
        th = self._theta
        out = torch.zeros_like(V)
        for b in self._batches(self._Xf.shape[0]):
            x, y, w = self._Xf[b], self._yf[b], self._wt[b]
            if self.curvature == "hessian":
                g = grad(self._target_obj)
                out = out + vmap(
                    lambda v: jvp(lambda t: g(t, x, y, w), (th,), (v,))[1]
                )(V)
            else:
                z, vjp_fn = vjp(lambda t: self._out(t, x), th)
                Jv = vmap(lambda v: jvp(lambda t: self._out(t, x), (th,), (v,))[1])(V)
                Lam = self._target_phi_hessian(z, y) * w[:, None, None]
                out = out + vmap(lambda u: vjp_fn(u)[0])(
                    torch.einsum("bkl,cbl->cbk", Lam, Jv)
                )
        return out

    @property
    def matrix_free(self):
        return self.hessian_solver_kind == "cg"

    def target_hessian_products(self, V):
        """``V grad^2 f`` ``(k, P)`` by products, ``cg_block_size`` rows at a time."""
        V = np.asarray(V, dtype=np.float64)
        out = np.empty_like(V)
        for j0 in range(0, len(V), self.cg_block_size):
            out[j0 : j0 + self.cg_block_size] = _to_numpy(
                self._target_hvp(self._tensor(V[j0 : j0 + self.cg_block_size]))
            )
        return out

    def target_factor_width(self):
        n_out = int(self._out(self._theta, self._Xf[:1]).shape[1])
        return int(self._Xf.shape[0]) * n_out

    def target_hessian(self):
        """Dense target Hessian ``(P, P)`` (exact or GGN per ``curvature``)."""
        self._check_dense("target Hessian")
        if self.curvature == "ggn":
            H = self._dense_ggn(self._Xf, self._yf, self._wt, self._target_phi_hessian)
        else:
            H = self._dense_from_matvec(self._target_hvp)
        return _to_numpy(H)

    def target_hessian_factor(self):
        """``(B, M)`` with ``grad^2 f = B M B'``.

        Dense ``(None, H_f)`` with the dense solver or exact curvature; with
        ``hessian_solver="cg"`` and ``curvature="ggn"`` a thin factor
        ``B = [J_t' V_t |lam_t|^{1/2}]_t`` of width ``<= m K`` and diagonal
        ``M = diag(w_t sign(lam_t))`` (no ``P x P`` matrix).
        """
        if self.hessian_solver_kind == "dense" or self.curvature == "hessian":
            return None, self.target_hessian()
        cols, signs = [], []
        jac = vmap(jacrev(lambda t, x: self._out(t, x[None])[0]), in_dims=(None, 0))
        for b in self._batches(self._Xf.shape[0]):
            x, y, w = self._Xf[b], self._yf[b], self._wt[b]
            J = jac(self._theta, x)  # (b, K, P)
            Lam = self._target_phi_hessian(self._out(self._theta, x), y)
            lam, V = torch.linalg.eigh(0.5 * (Lam + Lam.transpose(1, 2)))
            keep = lam.abs() > 1e-12 * lam.abs().amax(dim=1, keepdim=True).clamp_min(
                torch.finfo(lam.dtype).tiny
            )
            Bt = torch.einsum("bkp,bkr->brp", J, V * lam.abs().sqrt()[:, None, :])
            sg = torch.sign(lam) * w[:, None]
            cols.append(Bt[keep])
            signs.append(sg[keep])
        B = torch.cat(cols)
        return _to_numpy(B.T), np.diag(_to_numpy(torch.cat(signs)))

    # ------------------------------------------------- second order / newton
    def example_hessian_vector(self, v, rows=None):
        vt = self._tensor(v)
        g = grad(self._example_loss)

        def one(x, y):
            return jvp(lambda t: g(t, x, y), (self._theta,), (vt,))[1]

        n = self.n_samples if rows is None else len(rows)
        out = np.empty((n, self.n_params))
        i = 0
        for b in self._batches(self.n_samples, rows):
            R = vmap(one)(self._X[b], self._y[b])
            if self.penalty_form == "mean":
                R = R + self.weight_decay * (self._mask * vt)[None, :]
            R = R * self._s[b][:, None]
            out[i : i + len(R)] = _to_numpy(R)
            i += len(R)
        return out

    def third_derivative_matrix(self, v):
        """``grad^3 J[v, ., .]`` ``(P, P)`` (the quadratic penalty adds nothing)."""
        self._check_dense("third-derivative matrix")
        vt = self._tensor(v)
        g = grad(self._data_obj)

        def matvec(E):
            out = torch.zeros_like(E)
            for b in self._batches(self.n_samples):
                x, y, s = self._X[b], self._y[b], self._s[b]

                def hv(t, e):
                    return jvp(lambda u: g(u, x, y, s), (t,), (e,))[1]

                out = out + vmap(
                    lambda e: jvp(lambda t: hv(t, e), (self._theta,), (vt,))[1]
                )(E)
            return out

        return _to_numpy(self._dense_from_matvec(matvec))

    def group_hessian(self, rows):
        self._check_dense("group Hessian")
        idx = torch.as_tensor(np.asarray(rows), device=self.device)
        X, y, s = self._X[idx], self._y[idx], self._s[idx]
        g = grad(self._data_obj)

        def matvec(E):
            out = torch.zeros_like(E)
            for i0 in range(0, X.shape[0], self.batch_size):
                sl = slice(i0, i0 + self.batch_size)
                out = out + vmap(
                    lambda e: jvp(
                        lambda t: g(t, X[sl], y[sl], s[sl]), (self._theta,), (e,)
                    )[1]
                )(E)
            if self.penalty_form == "mean":
                out = out + float(s.sum()) * self.weight_decay * self._mask * E
            return out

        return _to_numpy(self._dense_from_matvec(matvec))
