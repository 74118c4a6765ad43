"""GroupInfluence: identities, invariances, input validation."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse.linalg as spla
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_groupinf import (
    GroupInfluence,
    IllConditionedHessianWarning,
    IndefiniteHessianError,
    NotStationaryWarning,
    UnsupportedEstimatorError,
)


@pytest.fixture(scope="module")
def fitted(breast_cancer):
    X, y, Xt, yt = breast_cancer
    gi = GroupInfluence(LogisticRegression(C=0.5)).fit(X, y, X_target=Xt, y_target=yt)
    return gi, X, y


@pytest.fixture(scope="module")
def fitted_multi(digits):
    X, y, Xt, yt = digits
    gi = GroupInfluence(LogisticRegression(C=0.1)).fit(
        X[:300], y[:300], X_target=Xt, y_target=yt
    )
    return gi, X[:300], y[:300]


@pytest.mark.parametrize("which", ["fitted", "fitted_multi"])
@pytest.mark.parametrize("method", ["interaction", "second_order"])
def test_union_identity(which, method, request):
    """est(S u T) = est(S) + est(T) + 1_S' K 1_T for disjoint S, T."""
    gi, X, y = request.getfixturevalue(which)
    n = len(y)
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)
    S, T = perm[:25], perm[25:60]
    labels = np.zeros(n, dtype=int)
    labels[S], labels[T] = 1, 2
    est = gi.score_groups(labels, method=method).estimate
    union = np.zeros(n, dtype=int)
    union[np.concatenate([S, T])] = 1
    est_union = gi.score_groups(union, method=method).estimate[1]
    K = gi.interaction_matrix(method=method)
    cross = K[np.ix_(S, T)].sum()
    assert est_union == pytest.approx(est[1] + est[2] + cross, rel=1e-9)
    # group scores equal the quadratic form of the pairwise matrix
    b = gi.influence_
    quad = b[S].sum() + 0.5 * K[np.ix_(S, S)].sum()
    assert est[1] == pytest.approx(quad, rel=1e-9)


def test_singleton_groups_reproduce_influence(fitted):
    gi, X, y = fitted
    res = gi.score_groups(np.arange(len(y)), method="first_order")
    np.testing.assert_allclose(res.first_order, gi.influence_, rtol=1e-12)
    np.testing.assert_array_equal(res.size, np.ones(len(y)))
    # interaction of a singleton = a_i + kappa_ii / 2
    K = gi.interaction_matrix()
    res = gi.score_groups(np.arange(len(y)), method="interaction")
    np.testing.assert_allclose(
        res.estimate, gi.influence_ + 0.5 * np.diag(K), rtol=1e-10
    )


def test_relabelling_groups_permutes_scores(fitted):
    gi, X, y = fitted
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 12, size=len(y))
    res = gi.score_groups(groups)
    names = np.array([f"src-{c:02d}" for c in range(12)])
    perm = rng.permutation(12)
    relabelled = names[perm[groups]]
    res2 = gi.score_groups(relabelled)
    # res2 is sorted by name; name src-{perm[g]} holds old group g
    for g in range(12):
        j = np.flatnonzero(res2.groups == names[perm[g]])[0]
        assert res2.estimate[j] == pytest.approx(res.estimate[g], rel=1e-12)
        assert res2.size[j] == res.size[g]


def test_dense_and_operator_interactions_agree(fitted_multi, request):
    gi, X, y = fitted_multi
    groups = np.arange(len(y)) % 17
    for g in (None, groups):
        dense = gi.interaction_matrix(groups=g, form="dense")
        op = gi.interaction_matrix(groups=g, form="implicit")
        assert isinstance(op, spla.LinearOperator)
        eye = np.eye(dense.shape[0])
        np.testing.assert_allclose(
            op @ eye, dense, rtol=1e-9, atol=1e-12 * np.abs(dense).max()
        )
    # over the memory budget "auto" returns an operator, "dense" refuses
    # (breast cancer: the 400 x 31 shifts fit in 200 kB, the 400 x 400 K not)
    gi, X, y = request.getfixturevalue("fitted")
    small = clone(gi).set_params(max_dense_bytes=200_000).fit(X, y)
    assert isinstance(small.interaction_matrix(), spla.LinearOperator)
    with pytest.raises(MemoryError, match="max_dense_bytes"):
        small.interaction_matrix(form="dense")


def test_group_matrix_equals_aggregated_example_matrix(fitted):
    gi, X, y = fitted
    groups = np.arange(len(y)) % 7
    K = gi.interaction_matrix()
    Kg = gi.interaction_matrix(groups=groups)
    M = np.zeros((7, len(y)))
    M[groups, np.arange(len(y))] = 1
    np.testing.assert_allclose(Kg, M @ K @ M.T, rtol=1e-9)


