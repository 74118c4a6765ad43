"""The target side of :class:`~sklearn_groupinf.backends._torch_kfac.KroneckerBackend`.

The target's Gauss-Newton matrix ``H_f`` enters the interaction terms
through a rank-``r`` factor ``B M B'`` (never ``P x P``): exact target GGN
products computed layer by layer
(:func:`~sklearn_groupinf.backends._kfac_ggn.ggn_products`), a Nystrom
factor on random combinations of the training rows' parameter shifts
(:func:`~sklearn_groupinf.backends._kfac_target.nystrom_tensor`), built and
kept in the mixed coordinates of ``KroneckerCurvature.eigen_bases``; and the
group rows ``(M Q) H^{-1} B`` from one pass of group sums.
"""

import numpy as np

from ._kfac_ggn import ggn_products
from ._kfac_products import one_per_row_csc
from ._kfac_target import low_rank_target_ggn, nystrom_tensor

#: Directions per pass of the target Gauss-Newton products when the network
#: is texts (:mod:`._kfac_tokens`, vmapped products).
TARGET_PRODUCT_BLOCK = 16

#: Bytes of the temporaries of one pass of layer-wise target Gauss-Newton
#: products (about four ``P x block`` arrays in the network's dtype): with
#: ``P`` = 1.04 M float32 parameters the default rank-64 factor's products
#: are one pass over the target rows (18.9 s) instead of four of 16
#: directions (41.6 s) on the Fashion-MNIST CNN of ``benchmarks/cnn_groups.py``.
TARGET_PRODUCT_BYTES = 2**30


