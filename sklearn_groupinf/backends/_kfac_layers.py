"""Layer bookkeeping of the Kronecker-factored curvature (torch imported lazily).

Which layers are Kronecker-factored (``torch.nn.Linear``; ``torch.nn.Conv2d``
with ``groups=1`` and numeric zero padding), where their ``[weight | bias]``
blocks sit in the flat parameter vector, forward hooks recording each layer's
input and output, layer inputs as patches ``(b, in[+1], T)`` and output
gradients as ``(b, out, T)``, and the output-Hessian factors ``U_i`` of the
loss (exact, or from labels drawn from the model's predictive distribution).
"""

import numpy as np


def _layer_kind(m):
    import torch

    if isinstance(m, torch.nn.Linear):
        return "linear"
    if (
        isinstance(m, torch.nn.Conv2d)
        and m.groups == 1
        and m.padding_mode == "zeros"
        and not isinstance(m.padding, str)
    ):
        return "conv"
    return None


class _Layout:
    """Trainable parameters, their offsets, and the Kronecker-factored layers."""

    def __init__(self, module):
        named = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("module has no trainable parameters (requires_grad).")
        self.names = [k for k, _ in named]
        self.params = dict(named)
        self.slices, start = {}, 0
        for k, p in named:
            self.slices[k] = slice(start, start + p.numel())
            start += p.numel()
        self.n_params = start
        ids = {id(p): k for k, p in named}
        self.layers, covered = [], set()
        for name, m in module.named_modules():
            kind = _layer_kind(m)
            w = getattr(m, "weight", None)
            if kind is None or w is None or id(w) not in ids or ids[id(w)] in covered:
                continue
            b = m.bias if m.bias is not None and id(m.bias) in ids else None
            wname = ids[id(w)]
            bname = ids[id(b)] if b is not None else None
            covered.update([wname] if bname is None else [wname, bname])
            self.layers.append(
                {
                    "name": name,
                    "module": m,
                    "kind": kind,
                    "weight": wname,
                    "bias": bname,
                    "n_out": w.shape[0],
                    "n_in": w[0].numel() + (bname is not None),
                }
            )
        self.other = [k for k in self.names if k not in covered]

    def block(self, V, layer):
        """``(out, in[+1], k)`` view of the rows of ``V (P, k)`` of one layer."""
        Vw = V[self.slices[layer["weight"]]].reshape(layer["n_out"], -1, V.shape[1])
        if layer["bias"] is None:
            return Vw
        import torch

        return torch.cat([Vw, V[self.slices[layer["bias"]]][:, None, :]], 1)

    def put(self, out, M, layer):
        """Write a block ``(out, in[+1], k)`` back into the rows of ``out``."""
        k = out.shape[1]
        n_w = M.shape[1] - (layer["bias"] is not None)
        out[self.slices[layer["weight"]]] = M[:, :n_w].reshape(-1, k)
        if layer["bias"] is not None:
            out[self.slices[layer["bias"]]] = M[:, n_w]


class _Recorder:
    """Forward hooks storing each layer's input and output for one forward pass."""

    def __init__(self, layout):
        self.layout, self.enabled, self.inputs, self.outputs = layout, True, {}, {}
        self.handles = []

    def __enter__(self):
        for i, layer in enumerate(self.layout.layers):
            self.handles.append(
                layer["module"].register_forward_hook(self._hook(i, layer["name"]))
            )
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []

    def _hook(self, i, name):
        def hook(mod, inp, out):
            if not self.enabled:
                return
            if i in self.inputs:
                raise ValueError(
                    f"Layer {name!r} ran more than once in one forward pass (weight "
                    "sharing or recurrence), which the Kronecker factorisation does "
                    "not support. Use the exact curvature for this model."
                )
            self.inputs[i], self.outputs[i] = inp[0].detach(), out

        return hook

    def forward(self, module, X):
        self.inputs, self.outputs = {}, {}
        z = module(X)
        return z.reshape(z.shape[0], -1)


def _acts(layer, x):
    """Layer inputs as ``(b, in[+1], T)`` (patches for a convolution)."""
    import torch

    m, b = layer["module"], x.shape[0]
    if layer["kind"] == "conv":
        a = _patches(x, m)
    else:
        a = x.reshape(b, -1, x.shape[-1]).transpose(1, 2)
    if layer["bias"] is not None:
        a = torch.cat([a, a.new_ones(b, 1, a.shape[2])], 1)
    return a


def _patches(x, m):
    """``torch.nn.functional.unfold(x)`` ``(b, C kh kw, T)`` for the zero-padded
    convolution ``m``, as one copy of a strided view of the padded input
    (torch's CPU ``im2col`` took 2 to 3 times as long on the convolutions of
    ``benchmarks/cnn_groups.py``); the same values in the same order."""
    import torch

    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = (
        m.kernel_size,
        m.dilation,
        m.padding,
        m.stride,
    )
    if ph or pw:
        x = torch.nn.functional.pad(x, (pw, pw, ph, ph))
    b, c, h, w = x.shape
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    s0, s1, s2, s3 = x.stride()
    view = x.as_strided(
        (b, c, kh, kw, ho, wo),
        (s0, s1, dh * s2, dw * s3, sh * s2, sw * s3),
        x.storage_offset(),
    )
    return view.reshape(b, c * kh * kw, ho * wo)


