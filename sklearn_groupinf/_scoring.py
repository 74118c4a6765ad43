"""The scoring and selection methods of :class:`GroupInfluence`.

They are plain functions taking the fitted estimator as ``self`` and are
attached to the class in its body (so they are its own methods, documented
with it); they read the fitted influence state and never differentiate.
"""

from sklearn.utils.validation import check_is_fitted

from ._estimators import (
    check_method,
    newton_estimates,
    pairwise_form,
    quadratic_rows,
)
from ._results import GroupScores
from ._rounds import run_selection
from ._self_influence import self_influence as _self_influence
from ._trust import assess_groups, warn_unreliable
from ._validation import check_candidates


def _resolve_method(self, method, *, pairwise=False, name="method", sizes=None):
    """The estimator of ``method`` (``None``: the ``method`` parameter)."""
    method = self.method if method is None else method
    if method == "auto":
        if sizes is None:
            return "interaction"
        return self._fitted.auto_method(sizes)
    return check_method(method, pairwise=pairwise, name=name)


def score_groups(self, groups, *, method=None):
    """Estimated change of the target when each group is removed.

    Parameters
    ----------
    groups : array-like of shape (n_samples,)
        Group label of each training example (like ``GroupKFold``'s).
    method : str, default=None
        Overrides the ``method`` parameter for this call (``"auto"``:
        ``newton`` where affordable for these groups, see the class).

    Returns
    -------
    result : GroupScores
        Aligned arrays ``groups`` (sorted labels), ``size``, ``first_order``
        and ``estimate``, in the target's units (positive: removing the
        group raises the target), and ``reliable`` (``False`` where the
        group is outside the regime of the expansion; computed without
        refitting, see :class:`~sklearn_groupinf.GroupScores`).
        ``result.to_frame()`` gives a DataFrame.

    Warns
    -----
    UnreliableEstimateWarning
        When some group is flagged (``reliable`` is ``False``).
    """
    check_is_fitted(self, "influence_")
    st = self._state
    membership = self._fitted.membership(groups)
    method = _resolve_method(self, method, sizes=membership.sizes)
    first = membership.aggregate(self.influence_[:, None])[:, 0]
    if method == "newton":
        estimate = newton_estimates(st, membership)
    else:
        estimate = first.copy()
        A, M = pairwise_form(method, st, membership)
        if A is not None:
            estimate += 0.5 * quadratic_rows(A, M)
    reliable, _ = assess_groups(st, membership, method, estimate, first)
    warn_unreliable(membership.labels, reliable, method)
    return GroupScores(
        groups=membership.labels,
        size=membership.sizes,
        first_order=first,
        estimate=estimate,
        reliable=reliable,
        method=method,
    )


def self_influence(self, groups=None):
    """First-order rise of each training unit's own loss when it is removed.

    Needs no target set: a unit that only the rest of the data would
    predict badly (e.g. a wrong label) has a large self-influence.

    Parameters
    ----------
    groups : array-like of shape (n_samples,), default=None
        Score groups of training examples (sorted labels, as in
        :meth:`score_groups`) instead of single examples.

    Returns
    -------
    sigma : ndarray of shape (n_samples,) or (n_groups,)
        Estimated rise of the example's own loss (for a group: of its
        members' summed loss) when it is removed, in the units of the
        estimator's usual metric for one example: log-loss for
        ``LogisticRegression``, squared error (averaged over outputs) for the
        least-squares models, deviance for the GLMs, the training loss for a
        ``TorchModel``. Positive: the unit's own loss rises without it. It
        equals ``influence_[i]`` of a ``GroupInfluence`` whose target set is
        the training set with ``target_weight`` one on row ``i`` only.
        Per example with Dask training data: a Dask array chunked like
        ``X`` (one product per chunk; compute it when needed).

    Notes
    -----
    With removal gradients :math:`q_i` (see the class Notes) and
    :math:`H` the damped Hessian of the training objective,

    .. math::

        \\sigma_i = \\nabla \\ell_i(\\hat\\theta)^\\top H^{-1} q_i, \\qquad
        \\sigma_S = \\Big(\\sum_{i\\in S} \\nabla \\ell_i\\Big)^\\top
            H^{-1} \\sum_{i \\in S} q_i ,

    where :math:`\\ell_i` is the example's term of the estimator's usual
    metric (log-loss, squared error, deviance; the training loss of a
    ``TorchModel``), without its sample weight and without the penalty.
    The objective counts the example as :math:`s_i c\\,\\ell_i` for a
    constant :math:`c` (``C`` for ``LogisticRegression``, 1/2 for the
    least-squares models and the GLMs' half deviance), so
    :math:`q_i = s_i c \\nabla \\ell_i` for the sum-form objectives. With
    unit weights :math:`\\sigma_i = c\\,\\nabla\\ell_i^\\top H^{-1}
    \\nabla\\ell_i \\ge 0`. For the mean-form GLM objectives :math:`q_i`
    also carries the example's share of the penalty gradient,
    so :math:`\\sigma_i` can be slightly negative. :math:`\\sigma_S`
    includes the cross terms between members; it is not the sum of their
    :math:`\\sigma_i`. Per-example scores cost one solve with :math:`H`
    per example (in blocks).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn_groupinf import GroupInfluence
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> y_noisy = y.copy()
    >>> y_noisy[:10] = 1 - y_noisy[:10]             # ten flipped labels
    >>> model = make_pipeline(StandardScaler(), LogisticRegression())
    >>> gi = GroupInfluence(model).fit(X, y_noisy)
    >>> sigma = gi.self_influence()
    >>> sigma.shape, bool(np.all(sigma >= 0))
    ((569,), True)
    >>> # the flipped rows rank high: most of them are in the top 20
    >>> int(np.isin(np.arange(10), np.argsort(-sigma)[:20]).sum()) >= 7
    True
    >>> gi.self_influence(groups=np.arange(569) % 4).shape
    (4,)
    """
    check_is_fitted(self, "influence_")
    membership = None if groups is None else self._fitted.membership(groups)
    return _self_influence(self._state, membership)


