"""Sums and products of a convolution's per-example gradients without forming them.

A ``Conv2d`` layer's per-example gradient is ``D_i = sum_t g_it a_it'`` over
its positions (patches ``a``, output gradients ``g``). Forming ``D_i`` needs
the patches (``in * kh * kw`` values per position) and a batched product
per row. Two reductions that the streamed passes need do not: a weighted
sum ``sum_i w_i D_i`` is the weight gradient of the convolution for the
output gradients ``w_i g_i`` (one ``conv2d_weight`` call for a batch), and
the products ``<D_i, V>`` with a few directions are the convolution of the
input with ``V`` as filters, times ``g_i`` (one forward convolution for
all directions). Both are torch's own convolution kernels.
"""


def conv_weighted_sum(layer, x, g, w):
    """``sum_i w_i D_i`` ``(out, in[+1])`` of convolution ``layer``.

    ``x`` ``(b, C, H, W)``: the layer's recorded input; ``g``
    ``(b, out, H', W')``: its output gradients; ``w`` ``(b,)``. The bias
    column (when trainable) is ``sum_i w_i sum_t g_it``.
    """
    import torch

    m = layer["module"]
    gw = g * w[:, None, None, None]
    W = torch.nn.grad.conv2d_weight(
        x, m.weight.shape, gw, stride=m.stride, padding=m.padding, dilation=m.dilation
    ).reshape(m.weight.shape[0], -1)
    if layer["bias"] is None:
        return W
    return torch.cat([W, gw.sum((0, 2, 3))[:, None]], 1)


def conv_products(layer, x, g, vblock):
    """``<D_i, V_j>`` ``(b, k)`` for a block ``vblock`` ``(out, in[+1], k)``.

    ``sum_t g_it' V_j a_it`` is ``g_i`` times the convolution of ``x_i``
    with ``V_j`` as filters (its bias column as bias): the ``k`` directions
    are stacked as ``k * out`` filters of one forward convolution.
    """
    import torch

    m = layer["module"]
    o, d, k = vblock.shape
    n_w = d - (layer["bias"] is not None)
    filters = vblock[:, :n_w].permute(2, 0, 1).reshape(k * o, *m.weight.shape[1:])
    bias = None
    if layer["bias"] is not None:
        bias = vblock[:, n_w].T.reshape(k * o)
    z = torch.nn.functional.conv2d(
        x, filters, bias, stride=m.stride, padding=m.padding, dilation=m.dilation
    )
    b = x.shape[0]
    return (z.view(b, k, o, -1) * g.reshape(b, 1, o, -1)).sum((2, 3))
