"""GroupSelector: pipelines, GridSearchCV with routed groups, imblearn, checks."""

import warnings

import numpy as np
import pytest
import sklearn
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import (
    check_param_validation,
    parametrize_with_checks,
)

from sklearn_groupinf import GroupInfluence, GroupSelector
from sklearn_groupinf._cleaning import leave_group_out_log_proba
from sklearn_groupinf._cross_fit import fold_target


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    groups = np.random.default_rng(0).integers(0, 40, size=len(y))
    return X, y, groups


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    groups = np.arange(len(y)) // 15  # 30 contiguous blocks of 15 rows
    return X, y, groups


def _lr():
    return LogisticRegression(tol=1e-10, max_iter=1000)


def _newton_loo_loss(X, y):
    """Log-loss of each row's label one Newton step after removing the row."""
    gi = GroupInfluence(_lr()).fit(X, y)
    n = len(y)
    log_proba = leave_group_out_log_proba(gi._state, np.arange(n), n)
    return -np.array([lp[0, c] for lp, c in zip(log_proba, y)])


def test_newton_loo_loss_is_close_to_refits(cancer):
    # the row signal against exact leave-one-out refits, on 40 rows with the
    # largest first-order scores (high leverage or a wrong label): one Newton
    # step is much closer than own loss + self-influence
    X, y, _ = cancer
    X, y = X[:, :8], y.copy()
    y[:10] = 1 - y[:10]
    gi = GroupInfluence(_lr()).fit(X, y)
    proba = gi.predict_proba(X)[np.arange(len(y)), y]
    first = -np.log(proba) + gi.self_influence()  # C = 1: l_i is the log-loss
    newton = _newton_loo_loss(X, y)
    rows = np.argsort(-first)[:40]
    exact = np.empty(len(rows))
    for t, i in enumerate(rows):
        keep = np.arange(len(y)) != i
        m = _lr().fit(X[keep], y[keep])
        exact[t] = -np.log(m.predict_proba(X[i : i + 1])[0, y[i]])
    rel_newton = np.max(np.abs(newton[rows] - exact) / exact)  # measured 0.006
    rel_first = np.max(np.abs(first[rows] - exact) / exact)  # measured 0.07
    assert rel_newton < 0.02
    assert rel_newton < 0.25 * rel_first


# --------------------------------------------------------------- reference
def test_removal_equals_groupinfluence_select_on_same_split(cancer):
    X, y, _ = cancer
    sel = GroupSelector(
        _lr(), budget=20, validation=0.2, n_rounds=1, random_state=0
    ).fit(X, y)
    ((pool, target),) = sel.splits_
    # the split: a stratified 20 % hold-out, disjoint from the pool
    assert len(target) == int(np.ceil(0.2 * len(y)))
    assert_array_equal(np.sort(np.concatenate([pool, target])), np.arange(len(y)))
    for c in (0, 1):
        assert abs(np.sum(y[target] == c) - 0.2 * np.sum(y == c)) <= 1
    # the removal: exactly what GroupInfluence.select picks on that split
    gi = GroupInfluence(_lr()).fit(
        X[pool], y[pool], X_target=X[target], y_target=y[target]
    )
    ref = gi.select(20, method="interaction")
    assert_array_equal(sel.removed_indices_, pool[ref.indices])
    assert_allclose(sel.selections_[0].estimates, ref.estimates)
    assert not np.isin(sel.removed_indices_, target).any()
    # kept rows are the complement; the refit is a plain fit on them
    assert_array_equal(
        sel.sample_indices_, np.setdiff1d(np.arange(len(y)), sel.removed_indices_)
    )
    plain = _lr().fit(X[sel.sample_indices_], y[sel.sample_indices_])
    assert_allclose(sel.estimator_.coef_, plain.coef_, rtol=1e-10, atol=1e-12)
    assert_allclose(sel.predict_proba(X), plain.predict_proba(X), atol=1e-12)
    assert sel.score(X, y) == plain.score(X, y)


