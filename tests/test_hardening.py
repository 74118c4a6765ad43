"""Adversarial inputs on the scikit-learn linear backends.

Every public entry point (``GroupInfluence``, ``GroupSelector``,
``evaluation.leave_group_out``, the ``groupinf`` command) gets the inputs a
scikit-learn user passes: pandas containers, other dtypes and label types,
zero and integer weights, odd group labels, degenerate and badly scaled
designs, cross-validated or resampling estimators, edge budgets,
meta-estimator round trips. Each case gives either the right answer, checked
against a reference (the numpy / float64 / integer-label / repeated-row
result, an exact refit, the rows dropped), or an error or warning that names
the argument, the value received and the fix. Comments marked "was:" record
what happened before the fix.
"""

import pickle
import re
import warnings

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import (
    GammaRegressor,
    LinearRegression,
    LogisticRegression,
    LogisticRegressionCV,
    PoissonRegressor,
    Ridge,
    RidgeClassifierCV,
    RidgeCV,
    TweedieRegressor,
)
from sklearn.model_selection import GridSearchCV
from sklearn.utils.validation import NotFittedError

from sklearn_groupinf import (
    GroupInfluence,
    GroupSelector,
    IndefiniteHessianError,
    NotStationaryWarning,
    UnreliableEstimateWarning,
    UnsupportedEstimatorError,
)
from sklearn_groupinf.evaluation import leave_group_out

pd = pytest.importorskip("pandas")

N, D = 150, 5


@pytest.fixture(scope="module")
def small(breast_cancer):
    """150 training rows, 5 standardised features, 100 target rows, 5 groups."""
    X, y, Xt, yt = breast_cancer
    return X[:N, :D], y[:N], Xt[:100, :D], yt[:100], np.arange(N) % 5


@pytest.fixture(scope="module")
def fitted(small):
    X, y, Xt, yt, _ = small
    return GroupInfluence(LogisticRegression()).fit(X, y, X_target=Xt, y_target=yt)


# ------------------------------------------------------------ containers, dtypes
def test_pandas_containers_equal_numpy_and_keep_column_names(small, fitted):
    X, y, Xt, yt, g = small
    cols = [f"c{j}" for j in range(D)]
    Xd, Xtd = pd.DataFrame(X, columns=cols), pd.DataFrame(Xt, columns=cols)
    gi = GroupInfluence(LogisticRegression()).fit(
        Xd, pd.Series(y), X_target=Xtd, y_target=pd.Series(yt)
    )
    np.testing.assert_array_equal(gi.feature_names_in_, cols)
    np.testing.assert_allclose(gi.influence_, fitted.influence_, rtol=1e-12)
    by_series = gi.score_groups(pd.Series(g, index=np.arange(N)[::-1]))  # positional
    np.testing.assert_allclose(
        by_series.estimate, fitted.score_groups(g).estimate, rtol=1e-12
    )
    sel = GroupSelector(LogisticRegression(), budget=3).fit(Xd, pd.Series(y))
    np.testing.assert_array_equal(sel.feature_names_in_, cols)
    ref = leave_group_out(LogisticRegression(), X, y, g, X_target=Xt, y_target=yt)
    lgo = leave_group_out(
        LogisticRegression(), Xd, pd.Series(y), pd.Series(g), X_target=Xtd,
        y_target=pd.Series(yt),
    )  # fmt: skip
    np.testing.assert_allclose(lgo.actual, ref.actual, rtol=1e-9)


def test_float32_and_integer_features_are_computed_in_float64(small):
    X, y, Xt, yt, g = small
    X32, Xt32 = X.astype(np.float32), Xt.astype(np.float32)
    a = GroupInfluence(LogisticRegression()).fit(X32, y, X_target=Xt32, y_target=yt)
    # the reference: the same float32 values, upcast by the caller
    b = GroupInfluence(LogisticRegression()).fit(
        X32.astype(np.float64), y, X_target=Xt32.astype(np.float64), y_target=yt
    )
    assert a.theta_.dtype == a.influence_.dtype == np.float64
    np.testing.assert_allclose(a.influence_, b.influence_, rtol=1e-6, atol=1e-12)
    Xi = np.round(X * 10).astype(np.int64)
    c = GroupInfluence(Ridge()).fit(Xi, y.astype(float))
    d = GroupInfluence(Ridge()).fit(Xi.astype(float), y.astype(float))
    np.testing.assert_allclose(c.influence_, d.influence_, rtol=1e-10)


@pytest.mark.parametrize("kind", ["str", "bool", "category", "nullable"])
def test_label_types_give_the_integer_label_influences(small, fitted, kind):
    X, y, Xt, yt, _ = small

    def encode(labels):
        if kind == "str":
            return np.where(labels == 1, "pos", "neg")
        if kind == "bool":
            return labels == 1
        if kind == "category":
            return pd.Series(pd.Categorical(np.where(labels == 1, "b", "a")))
        return pd.Series(labels).astype("Int64")  # pandas' nullable integers

    gi = GroupInfluence(LogisticRegression()).fit(
        X, encode(y), X_target=Xt, y_target=encode(yt)
    )
    np.testing.assert_allclose(gi.influence_, fitted.influence_, rtol=1e-12)


