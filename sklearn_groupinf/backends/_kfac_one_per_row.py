"""Sums over groups of rows that each hold at most one row, streamed batch by batch.

:class:`_OnePerRowSums` accumulates ``matrix @ Q`` for a ``(g, n)`` matrix
with at most one entry per row (group memberships, a count sketch) from the
layer inputs and output gradients of each batch: single-position layers by
keeping their rows and contracting them group by group at the end,
convolutions by their weight gradients over runs of one group, other layers
from per-example gradients (``index_add``). Used by
:mod:`~sklearn_groupinf.backends._kfac_group_sums`.
"""

import numpy as np

from ._kfac_conv import conv_weighted_sum
from ._kfac_products import _layer_blocks

#: Largest number of values of single-position layers' inputs and output
#: gradients kept over all rows by group sums (64 Mi values, 256 MiB in
#: float32); a layer beyond it is summed through per-example gradients.
MAX_KEPT_VALUES = 2**26

#: Fewest rows per group, on average, for which group sums of convolutions
#: are formed group by group: the rows sorted by group, one weight-gradient
#: convolution per group and batch (no patches, no per-example gradients).
#: Group sums with 64 directions over 4,000 rows of the CNN of
#: ``benchmarks/cnn_groups.py`` in batches of 128, by groups / by
#: per-example gradients (``nice .venv/bin/python
#: benchmarks/kfac_conv_routes.py``, the sums contracted with the directions
#: as they are formed): 26.5 / 23.8 s with 2 rows per group, 13.5 / 13.0 s
#: with 4, 8.3 / 8.7 s with 8, 5.4 / 5.8 s with 16, 3.7 / 4.8 s with 32
#: (on the shared machine a second run of the same code varied by up to 30 %).
SEGMENT_MIN_ROWS = 8

#: Fewest input channels of a convolution for that route. With one input
#: channel per-example gradients are cheaper: on 128 rows of 28 x 28 the
#: first convolution of ``benchmarks/cnn_groups.py`` (1 to 16 channels)
#: took 7.5 ms by weight gradients and 2.6 ms by per-example gradients,
#: against 2.9 ms and 6.0 ms with 3 input channels and 3.1 ms and 8.0 ms
#: for its 16-channel convolutions (``benchmarks/kfac_conv_routes.py``).
CONV_SUMS_MIN_CHANNELS = 2

#: Values of the kept layers' group sums formed at once before they are
#: contracted with ``V`` in one matrix product (16 Mi, 64 MiB in float32):
#: one product per group would read ``V``'s rows of the layer once per group
#: (256 MB for the CNN's 1568 x 640 layer with 64 directions).
CONTRACT_VALUES = 2**24


def _convolutions(layout, bases=None):
    """The convolutions whose sums and products come from their own
    weight-gradient and forward convolutions (:mod:`._kfac_conv`): those not
    held in an eigenbasis, with at least :data:`CONV_SUMS_MIN_CHANNELS`
    input channels."""
    return {
        i
        for i, layer in enumerate(layout.layers)
        if layer["kind"] == "conv"
        and i not in (bases or {})
        and layer["module"].in_channels >= CONV_SUMS_MIN_CHANNELS
    }


def _rotated(bases, i, g, a):
    """``(g, a)`` of layer ``i`` rotated into its eigenbasis ``(Q_G, Q_A)``
    (``bases[i]``; one position only), or as they are when ``i`` has none."""
    if not bases or i not in bases:
        return g, a
    if g.shape[2] != 1:
        raise ValueError(
            "Mixed coordinates rotate only layers with one position; layer "
            f"{i} has {g.shape[2]}."
        )
    qg, qa = bases[i]
    return (g[..., 0] @ qg)[..., None], (a[..., 0] @ qa)[..., None]


