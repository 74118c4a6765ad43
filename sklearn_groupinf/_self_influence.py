"""Self-influence: the first-order rise of a unit's own loss when it is removed.

For a training example ``i`` with data loss ``l_i`` (the example's loss as the
objective counts it, without its weight; see
:meth:`~sklearn_groupinf.backends.ModelBackend.loss_gradients`) and removal
gradient ``q_i``, removing ``i`` moves the parameters by ``H^{-1} q_i`` to
first order, so its own loss rises by

    sigma_i = grad l_i(theta)' H^{-1} q_i .

For a group ``S`` the rise of the group's summed loss is
``(sum_{i in S} grad l_i)' H^{-1} (sum_{i in S} q_i)``, which includes the
cross terms between members (it is not the sum of the members' ``sigma_i``).
No target set is involved, which is what makes self-influence a label-noise
signal when no clean labels exist.
"""

import numpy as np


def self_influence(state, membership=None, *, batch_size=1024):
    """Self-influence of every training example, or of every group.

    Parameters
    ----------
    state : _FitState
        The fitted :class:`GroupInfluence`'s cache (backend and Hessian solver).
    membership : GroupMembership, default=None
        Groups; ``None`` scores the training examples.
    batch_size : int, default=1024
        Examples per block (per-example scores never hold ``n x P`` values
        unless the shifts ``H^{-1} q_i`` are already cached).

    Returns
    -------
    sigma : ndarray of shape (n_units,)
        First-order rise of each unit's own (summed) loss when it is removed,
        in the units of the estimator's usual metric per example
        (``backend.metric_scale`` times ``l_i``). Per example on a Dask
        backend: a Dask array chunked like ``X``.
    """
    backend = state.backend
    if membership is None and getattr(backend, "distributed", False):
        return backend.self_influences(state.solver)  # Dask, chunked like X
    if membership is None:
        n = backend.n_samples
        out = np.empty(n)
        for i0 in range(0, n, batch_size):
            rows = np.arange(i0, min(n, i0 + batch_size))
            L = backend.loss_gradients(rows)
            out[rows] = np.einsum("ij,ij->i", L, state.row_shifts(rows))
    else:
        L = backend.aggregated_loss_gradients(membership.matrix)
        out = np.einsum("ij,ij->i", L, state.shifts(membership))
    out *= backend.metric_scale
    if not np.all(np.isfinite(out)):
        raise FloatingPointError(
            "Self-influence produced non-finite values; the Hessian is "
            "numerically singular. Increase damping."
        )
    return out