def test_string_multiclass_labels_equal_integer_codes(small):
    X, _, Xt, _, _ = small
    y, yt = np.arange(N) % 3, np.arange(len(Xt)) % 3
    names = np.array(["cat", "dog", "eel"])
    a = GroupInfluence(LogisticRegression()).fit(X, y, X_target=Xt, y_target=yt)
    b = GroupInfluence(LogisticRegression()).fit(
        X, names[y], X_target=Xt, y_target=names[yt]
    )
    np.testing.assert_array_equal(b.classes_, names)
    np.testing.assert_allclose(b.influence_, a.influence_, rtol=1e-12)


# ----------------------------------------------------------------- weights
@pytest.mark.parametrize("model", [LogisticRegression(), PoissonRegressor()])
def test_zero_sample_weight_is_removal(small, model):
    X, y, Xt, yt, _ = small
    if not is_classifier(model):  # Poisson: positive counts
        y, yt = y + 1.0, yt + 1.0
    w = np.ones(N)
    w[:10] = 0.0
    a = GroupInfluence(model).fit(X, y, w, X_target=Xt, y_target=yt)
    b = GroupInfluence(model).fit(X[10:], y[10:], X_target=Xt, y_target=yt)
    np.testing.assert_array_equal(a.influence_[:10], 0.0)
    np.testing.assert_allclose(a.influence_[10:], b.influence_, rtol=1e-6, atol=1e-12)
    assert a.target_value_ == pytest.approx(b.target_value_, rel=1e-8)


@pytest.mark.filterwarnings("ignore::sklearn_groupinf.UnreliableEstimateWarning")
@pytest.mark.parametrize("model", [LogisticRegression(), PoissonRegressor()])
def test_integer_weight_is_repetition_for_every_estimator(small, model):
    X, y, Xt, yt, g = small
    if not is_classifier(model):
        y, yt = y + 1.0, yt + 1.0
    w = np.ones(N)
    w[:10], w[10:20] = 2.0, 3.0
    # the same objective written with copies of the weighted rows
    copies = np.r_[np.arange(N), np.arange(10), np.arange(10, 20), np.arange(10, 20)]
    a = GroupInfluence(model).fit(X, y, w, X_target=Xt, y_target=yt)
    b = GroupInfluence(model).fit(X[copies], y[copies], X_target=Xt, y_target=yt)
    for method in ("first_order", "interaction", "second_order", "newton"):
        ra = a.score_groups(g, method=method)
        rb = b.score_groups(g[copies], method=method)
        np.testing.assert_allclose(
            ra.estimate, rb.estimate, rtol=1e-9, atol=1e-14, err_msg=method
        )
        np.testing.assert_array_equal(ra.reliable, rb.reliable)


def test_weights_are_checked_and_named(small, fitted):
    X, y, Xt, yt, g = small
    m = len(yt)
    cases = [
        (np.r_[np.nan, np.ones(m - 1)], r"target_weight must be finite.*\[nan\]"),
        (-np.ones(m), r"target_weight must be finite and non-negative.*-1\.0"),
        (np.zeros(m), "target_weight sums to zero"),
        (np.ones(3), r"target_weight has shape \(3,\).*X_target"),
    ]
    for tw, match in cases:
        with pytest.raises(ValueError, match=match):  # was: "sample_weight ..."
            GroupInfluence(LogisticRegression()).fit(
                X, y, X_target=Xt, y_target=yt, target_weight=tw
            )
        with pytest.raises(ValueError, match=match):  # was: FloatingPointError
            leave_group_out(
                LogisticRegression(), X, y, g, X_target=Xt, y_target=yt,
                target_weight=tw,
            )  # fmt: skip
    with pytest.raises(ValueError, match=r"per row of X_target \(of X when no X_t"):
        # the target is the training metric: its weights are one per row of X
        GroupInfluence(LogisticRegression()).fit(X, y, target_weight=np.ones(3))
    with pytest.raises(ValueError, match=r"candidate_weight must be finite.*nan"):
        # was accepted: NaN weights, candidates picked in index order
        fitted.select(
            3, action="add", X_candidates=Xt, y_candidates=yt,
            candidate_weight=np.full(m, np.nan),
        )  # fmt: skip


