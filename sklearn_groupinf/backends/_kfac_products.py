"""Per-example gradient reductions from layer inputs and output gradients.

Every function here streams the training rows ``batch_size`` at a time and
never holds the ``n x P`` matrix of per-example gradients (nor ``b x P`` for a
batch): a Kronecker-factored layer's per-example gradient is
``D_i = sum_t g_it a_it'`` (output gradients ``g``, inputs or patches ``a``),
and each reduction contracts it with what it needs, layer by layer, forming
``D`` for at most :data:`MAX_BLOCK_VALUES` values at a time. Parameters
outside such layers use ``torch.func`` per-example gradients of those
parameters only.
"""

import numpy as np

from ._kfac_layers import _acts, _grads, _Layout, _param_columns, _Recorder

#: Largest number of values of per-example layer gradients ``D`` formed at
#: once (16 Mi values, 128 MiB in float64); larger batches are split.
MAX_BLOCK_VALUES = 2**24

#: Largest number of values of single-position layers' inputs and output
#: gradients kept over all rows by group sums (64 Mi values, 256 MiB in
#: float32); a layer beyond it is summed through per-example gradients.
MAX_KEPT_VALUES = 2**26


def _batches_of_layer_gradients(module, loss, X, y, batch_size):
    """Yield ``(slice, layers, other)`` per batch of rows.

    ``layers``: list of ``(layer_index, g (b, out, T), a (b, in[+1], T))``;
    ``other``: ``{name: (b, *shape)}`` per-example loss gradients of the
    trainable parameters outside the Kronecker-factored layers. Gradients
    are of the unweighted loss of each row at its label.
    """
    import torch
    from torch.func import functional_call

    from ..torch._functional import per_example_loss

    layout = _Layout(module)
    p0 = {k: layout.params[k].detach() for k in layout.other}

    def loss_other(p, x, yi):
        z = functional_call(module, p, (x[None],))
        return per_example_loss(loss, z.reshape(1, -1), yi[None])[0]

    training = module.training
    module.eval()
    try:
        with _Recorder(layout) as rec:
            for i0 in range(0, X.shape[0], int(batch_size)):
                sl = slice(i0, i0 + int(batch_size))
                z = rec.forward(module, X[sl])
                lsum = per_example_loss(loss, z, y[sl]).sum()
                idx = [i for i in range(len(layout.layers)) if i in rec.outputs]
                gs = torch.autograd.grad(
                    lsum, [rec.outputs[i] for i in idx], allow_unused=True
                )
                layers = [
                    (
                        i,
                        _grads(layout.layers[i], g.detach()),
                        _acts(layout.layers[i], rec.inputs[i]),
                    )
                    for i, g in zip(idx, gs)
                    if g is not None
                ]
                other = _other_gradients(rec, layout, loss_other, p0, X[sl], y[sl])
                yield sl, layers, other
    finally:
        module.train(training)


def _other_gradients(rec, layout, fn, p0, X, Y):
    """Per-example gradients of ``fn(p, x, y)`` for the parameters outside
    Kronecker-factored layers (``{}`` when there are none), with the layer
    recorder paused so that these extra forward passes are not recorded."""
    from torch.func import grad, vmap

    if not layout.other:
        return {}
    rec.enabled = False
    try:
        out = vmap(grad(fn), in_dims=(None, 0, 0))(p0, X, Y)
    finally:
        rec.enabled = True
    return {k: v.detach() for k, v in out.items()}


