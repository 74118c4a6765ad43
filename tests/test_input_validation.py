"""Regression tests: inputs that used to give silent wrong answers or raw errors.

Each test reproduces a case that was accepted (or failed deep inside the
calculus) and checks the clear error, the warning, or the right answer.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import check_param_validation

from sklearn_groupinf import (
    GroupInfluence,
    IllConditionedHessianWarning,
    IndefiniteHessianError,
    NotStationaryWarning,
)

pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def frames(breast_cancer):
    X, y, Xt, yt = breast_cancer
    cols = [f"f{j}" for j in range(X.shape[1])]
    return pd.DataFrame(X, columns=cols), y, pd.DataFrame(Xt, columns=cols), yt


# ------------------------------------------------------------ feature names
def test_target_columns_reordered_or_renamed_are_refused(frames):
    X, y, Xt, yt = frames
    gi = GroupInfluence(LogisticRegression())
    # was accepted: the target was computed on other columns (a wrong value)
    with pytest.raises(ValueError, match="(?s)X_target does not match.*same order"):
        gi.fit(X, y, X_target=Xt[Xt.columns[::-1]], y_target=yt)
    renamed = Xt.rename(columns={"f0": "other"})
    with pytest.raises(ValueError, match="X_target does not match"):
        gi.fit(X, y, X_target=renamed, y_target=yt)
    # the same columns give the numpy result
    a = gi.fit(X, y, X_target=Xt, y_target=yt).target_value_
    b = GroupInfluence(LogisticRegression()).fit(
        X.to_numpy(), y, X_target=Xt.to_numpy(), y_target=yt
    )
    assert a == pytest.approx(b.target_value_, rel=1e-12)


def test_candidate_columns_checked(frames):
    X, y, Xt, yt = frames
    gi = GroupInfluence(LogisticRegression()).fit(X, y, X_target=Xt, y_target=yt)
    kw = dict(action="add", y_candidates=yt[:20])
    # was accepted (other rows selected) or failed in a matmul
    with pytest.raises(ValueError, match="X_candidates does not match"):
        gi.select(3, X_candidates=Xt.iloc[:20, ::-1], **kw)
    with pytest.raises(ValueError, match="X_candidates does not match"):
        gi.select(3, X_candidates=Xt.iloc[:20, :5], **kw)
    same = gi.select(3, X_candidates=Xt.iloc[:20], **kw).indices
    np.testing.assert_array_equal(
        same, gi.select(3, X_candidates=Xt.iloc[:20].to_numpy(), **kw).indices
    )


def test_predict_dataframe_after_fit_dataframe_is_quiet(frames):
    X, y, Xt, yt = frames
    gi = GroupInfluence(LogisticRegression()).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was: "X has feature names, but ..."
        pred = gi.predict(Xt)
    np.testing.assert_array_equal(gi.feature_names_in_, X.columns)
    np.testing.assert_array_equal(pred, gi.estimator_.predict(Xt.to_numpy()))
    np.testing.assert_allclose(
        gi.predict_log_proba(Xt), np.log(gi.predict_proba(Xt)), rtol=1e-12
    )


# ------------------------------------------------------------ frozen models
def test_frozen_model_is_never_changed_and_a_forgotten_weight_is_named(breast_cancer):
    X, y, Xt, yt = breast_cancer
    y = y.astype(float)
    w = np.where(np.arange(len(y)) % 2 == 0, 1.0, 5.0)
    model = Ridge(alpha=1.0).fit(X, y, sample_weight=w)
    theta = np.r_[model.coef_, model.intercept_]
    # was: silently re-optimised for unit weights (another model)
    with pytest.warns(NotStationaryWarning, match="sample_weight that was not passed"):
        gi = GroupInfluence(FrozenEstimator(model)).fit(X, y)
    np.testing.assert_array_equal(gi.theta_, theta)
    assert gi.stationarity_[0] == gi.stationarity_[1] > 1e-2
    # with the weights it was fitted with: stationary, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotStationaryWarning)
        ok = GroupInfluence(FrozenEstimator(model)).fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(ok.theta_, theta)
    assert ok.stationarity_[1] < 1e-6
    ref = GroupInfluence(Ridge(alpha=1.0)).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(ok.influence_, ref.influence_, rtol=1e-7)


def test_frozen_model_of_another_width_is_refused(breast_cancer):
    X, y, _, _ = breast_cancer
    frozen = FrozenEstimator(LogisticRegression().fit(X[:, :5], y))
    with pytest.raises(ValueError, match="frozen LogisticRegression does not match"):
        GroupInfluence(frozen).fit(X, y)


# ------------------------------------------------------------------ labels
def test_mixed_type_group_labels_stay_distinct(breast_cancer):
    X, y, Xt, yt = breast_cancer
    gi = GroupInfluence(LogisticRegression(C=0.5)).fit(X, y, X_target=Xt, y_target=yt)
    n = len(y)
    mixed = np.array([1 if i % 3 == 0 else "1" for i in range(n)], dtype=object)
    res = gi.score_groups(mixed, method="interaction")  # was: one group "1"
    assert res.groups.tolist() == [1, "1"]
    assert res.size.tolist() == [int(np.sum(np.arange(n) % 3 == 0)), n - res.size[0]]
    codes = gi.score_groups((np.arange(n) % 3 != 0).astype(int), method="interaction")
    np.testing.assert_allclose(res.estimate, codes.estimate, rtol=1e-12)
    unorderable = np.empty(n, dtype=object)
    unorderable[:] = [object() if i % 2 else "a" for i in range(n)]
    with pytest.raises(ValueError, match="cannot be ordered"):
        gi.score_groups(unorderable, method="first_order")


def test_callable_target_labels_outside_classes_refused(breast_cancer):
    torch = pytest.importorskip("torch")
    X, y, Xt, yt = breast_cancer

    def phi(y, z):
        return torch.nn.functional.softplus(z) - y * z

    gi = GroupInfluence(LogisticRegression(), target=phi)
    with pytest.raises(ValueError, match=r"y_target contains labels \[7\]"):
        gi.fit(X, y, X_target=Xt, y_target=np.where(yt == 1, 7, 0))


# -------------------------------------------------------------- pipelines
def test_nan_target_through_pipeline_says_nan(breast_cancer):
    X, y, Xt, yt = breast_cancer
    Xt = Xt.copy()
    Xt[2, 3] = np.nan
    gi = GroupInfluence(make_pipeline(StandardScaler(), LogisticRegression()))
    # was: "the Hessian is numerically singular"
    with pytest.raises(ValueError, match="X_target after the pipeline.*NaN"):
        gi.fit(X, y, X_target=Xt, y_target=yt)


def test_sparse_target_through_pipeline_equals_dense(breast_cancer):
    X, y, Xt, yt = breast_cancer
    model = make_pipeline(StandardScaler(with_mean=False), LogisticRegression())
    dense = GroupInfluence(model).fit(X, y, X_target=Xt, y_target=yt)
    sparse = GroupInfluence(model).fit(X, y, X_target=sp.csr_matrix(Xt), y_target=yt)
    np.testing.assert_allclose(sparse.influence_, dense.influence_, rtol=1e-12)


def test_metadata_routing_through_a_pipeline(breast_cancer):
    X, y, Xt, yt = breast_cancer
    w = np.where(np.arange(len(y)) % 3 == 0, 2.0, 1.0)
    ref = GroupInfluence(make_pipeline(StandardScaler(), LogisticRegression())).fit(
        X, y, w, X_target=Xt, y_target=yt
    )
    with sklearn.config_context(enable_metadata_routing=True):
        model = make_pipeline(
            StandardScaler().set_fit_request(sample_weight=False),
            LogisticRegression().set_fit_request(sample_weight=True),
        )
        # was: TypeError (step__sample_weight forwarded by hand)
        gi = GroupInfluence(model).fit(X, y, sample_weight=w, X_target=Xt, y_target=yt)
        np.testing.assert_allclose(gi.influence_, ref.influence_, rtol=1e-8)
        refused = make_pipeline(
            StandardScaler().set_fit_request(sample_weight=False),
            LogisticRegression().set_fit_request(sample_weight=False),
        )
        with pytest.raises(ValueError, match="does not request it"):
            GroupInfluence(refused).fit(X, y, sample_weight=w)


# --------------------------------------------------------------- scaling
def test_features_in_units_of_1e8_are_exact_and_quiet(concrete):
    X, y, Xt, yt = concrete
    a = GroupInfluence(LinearRegression()).fit(X, y, X_target=Xt, y_target=yt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IllConditionedHessianWarning)
        # was: a round-off warning advising damping=2.6e7 (which ruins them)
        b = GroupInfluence(LinearRegression()).fit(
            X * 1e8, y, X_target=Xt * 1e8, y_target=yt
        )
    np.testing.assert_allclose(b.influence_, a.influence_, rtol=1e-6, atol=1e-12)


def test_offset_features_advise_standardising_not_damping(concrete):
    X, y, _, _ = concrete
    # was: "Pass damping>=1e8" (the damping would dwarf the intercept's curvature)
    with pytest.raises(IndefiniteHessianError, match="Standardise the features"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IllConditionedHessianWarning)
            GroupInfluence(Ridge(alpha=1e-6)).fit(X + 1e8, y)


def test_collinear_features_still_advise_damping(breast_cancer):
    X, y, _, _ = breast_cancer
    X = StandardScaler().fit_transform(X)
    Xd = np.hstack([X, X[:, :1]])  # a duplicated column, no penalty
    with pytest.raises(IndefiniteHessianError, match=r"Pass damping>="):
        GroupInfluence(LinearRegression()).fit(Xd, y.astype(float))


# ---------------------------------------------------------------- params
def test_bad_parameters_fail_at_fit(breast_cancer):
    X, y, _, _ = breast_cancer
    with pytest.raises(ValueError, match="device must be"):  # was accepted
        GroupInfluence(LogisticRegression(), device="bogus").fit(X, y)
    with pytest.raises(InvalidParameterError, match="'dtype' parameter"):
        GroupInfluence(LogisticRegression(), dtype=np.float16).fit(X, y)
    check_param_validation("GroupInfluence", GroupInfluence(LogisticRegression()))


def test_not_stationary_warning_is_a_convergence_warning(breast_cancer):
    assert issubclass(NotStationaryWarning, ConvergenceWarning)
    X, y, Xt, yt = breast_cancer
    with pytest.warns(ConvergenceWarning, match="smaller `tol`"):
        GroupInfluence(LogisticRegression(max_iter=3), polish=False).fit(X, y)