# ----------------------------------------------------------- target labels
def test_target_and_candidate_labels_are_checked_and_named(small, fitted):
    X, y, Xt, yt, g = small
    unseen = np.where(np.arange(len(yt)) < 2, 7, yt)
    with pytest.raises(ValueError, match=r"y_target contains labels \[7\]"):
        GroupInfluence(LogisticRegression()).fit(X, y, X_target=Xt, y_target=unseen)
    with pytest.raises(ValueError, match=r"y_target contains labels \[7\]"):
        leave_group_out(LogisticRegression(), X, y, g, X_target=Xt, y_target=unseen)
    missing = yt.astype(object)
    missing[0] = None  # was: TypeError '<' not supported ... 'NoneType'
    with pytest.raises(ValueError, match="y_target contains 1 missing labels"):
        GroupInfluence(LogisticRegression()).fit(X, y, X_target=Xt, y_target=missing)
    with pytest.raises(ValueError, match=r"y_candidates contains labels \[7\]"):
        fitted.select(3, action="add", X_candidates=Xt, y_candidates=unseen)
    with pytest.raises(ValueError, match="y_target is required"):  # was: TypeError
        leave_group_out(LogisticRegression(), X, y, g, X_target=Xt)
    with pytest.raises(ValueError, match="X_target has 100 rows but y_target has 99"):
        leave_group_out(  # was: numpy broadcast error
            LogisticRegression(), X, y, g, X_target=Xt, y_target=yt[:-1]
        )
    with pytest.raises(ValueError, match="X_target has 100 rows but y_target has 1"):
        leave_group_out(LogisticRegression(), X, y, g, X_target=Xt, y_target=yt[0])
    # was: TypeError "len() of unsized object"
    with pytest.raises(ValueError, match="y_target has a single value; pass one"):
        GroupInfluence(LogisticRegression()).fit(X, y, X_target=Xt, y_target=yt[0])
    with pytest.raises(ValueError, match="y_candidates has a single value"):
        fitted.select(1, action="add", X_candidates=Xt[:1], y_candidates=yt[0])


def test_regression_targets_are_checked(small):
    X, y, Xt, yt, g = small
    y, yt = y.astype(float), yt.astype(float)
    nan_t = np.r_[np.nan, yt[1:]]
    with pytest.raises(ValueError, match="y_target contains 1 NaN"):
        # was: FloatingPointError "a refit diverged"
        leave_group_out(Ridge(), X, y, g, X_target=Xt, y_target=nan_t)
    Y, Yt = np.c_[y, -y], np.c_[yt, -yt]
    for model_y, target_y, k, m in [
        (y, Yt, 2, 1),  # was: numpy broadcast error
        (Y, np.c_[Yt, yt], 3, 2),  # was: numpy broadcast error
        (Y, yt, 1, 2),  # was accepted: the one column compared with both outputs
    ]:
        match = rf"y_target has {k} column\(s\) but the estimator predicts {m}"
        with pytest.raises(ValueError, match=match):
            GroupInfluence(Ridge()).fit(X, model_y, X_target=Xt, y_target=target_y)
    with pytest.raises(ValueError, match=match):
        leave_group_out(Ridge(), X, Y, g, X_target=Xt, y_target=yt)
    gi = GroupInfluence(Ridge()).fit(X, y)
    with pytest.raises(ValueError, match="y_candidates contains 100 NaN"):
        # was accepted: NaN gradients, candidates picked in index order
        gi.select(3, action="add", X_candidates=Xt, y_candidates=np.full(100, np.nan))


@pytest.mark.parametrize(
    "model, bad, need",
    [
        (PoissonRegressor(), -0.5, ">= 0"),
        (GammaRegressor(), 0.0, "> 0"),
        (TweedieRegressor(power=1.5), -0.5, ">= 0"),
    ],
)
def test_glm_targets_outside_the_deviance_domain_are_refused(small, model, bad, need):
    X, y, Xt, yt, g = small
    y, yt = y + 1.0, yt + 1.0
    yt_bad = np.where(np.arange(len(yt)) == 3, bad, yt)
    match = rf"y_target contains values \[{bad}\].*needs y_target {need}"
    # was: a finite but meaningless target value (Poisson, Tweedie) or inf (Gamma)
    with pytest.raises(ValueError, match=match):
        GroupInfluence(model).fit(X, y, X_target=Xt, y_target=yt_bad)
    with pytest.raises(ValueError, match=match):
        leave_group_out(model, X, y, g, X_target=Xt, y_target=yt_bad)
    gi = GroupInfluence(model).fit(X, y)
    with pytest.raises(ValueError, match=rf"y_candidates contains values \[{bad}\]"):
        gi.select(2, action="add", X_candidates=Xt, y_candidates=yt_bad)


# ------------------------------------------------------------------ groups
def test_group_label_containers_equal_integer_codes(small, fitted):
    X, y, _, _, g = small
    ref = fitted.score_groups(g, method="interaction")
    names = np.array(["a", "b", "c", "d", "e"])
    unused = pd.Categorical(names[g], categories=["zz", *names])  # "zz" unused
    for groups in (names[g], unused, pd.Series(unused), g[:, None]):
        res = fitted.score_groups(groups, method="interaction")
        assert len(res.groups) == 5  # unused categories are not groups
        np.testing.assert_allclose(res.estimate, ref.estimate, rtol=1e-12)
    sel = GroupSelector(LogisticRegression(), budget=1, groups_as_units=True)
    removed = sel.fit(X, y, groups=unused).removed_groups_
    assert set(removed) <= set(names)
    codes = GroupSelector(LogisticRegression(), budget=1, groups_as_units=True)
    assert names[codes.fit(X, y, groups=g).removed_groups_[0]] == removed[0]


