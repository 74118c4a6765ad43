"""Greedy selection: brute force, top-k, operators, candidates, rounds, errors."""

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import log_loss

from sklearn_groupinf import GroupInfluence
from sklearn_groupinf._interaction import (
    InteractionOperator,
    dense_from_factors,
    make_interaction,
)
from sklearn_groupinf._selection import (
    greedy_refined,
    greedy_select,
    quadratic_estimate,
)


def _random_problem(n, r, seed, indefinite=False):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, r))
    M = rng.normal(size=(r, r))
    M = M @ M.T if not indefinite else M + M.T
    return rng.normal(size=n), A, M


def _brute_force_greedy(b, K, k, direction):
    """The same greedy rule, each step by direct evaluation of est(S + {j})."""
    S, path = [], []
    est = lambda idx: b[idx].sum() + 0.5 * K[np.ix_(idx, idx)].sum()
    for _ in range(k):
        cands = [j for j in range(len(b)) if j not in S]
        vals = [direction * est(S + [j]) for j in cands]
        j = cands[int(np.argmin(vals))]
        S.append(j)
        path.append(est(S))
    return S, path


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("goal", ["decrease", "increase"])
@pytest.mark.parametrize("form", ["dense", "implicit"])
def test_greedy_equals_brute_force(seed, goal, form):
    b, A, M = _random_problem(9, 3, seed, indefinite=seed % 2 == 1)
    op = make_interaction(A, M, form=form)
    K = A @ M @ A.T
    order, est = greedy_select(b, op, 5, goal=goal)
    S, path = _brute_force_greedy(b, K, 5, 1.0 if goal == "decrease" else -1.0)
    assert order.tolist() == S
    np.testing.assert_allclose(est, path, rtol=1e-10)
    # the estimates are the quadratic estimate of each prefix set
    for t in range(1, 6):
        assert est[t - 1] == pytest.approx(
            quadratic_estimate(b, op, order[:t]), rel=1e-10
        )


def test_zero_interaction_is_top_k():
    b = np.random.default_rng(0).normal(size=50)
    order, est = greedy_select(b, None, 10, goal="decrease")
    np.testing.assert_array_equal(order, np.argsort(b)[:10])
    np.testing.assert_allclose(est, np.cumsum(np.sort(b)[:10]))
    order, _ = greedy_select(b, None, 10, goal="increase")
    np.testing.assert_array_equal(order, np.argsort(-b)[:10])


def test_stop_early_stops_when_nothing_improves():
    b = np.array([-3.0, -1.0, 2.0, 5.0])
    order, est = greedy_select(b, None, 4, goal="decrease", stop_early=True)
    assert order.tolist() == [0, 1]
    order, est = greedy_select(b, None, 4, goal="decrease")
    assert order.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("indefinite", [False, True])
def test_dense_and_implicit_operators_agree(indefinite):
    b, A, M = _random_problem(300, 12, 1, indefinite=indefinite)
    K = A @ M @ A.T
    dense = make_interaction(A, M, form="dense", tile_size=37)
    implicit = make_interaction(A, M, form="implicit")
    assert isinstance(implicit, InteractionOperator) and implicit.form == "implicit"
    np.testing.assert_allclose(dense.K, K, rtol=1e-10, atol=1e-10 * np.abs(K).max())
    np.testing.assert_allclose(implicit.diag(), np.diag(K), rtol=1e-10)
    np.testing.assert_allclose(implicit.column(5), K[:, 5], rtol=1e-10, atol=1e-12)
    for goal in ("decrease", "increase"):
        o1, e1 = greedy_select(b, dense, 40, goal=goal)
        o2, e2 = greedy_select(b, implicit, 40, goal=goal)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_allclose(e1, e2, rtol=1e-9)


