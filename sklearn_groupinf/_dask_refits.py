"""Leave-group-out refits on Dask data: Newton steps over the chunks.

:func:`~sklearn_groupinf.evaluation.leave_group_out` with Dask training data
and a scikit-learn linear model lands here. The data are never gathered:
the reference model is fitted as :class:`GroupInfluence` fits it on Dask
data (scikit-learn on the first rows, then Newton steps over the chunks to
the optimum of the full objective), and each group's refit starts from the
reference parameters and takes Newton steps (gradient and ``P x P`` Hessian
as tree reductions over the chunks, a backtracking line search on the
objective) on the objective with the group's weights set to zero --
scikit-learn's own removal contract -- until its relative gradient norm is
below ``stationarity_tol``. Group labels given as a Dask array stay on the
workers: they are coded there (:class:`~._dask_groups.DaskGroupMembership`),
and the labels, sizes and classes of the groups are reductions.

Each refit costs a few passes over the data (one per Newton step and one
per line-search trial); it is meant for checking a sample of groups.
"""

import time
import warnings

import numpy as np
from sklearn.base import is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator

from ._dask_backend import DaskLinearBackend
from ._dask_groups import DaskGroupMembership
from ._progress import log


class _Scale:
    """The stationarity scale (median row norm of the reference fit), fixed."""

    ndim = 1

    def __init__(self, value):
        self.value = float(value)

    def median(self):
        return self.value


def supported(estimator):
    """Whether Dask refits handle ``estimator`` (a plain supported linear model)."""
    from .backends._linear_specs import SUPPORTED_CLASSES

    final = estimator.estimator if isinstance(estimator, FrozenEstimator) else estimator
    return isinstance(final, SUPPORTED_CLASSES)


def _pairs(gb, yb, _offset):
    return set(zip(np.asarray(gb).tolist(), np.asarray(yb).ravel().tolist()))


def _union(parts):
    out = set()
    for p in parts:
        out |= p
    return out


def dask_leave_group_out(
    estimator,
    X,
    y,
    groups,
    *,
    X_target,
    y_target,
    target_weight=None,
    sample_weight=None,
    target="default",
    stationarity_tol=1e-10,
    max_steps=25,
    verbose=0,
):
    """Leave-group-out refits of a linear model on Dask data (see the module).

    Parameters as :func:`~sklearn_groupinf.evaluation.leave_group_out`
    (``X``, ``y``, ``groups``, ``sample_weight`` Dask arrays or Dask
    DataFrame columns; the target set in memory or Dask arrays).
    ``stationarity_tol`` is the relative gradient norm at which a refit
    stops, ``max_steps`` the Newton steps allowed per refit.

    Returns
    -------
    refits : GroupRefits
        As :func:`~sklearn_groupinf.evaluation.leave_group_out`; ``n_iter``
        holds the passes over the data of each refit, ``stationarity`` is
        measured with the median row norm of the reference fit.
    """
    import dask.array as da

    from ._dask_fit import _to_dask_array, any_dask
    from ._group_influence import GroupInfluence
    from ._hessian import polish_parameters, stationarity
    from .evaluation import _refits_result

    start = time.perf_counter()
    if X_target is None or y_target is None:
        raise ValueError(
            "With Dask training data, leave_group_out needs X_target and "
            "y_target (in memory or as Dask arrays); got None."
        )
    gi = GroupInfluence(estimator, stationarity_tol=stationarity_tol, polish=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # sample fit; polished
        gi.fit(
            X,
            y,
            sample_weight,
            X_target=X_target,
            y_target=y_target,
            target_weight=target_weight,
        )
    ref = gi._state.backend
    f0, theta0 = float(gi.target_value_), gi.theta_.copy()
    scale = _Scale(ref.removal_gradient_norms().median())
    # labels coded on the workers (codes chunked like X, kept there)
    membership = DaskGroupMembership(groups, ref.X)
    labels, sizes, codes = membership.labels, membership.sizes, membership.codes
    fitted = gi.estimator_
    if is_classifier(fitted):
        from ._dask_reduce import _per_block

        have = _per_block(_pairs, codes, ref.y[:, 0], combine=_union)
        for i, lab in enumerate(labels.tolist()):
            left = {c for a, c in have if a != i}
            lost = [c for c in fitted.classes_.tolist() if c not in left]
            if lost:
                raise ValueError(
                    f"Removing group {lab!r} removes every training example of "
                    f"class(es) {lost[:5]}: the refit model cannot predict them "
                    "and the change of the target is undefined. Use groups "
                    "that leave examples of every class."
                )
    tX, ty, tw = X_target, y_target, target_weight
    if any_dask(tX, ty, tw):
        tX, ty, tw = (_to_dask_array(a, k) for a, k in zip((tX, ty, tw), "Xyw"))
    sw = ref.sw[:, 0] if ref.sw is not None else da.ones_like(codes, dtype=np.float64)
    log(
        f"leave_group_out (dask): {len(labels)} refits by Newton steps over "
        f"{len(ref.X.chunks[0])} chunks [{time.perf_counter() - start:.1f} s]",
        verbose=verbose,
    )
    n_g = len(labels)
    value, stat, passes = np.empty(n_g), np.empty(n_g), np.zeros(n_g, dtype=int)
    for i, lab in enumerate(labels.tolist()):
        be = DaskLinearBackend(
            fitted,
            ref.X,
            ref.y[:, 0] if ref._y_1d else ref.y,
            sample_weight=da.where(codes == i, 0.0, sw),
            X_target=tX,
            y_target=ty,
            target_weight=tw,
            target=gi.target,
        )
        be.set_theta(theta0)
        counter = _count_passes(be)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reported in one warning below
            polish_parameters(
                be, scale, tol=stationarity_tol, max_steps=max_steps, polish=True
            )
        stat[i] = stationarity(be, scale)
        value[i] = be.target_value()
        passes[i] = counter()
        log(
            f"leave_group_out (dask): refit {i + 1}/{n_g} (group {lab!r}): "
            f"{passes[i]} passes, stationarity {stat[i]:.1e} "
            f"[{time.perf_counter() - start:.1f} s]",
            verbose=verbose,
        )
    converged = stat <= stationarity_tol
    if not converged.all():
        warnings.warn(
            f"{int((~converged).sum())} of {n_g} refits (groups "
            f"{labels[~converged][:5].tolist()}) stayed above stationarity_tol="
            f"{stationarity_tol!r} after {max_steps} Newton steps (largest "
            f"stationarity {np.max(stat[~converged]):.2g}); their actual changes "
            "are inexact.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return _refits_result(
        labels,
        sizes.astype(int),
        value,
        f0,
        n_iter=passes,
        converged=converged,
        stationarity=stat,
        target_name=gi.target_name_,
        start=start,
    )


def _count_passes(backend):
    """Count the backend's reductions over the training chunks from now on."""
    calls = [0]
    reduce = backend._reduce

    def counting(fn, width):
        calls[0] += 1
        return reduce(fn, width)

    backend._reduce = counting
    return lambda: calls[0]