def test_removal_lowers_the_measured_target_loss(cancer):
    # the selected removal must actually lower the validation log-loss when the
    # pool is refitted without it (a measured refit, not the estimate)
    X, y, _ = cancer
    sel = GroupSelector(
        _lr(), budget=10, validation=0.2, n_rounds=1, random_state=1
    ).fit(X, y)
    ((pool, target),) = sel.splits_
    before = log_loss(y[target], _lr().fit(X[pool], y[pool]).predict_proba(X[target]))
    kept = np.setdiff1d(pool, sel.removed_indices_)
    after = log_loss(y[target], _lr().fit(X[kept], y[kept]).predict_proba(X[target]))
    est = sel.selections_[0].estimates[-1]
    assert est < 0 and after < before
    # measured -0.0271 vs estimated -0.0218 (19 %): the pairwise estimate on a
    # greedily chosen set
    assert_allclose(after - before, est, rtol=0.25)


def test_cross_fit_ranks_globally_on_a_trimmed_held_out_target(cancer):
    # one round, first order: the removal is the top-k of the folds' summed
    # influences on their held-out rows that do not look noisy, recomputed
    # here from GroupInfluence directly
    X, y, _ = cancer
    y = y.copy()
    y[:15] = 1 - y[:15]
    k = 20
    sel = GroupSelector(
        _lr(),
        budget=k,
        method="first_order",
        validation="cross_fit",
        n_rounds=1,
        random_state=0,
    ).fit(X, y)
    folds = sel.rounds_[0]["folds"]
    assert len(folds) == 5
    loo = _newton_loo_loss(X, y)
    noisy = loo > np.log(2)  # LOO probability of the label below 1/2
    assert sel.rounds_[0]["n_noisy_rows"] == noisy.sum() > 0
    targets = np.concatenate([t for _, t in folds])
    assert_array_equal(np.sort(targets), np.flatnonzero(~noisy))  # disjoint
    total = np.zeros(len(y))
    for pool, target in folds:
        assert not np.isin(pool, target).any()
        ref = GroupInfluence(_lr()).fit(
            X[pool], y[pool], X_target=X[target], y_target=y[target]
        )
        total[pool] += ref.influence_ * len(target)
    assert_array_equal(sel.removed_indices_, np.argsort(total, kind="stable")[:k])
    assert_allclose(sel.rounds_[0]["estimates"][-1], np.sort(total)[:k].sum())


def test_budget_zero_is_a_plain_fit(cancer):
    X, y, _ = cancer
    sel = GroupSelector(_lr(), budget=0).fit(X, y)
    assert sel.removed_indices_.shape == (0,)
    assert_array_equal(sel.sample_indices_, np.arange(len(y)))
    assert_allclose(sel.estimator_.coef_, _lr().fit(X, y).coef_)
    sel = GroupSelector(_lr(), budget=0.0).fit(X, y)
    assert sel.removed_indices_.shape == (0,)


def test_sample_weight_is_sliced(cancer):
    X, y, _ = cancer
    w = np.random.default_rng(3).uniform(0.2, 3.0, size=len(y))
    sel = GroupSelector(
        _lr(), budget=15, validation=0.2, n_rounds=1, random_state=2
    ).fit(X, y, sample_weight=w)
    ((pool, target),) = sel.splits_
    gi = GroupInfluence(_lr()).fit(
        X[pool],
        y[pool],
        w[pool],
        X_target=X[target],
        y_target=y[target],
        target_weight=w[target],
    )
    assert_array_equal(sel.removed_indices_, pool[gi.select(15).indices])
    keep = sel.sample_indices_
    plain = _lr().fit(X[keep], y[keep], sample_weight=w[keep])
    assert_allclose(sel.estimator_.coef_, plain.coef_, rtol=1e-10, atol=1e-12)
    # the weights matter: unweighted selection or refit differs
    unweighted = GroupSelector(
        _lr(), budget=15, validation=0.2, n_rounds=1, random_state=2
    ).fit(X, y)
    assert not np.allclose(unweighted.estimator_.coef_, sel.estimator_.coef_)


