"""``agreement``: how well estimated group effects agree with actual ones.

Public as :func:`sklearn_groupinf.evaluation.agreement`.
"""

import warnings

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.utils import Bunch


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
