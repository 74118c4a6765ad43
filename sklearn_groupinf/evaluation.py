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
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import (
    _check_sample_weight,
    check_consistent_length,
    check_is_fitted,
    validate_data,
)

from ._agreement import agreement
from ._progress import log
from ._refits import check_membership, clone_warm, refit_one, tight_clone
from ._results import _FrameBunch
from ._utils import _fit_with_weight
from .backends import get_backend, is_torch_model, unwrap_estimator

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
    - ``converged``: ``False`` where the solver stopped at ``max_iter`` (torch
      models: where the polished refit is above ``stationarity_tol``);
    - ``stationarity``: ``||grad J|| / median_i ||q_i||`` at the refitted
      parameters, the measure of ``GroupInfluence.stationarity_`` (the error
      of a refit relative to its exact minimiser is of about this size).

    Scalars: ``target_value`` (the target at the reference fit on all data),
    ``target_name``, ``elapsed`` (wall-clock seconds of all refits together,
    reference fit included) and ``method`` (``"refit"``). ``to_frame()``
    returns a pandas DataFrame.
    """

    _columns = (
        "groups",
        "size",
        "actual",
        "refit_value",
        "n_iter",
        "converged",
        "stationarity",
    )


def _label(g):
    return g.item() if isinstance(g, np.generic) else g


class _Columns(BaseEstimator):
    """Records the columns of ``X`` so that scikit-learn's own check compares
    the columns of other data with them (number, names and order)."""


def _validate_columns(cols, X, **kwargs):
    """``validate_data(cols, X)``; its messages name leave_group_out, not _Columns."""
    try:
        return validate_data(cols, X, dtype=np.float64, **kwargs)
    except ValueError as exc:
        raise ValueError(str(exc).replace("_Columns", "leave_group_out")) from None


def _check_columns(X, X_target, frozen_final):
    """``X`` (and ``X_target``) as float arrays, columns checked as scikit-learn does.

    A frozen model fitted with feature names must get the same columns in
    ``X``; ``X_target`` must have the columns of ``X``.
    """
    if frozen_final is not None and hasattr(frozen_final, "n_features_in_"):
        try:
            validate_data(frozen_final, X, reset=False, skip_check_array=True)
        except ValueError as exc:
            raise ValueError(
                f"The frozen {type(frozen_final).__name__} does not match X: {exc} "
                "Pass the data (columns) it was fitted on."
            ) from exc
    cols = _Columns()
    Xa = _validate_columns(cols, X, reset=True)
    if X_target is None:
        return Xa, None
    if sp.issparse(X_target):  # named here: scikit-learn's message says "X"
        raise TypeError(
            "X_target is a scipy sparse matrix, but leave_group_out takes dense "
            "data (as for the training X); pass X_target.toarray()."
        )
    try:
        Xt = _validate_columns(cols, X_target, reset=False)
    except ValueError as exc:
        raise ValueError(
            f"X_target does not match the training data X: {exc} Pass X_target "
            "with the columns of X, in the same order."
        ) from exc
    return Xa, Xt


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
    stationarity_tol=1e-6,
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
    Torch models (:class:`~sklearn_groupinf.torch.TorchModel`, skorch nets)
    keep their own ``tol`` and ``max_iter`` (float64 L-BFGS cannot reach
    ``tol=1e-10``), start from the reference fit's module (a ``TorchModel``
    with ``warm_start`` and ``module_``, so that each refit stays in the
    reference's basin), and are finished by the Newton polish of
    :meth:`GroupInfluence.fit <sklearn_groupinf.GroupInfluence.fit>` until
    their stationarity is at most ``stationarity_tol`` (L-BFGS runs again
    from the polished parameters when the polish stalls, up to three rounds).
    The stationarity reached is reported per group.
    ``class_weight="balanced"``, which scikit-learn recomputes at every fit, is
    frozen to the weights of the fit on all data, as :class:`GroupInfluence`
    does.

    With Dask training data (a Dask array or DataFrame column ``X``) and a
    scikit-learn linear model the data are never gathered: each refit is a
    sequence of Newton steps over the chunks from the reference fit's
    parameters until the relative gradient norm is below ``tol``
    (``n_iter``: passes over the data).

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
        boolean (or 0/1) membership matrix (dense or sparse), one row per
        group, for groups that overlap.
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
        Minimum iteration budget of the refits (torch models: their own).
    stationarity_tol : float, default=1e-6
        Stationarity to which torch refits are polished: use the
        ``stationarity_tol`` of the :class:`GroupInfluence` whose estimates
        are checked (its default is the same).
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
        units), ``refit_value``, ``n_iter``, ``converged``, ``stationarity``,
        and the scalars
        ``target_value``, ``target_name`` and ``elapsed`` (seconds).

    Warns
    -----
    sklearn.exceptions.ConvergenceWarning
        When some refits stopped at ``max_iter``, or torch refits stayed above
        ``stationarity_tol`` (their ``converged`` is ``False``); increase
        ``max_iter``.

    Raises
    ------
    ValueError
        When ``X_target`` has other columns than ``X`` (number, or names and
        order of DataFrame columns), or a frozen estimator was fitted on other
        columns than those of ``X``, as scikit-learn checks ``predict``'s input.

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
    if not (isinstance(stationarity_tol, numbers.Real) and stationarity_tol > 0):
        raise ValueError(
            f"stationarity_tol must be a positive float; got {stationarity_tol!r}."
        )
    from ._dask_fit import any_dask  # Dask data: refits over the chunks

    if any_dask(X, y, groups, sample_weight):
        from ._dask_refits import dask_leave_group_out, supported

        if supported(estimator):
            return dask_leave_group_out(
                estimator, X, y, groups, X_target=X_target, y_target=y_target,
                target_weight=target_weight, sample_weight=sample_weight,
                target=target, stationarity_tol=tol, verbose=verbose,
            )  # fmt: skip
    start = time.perf_counter()
    frozen = isinstance(estimator, FrozenEstimator)
    model = estimator.estimator if frozen else estimator
    pipeline = isinstance(model, Pipeline)
    if frozen:
        check_is_fitted(model)
    if X_target is None and y_target is not None:
        raise ValueError("y_target was given without X_target; pass both.")
    if X_target is not None and y_target is None and not callable(target):
        raise ValueError(
            "y_target is required with the default target (a metric needs the "
            "true labels); pass y_target, or a callable target."
        )
    if not pipeline:  # a Pipeline checks its own input
        X, X_target = _check_columns(X, X_target, model if frozen else None)
    y = np.asarray(y)
    check_consistent_length(X, y)
    n = len(y)
    if sample_weight is not None:
        sample_weight = _check_sample_weight(
            sample_weight, np.empty((n, 0)), ensure_non_negative=True
        )
    labels, sizes, removed = check_membership(groups, n)
    if X_target is None:
        X_target, y_target = X, y
        if target_weight is None:
            target_weight = sample_weight

    # the reference model: the user's fit (frozen) or a normal fit, whose
    # parameters warm-start the tight reference fit on all the data
    fitted = model if frozen else _fit_with_weight(clone(model), X, y, sample_weight)
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
    tight = dict(tol=tol, max_iter=max_iter, class_weight=class_weight)

    if pipeline and refit == "final_estimator":
        prefix = fitted[:-1]
        Xfit = prefix.transform(X) if len(fitted.steps) > 1 else X
        Xt = prefix.transform(X_target) if len(fitted.steps) > 1 else X_target
        template = tight_clone(final, final, **tight)
    elif pipeline:  # refit the whole pipeline
        Xfit, Xt = X, X_target
        template = clone(model)
        last = template.steps[-1][0]
        template.set_params(**{last: tight_clone(template.steps[-1][1], None, **tight)})
    else:
        Xfit, Xt = X, X_target
        template = tight_clone(final, final, **tight)
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

    run = dict(stationarity_tol=stationarity_tol)
    f0, _, ok0, stat0, ref = refit_one(
        template, Xfit, y, sample_weight, None, target_kw, return_model=True, **run
    )
    if not ok0:
        warnings.warn(
            f"The reference fit on all the data did not converge within "
            f"max_iter={max_iter} (stationarity {stat0:.2g}); increase max_iter.",
            ConvergenceWarning,
            stacklevel=2,
        )
    if not (pipeline and refit == "all"):
        template = tight_clone(template, unwrap_estimator(ref)[0], **tight)
    log(f"leave_group_out: {len(labels)} refits", verbose=verbose)
    hint = (
        " refit='all' refits the pipeline's transformers as well, which may then "
        "not know values of X_target that only this group has (e.g. a category); "
        "refit='final_estimator' keeps them as fitted on all the data."
        if pipeline and refit == "all"
        else ""
    )
    results = Parallel(n_jobs=n_jobs, verbose=verbose)(
        delayed(_refit_group)(
            (_label(g), hint),
            clone_warm(template),
            Xfit,
            y,
            sample_weight,
            ~rm,
            target_kw,
            **run,
        )
        for g, rm in zip(labels, removed)
    )
    refit_value = np.array([r[0] for r in results])
    n_iter = np.array([r[1] for r in results])
    converged = np.array([r[2] for r in results])
    stationarity = np.array([r[3] for r in results])
    if not converged.all():
        bad = labels[~converged][:5].tolist()
        worst = f"{np.max(stationarity[~converged]):.2g}"
        if is_torch_model(unwrap_estimator(ref)[0]):
            msg = (
                f"{int((~converged).sum())} of {len(converged)} torch refits (groups "
                f"{bad}) did not reach stationarity_tol={stationarity_tol!r} "
                f"(largest stationarity {worst}): L-BFGS and Newton steps stalled, "
                "typically on a flat or non-convex stretch of the objective; their "
                "actual changes are inexact (see the stationarity column). A larger "
                "weight_decay makes the objective better conditioned."
            )
        else:
            msg = (
                f"{int((~converged).sum())} of {len(converged)} refits (groups "
                f"{bad}) stopped at max_iter={max_iter} before reaching tol={tol!r} "
                f"(largest stationarity {worst}); their actual changes are "
                "inexact. Increase max_iter."
            )
        warnings.warn(msg, ConvergenceWarning, stacklevel=2)
    return _refits_result(
        labels,
        sizes,
        refit_value,
        f0,
        n_iter=n_iter,
        converged=converged,
        stationarity=stationarity,
        target_name=spec_backend.target_name,
        start=start,
    )


def _refit_group(group, *args, **kwargs):
    """:func:`refit_one` for ``group = (label, hint)``; a failure names it."""
    label, hint = group
    try:
        return refit_one(*args, **kwargs)
    except ValueError as exc:
        reason = str(exc).rstrip(".")
        raise ValueError(
            f"The refit without group {label!r} failed: {reason}.{hint}"
        ) from exc


def _refits_result(
    labels,
    sizes,
    refit_value,
    f0,
    *,
    n_iter,
    converged,
    stationarity,
    target_name,
    start,
):
    """:class:`GroupRefits` from refitted target values; raises if any is not finite."""
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
        stationarity=stationarity,
        target_value=f0,
        target_name=target_name,
        elapsed=time.perf_counter() - start,
        method="refit",
    )
