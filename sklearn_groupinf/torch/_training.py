"""The training loops of ``TorchModel``: full-batch L-BFGS and minibatch Adam.

Each function takes the ``TorchModel`` being fitted (its ``module_``, decay
mask, loss and options) and tensors ``X``, ``y``, ``s`` on its device. The
objective is the sum form ``J = sum_i s_i l_i + weight_decay/2 ||theta_D||^2``;
the optimisers see ``J / sum_i s_i`` so that ``tol`` does not depend on ``n``.
"""

import numpy as np
import torch

from ._functional import per_example_loss, raw_output


def seed_of(random_state):
    """A torch seed drawn from ``random_state`` (``None``: no seeding)."""
    if random_state is None:
        return None
    if not isinstance(random_state, np.random.RandomState):
        random_state = np.random.RandomState(random_state)
    return int(random_state.randint(2**31 - 1))


def trainable(model):
    """The trainable parameters of ``model.module_`` (a list)."""
    return [p for p in model.module_.parameters() if p.requires_grad]


def objective_and_grad(model, X, y, s, backward=True):
    """``J`` summed over chunks of ``batch_size`` rows; gradients into ``.grad``.

    The penalty joins the first chunk's graph (one backward pass fewer).
    """
    params = trainable(model)
    if backward:
        for p in params:
            p.grad = None
    total = 0.0
    for i0 in range(0, X.shape[0], model.batch_size):
        sl = slice(i0, i0 + model.batch_size)
        with torch.set_grad_enabled(backward):
            z = raw_output(model.module_, X[sl])
            part = (s[sl] * per_example_loss(model.loss, z, y[sl])).sum()
            if i0 == 0 and model.weight_decay > 0:
                terms = [(m * p * p).sum() for m, p in zip(model._mask, params)]
                part = part + 0.5 * model.weight_decay * torch.stack(terms).sum()
            if backward:
                part.backward()
        total += float(part.detach())
    return total


def max_grad(model, X, y, s, s_sum):
    """Largest entry of ``grad J / sum_i s_i`` (leaves the gradients in ``.grad``)."""
    objective_and_grad(model, X, y, s)
    g = [p.grad.abs().max() for p in trainable(model) if p.grad is not None]
    return float(torch.stack(g).max()) / s_sum if g else 0.0


def fit_lbfgs(model, X, y, s, s_sum):
    """Full-batch L-BFGS (strong Wolfe) until ``tol``; returns the iterations run.

    A stall (the line search cannot decrease ``J`` any more) restarts with a
    fresh history, at most three times, within ``max_iter`` iterations in all.
    """
    params = trainable(model)
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=model.max_iter,
        max_eval=int(model.max_iter * 1.25) + 1,
        tolerance_grad=model.tol,
        tolerance_change=0.0,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        val = objective_and_grad(model, X, y, s) / s_sum
        for p in params:
            if p.grad is not None:
                p.grad /= s_sum
        return torch.tensor(val, dtype=model.dtype_, device=model.device_)

    n_iter = 0
    for _ in range(4):  # restarts with a fresh history after a stall
        left = model.max_iter - n_iter
        opt.param_groups[0].update(max_iter=left, max_eval=int(left * 1.25) + 1)
        opt.step(closure)
        state = opt.state[opt._params[0]]
        n_iter += int(state.get("n_iter", 0))
        if max_grad(model, X, y, s, s_sum) <= model.tol or n_iter >= model.max_iter:
            break
        opt.state.clear()
    return n_iter


def fit_adam(model, X, y, s, s_sum):
    """Minibatch Adam for ``max_epochs`` epochs; returns the epochs run."""
    params = trainable(model)
    opt = torch.optim.Adam(params, lr=model.lr)
    n = X.shape[0]
    for _ in range(model.max_epochs):
        perm = torch.randperm(n, device=model.device_)
        for i0 in range(0, n, model.batch_size):
            idx = perm[i0 : i0 + model.batch_size]
            opt.zero_grad()
            z = raw_output(model.module_, X[idx])
            frac = len(idx) / n
            loss = (s[idx] * per_example_loss(model.loss, z, y[idx])).sum()
            if model.weight_decay > 0:
                loss = loss + frac * 0.5 * model.weight_decay * sum(
                    (m * p * p).sum() for m, p in zip(model._mask, params)
                )
            (loss / (frac * s_sum)).backward()
            opt.step()
    return model.max_epochs
