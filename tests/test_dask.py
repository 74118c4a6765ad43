"""GroupInfluence on Dask arrays equals the in-memory GroupInfluence.

The in-memory reference fits scikit-learn on all rows and polishes; the Dask
path fits on the first rows only and polishes with Newton steps over the
chunks, so equal results mean both reached the same optimum and computed the
same influence state. Run with Dask's synchronous scheduler (fast, no
cluster).
"""

import numpy as np
import pytest
from sklearn.linear_model import (
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
    Ridge,
)

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from sklearn_groupinf import GroupInfluence, _dask_fit  # noqa: E402

RTOL = 1e-8


@pytest.fixture(autouse=True)
def _synchronous(monkeypatch):
    monkeypatch.setattr(_dask_fit, "SAMPLE_SIZE", 300)  # a far start: polish
    with dask.config.set(scheduler="synchronous"):
        yield


def _data(kind, seed=0, n=1500, d=5):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    sw = rng.uniform(0.5, 2.0, n)
    if kind == "logistic":
        y = (X[:, 0] + rng.standard_normal(n) > 0).astype(int)
        return LogisticRegression(C=0.3), X, y, sw
    if kind == "multinomial":
        y = np.digitize(X[:, 0] + 0.7 * rng.standard_normal(n), [-0.5, 0.5])
        return LogisticRegression(C=2.0), X, y, sw
    if kind == "ridge":
        return Ridge(alpha=5.0), X, X @ rng.standard_normal(d) + rng.normal(size=n), sw
    if kind == "poisson":
        return PoissonRegressor(alpha=0.05), X, rng.poisson(np.exp(0.3 * X[:, 0])), sw
    return LinearRegression(), X, X[:, 0] - X[:, 1] + rng.normal(size=n), None


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _pair(kind, chunks=400, **params):
    est, X, y, sw = _data(kind)
    Xt, yt = X[:300] + 0.1, y[:300]
    ref = GroupInfluence(est, **params).fit(X, y, sw, X_target=Xt, y_target=yt)
    dsw = None if sw is None else da.from_array(sw, chunks=chunks)
    gi = GroupInfluence(est, **params).fit(
        da.from_array(X, chunks=(chunks, -1)),
        da.from_array(y, chunks=chunks),
        dsw,
        X_target=Xt,
        y_target=yt,
    )
    return gi, ref, X


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "kind",
    [
        "logistic",
        pytest.param("multinomial", marks=SLOW),
        pytest.param("ridge", marks=SLOW),
        "poisson",
        pytest.param("linear", marks=SLOW),
    ],
)
def test_fit_equals_in_memory(kind):
    gi, ref, X = _pair(kind)
    assert isinstance(gi.influence_, da.Array)
    assert gi.influence_.chunks[0] == (400, 400, 400, 300)  # chunked like X
    assert _rel(gi.theta_, ref.theta_) < RTOL
    assert abs(gi.target_value_ - ref.target_value_) <= RTOL * abs(ref.target_value_)
    assert _rel(gi.influence_.compute(), ref.influence_) < RTOL
    assert gi.stationarity_[1] <= 1e-6
    # the fitted estimator holds the polished optimum: same predictions as
    # the in-memory estimator polished the same way
    if kind in ("logistic", "multinomial"):
        p, q = gi.estimator_.predict_proba(X), _polished(ref).predict_proba(X)
    else:
        p, q = gi.estimator_.predict(X), _polished(ref).predict(X)
    assert _rel(p, q) < RTOL


def _polished(ref):
    """The in-memory estimator with the polished parameters written in."""
    import copy

    est = copy.deepcopy(ref.estimator_)
    coef2 = np.atleast_2d(est.coef_)
    Theta = ref.theta_.reshape(coef2.shape[0], -1)
    est.coef_ = Theta[:, : coef2.shape[1]].reshape(np.shape(est.coef_))
    if getattr(est, "fit_intercept", False):
        b = Theta[:, coef2.shape[1]]
        est.intercept_ = float(b[0]) if np.ndim(est.intercept_) == 0 else b
    return est


