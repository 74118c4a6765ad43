"""Ground truth for group influence: leave-group-out refits, and agreement.

:func:`leave_group_out` refits an estimator without each group of training
examples and measures the actual change of the same target that
:class:`~sklearn_groupinf.GroupInfluence` estimates, in the same group order,
so that any estimate can be checked with :func:`agreement`.

**Sign and units.** Every number here is the change of the target, in the
target's own units, when the group is removed:
``f(theta_without_S) - f(theta_hat)``. Positive means removal raises the target
(for a loss target: the group was helping).
"""

import numbers
import time
import warnings

import numpy as np
import scipy.sparse as sp
from scipy.stats import pearsonr, spearmanr
from sklearn.base import clone, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils import Bunch, _safe_indexing
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import (
    _check_sample_weight,
    check_array,
    check_consistent_length,
    check_is_fitted,
)

from ._groups import GroupMembership
from ._progress import log
from ._results import _FrameBunch
from .backends import get_backend, unwrap_estimator

__all__ = ["GroupRefits", "agreement", "leave_group_out"]


class GroupRefits(_FrameBunch):
    """Actual change of the target when each group is removed (by refitting).

    Keys (aligned arrays of length ``n_groups``, in the order of
    :meth:`GroupInfluence.score_groups <sklearn_groupinf.GroupInfluence.score_groups>`:
    sorted group labels):

    - ``groups``: the group labels (``0 .. n_groups - 1`` for a membership
      matrix);
    - ``size``: number of training examples in each group;
    - ``actual``: ``f(theta_without_S) - f(theta_hat)``, in the target's units
      (positive: removing the group raises the target);
    - ``refit_value``: the target after each refit;
    - ``n_iter``: solver iterations of each refit (``-1`` when the estimator
      does not report them);
    - ``converged``: ``False`` where the solver stopped at ``max_iter``.

    Scalars: ``target_value`` (the target at the reference fit on all data),
    ``target_name``, ``elapsed`` (wall-clock seconds of all refits together,
    reference fit included) and ``method`` (``"refit"``). ``to_frame()``
    returns a pandas DataFrame.
    """

    _columns = ("groups", "size", "actual", "refit_value", "n_iter", "converged")


def _check_membership(groups, n_samples):
    """Labels -> (labels, sizes, list of removed-row masks)."""
    if sp.issparse(groups) or (
        isinstance(groups, np.ndarray) and groups.ndim == 2 and groups.dtype == bool
    ):
        M = sp.csr_matrix(groups, dtype=bool)
        if M.shape[1] != n_samples:
            raise ValueError(
                f"A membership matrix in groups must have shape (n_groups, "
                f"{n_samples}); got {M.shape}. Pass one label per example or a "
                "boolean matrix with one row per group."
            )
        removed = [M[g].toarray().ravel() for g in range(M.shape[0])]
        labels = np.arange(M.shape[0])
    else:
        membership = GroupMembership(groups, n_samples)
        labels = membership.labels
        removed = [membership.inverse == g for g in range(membership.n_groups)]
    sizes = np.array([int(r.sum()) for r in removed])
    if np.any(sizes == 0):
        raise ValueError(
            f"groups has {int(np.sum(sizes == 0))} empty groups (rows "
            f"{np.flatnonzero(sizes == 0)[:5].tolist()} of the membership matrix); "
            "every group needs at least one training example."
        )
    return labels, sizes, removed


def _label(g):
    return g.item() if isinstance(g, np.generic) else g


def _tight_clone(est, warm_from, *, tol, max_iter, class_weight):
    """A clone with a tight tolerance, enough iterations and a warm start."""
    est = clone(est)
    params = est.get_params(deep=False)
    new = {}
    if isinstance(params.get("tol"), numbers.Real):
        new["tol"] = min(float(params["tol"]), tol)
    if "max_iter" in params:
        current = params["max_iter"]
        new["max_iter"] = max(
            current if isinstance(current, numbers.Integral) else 0, max_iter
        )
    if class_weight is not None and "class_weight" in params:
        new["class_weight"] = class_weight
    warm = "warm_start" in params and params.get("solver") != "liblinear"
    if warm:
        new["warm_start"] = True
    est.set_params(**new)
    if warm and warm_from is not None and hasattr(warm_from, "coef_"):
        est.coef_ = np.array(warm_from.coef_, copy=True)
        if hasattr(warm_from, "intercept_"):
            est.intercept_ = np.array(warm_from.intercept_, copy=True)
    return est


def _fit(est, X, y, sample_weight):
    if sample_weight is None:
        return est.fit(X, y)
    if isinstance(est, Pipeline):
        return est.fit(X, y, **{f"{est.steps[-1][0]}__sample_weight": sample_weight})
    return est.fit(X, y, sample_weight=sample_weight)