def test_missing_group_labels_are_refused_everywhere(small, fitted):
    X, y, _, _, g = small
    with_nan = np.where(g == 0, np.nan, g)
    with_none = np.where(g == 0, None, g).astype(object)
    # time windows with a missing date, pandas' missing string: were one more
    # group ("NaT", "<NA>"), which GroupSelector could remove
    days = np.datetime64("2024-01-01") + (7 * g).astype("timedelta64[D]")
    with_nat = np.where(g == 0, np.datetime64("NaT"), days)
    with_pd_na = pd.array(np.where(g == 0, None, g.astype(str)), dtype="string")
    for groups in (with_nan, with_none, with_nat, pd.Series(with_nat), with_pd_na):
        with pytest.raises(ValueError, match="groups contains .*(NaN|missing)"):
            fitted.score_groups(groups)
        with pytest.raises(ValueError, match="groups contains .*(NaN|missing)"):
            leave_group_out(LogisticRegression(), X, y, groups)
        # GroupSelector: NaN was one more group, None a TypeError from np.unique
        with pytest.raises(ValueError, match="groups contains .*(NaN|missing)"):
            GroupSelector(LogisticRegression(), budget=1, groups_as_units=True).fit(
                X, y, groups=groups
            )


def test_groups_of_the_wrong_length_name_the_shape(small, fitted):
    _, _, _, _, g = small
    for groups in (g[:-1], [], np.c_[g, g]):
        with pytest.raises(ValueError, match=rf"groups must have shape \({N},\)"):
            fitted.score_groups(groups)


def test_membership_matrices_of_leave_group_out(small):
    X, y, _, _, g = small
    ref = leave_group_out(LogisticRegression(), X, y, g).actual
    onehot = (g[None, :] == np.arange(5)[:, None]).astype(int)  # (5, N) of 0/1
    # was: "groups must have shape (150,)" for a 0/1 integer matrix
    np.testing.assert_allclose(
        leave_group_out(LogisticRegression(), X, y, onehot).actual, ref, rtol=1e-10
    )
    sp = pytest.importorskip("scipy.sparse")
    for weights in (0.5 * onehot, sp.csr_matrix(0.5 * onehot)):
        # was accepted (the sparse one): weights taken for membership
        with pytest.raises(ValueError, match=r"booleans or 0/1.*\[0\.5\]"):
            leave_group_out(LogisticRegression(), X, y, weights)
    two_columns = np.c_[g.astype(str), (g % 2).astype(str)]
    with pytest.raises(ValueError, match="labels from several columns combined"):
        leave_group_out(LogisticRegression(), X, y, two_columns)


# ------------------------------------------------------- degenerate designs
@pytest.mark.parametrize("design", ["duplicates", "constant", "collinear", "wide"])
def test_ridge_newton_is_exact_on_degenerate_designs(small, design):
    X, y, Xt, yt, g = small
    y, yt = y.astype(float), yt.astype(float)
    rng = np.random.default_rng(0)
    if design == "duplicates":
        X, y, g = np.vstack([X, X[:20]]), np.r_[y, y[:20]], np.r_[g, g[:20]]
    elif design == "constant":
        X, Xt = np.c_[X, np.ones(len(X))], np.c_[Xt, np.ones(len(Xt))]
    elif design == "collinear":
        X, Xt = np.c_[X, 2 * X[:, 0]], np.c_[Xt, 2 * Xt[:, 0]]
    else:  # more features than rows
        X, y, g = rng.normal(size=(40, 60)), y[:40], g[:40]
        Xt = rng.normal(size=(len(yt), 60))
    gi = GroupInfluence(Ridge(alpha=1.0)).fit(X, y, X_target=Xt, y_target=yt)
    with warnings.catch_warnings():
        # was (wide design): every exact estimate flagged "even its sign is
        # uncertain" because each group carries directions of its own
        warnings.simplefilter("error", UnreliableEstimateWarning)
        res = gi.score_groups(g, method="newton")
    assert res.reliable.all()
    ref = leave_group_out(Ridge(alpha=1.0), X, y, g, X_target=Xt, y_target=yt)
    np.testing.assert_allclose(res.estimate, ref.actual, rtol=1e-6, atol=1e-12)
    if design == "duplicates":  # identical rows, identical influence
        np.testing.assert_allclose(gi.influence_[N:], gi.influence_[:20], rtol=1e-10)