# ---------------------------------------------------------------- pipelines
def test_pipeline_removes_whole_groups(diabetes):
    X, y, groups = diabetes
    pipe = make_pipeline(
        StandardScaler(),
        GroupSelector(
            Ridge(),
            budget=3,
            groups_as_units=True,
            validation=0.2,
            n_rounds=1,
            random_state=0,
        ),
    )
    assert is_regressor(pipe)
    pipe.fit(X, y, groupselector__groups=groups)
    sel = pipe[-1]
    assert len(sel.removed_groups_) == 3
    # validation holds out whole groups; removed rows are exactly their rows
    ((pool, target),) = sel.splits_
    assert not np.isin(groups[target], groups[pool]).any()
    assert not np.isin(sel.removed_groups_, groups[target]).any()
    assert_array_equal(
        np.sort(sel.removed_indices_),
        np.flatnonzero(np.isin(groups, sel.removed_groups_)),
    )
    Xs = pipe[0].transform(X)
    gi = GroupInfluence(Ridge()).fit(
        Xs[pool], y[pool], X_target=Xs[target], y_target=y[target]
    )
    assert_array_equal(sel.removed_groups_, gi.select(3, groups=groups[pool]).groups)
    plain = Ridge().fit(Xs[sel.sample_indices_], y[sel.sample_indices_])
    assert_allclose(pipe.predict(X), plain.predict(Xs), rtol=1e-10)


def test_gridsearch_routes_the_same_groups_as_groupkfold(cancer):
    X, y, groups = cancer
    w = np.random.default_rng(1).uniform(0.5, 2.0, size=len(y))
    seen = []

    class Recording(GroupSelector):
        def fit(self, X, y, groups=None, sample_weight=None):
            seen.append((len(X), groups, sample_weight))
            return super().fit(X, y, groups=groups, sample_weight=sample_weight)

    with sklearn.config_context(enable_metadata_routing=True):
        selector = (
            Recording(
                LogisticRegression().set_fit_request(sample_weight=True),
                groups_as_units=True,
                random_state=0,
            )
            .set_fit_request(groups=True, sample_weight=True)
            .set_score_request(sample_weight=True)
        )
        scaler = StandardScaler().set_fit_request(sample_weight=False)
        pipe = make_pipeline(scaler, selector)
        assert is_classifier(pipe)
        grid = {
            "recording__budget": [0, 0.02, 0.05],
            "recording__estimator__C": [0.1, 1],
        }
        cv = GroupKFold(n_splits=3)
        search = GridSearchCV(pipe, grid, cv=cv).fit(
            X, y, groups=groups, sample_weight=w
        )
    assert len(search.cv_results_["params"]) == 6
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    folds = list(cv.split(X, y, groups))
    n_fits = 6 * len(folds) + 1
    assert len(seen) == n_fits
    for i, (n, g, sw) in enumerate(seen[:-1]):
        train = folds[i % len(folds)][0]
        assert n == len(train)
        assert_array_equal(g, groups[train])  # routed groups = CV's groups
        assert_array_equal(sw, w[train])
    assert_array_equal(seen[-1][1], groups)  # the final refit on all rows
    best = search.best_estimator_[-1]
    n_groups = len(np.unique(groups))
    expect = {0: 0, 0.02: max(1, int(0.02 * n_groups)), 0.05: int(0.05 * n_groups)}
    assert len(best.removed_groups_) == expect[best.budget]
    assert_array_equal(
        np.sort(best.removed_indices_),
        np.flatnonzero(np.isin(groups, best.removed_groups_)),
    )