def _refit_one(est, X, y, sample_weight, keep, target_kw, return_model=False):
    """Refit ``est`` on the rows ``keep`` (all when ``None``); evaluate the target."""
    if keep is None:
        Xk, yk, swk = X, y, sample_weight
    else:
        Xk, yk = _safe_indexing(X, np.flatnonzero(keep)), y[keep]
        swk = None if sample_weight is None else sample_weight[keep]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        _fit(est, Xk, yk, swk)
    converged = True
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            converged = False
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    backend = get_backend(est, Xk, yk, sample_weight=swk, **target_kw)
    final, _ = unwrap_estimator(est)
    n_iter = getattr(final, "n_iter_", None)
    n_iter = -1 if n_iter is None else int(np.max(n_iter))
    return (
        float(backend.target_value()),
        n_iter,
        converged,
        (est if return_model else None),
    )


def leave_group_out(
    estimator,
    X,
    y,
    groups,
    *,
    X_target=None,
    y_target=None,
    target_weight=None,
    sample_weight=None,
    target="default",
    refit="final_estimator",
    tol=1e-10,
    max_iter=10_000,
    n_jobs=None,
    verbose=0,
):
    """Actual change of the target when each group is removed, by refitting.

    The ground truth that :meth:`GroupInfluence.score_groups
    <sklearn_groupinf.GroupInfluence.score_groups>` estimates: the estimator
    is refitted once on all the data and once without each group, and the same
    target (the same code computes it) is evaluated after each refit.

    **Sign and units.** ``actual`` is ``f(theta_without_S) - f(theta_hat)``
    in the target's own units; positive means removing the group raises the
    target (for a loss target: the group was helping). It is aligned with
    ``score_groups(groups).estimate`` (sorted group labels).

    Every refit (the reference fit on all data included) uses a tight
    tolerance (``tol``), at least ``max_iter`` iterations and, where the
    estimator allows it, a warm start from the reference fit, so that the
    differences measured are the effect of the removal and not solver noise.
    ``class_weight="balanced"``, which scikit-learn recomputes at every fit, is
    frozen to the weights of the fit on all data, as :class:`GroupInfluence`
    does.

    Parameters
    ----------
    estimator : estimator object
        A supported estimator (as for :class:`~sklearn_groupinf.GroupInfluence`),
        a ``Pipeline`` ending in one, or either wrapped in
        ``sklearn.frozen.FrozenEstimator`` (then its fitted parameters are the
        warm start of the reference fit).
    X : array-like of shape (n_samples, n_features)
        Training data.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Training targets.
    groups : array-like of shape (n_samples,) or bool array of shape \
            (n_groups, n_samples)
        Group label of each training example (like ``GroupKFold``'s), or a
        boolean membership matrix (dense or sparse), one row per group, for
        groups that overlap.
    X_target, y_target : array-like, default=None
        Target set on which the target is evaluated. Without it the target is
        the metric on all the training data (removed rows included), weighted
        by ``sample_weight``, as in :class:`GroupInfluence`.
    target_weight : array-like of shape (n_target,), default=None
        Weights of the target examples.
    sample_weight : array-like of shape (n_samples,), default=None
        Training sample weights.
    target : "default" or callable, default="default"
        As in :class:`GroupInfluence`: the estimator's scikit-learn metric
        (``log_loss``, ``mean_squared_error``, a mean deviance) or a callable
        ``phi(y, z)`` written with torch operations.
    refit : {"final_estimator", "all"}, default="final_estimator"
        For a ``Pipeline``: ``"final_estimator"`` keeps the earlier steps
        fitted on all the data (a fixed feature map, which is what
        :class:`GroupInfluence` models); ``"all"`` refits the whole pipeline
        without the group (the preprocessing moves too; no warm start).
    tol : float, default=1e-10
        Solver tolerance of the refits (an estimator's own smaller ``tol`` is
        kept).
    max_iter : int, default=10000
        Minimum iteration budget of the refits.
    n_jobs : int, default=None
        Number of refits run in parallel. ``None`` means 1 unless in a
        :func:`joblib.parallel_config` context (e.g. ``backend="dask"`` with a
        ``dask.distributed.Client``: then all Dask workers). ``-1`` means using
        all processors.
    verbose : int, default=0
        Verbosity of the parallel loop.

    Returns
    -------
    refits : GroupRefits
        ``groups``, ``size``, ``actual`` (the change of the target, in its
        units), ``refit_value``, ``n_iter``, ``converged``, and the scalars
        ``target_value``, ``target_name`` and ``elapsed`` (seconds).

    Warns
    -----
    sklearn.exceptions.ConvergenceWarning
        When some refits stopped at ``max_iter`` (their ``converged`` is
        ``False``); increase ``max_iter``.

    See Also
    --------
    agreement : Pearson, Spearman and median relative error of an estimate.
    sklearn_groupinf.GroupInfluence.score_groups : the estimates.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn_groupinf import GroupInfluence
    >>> from sklearn_groupinf.evaluation import agreement, leave_group_out
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> X = StandardScaler().fit_transform(X)
    >>> groups = np.arange(400) % 10                 # ten groups of 40 rows
    >>> est = LogisticRegression(C=0.1)
    >>> gi = GroupInfluence(est).fit(X[:400], y[:400],
    ...                              X_target=X[400:], y_target=y[400:])
    >>> scores = gi.score_groups(groups, method="second_order")
    >>> refits = leave_group_out(est, X[:400], y[:400], groups,
    ...                          X_target=X[400:], y_target=y[400:])
    >>> refits.groups
    array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    >>> a = agreement(scores, refits)      # held-out log-loss changes
    >>> round(a.pearson, 3)
    1.0
    >>> bool(a.median_relative_error < 0.05)
    True
    """
    if refit not in ("final_estimator", "all"):
        raise ValueError(f"refit must be 'final_estimator' or 'all'; got {refit!r}.")
    if not (isinstance(tol, numbers.Real) and tol > 0):
        raise ValueError(f"tol must be a positive float; got {tol!r}.")
    if not (isinstance(max_iter, numbers.Integral) and max_iter >= 1):
        raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}.")
    start = time.perf_counter()
    frozen = isinstance(estimator, FrozenEstimator)
    model = estimator.estimator if frozen else estimator
    pipeline = isinstance(model, Pipeline)
    if pipeline:
        check_consistent_length(X, y)
    else:
        X = check_array(X, dtype=np.float64, input_name="X")
    y = np.asarray(y)
    check_consistent_length(X, y)
    n = len(y)
    if sample_weight is not None:
        sample_weight = _check_sample_weight(
            sample_weight, np.empty((n, 0)), ensure_non_negative=True
        )
    labels, sizes, removed = _check_membership(groups, n)
    if X_target is None:
        if y_target is not None:
            raise ValueError("y_target was given without X_target; pass both.")
        X_target, y_target = X, y
        if target_weight is None:
            target_weight = sample_weight

    # the reference model: the user's fit (frozen) or a normal fit, whose
    # parameters warm-start the tight reference fit on all the data
    if frozen:
        check_is_fitted(model)
        fitted = model
    else:
        fitted = _fit(clone(model), X, y, sample_weight)
    final, _ = unwrap_estimator(fitted)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="class_weight='balanced'")
        spec_backend = get_backend(
            fitted,
            X,
            y,
            sample_weight=sample_weight,
            X_target=X_target,
            y_target=y_target,
            target_weight=target_weight,
            target=target,
        )
    class_weight = getattr(getattr(spec_backend, "spec", None), "class_weight", None)

    if pipeline and refit == "final_estimator":
        prefix = fitted[:-1]
        Xfit = prefix.transform(X) if len(fitted.steps) > 1 else X
        Xt = prefix.transform(X_target) if len(fitted.steps) > 1 else X_target
        template = _tight_clone(
            final, final, tol=tol, max_iter=max_iter, class_weight=class_weight
        )
    elif pipeline:  # refit the whole pipeline
        Xfit, Xt = X, X_target
        template = clone(model)
        last = template.steps[-1][0]
        tight = _tight_clone(
            template.steps[-1][1],
            None,
            tol=tol,
            max_iter=max_iter,
            class_weight=class_weight,
        )
        template.set_params(**{last: tight})
    else:
        Xfit, Xt = X, X_target
        template = _tight_clone(
            final, final, tol=tol, max_iter=max_iter, class_weight=class_weight
        )
    target_kw = dict(
        X_target=Xt, y_target=y_target, target_weight=target_weight, target=target
    )

    if is_classifier(final):
        classes = np.unique(y)
        for g, rm in zip(labels, removed):
            left = np.unique(y[~rm])
            if len(left) < len(classes):
                gone = np.setdiff1d(classes, left)[:5].tolist()
                raise ValueError(
                    f"Removing group {_label(g)!r} removes every training example of "
                    f"class(es) {gone}: the refit model cannot predict them and "
                    "the change of the target is undefined. Use groups that "
                    "leave examples of every class."
                )

    f0, _, ok0, ref = _refit_one(
        template, Xfit, y, sample_weight, None, target_kw, return_model=True
    )
    if not ok0:
        warnings.warn(
            f"The reference fit on all the data did not converge within "
            f"max_iter={max_iter}; increase max_iter.",
            ConvergenceWarning,
            stacklevel=2,
        )
    if not (pipeline and refit == "all"):
        template = _tight_clone(
            template, ref, tol=tol, max_iter=max_iter, class_weight=class_weight
        )
    log(f"leave_group_out: {len(labels)} refits", verbose=verbose)
    results = Parallel(n_jobs=n_jobs, verbose=verbose)(
        delayed(_refit_one)(
            _clone_warm(template), Xfit, y, sample_weight, ~rm, target_kw
        )
        for rm in removed
    )
    refit_value = np.array([r[0] for r in results])
    n_iter = np.array([r[1] for r in results])
    converged = np.array([r[2] for r in results])
    if not converged.all():
        warnings.warn(
            f"{int((~converged).sum())} of {len(converged)} refits stopped at "
            f"max_iter={max_iter} before reaching tol={tol!r}; their actual "
            "changes are inexact. Increase max_iter.",
            ConvergenceWarning,
            stacklevel=2,
        )
    actual = refit_value - f0
    if not np.all(np.isfinite(actual)):
        bad = labels[~np.isfinite(actual)][:5].tolist()
        raise FloatingPointError(
            f"The target is not finite after removing groups {bad} (a refit "
            "diverged or predicts probability 0 for a target label)."
        )
    return GroupRefits(
        groups=labels,
        size=sizes,
        actual=actual,
        refit_value=refit_value,
        n_iter=n_iter,
        converged=converged,
        target_value=f0,
        target_name=spec_backend.target_name,
        elapsed=time.perf_counter() - start,
        method="refit",
    )


