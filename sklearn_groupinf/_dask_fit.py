"""``GroupInfluence.fit`` on Dask arrays (scikit-learn linear models).

The estimator is fitted to the exact optimum of its own objective without
gathering the data: scikit-learn fits it on an in-memory sample (the first
``sample_size`` rows), then Newton steps over the chunks (``P x P`` Hessian
and gradient as tree reductions, :class:`~._dask_backend.DaskLinearBackend`)
polish it to stationarity; the polished parameters are written back into
the fitted estimator. The influence state is then computed exactly as in
memory (:func:`~._fitted.solve_influence`), and ``influence_`` is a Dask
array chunked like ``X``.

Dask is imported only when Dask inputs are given.
"""

import time

import numpy as np
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import check_is_fitted

from ._dask_backend import DaskLinearBackend, is_dask
from ._fitted import InfluenceFit, solve_influence
from ._progress import log
from .backends._linear_specs import SUPPORTED, SUPPORTED_CLASSES

#: rows of the in-memory sample the estimator is first fitted on
SAMPLE_SIZE = 100_000

DASK_INSTALL = 'pip install "sklearn-groupinf[dask]"'


def any_dask(*arrays):
    """Whether any of ``arrays`` is a Dask collection."""
    return any(is_dask(a) for a in arrays if a is not None)


def _to_dask_array(a, name):
    """A Dask array from a Dask array, DataFrame or Series (lengths known)."""
    import dask.array as da

    if a is None:
        return None
    if is_dask(a) and hasattr(a, "to_dask_array"):
        # the lengths counted on the array's own partitions: lengths=True
        # counts them on a separately optimised graph, whose Parquet reads
        # dask may fuse into fewer partitions than the array has
        a = a.to_dask_array()
        if any(np.isnan(c) for c in a.chunks[0]):
            a = a.compute_chunk_sizes()
    elif not is_dask(a):
        a = da.from_array(np.asarray(a))
    if any(np.isnan(c) for dim in a.chunks for c in dim):
        raise ValueError(
            f"{name} has chunks of unknown size; pass a Dask array with known "
            "chunk sizes (e.g. df.to_dask_array(lengths=True))."
        )
    return a


def _write_theta(est, backend):
    """Put the polished parameters into the estimator's ``coef_``/``intercept_``."""
    spec = backend.spec
    d = spec.coef.shape[1]
    Theta = backend.get_theta().reshape(spec.n_outputs, -1)
    est.coef_ = Theta[:, :d].reshape(np.shape(est.coef_)).copy()
    if spec.fit_intercept:
        b = Theta[:, d]
        est.intercept_ = float(b[0]) if np.ndim(est.intercept_) == 0 else b.copy()


def fit_dask(gi, X, y, sample_weight, target, **fit_params):
    """:meth:`GroupInfluence.fit` for Dask training data (see the module).

    ``target`` is ``(X_target, y_target, target_weight)``; ``fit_params`` go
    to the estimator's ``fit`` on the in-memory sample.
    """
    X_target, y_target, target_weight = target
    try:
        import dask.array  # noqa: F401
    except ImportError:  # pragma: no cover - dask inputs imply dask
        raise ImportError(f"Dask inputs need dask[array]: {DASK_INSTALL}.") from None
    t0 = time.perf_counter()
    est = gi.estimator
    frozen = isinstance(est, FrozenEstimator)
    final = est.estimator if frozen else est
    if not isinstance(final, SUPPORTED_CLASSES):
        raise TypeError(
            "Dask training data are supported for the scikit-learn linear models "
            f"({SUPPORTED}; not in a Pipeline); got {type(final).__name__}. "
            "Compute the data into memory (X.compute()) for other estimators."
        )
    if getattr(final, "class_weight", None) == "balanced":
        raise ValueError(
            "class_weight='balanced' is not supported with Dask training data; "
            "pass the class weights as a dict."
        )
    if X_target is None or y_target is None:
        raise ValueError(
            "With Dask training data pass X_target and y_target (in memory or "
            "as Dask arrays); got X_target=None or y_target=None."
        )
    X = _to_dask_array(X, "X")
    y = _to_dask_array(y, "y")
    sw = _to_dask_array(sample_weight, "sample_weight")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D; got a Dask array of shape {X.shape}.")
    for name, a in (("y", y), ("sample_weight", sw)):
        if a is not None and a.shape[0] != X.shape[0]:
            raise ValueError(
                f"{name} has {a.shape[0]} rows and X has {X.shape[0]}; pass "
                "arrays with the same number of rows."
            )
    if any_dask(X_target, y_target, target_weight):  # reduced over its chunks
        X_t = _to_dask_array(X_target, "X_target")
        y_t = _to_dask_array(y_target, "y_target")
        w_t = _to_dask_array(target_weight, "target_weight")
    else:
        X_t, y_t, w_t = X_target, y_target, target_weight
    n = int(X.shape[0])
    log(
        f"GroupInfluence (dask): {n} examples in {len(X.chunks[0])} chunks",
        verbose=gi.verbose,
    )
    if frozen:
        check_is_fitted(final)
        fitted = final
    else:
        m = min(n, SAMPLE_SIZE)
        fitted = clone(final)
        Xs, ys = np.asarray(X[:m].compute()), np.asarray(y[:m].compute())
        sws = None if sw is None else np.asarray(sw[:m].compute())
        if hasattr(final, "predict_proba") or hasattr(final, "decision_function"):
            import dask.array as da

            if y.ndim == 1 and not np.issubdtype(y.dtype, np.floating):
                every = np.asarray(da.unique(y).compute())
                seen = np.unique(ys)
                if len(seen) != len(every):
                    raise ValueError(
                        f"The first {m} rows hold the classes {seen.tolist()[:10]} "
                        f"but y has {every.tolist()[:10]}; shuffle the rows so "
                        "that the first ones hold every class."
                    )
        fitted.fit(Xs, ys, sample_weight=sws, **fit_params)
        log(
            f"GroupInfluence (dask): fitted on the first {m} rows "
            f"[{time.perf_counter() - t0:.1f} s]",
            verbose=gi.verbose,
        )
    backend = DaskLinearBackend(
        fitted,
        X,
        y,
        sample_weight=sw,
        X_target=X_t,
        y_target=y_t,
        target_weight=w_t,
        target=gi.target,
    )
    backend.verbose = gi.verbose
    state, influence, gi.stationarity_ = solve_influence(
        gi,
        backend,
        frozen=frozen,
        weighted=sw is not None,
        t0=t0,
    )
    if not frozen:
        _write_theta(fitted, backend)
    gi.estimator_ = est if frozen else fitted
    gi._state = state
    gi._fitted = InfluenceFit(
        gi,
        state,
        train=(X, y, sw),
        target=(X_target, y_target, target_weight),
        influence=influence,
    )
    gi.influence_ = influence
    gi.target_value_ = state.f0
    gi.target_name_ = backend.target_name
    gi.theta_ = backend.get_theta()
    gi.n_params_ = backend.n_params
    gi.hessian_rcond_ = getattr(state.solver, "rcond", np.nan)
    gi.n_features_in_ = int(X.shape[1])
    if hasattr(fitted, "classes_"):
        gi.classes_ = fitted.classes_
    log(
        f"GroupInfluence (dask): done, target {gi.target_name_} = "
        f"{gi.target_value_:.6g} [{time.perf_counter() - t0:.1f} s]",
        verbose=gi.verbose,
    )
    return gi
