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

from contextlib import contextmanager

import numpy as np

from ._kfac_layers import _acts, _grads, _Layout, _param_columns, _Recorder

#: Largest number of values of per-example layer gradients ``D`` formed at
#: once (16 Mi values, 128 MiB in float64); larger batches are split.
MAX_BLOCK_VALUES = 2**24


def _batches_of_layer_gradients(module, loss, X, y, batch_size, rows=None, raw=()):
    """Yield ``(slice, layers, other)`` per batch of rows.

    ``layers``: list of ``(layer_index, g (b, out, T), a (b, in[+1], T))``;
    ``other``: ``{name: (b, *shape)}`` per-example loss gradients of the
    trainable parameters outside the Kronecker-factored layers. Gradients
    are of the unweighted loss of each row at its label.

    ``rows`` (an index array): the batches are ``X[rows]`` in that order,
    and each yields its rows (an array) instead of a slice. The layers in
    ``raw`` are yielded as they were recorded, ``(i, output gradient, input)``
    (for a convolution ``(b, out, H', W')`` and ``(b, C, H, W)``: no patches).
    """
    import torch
    from torch.func import functional_call

    from ..torch._functional import per_example_loss

    layout = _Layout(module)
    p0 = {k: layout.params[k].detach() for k in layout.other}

    def loss_other(p, x, yi):
        z = functional_call(module, p, (x[None],))
        return per_example_loss(loss, z.reshape(1, -1), yi[None])[0]

    with _recording(module, layout) as rec:
        n = X.shape[0] if rows is None else len(rows)
        for i0 in range(0, n, int(batch_size)):
            sl = slice(i0, i0 + int(batch_size))
            if rows is not None:
                sl = rows[sl]
            z = rec.forward(module, X[sl])
            lsum = per_example_loss(loss, z, y[sl]).sum()
            idx = [i for i in range(len(layout.layers)) if i in rec.outputs]
            gs = torch.autograd.grad(
                lsum, [rec.outputs[i] for i in idx], allow_unused=True
            )
            layers = [
                (i, g.detach(), rec.inputs[i])
                if i in raw
                else (
                    i,
                    _grads(layout.layers[i], g.detach()),
                    _acts(layout.layers[i], rec.inputs[i]),
                )
                for i, g in zip(idx, gs)
                if g is not None
            ]
            other = _other_gradients(rec, layout, loss_other, p0, X[sl], y[sl])
            yield sl, layers, other


@contextmanager
def _recording(module, layout):
    """``module`` in eval mode with its Kronecker-factored layers recorded
    (:class:`_Recorder`); its training mode is restored on exit."""
    training = module.training
    module.eval()
    try:
        with _Recorder(layout) as rec:
            yield rec
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


def _finish(t):
    import torch

    return t.to("cpu", torch.float64).numpy()