class _OnePerRowSums:
    """``matrix @ Q`` for a CSC ``(g, n)`` matrix with at most one entry per row,
    accumulated batch by batch (``add``) from layer inputs and output gradients.

    Layers with one position (``T = 1``, e.g. every ``nn.Linear`` on flat
    inputs) keep their output gradients and inputs (the coefficients applied
    at the end) (``n (out + in)``
    values, at most :data:`MAX_KEPT_VALUES` in all) and contract them
    group by group at the end, ``G_g' A_g``: one matrix product per group,
    never a per-example gradient. Other layers (convolutions) form each
    row's gradient ``D_i`` in slices and add it into its group's row
    (``index_add_``); :meth:`add` takes those slices when the caller has
    formed them already (``blocks``). Rows without a coefficient get weight 0.
    ``bases`` (``{layer index: (Q_G, Q_A)}``, single-position layers): those
    layers' sums in their Kronecker eigenbasis (the kept ``G`` and ``A``
    rotated once, ``n (out^2 + in^2)`` multiply-adds).
    ``V`` (a ``(P, k)`` tensor): the sums are contracted with it as they are
    formed, so that ``(matrix @ Q) V`` ``(g, k)`` is accumulated and the
    ``(g, P)`` sums are never held (``g P`` values: 40 GB in float32 for
    10,000 groups of a network of 10^6 parameters).
    """

    def __init__(self, matrix, layout, bases=None, rows_cache=None, V=None):
        import torch

        n_g, n = matrix.shape
        self.layout, self.n_g, self.n = layout, n_g, n
        ref = next(iter(layout.params.values()))
        counts = np.diff(matrix.indptr)
        col = np.zeros(n, dtype=np.int64)
        coef = np.zeros(n)
        has = counts > 0
        col[has] = matrix.indices[matrix.indptr[:-1][has]]
        coef[has] = matrix.data[matrix.indptr[:-1][has]]
        self.col = col
        self.col_t = torch.as_tensor(col, device=ref.device)
        self.coef_t = torch.as_tensor(coef, dtype=ref.dtype, device=ref.device)
        self.V = V
        width = layout.n_params if V is None else V.shape[1]
        self.out = torch.zeros((n_g, width), dtype=ref.dtype, device=ref.device)
        self.kept = {}  # layer index -> ([g (b, out)], [a (b, in[+1])])
        self.fed = []  # the rows of each batch added, in order
        self.budget = MAX_KEPT_VALUES
        self.bases = bases or {}
        self.has = has
        self.raw = set()
        # {layer: (g, a)} of kept layers over every row (row order, unweighted,
        # rotated when in bases): given, used instead of the pass's; exported
        # by result() when every row was fed
        self.cached = rows_cache or {}
        self.exported = {}

    def segment_layers(self):
        """The layers to sum group by group (:data:`SEGMENT_MIN_ROWS`):
        convolutions not held in an eigenbasis; ``()`` for small groups."""
        n_rows = int(self.has.sum())
        n_groups = len(np.unique(self.col[self.has]))
        if n_rows < SEGMENT_MIN_ROWS * max(n_groups, 1):
            return ()
        self.raw = _convolutions(self.layout, self.bases)
        return self.raw

    def sorted_rows(self, every=False):
        """The rows with a coefficient, sorted by their group (stable);
        ``every``: then the rows without one."""
        if every:
            return np.argsort(np.where(self.has, self.col, self.n_g), kind="stable")
        rows = np.flatnonzero(self.has)
        return rows[np.argsort(self.col[rows], kind="stable")]

    def _dot(self, i, M):
        """``<M_j, V_l>`` ``(m, k)`` for blocks ``M`` ``(m, out, in[+1])`` of
        layer ``i`` (the bias column last), ``V_l`` that layer's rows of ``V``
        where they lie."""
        layout, layer, V = self.layout, self.layout.layers[i], self.V
        o, k = layer["n_out"], V.shape[1]
        n_w = layer["n_in"] - (layer["bias"] is not None)
        Vw = V[layout.slices[layer["weight"]]]  # (out * in, k)
        res = M[:, :, :n_w].reshape(M.shape[0], o * n_w) @ Vw
        if layer["bias"] is not None:
            res += M[:, :, n_w] @ V[layout.slices[layer["bias"]]].view(o, k)
        return res

    def _add_segments(self, rows, i, g, x):
        """Group sums of convolution ``i`` over a batch of rows sorted by
        group: per run of one group, ``sum_rows m_i D_i`` as the weight
        gradient of the convolution (and the bias's), straight into the
        group's row."""
        layer, layout, out = self.layout.layers[i], self.layout, self.out
        cols = self.col[rows.cpu().numpy()]
        coef = self.coef_t[rows]
        n_w = layer["n_in"] - (layer["bias"] is not None)
        starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
        for s0, s1 in zip(starts, np.r_[starts[1:], len(cols)]):
            k = int(cols[s0])
            W = conv_weighted_sum(layer, x[s0:s1], g[s0:s1], coef[s0:s1])
            if self.V is not None:
                out[k] += self._dot(i, W[None])[0]
                continue
            out[k, layout.slices[layer["weight"]]] += W[:, :n_w].reshape(-1)
            if layer["bias"] is not None:
                out[k, layout.slices[layer["bias"]]] += W[:, n_w]

    def keeps(self, i, g, a):
        """Whether layer ``i`` (one batch ``g``, ``a``) is kept rather than summed."""
        n = self.n
        if g.shape[2] != 1:
            return False
        if i in self.kept:
            return True
        if n * (g.shape[1] + a.shape[1]) > self.budget:
            return False
        self.kept[i] = ([], [])
        self.budget -= n * (g.shape[1] + a.shape[1])
        return True

    def add(self, sl, layers, other, blocks=None):
        """Add one batch; ``blocks[i]``: that layer's ``(rows, D)`` slices of
        the unscaled per-example gradients, when the caller formed them."""
        layout, out = self.layout, self.out
        cb, wb = self.col_t[sl], self.coef_t[sl]
        self.fed.append(sl)
        for i, g, a in layers:
            layer = layout.layers[i]
            if i in self.raw:
                self._add_segments(sl, i, g, a)
                continue
            if i in self.cached:
                continue
            if self.keeps(i, g, a):
                self.kept[i][0].append(g[..., 0])
                self.kept[i][1].append(a[..., 0])
                continue
            # per-example gradients D (the bias column last): rotated for a
            # layer in its eigenbasis, or as the caller formed them
            if i in self.bases:
                parts = _layer_blocks(*_rotated(self.bases, i, g, a))
            elif blocks is not None and i in blocks:
                parts = blocks[i]
            else:
                parts = _layer_blocks(g, a)
            for s2, D in parts:
                D = D * wb[s2, None, None]
                if self.V is not None:  # contracted with V as formed
                    out.index_add_(0, cb[s2], self._dot(i, D))
                    continue
                if layer["bias"] is not None:
                    bias = out[:, layout.slices[layer["bias"]]]
                    bias.index_add_(0, cb[s2], D[:, :, -1])
                    D = D[:, :, :-1]
                w_cols = out[:, layout.slices[layer["weight"]]]
                w_cols.index_add_(0, cb[s2], D.reshape(D.shape[0], -1))
        for name, G in other.items():
            G = G.reshape(G.shape[0], -1) * wb[:, None]
            if self.V is not None:
                out.index_add_(0, cb, G @ self.V[layout.slices[name]])
                continue
            out[:, layout.slices[name]].index_add_(0, cb, G)

    def needs_pass(self):
        """Whether the rows must be streamed: not when every layer is cached
        and no parameter lies outside the layers."""
        layers = range(len(self.layout.layers))
        return bool(self.layout.other) or any(i not in self.cached for i in layers)

    def result(self):
        """The ``(g, P)`` sums (a tensor)."""
        import torch

        layout, col = self.layout, self.col
        ref = next(iter(layout.params.values()))
        if self.kept:
            fed = np.concatenate(
                [
                    np.arange(self.n)[sl] if isinstance(sl, slice) else sl.cpu().numpy()
                    for sl in self.fed
                ]
            )
            fed_t = torch.as_tensor(fed, device=ref.device)
            every = len(fed) == self.n and bool(np.all(np.bincount(fed) == 1))
            order = np.argsort(col[fed], kind="stable")
            order_t = torch.as_tensor(order, device=ref.device)
            for i, (gs, as_) in self.kept.items():
                G, A = torch.cat(gs), torch.cat(as_)
                if i in self.bases:  # (Q_G' g)(Q_A' a)': the whole block
                    qg, qa = self.bases[i]
                    G, A = G @ qg, A @ qa
                if every:  # back in row order, for later passes
                    inv = torch.empty_like(fed_t)
                    inv[fed_t] = torch.arange(len(fed), device=ref.device)
                    self.exported[i] = (G[inv], A[inv])
                G = G * self.coef_t[fed_t][:, None]
                self._contract(i, G[order_t], A[order_t], col[fed][order])
            self.kept = {}
        if self.cached:
            rows = self.sorted_rows()
            rows_t = torch.as_tensor(rows, device=ref.device)
            for i, (G, A) in self.cached.items():
                G = G[rows_t] * self.coef_t[rows_t][:, None]
                self._contract(i, G, A[rows_t], col[rows])
        return self.out

    def _contract(self, i, G, A, cols):
        """Group sums ``G_k' A_k`` of a kept layer from its weighted output
        gradients and inputs ``G``, ``A`` ordered by group ``cols``."""
        import torch

        layout, out = self.layout, self.out
        layer = layout.layers[i]
        bounds = np.searchsorted(cols, np.arange(self.n_g + 1))
        n_w = A.shape[1] - (layer["bias"] is not None)
        w_sl = layout.slices[layer["weight"]]
        rotated = i in self.bases
        if self.V is not None:  # whole blocks, a chunk of groups per product
            step = max(1, CONTRACT_VALUES // (G.shape[1] * A.shape[1]))
            for k0 in range(0, self.n_g, step):
                ks = range(k0, min(self.n_g, k0 + step))
                M = torch.stack(
                    [
                        G[bounds[k] : bounds[k + 1]].T @ A[bounds[k] : bounds[k + 1]]
                        for k in ks
                    ]
                )
                out[k0 : ks.stop] += self._dot(i, M)
            return
        for k in range(self.n_g):
            rows = slice(bounds[k], bounds[k + 1])
            w_view = out[k, w_sl].view(G.shape[1], n_w)  # contiguous row
            if rotated and layer["bias"] is not None:
                full = G[rows].T @ A[rows]
                w_view.copy_(full[:, :n_w])
                out[k, layout.slices[layer["bias"]]] = full[:, n_w]
                continue
            torch.matmul(G[rows].T, A[rows, :n_w], out=w_view)
            if layer["bias"] is not None:  # its input is the constant 1
                out[k, layout.slices[layer["bias"]]] = G[rows].sum(0)
