"""``leave_group_out`` against hand-written refits, and ``agreement``."""

import time
import warnings

import numpy as np
import pytest
from joblib import parallel_config
from scipy.stats import pearsonr, spearmanr
from sklearn.exceptions import ConvergenceWarning
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression, PoissonRegressor, Ridge
from sklearn.metrics import log_loss, mean_poisson_deviance, mean_squared_error
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from sklearn_groupinf import GroupInfluence
from sklearn_groupinf.evaluation import agreement, leave_group_out


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # many small BLAS calls: threads only add contention on a shared machine
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _manual(est, X, y, Xt, yt, groups, metric, sample_weight=None, wt=None):
    """Reference: drop the rows, refit, evaluate the sklearn metric."""

    def value(keep):
        if sample_weight is None:
            model = est.fit(X[keep], y[keep])
        else:
            model = est.fit(X[keep], y[keep], sample_weight=sample_weight[keep])
        if metric == "log_loss":
            return log_loss(
                yt, model.predict_proba(Xt), sample_weight=wt, labels=model.classes_
            )
        if metric == "mse":
            return mean_squared_error(yt, model.predict(Xt), sample_weight=wt)
        return mean_poisson_deviance(yt, model.predict(Xt), sample_weight=wt)

    f0 = value(np.ones(len(y), dtype=bool))
    return f0, np.array([value(groups != g) - f0 for g in np.unique(groups)])


@pytest.mark.parametrize("case", ["binary", "ridge", "poisson"])
def test_leave_group_out_equals_manual_refits_and_sklearn_metric(
    case, breast_cancer, concrete
):
    rng = np.random.default_rng(0)
    if case == "binary":
        X, y, Xt, yt = breast_cancer
        est = LogisticRegression(C=0.3, solver="newton-cholesky", tol=1e-12)
        metric = "log_loss"
    else:
        X, y, Xt, yt = concrete
        if case == "ridge":
            est, metric = Ridge(alpha=2.0), "mse"
        else:
            est = PoissonRegressor(alpha=0.01, solver="newton-cholesky", tol=1e-12)
            metric, y, yt = "poisson", y / 10, yt / 10
    sw = rng.uniform(0.5, 2.0, len(y))
    wt = rng.uniform(0.5, 2.0, len(yt))
    groups = np.array(["b", "c", "a", "d"])[rng.integers(0, 4, len(y))]
    refits = leave_group_out(
        est, X, y, groups, X_target=Xt, y_target=yt, sample_weight=sw, target_weight=wt
    )
    f0, actual = _manual(est, X, y, Xt, yt, groups, metric, sw, wt)
    # same sorted group order as score_groups, same target definition
    np.testing.assert_array_equal(refits.groups, ["a", "b", "c", "d"])
    np.testing.assert_array_equal(refits.size, [np.sum(groups == g) for g in "abcd"])
    assert refits.target_value == pytest.approx(f0, rel=1e-10)
    np.testing.assert_allclose(refits.actual, actual, rtol=1e-7)
    assert refits.converged.all()
    gi = GroupInfluence(est).fit(X, y, sw, X_target=Xt, y_target=yt, target_weight=wt)
    np.testing.assert_array_equal(gi.score_groups(groups).groups, refits.groups)
    assert gi.target_value_ == pytest.approx(f0, rel=1e-10)
    assert refits.target_name == gi.target_name_


def test_leave_group_out_without_target_uses_training_metric(breast_cancer):
    X, y, _, _ = breast_cancer
    est = LogisticRegression(C=0.3, solver="newton-cholesky", tol=1e-12)
    groups = np.arange(len(y)) % 3
    refits = leave_group_out(est, X, y, groups)
    f0 = log_loss(y, est.fit(X, y).predict_proba(X))
    f1 = log_loss(y, est.fit(X[groups != 1], y[groups != 1]).predict_proba(X))
    assert refits.target_value == pytest.approx(f0, rel=1e-10)
    assert refits.actual[1] == pytest.approx(f1 - f0, rel=1e-7)