def test_unpenalised_least_squares_is_invariant_to_feature_scales(small):
    X, y, Xt, yt, g = small
    y, yt = y.astype(float), yt.astype(float)
    scales = np.array([1e-6, 1e6, 1.0, 1e-3, 1e3])  # raw units spanning 12 decades
    ref = GroupInfluence(LinearRegression()).fit(X, y, X_target=Xt, y_target=yt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreliableEstimateWarning)
        gi = GroupInfluence(LinearRegression()).fit(
            X * scales, y, X_target=Xt * scales, y_target=yt
        )
        est = gi.score_groups(g, method="newton")
    # was: scikit-learn's lstsq truncates the 1e-6 column, the relative gradient
    # norm (7.9e-9) looked stationary, and the estimates were off by a factor
    # of up to 3.8 with no warning
    np.testing.assert_allclose(gi.theta_[:-1] * scales, ref.theta_[:-1], rtol=1e-6)
    np.testing.assert_allclose(gi.influence_, ref.influence_, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(
        est.estimate, ref.score_groups(g, method="newton").estimate, rtol=1e-6
    )


@pytest.mark.filterwarnings("ignore:The Hessian without this group:UserWarning")
def test_newton_is_flagged_where_the_refit_is_not_unique(small):
    X, y, Xt, yt, g = small
    # a feature that only group 0 has: without the group it is unconstrained
    X = np.c_[X, (g == 0).astype(float)]
    Xt = np.c_[Xt, np.zeros(len(Xt))]
    gi = GroupInfluence(LinearRegression()).fit(
        X, y.astype(float), X_target=Xt, y_target=yt.astype(float)
    )
    with pytest.warns(UnreliableEstimateWarning, match="groups 0;"):
        res = gi.score_groups(g, method="newton")
    np.testing.assert_array_equal(res.reliable, [False, True, True, True, True])
    ref = leave_group_out(
        LinearRegression(),
        X,
        y.astype(float),
        g,
        X_target=Xt,
        y_target=yt.astype(float),
    )
    np.testing.assert_allclose(res.estimate[1:], ref.actual[1:], rtol=1e-6)


# -------------------------------------------------------------- estimators
@pytest.mark.parametrize(
    "model, fixed",
    [
        (LogisticRegressionCV(Cs=2, cv=2), "LogisticRegression(C=model.C_[0])"),
        (RidgeCV(), "Ridge(alpha=model.alpha_)"),
        (RidgeClassifierCV(), "RidgeClassifier(alpha=model.alpha_)"),
    ],
)
def test_cross_validated_estimators_point_to_the_fixed_model(small, model, fixed):
    X, y, _, _, _ = small
    if isinstance(model, RidgeCV):
        y = y.astype(float)
    # LogisticRegressionCV (a LogisticRegression subclass) was an AttributeError
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # its 1.10 deprecations
        with pytest.raises(
            UnsupportedEstimatorError, match=rf"pass {re.escape(fixed)}"
        ):
            GroupInfluence(model).fit(X, y)


def test_unfitted_frozen_estimator_and_unfitted_methods(small):
    X, y, _, _, g = small
    with pytest.raises(NotFittedError):
        GroupInfluence(FrozenEstimator(LogisticRegression())).fit(X, y)
    gi = GroupInfluence(LogisticRegression())
    for call in (
        lambda: gi.score_groups(g),
        lambda: gi.select(3),
        lambda: gi.self_influence(),
        lambda: gi.interaction_matrix(),
        lambda: gi.predict(X),
    ):
        with pytest.raises(NotFittedError):
            call()


# ------------------------------------------------------------------ budgets
def test_select_budget_edge_cases(fitted):
    with pytest.raises(ValueError, match="budget must be >= 1; got 0"):
        fitted.select(0)
    with pytest.raises(ValueError, match=rf"budget={N + 1} is larger than the pool"):
        fitted.select(N + 1)
    with pytest.raises(ValueError, match=r"fractional budget must be in \(0, 1\]"):
        fitted.select(1.5)
    with pytest.raises(TypeError, match="budget must be an int or a float"):
        fitted.select("5")
    everything = fitted.select(1.0, method="first_order").indices
    np.testing.assert_array_equal(np.sort(everything), np.arange(N))
    assert len(fitted.select(0.1).indices) == 15  # floor(0.1 * 150)
    np.testing.assert_array_equal(
        fitted.select(np.int64(3)).indices, fitted.select(3).indices
    )


def test_selector_budget_larger_than_the_units_names_the_fix(small):
    X, y, _, _, _ = small
    sel = GroupSelector(LogisticRegression(), budget=1, groups_as_units=True)
    # was: "pass budget <= -1 (an int)"
    with pytest.raises(
        ValueError, match="use data with at least 3 groups, or budget=0"
    ):
        sel.fit(X, y, groups=np.zeros(N))
    with pytest.raises(ValueError, match=rf"pass budget <= {N - 2}"):
        GroupSelector(LogisticRegression(), budget=N).fit(X, y)


# --------------------------------------------------------- meta-estimators
def test_clone_params_and_pickle_round_trips(small, fitted):
    X, y, Xt, yt, g = small
    gi = GroupInfluence(LogisticRegression(), method="interaction", damping=1e-3)
    twin = clone(gi)
    assert twin.get_params()["damping"] == 1e-3 and twin.estimator is not gi.estimator
    twin.set_params(estimator__C=0.1, damping=0.0)
    a = twin.fit(X, y, X_target=Xt, y_target=yt)
    b = GroupInfluence(LogisticRegression(C=0.1), method="interaction").fit(
        X, y, X_target=Xt, y_target=yt
    )
    np.testing.assert_allclose(a.influence_, b.influence_, rtol=1e-12)
    back = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(
        back.score_groups(g).estimate, fitted.score_groups(g).estimate
    )
    np.testing.assert_array_equal(back.select(4).indices, fitted.select(4).indices)
    np.testing.assert_array_equal(
        back.interaction_matrix(g), fitted.interaction_matrix(g)
    )
    sel = GroupSelector(LogisticRegression(), budget=3).fit(X, y)
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(sel)).predict_proba(Xt), sel.predict_proba(Xt)
    )