def test_estimator_matches_a_tight_sklearn_fit():
    # the parameters the chunked Newton polish reaches are scikit-learn's own
    # optimum (an in-memory fit at a tight tolerance)
    est, X, y, sw = _data("logistic")
    gi = GroupInfluence(est).fit(
        da.from_array(X, chunks=(350, -1)),
        da.from_array(y, chunks=350),
        da.from_array(sw, chunks=350),
        X_target=X[:200],
        y_target=y[:200],
    )
    tight = LogisticRegression(C=0.3, tol=1e-12, max_iter=10_000).fit(X, y, sw)
    assert _rel(gi.estimator_.coef_, tight.coef_) < 1e-6
    assert _rel(gi.estimator_.intercept_, tight.intercept_) < 1e-6


def test_chunk_size_does_not_change_results():
    a, _, _ = _pair("logistic", chunks=250)
    b, _, _ = _pair("logistic", chunks=1100)
    assert _rel(a.influence_.compute(), b.influence_.compute()) < 1e-10
    assert _rel(a.theta_, b.theta_) < 1e-10


@pytest.mark.filterwarnings("ignore::UserWarning")  # unreliable-group flags
@pytest.mark.parametrize(
    "method",
    [
        pytest.param("first_order", marks=SLOW),
        "interaction",
        pytest.param("newton", marks=SLOW),
        None,
    ],
)
def test_score_groups_with_dask_groups(method):
    gi, ref, X = _pair("poisson" if method == "newton" else "logistic")
    groups = np.random.default_rng(1).integers(0, 40, len(X))
    res = gi.score_groups(da.from_array(groups, chunks=400), method=method)
    exp = ref.score_groups(groups, method=method)
    assert res.method == exp.method
    np.testing.assert_array_equal(res.groups, exp.groups)
    assert _rel(res.estimate, exp.estimate) < RTOL
    assert _rel(res.first_order, exp.first_order) < RTOL
    np.testing.assert_array_equal(res.reliable, exp.reliable)


@pytest.mark.parametrize(
    "max_dense_bytes", [pytest.param(2 * 1024**3, marks=SLOW), 1000]
)
def test_select_equals_in_memory(max_dense_bytes):
    # max_dense_bytes=1000: the per-example factor is kept as chunked products
    gi, ref, _ = _pair("logistic", max_dense_bytes=max_dense_bytes)
    for method in ("first_order", "interaction"):
        s, r = gi.select(25, method=method), ref.select(25, method=method)
        np.testing.assert_array_equal(s.indices, r.indices)
        assert _rel(s.estimates, r.estimates) < RTOL


def test_dask_errors():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    est, X, y, _ = _data("logistic")
    dX, dy = da.from_array(X, chunks=(400, -1)), da.from_array(y, chunks=400)
    with pytest.raises(TypeError, match="linear models"):
        GroupInfluence(make_pipeline(StandardScaler(), est)).fit(
            dX, dy, X_target=X[:10], y_target=y[:10]
        )
    with pytest.raises(ValueError, match="X_target"):
        GroupInfluence(est).fit(dX, dy)
    order = np.argsort(y, kind="stable")  # the first rows hold one class
    with pytest.raises(ValueError, match="shuffle"):
        GroupInfluence(est).fit(
            da.from_array(X[order], chunks=(400, -1)),
            da.from_array(y[order], chunks=400),
            X_target=X[:10],
            y_target=y[:10],
        )
    with pytest.raises(ValueError, match="rows"):
        GroupInfluence(est).fit(dX, dy[:-5], X_target=X[:10], y_target=y[:10])


@pytest.mark.parametrize("kind", ["logistic", pytest.param("poisson", marks=SLOW)])
def test_self_influence_and_interaction_matrix(kind):
    gi, ref, X = _pair(kind)
    sigma = gi.self_influence()  # per example: a Dask array chunked like X
    assert isinstance(sigma, da.Array)
    assert sigma.chunks[0] == (400, 400, 400, 300)
    assert _rel(sigma.compute(), ref.self_influence()) < RTOL
    groups = np.random.default_rng(2).integers(0, 30, len(X))
    dgroups = da.from_array(groups, chunks=400)
    assert _rel(gi.self_influence(dgroups), ref.self_influence(groups)) < RTOL
    K, K_ref = gi.interaction_matrix(dgroups), ref.interaction_matrix(groups)
    assert _rel(K, K_ref) < RTOL