def test_tight_refit_is_needed_and_warm_start_changes_nothing(digits):
    """The default tolerance leaves errors; the tight warm-started refit does not."""
    X, y, Xt, yt = digits
    groups = np.arange(len(y)) % 4
    est = LogisticRegression(C=0.1)  # lbfgs, default tol=1e-4
    refits = leave_group_out(est, X, y, groups, X_target=Xt, y_target=yt)
    ref = LogisticRegression(C=0.1, solver="newton-cholesky", tol=1e-12, max_iter=100)
    f0, actual = _manual(ref, X, y, Xt, yt, groups, "log_loss")
    np.testing.assert_allclose(refits.actual, actual, rtol=1e-5)
    _, loose = _manual(LogisticRegression(C=0.1), X, y, Xt, yt, groups, "log_loss")
    assert np.max(np.abs(loose / actual - 1)) > 1e-4  # why tol matters


def test_balanced_class_weight_is_frozen(breast_cancer):
    X, y, Xt, yt = breast_cancer
    est = LogisticRegression(
        C=0.3, class_weight="balanced", solver="newton-cholesky", tol=1e-12
    )
    in_S = (y == 1) & (np.arange(len(y)) % 6 == 0)  # a sixth of class 1
    with pytest.warns(UserWarning, match="class_weight='balanced'"):
        gi = GroupInfluence(est).fit(X, y, X_target=Xt, y_target=yt)
    refits = leave_group_out(est, X, y, in_S[None, :], X_target=Xt, y_target=yt)

    def change(model):
        f0 = log_loss(yt, model.fit(X, y).predict_proba(Xt))
        return log_loss(yt, model.fit(X[~in_S], y[~in_S]).predict_proba(Xt)) - f0

    frozen = dict(zip([0, 1], len(y) / (2 * np.bincount(y))))
    actual = change(
        LogisticRegression(
            C=0.3, class_weight=frozen, solver="newton-cholesky", tol=1e-12
        )
    )
    assert refits.actual[0] == pytest.approx(actual, rel=1e-7)
    recomputed = change(est)  # what "balanced" would do: every weight moves
    assert abs(recomputed - actual) > 1e-2 * abs(actual)
    newton = gi.score_groups(in_S.astype(int), method="newton").estimate[1]
    assert newton == pytest.approx(actual, rel=0.05)


def test_pipeline_keeps_preprocessing_fixed_unless_refit_all(breast_cancer):
    X, y, Xt, yt = breast_cancer
    X, Xt = X * 3.0 + 1.0, Xt * 3.0 + 1.0
    final = LogisticRegression(C=0.3, solver="newton-cholesky", tol=1e-12)
    pipe = make_pipeline(StandardScaler(), final)
    groups = np.arange(len(y)) % 3
    fixed = leave_group_out(pipe, X, y, groups, X_target=Xt, y_target=yt)
    scaler = StandardScaler().fit(X)
    _, actual = _manual(
        final, scaler.transform(X), y, scaler.transform(Xt), yt, groups, "log_loss"
    )
    np.testing.assert_allclose(fixed.actual, actual, rtol=1e-7)
    moving = leave_group_out(pipe, X, y, groups, X_target=Xt, y_target=yt, refit="all")
    _, actual_all = _manual(pipe, X, y, Xt, yt, groups, "log_loss")
    np.testing.assert_allclose(moving.actual, actual_all, rtol=1e-7)
    assert np.max(np.abs(moving.actual - fixed.actual)) > 1e-6
    # a FrozenEstimator is the warm start; the result is the same optimum
    frozen = FrozenEstimator(make_pipeline(StandardScaler(), final).fit(X, y))
    again = leave_group_out(frozen, X, y, groups, X_target=Xt, y_target=yt)
    np.testing.assert_allclose(again.actual, fixed.actual, rtol=1e-7)


def test_membership_matrix_equals_labels_for_overlapping_groups(breast_cancer):
    X, y, Xt, yt = breast_cancer
    est = LogisticRegression(C=0.3)
    rng = np.random.default_rng(1)
    masks = rng.random((3, len(y))) < 0.15  # overlapping groups
    by_matrix = leave_group_out(est, X, y, masks, X_target=Xt, y_target=yt)
    np.testing.assert_array_equal(by_matrix.groups, [0, 1, 2])
    np.testing.assert_array_equal(by_matrix.size, masks.sum(axis=1))
    for g, mask in enumerate(masks):
        by_label = leave_group_out(
            est, X, y, mask.astype(int), X_target=Xt, y_target=yt
        )
        assert by_label.actual[1] == pytest.approx(by_matrix.actual[g], rel=1e-9)


