"""Target Gauss-Newton products ``H_f V`` from layer inputs and output gradients.

``H_f = sum_t sum_c w_tc J_t' u_tc u_tc' J_t``: per batch of target rows
one forward pass and one backward pass per output-Hessian factor ``c``
give each layer's inputs and output gradients, which are contracted with
``V`` layer by layer (per-example layer gradients formed in slices, never
``n x P``), as in :mod:`~sklearn_groupinf.backends._kfac_products`. The
factors ``c`` of a batch are stacked and contracted together (one matrix
product per layer for all of them instead of one per factor).
"""

from ._kfac_layers import _acts, _grads, _Layout, _param_columns
from ._kfac_products import _other_gradients, _prepare, _recording

#: Largest number of values of the stacked output gradients and per-example
#: layer gradients of one batch's output-Hessian factors (32 Mi values,
#: 128 MiB in float32); more factors are contracted in several chunks.
MAX_STACK_VALUES = 2**25


def _route_d(a_shape, T, k):
    """Whether a layer's products go through per-example gradients ``D``
    (``in <= k T``) rather than ``V a``."""
    return a_shape[1] <= k * T


def _batches_of_direction_gradients(module, X, U, batch_size, k):
    """Yield ``(slice, cols, acts, grads, others)`` per batch and chunk of factors.

    The gradients of ``u_tc' z_t`` for the linear functions of the raw
    outputs (``U`` of shape ``(n, C, K)``): one forward pass per batch and
    ``C`` backward passes through it, yielded in chunks of factors ``cols``
    (a slice of ``range(C)``) small enough for :data:`MAX_STACK_VALUES`.
    ``acts``: ``{layer index: a (b, in[+1], T)}``; ``grads``: ``{layer
    index: g (c, b, out, T)}`` (the chunk's factors stacked); ``others``:
    ``{name: (c, b, *shape)}`` gradients of the parameters outside the
    Kronecker-factored layers.
    """
    import torch
    from torch.func import functional_call

    layout = _Layout(module)
    p0 = {name: layout.params[name].detach() for name in layout.other}

    def linear_other(p, x, u):
        z = functional_call(module, p, (x[None],))
        return (z.reshape(-1) * u).sum()

    n_c = U.shape[1]
    with _recording(module, layout) as rec:
        for i0 in range(0, X.shape[0], int(batch_size)):
            sl = slice(i0, i0 + int(batch_size))
            z = rec.forward(module, X[sl])
            idx = [i for i in range(len(layout.layers)) if i in rec.outputs]
            outs = [rec.outputs[i] for i in idx]
            acts = {i: _acts(layout.layers[i], rec.inputs[i]) for i in idx}
            per_c = 0
            for i, o in zip(idx, outs):
                b, n_out, T = _grads(layout.layers[i], o.detach()).shape
                per_c += b * n_out * T
                if T > 1 and _route_d(acts[i].shape, T, k):
                    per_c += b * n_out * acts[i].shape[1]
            step = max(1, MAX_STACK_VALUES // max(1, per_c))
            for c0 in range(0, n_c, step):
                cols = range(c0, min(n_c, c0 + step))
                grads, others = {}, []
                for c in cols:
                    gs = torch.autograd.grad(
                        z, outs, U[sl, c], retain_graph=True, allow_unused=True
                    )
                    for i, g in zip(idx, gs):
                        if g is not None:
                            grads.setdefault(i, []).append(
                                _grads(layout.layers[i], g.detach())
                            )
                    others.append(
                        _other_gradients(rec, layout, linear_other, p0, X[sl], U[sl, c])
                    )
                grads = {i: torch.stack(gl) for i, gl in grads.items()}
                others = {
                    name: torch.stack([o[name] for o in others]) for name in others[0]
                }
                yield sl, slice(cols.start, cols.stop), acts, grads, others


def _single_position_block(Vt, layout, layer, k):
    """A single-position layer's rows of ``V``: ``(V_w (out, in, k), v_b (out, k)
    or None)``, views of ``Vt`` (no copy)."""
    o, d = layer["n_out"], layer["n_in"]
    n_w = d - (layer["bias"] is not None)
    Vw = Vt[layout.slices[layer["weight"]]].view(o, n_w, k)
    Vb = None if layer["bias"] is None else Vt[layout.slices[layer["bias"]]]
    return Vw, Vb


def ggn_products(module, X, U, weights, V, *, batch_size=256, bases=None, numpy=True):
    """``sum_t sum_c w_tc J_t' u_tc u_tc' J_t V`` ``(P, k)`` in one pass over ``X``.

    A Gauss-Newton matrix with output-Hessian factors ``U`` ``(n, C, K)``
    and weights ``weights`` ``(n, C)`` (signed: an indefinite output Hessian
    is allowed) times ``V`` ``(P, k)``. The rows ``g_tc = J_t' u_tc`` are the
    gradients of ``u_tc' z_t``: per batch one forward pass and ``C``
    backward passes give, layer by layer, ``r = G V`` and then ``G' (w r)``
    (per-example layer gradients formed for a chunk of factors at a time,
    never ``n x P``). A layer with one position contracts ``V a`` (formed
    once per batch from ``V``'s rows as they lie, no transposed copy) with
    the stacked output gradients of all factors in one batched product, and
    adds the transposed product ``sum_c g_c r_c'`` times ``a`` into the
    result once per batch.
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
    bases = bases or {}
    blocks, acc = {}, {}  # acc: (out, in[+1], k) of layers with several positions
    V_other = {name: Vt[layout.slices[name]].reshape(-1, k) for name in layout.other}
    out = torch.zeros_like(Vt)
    # what is formed once per batch: rotated inputs a, V a, and for a layer
    # with one position sum_c g_c r_c' over the chunks of factors (contracted
    # with a once per batch)
    batch = {"sl": None, "gr": {}}

    def flush():  # out_l += sum_rows (sum_c g_c r_c') a' for one-position layers
        for i, gr in batch["gr"].items():
            Ow, Ob = _single_position_block(out, layout, layout.layers[i], k)
            a = batch["a"][i][:, :, 0]
            n_w = Ow.shape[1]
            Ow.baddbmm_(a[:, :n_w].T.expand(Ow.shape[0], -1, -1), gr.transpose(0, 1))
            if Ob is not None:  # the bias's input (last entry of a)
                Ob += torch.einsum("b,bok->ok", a[:, n_w], gr)

    for sl, cols, acts, grads, others in _batches_of_direction_gradients(
        module, X, U, batch_size, k
    ):
        if sl != batch["sl"]:
            flush()
            batch = {"sl": sl, "a": {}, "Va": {}, "gr": {}}
        n_c = cols.stop - cols.start
        r = None
        prepared = []
        for i, G in grads.items():
            layer = layout.layers[i]
            if i not in batch["a"]:
                a = acts[i]
                if i in bases:
                    a = (a[..., 0] @ bases[i][1])[..., None]
                batch["a"][i] = a
            a = batch["a"][i]
            if i in bases:
                G = (G[..., 0] @ bases[i][0])[..., None]
            _, b, o, T = G.shape
            d = a.shape[1]
            if T > 1 and _route_d(a.shape, T, k):
                if i not in blocks:
                    blocks[i] = layout.block(Vt, layer).reshape(o * d, k)
                D = torch.einsum("cbot,bdt->cbod", G, a).reshape(n_c * b, o * d)
                part = (D @ blocks[i]).view(n_c, b, k)
                prepared.append((i, "d", G, D))
            elif T == 1:
                if i not in batch["Va"]:  # V_l a per row: (b, out, k)
                    Vw, Vb = _single_position_block(Vt, layout, layer, k)
                    n_w = Vw.shape[1]
                    Va = torch.bmm(a[:, :n_w, 0].expand(o, -1, -1), Vw)
                    if Vb is not None:
                        Va += Vb[:, None, :] * a[None, :, n_w, 0, None]
                    batch["Va"][i] = Va.transpose(0, 1).contiguous()
                g = G[..., 0].permute(1, 0, 2)  # (b, c, out)
                part = torch.bmm(g, batch["Va"][i]).permute(1, 0, 2)
                prepared.append((i, "flat", G, None))
            else:
                if i not in blocks:
                    blocks[i] = layout.block(Vt, layer)
                if i not in batch["Va"]:
                    batch["Va"][i] = torch.einsum("odk,bdt->bokt", blocks[i], a)
                part = torch.einsum("cbot,bokt->cbk", G, batch["Va"][i])
                prepared.append((i, "va", G, None))
            r = part if r is None else r + part
        for name, G in others.items():
            part = (G.reshape(n_c * G.shape[1], -1) @ V_other[name]).view(n_c, -1, k)
            r = part if r is None else r + part
        if r is None:
            continue
        r = r * w[sl, cols].T[:, :, None]  # (c, b, k)
        rf = r.reshape(-1, k)
        for i, route, G, D in prepared:
            a = batch["a"][i]
            if route == "d":
                if i not in acc:
                    acc[i] = torch.zeros_like(blocks[i])  # (out * in, k)
                acc[i].addmm_(D.T, rf)
            elif route == "flat":
                # sum_c g_c r_c' per row: (b, out, c) @ (b, c, k)
                gr = torch.bmm(G[..., 0].permute(1, 2, 0), r.permute(1, 0, 2))
                if i in batch["gr"]:
                    batch["gr"][i] += gr
                else:
                    batch["gr"][i] = gr
            else:
                if i not in acc:
                    acc[i] = torch.zeros_like(
                        blocks[i], memory_format=torch.contiguous_format
                    )
                gr = torch.einsum("cbot,cbk->bokt", G, r)
                acc[i] += torch.einsum("bokt,bdt->odk", gr, a)
        for name, G in others.items():
            out[layout.slices[name]] += G.reshape(rf.shape[0], -1).T @ rf
    flush()
    for i, M in acc.items():
        layer = layout.layers[i]
        layout.put(out, M.view(layer["n_out"], layer["n_in"], k), layer)
    if not numpy:
        return out[:, 0] if one else out
    res = out.to("cpu", torch.float64).numpy()
    return res[:, 0] if one else res