@pytest.mark.filterwarnings("ignore::UserWarning")  # unreliable-group flags
def test_dask_dataframe_inputs():
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    est, X, y, sw = _data("logistic")
    cols = [f"x{j}" for j in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=cols).assign(y=y, w=sw, g=np.arange(len(y)) % 9)
    df = dd.from_pandas(frame, npartitions=4)
    gi = GroupInfluence(est).fit(
        df[cols], df["y"], df["w"], X_target=X[:300] + 0.1, y_target=y[:300]
    )
    ref = GroupInfluence(est).fit(X, y, sw, X_target=X[:300] + 0.1, y_target=y[:300])
    assert _rel(gi.influence_.compute(), ref.influence_) < RTOL
    res, exp = gi.score_groups(df["g"]), ref.score_groups(frame["g"].to_numpy())
    np.testing.assert_array_equal(res.groups, exp.groups)
    assert _rel(res.estimate, exp.estimate) < RTOL


@pytest.mark.parametrize("kind", ["logistic", pytest.param("ridge", marks=SLOW)])
def test_dask_target_set(kind):
    # the target's value, gradient and Hessian reduced over its own chunks
    est, X, y, sw = _data(kind)
    Xt, yt = X[:500] + 0.1, y[:500]
    wt = np.random.default_rng(5).uniform(0.2, 3.0, 500)
    ref = GroupInfluence(est, method="interaction").fit(
        X, y, sw, X_target=Xt, y_target=yt, target_weight=wt
    )
    gi = GroupInfluence(est, method="interaction").fit(
        da.from_array(X, chunks=(400, -1)),
        da.from_array(y, chunks=400),
        da.from_array(sw, chunks=400),
        X_target=da.from_array(Xt, chunks=(130, -1)),
        y_target=da.from_array(yt, chunks=130),
        target_weight=da.from_array(wt, chunks=130),
    )
    assert abs(gi.target_value_ - ref.target_value_) <= RTOL * abs(ref.target_value_)
    assert _rel(gi.influence_.compute(), ref.influence_) < RTOL
    groups = np.arange(len(X)) % 25
    res, exp = gi.score_groups(groups), ref.score_groups(groups)
    assert _rel(res.estimate, exp.estimate) < RTOL


def _polished_target(est, X, y, sw, **kw):
    """The target at the in-memory optimum (scikit-learn fit + Newton polish)."""
    gi = GroupInfluence(est, stationarity_tol=1e-12, polish=True)
    return gi.fit(X, y, sw, **kw).target_value_


@pytest.mark.parametrize(
    "kind",
    [
        "logistic",
        pytest.param("poisson", marks=SLOW),
        pytest.param("ridge", marks=SLOW),
    ],
)
def test_leave_group_out_refits_over_chunks(kind):
    # Dask data: each refit is Newton steps over the chunks (never gathered);
    # the reference: the optimum without the group's rows, in memory
    from sklearn_groupinf.evaluation import leave_group_out

    est, X, y, sw = _data(kind, n=900)
    groups = np.arange(len(X)) % 3
    kw = dict(X_target=X[:100] + 0.1, y_target=y[:100])
    res = leave_group_out(
        est,
        da.from_array(X, chunks=(250, -1)),
        da.from_array(y, chunks=250),
        da.from_array(groups, chunks=250),
        sample_weight=da.from_array(sw, chunks=250),
        **kw,
    )
    f0 = _polished_target(est, X, y, sw, **kw)
    expect = [
        _polished_target(est, X[groups != g], y[groups != g], sw[groups != g], **kw)
        - f0
        for g in range(3)
    ]
    np.testing.assert_array_equal(res.groups, [0, 1, 2])
    np.testing.assert_array_equal(res.size, [300, 300, 300])
    assert abs(res.target_value - f0) <= RTOL * abs(f0)
    assert _rel(res.actual, expect) < RTOL
    assert res.converged.all() and np.all(res.n_iter >= 1)
    # and the in-memory refits (scikit-learn at tol=1e-10) within their own
    # stationarity: the Dask refits are the more exact ones
    ref = leave_group_out(est, X, y, groups, sample_weight=sw, **kw)
    assert _rel(res.actual, ref.actual) < max(1e-7, 10 * ref.stationarity.max())