def test_n_jobs_2_equals_n_jobs_1(digits):
    X, y, Xt, yt = digits
    groups = np.arange(len(y)) % 6
    est = LogisticRegression(C=0.1)
    one = leave_group_out(est, X, y, groups, X_target=Xt, y_target=yt, n_jobs=1)
    two = leave_group_out(est, X, y, groups, X_target=Xt, y_target=yt, n_jobs=2)
    np.testing.assert_array_equal(one.groups, two.groups)
    np.testing.assert_allclose(two.actual, one.actual, rtol=1e-12, atol=1e-15)


def test_dask_local_cluster_equals_sequential(breast_cancer):
    distributed = pytest.importorskip("dask.distributed")
    X, y, Xt, yt = breast_cancer
    groups = np.arange(len(y)) % 4
    est = LogisticRegression(C=0.3)
    seq = leave_group_out(est, X, y, groups, X_target=Xt, y_target=yt, n_jobs=1)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with (
            distributed.LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            with parallel_config(backend="dask"):
                par = leave_group_out(est, X, y, groups, X_target=Xt, y_target=yt)
            # the refits did run on the cluster's worker processes
            assert sum(client.run(lambda: 1).values()) == 2
    np.testing.assert_allclose(par.actual, seq.actual, rtol=1e-12, atol=1e-15)
    assert time.perf_counter() - start < 120


def test_refit_errors_and_warnings(breast_cancer, digits):
    X, y, Xt, yt = breast_cancer
    with pytest.raises(ValueError, match="removes every training example of class"):
        leave_group_out(LogisticRegression(), X, y, y, X_target=Xt, y_target=yt)
    with pytest.raises(ValueError, match="refit must be"):
        leave_group_out(Ridge(), X, y, y, X_target=Xt, y_target=yt, refit="x")
    with pytest.raises(ValueError, match="shape"):
        leave_group_out(Ridge(), X, y, np.ones((2, 5), dtype=bool))
    with pytest.raises(ValueError, match="empty groups"):
        leave_group_out(Ridge(), X, y, np.zeros((2, len(y)), dtype=bool))
    with pytest.raises(ValueError, match="y_target was given without X_target"):
        leave_group_out(Ridge(), X, y, y, y_target=yt)
    Xd, yd, Xdt, ydt = digits
    with pytest.warns(
        ConvergenceWarning, match=r"refits \(groups \[.*\]\) stopped at max_iter"
    ):
        r = leave_group_out(
            LogisticRegression(C=10.0, max_iter=2),
            Xd,
            yd,
            np.arange(len(yd)) % 2,
            X_target=Xdt,
            y_target=ydt,
            max_iter=2,
        )
    assert not r.converged.any()


def test_agreement_against_scipy():
    rng = np.random.default_rng(0)
    act = rng.normal(size=20)
    est = act + 0.1 * rng.normal(size=20)
    r = agreement(est, act)
    assert r.pearson == pytest.approx(pearsonr(est, act)[0])
    assert r.spearman == pytest.approx(spearmanr(est, act)[0])
    assert r.median_relative_error == pytest.approx(
        np.median(np.abs(est - act) / np.abs(act))
    )
    assert r.median_abs_error == pytest.approx(np.median(np.abs(est - act)))
    assert r.n == 20
    with pytest.raises(ValueError, match="estimate has 3 values but actual has 20"):
        agreement(est[:3], act)
    with pytest.raises(ValueError, match="NaN"):
        agreement(np.r_[np.nan, est[1:]], act)
    with pytest.raises(ValueError, match="at least 2 groups"):
        agreement([1.0], [1.0])
    with pytest.warns(UserWarning, match="exactly 0"):
        r = agreement([1.0, 2.0, 3.0], [0.0, 2.0, 2.0])
    assert r.median_relative_error == pytest.approx(0.25)


def test_agreement_checks_group_alignment(breast_cancer):
    X, y, Xt, yt = breast_cancer
    est = LogisticRegression(C=0.3)
    gi = GroupInfluence(est).fit(X, y, X_target=Xt, y_target=yt)
    groups = np.arange(len(y)) % 3
    refits = leave_group_out(est, X, y, groups, X_target=Xt, y_target=yt)
    r = agreement(gi.score_groups(groups, method="newton"), refits)
    assert r.pearson > 0.99
    with pytest.raises(ValueError, match="different groups"):
        agreement(gi.score_groups(groups + 1), refits)


# ------------------------------------------------------------- feature names
def test_feature_names_checked_as_sklearn_does(breast_cancer):
    pd = pytest.importorskip("pandas")
    X, y, Xt, yt = breast_cancer
    cols = [f"f{i}" for i in range(X.shape[1])]
    Xf, Xtf = pd.DataFrame(X, columns=cols), pd.DataFrame(Xt, columns=cols)
    groups = np.arange(len(y)) % 3
    est = LogisticRegression(C=0.3, solver="newton-cholesky", tol=1e-12)
    kw = dict(y_target=yt)
    # reordered target columns used to be accepted (another target measured)
    with pytest.raises(ValueError, match="X_target does not match"):
        leave_group_out(est, Xf, y, groups, X_target=Xtf[cols[::-1]], **kw)
    with pytest.raises(ValueError, match="X_target does not match"):
        leave_group_out(est, Xf, y, groups, X_target=Xtf.iloc[:, :5], **kw)
    frozen = FrozenEstimator(clone_fit(est, Xf, y))
    with pytest.raises(ValueError, match="frozen LogisticRegression does not match"):
        leave_group_out(frozen, Xf[cols[::-1]], y, groups, X_target=Xtf, **kw)
    same = leave_group_out(est, Xf, y, groups, X_target=Xtf, **kw)
    plain = leave_group_out(est, X, y, groups, X_target=Xt, **kw)
    np.testing.assert_array_equal(same.actual, plain.actual)


def clone_fit(est, X, y):
    from sklearn.base import clone

    return clone(est).fit(X, y)


# ------------------------------------------------------------------- torch
def _torch_problem(n=300, n_groups=5, seed=0):
    """A 5-8-1 tanh MLP (57 parameters), logistic loss, k-means groups."""
    torch = pytest.importorskip("torch")
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_classification

    from sklearn_groupinf.torch import TorchModel

    X, y = make_classification(
        n_samples=n + 200,
        n_features=5,
        n_informative=4,
        n_redundant=0,
        random_state=seed,
    )
    X = StandardScaler().fit_transform(X)
    groups = KMeans(n_groups, n_init=4, random_state=seed).fit_predict(X[:n])
    torch.manual_seed(seed)
    module = torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    )
    net = TorchModel(
        module, loss="binary_cross_entropy", weight_decay=1e-1, device="cpu"
    )
    return net, X[:n], y[:n], X[n:], y[n:], groups


