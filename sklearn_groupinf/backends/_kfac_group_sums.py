"""Per-example removal-gradient norms and group sums ``matrix @ Q`` in one pass.

Streams the training rows ``batch_size`` at a time, layer by layer, from
the layers' inputs and output gradients
(:mod:`~sklearn_groupinf.backends._kfac_products`): the squared norms of the
per-example gradients, their products with a few directions, and their sums
over groups (a sparse ``(g, n)`` matrix) or a count sketch, never holding
``n x P``.
"""

import numpy as np

from ._kfac_conv import conv_products, conv_weighted_sum
from ._kfac_layers import _acts, _grads, _param_columns
from ._kfac_products import (
    _batches_of_layer_gradients,
    _finish,
    _layer_blocks,
    _prepare,
    one_per_row_csc,
)

#: Largest number of values of single-position layers' inputs and output
#: gradients kept over all rows by group sums (64 Mi values, 256 MiB in
#: float32); a layer beyond it is summed through per-example gradients.
MAX_KEPT_VALUES = 2**26

#: Fewest rows per group, on average, for which group sums of convolutions
#: are formed group by group: the rows sorted by group, one weight-gradient
#: convolution per group and batch (no patches, no per-example gradients).
#: Group sums with 64 directions over 4,000 rows of the CNN of
#: ``benchmarks/cnn_groups.py`` (batches of 128) took, by groups and by
#: per-example gradients: 44.1 / 17.6 s with 2 rows per group, 9.6 / 10.3 s
#: with 4, 5.7 / 7.5 s with 8, 4.0 / 5.5 s with 16, 3.0 / 4.1 s with 32.
SEGMENT_MIN_ROWS = 8

#: Fewest input channels of a convolution for that route. With one input
#: channel per-example gradients are cheaper: on 128 rows of 28 x 28 the
#: first convolution of ``benchmarks/cnn_groups.py`` (1 to 16 channels)
#: took 8.5 ms by weight gradients and 3.5 ms by per-example gradients,
#: against 3.6 ms and 5.2 ms with 3 input channels.
CONV_SUMS_MIN_CHANNELS = 2


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


