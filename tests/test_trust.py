"""The ``reliable`` flag of ``score_groups`` and its signals (no refits inside).

References: leave-group-out refits (the flagged groups are those whose
estimate has the wrong sign), a dense generalized eigenvalue problem (the
curvature share), and the rule applied by hand.
"""

import warnings

import numpy as np
import pytest
import scipy.linalg as sla
from sklearn.cluster import KMeans
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from sklearn_groupinf import GroupInfluence, UnreliableEstimateWarning
from sklearn_groupinf._groups import GroupMembership
from sklearn_groupinf._trust import curvature_share, rule, trust_flags
from sklearn_groupinf.evaluation import leave_group_out


@pytest.fixture(scope="module")
def cancer_split():
    """Breast cancer, standardised, the 400 / 169 split of the benchmark."""
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    perm = np.random.default_rng(0).permutation(len(y))
    X, y = X[perm], y[perm]
    return X[:400], y[:400], X[400:], y[400:]


@pytest.fixture(scope="module")
def fitted(cancer_split):
    X, y, Xt, yt = cancer_split
    gi = GroupInfluence(LogisticRegression(C=1.0), method="interaction")
    return gi.fit(X, y, X_target=Xt, y_target=yt)


def _cluster_of(X, frac, centre, n_clusters=5):
    """The ``frac`` share of the rows nearest one k-means centre."""
    Z = StandardScaler().fit_transform(X)
    km = KMeans(n_clusters=n_clusters, n_init=3, random_state=0).fit(Z)
    dist = np.sum((Z - km.cluster_centers_[centre]) ** 2, axis=1)
    member = np.zeros(len(X), dtype=bool)
    member[np.argsort(dist)[: int(round(frac * len(X)))]] = True
    return member


def test_large_cluster_with_wrong_sign_is_flagged(cancer_split, fitted):
    """45 % clusters on a clean split: every wrong-sign estimate is flagged."""
    X, y, Xt, yt = cancer_split
    members = [_cluster_of(X, 0.45, c) for c in range(5)]
    wrong = 0
    for member in members:
        groups = member.astype(int)  # 1: the cluster, 0: the rest
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnreliableEstimateWarning)
            res = fitted.score_groups(groups)
        actual = leave_group_out(
            LogisticRegression(C=1.0), X, y, groups, X_target=Xt, y_target=yt
        ).actual
        bad = np.sign(res.estimate) != np.sign(actual)
        wrong += bad[1]
        # the cluster: flagged whenever its estimate has the wrong sign
        assert not (bad[1] and res.reliable[1])
    assert wrong >= 1  # the case exists here, so the test can fail


def test_the_issue_case_warns(cancer_split, fitted):
    X, y, _, _ = cancer_split
    groups = _cluster_of(X, 0.45, 4).astype(int)
    with pytest.warns(UnreliableEstimateWarning, match="flagged as unreliable"):
        res = fitted.score_groups(groups)
    assert not res.reliable[1]
    assert res.to_frame()["reliable"].tolist() == res.reliable.tolist()


@pytest.mark.parametrize("method", ["interaction", "newton"])
def test_small_random_groups_are_not_flagged(cancer_split, method):
    """Random groups of 1 % of the rows: no flag, no warning."""
    X, y, Xt, yt = cancer_split
    gi = GroupInfluence(LogisticRegression(C=0.1)).fit(X, y, X_target=Xt, y_target=yt)
    groups = np.random.default_rng(0).permutation(np.arange(400) % 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreliableEstimateWarning)
        res = gi.score_groups(groups, method=method)
    assert res.reliable.dtype == bool and res.reliable.all()


def test_small_random_groups_no_false_alarm(cancer_split, fitted):
    """Where small groups are flagged (C=1: nearly separable), refits agree.

    Every flagged group's estimate is more than 50 % off, and every estimate
    of the wrong sign is flagged.
    """
    X, y, Xt, yt = cancer_split
    groups = np.random.default_rng(0).permutation(np.arange(400) % 100)
    actual = leave_group_out(
        LogisticRegression(C=1.0), X, y, groups, X_target=Xt, y_target=yt
    ).actual
    n_flagged = 0
    for method in ("first_order", "interaction", "newton"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnreliableEstimateWarning)
            res = fitted.score_groups(groups, method=method)
        good = np.abs(res.estimate - actual) <= 0.5 * np.abs(actual)
        wrong = np.sign(res.estimate) != np.sign(actual)
        assert not np.any(good & ~res.reliable)
        assert np.all(res.reliable[wrong] == False)  # noqa: E712
        n_flagged += (~res.reliable).sum()
    assert n_flagged > 0  # the case exists here, so the test can fail