def test_result_frame_and_alignment(fitted):
    pd = pytest.importorskip("pandas")
    gi, X, y = fitted
    groups = np.where(y == 1, "benign", "malignant")
    res = gi.score_groups(groups, method="interaction")
    df = res.to_frame()
    assert isinstance(df, pd.DataFrame)
    assert list(df["groups"]) == ["benign", "malignant"]
    assert df["size"].sum() == len(y)
    np.testing.assert_allclose(df["estimate"], res.estimate)
    assert res.method == "interaction"


def test_callable_torch_target_equals_default(breast_cancer):
    torch = pytest.importorskip("torch")
    X, y, Xt, yt = breast_cancer

    def log_loss_phi(y, z):
        return torch.nn.functional.softplus(z) - y * z

    est = LogisticRegression(C=0.5)
    a = GroupInfluence(est).fit(X, y, X_target=Xt, y_target=yt)
    b = GroupInfluence(est, target=log_loss_phi).fit(X, y, X_target=Xt, y_target=yt)
    np.testing.assert_allclose(b.influence_, a.influence_, rtol=1e-9)
    groups = np.arange(len(y)) % 9
    np.testing.assert_allclose(
        b.score_groups(groups).estimate, a.score_groups(groups).estimate, rtol=1e-9
    )


def test_default_target_is_training_metric(breast_cancer):
    X, y, _, _ = breast_cancer
    a = GroupInfluence(LogisticRegression()).fit(X, y)
    b = GroupInfluence(LogisticRegression()).fit(X, y, X_target=X, y_target=y)
    np.testing.assert_allclose(a.influence_, b.influence_)
    assert a.target_name_ == "log_loss"


def test_import_does_not_import_torch():
    code = "import sys, sklearn_groupinf; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_frozen_estimator_is_not_refitted(breast_cancer):
    X, y, Xt, yt = breast_cancer
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5)).fit(X, y)
    coef = model[-1].coef_.copy()
    with pytest.warns(NotStationaryWarning, match="frozen model's parameters"):
        gi = GroupInfluence(FrozenEstimator(model)).fit(X, y, X_target=Xt, y_target=yt)
    assert gi.estimator_ is gi.estimator
    np.testing.assert_array_equal(model[-1].coef_, coef)
    # a frozen model is never changed: the estimates expand around its
    # parameters (no polishing), whose gradient is reported
    np.testing.assert_array_equal(gi.theta_, np.r_[coef.ravel(), model[-1].intercept_])
    assert gi.stationarity_[1] == gi.stationarity_[0] > 1e-6
    # polish=True asks for the polished parameters (the model is unchanged)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotStationaryWarning)
        polished = GroupInfluence(FrozenEstimator(model), polish=True).fit(
            X, y, X_target=Xt, y_target=yt
        )
    assert polished.stationarity_[1] < 1e-6 < polished.stationarity_[0]
    np.testing.assert_array_equal(model[-1].coef_, coef)
    assert np.abs(polished.theta_ - gi.theta_).max() > 1e-3


def test_polish_false_warns_with_the_fix(breast_cancer):
    X, y, Xt, yt = breast_cancer
    with pytest.warns(NotStationaryWarning, match="smaller `tol`"):
        GroupInfluence(LogisticRegression(max_iter=3), polish=False).fit(
            X, y, X_target=Xt, y_target=yt
        )


def test_user_estimator_not_mutated(breast_cancer):
    X, y, Xt, yt = breast_cancer
    est = LogisticRegression(C=0.3)
    GroupInfluence(est).fit(X, y, X_target=Xt, y_target=yt)
    assert not hasattr(est, "coef_")