def test_routing_slices_sample_weight_through_pipeline(cancer):
    X, y, _ = cancer
    w = np.random.default_rng(5).uniform(0.2, 3.0, size=len(y))
    with sklearn.config_context(enable_metadata_routing=True):
        sel = GroupSelector(
            _lr().set_fit_request(sample_weight=True), budget=12, random_state=0
        ).set_fit_request(sample_weight=True)
        scaler = StandardScaler().set_fit_request(sample_weight=False)
        pipe = make_pipeline(scaler, sel).fit(X, y, sample_weight=w)
    direct = GroupSelector(_lr(), budget=12, random_state=0).fit(
        StandardScaler().fit_transform(X), y, sample_weight=w
    )
    assert_array_equal(pipe[-1].removed_indices_, direct.removed_indices_)
    assert_allclose(pipe[-1].estimator_.coef_, direct.estimator_.coef_)


def test_fit_resample_in_imblearn_pipeline(cancer, diabetes):
    imblearn_pipeline = pytest.importorskip("imblearn.pipeline")
    X, y, groups = cancer
    pipe = imblearn_pipeline.Pipeline(
        [
            ("sel", GroupSelector(_lr(), budget=0.05, random_state=0)),
            ("clf", _lr()),
        ]
    ).fit(X, y)
    sel = pipe["sel"]
    assert not hasattr(sel, "estimator_")  # fit_resample does not refit
    ref = GroupSelector(_lr(), budget=0.05, random_state=0).fit(X, y)
    assert_array_equal(sel.sample_indices_, ref.sample_indices_)
    assert_allclose(pipe["clf"].coef_, ref.estimator_.coef_, rtol=1e-10)
    assert_allclose(pipe.predict_proba(X), ref.predict_proba(X), atol=1e-12)

    # regressor, groups routed to fit_resample
    Xd, yd, gd = diabetes
    with sklearn.config_context(enable_metadata_routing=True):
        sel = (
            GroupSelector(Ridge(), budget=2, groups_as_units=True, random_state=0)
            .set_fit_request(groups=True)
            .set_fit_resample_request(groups=True)
        )
        pipe = imblearn_pipeline.Pipeline(
            [("scale", StandardScaler()), ("sel", sel), ("reg", Ridge())]
        )
        pipe.fit(Xd, yd, groups=gd)
    kept = pipe["sel"].sample_indices_
    assert len(pipe["sel"].removed_groups_) == 2
    assert len(kept) == len(yd) - np.isin(gd, pipe["sel"].removed_groups_).sum()
    Xs = pipe["scale"].transform(Xd)
    assert_allclose(pipe["reg"].coef_, Ridge().fit(Xs[kept], yd[kept]).coef_)


def test_fit_resample_returns_two_arrays_and_keeps_containers(diabetes):
    pd = pytest.importorskip("pandas")
    X, y, _ = diabetes
    Xf = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    ys = pd.Series(y, name="target")
    out = GroupSelector(Ridge(), budget=0.1, random_state=0).fit_resample(Xf, ys)
    assert isinstance(out, tuple) and len(out) == 2
    Xr, yr = out
    assert isinstance(Xr, pd.DataFrame) and isinstance(yr, pd.Series)
    assert len(Xr) == len(yr) == len(y) - int(0.1 * len(y))
    assert_array_equal(Xr.index, yr.index)


# ------------------------------------------------------------- bad input
def test_budget_at_least_the_pool_is_refused(cancer):
    X, y, _ = cancer
    n_pool = len(y) - int(np.ceil(0.2 * len(y)))
    with pytest.raises(
        ValueError,
        match=rf"budget={n_pool}.*pool has {n_pool}"
        r".*validation split.*budget <=",
    ):
        GroupSelector(_lr(), budget=n_pool, validation=0.2, random_state=0).fit(X, y)
    # cross-fitting: every row is a candidate, each half keeps one row
    with pytest.raises(
        ValueError,
        match=rf"budget={len(y) - 1} means removing {len(y) - 1} examples.*"
        rf"there are {len(y)} examples.*budget <= {len(y) - 2}",
    ):
        GroupSelector(_lr(), budget=len(y) - 1).fit(X, y)
    with pytest.raises(InvalidParameterError, match="'budget' parameter"):
        GroupSelector(_lr(), budget=1.0).fit(X, y)
    with pytest.raises(InvalidParameterError, match="'budget' parameter"):
        GroupSelector(_lr(), budget=-1).fit(X, y)


