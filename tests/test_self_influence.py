"""GroupInfluence.self_influence against closed forms and exact refits.

Self-influence is the first-order rise of a unit's own loss when the unit is
removed, in the units of the estimator's usual metric for one example
(log-loss, squared error, deviance). References:

* Ridge: with the hat matrix ``h = X~ (X~'SX~ + D)^{-1} X~'`` (``D`` the
  penalty, intercept unpenalised) and residuals ``r``, the squared error
  rises by ``sigma_i = 2 s_i h_ii r_i^2`` and, for a group, ``sigma_S =
  2 r_S' S_S h_SS S_S r_S`` (objective ``1/2 sum s_i r_i^2 + alpha/2
  ||w||^2``). The exact leave-one-out residual ``r_i / (1 - h_ii)`` (unit
  weights) gives the exact rise ``r_i^2 ((1 - h_ii)^{-2} - 1)``, checked
  against refits.
* LogisticRegression and PoissonRegressor: leave-one-out / leave-group-out
  refits with a tight tolerance, own loss evaluated independently.
"""

import numpy as np
import pytest
from scipy.special import expit
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression, PoissonRegressor, Ridge

from sklearn_groupinf import GroupInfluence


def _ridge_data(n=80, d=4, seed=0):
    X, y = make_regression(n_samples=n, n_features=d, noise=10.0, random_state=seed)
    return X, y / 10.0 + 3.0


def _ridge_closed_form(X, y, alpha, s):
    Xt = np.hstack([X, np.ones((len(X), 1))])
    D = np.diag([alpha] * X.shape[1] + [0.0])
    A = Xt.T @ (s[:, None] * Xt) + D
    theta = np.linalg.solve(A, Xt.T @ (s * y))
    r = y - Xt @ theta
    hat = Xt @ np.linalg.solve(A, Xt.T)
    return r, hat


@pytest.mark.parametrize("weighted", [False, True])
def test_ridge_examples_closed_form(weighted):
    X, y = _ridge_data()
    alpha = 2.0
    s = np.random.default_rng(1).uniform(0.5, 2.0, len(y)) if weighted else None
    gi = GroupInfluence(Ridge(alpha=alpha)).fit(X, y, sample_weight=s)
    sw = np.ones(len(y)) if s is None else s
    r, hat = _ridge_closed_form(X, y, alpha, sw)
    expected = 2 * sw * np.diag(hat) * r**2
    sigma = gi.self_influence()
    np.testing.assert_allclose(sigma, expected, rtol=1e-9, atol=1e-12 * expected.max())
    assert np.all(sigma >= 0)


def test_ridge_examples_against_refits():
    """Exact LOO refits: exact / sigma = (1 - h/2) / (1 - h)^2 for every row."""
    X, y = _ridge_data(n=60)
    alpha = 1.0
    gi = GroupInfluence(Ridge(alpha=alpha)).fit(X, y)
    sigma = gi.self_influence()
    r, hat = _ridge_closed_form(X, y, alpha, np.ones(len(y)))
    h = np.diag(hat)
    actual = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        m = Ridge(alpha=alpha).fit(X[keep], y[keep])
        r_new = y[i] - m.predict(X[i : i + 1])[0]
        actual[i] = r_new**2 - r[i] ** 2
    np.testing.assert_allclose(actual, r**2 * ((1 - h) ** -2 - 1), rtol=1e-8)
    np.testing.assert_allclose(actual / sigma, (1 - h / 2) / (1 - h) ** 2, rtol=1e-7)
    assert np.corrcoef(sigma, actual)[0, 1] > 0.99


def test_ridge_groups_closed_form_and_refits():
    X, y = _ridge_data(n=90)
    alpha = 1.0
    groups = np.arange(len(y)) % 9
    gi = GroupInfluence(Ridge(alpha=alpha)).fit(X, y)
    sigma = gi.self_influence(groups=groups)
    r, hat = _ridge_closed_form(X, y, alpha, np.ones(len(y)))
    expected, actual = [], []
    for g in range(9):
        S = np.flatnonzero(groups == g)
        expected.append(2 * r[S] @ hat[np.ix_(S, S)] @ r[S])
        keep = groups != g
        m = Ridge(alpha=alpha).fit(X[keep], y[keep])
        r_new = y[S] - m.predict(X[S])
        actual.append(r_new @ r_new - r[S] @ r[S])
    expected, actual = np.array(expected), np.array(actual)
    np.testing.assert_allclose(sigma, expected, rtol=1e-9)
    # exact leave-group-out: r_S -> (I - h_SS)^{-1} r_S
    for g in range(9):
        S = np.flatnonzero(groups == g)
        r_new = np.linalg.solve(np.eye(len(S)) - hat[np.ix_(S, S)], r[S])
        assert actual[g] == pytest.approx(r_new @ r_new - r[S] @ r[S])
    # sigma_S is the first term of the refit's series in h_SS:
    # ||(I - h)^{-1} r||^2 - ||r||^2 = sum_k (k + 1) r' h^k r
    for g in range(9):
        S = np.flatnonzero(groups == g)
        hS = hat[np.ix_(S, S)]
        terms, v = [], r[S]
        for k in range(1, 200):
            v = hS @ v
            terms.append((k + 1) * r[S] @ v)
        assert terms[0] == pytest.approx(sigma[g], rel=1e-9)
        assert sum(terms) == pytest.approx(actual[g], rel=1e-8)
    assert np.corrcoef(sigma, actual)[0, 1] > 0.98
    # a group is not the sum of its members (cross terms)
    per_example = gi.self_influence()
    sums = np.bincount(groups, per_example)
    assert not np.allclose(sums, sigma, rtol=1e-3)