def test_leave_group_out_dask_removing_a_class_is_refused():
    from sklearn_groupinf.evaluation import leave_group_out

    est, X, y, _ = _data("logistic", n=600)
    groups = y.copy()  # group 1 holds every example of class 1
    with pytest.raises(ValueError, match="removes every training example"):
        leave_group_out(
            est,
            da.from_array(X, chunks=(200, -1)),
            da.from_array(y, chunks=200),
            da.from_array(groups, chunks=200),
            X_target=X[:50],
            y_target=y[:50],
        )


def test_gathering_too_many_rows_raises_memory_error(monkeypatch):
    # group Newton estimates gather each group's rows when the per-group
    # Hessians would not fit in max_group_bytes; beyond max_gather_bytes the
    # request is refused before any row moves, naming the limit
    from sklearn_groupinf._dask_backend import DaskLinearBackend

    gi, _, X = _pair("logistic")
    groups = da.from_array(np.arange(len(X)) % 3, chunks=400)
    monkeypatch.setattr(DaskLinearBackend, "max_group_bytes", 0)
    monkeypatch.setattr(DaskLinearBackend, "max_gather_bytes", 1000)
    with pytest.raises(MemoryError, match="max_gather_bytes"):
        gi.score_groups(groups, method="newton")


@pytest.mark.filterwarnings("ignore::UserWarning")  # unreliable-group flags
@pytest.mark.parametrize(
    "name",
    [
        "gamma",
        pytest.param("tweedie", marks=SLOW),
        pytest.param("tweedie_identity", marks=SLOW),
        "ridge_classifier",
    ],
)
def test_other_linear_models_equal_in_memory(name):
    # the supported linear models not covered above: fit, influence and
    # group scores (Dask labels) equal the in-memory ones
    from sklearn.linear_model import GammaRegressor, RidgeClassifier, TweedieRegressor

    rng = np.random.default_rng(7)
    n = 800
    X = rng.standard_normal((n, 4))
    sw = rng.uniform(0.5, 2.0, n)
    mu = np.exp(0.3 * X[:, 0] - 0.2 * X[:, 1])
    est, y = {
        "gamma": (GammaRegressor(alpha=0.1), rng.gamma(2.0, mu / 2.0)),
        "tweedie": (TweedieRegressor(power=1.5, alpha=0.1), rng.poisson(mu) * 1.0),
        "tweedie_identity": (
            TweedieRegressor(power=0, link="identity", alpha=0.1),
            X[:, 0] + rng.normal(size=n),
        ),
        "ridge_classifier": (
            RidgeClassifier(alpha=2.0),
            np.digitize(X[:, 0] + rng.normal(size=n), [-0.5, 0.5]),
        ),
    }[name]
    kw = dict(X_target=X[:200] + 0.1, y_target=y[:200])
    ref = GroupInfluence(est).fit(X, y, sw, **kw)
    gi = GroupInfluence(est).fit(
        da.from_array(X, chunks=(250, -1)),
        da.from_array(y, chunks=250),
        da.from_array(sw, chunks=250),
        **kw,
    )
    assert _rel(gi.theta_, ref.theta_) < RTOL
    assert _rel(gi.influence_.compute(), ref.influence_) < RTOL
    groups = rng.integers(0, 12, n)
    res = gi.score_groups(da.from_array(groups, chunks=250))
    exp = ref.score_groups(groups)
    assert res.method == exp.method
    assert _rel(res.estimate, exp.estimate) < RTOL
