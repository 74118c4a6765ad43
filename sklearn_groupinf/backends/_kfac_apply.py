"""Products of a fitted :class:`~sklearn_groupinf.backends._kfac.KroneckerCurvature`.

``R diag(f(lam)) R' V`` layer by layer, with ``R`` each layer's Kronecker
eigenbasis ``Q_G (x) Q_A`` and ``lam`` its (EK-FAC corrected) eigenvalues
plus penalty and damping: ``matvec``, ``solve``, ``power``, ``dense``, and
the mixed coordinates (``eigen_bases``, ``to_mixed``, ``from_mixed``,
``solve_mixed``) in which single-position layers are held rotated into
their eigenbasis. Parameters outside Kronecker-factored layers are scaled
by their diagonal.
"""

import numpy as np

from .._hessian import IndefiniteHessianError
from ._kfac_layers import _param_columns

#: Columns per block in ``solve`` / ``matvec`` (bounds their temporaries to
#: a few ``P x APPLY_BLOCK`` arrays).
APPLY_BLOCK = 16


class KroneckerProducts:
    """Product methods of :class:`~sklearn_groupinf.backends._kfac.KroneckerCurvature`
    (a mixin: it uses the fitted ``factors_``, ``_layout``, ``_diag``,
    ``damping`` and ``data_weight_``)."""

    def _apply(self, V, fn, *, mixed_in=False, mixed_out=False, numpy=True):
        """``R diag(fn(lam)) R' V`` layer by layer (``fn=None``: no scaling).

        ``mixed_in`` / ``mixed_out``: ``V`` / the result are in the mixed
        coordinates of :meth:`eigen_bases` (those layers' blocks rotated
        into their Kronecker eigenbasis, ``Q_G' M Q_A``), so that the
        rotation on that side is skipped. ``numpy=False`` returns the
        ``(P, k)`` tensor in the network's dtype.
        """
        import torch

        check_is_fitted_kfac(self)
        ref = self.factors_[0]["qa"] if self.factors_ else self._diag
        Vt, one = _param_columns(V, self.n_params_, ref)
        out = torch.empty_like(Vt)
        shift = float(self.damping) * self.data_weight_
        k = Vt.shape[1]
        eig = self.eigen_bases() if (mixed_in or mixed_out) else {}
        for i, (layer, f) in enumerate(zip(self._layout.layers, self.factors_)):
            rot_in, rot_out = mixed_in and i in eig, mixed_out and i in eig
            lam = None
            if fn is not None:
                lam = fn(f["lam"] + f["pen"] + shift, layer["name"])[:, :, None]
            if rot_in == rot_out and (rot_in or lam is None):
                # no rotation: scale (or copy) the layer's rows where they are
                self._scale_rows(out, Vt, lam, layer)
                continue
            for j0 in range(0, k, APPLY_BLOCK):  # temporaries of APPLY_BLOCK columns
                cols = slice(j0, j0 + APPLY_BLOCK)
                M = self._layout.block(Vt[:, cols], layer)
                R = M if rot_in else _rotate(f, M)
                if lam is not None:
                    R = R * lam
                self._layout.put(
                    out[:, cols], R if rot_out else _rotate(f, R, back=True), layer
                )
        if self._diag is not None:
            rows = torch.cat(
                [
                    torch.arange(
                        self._layout.slices[k].start,
                        self._layout.slices[k].stop,
                        device=Vt.device,
                    )
                    for k in self._layout.other
                ]
            )
            out[rows] = (
                Vt[rows]
                if fn is None
                else Vt[rows]
                * fn(self._diag + self._diag_pen + shift, "diagonal")[:, None]
            )
        if not numpy:
            return out[:, 0] if one else out
        res = out.detach().to("cpu", torch.float64).numpy()
        return res[:, 0] if one else res

    def _scale_rows(self, out, Vt, lam, layer):
        """``out = lam * Vt`` on one layer's rows (``lam`` ``(out, in[+1], 1)``
        or None: a copy), without gathering its ``(out, in[+1], k)`` block."""
        w_sl = self._layout.slices[layer["weight"]]
        b_name = layer["bias"]
        if lam is None:
            out[w_sl] = Vt[w_sl]
            if b_name is not None:
                out[self._layout.slices[b_name]] = Vt[self._layout.slices[b_name]]
            return
        import torch

        n_w = lam.shape[1] - (b_name is not None)
        shape = (lam.shape[0], n_w, Vt.shape[1])
        if out.is_contiguous():  # no temporary: half the memory traffic
            torch.mul(Vt[w_sl].reshape(shape), lam[:, :n_w], out=out[w_sl].view(shape))
        else:
            out[w_sl] = (Vt[w_sl].reshape(shape) * lam[:, :n_w]).view(-1, shape[2])
        if b_name is not None:
            b_sl = self._layout.slices[b_name]
            out[b_sl] = Vt[b_sl] * lam[:, n_w]

    def eigen_bases(self):
        """``{layer index: (Q_G, Q_A)}`` of the layers with one position.

        The *mixed coordinates* of a parameter vector hold these layers'
        blocks ``M`` rotated into their Kronecker eigenbasis,
        ``Q_G' M Q_A`` (in the same slots), and every other parameter as
        it is. The damped curvature is diagonal there on these layers, so
        :meth:`solve_mixed` costs no rotation of them; their per-example
        gradients ``g a'`` rotate as ``(Q_G' g) (Q_A' a)'``, one small
        product per row instead of two ``out x in`` by ``in x in`` and
        ``out x out`` products per column. Convolutions (many positions)
        stay in parameter coordinates.
        """
        check_is_fitted_kfac(self)
        return {
            i: (f["qg"], f["qa"])
            for i, f in enumerate(self.factors_)
            if f.get("T") == 1
        }

    def to_mixed(self, V, *, numpy=True):
        """``V`` ``(P,)`` or ``(P, k)`` in the mixed coordinates of
        :meth:`eigen_bases` (an orthogonal change of coordinates)."""
        return self._apply(V, None, mixed_out=True, numpy=numpy)

    def from_mixed(self, V, *, numpy=True):
        """Inverse of :meth:`to_mixed`."""
        return self._apply(V, None, mixed_in=True, numpy=numpy)

    def solve_mixed(self, V, *, numpy=True):
        """:meth:`solve` with ``V`` and the result in mixed coordinates."""
        return self._apply(V, self._inverse, mixed_in=True, mixed_out=True, numpy=numpy)

    def matvec(self, V):
        """``(F + damping * W * I) V`` for ``V`` of shape ``(P,)`` or ``(P, k)``."""
        return self._apply(V, lambda lam, name: lam)

    def solve(self, V):
        """``(F + damping * W * I)^{-1} V``, ``V`` of shape ``(P,)`` or ``(P, k)``."""
        return self._apply(V, self._inverse)

    def _inverse(self, lam, name):
        # round-off leaves a singular factor's eigenvalues at ~1e-17, not 0
        if bool((lam <= 1e-12 * float(lam.max().clamp_min(1e-300))).any()):
            raise IndefiniteHessianError(
                f"The Kronecker-factored curvature of {name!r} is singular "
                f"with damping={self.damping!r}: some directions have zero "
                "curvature. Pass damping > 0 (or a larger one; per-example units)."
            )
        return 1.0 / lam

    def power(self, V, p):
        """``(F + damping * W * I)^p V`` (e.g. ``p = -1/2``), shaped as ``solve``."""
        if p >= 0:
            return self._apply(V, lambda lam, name: lam**p)
        self.solve(np.zeros(self.n_params_))  # raises on a singular curvature
        return self._apply(V, lambda lam, name: lam**p)

    def dense(self):
        """Dense damped curvature ``(P, P)`` (for tests and small models only)."""
        if self.n_params_ > 20_000:
            raise MemoryError(
                f"dense() of {self.n_params_} parameters would hold a "
                f"{self.n_params_}^2 matrix; use matvec/solve (P <= 20000 only)."
            )
        return self.matvec(np.eye(self.n_params_))


def _rotate(f, M, back=False):
    """``Q_G' M Q_A`` (``back``: ``Q_G M Q_A'``) of blocks ``M`` ``(out, in, k)``."""
    import torch

    if back:
        return torch.einsum("op,pfk,ef->oek", f["qg"], M, f["qa"])
    return torch.einsum("op,oek,ef->pfk", f["qg"], M, f["qa"])


def check_is_fitted_kfac(curv):
    if not hasattr(curv, "factors_"):
        raise ValueError(
            "This KroneckerCurvature is not fitted yet: call fit(X, y) first."
        )