def _logistic_data(n=120, seed=0):
    X, y = make_classification(
        n_samples=n, n_features=4, n_informative=3, n_redundant=0, random_state=seed
    )
    return X, y


def _logloss(m, X, y):
    p = expit(m.decision_function(X))
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def test_logistic_examples_against_loo_refits():
    # first-order error is about 1.5 x the leverage (P / n = 5 / 300 here)
    X, y = _logistic_data(n=300)
    C = 0.5
    est = LogisticRegression(C=C, tol=1e-12, max_iter=10_000)
    gi = GroupInfluence(est).fit(X, y)
    sigma = gi.self_influence()
    assert np.all(sigma > 0)
    base = est.fit(X, y)
    own = _logloss(base, X, y)
    rows = np.arange(0, len(y), 6)
    actual = []
    for i in rows:
        keep = np.arange(len(y)) != i
        m = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(X[keep], y[keep])
        # in log-loss units, whatever C
        actual.append(_logloss(m, X[i : i + 1], y[i : i + 1])[0] - own[i])
    actual = np.array(actual)
    assert np.corrcoef(sigma[rows], actual)[0, 1] > 0.999
    rel = np.abs(sigma[rows] - actual) / np.abs(actual)
    assert np.median(rel) < 0.05


def test_logistic_groups_against_refits():
    """Groups of about 10 rows (3 % of n): first-order error about 5 %."""
    X, y = _logistic_data(n=300, seed=1)
    C, n_groups = 1.0, 30
    groups = np.random.default_rng(0).integers(0, n_groups, len(y))
    gi = GroupInfluence(LogisticRegression(C=C, tol=1e-12)).fit(X, y)
    sigma = gi.self_influence(groups=groups)
    base = LogisticRegression(C=C, tol=1e-12).fit(X, y)
    own = _logloss(base, X, y)
    actual = []
    for g in range(n_groups):
        S, keep = groups == g, groups != g
        m = LogisticRegression(C=C, tol=1e-12).fit(X[keep], y[keep])
        actual.append(_logloss(m, X[S], y[S]).sum() - own[S].sum())
    actual = np.array(actual)
    assert np.corrcoef(sigma, actual)[0, 1] > 0.999
    rel = np.abs(sigma - actual) / np.abs(actual)
    assert np.median(rel) < 0.1


def test_poisson_mean_form_against_refits():
    """Mean-form GLM: deviance units; q_i carries the penalty share."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 3))
    y = rng.poisson(np.exp(0.3 * X[:, 0] - 0.2 * X[:, 1] + 0.5))
    alpha = 0.05
    est = PoissonRegressor(alpha=alpha, tol=1e-12, max_iter=10_000)
    gi = GroupInfluence(est).fit(X, y)
    sigma = gi.self_influence()
    base = est.fit(X, y)

    def half_deviance(m, i):  # exp(z) - y z, up to a constant of y
        z = np.log(m.predict(X[i : i + 1])[0])
        return np.exp(z) - y[i] * z

    rows = np.arange(0, 100, 4)
    actual = []
    for i in rows:
        keep = np.arange(100) != i
        m = PoissonRegressor(alpha=alpha, tol=1e-12, max_iter=10_000)
        m.fit(X[keep], y[keep])
        actual.append(2 * (half_deviance(m, i) - half_deviance(base, i)))
    actual = np.array(actual)
    assert np.corrcoef(sigma[rows], actual)[0, 1] > 0.999
    rel = np.abs(sigma[rows] - actual) / np.abs(actual)
    assert np.median(rel) < 0.05


def test_multinomial_examples_against_loo_refits():
    X, y = make_classification(
        n_samples=120,
        n_features=4,
        n_informative=3,
        n_redundant=0,
        n_classes=3,
        n_clusters_per_class=1,
        random_state=0,
    )
    est = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000)
    gi = GroupInfluence(est).fit(X, y)
    sigma = gi.self_influence()
    base = est.fit(X, y)
    own = -np.log(base.predict_proba(X)[np.arange(len(y)), y])
    rows = np.arange(0, len(y), 4)
    actual = []
    for i in rows:
        keep = np.arange(len(y)) != i
        m = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(X[keep], y[keep])
        actual.append(-np.log(m.predict_proba(X[i : i + 1])[0, y[i]]) - own[i])
    actual = np.array(actual)
    assert np.corrcoef(sigma[rows], actual)[0, 1] > 0.999


@pytest.mark.parametrize(
    "make", [lambda: LogisticRegression(C=0.3), lambda: Ridge(alpha=2.0)]
)
def test_self_influence_is_the_influence_on_the_own_metric(make):
    """sigma_i = influence_[i] when the target is row i's own metric term."""
    X, y = _logistic_data(n=80, seed=3)
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    gi = GroupInfluence(make()).fit(X, y, sample_weight=w)
    sigma = gi.self_influence()
    for i in (0, 7, 41):
        e = np.zeros(len(y))
        e[i] = 1.0
        own = GroupInfluence(make()).fit(
            X, y, sample_weight=w, X_target=X, y_target=y, target_weight=e
        )
        assert sigma[i] == pytest.approx(own.influence_[i], rel=1e-8)


