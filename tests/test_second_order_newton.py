"""``second_order`` and ``newton`` against references: refits and finite differences.

* ``newton`` is exact for quadratic problems (Ridge, and the mean-form
  TweedieRegressor(power=0, identity link)) with a squared-error target;
* ``second_order`` equals the first two terms of the Taylor series of the refit
  target along the removal weights, ``F'(0) + F''(0) / 2`` with
  ``F(t) = f(theta_hat(s - t 1_S))``, measured by central differences of
  refits (Richardson-extrapolated);
* on real data, both beat ``interaction`` for random groups of 10-20 %
  (``second_order`` not on concrete, see the comment above that test).
"""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import (
    LogisticRegression,
    PoissonRegressor,
    Ridge,
    TweedieRegressor,
)
from sklearn.metrics import log_loss, mean_poisson_deviance
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from sklearn_groupinf import GroupInfluence
from sklearn_groupinf._estimators import max_woodbury_rank, newton_estimates
from sklearn_groupinf._groups import GroupMembership
from sklearn_groupinf.evaluation import agreement, leave_group_out


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # many small BLAS calls: threads only add contention on a shared machine
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _random_partition(n, n_groups, seed):
    """Labels of a random partition into ``n_groups`` groups of equal size."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n) % n_groups)


# --------------------------------------------------------------- newton exact
@pytest.mark.parametrize(
    "case", ["ridge", "ridge_weighted", "ridge_multioutput", "tweedie0_mean_form"]
)
def test_newton_equals_refit_for_quadratic_problems(case, concrete):
    X, y, Xt, yt = concrete
    sw = None
    if case == "ridge":
        est = Ridge(alpha=3.0)
    elif case == "ridge_weighted":
        est = Ridge(alpha=3.0)
        sw = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    elif case == "ridge_multioutput":
        est = Ridge(alpha=3.0)
        y = np.column_stack([y, X[:, 0] * y])
        yt = np.column_stack([yt, Xt[:, 0] * yt])
    else:  # mean form: the penalty share of the group enters H_S
        est = TweedieRegressor(
            power=0, link="identity", alpha=0.05, solver="newton-cholesky", tol=1e-12
        )
    # groups of 1 %-25 % of n, and two single examples
    rng = np.random.default_rng(1)
    groups = rng.choice(8, size=len(y), p=[0.25, 0.2, 0.2, 0.15, 0.1, 0.05, 0.03, 0.02])
    groups[:2] = [100, 101]
    gi = GroupInfluence(est, method="newton").fit(X, y, sw, X_target=Xt, y_target=yt)
    est_scores = gi.score_groups(groups)
    refits = leave_group_out(
        est, X, y, groups, X_target=Xt, y_target=yt, sample_weight=sw
    )
    np.testing.assert_array_equal(est_scores.groups, refits.groups)
    assert refits.target_value == pytest.approx(gi.target_value_, rel=1e-10)
    np.testing.assert_allclose(est_scores.estimate, refits.actual, rtol=1e-8)
    # and the approximations are not: the test can tell them apart
    inter = gi.score_groups(groups, method="interaction").estimate
    assert np.max(np.abs(inter / refits.actual - 1)) > 1e-3


@pytest.mark.parametrize("case", ["multinomial", "poisson_mean_form"])
def test_newton_woodbury_equals_direct(case, digits, concrete):
    """The capacitance solve with the factored H equals a fresh Cholesky."""
    if case == "multinomial":
        X, y, Xt, yt = digits
        est = LogisticRegression(C=0.1)
    else:
        X, y, Xt, yt = concrete
        est = PoissonRegressor(alpha=0.01)
        y, yt = y / 10.0, yt / 10.0
    gi = GroupInfluence(est).fit(X, y, X_target=Xt, y_target=yt)
    groups = _random_partition(len(y), 30, seed=2)
    membership = GroupMembership(groups, len(y))
    ids = range(4)
    wood = newton_estimates(gi._state, membership, ids, strategy="woodbury")
    direct = newton_estimates(gi._state, membership, ids, strategy="direct")
    np.testing.assert_allclose(wood, direct, rtol=1e-9)
    auto = newton_estimates(gi._state, membership, ids)
    np.testing.assert_allclose(auto, direct, rtol=1e-9)


def test_newton_group_without_curvature():
    """A group whose rows carry no curvature (one saturated logistic row).

    Regression: the group Hessian factor had no columns and the backend raised
    a reshape ValueError. With ``H_S = 0`` the Newton step is ``H^{-1} q``; it
    must agree with a fresh Cholesky and with the refit.
    """
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 2))
    y = (X[:, 0] + 0.5 * rng.normal(size=100) > 0).astype(int)
    X[0], y[0] = [60.0, 0.0], 1  # p = 1 exactly in float64: zero curvature
    groups = np.where(np.arange(100) == 0, 0, 1 + np.arange(100) % 3)
    gi = GroupInfluence(LogisticRegression(tol=1e-10)).fit(X, y)
    assert gi._state.backend.group_hessian([0]).max() == 0.0
    res = gi.score_groups(groups, method="newton")
    membership = GroupMembership(groups, len(y))
    direct = newton_estimates(gi._state, membership, strategy="direct")
    np.testing.assert_allclose(res.estimate, direct, rtol=1e-9, atol=1e-15)
    # the saturated row has no gradient either: removing it changes nothing
    actual = leave_group_out(LogisticRegression(), X, y, groups).actual
    assert abs(res.estimate[0] - actual[0]) <= 1e-6 * np.abs(actual).max()
    assert np.all(np.isfinite(res.estimate))


def test_woodbury_rank_threshold_follows_cost():
    # small groups of a large model go through Woodbury, large ones direct
    P = 7850
    m = max_woodbury_rank(P, 50)
    assert 9 * 50 <= m < 9 * 1000
    assert max_woodbury_rank(30, 100) < 100  # binary: rank 100 > cheaper bound


# ------------------------------------------------ second order = FD of refits
def _fd_case(name, concrete):
    if name == "binary":
        X, y = load_breast_cancer(return_X_y=True)
        X = StandardScaler().fit_transform(X)[:, :8]
        est = LogisticRegression(
            C=0.5, solver="newton-cholesky", tol=1e-14, max_iter=1000
        )
        return X[:120], y[:120], X[400:], y[400:], est, _log_loss
    if name == "multinomial":
        X, y = load_iris(return_X_y=True)
        X = StandardScaler().fit_transform(X)
        perm = np.random.default_rng(0).permutation(len(y))
        X, y = X[perm], y[perm]
        est = LogisticRegression(
            C=0.5, solver="newton-cholesky", tol=1e-14, max_iter=1000
        )
        return X[:90], y[:90], X[90:], y[90:], est, _log_loss
    X, y, Xt, yt = concrete  # mean-form GLM: re-normalisation included
    est = PoissonRegressor(
        alpha=0.05, solver="newton-cholesky", tol=1e-14, max_iter=1000
    )
    return X[:150], y[:150] / 10, Xt, yt / 10, est, _poisson


def _log_loss(model, X, y):
    return log_loss(y, model.predict_proba(X), labels=model.classes_)


def _poisson(model, X, y):
    return mean_poisson_deviance(y, model.predict(X))


@pytest.mark.parametrize("name", ["binary", "multinomial", "poisson"])
def test_second_order_matches_finite_difference_of_refits(name, concrete):
    X, y, Xt, yt, est, metric = _fd_case(name, concrete)
    n = len(y)
    in_S = np.zeros(n, dtype=bool)
    in_S[np.random.default_rng(1).choice(n, n // 5, replace=False)] = True
    gi = GroupInfluence(est).fit(X, y, X_target=Xt, y_target=yt)
    scores = {
        m: gi.score_groups(in_S.astype(int), method=m).estimate[1]
        for m in ("first_order", "interaction", "second_order")
    }

    def F(t):  # target after refitting with the group's weights 1 - t
        model = clone(est).fit(X, y, sample_weight=1.0 - t * in_S)
        return metric(model, Xt, yt)

    F0 = F(0.0)
    assert F0 == pytest.approx(gi.target_value_, rel=1e-12)
    h = 0.025  # central differences at h and h/2, Richardson: error O(h^4)
    Fp, Fm, Fp2, Fm2 = F(h), F(-h), F(h / 2), F(-h / 2)
    d1 = (4 * (Fp2 - Fm2) / h - (Fp - Fm) / (2 * h)) / 3
    d2 = (4 * (Fp2 - 2 * F0 + Fm2) / (h / 2) ** 2 - (Fp - 2 * F0 + Fm) / h**2) / 3
    assert scores["first_order"] == pytest.approx(d1, rel=1e-7)
    # the estimate at t = 1 (removal) is F'(0) + F''(0) / 2
    assert scores["second_order"] == pytest.approx(d1 + 0.5 * d2, rel=1e-7)
    # the interaction estimate keeps only part of the second-order term
    assert abs(scores["interaction"] - (d1 + 0.5 * d2)) > 1e-2 * abs(0.5 * d2)


# --------------------------------------------- accuracy on bundled real data
# Measured (5 seeds, 40 random groups of 10-20 %, median relative error):
# concrete Ridge: interaction 0.18-0.27, second_order 0.15-0.28, newton 1e-13;
# concrete Poisson: interaction 0.18-0.26, second_order 0.17-0.28, newton 0.01.
# On concrete (8 features) the held-out MSE is near its minimum, so its
# gradient is small and the change is dominated by the quadratic term
# 1/2 dtheta' H_f dtheta, whose own correction is third order in the removal
# weights: second_order is then no better than interaction at these sizes,
# and only newton is asserted there.
@pytest.mark.parametrize("case", ["breast_cancer", "digits", "concrete"])
def test_second_order_and_newton_beat_interaction(
    case, breast_cancer, digits, concrete
):
    better = ("second_order", "newton")
    if case == "breast_cancer":
        X, y, Xt, yt = breast_cancer
        est, n_groups = LogisticRegression(C=0.1), 7  # ~14 % each
    elif case == "digits":
        X, y, Xt, yt = digits
        est, n_groups = LogisticRegression(C=0.1), 5  # 20 % each
    else:
        X, y, Xt, yt = concrete
        est, n_groups, better = Ridge(alpha=1.0), 7, ("newton",)
    groups = _random_partition(len(y), n_groups, seed=3)
    sizes = np.bincount(groups) / len(y)
    assert np.all((sizes >= 0.1) & (sizes <= 0.2))
    gi = GroupInfluence(est).fit(X, y, X_target=Xt, y_target=yt)
    refits = leave_group_out(est, X, y, groups, X_target=Xt, y_target=yt)
    err = {
        m: agreement(gi.score_groups(groups, method=m), refits).median_relative_error
        for m in ("first_order", "interaction", "second_order", "newton")
    }
    assert err["interaction"] < err["first_order"]
    for m in better:
        assert err[m] < err["interaction"], (m, err)