def _batches_of_direction_gradients(module, X, U, batch_size):
    """Yield ``(slice, c, layers, other)``: gradients of ``U[:, c]' z`` per batch.

    As :func:`_batches_of_layer_gradients` for the linear functions
    ``u_tc' z_t`` of the raw outputs (``U`` of shape ``(n, C, K)``): one
    forward pass per batch and ``C`` backward passes through it.
    """
    import torch
    from torch.func import functional_call

    layout = _Layout(module)
    p0 = {k: layout.params[k].detach() for k in layout.other}

    def linear_other(p, x, u):
        z = functional_call(module, p, (x[None],))
        return (z.reshape(-1) * u).sum()

    training = module.training
    module.eval()
    try:
        with _Recorder(layout) as rec:
            for i0 in range(0, X.shape[0], int(batch_size)):
                sl = slice(i0, i0 + int(batch_size))
                z = rec.forward(module, X[sl])
                idx = [i for i in range(len(layout.layers)) if i in rec.outputs]
                outs = [rec.outputs[i] for i in idx]
                acts = {i: _acts(layout.layers[i], rec.inputs[i]) for i in idx}
                for c in range(U.shape[1]):
                    gs = torch.autograd.grad(
                        z, outs, U[sl, c], retain_graph=True, allow_unused=True
                    )
                    layers = [
                        (i, _grads(layout.layers[i], g.detach()), acts[i])
                        for i, g in zip(idx, gs)
                        if g is not None
                    ]
                    other = _other_gradients(
                        rec, layout, linear_other, p0, X[sl], U[sl, c]
                    )
                    yield sl, c, layers, other
    finally:
        module.train(training)


