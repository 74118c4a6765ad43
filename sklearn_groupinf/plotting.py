"""Plots of group influence, following scikit-learn's Display API.

Each display stores the plotted values as attributes, ``plot(ax=None)`` draws
them and returns the display (with ``ax_``, ``figure_`` and the artists), and
``from_estimator`` computes them from a fitted
:class:`~sklearn_groupinf.GroupInfluence`. matplotlib is an optional
dependency (``pip install "sklearn-groupinf[plot]"``), imported only by
``plot``.

Every plotted score is the estimated change of the target, in the target's
units, when the group is removed (positive: removal raises the target).
"""

import numpy as np

__all__ = ["GroupInfluenceDisplay", "InteractionHeatmapDisplay", "SelectionPathDisplay"]


def _axes(ax):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    return ax, ax.figure


def _ylabel(target_name):
    name = target_name or "target"
    return f"estimated change of {name}\nwhen removed"


class GroupInfluenceDisplay:
    """Bars of the estimated effect of removing each group.

    Side by side for each group: the first-order sum of influences, the
    estimate of ``method`` (interaction-aware by default) and, when given, the
    actual change measured by refitting without the group. Every value is the
    change of the target, in its units, when the group is removed (positive:
    removal raises the target).

    Parameters
    ----------
    groups : array-like of shape (n_groups,)
        Group labels.
    first_order : array-like of shape (n_groups,)
        First-order estimates (sum of the members' influences).
    estimate : array-like of shape (n_groups,)
        Estimates of ``method``.
    actual : array-like of shape (n_groups,), default=None
        Actual changes from refits; ``NaN`` where not measured.
    method : str, default="interaction"
        Name of the estimator behind ``estimate`` (legend).
    target_name : str, default=None
        Name of the target (axis label).

    Attributes
    ----------
    bars_ : dict of str to matplotlib BarContainer
        The bars, keyed ``"first_order"``, ``method`` and ``"actual"``.
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import load_breast_cancer
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn_groupinf import GroupInfluence
    >>> from sklearn_groupinf.plotting import GroupInfluenceDisplay
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> gi = GroupInfluence(make_pipeline(StandardScaler(), LogisticRegression()))
    >>> gi = gi.fit(X[:400], y[:400], X_target=X[400:], y_target=y[400:])
    >>> groups = X[:400, 0] > 14  # large vs small radius
    >>> disp = GroupInfluenceDisplay.from_estimator(gi, groups)
    >>> disp.method  # the default method="auto" scores these groups with newton
    'newton'
    >>> [round(b.get_height(), 6) for b in disp.bars_[disp.method]] == [
    ...     round(v, 6) for v in disp.estimate]
    True
    """

    def __init__(
        self,
        *,
        groups,
        first_order,
        estimate,
        actual=None,
        method="interaction",
        target_name=None,
    ):
        self.groups = np.asarray(groups)
        self.first_order = np.asarray(first_order, dtype=float)
        self.estimate = np.asarray(estimate, dtype=float)
        self.actual = None if actual is None else np.asarray(actual, dtype=float)
        self.method = method
        self.target_name = target_name

    @classmethod
    def from_estimator(
        cls, estimator, groups, *, method=None, actual=None, top=None, ax=None
    ):
        """Score the groups with a fitted ``GroupInfluence`` and plot them.

        Parameters
        ----------
        estimator : GroupInfluence
            Fitted.
        groups : array-like of shape (n_samples,)
            Group label of each training example.
        method : str, default=None
            Estimator of the second bar (default: the estimator's ``method``).
        actual : array-like of shape (n_groups,) or GroupRefits, default=None
            Measured changes aligned with the sorted group labels, or the
            result of :func:`sklearn_groupinf.evaluation.leave_group_out`.
        top : int, default=None
            Plot only the ``top`` groups with the largest absolute estimate.
        ax : matplotlib Axes, default=None

        Returns
        -------
        display : GroupInfluenceDisplay
        """
        scores = estimator.score_groups(groups, method=method)
        return cls.from_scores(
            scores, actual=actual, top=top, target_name=estimator.target_name_, ax=ax
        )

    @classmethod
    def from_scores(cls, scores, *, actual=None, top=None, target_name=None, ax=None):
        """Plot a :class:`~sklearn_groupinf.GroupScores` (``score_groups`` output).

        Parameters
        ----------
        scores : GroupScores
        actual : array-like of shape (n_groups,) or GroupRefits, default=None
            Measured changes aligned with ``scores.groups``, or the result
            of :func:`sklearn_groupinf.evaluation.leave_group_out`.
        top : int, default=None
            Plot only the ``top`` groups with the largest absolute estimate.
        target_name : str, default=None
        ax : matplotlib Axes, default=None

        Returns
        -------
        display : GroupInfluenceDisplay
        """
        if isinstance(actual, dict) and "actual" in actual:  # GroupRefits
            if "groups" in actual and not np.array_equal(
                np.asarray(actual["groups"]), np.asarray(scores.groups)
            ):
                raise ValueError(
                    "actual (GroupRefits) is for other groups than "
                    "scores; refit the same group labels."
                )
            actual = actual["actual"]
        keep = np.arange(len(scores.groups))
        if top is not None:
            keep = np.sort(np.argsort(-np.abs(scores.estimate), kind="stable")[:top])
        act = None if actual is None else np.asarray(actual, dtype=float)[keep]
        disp = cls(
            groups=scores.groups[keep],
            first_order=scores.first_order[keep],
            estimate=scores.estimate[keep],
            actual=act,
            method=scores.method,
            target_name=target_name,
        )
        return disp.plot(ax=ax)

    def plot(self, ax=None):
        """Draw grouped bars; returns the display.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure when ``None``.

        Returns
        -------
        display : GroupInfluenceDisplay
        """
        ax, fig = _axes(ax)
        series = {"first_order": self.first_order}
        if self.method != "first_order":
            series[self.method] = self.estimate
        if self.actual is not None:
            series["actual"] = np.where(np.isnan(self.actual), 0.0, self.actual)
        x = np.arange(len(self.groups))
        width = 0.8 / len(series)
        self.bars_ = {}
        for k, (name, values) in enumerate(series.items()):
            self.bars_[name] = ax.bar(
                x + (k - (len(series) - 1) / 2) * width,
                values,
                width,
                label=name.replace("_", "-"),
            )
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels(
            [str(g) for g in self.groups], rotation=45 if len(x) > 8 else 0
        )
        ax.set_xlabel("group")
        ax.set_ylabel(_ylabel(self.target_name))
        ax.legend()
        self.ax_, self.figure_ = ax, fig
        return self