def test_bad_input_raises_clear_errors(breast_cancer, fitted):
    X, y, Xt, yt = breast_cancer
    gi = GroupInfluence(LogisticRegression())
    X_nan = X.copy()
    X_nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gi.fit(X_nan, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        gi.fit(X, y[:-1])
    with pytest.raises(ValueError, match="X_target does not match.*29 features"):
        gi.fit(X, y, X_target=Xt[:, 1:], y_target=yt)
    with pytest.raises(ValueError, match="y_target has"):
        gi.fit(X, y, X_target=Xt, y_target=yt[:-2])
    with pytest.raises(ValueError, match="y_target is required"):
        gi.fit(X, y, X_target=Xt)
    with pytest.raises(NotFittedError):
        GroupInfluence(LogisticRegression()).score_groups(y)
    fitted_gi = fitted[0]
    with pytest.raises(ValueError, match=r"groups must have shape \(400,\)"):
        fitted_gi.score_groups(np.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        fitted_gi.score_groups(np.r_[np.nan, np.zeros(399)])
    with pytest.raises(ValueError, match="method must be one of"):
        fitted_gi.score_groups(y, method="third_order")
    with pytest.raises(ValueError, match="method"):
        GroupInfluence(LogisticRegression(), method="bogus").fit(X, y)
    with pytest.raises(UnsupportedEstimatorError, match="Supported"):
        from sklearn.tree import DecisionTreeClassifier

        GroupInfluence(DecisionTreeClassifier()).fit(X, y)


def test_singular_hessian_raises_with_damping_advice():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    X = np.column_stack([X, X[:, 0] + X[:, 1]])  # collinear: singular Hessian
    y = X @ [1.0, 2.0, 0.0, -1.0] + rng.normal(size=50)
    with pytest.raises((IndefiniteHessianError,)), warnings.catch_warnings():
        warnings.simplefilter("ignore", IllConditionedHessianWarning)
        try:
            GroupInfluence(LinearRegression()).fit(X, y)
        except IndefiniteHessianError as exc:
            assert "damping>=" in str(exc)
            raise
    # with damping it works
    gi = GroupInfluence(LinearRegression(), damping=1e-3).fit(X, y)
    assert np.all(np.isfinite(gi.influence_))


def test_ill_conditioned_hessian_warns():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    X = np.column_stack([X, X[:, 0] + 1e-7 * rng.normal(size=60)])
    y = X @ [1.0, 2.0, 0.0, -1.0] + rng.normal(size=60)
    with pytest.warns(IllConditionedHessianWarning, match="damping="):
        GroupInfluence(Ridge(alpha=1e-9)).fit(X, y)


def test_multinomial_gauge_is_handled(fitted_multi):
    """The singular intercept direction neither blows up nor leaks into u_i."""
    gi, X, y = fitted_multi
    st = gi._state
    N = st.backend.null_space
    assert N is not None
    assert np.abs(N.T @ st.U.T).max() < 1e-8 * np.abs(st.U).max()
    assert np.all(np.isfinite(gi.influence_))


def test_polish_keeps_the_most_stationary_parameters():
    """A step the line search cannot reject (flat objective) that moves away
    from stationarity is undone: polishing never ends worse than it started."""
    from sklearn_groupinf._hessian import polish_parameters

    class Flat:
        null_space = None
        matrix_free = False
        theta = np.array([1e-3, -2e-3])

        def get_theta(self):
            return self.theta.copy()

        def set_theta(self, theta):
            self.theta = np.asarray(theta, float)

        def objective(self, theta=None):
            return 1.0  # flat to round-off near the optimum

        def gradient(self):
            return self.theta.copy()

        def newton_direction(self):
            return -self.theta  # a bad (e.g. Gauss-Newton) direction: doubles theta

    be = Flat()
    # the warning says how many steps were taken
    with pytest.warns(NotStationaryWarning, match="in 3 Newton steps"):
        before, after = polish_parameters(be, np.ones(5), tol=1e-6, max_steps=3)
    assert after == before
    np.testing.assert_array_equal(be.theta, [1e-3, -2e-3])


def test_auto_method_is_newton_where_affordable(fitted):
    """``method="auto"`` (the default) gives the group-Newton estimate for a
    linear model, and falls back to ``interaction`` above the cost budget."""
    gi, X, y = fitted
    assert gi.method == "auto"
    groups = np.arange(len(y)) % 6
    auto = gi.score_groups(groups)
    newton = gi.score_groups(groups, method="newton")
    assert auto.method == "newton"
    np.testing.assert_array_equal(auto.estimate, newton.estimate)
    sizes = np.bincount(groups)
    assert gi._fitted.auto_method(sizes) == "newton"
    assert gi._fitted.auto_method(sizes, max_flops=1.0) == "interaction"
    # pairwise consumers (interaction matrices) use interaction under auto
    K = gi.interaction_matrix(groups)
    np.testing.assert_allclose(
        K, gi.interaction_matrix(groups, method="interaction"), rtol=0
    )


def test_auto_newton_is_exact_for_ridge_groups(concrete):
    """For least squares the group-Newton step is the exact refit, so the
    default estimate equals leave-group-out refits (independent sklearn fits)."""
    X, y, Xt, yt = concrete
    gi = GroupInfluence(Ridge(alpha=3.0)).fit(X, y, X_target=Xt, y_target=yt)
    groups = np.arange(len(y)) % 5
    res = gi.score_groups(groups)
    assert res.method == "newton"
    f0 = np.mean((Ridge(alpha=3.0).fit(X, y).predict(Xt) - yt) ** 2)
    for g in range(5):
        keep = groups != g
        f = np.mean((Ridge(alpha=3.0).fit(X[keep], y[keep]).predict(Xt) - yt) ** 2)
        assert res.estimate[g] == pytest.approx(f - f0, rel=1e-7)