def _clone_warm(est):
    """``clone`` that keeps warm-start coefficients (``coef_``, ``intercept_``)."""
    new = clone(est)
    for attr in ("coef_", "intercept_"):
        if hasattr(est, attr) and getattr(est, "warm_start", False):
            setattr(new, attr, np.array(getattr(est, attr), copy=True))
    return new


def _values(x):
    if isinstance(x, Bunch):
        key = "actual" if "actual" in x else "estimate"
        return np.asarray(x[key], dtype=np.float64), x.get("groups")
    return np.asarray(x, dtype=np.float64).reshape(-1), None


def agreement(estimate, actual):
    """How well estimated group effects agree with the actual ones.

    Parameters
    ----------
    estimate : array-like of shape (n_groups,) or GroupScores
        Estimated change of the target per group (``GroupScores.estimate``
        when a :class:`~sklearn_groupinf.GroupScores` is given).
    actual : array-like of shape (n_groups,) or GroupRefits
        Actual change per group (``GroupRefits.actual``), in the same units
        and order. When both arguments carry ``groups``, they must match.

    Returns
    -------
    result : Bunch
        ``pearson`` and ``spearman`` correlation, ``median_relative_error``
        (median of ``|estimate - actual| / |actual|`` over groups with a
        non-zero actual change), ``median_abs_error`` (in the target's units)
        and ``n`` (number of groups).

    Examples
    --------
    >>> from sklearn_groupinf.evaluation import agreement
    >>> r = agreement([0.11, 0.19, 0.32], [0.1, 0.2, 0.3])
    >>> round(r.median_relative_error, 3), round(r.spearman, 3)
    (0.067, 1.0)
    """
    est, g_est = _values(estimate)
    act, g_act = _values(actual)
    if est.shape != act.shape:
        raise ValueError(
            f"estimate has {est.size} values but actual has {act.size}; pass one "
            "value per group, in the same order."
        )
    if (
        g_est is not None
        and g_act is not None
        and not np.array_equal(np.asarray(g_est), np.asarray(g_act))
    ):
        raise ValueError(
            "estimate and actual are for different groups (their `groups` "
            "differ); score and refit the same group labels."
        )
    for name, v in (("estimate", est), ("actual", act)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} contains NaN or infinite values.")
    if est.size < 2:
        raise ValueError(
            f"agreement needs at least 2 groups to correlate; got {est.size}."
        )
    nonzero = act != 0
    if not nonzero.all():
        warnings.warn(
            f"{int((~nonzero).sum())} groups have an actual change of exactly 0; "
            "they are left out of the median relative error.",
            UserWarning,
            stacklevel=2,
        )
    rel = np.abs(est - act)[nonzero] / np.abs(act[nonzero])
    if np.ptp(est) == 0 or np.ptp(act) == 0:
        warnings.warn(
            "A constant input makes the correlations undefined; they are NaN.",
            UserWarning,
            stacklevel=2,
        )
        pear = spear = np.nan
    else:
        pear = float(pearsonr(est, act)[0])
        spear = float(spearmanr(est, act)[0])
    return Bunch(
        pearson=pear,
        spearman=spear,
        median_relative_error=float(np.median(rel)) if rel.size else np.nan,
        median_abs_error=float(np.median(np.abs(est - act))),
        n=int(est.size),
    )