class InteractionHeatmapDisplay:
    """Heatmap of the pairwise interactions among groups.

    ``matrix[g, h]`` is the interaction term :math:`P_g^\\top H_f P_h` in
    target units: the estimate for removing groups ``g`` and ``h`` together is
    the sum of their own estimates plus ``matrix[g, h]``. Positive: removing
    both raises the target more than the sum says.

    Parameters
    ----------
    matrix : ndarray of shape (n_groups, n_groups)
    groups : array-like of shape (n_groups,)
        Labels of the rows and columns.
    target_name : str, default=None

    Attributes
    ----------
    im_ : matplotlib AxesImage
    colorbar_ : matplotlib Colorbar
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from sklearn_groupinf.plotting import InteractionHeatmapDisplay
    >>> disp = InteractionHeatmapDisplay(np.array([[1.0, -0.5], [-0.5, 2.0]]),
    ...                                  groups=["a", "b"]).plot()
    >>> disp.im_.get_array().tolist()
    [[1.0, -0.5], [-0.5, 2.0]]
    """

    def __init__(self, matrix, *, groups, target_name=None):
        self.matrix = np.asarray(matrix, dtype=float)
        self.groups = np.asarray(groups)
        self.target_name = target_name

    @classmethod
    def from_estimator(
        cls, estimator, groups, *, method=None, include_diagonal=True, ax=None
    ):
        """Interactions among the groups of a fitted ``GroupInfluence``.

        Parameters
        ----------
        estimator : GroupInfluence
            Fitted.
        groups : array-like of shape (n_samples,)
            Group label of each training example.
        method : {"interaction", "second_order"}, default=None
            Pairwise form (see ``GroupInfluence.interaction_matrix``).
        include_diagonal : bool, default=True
            Passed to :meth:`plot`.
        ax : matplotlib Axes, default=None

        Returns
        -------
        display : InteractionHeatmapDisplay
        """
        K = estimator.interaction_matrix(groups, method=method, form="dense")
        labels = np.unique(np.asarray(groups))
        disp = cls(K, groups=labels, target_name=estimator.target_name_)
        return disp.plot(ax=ax, include_diagonal=include_diagonal)

    def plot(self, ax=None, *, include_diagonal=True, cmap="RdBu_r"):
        """Draw the matrix with a symmetric colour scale; returns the display.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
        include_diagonal : bool, default=True
            ``False`` leaves the diagonal blank (``K[g, g]`` is part of the
            group's own estimate and often dominates the colour scale), so
            the pairs stand out.
        cmap : str, default="RdBu_r"

        Returns
        -------
        display : InteractionHeatmapDisplay
        """
        ax, fig = _axes(ax)
        shown = self.matrix.copy()
        if not include_diagonal:
            np.fill_diagonal(shown, np.nan)
        vmax = float(np.nanmax(np.abs(shown))) if np.isfinite(shown).any() else 0.0
        vmax = vmax or 1.0
        self.im_ = ax.imshow(shown, cmap=cmap, vmin=-vmax, vmax=vmax)
        labels = [str(g) for g in self.groups]
        ax.set_xticks(np.arange(len(labels)))
        ax.set_xticklabels(labels, rotation=45 if len(labels) > 8 else 0)
        ax.set_yticks(np.arange(len(labels)))
        ax.set_yticklabels(labels)
        ax.set_xlabel("group")
        ax.set_ylabel("group")
        self.colorbar_ = fig.colorbar(self.im_, ax=ax)
        self.colorbar_.set_label(f"interaction ({self.target_name or 'target'} units)")
        self.ax_, self.figure_ = ax, fig
        return self