@pytest.mark.torch
def test_torch_refits_are_warm_started_finished_and_match_independent_refits():
    """Each torch refit starts from the fitted module and is polished to the
    influence state's stationarity; it equals an independent refit (TorchModel
    warm-started by hand from the fitted weights, long L-BFGS, GroupInfluence's
    own polish). Before, refits restarted from the initial weights and ran
    L-BFGS to an unreachable tol for 10,000 iterations."""
    import copy

    from sklearn_groupinf._hessian import polish_parameters
    from sklearn_groupinf.backends._torch_factory import make_torch_backend

    net, X, y, Xt, yt, groups = _torch_problem(n=200, n_groups=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        refits = leave_group_out(net, X, y, groups, X_target=Xt, y_target=yt)
        gi = GroupInfluence(net).fit(X, y, X_target=Xt, y_target=yt)
    assert refits.converged.all()
    assert np.all(refits.stationarity <= gi.stationarity_tol)
    assert refits.target_value == pytest.approx(gi.target_value_, rel=1e-7)
    assert np.all(refits.n_iter > 0)

    base = copy.deepcopy(net).fit(X, y)
    for g in range(2):
        keep = groups != g
        m = copy.deepcopy(base).set_params(warm_start=True, max_iter=1000, tol=1e-9)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit(X[keep], y[keep])
            be = make_torch_backend(m, X[keep], y[keep], X_target=Xt, y_target=yt)
            stat = polish_parameters(be, be.removal_gradient_norms(), tol=1e-7)
        assert stat[1] <= 1e-7
        assert refits.refit_value[g] == pytest.approx(be.target_value(), rel=1e-6)