def test_self_influence_units_are_groups_sorted(breast_cancer):
    X, y, _, _ = breast_cancer
    gi = GroupInfluence(LogisticRegression()).fit(X, y)
    labels = np.array(["b", "a", "c", "a"] * 100)
    sigma = gi.self_influence(groups=labels)
    single = gi.self_influence(groups=np.where(labels == "a", 0, np.arange(400) + 1))
    assert sigma.shape == (3,)
    # group "a" (sorted first) equals the same rows scored as group 0
    assert sigma[0] == pytest.approx(single[0], rel=1e-12)
    with pytest.raises(ValueError, match="groups must have shape"):
        gi.self_influence(groups=labels[:-1])


@pytest.mark.torch
def test_torch_linear_matches_closed_form_and_sklearn(breast_cancer):
    """nn.Linear + BCE with weight decay 1/C equals LogisticRegression(C).

    The torch objective is the sklearn one divided by ``C``; both report
    log-loss units, so the scores agree; a numpy closed form checks both.
    """
    torch = pytest.importorskip("torch")
    from sklearn_groupinf.torch import TorchModel

    X, y, _, _ = breast_cancer
    X, y = X[:200], y[:200]
    C = 0.5
    gi_sk = GroupInfluence(LogisticRegression(C=C, tol=1e-12, max_iter=10_000))
    gi_sk.fit(X, y)
    torch.manual_seed(0)
    net = TorchModel(
        torch.nn.Linear(30, 1),
        loss="binary_cross_entropy",
        weight_decay=1 / C,
        decay_bias=False,
        device="cpu",
    )
    gi_t = GroupInfluence(net).fit(X, y)
    sigma_t = gi_t.self_influence()
    # closed form from the polished torch parameters (coefficients, intercept)
    theta = gi_t.theta_
    Xt = np.hstack([X, np.ones((len(X), 1))])
    p = expit(Xt @ theta)
    G = (p - y)[:, None] * Xt
    H = Xt.T @ ((p * (1 - p))[:, None] * Xt) + np.diag([1 / C] * 30 + [0.0])
    expected = np.einsum("ij,ij->i", G, np.linalg.solve(H, G.T).T)
    np.testing.assert_allclose(sigma_t, expected, rtol=1e-7)
    np.testing.assert_allclose(sigma_t, gi_sk.self_influence(), rtol=1e-6)
    groups = np.arange(200) % 6
    np.testing.assert_allclose(
        gi_t.self_influence(groups=groups),
        gi_sk.self_influence(groups=groups),
        rtol=1e-6,
    )


@pytest.mark.torch
def test_torch_matrix_free_matches_closed_form(breast_cancer):
    """hessian_solver="cg": one CG solve per example, same closed form."""
    torch = pytest.importorskip("torch")
    from sklearn_groupinf.torch import TorchModel

    X, y, _, _ = breast_cancer
    X, y = X[:120], y[:120]
    torch.manual_seed(0)
    net = TorchModel(
        torch.nn.Linear(30, 1),
        loss="binary_cross_entropy",
        weight_decay=1.0,
        decay_bias=False,
        hessian_solver="cg",
        cg_tol=1e-12,
        device="cpu",
    )
    gi = GroupInfluence(net).fit(X, y)
    theta = gi.theta_
    Xt = np.hstack([X, np.ones((len(X), 1))])
    p = expit(Xt @ theta)
    G = (p - y)[:, None] * Xt
    H = Xt.T @ ((p * (1 - p))[:, None] * Xt) + np.diag([1.0] * 30 + [0.0])
    expected = np.einsum("ij,ij->i", G, np.linalg.solve(H, G.T).T)
    np.testing.assert_allclose(gi.self_influence(), expected, rtol=1e-8)
    groups = np.arange(len(y)) % 5
    GS = np.eye(5)[groups].T @ G
    expected_g = np.einsum("ij,ij->i", GS, np.linalg.solve(H, GS.T).T)
    np.testing.assert_allclose(gi.self_influence(groups=groups), expected_g, rtol=1e-8)