class SelectionPathDisplay:
    """Estimated (and measured) target change along a greedy selection.

    Parameters
    ----------
    estimates : array-like of shape (n_steps,)
        Estimated change of the target after each step (the selected prefix),
        in target units.
    actual : array-like of shape (n_steps,), default=None
        Measured change after refitting without each prefix (``NaN`` where
        not measured); drawn as markers.
    label : str, default=None
        Legend label of the estimated path.
    target_name : str, default=None

    Attributes
    ----------
    steps : ndarray of shape (n_steps + 1,)
        ``0, 1, ..., n_steps`` (the path starts at 0 change).
    line_ : matplotlib Line2D
        The estimated path (its data are ``steps`` and ``[0, *estimates]``).
    actual_line_ : matplotlib Line2D or None
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn_groupinf.plotting import SelectionPathDisplay
    >>> disp = SelectionPathDisplay([-0.1, -0.15, -0.18]).plot()
    >>> disp.line_.get_ydata().tolist()
    [0.0, -0.1, -0.15, -0.18]
    """

    def __init__(self, estimates, *, actual=None, label=None, target_name=None):
        self.estimates = np.asarray(estimates, dtype=float)
        self.actual = None if actual is None else np.asarray(actual, dtype=float)
        self.label = label
        self.target_name = target_name
        self.steps = np.arange(len(self.estimates) + 1)

    @classmethod
    def from_estimator(
        cls, estimator, budget, *, actual=None, ax=None, **select_params
    ):
        """Run ``estimator.select(budget, **select_params)`` and plot its path.

        Parameters
        ----------
        estimator : GroupInfluence
            Fitted.
        budget : int or float
            Passed to ``select``.
        actual : array-like of shape (n_steps,), default=None
        ax : matplotlib Axes, default=None
        **select_params
            ``groups``, ``goal``, ``action``, ``method``, ... of ``select``.

        Returns
        -------
        display : SelectionPathDisplay
        """
        selection = estimator.select(budget, **select_params)
        return cls.from_selection(
            selection, actual=actual, target_name=estimator.target_name_, ax=ax
        )

    @classmethod
    def from_selection(cls, selection, *, actual=None, target_name=None, ax=None):
        """Plot a :class:`~sklearn_groupinf.Selection` (``select`` output).

        Parameters
        ----------
        selection : Selection
        actual : array-like of shape (n_steps,), default=None
        target_name : str, default=None
        ax : matplotlib Axes, default=None

        Returns
        -------
        display : SelectionPathDisplay
        """
        label = f"{selection.method} ({selection.action}, {selection.goal})"
        return cls(
            selection.estimates, actual=actual, label=label, target_name=target_name
        ).plot(ax=ax)

    def plot(self, ax=None, **line_kw):
        """Draw the path (and measured points); returns the display.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Pass the same axes to overlay several paths.
        **line_kw
            Passed to ``ax.plot`` for the estimated path.

        Returns
        -------
        display : SelectionPathDisplay
        """
        ax, fig = _axes(ax)
        y = np.concatenate([[0.0], self.estimates])
        (self.line_,) = ax.plot(
            self.steps, y, marker=".", label=self.label or "estimated", **line_kw
        )
        self.actual_line_ = None
        if self.actual is not None:
            (self.actual_line_,) = ax.plot(
                self.steps,
                np.concatenate([[0.0], self.actual]),
                "o",
                color=self.line_.get_color(),
                alpha=0.7,
                label=f"{self.label or 'estimated'}: actual",
            )
        ax.set_xlabel("number of units selected")
        if self.target_name or not ax.get_ylabel():
            ax.set_ylabel(f"change of {self.target_name or 'target'}")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.legend()
        self.ax_, self.figure_ = ax, fig
        return self