def target_product_block(n_params, itemsize):
    """Directions per pass of the layer-wise target Gauss-Newton products."""
    return max(TARGET_PRODUCT_BLOCK, TARGET_PRODUCT_BYTES // (4 * itemsize * n_params))


class KroneckerTargetFactor:
    """Target-factor methods of
    :class:`~sklearn_groupinf.backends._torch_kfac.KroneckerBackend` (a mixin:
    it uses the backend's curvature ``_kfac``, parameters, batches and target
    rows).
    """

    def target_factor_width(self):
        return self.target_rank

    def _target_output_factors(self):
        """``(U, w)``: ``Lambda_t = sum_c w_tc U_tc U_tc'`` per target row.

        ``Lambda_t`` is the target's Hessian in the raw output ``z_t``
        (``(m, K, K)``), eigendecomposed per row: ``U`` ``(m, C, K)`` holds
        the scaled eigenvectors and ``w`` ``(m, C)`` the target weights times
        the eigenvalues' signs (an indefinite target curvature is allowed).
        ``Lambda_t`` is computed in float64 from the network's outputs
        (whatever its precision), and an eigenvalue at its round-off,
        ``|lam_tc| <= max(K, 8) * eps * max_c |lam_tc|`` or below ``1e-12``
        times the largest of all rows, is taken as zero: the null direction
        of the softmax Hessian ``diag(p) - p p'`` (computed from float32 it
        came out near 1e-8, relative 1e-6, not 0). Factors that are zero for
        every row are dropped, each costing a backward pass per batch of
        target rows in the products (nine instead of ten for a ten-class
        softmax).
        """
        import torch

        if getattr(self, "_target_factors", None) is None:
            lams = []
            with torch.no_grad():
                for b in self._batches(self._Xf.shape[0]):
                    z = self._out(self._theta, self._Xf[b]).to(torch.float64)
                    lams.append(self._target_phi_hessian(z, self._yf[b]))
            Lam = torch.cat(lams)
            lam, V = torch.linalg.eigh(0.5 * (Lam + Lam.transpose(1, 2)))
            mag = lam.abs()
            scale = mag.amax().clamp_min(torch.finfo(lam.dtype).tiny)
            tol = max(mag.shape[1], 8) * torch.finfo(Lam.dtype).eps
            zero = (mag <= tol * mag.amax(1, keepdim=True)) | (mag <= 1e-12 * scale)
            keep = (~zero).any(0)
            sign = lam.sign() * ~zero  # a round-off eigenvalue weighs nothing
            U = (V * mag.sqrt()[:, None, :]).transpose(1, 2)[:, keep]
            self._target_factors = (U, self._wt[:, None] * sign[:, keep])
        return self._target_factors

    def _bases(self):
        """``eigen_bases()`` of the fitted curvature: the layers whose blocks
        the mixed coordinates hold rotated (``{}`` before ``hessian_solver``)."""
        return {} if self._kfac is None else self._kfac.eigen_bases()

    def target_hessian_products(self, V):
        """``V H_f`` ``(k, P)``: exact target GGN products, layer by layer.

        ``H_f = sum_t sum_c w_tc J_t' U_tc U_tc' J_t``
        (:func:`~sklearn_groupinf.backends._kfac_ggn.ggn_products`: one
        pass over the target rows per :func:`target_product_block` directions,
        one backward pass per ``c``; no vmap over the directions).
        """
        U, w = self._target_output_factors()
        V = np.asarray(V, dtype=np.float64)
        if len(V) == 0:
            return np.zeros_like(V)
        step = target_product_block(self.n_params, self._theta.element_size())
        cols = [
            ggn_products(
                self.module,
                self._Xf,
                U,
                w,
                V[j0 : j0 + step].T,
                batch_size=self.batch_size,
            )
            for j0 in range(0, len(V), step)
        ]
        # a transposed view of the (P, k) result: callers transpose it back
        # (copying 8 P k bytes into row order cost seconds at P = 10^6)
        return (cols[0] if len(cols) == 1 else np.hstack(cols)).T

    def _mixed_target_products(self, Vt):
        """``H_f V`` ``(P, k)`` for a tensor ``V`` ``(P, k)`` in mixed
        coordinates, in mixed coordinates and the network's dtype (``H_f``
        rotated there: an orthogonal change of coordinates)."""
        import torch

        own = type(self).target_hessian_products
        if own is not KroneckerTargetFactor.target_hessian_products:
            kf = self._kfac  # a subclass's own products: rotate around them
            out = kf.to_mixed(self.target_hessian_products(kf.from_mixed(Vt).T).T)
            return torch.as_tensor(out, dtype=Vt.dtype, device=Vt.device)
        U, w = self._target_output_factors()
        out = torch.empty_like(Vt)
        step = target_product_block(self.n_params, self._theta.element_size())
        for j0 in range(0, Vt.shape[1], step):
            out[:, j0 : j0 + step] = ggn_products(
                self.module,
                self._Xf,
                U,
                w,
                Vt[:, j0 : j0 + step],
                batch_size=self.batch_size,
                bases=self._bases(),
                numpy=False,
            )
        return out

    def target_hessian_factor(self):
        """Rank-``target_rank`` factor ``(B, diag(lam))`` of the target GGN.

        ``target_sketch="shifts"``: the Nystrom approximation on ``r`` random
        combinations ``H^{-1} Q' G`` of the training rows' parameter shifts
        (exact on their span: one pass over the training rows, ``r`` solves
        and ``r`` target products); ``"plain"``: randomized range finding on
        ``H_f`` itself (``2 (r + 10)`` products).

        The ``shifts`` factor is found in the mixed coordinates of the
        curvature's ``eigen_bases`` (see :meth:`_mixed_target_factor`);
        ``B`` is rotated back here, when asked for.
        """
        if self.target_sketch == "plain":
            return low_rank_target_ggn(
                self.target_hessian_products,
                self.n_params,
                self.target_rank,
                random_state=self.random_state,
            )
        Bm, M = self._mixed_target_factor()
        return self._kfac.from_mixed(Bm), M

    def target_factor_middle(self):
        """The middle ``M`` of :meth:`target_hessian_factor` without rotating
        ``B`` back (``None`` for ``target_sketch="plain"``)."""
        if self.target_sketch == "plain":
            return None
        return self._mixed_target_factor()[1]

    def _mixed_target_factor(self):
        """``(B_m, M)``: the ``shifts`` factor with ``B_m`` in mixed coordinates.

        There the curvature is diagonal on the rotated layers: the solve
        ``H^{-1} Q' G`` and the target products (layer inputs and output
        gradients rotated row by row) rotate no ``P x r`` block of them,
        and the Nystrom algebra (inner products of columns) is unchanged by
        the orthogonal change of coordinates. Kept for the later calls.
        """
        if self._kfac is None:
            raise RuntimeError(
                "hessian_solver must be called before the target factor."
            )
        cached = getattr(self, "_mixed_factor", None)
        if cached is not None and cached[0] is self._kfac:
            return cached[1]
        Om = self._kfac.solve_mixed(self._sketch_sums().T, numpy=False)
        factor = nystrom_tensor(self._mixed_target_products, Om, self.target_rank)
        del Om
        self._mixed_factor = (self._kfac, factor, None)
        return factor

    def _solved_mixed_factor(self):
        """``H^{-1} B`` in mixed coordinates (a tensor), computed once."""
        self._mixed_target_factor()
        kf, factor, solved = self._mixed_factor
        if solved is None:
            solved = kf.solve_mixed(factor[0], numpy=False)
            self._mixed_factor = (kf, factor, solved)
        return solved

    def solved_target_factor(self):
        """``H^{-1} B`` ``(P, r)`` of :meth:`target_hessian_factor`'s ``B``
        (``shifts``: one rotation back from mixed coordinates instead of a
        solve), or ``None`` when the generic solve applies."""
        if self.target_sketch == "plain":
            return None
        return self._kfac.from_mixed(self._solved_mixed_factor())

    def target_factor_group_rows(self, matrix):
        """``((matrix @ Q) H^{-1} B, M)``: the group rows of the interaction
        estimator and the middle of the target factor, from one pass of
        group sums in mixed coordinates (``B`` never rotated back); ``None``
        for ``target_sketch="plain"`` or a matrix with several entries in a
        row (the generic path applies)."""
        if self.target_sketch == "plain":
            return None
        if not one_per_row_csc(matrix)[1]:
            return None
        solved = self._solved_mixed_factor()
        rows = self.aggregated_removal_products(matrix, solved, mixed=True)
        return rows, self._mixed_factor[1][1]

    def _sketch_sums(self):
        """``G Q`` ``(r, P)`` of the count sketch ``G`` in mixed coordinates:
        kept from the pass of :meth:`removal_gradient_norms` (then released;
        a tensor in the network's dtype, which the solve takes as it is)
        when the parameters and the curvature have not changed since, else
        a new pass."""
        import torch

        cached = self._kept_from_pass("sketch")
        getattr(self, "_pass_kept", {}).pop("sketch", None)  # released
        if cached is None:
            G = count_sketch(self.target_rank, self.n_samples, self.random_state)
            return self._kfac.to_mixed(self.aggregated_removal_gradients(G).T).T
        weighted, out = cached
        c = self._offset()
        if c is not None:
            counts = np.asarray(weighted.sum(axis=1)).reshape(-1, 1)
            kw = dict(dtype=out.dtype, device=out.device)
            c = self._kfac.to_mixed(c)
            out += torch.as_tensor(counts, **kw) * torch.as_tensor(c, **kw)[None]
        return out


def count_sketch(rank, n, random_state=0):
    """Sparse ``(rank, n)`` sketch: each column one random sign in a random row.

    ``G Q`` is then ``rank`` signed sums over disjoint random subsets of the
    rows: one pass costing ``n P`` (a Gaussian ``G`` costs ``n P rank``),
    with the same span quality for the Nystrom factor (measured by
    ``benchmarks/kfac_target_rank.py``).
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(random_state)
    rows = rng.integers(0, rank, n)
    signs = rng.choice([-1.0, 1.0], n)
    return sp.csr_matrix((signs, (rows, np.arange(n))), shape=(rank, n))