def sq_norms_and_sum(
    module,
    loss,
    X,
    y,
    s,
    *,
    batch_size=256,
    matrix=None,
    V=None,
    bases=None,
    norm_rows=None,
    keep_rows=None,
):
    """:func:`per_example_sq_norms` and ``sum_i s_i grad l_i`` ``(P,)`` in one pass.

    The weighted sum is the data part of the objective's gradient; with the
    norms it gives the stationarity without a second pass over the rows.
    The same pass can also return, in this order after them:

    - with ``V`` ``(P, k)``: the products ``Q V`` ``(n, k)`` of
      :func:`per_example_products`;
    - with ``matrix`` (``(g, n)``, at most one entry per row, e.g. a count
      sketch): ``matrix @ Q`` ``(g, P)`` as :func:`aggregated_gradients`, as
      a tensor in the network's dtype; with ``bases`` (``{layer index:
      (Q_G, Q_A)}``, single-position layers) in the mixed coordinates of
      :meth:`KroneckerCurvature.eigen_bases`.

    The per-example gradients of layers with several positions, formed once
    for the norms, serve the sum, the products and the sketch. With
    ``norm_rows`` (sorted row indices) only those rows' squared norms are
    computed and returned: a convolution's per-example gradients are then
    formed for those rows alone, and its sum, products and sketch sums come
    from its own weight-gradient and forward convolutions
    (:mod:`~sklearn_groupinf.backends._kfac_conv`; the rows streamed sorted
    by their row of ``matrix`` when it has at least
    :data:`SEGMENT_MIN_ROWS` rows per row on average). ``keep_rows`` (a
    dict, with ``matrix``): receives the kept single-position layers' output
    gradients and inputs over every row (rotated into ``bases``), which
    :func:`aggregated_gradients` takes as ``rows_cache``.
    """
    import torch

    layout, ref, X, y = _prepare(module, X, y)
    n = X.shape[0]
    s = torch.as_tensor(s, dtype=ref.dtype, device=ref.device)
    sketch = None
    if matrix is not None:
        matrix, one_per_row = one_per_row_csc(matrix)
        if not one_per_row:
            raise ValueError("matrix must have at most one entry per column (row).")
        sketch = _OnePerRowSums(matrix, layout, bases=bases)
    raw, rows, want = (), None, None
    if norm_rows is not None:
        want = torch.zeros(n, dtype=torch.bool, device=ref.device)
        want[torch.as_tensor(np.asarray(norm_rows), device=ref.device)] = True
        raw = _convolutions(layout, bases)
        if sketch is not None and raw and not sketch.segment_layers():
            raw = ()  # sketch rows too small for sums group by group
        if sketch is not None and raw:
            rows = torch.as_tensor(sketch.sorted_rows(every=True), device=ref.device)
    k = 0
    if V is not None:
        Vt = _param_columns(V, layout.n_params, ref)[0]
        k = Vt.shape[1]
        vblocks = [layout.block(Vt, layer) for layer in layout.layers]
        V_other = {n: Vt[layout.slices[n]].reshape(-1, k) for n in layout.other}
    sums = [None] * len(layout.layers)
    other_sum = {}
    norms = torch.zeros(n, dtype=ref.dtype, device=ref.device)
    prods = torch.zeros((n, k), dtype=ref.dtype, device=ref.device)
    for sl, layers, other in _batches_of_layer_gradients(
        module, loss, X, y, batch_size, rows=rows, raw=raw
    ):
        res = None
        sb = s[sl]
        formed = {}
        prod = None if V is None else sb.new_zeros(sb.shape[0], k)
        for i, g, a in layers:
            if i in raw:  # a convolution's input and output gradients
                layer = layout.layers[i]
                part_sum = conv_weighted_sum(layer, a, g, sb)
                part = sb.new_zeros(sb.shape[0])
                sub = want[sl]
                if bool(sub.any()):
                    ga, aa = _grads(layer, g[sub]), _acts(layer, a[sub])
                    part[sub] = torch.cat(
                        [(D**2).sum((1, 2)) for _, D in _layer_blocks(ga, aa)]
                    )
                if V is not None:
                    prod += conv_products(layer, a, g, vblocks[i])
            elif g.shape[2] == 1:
                part_sum = torch.einsum("b,bot,bdt->od", sb, g, a)
                part = (g[..., 0] ** 2).sum(1) * (a[..., 0] ** 2).sum(1)
                if V is not None:
                    Va = torch.einsum("odk,bdt->bokt", vblocks[i], a)
                    prod += torch.einsum("bot,bokt->bk", g, Va)
            else:
                blocks = list(_layer_blocks(g, a))
                part = torch.cat([(D**2).sum((1, 2)) for _, D in blocks])
                part_sum = sum(torch.einsum("b,bod->od", sb[r], D) for r, D in blocks)
                if V is not None:
                    for r, D in blocks:
                        prod[r] += torch.einsum("bod,odk->bk", D, vblocks[i])
                if sketch is not None and not sketch.keeps(i, g, a):
                    formed[i] = blocks
            sums[i] = part_sum if sums[i] is None else sums[i] + part_sum
            res = part if res is None else res + part
        if sketch is not None:
            sketch.add(sl, layers, other, blocks=formed)
        for name, G in other.items():
            G = G.reshape(G.shape[0], -1)
            other_sum[name] = other_sum.get(name, 0) + sb @ G
            part = (G**2).sum(1)
            res = part if res is None else res + part
            if V is not None:
                prod += G @ V_other[name]
        norms[sl] = res
        if V is not None:
            prods[sl] = prod
    total = torch.zeros((layout.n_params, 1), dtype=ref.dtype, device=ref.device)
    for layer, block in zip(layout.layers, sums):
        if block is not None:
            layout.put(total, block[:, :, None], layer)
    for name, v in other_sum.items():
        total[layout.slices[name], 0] = v
    if want is not None:
        norms = norms[want]
    res = [_finish(norms), _finish(total[:, 0])]
    if V is not None:
        res.append(_finish(prods))
    if sketch is not None:
        res.append(sketch.result())
        if keep_rows is not None:
            keep_rows.update(sketch.exported)
    return tuple(res)


