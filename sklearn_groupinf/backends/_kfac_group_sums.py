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
from ._kfac_one_per_row import _convolutions, _OnePerRowSums
from ._kfac_products import (
    _batches_of_layer_gradients,
    _finish,
    _layer_blocks,
    _prepare,
    one_per_row_csc,
)


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
    device before anything is copied out; for a matrix with at most one
    entry per row the sums are contracted with ``V`` as they are formed and
    the ``(g, P)`` sums are never held (memory ``g k``, not ``g P``).

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
            module, loss, X, y, matrix, layout, batch_size, bases, rows_cache, Vt
        )
        return _finish(out)
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
    module, loss, X, y, matrix, layout, batch_size, bases=None, rows_cache=None, V=None
):
    """:func:`aggregated_gradients` when each row has at most one coefficient.

    ``matrix`` is CSC ``(g, n)``; returns the ``(g, P)`` result, or
    ``(g, k)`` contracted with ``V`` (a tensor), accumulated by
    :class:`_OnePerRowSums`.
    """
    sums = _OnePerRowSums(matrix, layout, bases=bases, rows_cache=rows_cache, V=V)
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
