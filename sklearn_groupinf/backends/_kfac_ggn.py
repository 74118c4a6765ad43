"""Target Gauss-Newton products ``H_f V`` from layer inputs and output gradients.

``H_f = sum_t sum_c w_tc J_t' u_tc u_tc' J_t``: per batch of target rows
one forward pass and one backward pass per output-Hessian factor ``c``
give each layer's inputs and output gradients, which are contracted with
``V`` layer by layer (per-example layer gradients formed in slices, never
``n x P``), as in :mod:`~sklearn_groupinf.backends._kfac_products`.
"""

from ._kfac_layers import _acts, _grads, _Layout, _param_columns
from ._kfac_products import _layer_blocks, _other_gradients, _prepare, _recording


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

    with _recording(module, layout) as rec:
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
                other = _other_gradients(rec, layout, linear_other, p0, X[sl], U[sl, c])
                yield sl, c, layers, other


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