def aggregated_gradients(
    module, loss, X, y, matrix, *, batch_size=256, V=None, bases=None, rows_cache=None
):
    """``matrix @ Q`` ``(g, P)`` for a ``(g, n)`` (sparse) matrix, without ``n x P``.

    With ``V`` ``(P, k)``: ``(matrix @ Q) @ V`` ``(g, k)``, multiplied on the
    device before anything is copied out.

    ``Q`` holds the unweighted per-example loss gradients as rows, in the flat
    order of the trainable parameters; a layer's rows are accumulated as
    ``sum_i m_gi D_i``. When every row ``i`` enters at most one sum (group
    memberships, a count sketch), each ``m_gi D_i`` is added to its own
    column only (``n P`` operations instead of ``n P g``). ``bases``
    (such matrices only): the sums, and ``V``, in the mixed coordinates of
    :meth:`KroneckerCurvature.eigen_bases` (``{layer index: (Q_G, Q_A)}``).
    ``rows_cache`` (such matrices only): ``{layer index: (g, a)}`` of
    single-position layers over every row, as :func:`sq_norms_and_sum`'s
    ``keep_rows`` gives them for the same parameters and ``bases``; those
    layers are not taken from the pass, and without other layers or
    parameters outside them no pass is made.
    """
    import torch

    layout, ref, X, y = _prepare(module, X, y)
    matrix, one_per_row = one_per_row_csc(matrix)
    n_g = matrix.shape[0]
    Vt = None if V is None else _param_columns(V, layout.n_params, ref)[0]
    if one_per_row:
        out = _aggregated_one_per_row(
            module, loss, X, y, matrix, layout, batch_size, bases, rows_cache
        )
        return _finish(out if Vt is None else out @ Vt)
    if bases or rows_cache:
        raise ValueError(
            "bases and rows_cache need a matrix with at most one entry per row."
        )
    out = torch.zeros((layout.n_params, n_g), dtype=ref.dtype, device=ref.device)
    # accumulate straight into ``out``: weight rows as an (out * in, g) view,
    # the bias column (when trainable) into its own rows
    w_rows = {
        i: out[layout.slices[layer["weight"]]] for i, layer in enumerate(layout.layers)
    }
    b_rows = {
        i: out[layout.slices[layer["bias"]]]
        for i, layer in enumerate(layout.layers)
        if layer["bias"] is not None
    }
    for sl, layers, other in _batches_of_layer_gradients(
        module, loss, X, y, batch_size
    ):
        Mb = torch.as_tensor(
            matrix[:, sl].toarray(), dtype=ref.dtype, device=ref.device
        )
        for i, g, a in layers:
            if i in b_rows:  # the input's last row is the constant 1 of the bias
                b_rows[i].addmm_(g.sum(2).T, Mb.T)
                a = a[:, :-1]
            for s2, D in _layer_blocks(g, a):
                w_rows[i].addmm_(D.reshape(D.shape[0], -1).T, Mb[:, s2].T)
        for name, G in other.items():
            out[layout.slices[name]] += G.reshape(G.shape[0], -1).T @ Mb.T
    return _finish(out.T if Vt is None else out.T @ Vt)


def _aggregated_one_per_row(
    module, loss, X, y, matrix, layout, batch_size, bases=None, rows_cache=None
):
    """:func:`aggregated_gradients` when each row has at most one coefficient.

    ``matrix`` is CSC ``(g, n)``; returns the ``(g, P)`` result (a tensor),
    accumulated by :class:`_OnePerRowSums`.
    """
    sums = _OnePerRowSums(matrix, layout, bases=bases, rows_cache=rows_cache)
    if not sums.needs_pass():
        return sums.result()
    rows, raw = None, sums.segment_layers()
    if raw:  # rows sorted by group (those without a coefficient left out)
        import torch

        rows = torch.as_tensor(sums.sorted_rows(), device=X.device)
    for sl, layers, other in _batches_of_layer_gradients(
        module, loss, X, y, batch_size, rows=rows, raw=raw
    ):
        sums.add(sl, layers, other)
    return sums.result()


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
    inputs) keep their scaled output gradients and inputs (``n (out + in)``
    values, at most :data:`MAX_KEPT_VALUES` in all) and contract them
    group by group at the end, ``G_g' A_g``: one matrix product per group,
    never a per-example gradient. Other layers (convolutions) form each
    row's gradient ``D_i`` in slices and add it into its group's row
    (``index_add_``); :meth:`add` takes those slices when the caller has
    formed them already (``blocks``). Rows without a coefficient get weight 0.
    ``bases`` (``{layer index: (Q_G, Q_A)}``, single-position layers): those
    layers' sums in their Kronecker eigenbasis (the kept ``G`` and ``A``
    rotated once, ``n (out^2 + in^2)`` multiply-adds).
    """

    def __init__(self, matrix, layout, bases=None, rows_cache=None):
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
        self.out = torch.zeros(
            (n_g, layout.n_params), dtype=ref.dtype, device=ref.device
        )
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
            w_cols = out[:, layout.slices[layer["weight"]]]
            if i in self.bases:  # rotated: the input's last entry is not the 1
                blocks = dict(blocks or {})
                blocks[i] = list(_layer_blocks(*_rotated(self.bases, i, g, a)))
            if blocks is not None and i in blocks:
                for s2, D in blocks[i]:
                    D = D * wb[s2, None, None]
                    if layer["bias"] is not None:  # its input row is the 1
                        bias = out[:, layout.slices[layer["bias"]]]
                        bias.index_add_(0, cb[s2], D[:, :, -1])
                        D = D[:, :, :-1]
                    w_cols.index_add_(0, cb[s2], D.reshape(D.shape[0], -1))
                continue
            g = g * wb[:, None, None]
            if layer["bias"] is not None:  # the input's last row is the constant 1
                out[:, layout.slices[layer["bias"]]].index_add_(0, cb, g.sum(2))
                a = a[:, :-1]
            for s2, D in _layer_blocks(g, a):
                w_cols.index_add_(0, cb[s2], D.reshape(D.shape[0], -1))
        for name, G in other.items():
            G = G.reshape(G.shape[0], -1) * wb[:, None]
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
