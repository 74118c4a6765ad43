"""Display objects carry, and draw, the values they are given."""

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from sklearn_groupinf import GroupInfluence  # noqa: E402
from sklearn_groupinf.plotting import (  # noqa: E402
    GroupInfluenceDisplay,
    InteractionHeatmapDisplay,
    SelectionPathDisplay,
)


@pytest.fixture(scope="module")
def fitted(breast_cancer):
    X, y, Xt, yt = breast_cancer
    gi = GroupInfluence(LogisticRegression(C=0.5)).fit(X, y, X_target=Xt, y_target=yt)
    groups = np.arange(len(y)) % 6
    return gi, groups


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def heights(bars):
    return np.array([b.get_height() for b in bars])


def test_group_influence_bars_are_the_scores(fitted):
    gi, groups = fitted
    scores = gi.score_groups(groups, method="interaction")
    actual = np.full(6, np.nan)
    actual[[0, 3]] = [0.01, -0.02]
    disp = GroupInfluenceDisplay.from_estimator(
        gi, groups, method="interaction", actual=actual
    )
    assert isinstance(disp, GroupInfluenceDisplay)
    np.testing.assert_array_equal(disp.groups, scores.groups)
    np.testing.assert_allclose(heights(disp.bars_["first_order"]), scores.first_order)
    np.testing.assert_allclose(heights(disp.bars_["interaction"]), scores.estimate)
    np.testing.assert_allclose(heights(disp.bars_["actual"]), [0.01, 0, 0, -0.02, 0, 0])
    assert disp.ax_.figure is disp.figure_
    assert [t.get_text() for t in disp.ax_.get_xticklabels()] == list("012345")
    assert "log_loss" in disp.ax_.get_ylabel()
    assert [t.get_text() for t in disp.ax_.get_legend().get_texts()] == [
        "first-order",
        "interaction",
        "actual",
    ]


def test_group_influence_top_keeps_largest_and_uses_given_axes(fitted):
    gi, groups = fitted
    scores = gi.score_groups(groups, method="second_order")
    fig, ax = plt.subplots()
    disp = GroupInfluenceDisplay.from_scores(scores, top=2, ax=ax)
    assert disp.ax_ is ax and disp.figure_ is fig
    big = np.sort(np.argsort(-np.abs(scores.estimate))[:2])
    np.testing.assert_allclose(
        heights(disp.bars_["second_order"]), scores.estimate[big]
    )
    assert "actual" not in disp.bars_


def test_interaction_heatmap_image_is_the_matrix(fitted):
    gi, groups = fitted
    K = gi.interaction_matrix(groups, form="dense")
    disp = InteractionHeatmapDisplay.from_estimator(gi, groups)
    np.testing.assert_allclose(disp.matrix, K)
    np.testing.assert_allclose(np.asarray(disp.im_.get_array()), K)
    vmin, vmax = disp.im_.get_clim()
    assert vmin == -vmax == -np.abs(K).max()
    off = InteractionHeatmapDisplay(K, groups=disp.groups).plot(include_diagonal=False)
    drawn = np.ma.filled(off.im_.get_array().astype(float), np.nan)
    assert np.isnan(np.diag(drawn)).all()
    mask = ~np.eye(len(K), dtype=bool)
    np.testing.assert_allclose(drawn[mask], K[mask])
    assert off.im_.get_clim()[1] == np.abs(K[mask]).max()
    # pairwise identity: est(g and h) = est(g) + est(h) + K[g, h]
    s = gi.score_groups(groups, method="interaction").estimate
    both = gi.score_groups(
        np.where(np.isin(groups, [1, 4]), 1, groups), method="interaction"
    )
    i = list(both.groups).index(1)
    assert both.estimate[i] == pytest.approx(s[1] + s[4] + disp.matrix[1, 4], rel=1e-8)


def test_selection_path_lines_carry_estimates(fitted):
    gi, groups = fitted
    sel = gi.select(5, method="interaction")
    disp = SelectionPathDisplay.from_estimator(
        gi, 5, method="interaction", actual=np.linspace(-1, -5, 5)
    )
    np.testing.assert_allclose(disp.estimates, sel.estimates)
    np.testing.assert_allclose(
        disp.line_.get_ydata(), np.concatenate([[0], sel.estimates])
    )
    np.testing.assert_array_equal(disp.line_.get_xdata(), np.arange(6))
    np.testing.assert_allclose(
        disp.actual_line_.get_ydata()[1:], np.linspace(-1, -5, 5)
    )
    # overlay a second path on the same axes
    first = SelectionPathDisplay.from_selection(
        gi.select(5, method="first_order"), ax=disp.ax_
    )
    # 2 paths + measured points + a zero line per plot call
    assert first.ax_ is disp.ax_ and len(disp.ax_.get_lines()) == 5
    assert first.actual_line_ is None
    assert "log_loss" in disp.ax_.get_ylabel()  # kept by the overlay


def test_group_influence_accepts_leave_group_out_result(fitted, breast_cancer):
    from sklearn_groupinf.evaluation import leave_group_out

    gi, groups = fitted
    X, y, Xt, yt = breast_cancer
    refits = leave_group_out(
        LogisticRegression(C=0.5), X, y, groups, X_target=Xt, y_target=yt
    )
    disp = GroupInfluenceDisplay.from_estimator(gi, groups, actual=refits)
    np.testing.assert_allclose(heights(disp.bars_["actual"]), refits.actual)
    with pytest.raises(ValueError, match="other groups"):
        GroupInfluenceDisplay.from_estimator(gi, groups % 3, actual=refits)