def test_vanishing_class_is_refused():
    # 3 classes, cross-fitting (every row a candidate), budget leaving 2 rows
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    y = np.repeat([0, 1, 2], 10)
    X[:, 0] += y
    with pytest.raises(
        ValueError,
        match=r"budget=28\) would remove every row of "
        r"class \d \(10 rows\).*Lower budget",
    ):
        GroupSelector(_lr(), budget=28, validation="cross_fit", random_state=0).fit(
            X, y
        )


def test_groups_of_the_wrong_length(cancer):
    X, y, groups = cancer
    with pytest.raises(
        ValueError,
        match=rf"groups has shape \(10,\) but X has "
        rf"{len(y)} rows.*one group label per row",
    ):
        GroupSelector(_lr(), groups_as_units=True).fit(X, y, groups=groups[:10])
    with pytest.raises(ValueError, match="groups_as_units=True.*groups=None"):
        GroupSelector(_lr(), groups_as_units=True).fit(X, y)


def test_frozen_estimator_is_refused(cancer):
    X, y, _ = cancer
    frozen = FrozenEstimator(_lr().fit(X, y))
    with pytest.raises(TypeError, match="FrozenEstimator"):
        GroupSelector(frozen).fit(X, y)


def test_unfitted_selector_does_not_predict(cancer):
    X, y, _ = cancer
    with pytest.raises(sklearn.exceptions.NotFittedError):
        GroupSelector(_lr()).predict(X)
    assert not hasattr(GroupSelector(Ridge()), "predict_proba")


# ---------------------------------------------------------- common checks
def _expected_failed_checks(estimator):
    return {
        "check_sample_weight_equivalence_on_dense_data": (
            "removal is counted in rows and the validation split is drawn over "
            "rows, so dropping (weight 0) or repeating (integer weight) rows "
            "changes which rows are held out and removed"
        ),
    }