def interaction_matrix(self, groups=None, *, method=None, form=None):
    """Pairwise interactions ``K`` among examples or groups.

    ``est(S) = b' 1_S + 1/2 1_S' K 1_S`` for the pairwise ``method``; for
    ``interaction`` ``K_ij = u_i' H_f u_j`` (target units).

    Parameters
    ----------
    groups : array-like of shape (n_samples,), default=None
        When given, interactions among groups (sorted labels).
    method : {"interaction", "second_order", "first_order"}, default=None
        Defaults to the estimator's ``method`` ("interaction" when that is
        ``newton`` or ``auto``: ``newton`` has no pairwise form).
    form : {"auto", "dense", "implicit"}, default=None
        Overrides the ``interaction`` parameter.

    Returns
    -------
    K : ndarray of shape (n_units, n_units) or scipy LinearOperator
        Dense when it fits in ``max_dense_bytes`` (or ``form="dense"``),
        otherwise a symmetric ``LinearOperator`` that never forms ``K``.
    """
    check_is_fitted(self, "influence_")
    if method is None and self.method == "newton":
        method = "interaction"
    method = _resolve_method(self, method, pairwise=True)
    fitted = self._fitted
    membership = None if groups is None else fitted.membership(groups)
    op = fitted.unit_operator(method, membership, form)
    return op.K if op.form == "dense" else op.as_linear_operator()


def select(
    self,
    budget,
    *,
    groups=None,
    goal="decrease",
    action="remove",
    method=None,
    X_candidates=None,
    y_candidates=None,
    candidate_weight=None,
    n_rounds=1,
    stop_early=False,
):
    """Greedily choose examples or groups to remove or add.

    Parameters
    ----------
    budget : int or float
        Number of units to select, or a fraction of the pool in (0, 1].
    groups : array-like of shape (n_samples,), default=None
        Select whole groups of training examples (``action="remove"``).
    goal : {"decrease", "increase"}, default="decrease"
        Whether the selection should decrease or increase the target.
    action : {"remove", "add"}, default="remove"
        ``remove`` training units; ``add`` candidates ``X_candidates`` (or,
        without candidates, up-weight training examples).
    method : {"auto", "interaction", "first_order", "second_order", \
            "newton"}, default=None
        Estimator (default: the ``method`` parameter). Pairwise estimators
        run a greedy rule on their quadratic estimate (``first_order`` is
        top-k). ``newton`` (group removal only) is greedy on exact
        group-Newton estimates: at each step the 8 groups ranked best by
        ``interaction`` are evaluated with one Newton step of their union
        with the selected groups, and the best is taken. ``"auto"`` uses
        ``newton`` for group removal where its cost is affordable (see the
        class), else ``interaction``.
    X_candidates, y_candidates : array-like, default=None
        Candidate examples for ``action="add"``.
    candidate_weight : array-like, default=None
        Sample weights the candidates would get when added.
    n_rounds : int, default=1
        Adaptive rounds: select ``budget / n_rounds`` units, refit, recompute
        and repeat. Keeps the local expansion honest when the selection
        moves the model far.
    stop_early : bool, default=False
        Stop when no unit moves the estimate in the direction of ``goal``.

    Returns
    -------
    selection : Selection
        ``indices`` (rows, greedy order), ``groups`` (group selection),
        ``estimates`` (estimated target change after each step, in the
        target's units), ``round``, ``measured`` (target after each round's
        refit; ``measured[0]`` is the current value).
    """
    check_is_fitted(self, "influence_")
    method = self.method if method is None else method
    if method != "auto":
        check_method(method)
    return run_selection(
        self._fitted,
        budget,
        groups=groups,
        goal=goal,
        action=action,
        method=method,
        candidates=check_candidates(self, X_candidates, y_candidates, candidate_weight),
        n_rounds=n_rounds,
        stop_early=stop_early,
    )