def test_curvature_share_is_the_generalized_eigenvalue(fitted):
    st = fitted._state
    H = st.solver.H
    for rows in (np.arange(10), np.arange(0, 400, 3), np.arange(300)):
        H_S = st.backend.group_hessian(rows)
        exact = sla.eigh(H_S, H, eigvals_only=True)[-1]
        assert 0 < exact < 1
        share = curvature_share(st, rows, tol=1e-8, n_iter=2000)
        assert share == pytest.approx(exact, rel=1e-4)
        # the default stops early, from below, within 0.01 of it
        fast = curvature_share(st, rows)
        assert exact - 0.01 <= fast <= exact * (1 + 1e-9)


def test_rule():
    est = np.array([1.0, 1.0, 1.0, -1.0, 1.0, 1e-3])
    ref = np.array([1.9, 2.1, -0.1, -1.5, 1.0, 1e-3])
    share = np.array([0.1, 0.1, 0.1, 0.1, 0.96, np.nan])
    np.testing.assert_array_equal(
        trust_flags(est, ref, share), [True, False, False, True, False, True]
    )
    # without a share (matrix-free fallback) only the spread decides
    np.testing.assert_array_equal(
        trust_flags(est, ref, None, max_spread=0.5),
        [False, False, False, True, True, True],
    )
    assert rule("interaction", newton_reference=True) == ("newton", 1.0, True)
    assert rule("newton", newton_reference=True) == ("interaction", 1.0, True)
    assert rule("interaction", newton_reference=False) == ("first_order", 0.5, False)
    assert rule("first_order", newton_reference=False) == ("interaction", 0.3, False)


def test_groups_flag_matches_rule_by_hand(fitted):
    groups = np.arange(400) % 3
    res = fitted.score_groups(groups, method="interaction")
    newton = fitted.score_groups(groups, method="newton").estimate
    m = GroupMembership(groups, 400)
    share = [curvature_share(fitted._state, m.members(g)) for g in range(3)]
    np.testing.assert_array_equal(
        res.reliable, trust_flags(res.estimate, newton, np.array(share))
    )


@pytest.mark.torch
def test_torch_backend_flags_like_sklearn(cancer_split, fitted):
    torch = pytest.importorskip("torch")
    from sklearn_groupinf.torch import TorchModel

    X, y, Xt, yt = cancer_split
    torch.manual_seed(0)
    net = TorchModel(
        torch.nn.Linear(30, 1),
        loss="binary_cross_entropy",
        weight_decay=1.0,
        decay_bias=False,
        device="cpu",
    )
    gi_t = GroupInfluence(net, method="interaction").fit(X, y, X_target=Xt, y_target=yt)
    groups = _cluster_of(X, 0.45, 4).astype(int) + 2 * (np.arange(400) % 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreliableEstimateWarning)
        a = fitted.score_groups(groups)
        b = gi_t.score_groups(groups)
    np.testing.assert_array_equal(a.reliable, b.reliable)
    assert not a.reliable.all()


@pytest.mark.torch
def test_matrix_free_backend_uses_the_pairwise_fallback(cancer_split):
    """CG (matrix-free) backends: no Newton, no share; the rule by hand."""
    torch = pytest.importorskip("torch")
    from sklearn_groupinf.torch import TorchModel

    X, y, Xt, yt = cancer_split
    torch.manual_seed(0)
    net = TorchModel(
        torch.nn.Linear(30, 1),
        loss="binary_cross_entropy",
        weight_decay=1.0,
        decay_bias=False,
        hessian_solver="cg",
        device="cpu",
    )
    gi = GroupInfluence(net, method="interaction").fit(X, y, X_target=Xt, y_target=yt)
    groups = _cluster_of(X, 0.45, 4).astype(int) + 2 * (np.arange(400) % 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreliableEstimateWarning)
        res = gi.score_groups(groups)
        fo = gi.score_groups(groups, method="first_order")
    np.testing.assert_array_equal(
        res.reliable, trust_flags(res.estimate, fo.estimate, None, max_spread=0.5)
    )
    np.testing.assert_array_equal(
        fo.reliable, trust_flags(fo.estimate, res.estimate, None, max_spread=0.3)
    )
