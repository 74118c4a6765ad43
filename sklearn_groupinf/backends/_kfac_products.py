"""Per-example gradient products ``Q V`` from layer inputs and output gradients."""

from ._kfac_layers import _acts, _grads, _Layout, _param_columns, _Recorder


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
    from torch.func import functional_call, grad, vmap

    from ..torch._functional import per_example_loss

    layout = _Layout(module)
    ref = next(iter(layout.params.values()))
    X = torch.as_tensor(X, dtype=ref.dtype, device=ref.device)
    y = torch.as_tensor(y, device=ref.device)
    Vt, one = _param_columns(V, layout.n_params, ref)
    blocks = [layout.block(Vt, layer) for layer in layout.layers]
    V_other = {
        k: Vt[layout.slices[k]].reshape(*layout.params[k].shape, -1)
        for k in layout.other
    }
    p0 = {k: layout.params[k].detach() for k in layout.other}

    def loss_other(p, x, yi):
        z = functional_call(module, p, (x[None],))
        return per_example_loss(loss, z.reshape(1, -1), yi[None])[0]

    out = []
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
                res = z.new_zeros(z.shape[0], Vt.shape[1])
                for i, g in zip(idx, gs):
                    if g is None:
                        continue
                    layer = layout.layers[i]
                    a = _acts(layer, rec.inputs[i])
                    g = _grads(layer, g)
                    b, o, T = g.shape
                    d, k = a.shape[1], Vt.shape[1]
                    if o * d <= o * k * T:
                        D = torch.einsum("bot,bdt->bod", g, a)
                        res += torch.einsum("bod,odk->bk", D, blocks[i])
                    else:
                        Va = torch.einsum("odk,bdt->bokt", blocks[i], a)
                        res += torch.einsum("bot,bokt->bk", g, Va)
                if layout.other:
                    rec.enabled = False
                    try:
                        pg = vmap(grad(loss_other), in_dims=(None, 0, 0))(
                            p0, X[sl], y[sl]
                        )
                    finally:
                        rec.enabled = True
                    for k in layout.other:
                        res += pg[k].reshape(pg[k].shape[0], -1) @ V_other[k].reshape(
                            -1, Vt.shape[1]
                        )
                out.append(res.detach())
    finally:
        module.train(training)
    res = torch.cat(out).to("cpu", torch.float64).numpy()
    return res[:, 0] if one else res