def test_dense_build_does_not_depend_on_tile_size():
    rng = np.random.default_rng(2)
    W, sigma = rng.normal(size=(257, 9)), np.sign(rng.normal(size=9))
    ref = dense_from_factors(W, sigma, tile_size=1000)
    for tile in (1, 16, 100, 256):  # equal up to BLAS summation order
        np.testing.assert_allclose(
            dense_from_factors(W, sigma, tile_size=tile),
            ref,
            rtol=1e-13,
            atol=1e-13 * np.abs(ref).max(),
        )
    K32 = dense_from_factors(W, sigma, dtype="float32")
    assert K32.dtype == np.float32
    np.testing.assert_allclose(K32, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.fixture(scope="module")
def gi(breast_cancer):
    X, y, Xt, yt = breast_cancer
    return GroupInfluence(LogisticRegression(C=0.5)).fit(X, y, X_target=Xt, y_target=yt)


def test_select_matches_pure_greedy_and_groups(gi):
    sel = gi.select(20)
    K = gi.interaction_matrix()
    S, path = _brute_force_greedy(gi.influence_, K, 20, 1.0)
    assert sel.indices.tolist() == S
    np.testing.assert_allclose(sel.estimates, path, rtol=1e-9)
    first = gi.select(20, method="first_order")
    np.testing.assert_array_equal(first.indices, np.argsort(gi.influence_)[:20])
    # group selection: groups in greedy order, rows of those groups
    groups = np.arange(len(gi.influence_)) % 15
    gsel = gi.select(4, groups=groups, method="interaction")
    res = gi.score_groups(groups, method="interaction")
    assert gsel.estimates[0] == pytest.approx(res.estimate.min(), rel=1e-9)
    assert set(gsel.indices) == set(np.flatnonzero(np.isin(groups, gsel.groups)))
    # fractions of the pool
    assert len(gi.select(0.05).indices) == int(0.05 * len(gi.influence_))


def test_select_increase_is_robustness_audit(gi):
    sel = gi.select(10, goal="increase")
    assert np.all(np.diff(sel.estimates) > 0)
    assert sel.estimates[0] == pytest.approx(
        (gi.influence_ + 0.5 * np.diag(gi.interaction_matrix())).max(), rel=1e-9
    )


def test_interaction_avoids_redundant_duplicates():
    """Exact duplicates: first-order picks both copies, interaction-aware spreads."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int)
    y[:10] = 1 - y[:10]  # ten harmful flipped rows...
    X = np.vstack([X, np.repeat(X[:3], 6, axis=0)])  # ...three of them x7 copies
    y = np.concatenate([y, np.repeat(y[:3], 6)])
    Xt = rng.normal(size=(300, 5))
    yt = (Xt[:, 0] > 0).astype(int)
    gi = GroupInfluence(LogisticRegression(C=1.0)).fit(X, y, X_target=Xt, y_target=yt)
    est = lambda idx: _refit_loss(X, y, Xt, yt, idx) - gi.target_value_
    first = gi.select(8, method="first_order").indices
    inter = gi.select(8).indices
    # the interaction-aware pick is measured better (lower held-out loss)
    assert est(inter) < est(first)


def _refit_loss(X, y, Xt, yt, drop):
    keep = np.setdiff1d(np.arange(len(y)), drop)
    m = LogisticRegression(C=1.0, tol=1e-10, max_iter=5000).fit(X[keep], y[keep])
    return log_loss(yt, m.predict_proba(Xt))


def test_add_candidate_estimates_agree_with_refits(breast_cancer):
    """Adding one candidate: estimate vs refit with the candidate added.

    Measured on this split (50 candidates): Pearson 0.991 (first order) and
    0.995 (interaction), median relative error 1.0 % and 0.8 %.
    """
    X, y, Xt, yt = breast_cancer
    Xtr, ytr, Xc, yc = X[:200], y[:200], X[200:], y[200:]
    est = LogisticRegression(C=0.5, solver="newton-cholesky", tol=1e-12)
    gi = GroupInfluence(clone(est)).fit(Xtr, ytr, X_target=Xt, y_target=yt)
    first, inter, actual = [], [], []
    for j in range(0, 200, 4):
        kw = dict(action="add", X_candidates=Xc[j : j + 1], y_candidates=yc[j : j + 1])
        first.append(gi.select(1, method="first_order", **kw).estimates[0])
        inter.append(gi.select(1, **kw).estimates[0])
        m = clone(est).fit(np.vstack([Xtr, Xc[j : j + 1]]), np.r_[ytr, yc[j]])
        actual.append(log_loss(yt, m.predict_proba(Xt)) - gi.target_value_)
    first, inter, actual = map(np.asarray, (first, inter, actual))
    rel = lambda e: np.median(np.abs(e - actual) / np.abs(actual))
    assert np.corrcoef(inter, actual)[0, 1] > 0.99
    assert rel(inter) < 0.02
    assert rel(inter) < rel(first)
    # the sign convention: adding a helpful candidate lowers the target
    best = gi.select(1, action="add", X_candidates=Xc, y_candidates=yc)
    m = clone(est).fit(np.vstack([Xtr, Xc[best.indices]]), np.r_[ytr, yc[best.indices]])
    assert best.estimates[0] < 0
    assert log_loss(yt, m.predict_proba(Xt)) < gi.target_value_


def test_upweighting_equals_adding_a_copy(breast_cancer):
    X, y, Xt, yt = breast_cancer
    gi = GroupInfluence(LogisticRegression(C=0.5)).fit(X, y, X_target=Xt, y_target=yt)
    a = gi.select(5, action="add")
    b = gi.select(5, action="add", X_candidates=X, y_candidates=y)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.estimates, b.estimates, rtol=1e-9)


def test_rounds_refit_between_slices(breast_cancer):
    X, y, Xt, yt = breast_cancer
    est = LogisticRegression(C=0.5)
    gi = GroupInfluence(est).fit(X, y, X_target=Xt, y_target=yt)
    sel = gi.select(30, n_rounds=3)
    assert len(sel.indices) == 30 == len(np.unique(sel.indices))
    assert sel.round.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    assert len(sel.measured) == 4 and sel.measured[0] == gi.target_value_
    # measured after round 1 = refit without the first 10 picks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = GroupInfluence(est).fit(
            np.delete(X, sel.indices[:10], axis=0),
            np.delete(y, sel.indices[:10]),
            X_target=Xt,
            y_target=yt,
        )
    assert sel.measured[1] == pytest.approx(ref.target_value_, rel=1e-8)
    # round 2's first pick is the one-shot pick of the refitted model
    assert (
        sel.indices[10]
        == np.delete(np.arange(len(y)), sel.indices[:10])[ref.select(1).indices[0]]
    )
    # add with rounds
    sel = gi.select(
        6, action="add", X_candidates=Xt[:50], y_candidates=yt[:50], n_rounds=2
    )
    assert len(np.unique(sel.indices)) == 6 and np.all(sel.indices < 50)


def test_selection_bad_input(gi, breast_cancer):
    X, y, Xt, yt = breast_cancer
    n = len(gi.influence_)
    with pytest.raises(ValueError, match="larger than the pool"):
        gi.select(n + 1)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="budget must be >= 1"):
            gi.select(bad)
    with pytest.raises(ValueError, match=r"fractional budget must be in \(0, 1\]"):
        gi.select(1.5)
    with pytest.raises(ValueError, match="X_candidates does not match.*29 features"):
        gi.select(2, action="add", X_candidates=Xt[:, 1:], y_candidates=yt)
    with pytest.raises(ValueError, match="selects groups to remove"):
        gi.select(3, method="newton")
    with pytest.raises(ValueError, match="goal must be"):
        gi.select(3, goal="down")
    with pytest.raises(ValueError, match="action must be"):
        gi.select(3, action="drop")
    with pytest.raises(ValueError, match="n_rounds"):
        gi.select(3, n_rounds=0)
    with pytest.raises(MemoryError, match="max_dense_bytes"):
        make_interaction(
            np.ones((5000, 2)), np.eye(2), form="dense", max_dense_bytes=10**6
        )


def test_ridge_selection_runs_with_implicit_form(concrete):
    X, y, Xt, yt = concrete
    gi = GroupInfluence(Ridge(), interaction="implicit").fit(
        X, y, X_target=Xt, y_target=yt
    )
    dense = (
        clone(gi).set_params(interaction="dense").fit(X, y, X_target=Xt, y_target=yt)
    )
    a, b = gi.select(25), dense.select(25)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.estimates, b.estimates, rtol=1e-9)


def test_upweighting_with_rounds_maps_to_training_rows(breast_cancer):
    """Regression: add without candidates and n_rounds > 1 (copies re-selectable)."""
    X, y, Xt, yt = breast_cancer
    gi = GroupInfluence(LogisticRegression(C=0.5)).fit(
        X[:100], y[:100], X_target=Xt, y_target=yt
    )
    sel = gi.select(40, action="add", n_rounds=2)
    assert len(sel.indices) == 40
    assert sel.indices.min() >= 0 and sel.indices.max() < 100
    # the first round is the one-shot selection of its slice
    np.testing.assert_array_equal(sel.indices[:20], gi.select(20, action="add").indices)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("goal", ["decrease", "increase"])
def test_refined_greedy_on_the_quadratic_is_the_pairwise_greedy(seed, goal):
    """Checking every unit exactly with the quadratic estimate itself is the
    pairwise greedy rule (brute force of each step); checking fewer units may
    only choose among the pairwise top ones."""
    b, A, M = _random_problem(9, 3, seed, indefinite=seed % 2 == 1)
    op = make_interaction(A, M, form="dense")
    K = A @ M @ A.T
    quad = lambda idx: quadratic_estimate(b, op, idx)  # noqa: E731
    order, est = greedy_refined(b, op, 5, quad, goal=goal, n_check=9)
    S, path = _brute_force_greedy(b, K, 5, 1.0 if goal == "decrease" else -1.0)
    assert order.tolist() == S
    np.testing.assert_allclose(est, path, rtol=1e-10)
    order1, _ = greedy_refined(b, op, 5, quad, goal=goal, n_check=1)
    np.testing.assert_array_equal(order1, greedy_select(b, op, 5, goal=goal)[0])


def _refit_mse(X, y, Xt, yt, keep, alpha):
    pred = Ridge(alpha=alpha).fit(X[keep], y[keep]).predict(Xt)
    return float(np.mean((pred - yt) ** 2))


@pytest.mark.parametrize("goal", ["decrease", "increase"])
def test_newton_group_selection_against_brute_force_refits(concrete, goal):
    """Tiny pool (6 groups), least squares: the group-Newton estimate of a set
    is its exact refit, so greedy newton selection must follow the greedy path
    of brute-force refits of every candidate set, with refit-exact estimates."""
    X, y, Xt, yt = concrete
    X, y = X[:240], y[:240]
    alpha = 2.0
    gi = GroupInfluence(Ridge(alpha=alpha)).fit(X, y, X_target=Xt, y_target=yt)
    groups = np.arange(len(y)) % 6
    f0 = _refit_mse(X, y, Xt, yt, np.ones(len(y), bool), alpha)

    def change(S):  # exact refit without the groups S
        return _refit_mse(X, y, Xt, yt, ~np.isin(groups, S), alpha) - f0

    direction = 1.0 if goal == "decrease" else -1.0
    S, path = [], []
    for _ in range(3):  # brute-force greedy over all remaining groups
        cands = [g for g in range(6) if g not in S]
        vals = [change(S + [g]) for g in cands]
        S.append(cands[int(np.argmin(direction * np.asarray(vals)))])
        path.append(change(S))
    sel = gi.select(3, groups=groups, goal=goal, method="newton")
    assert sel.method == "newton"
    assert sel.groups.tolist() == S
    np.testing.assert_allclose(sel.estimates, path, rtol=1e-7)
    # the default (auto) uses newton for a pool this small
    auto = gi.select(3, groups=groups, goal=goal)
    assert auto.method == "newton"
    assert auto.groups.tolist() == S


def test_newton_selection_of_one_hot_levels_matches_its_refit():
    """Groups = levels of a one-hot encoded feature (each level's rows carry
    all the curvature of its indicator): greedy newton selection's estimate
    matches the refit without the chosen levels, and that refit lowers the
    target as intended."""
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(0)
    n, n_levels = 1200, 12
    level = rng.integers(0, n_levels, size=n)
    Z = rng.normal(size=(n, 6))
    logit = Z @ rng.normal(size=6) + rng.normal(size=n_levels)[level]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    X = np.hstack([Z, np.eye(n_levels)[level]])
    X, Xt, y, yt, level = X[:600], X[600:], y[:600], y[600:], level[:600]
    gi = GroupInfluence(LogisticRegression()).fit(X, y, X_target=Xt, y_target=yt)
    sel = gi.select(3, groups=level, method="newton")
    keep = ~np.isin(level, sel.groups)
    refit = LogisticRegression(tol=1e-12, max_iter=10_000).fit(X[keep], y[keep])
    full = LogisticRegression(tol=1e-12, max_iter=10_000).fit(X, y)
    actual = log_loss(yt, refit.predict_proba(Xt)) - log_loss(
        yt, full.predict_proba(Xt)
    )
    assert actual < 0
    assert sel.estimates[-1] == pytest.approx(actual, rel=0.05)
