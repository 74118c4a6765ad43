"""Result containers returned by ``score_groups`` and ``select``."""

import numpy as np
from sklearn.utils import Bunch


class _FrameBunch(Bunch):
    """A ``Bunch`` of aligned 1-D arrays that converts to a pandas DataFrame."""

    _columns = ()

    def to_frame(self):
        """Return the aligned arrays as a ``pandas.DataFrame`` (needs pandas)."""
        import pandas as pd

        return pd.DataFrame({c: self[c] for c in self._columns if c in self})

    def __repr__(self):
        cols = ", ".join(c for c in self._columns if c in self)
        n = (
            len(self[self._columns[0]])
            if self._columns and self._columns[0] in self
            else 0
        )
        return f"{type(self).__name__}(n={n}, columns=[{cols}], method={self.method!r})"


class GroupScores(_FrameBunch):
    """Estimated change of the target when each group is removed.

    Keys (aligned arrays of length ``n_groups``, sorted by group label):

    - ``groups``: the group labels;
    - ``size``: number of training examples in each group;
    - ``first_order``: sum of the members' first-order influences;
    - ``estimate``: the estimate of ``method`` (equal to ``first_order`` for
      ``method="first_order"``);
    - ``reliable``: ``False`` where the estimate is outside the regime of its
      expansion, judged without refitting: the group carries nearly all of the
      curvature along some direction (``lambda_max(H^-1 H_S) > 0.95``), or
      the ``newton`` estimate (for ``newton`` itself, ``interaction``)
      differs from it by more than its own size. Backends without group
      Hessians (matrix-free torch models) compare ``interaction`` with
      ``first_order`` instead (flagged when they differ by more than half
      the estimate; ``first_order``: by more than 0.3 of it), a coarser rule;
    - ``method``: the estimator used (a string).

    Every score is the estimated change of the target, in the target's units,
    when the group is removed (positive: removal raises the target).
    ``to_frame()`` returns a pandas DataFrame.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn_groupinf import GroupInfluence
    >>> X, y = load_diabetes(return_X_y=True)
    >>> gi = GroupInfluence(Ridge(alpha=1.0)).fit(X[:300], y[:300],
    ...                                           X_target=X[300:], y_target=y[300:])
    >>> res = gi.score_groups(np.arange(300) % 3, method="interaction")
    >>> res.method, list(res.keys())[:5]
    ('interaction', ['groups', 'size', 'first_order', 'estimate', 'reliable'])
    >>> res.size
    array([100, 100, 100])
    >>> # interaction = first order + the pairwise term (target units: MSE)
    >>> bool(np.all(res.estimate != res.first_order))
    True
    >>> res.reliable        # no group is outside the regime of the expansion
    array([ True,  True,  True])
    >>> res.to_frame().columns.tolist()
    ['groups', 'size', 'first_order', 'estimate', 'reliable']
    """

    _columns = (
        "groups",
        "size",
        "first_order",
        "interaction",
        "second_order",
        "newton",
        "estimate",
        "reliable",
    )


class Selection(_FrameBunch):
    """Greedy selection result.

    Keys:

    - ``indices``: selected training rows (or candidate rows for
      ``action="add"``) in greedy order; for group selection the rows of the
      selected groups;
    - ``groups``: selected group labels in greedy order (group selection only);
    - ``estimates``: estimated change of the target after each step (the
      estimate of the prefix set), in the target's units;
    - ``round``: the adaptive round in which each unit was selected;
    - ``measured``: target value measured after refitting at the end of each
      round (``n_rounds > 1``), with ``measured[0]`` the initial target value;
    - ``method``, ``action``, ``goal``.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn_groupinf import GroupInfluence
    >>> X, y = load_diabetes(return_X_y=True)
    >>> gi = GroupInfluence(Ridge(alpha=1.0)).fit(X[:300], y[:300],
    ...                                           X_target=X[300:], y_target=y[300:])
    >>> sel = gi.select(5, goal="decrease")
    >>> sel
    Selection(n_selected=5, action='remove', goal='decrease', method='interaction')
    >>> len(sel.indices), len(sel.estimates)
    (5, 5)
    >>> # removing the five rows is estimated to lower the validation MSE
    >>> bool(sel.estimates[-1] < 0)
    True
    >>> sel.to_frame().columns.tolist()
    ['step', 'unit', 'estimate', 'round']
    """

    _columns = ("unit", "estimates", "round")

    def to_frame(self):
        import pandas as pd

        unit = self["groups"] if "groups" in self else self["indices"]
        return pd.DataFrame(
            {
                "step": np.arange(1, len(self["estimates"]) + 1),
                "unit": unit,
                "estimate": self["estimates"],
                "round": self["round"],
            }
        )

    def __repr__(self):
        n = len(self["estimates"])
        return (
            f"Selection(n_selected={n}, action={self.action!r}, "
            f"goal={self.goal!r}, method={self.method!r})"
        )
