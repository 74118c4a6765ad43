"""Matrix-free conjugate gradients on the torch backend's curvature products."""

import warnings

import numpy as np
import torch

from .._hessian import CGConvergenceWarning, IndefiniteHessianError


def _to_numpy(t):
    return t.detach().to("cpu", torch.float64).numpy()


class CGHessianSolver:
    """Matrix-free conjugate gradients for ``C + damping * W * I``.

    ``C`` is the backend's curvature (exact Hessian or GGN), applied by
    ``torch.func`` products over the training data in batches. Right-hand sides
    are solved ``cg_block_size`` at a time on the backend's device; results are
    float64 numpy.

    Raises
    ------
    IndefiniteHessianError
        When a search direction has non-positive curvature: the damped
        curvature is not positive definite and more damping is required.
    """

    #: matrix-free: no dense Hessian (see ``sklearn_groupinf._hessian.HessianSolver``)
    H = None
    rcond = float("nan")

    def __init__(self, backend, damping):
        self.backend = backend
        self.damping = float(damping)
        self.shift = self.damping * backend.data_weight
        self.n_iter_ = []

    def _matvec(self, V):
        return self.backend.curvature_matvec(V) + self.shift * V

    def solve(self, V):
        """``A^{-1} V`` for ``V`` of shape ``(P,)`` or ``(P, k)``."""
        V = np.asarray(V, dtype=np.float64)
        one = V.ndim == 1
        Vm = V[:, None] if one else V
        out = np.empty_like(Vm)
        k = self.backend.cg_block_size
        for j0 in range(0, Vm.shape[1], k):
            out[:, j0 : j0 + k] = self._solve_block(Vm[:, j0 : j0 + k])
        return out[:, 0] if one else out

    def _solve_block(self, Vb):
        be = self.backend
        Bt = torch.as_tensor(
            np.ascontiguousarray(Vb.T), dtype=be.dtype, device=be.device
        )
        bnorm = Bt.norm(dim=1)
        x = torch.zeros_like(Bt)
        r = Bt.clone()
        p = r.clone()
        rs = (r * r).sum(dim=1)
        done = rs.sqrt() <= be.cg_tol * bnorm
        it = 0  # iterations run (products with the curvature)
        while it < be.cg_max_iter and not bool(done.all()):
            it += 1
            Ap = self._matvec(p)
            pAp = (p * Ap).sum(dim=1)
            pp = (p * p).sum(dim=1)
            bad = (~done) & (pAp <= 0)
            if bool(bad.any()):
                j = int(torch.nonzero(bad)[0])
                curv = float(pAp[j] / pp[j])
                need = self.damping + (-curv) / be.data_weight
                raise IndefiniteHessianError(
                    f"The damped curvature (curvature={be.curvature!r}, damping="
                    f"{self.damping!r}) is not positive definite: conjugate "
                    f"gradients found a direction with p'Ap/p'p = {curv:.3g}. A "
                    "non-convex network (or an unpenalised, over-parametrised one) "
                    "needs damping: pass damping > "
                    f"{need:.3g} (per-example units) to GroupInfluence, or use "
                    "curvature='ggn' with a convex loss."
                )
            alpha = torch.where(done, torch.zeros_like(rs), rs / pAp)
            x = x + alpha[:, None] * p
            r = r - alpha[:, None] * Ap
            rs_new = (r * r).sum(dim=1)
            done = done | (rs_new.sqrt() <= be.cg_tol * bnorm)
            beta = torch.where(done, torch.zeros_like(rs), rs_new / rs)
            p = r + beta[:, None] * p
            rs = rs_new
        self.n_iter_.append(it)
        if not bool(done.all()):
            rel = float((rs.sqrt() / bnorm.clamp_min(1e-300)).max())
            warnings.warn(
                f"Conjugate gradients stopped after {it} iterations (cg_max_iter="
                f"{be.cg_max_iter}) with relative residual {rel:.2g} > cg_tol="
                f"{be.cg_tol:g}. Raise cg_max_iter or damping.",
                CGConvergenceWarning,
                stacklevel=4,
            )
        if not bool(torch.isfinite(x).all()):
            raise FloatingPointError(
                "Conjugate gradients produced non-finite values; increase damping."
            )
        return _to_numpy(x).T