def _layer_blocks(g, a):
    """Yield ``(rows, D)``: per-example gradients ``D (b', out, in)`` in slices."""
    import torch

    b, o, _ = g.shape
    step = max(1, MAX_BLOCK_VALUES // max(1, o * a.shape[1]))
    for j0 in range(0, b, step):
        sl = slice(j0, j0 + step)
        yield sl, torch.einsum("bot,bdt->bod", g[sl], a[sl])


def one_per_row_csc(matrix):
    """``(csc, ok)``: ``matrix`` ``(g, n)`` as CSC without duplicate entries,
    and whether each row ``i`` (column of it) has at most one entry."""
    import scipy.sparse as sp

    matrix = sp.csc_matrix(matrix)
    matrix.sum_duplicates()
    return matrix, np.diff(matrix.indptr).max(initial=0) <= 1


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


def _prepare(module, X, y):
    import torch

    layout = _Layout(module)
    ref = next(iter(layout.params.values()))
    X = torch.as_tensor(X, dtype=ref.dtype, device=ref.device)
    y = torch.as_tensor(y, device=ref.device)
    return layout, ref, X, y


def per_example_products(module, loss, X, y, V, *, batch_size=256):
    """``Q V (n, k)``: per-example loss gradients times ``V (P, k)``, without ``n x P``.

    Row ``i`` is ``grad_theta l_i(theta)' V`` (unweighted, the loss of example
    ``i`` at its label). For a Kronecker-factored layer with block ``V_l``
    (``(out, in[+1], k)``, as in :class:`KroneckerCurvature`) it is
    ``sum_t g_it' V_l a_it`` from the layer's inputs ``a_it`` and output
    gradients ``g_it``, computed through whichever is smaller per batch: the
    per-example gradient ``(b, out, in)`` or ``V_l a_it`` ``(b, out, k, T)``.
    Parameters outside such layers use ``torch.func`` per-example gradients of
    those parameters only.

    Parameters
    ----------
    module : torch.nn.Module
    loss : str or callable
        As for :class:`KroneckerCurvature`.
    X, y : torch.Tensor
    V : array-like of shape (P,) or (P, k)
        In the flat order of the trainable parameters.
    batch_size : int, default=256

    Returns
    -------
    ndarray of shape (n, k) (``(n,)`` for ``V`` of shape ``(P,)``)
    """
    import torch

    layout, ref, X, y = _prepare(module, X, y)
    Vt, one = _param_columns(V, layout.n_params, ref)
    k = Vt.shape[1]
    blocks = [layout.block(Vt, layer) for layer in layout.layers]
    V_other = {name: Vt[layout.slices[name]].reshape(-1, k) for name in layout.other}
    out = []
    for _, layers, other in _batches_of_layer_gradients(module, loss, X, y, batch_size):
        res = None
        for i, g, a in layers:
            b, o, T = g.shape
            res = res if res is not None else g.new_zeros(b, k)
            if a.shape[1] <= k * T:
                for sl, D in _layer_blocks(g, a):
                    res[sl] += torch.einsum("bod,odk->bk", D, blocks[i])
            else:
                Va = torch.einsum("odk,bdt->bokt", blocks[i], a)
                res += torch.einsum("bot,bokt->bk", g, Va)
        for name, G in other.items():
            part = G.reshape(G.shape[0], -1) @ V_other[name]
            res = part if res is None else res + part
        out.append(res)
    res = torch.cat(out).to("cpu", torch.float64).numpy()
    return res[:, 0] if one else res


def per_example_sq_norms(module, loss, X, y, *, batch_size=256):
    """``||grad_theta l_i||^2`` ``(n,)`` of every row, without ``n x P``.

    For a layer with one position (``T = 1``) ``||g a'||^2 = ||g||^2 ||a||^2``;
    otherwise ``D_i`` is formed in slices (:data:`MAX_BLOCK_VALUES`).
    """
    import torch

    _, _, X, y = _prepare(module, X, y)
    out = []
    for _, layers, other in _batches_of_layer_gradients(module, loss, X, y, batch_size):
        res = None
        for _, g, a in layers:
            if g.shape[2] == 1:
                part = (g[..., 0] ** 2).sum(1) * (a[..., 0] ** 2).sum(1)
            else:
                part = torch.cat([(D**2).sum((1, 2)) for _, D in _layer_blocks(g, a)])
            res = part if res is None else res + part
        for G in other.values():
            part = (G.reshape(G.shape[0], -1) ** 2).sum(1)
            res = part if res is None else res + part
        out.append(res)
    return torch.cat(out).to("cpu", torch.float64).numpy()


def sq_norms_and_sum(
    module, loss, X, y, s, *, batch_size=256, matrix=None, V=None, bases=None
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
    for the norms, serve the sum, the products and the sketch.
    """
    import torch

    layout, ref, X, y = _prepare(module, X, y)
    s = torch.as_tensor(s, dtype=ref.dtype, device=ref.device)
    sketch = None
    if matrix is not None:
        matrix, one_per_row = one_per_row_csc(matrix)
        if not one_per_row:
            raise ValueError("matrix must have at most one entry per column (row).")
        sketch = _OnePerRowSums(matrix, layout, bases=bases)
    if V is not None:
        Vt = _param_columns(V, layout.n_params, ref)[0]
        k = Vt.shape[1]
        vblocks = [layout.block(Vt, layer) for layer in layout.layers]
        V_other = {n: Vt[layout.slices[n]].reshape(-1, k) for n in layout.other}
        prods = []
    sums = [None] * len(layout.layers)
    other_sum = {}
    out = []
    for sl, layers, other in _batches_of_layer_gradients(
        module, loss, X, y, batch_size
    ):
        res = None
        sb = s[sl]
        formed = {}
        prod = None if V is None else sb.new_zeros(sb.shape[0], k)
        for i, g, a in layers:
            if g.shape[2] == 1:
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
        out.append(res)
        if V is not None:
            prods.append(prod)
    total = torch.zeros((layout.n_params, 1), dtype=ref.dtype, device=ref.device)
    for layer, block in zip(layout.layers, sums):
        if block is not None:
            layout.put(total, block[:, :, None], layer)
    for name, v in other_sum.items():
        total[layout.slices[name], 0] = v
    res = [_finish(torch.cat(out)), _finish(total[:, 0])]
    if V is not None:
        res.append(_finish(torch.cat(prods)))
    if sketch is not None:
        res.append(sketch.result())
    return tuple(res)


def aggregated_gradients(
    module, loss, X, y, matrix, *, batch_size=256, V=None, bases=None
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
    """
    import torch

    layout, ref, X, y = _prepare(module, X, y)
    matrix, one_per_row = one_per_row_csc(matrix)
    n_g = matrix.shape[0]
    Vt = None if V is None else _param_columns(V, layout.n_params, ref)[0]
    if one_per_row:
        out = _aggregated_one_per_row(
            module, loss, X, y, matrix, layout, batch_size, bases
        )
        return _finish(out if Vt is None else out @ Vt)
    if bases:
        raise ValueError("bases need a matrix with at most one entry per row.")
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


def _finish(t):
    import torch

    return t.to("cpu", torch.float64).numpy()


def ggn_products(module, X, U, weights, V, *, batch_size=256, bases=None, numpy=True):
    """``sum_t sum_c w_tc J_t' u_tc u_tc' J_t V`` ``(P, k)`` in one pass over ``X``.

    A Gauss-Newton matrix with output-Hessian factors ``U`` ``(n, C, K)``
    and weights ``weights`` ``(n, C)`` (signed: an indefinite output Hessian
    is allowed) times ``V`` ``(P, k)``. The rows ``g_tc = J_t' u_tc`` are the
    gradients of ``u_tc' z_t``: per batch one forward pass and ``C``
    backward passes give, layer by layer, ``r = G V`` and then ``G' (w r)``
    (per-example layer gradients formed in slices, never ``n x P``).
    With ``bases`` (``{layer index: (Q_G, Q_A)}``, single-position layers)
    ``V`` and the result are in the mixed coordinates of
    :meth:`KroneckerCurvature.eigen_bases`: those layers' inputs and output
    gradients are rotated (``a`` once per batch), never ``V``.
    ``numpy=False``: the ``(P, k)`` tensor in the network's dtype.
    """
    import torch

    layout, ref, X, _ = _prepare(module, X, X[:0])
    U = torch.as_tensor(U, dtype=ref.dtype, device=ref.device)
    w = torch.as_tensor(weights, dtype=ref.dtype, device=ref.device)
    Vt, one = _param_columns(V, layout.n_params, ref)
    k = Vt.shape[1]
    blocks = [layout.block(Vt, layer) for layer in layout.layers]
    V_other = {name: Vt[layout.slices[name]].reshape(-1, k) for name in layout.other}
    acc = {}  # layer -> (out, in[+1], k), or (out * k, in[+1]) for ``flat``
    flat = {}  # single-position layers of the ``V a`` route: V as (in, out * k)
    out = torch.zeros_like(Vt)
    # The C backward passes of a batch share its layer inputs ``a``: ``V a``
    # is formed once per batch and layer, and the output side ``sum_c g_c r_c'``
    # is summed over ``c`` before its one contraction with ``a``. For a layer
    # with one position both are plain matrix products with ``V`` laid out
    # as ``(in, out * k)`` once per call (not permuted again at every batch).
    cache = {"sl": None, "Va": {}, "gr": {}, "D": {}, "a": {}}

    def flush():
        for i, (gr, a) in cache["gr"].items():
            if i in flat:
                acc[i].addmm_(gr.reshape(gr.shape[0], -1).T, a[:, :, 0])
            else:
                acc[i] += torch.einsum("bokt,bdt->odk", gr, a)
        cache["Va"], cache["gr"], cache["D"], cache["a"] = {}, {}, {}, {}

    def rotated(layers):  # mixed coordinates; each batch's ``a`` rotated once
        out = []
        for i, g, a in layers:
            if bases and i in bases:
                if i not in cache["a"]:
                    cache["a"][i] = (a[..., 0] @ bases[i][1])[..., None]
                g, a = (g[..., 0] @ bases[i][0])[..., None], cache["a"][i]
            out.append((i, g, a))
        return out

    def route_d(a, g):  # per-example gradients D rather than V a
        return a.shape[1] <= k * g.shape[2]

    for sl, c, layers, other in _batches_of_direction_gradients(
        module, X, U, batch_size
    ):
        if sl != cache["sl"]:
            flush()
            cache["sl"] = sl
        layers = rotated(layers)
        r = None
        for i, g, a in layers:
            part = g.new_zeros(g.shape[0], k)
            o, d = blocks[i].shape[:2]
            if route_d(a, g):
                Ds = cache["D"][i] = list(_layer_blocks(g, a))
                for s2, D in Ds:
                    part[s2] += torch.einsum("bod,odk->bk", D, blocks[i])
            elif g.shape[2] == 1:
                if i not in flat:
                    flat[i] = blocks[i].permute(1, 0, 2).reshape(d, o * k)
                    acc[i] = g.new_zeros(o * k, d)
                if i not in cache["Va"]:
                    cache["Va"][i] = (a[:, :, 0] @ flat[i]).view(-1, o, k)
                part += torch.einsum("bo,bok->bk", g[:, :, 0], cache["Va"][i])
            else:
                if i not in cache["Va"]:
                    cache["Va"][i] = torch.einsum("odk,bdt->bokt", blocks[i], a)
                part += torch.einsum("bot,bokt->bk", g, cache["Va"][i])
            r = part if r is None else r + part
        for name, G in other.items():
            part = G.reshape(G.shape[0], -1) @ V_other[name]
            r = part if r is None else r + part
        if r is None:
            continue
        r = r * w[sl, c][:, None]
        for i, g, a in layers:
            if i not in acc:
                acc[i] = torch.zeros_like(
                    blocks[i], memory_format=torch.contiguous_format
                )
            if route_d(a, g):
                view = acc[i].view(-1, k)
                for s2, D in cache["D"][i]:
                    view.addmm_(D.reshape(D.shape[0], -1).T, r[s2])
                continue
            if i in flat:
                gr = g[:, :, 0, None] * r[:, None, :]  # (b, out, k)
            else:
                gr = torch.einsum("bot,bk->bokt", g, r)
            if i in cache["gr"]:
                cache["gr"][i][0].add_(gr)
            else:
                cache["gr"][i] = (gr, a)
        for name, G in other.items():
            out[layout.slices[name]] += G.reshape(G.shape[0], -1).T @ r
    flush()
    for i, layer in enumerate(layout.layers):
        if i in flat:
            o, d = blocks[i].shape[:2]
            layout.put(out, acc[i].view(o, k, d).permute(0, 2, 1), layer)
        elif i in acc:
            layout.put(out, acc[i], layer)
    if not numpy:
        return out[:, 0] if one else out
    res = out.to("cpu", torch.float64).numpy()
    return res[:, 0] if one else res


def _aggregated_one_per_row(module, loss, X, y, matrix, layout, batch_size, bases=None):
    """:func:`aggregated_gradients` when each row has at most one coefficient.

    ``matrix`` is CSC ``(g, n)``; returns the ``(g, P)`` result (a tensor),
    accumulated by :class:`_OnePerRowSums`.
    """
    sums = _OnePerRowSums(matrix, layout, bases=bases)
    for sl, layers, other in _batches_of_layer_gradients(
        module, loss, X, y, batch_size
    ):
        sums.add(sl, layers, other)
    return sums.result()


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

    def __init__(self, matrix, layout, bases=None):
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
        self.budget = MAX_KEPT_VALUES
        self.bases = bases or {}

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
        for i, g, a in layers:
            layer = layout.layers[i]
            if self.keeps(i, g, a):
                self.kept[i][0].append(g[..., 0] * wb[:, None])
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

    def result(self):
        """The ``(g, P)`` sums (a tensor)."""
        import torch

        layout, out, col, n_g = self.layout, self.out, self.col, self.n_g
        if self.kept:
            ref = next(iter(layout.params.values()))
            order = np.argsort(col, kind="stable")
            bounds = np.searchsorted(col[order], np.arange(n_g + 1))
            order_t = torch.as_tensor(order, device=ref.device)
            for i, (gs, as_) in self.kept.items():
                layer = layout.layers[i]
                G, A = torch.cat(gs)[order_t], torch.cat(as_)[order_t]
                n_w = A.shape[1] - (layer["bias"] is not None)
                w_sl = layout.slices[layer["weight"]]
                rotated = i in self.bases
                if rotated:  # (Q_G' g)(Q_A' a)': the whole block, bias included
                    qg, qa = self.bases[i]
                    G, A = G @ qg, A @ qa
                for k in range(n_g):
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
            self.kept = {}
        return out