@parametrize_with_checks(
    [
        GroupSelector(LogisticRegression()),
        GroupSelector(Ridge()),
        GroupSelector(Ridge(), validation=0.2, method="first_order"),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_param_validation():
    check_param_validation("GroupSelector", GroupSelector(Ridge()))


def test_tags_follow_the_estimator():
    assert is_classifier(GroupSelector(LogisticRegression()))
    assert is_regressor(GroupSelector(Ridge()))
    assert is_classifier(
        clone(GroupSelector(make_pipeline(StandardScaler(), LogisticRegression())))
    )


# --------------------------------------------- cleaning without clean data
@pytest.fixture(scope="module")
def noisy_cancer(cancer):
    X, y, _ = cancer
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(y), size=40, replace=False)
    y_noisy = y.copy()
    y_noisy[flipped] = 1 - y_noisy[flipped]
    return X, y_noisy, flipped


def test_default_selector_finds_flipped_labels(noisy_cancer):
    # 40 of 569 labels flipped (7 %): a random removal of 40 rows catches 7 %
    # of them on average; the default selector must catch most
    X, y, flipped = noisy_cancer
    sel = GroupSelector(LogisticRegression(), budget=40, random_state=0).fit(X, y)
    precision = np.isin(sel.removed_indices_, flipped).mean()
    assert precision >= 0.7
    # and the refit on the kept rows fits the clean structure better
    clean = y.copy()
    clean[flipped] = 1 - clean[flipped]
    full = LogisticRegression().fit(X, y)
    assert log_loss(clean, sel.predict_proba(X)) < log_loss(
        clean, full.predict_proba(X)
    )


def test_default_ranks_rows_by_approximate_loo_loss(cancer):
    # validation="auto" on rows: one round removes the k rows with the largest
    # one-Newton-step leave-one-out loss, recomputed here from GroupInfluence
    X, y, _ = cancer
    y = y.copy()
    y[:15] = 1 - y[:15]
    sel = GroupSelector(_lr(), budget=20, n_rounds=1).fit(X, y)
    loo = _newton_loo_loss(X, y)
    assert_array_equal(sel.removed_indices_, np.argsort(-loo, kind="stable")[:20])
    assert_allclose(sel.rounds_[0]["loo_loss"], np.sort(loo)[::-1][:20])


def test_budget_auto_removes_the_clearly_noisy_rows_of_each_round(noisy_cancer):
    # a classifier's rows: each round removes every row whose approximate LOO
    # probability of its label is below 0.35 / n_classes under the model
    # refitted without the rows removed so far (recomputed here from
    # GroupInfluence on the kept rows)
    X, y, flipped = noisy_cancer
    sel = GroupSelector(LogisticRegression(), budget="auto", random_state=0).fit(X, y)
    n_removed = len(sel.removed_indices_)
    assert n_removed == sum(len(r["units"]) for r in sel.rounds_)
    assert n_removed > 0
    assert np.isin(sel.removed_indices_, flipped).mean() >= 0.8
    kept = np.ones(len(y), dtype=bool)
    for r in sel.rounds_:
        rows = np.flatnonzero(kept)
        loo = _newton_loo_loss(X[rows], y[rows])
        expected = rows[loo > np.log(2 / 0.35)]
        assert_array_equal(np.sort(r["units"]), np.sort(expected))
        assert r["n_noisy_rows"] == len(expected)
        kept[r["units"]] = False
    # cleaning stopped because no clearly noisy row was left, or after the
    # n_rounds rounds
    assert len(sel.rounds_) == 3 or len(sel.rounds_[-1]["units"]) == 0


def test_budget_auto_is_stricter_than_chance_on_overlapping_classes():
    # two overlapping Gaussian classes (Bayes error about 24 %), no label
    # flipped: many correct rows are below chance without themselves, but
    # few are below 0.35 of it; "auto" removes only those
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=400)
    X = rng.normal(size=(400, 3)) + 0.7 * (2 * y[:, None] - 1) * [1, 0, 0]
    sel = GroupSelector(LogisticRegression(), budget="auto", random_state=0).fit(X, y)
    loo = _newton_loo_loss(X, y)
    below_chance = int(np.sum(loo > np.log(2)))
    assert below_chance > 60
    assert len(sel.removed_indices_) < below_chance / 3


def test_budget_auto_cross_fit_stops_when_the_robust_target_stops_improving(
    noisy_cancer,
):
    # cross-fitted: each round stops when no unit is estimated to lower the
    # robust target
    X, y, _ = noisy_cancer
    cf = GroupSelector(
        LogisticRegression(), budget="auto", validation="cross_fit", random_state=0
    ).fit(X, y)
    assert 0 < len(cf.removed_indices_) <= cf.rounds_[0]["n_noisy_rows"]
    for r in cf.rounds_:
        assert np.all(np.diff(np.concatenate([[0.0], r["estimates"]])) < 0)


def test_groups_and_sample_weight_are_keyword_only(cancer):
    X, y, groups = cancer
    w = np.ones(len(y))
    with pytest.raises(TypeError, match="positional"):
        GroupSelector(_lr(), budget=2).fit(X, y, w)
    with pytest.raises(TypeError, match="positional"):
        GroupSelector(_lr(), budget=2).fit_resample(X, y, groups)