def test_gridsearch_tunes_the_wrapped_estimator(small):
    X, y, _, _, _ = small
    search = GridSearchCV(
        GroupInfluence(LogisticRegression()), {"estimator__C": [0.01, 1.0]}, cv=3
    ).fit(X, y)
    best = search.best_estimator_
    ref = GroupInfluence(LogisticRegression(C=search.best_params_["estimator__C"]))
    np.testing.assert_allclose(best.influence_, ref.fit(X, y).influence_, rtol=1e-12)
    assert search.score(X, y) == best.estimator_.score(X, y)


def test_sparse_training_data_is_refused_with_the_fix(small):
    sp = pytest.importorskip("scipy.sparse")
    X, y, _, _, g = small
    for call in (
        lambda: GroupInfluence(LogisticRegression()).fit(sp.csr_matrix(X), y),
        lambda: GroupSelector(LinearRegression(), budget=2).fit(sp.csc_matrix(X), y),
        lambda: leave_group_out(LogisticRegression(), sp.csr_matrix(X), y, g),
    ):
        with pytest.raises(TypeError, match=r"Sparse data.*toarray\(\)"):
            call()
    # target and candidate rows: the message names them (was: "passed for X")
    Xt, yt = small[2], small[3]
    sparse_t = sp.csr_matrix(Xt)
    with pytest.raises(TypeError, match=r"X_target is a scipy sparse.*toarray\(\)"):
        GroupInfluence(LogisticRegression()).fit(X, y, X_target=sparse_t, y_target=yt)
    with pytest.raises(TypeError, match=r"X_target is a scipy sparse.*toarray\(\)"):
        leave_group_out(LogisticRegression(), X, y, g, X_target=sparse_t, y_target=yt)
    gi = GroupInfluence(LogisticRegression()).fit(X, y)
    with pytest.raises(TypeError, match="X_candidates is a scipy sparse matrix"):
        gi.select(2, action="add", X_candidates=sparse_t, y_candidates=yt)


# ---------------------------------------------------------------- groupinf CLI
def test_cli_names_infinite_feature_cells(tmp_path, capsys):
    from sklearn_groupinf import cli

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    df["y"] = (df["a"] > 0).astype(int)
    df["src"] = np.arange(60) % 3
    df.to_csv(tmp_path / "ok.csv", index=False)
    df.loc[[4, 7], "b"] = np.inf
    df.to_csv(tmp_path / "inf.csv", index=False)
    base = ["--label", "y", "--quiet"]
    for args, path in [
        (["audit", tmp_path / "inf.csv", "--groups", "src"], "inf.csv"),
        (["clean", tmp_path / "inf.csv", "--budget", "2", "--out", tmp_path / "o.csv"],
         "inf.csv"),
        (["audit", tmp_path / "ok.csv", "--groups", "src", "--validation",
          tmp_path / "inf.csv"], "inf.csv"),
    ]:  # fmt: skip
        # was: "Input X contains infinity or a value too large for dtype('float64')"
        assert cli.main([str(a) for a in args + base]) == 2
        err = capsys.readouterr().err
        assert f"feature column 'b' of '{tmp_path / path}' is infinite in 2 row" in err
        assert "(data rows 4, 7)" in err and "--drop b" in err
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("C", [np.inf, 1e10])
def test_separable_classes_name_the_penalty_as_the_fix(small, C):
    X, _, _, _, _ = small
    y = (X[:, 0] > 0).astype(int)  # separable along the first feature
    # was: "refit the estimator with a tighter `tol`" (no tol can fix it)
    with pytest.warns(
        NotStationaryWarning, match="linearly separable.*smaller, finite C"
    ):
        GroupInfluence(LogisticRegression(C=C, max_iter=1000)).fit(X[:, :1], y)
    with warnings.catch_warnings():  # a penalty that bounds them: stationary
        warnings.simplefilter("error", NotStationaryWarning)
        GroupInfluence(LogisticRegression(C=1.0)).fit(X[:, :1], y)


def test_a_hessian_larger_than_the_machine_is_refused_with_sizes(small, monkeypatch):
    from sklearn_groupinf.backends import _sklearn_linear

    X, y, _, _, _ = small
    machine = _sklearn_linear.physical_memory()
    assert machine is None or machine > 1e8
    # this machine, as far as the check knows, has 10 kB: 6 parameters need 864 B
    monkeypatch.setattr(_sklearn_linear, "physical_memory", lambda: 10_000)
    GroupInfluence(LogisticRegression()).fit(X, y)
    # 3 classes x 6 = 18 parameters need 3 * 8 * 18**2 = 7776 B; 5 classes 21600 B
    GroupInfluence(LogisticRegression()).fit(X, np.arange(N) % 3)
    with pytest.raises(MemoryError, match=r"30 parameters \(5 output\(s\) x 6 coef"):
        # was: numpy's own MemoryError or the machine swapping
        GroupInfluence(LogisticRegression()).fit(X, np.arange(N) % 5)
    with pytest.raises(
        MemoryError, match=r"2\.16e-05 GB, more than .* 1e-05 GB.*most about 3 features"
    ):
        GroupInfluence(LogisticRegression()).fit(X, np.arange(N) % 5)