def _grads(layer, g):
    """Output gradients as ``(b, out, T)``."""
    if layer["kind"] == "conv":
        return g.reshape(g.shape[0], g.shape[1], -1)
    return g.reshape(g.shape[0], -1, g.shape[-1]).transpose(1, 2)


def _param_columns(V, n_params, ref):
    """``V`` (array or tensor) of shape ``(P,)`` or ``(P, k)`` as a ``(P, k)``
    tensor like ``ref``.

    Returns ``(Vt, one)``; ``one`` says ``V`` was a vector (callers return
    ``res[:, 0]`` then).
    """
    import torch

    if isinstance(V, torch.Tensor):  # kept in the network's dtype, no float64 copy
        if V.ndim not in (1, 2) or V.shape[0] != n_params:
            raise ValueError(
                f"V must have shape (P,) or (P, k) with P={n_params} (the "
                f"trainable parameters), got {tuple(V.shape)}."
            )
        Vt = V.detach().to(device=ref.device, dtype=ref.dtype)
        return Vt.reshape(n_params, -1).contiguous(), V.ndim == 1
    Vn = np.asarray(V, dtype=np.float64)
    if Vn.ndim not in (1, 2) or Vn.shape[0] != n_params:
        raise ValueError(
            f"V must have shape (P,) or (P, k) with P={n_params} (the trainable "
            f"parameters), got {Vn.shape}."
        )
    Vt = torch.as_tensor(Vn.reshape(n_params, -1), dtype=ref.dtype, device=ref.device)
    return Vt, Vn.ndim == 1


def _loss_name(loss):
    name = getattr(loss, "loss", loss)  # ExampleLoss of the torch backend
    return name if isinstance(name, str) else None


def output_factors(loss, z, y, draws=None):
    """``U (b, C, K)`` with ``sum_c U[i, c] U[i, c]' = Lambda_i`` (exactly or in mean).

    ``draws`` (``None``: exact factors) are uniform ``(b, m)`` numbers for the
    classification losses and standard normal ``(b, m, K)`` for squared error;
    each gives a label drawn from the model's predictive distribution.
    """
    import torch

    z = z.detach()
    b, K = z.shape
    name = _loss_name(loss)
    if draws is None:
        if name == "cross_entropy":
            p = torch.softmax(z, 1)
            sp = p.sqrt()
            return (torch.diag_embed(sp) - p[:, :, None] * sp[:, None, :]).transpose(
                1, 2
            )
        if name == "binary_cross_entropy":
            p = torch.sigmoid(z[:, 0])
            return (p * (1 - p)).sqrt()[:, None, None]
        if name == "squared_error":
            return torch.eye(K, dtype=z.dtype, device=z.device).expand(b, K, K)
        from ..torch._functional import per_example_loss

        def single(zi, yi):
            return per_example_loss(loss, zi[None], yi[None])[0]

        Lam = torch.vmap(torch.func.hessian(single))(z, y)
        w, Q = torch.linalg.eigh(0.5 * (Lam + Lam.transpose(1, 2)))
        if bool((w < -1e-8 * w.abs().amax(1, keepdim=True).clamp_min(1e-300)).any()):
            raise ValueError(
                "The loss's Hessian in the model output is not positive "
                "semi-definite at some examples, so the Gauss-Newton curvature is "
                "undefined. Use a loss that is convex in the output."
            )
        return (Q * w.clamp_min(0).sqrt()[:, None, :]).transpose(1, 2)
    m = draws.shape[1]
    if name == "cross_entropy":
        p = torch.softmax(z, 1)
        cdf = p.cumsum(1)
        yhat = (cdf[:, None, :] < draws[:, :, None]).sum(-1).clamp(max=K - 1)
        onehot = torch.nn.functional.one_hot(yhat, K).to(z.dtype)
        return (p[:, None, :] - onehot) / m**0.5
    if name == "binary_cross_entropy":
        p = torch.sigmoid(z[:, 0])
        yhat = (draws < p[:, None]).to(z.dtype)
        return ((p[:, None] - yhat) / m**0.5)[:, :, None]
    if name == "squared_error":
        return draws / m**0.5
    raise ValueError(
        f"fisher='sampled' needs a named loss (cross_entropy, binary_cross_entropy, "
        f"squared_error), got the callable {loss!r}. Use fisher='exact'."
    )


def _other_vjps(module, layout, X, U):
    """``{name: (b, C, *shape)}``: ``J_i' u`` for the parameters outside the layers."""
    from torch.func import functional_call, vjp, vmap

    p0 = {k: layout.params[k].detach() for k in layout.other}

    def one(x, Ui):
        _, fn = vjp(lambda p: functional_call(module, p, (x[None],)).reshape(-1), p0)
        return vmap(fn)(Ui)[0]

    return vmap(one)(X, U)