def _blobs_with_two_flipped(seed, n_groups=20, size=20, dim=2):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(n_groups, dim))
    # clusters clearly on one side of the boundary sum(x) = 0
    side = np.sign(centers.sum(axis=1))
    centers += 1.5 * side[:, None]
    groups = np.repeat(np.arange(n_groups), size)
    X = centers[groups] + rng.normal(size=(len(groups), dim))
    y = (X.sum(axis=1) > 0).astype(int)
    bad = rng.choice(n_groups, size=2, replace=False)
    y_noisy = np.where(np.isin(groups, bad), 1 - y, y)
    return X, y_noisy, groups, bad


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_groups_are_ranked_globally_both_bad_groups_found(seed):
    X, y, groups, bad = _blobs_with_two_flipped(seed)
    sel = GroupSelector(
        LogisticRegression(), budget=2, groups_as_units=True, random_state=seed
    ).fit(X, y, groups=groups)
    assert_array_equal(np.sort(sel.removed_groups_), np.sort(bad))
    assert_array_equal(
        np.sort(sel.removed_indices_), np.flatnonzero(np.isin(groups, bad))
    )


def test_class_coherent_multiclass_groups_do_not_crash():
    # every group holds one class and class 2 has only two groups, so some
    # folds' training parts lack a class
    rng = np.random.default_rng(0)
    cls = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    groups = np.repeat(np.arange(10), 15)
    y = cls[groups]
    X = rng.normal(size=(len(y), 3)) + 2.0 * np.eye(3)[y]
    for validation in ("auto", "cross_fit"):
        sel = GroupSelector(
            LogisticRegression(),
            budget=1,
            groups_as_units=True,
            validation=validation,
            random_state=0,
        ).fit(X, y, groups=groups)
        assert len(sel.removed_groups_) == 1
        assert_array_equal(sel.classes_, [0, 1, 2])
    # a fold whose training part holds a single class is refused clearly
    with pytest.raises(ValueError, match=r"holds only class \[1\].*n_folds"):
        fold_target(np.array([1, 1, 1]), np.array([0, 1]), classifier=True)
    assert_array_equal(
        fold_target(np.array([0, 1, 1]), np.array([0, 2, 1]), classifier=True),
        [True, False, True],
    )


def test_metadata_routing_through_a_pipeline(cancer):
    X, y, _ = cancer
    w = np.random.default_rng(7).uniform(0.3, 2.0, size=len(y))
    direct = GroupSelector(_lr(), budget=10, n_rounds=2, random_state=0).fit(
        X, y, sample_weight=w
    )
    with sklearn.config_context(enable_metadata_routing=True):
        inner = make_pipeline(
            StandardScaler().set_fit_request(sample_weight=False),
            _lr().set_fit_request(sample_weight=True),
        )
        sel = GroupSelector(
            inner, budget=10, n_rounds=2, random_state=0
        ).set_fit_request(sample_weight=True)
        pipe = make_pipeline(
            StandardScaler().set_fit_request(sample_weight=False), sel
        ).fit(X, y, sample_weight=w)
    # X is already standardised, so the inner scaler is (nearly) the identity
    assert_array_equal(pipe[-1].sample_indices_, direct.sample_indices_)
    keep = direct.sample_indices_
    ref = make_pipeline(StandardScaler(), _lr()).fit(
        X[keep], y[keep], logisticregression__sample_weight=w[keep]
    )
    assert_allclose(pipe[-1].estimator_[-1].coef_, ref[-1].coef_, rtol=1e-6)
    with sklearn.config_context(enable_metadata_routing=True):
        unrequested = GroupSelector(
            _lr().set_fit_request(sample_weight=False), budget=5
        ).set_fit_request(sample_weight=True)
        with pytest.raises(ValueError, match="does not request it"):
            unrequested.fit(X, y, sample_weight=w)


def test_predict_on_a_dataframe_does_not_warn_about_feature_names(cancer):
    pd = pytest.importorskip("pandas")
    X, y, _ = cancer
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    sel = GroupSelector(_lr(), budget=5, n_rounds=1, random_state=0).fit(df, y)
    assert_array_equal(sel.feature_names_in_, df.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sel.predict(df.iloc[:5])
        sel.predict_proba(df.iloc[:5])