def test_cli_logistic_model_on_a_continuous_label_says_so(tmp_path, capsys):
    from sklearn_groupinf import cli

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=40), "src": np.arange(40) % 4})
    df["y"] = 2 * df["a"] + 0.1 * rng.normal(size=40)
    df.to_csv(tmp_path / "reg.csv", index=False)
    args = ["audit", str(tmp_path / "reg.csv"), "--label", "y", "--groups", "src"]
    # was: "validation labels [-3.2, ...] never occur in the training rows"
    assert cli.main(args + ["--model", "logistic", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--model logistic needs class labels" in err and "--model ridge" in err
    assert cli.main(args + ["--quiet"]) == 0  # auto: ridge
    assert "mean_squared_error" in capsys.readouterr().out


def test_selector_internal_fit_without_two_classes_says_why(small):
    X, y, _, _, _ = small
    # each group holds one class: the other folds of a fold can hold one class
    groups = 10 * y + np.arange(N) % 2
    sel = GroupSelector(
        LogisticRegression(), budget=1, groups_as_units=True, validation="cross_fit"
    )
    # was: "This solver needs samples of at least 2 classes" from an internal fit
    with pytest.raises(ValueError, match=r"internal fit of GroupSelector \(valid"):
        sel.fit(X, y, groups=groups)
    mixed = np.arange(N) % 4  # groups that mix the classes: fine
    assert len(sel.fit(X, y, groups=mixed).removed_groups_) == 1


def test_adding_dataframe_candidates_in_rounds_equals_arrays(small):
    X, y, Xt, yt, _ = small
    cols = [f"c{j}" for j in range(D)]
    frame = GroupInfluence(LogisticRegression()).fit(
        pd.DataFrame(X, columns=cols), y, X_target=pd.DataFrame(Xt, columns=cols),
        y_target=yt,
    )  # fmt: skip
    array = GroupInfluence(LogisticRegression()).fit(X, y, X_target=Xt, y_target=yt)
    kw = dict(action="add", y_candidates=yt, n_rounds=2, method="interaction")
    # was: TypeError from pandas.concat (a DataFrame and the validated array)
    a = frame.select(4, X_candidates=pd.DataFrame(Xt, columns=cols), **kw)
    b = array.select(4, X_candidates=Xt, **kw)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.measured, b.measured, rtol=1e-10)


def test_a_resampling_pipeline_step_is_refused(small):
    imblearn = pytest.importorskip("imblearn")
    from imblearn.under_sampling import RandomUnderSampler

    X, y, _, _, g = small
    pipe = imblearn.pipeline.make_pipeline(
        RandomUnderSampler(random_state=0), LogisticRegression()
    )
    match = "step 'randomundersampler' resamples the rows.*class_weight"
    # was: AttributeError "This 'Pipeline' has no attribute 'transform'"
    for call in (
        lambda: GroupInfluence(pipe).fit(X, y),
        lambda: GroupSelector(pipe, budget=2).fit(X, y),
        lambda: leave_group_out(pipe, X, y, g),
    ):
        with pytest.raises(UnsupportedEstimatorError, match=match):
            call()
    plain = imblearn.pipeline.make_pipeline(LogisticRegression())  # no sampler
    ref = GroupInfluence(LogisticRegression()).fit(X, y)
    np.testing.assert_allclose(
        GroupInfluence(plain).fit(X, y).influence_, ref.influence_, rtol=1e-12
    )


def test_cli_numeric_column_with_placeholders_names_the_cells(tmp_path, capsys):
    from sklearn_groupinf import cli

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=60).round(3), "b": rng.normal(size=60)})
    df["y"] = (df["b"] > 0).astype(int)
    df["src"] = np.arange(60) % 3
    df = df.astype({"a": object})
    df.loc[[2, 9], "a"] = "?"
    df.to_csv(tmp_path / "q.csv", index=False)
    args = ["audit", str(tmp_path / "q.csv"), "--label", "y", "--groups", "src"]
    # was: "non-numeric column 'a' ... has 59 distinct values (an identifier or
    # free text?)", advising --max-levels, which would one-hot encode the numbers
    assert cli.main(args + ["--quiet"]) == 2
    err = capsys.readouterr().err
    assert "column 'a' of" in err and "holds numbers except for ['?']" in err
    assert "(data rows 2, 9)" in err and "leave missing cells empty" in err
    df.loc[[2, 9], "a"] = np.nan  # the fix: empty cells, imputed
    df.to_csv(tmp_path / "q.csv", index=False)
    assert cli.main(args + ["--quiet"]) == 0


