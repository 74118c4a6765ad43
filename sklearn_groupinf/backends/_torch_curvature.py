"""Curvature of the torch backend: Hessian / Gauss-Newton products and matrices.

``TorchCurvature`` is a mixin of :class:`~sklearn_groupinf.backends._torch.TorchBackend`
(it uses the backend's functional model ``_out``, loss, data and ``theta``).
Curvature ``"hessian"`` is exact (forward-over-reverse products);
``"ggn"`` is ``sum_i s_i J_i' Lambda_i J_i`` with the loss's output Hessian
``Lambda_i``. Dense matrices are formed from products ``cg_block_size`` rows at
a time and guarded by :data:`MAX_DENSE_BYTES`; the matrix-free path
(``hessian_solver="cg"``) never forms a ``P x P`` matrix.
"""

import numpy as np
import torch
from torch.func import grad, jacrev, jvp, vjp, vmap

from .._hessian import DenseHessianSolver, IndefiniteHessianError
from ._torch_cg import CGHessianSolver, _to_numpy

#: largest dense ``P x P`` matrix the backend forms (bytes).
MAX_DENSE_BYTES = 4 * 1024**3


class TorchCurvature:
    """Curvature products, dense curvature, Newton steps and target curvature."""

    def _check_dense(self, what):
        need = 2 * self.n_params**2 * 8
        if need > MAX_DENSE_BYTES:
            raise MemoryError(
                f"Forming the dense {what} of {self.n_params} parameters needs "
                f"{need / 1e9:.1f} GB (limit {MAX_DENSE_BYTES / 1e9:.1f} GB). Use "
                "GroupInfluence(curvature='ekfac') (Kronecker-factored, no "
                "polishing), or curvature='ggn' with curvature_options="
                "{'hessian_solver': 'cg'} (matrix-free; TorchModel("
                "hessian_solver='cg', curvature='ggn') does the same), and make "
                "sure the model is fitted to a stationary point so that "
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

    def exact_hessian(self):
        """Dense exact Hessian of ``J`` ``(P, P)``, whatever ``curvature`` is."""
        saved = self.curvature
        try:
            self.curvature = "hessian"
            return self.hessian()
        finally:
            self.curvature = saved

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