# --------------------------------------------------- callable targets (torch)
@pytest.mark.torch
def test_callable_target_non_finite_values_raise_and_multi_output_works(small):
    torch = pytest.importorskip("torch")
    X, y, Xt, yt, _ = small
    # was: target_value_ = nan, silently (log of negative raw outputs has a
    # finite derivative, so only the values were non-finite)
    with pytest.raises(FloatingPointError, match="returns .* non-finite values"):
        GroupInfluence(LogisticRegression(), target=lambda y, z: torch.log(z)).fit(
            X, y, X_target=Xt
        )
    # a multi-output regressor's y_target (m, 2): was a RuntimeError from a
    # reshape; the callable mean squared error equals the default target
    Y, Yt = np.c_[y, 1 - 2 * y].astype(float), np.c_[yt, 1 - 2 * yt].astype(float)
    mse = GroupInfluence(Ridge(), target=lambda y, z: ((y - z) ** 2).mean(-1))
    a = mse.fit(X, Y, X_target=Xt, y_target=Yt)
    b = GroupInfluence(Ridge()).fit(X, Y, X_target=Xt, y_target=Yt)
    assert a.target_value_ == pytest.approx(b.target_value_, rel=1e-12)
    np.testing.assert_allclose(a.influence_, b.influence_, rtol=1e-9, atol=1e-15)


@pytest.mark.torch
@pytest.mark.parametrize("device", ["meta", "mps"])
def test_unusable_torch_devices_are_refused_at_fit(small, device):
    torch = pytest.importorskip("torch")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    X, y, _, _, _ = small
    # was: accepted at fit, then a RuntimeError (mps) or NotImplementedError
    # (meta) from torch when the interaction matrix was built
    with pytest.raises(ValueError, match=rf"device='{device}' was requested"):
        GroupInfluence(LogisticRegression(), device=device).fit(X, y)


def test_pipeline_that_cannot_transform_the_target_names_it(small):
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y, Xt, yt, _ = small
    cols = [f"c{j}" for j in range(D)]
    df, dft = pd.DataFrame(X, columns=cols), pd.DataFrame(Xt, columns=cols)
    df["kind"] = np.where(np.arange(N) % 2, "u", "v")
    dft["kind"] = np.where(np.arange(len(dft)) % 3, "u", "w")  # "w": unseen
    pre = ColumnTransformer(
        [("num", StandardScaler(), cols), ("cat", OneHotEncoder(), ["kind"])]
    )
    gi = GroupInfluence(make_pipeline(pre, LogisticRegression()))
    # was: scikit-learn's message without the argument's name
    with pytest.raises(ValueError, match="cannot transform X_target: Found unknown"):
        gi.fit(df, y, X_target=dft, y_target=yt)
    with pytest.raises(ValueError, match="cannot transform X_target: columns are miss"):
        gi.fit(df, y, X_target=dft.drop(columns="c0"), y_target=yt)
    fitted = gi.fit(df, y, X_target=dft.assign(kind="u"), y_target=yt)
    with pytest.raises(ValueError, match="cannot transform X_candidates"):
        fitted.select(2, action="add", X_candidates=dft, y_candidates=yt)


def test_leave_group_out_refit_failure_names_the_group(small):
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y, Xt, yt, _ = small
    cols = [f"c{j}" for j in range(D)]
    kinds = np.array(["u", "v", "w"])
    df, dft = pd.DataFrame(X, columns=cols), pd.DataFrame(Xt, columns=cols)
    df["kind"], dft["kind"] = kinds[np.arange(N) % 3], kinds[np.arange(100) % 3]
    pre = ColumnTransformer(
        [("num", StandardScaler(), cols), ("cat", OneHotEncoder(), ["kind"])]
    )
    pipe, groups = make_pipeline(pre, LogisticRegression()), df["kind"].to_numpy()
    # was: "Found unknown categories ['u'] in column 0 during transform" from a
    # worker, with no group and no cause
    with pytest.raises(ValueError, match="without group 'u' failed.*refit='final_es"):
        leave_group_out(pipe, df, y, groups, X_target=dft, y_target=yt, refit="all")
    kept = leave_group_out(pipe, df, y, groups, X_target=dft, y_target=yt)
    assert np.all(np.isfinite(kept.actual)) and len(kept.actual) == 3


def test_all_zero_feature_column_names_the_parameter_and_the_fix():
    # was: "Pass damping>=..." only; the column is the cause
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    X[:, 1] = 0.0
    y = X @ np.array([1.0, 2.0, 3.0]) + rng.normal(size=50)
    with pytest.raises(IndefiniteHessianError, match=r"Parameter\(s\) \[1\] have no"):
        GroupInfluence(LinearRegression()).fit(X, y)


def test_dense_interaction_memory_error_gives_exact_sizes():
    # was "needs 0.03 GB, over max_dense_bytes=1000 (0.00 GB)"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] + rng.normal(size=60) > 0).astype(int)
    gi = GroupInfluence(LogisticRegression(), max_dense_bytes=1000).fit(X, y)
    msg = r"needs 28,800 bytes .* max_dense_bytes=1,000\."
    with pytest.raises(MemoryError, match=msg):
        gi.interaction_matrix(form="dense")
