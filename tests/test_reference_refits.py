"""First-order and interaction-aware estimates against exact refits on real data."""

import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, PoissonRegressor, Ridge
from sklearn.metrics import log_loss, mean_poisson_deviance, mean_squared_error

from sklearn_groupinf import GroupInfluence


def _target(est, metric, X, y):
    if metric == "log_loss":
        return log_loss(y, est.predict_proba(X), labels=est.classes_)
    if metric == "mse":
        return mean_squared_error(y, est.predict(X))
    return mean_poisson_deviance(y, est.predict(X))


def _refit_changes(est, X, y, Xt, yt, metric, removals, f0):
    """Actual f(theta_{-S}) - f(theta_hat) by refitting without each S."""
    out = []
    model = clone(est)
    for rows in removals:
        keep = np.ones(len(y), dtype=bool)
        keep[rows] = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X[keep], y[keep])  # warm-started where the estimator allows
        out.append(_target(model, metric, Xt, yt) - f0)
    return np.array(out)


TIGHT = {
    "binary": LogisticRegression(
        C=1.0, solver="newton-cholesky", tol=1e-12, max_iter=1000, warm_start=True
    ),
    "binary_parity": LogisticRegression(
        C=0.1, solver="newton-cholesky", tol=1e-12, max_iter=1000, warm_start=True
    ),
    "multinomial": LogisticRegression(
        C=0.1, solver="newton-cholesky", tol=1e-12, max_iter=1000, warm_start=True
    ),
    # digits 0-4 (325 parameters): the multinomial case of the default suite
    "multinomial5": LogisticRegression(
        C=0.1, solver="newton-cholesky", tol=1e-12, max_iter=1000, warm_start=True
    ),
    "ridge": Ridge(alpha=1.0),
    "poisson": PoissonRegressor(
        alpha=0.01, solver="newton-cholesky", tol=1e-12, max_iter=1000, warm_start=True
    ),
}


def _setup(case, breast_cancer, digits, concrete):
    if case == "binary":
        return (*breast_cancer, "log_loss")
    if case == "binary_parity":  # digits: even vs odd
        X, y, Xt, yt = digits
        return X, y % 2, Xt, yt % 2, "log_loss"
    if case == "multinomial":
        return (*digits, "log_loss")
    if case == "multinomial5":
        X, y, Xt, yt = digits
        return X[y < 5], y[y < 5], Xt[yt < 5], yt[yt < 5], "log_loss"
    X, y, Xt, yt = concrete
    if case == "poisson":
        return X, y / 10.0, Xt, yt / 10.0, "poisson"
    return X, y, Xt, yt, "mse"


# multinomial (digits, 650 parameters): about a minute of refits, so ``slow``;
# the binary, ridge and Poisson cases check the same property by default
@pytest.mark.parametrize(
    "case",
    [
        "binary_parity",
        pytest.param("multinomial", marks=pytest.mark.slow),
        "multinomial5",
        "ridge",
        "poisson",
    ],
)
def test_first_order_matches_leave_one_out(case, breast_cancer, digits, concrete):
    """Pearson >= 0.999 between influence_ and exact leave-one-out refits.

    Koh & Liang's protocol: the target is the loss of one target example, where
    the first-order term dominates. For the whole target set (next assertions)
    the first-order term is smaller and the curvature terms matter: there the
    Newton estimate must still track the refits, and the interaction-aware
    estimate must not be worse than the first-order one.
    """
    X, y, Xt, yt, metric = _setup(case, breast_cancer, digits, concrete)
    est = TIGHT[case]
    rows = np.random.default_rng(0).choice(len(y), size=30, replace=False)
    singletons = np.arange(len(y))
    for j in (0, 1):
        gi = GroupInfluence(clone(est)).fit(
            X, y, X_target=Xt[j : j + 1], y_target=yt[j : j + 1]
        )
        actual = _refit_changes(
            est,
            X,
            y,
            Xt[j : j + 1],
            yt[j : j + 1],
            metric,
            [[i] for i in rows],
            gi.target_value_,
        )
        r = pearsonr(gi.influence_[rows], actual)[0]
        assert r >= 0.999, (j, r)
    gi = GroupInfluence(clone(est)).fit(X, y, X_target=Xt, y_target=yt)
    actual = _refit_changes(
        est, X, y, Xt, yt, metric, [[i] for i in rows], gi.target_value_
    )
    newton = gi.score_groups(singletons, method="newton").estimate[rows]
    inter = gi.score_groups(singletons, method="interaction").estimate[rows]
    assert pearsonr(newton, actual)[0] >= 0.999
    assert pearsonr(inter, actual)[0] >= pearsonr(gi.influence_[rows], actual)[0] - 1e-4


def _random_groups(n, rng, fractions):
    return [rng.choice(n, size=max(1, int(f * n)), replace=False) for f in fractions]


def _class_groups(labels, rng, shares=(0.3, 0.6)):
    out = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        for share in shares:
            out.append(
                rng.choice(
                    members, size=max(1, int(share * len(members))), replace=False
                )
            )
    return out


BREAST_CANCER_CLASS = pytest.param(
    "binary",
    "class",
    marks=pytest.mark.xfail(
        strict=True,
        reason="Known limitation, measured: on breast cancer (near-separable, "
        "binary LR) the target-curvature term alone overshoots for class-coherent "
        "groups (median rel. error 0.200 vs first-order 0.175); the full "
        "second_order estimate (0.073) and newton (0.089) do not.",
    ),
)


@pytest.mark.parametrize(
    "case,family",
    [
        ("binary", "random"),
        BREAST_CANCER_CLASS,
        pytest.param("multinomial", "random", marks=pytest.mark.slow),
        pytest.param("multinomial", "class", marks=pytest.mark.slow),
        ("multinomial5", "random"),
        ("multinomial5", "class"),
        ("ridge", "random"),
        ("ridge", "class"),
    ],
)
def test_interaction_beats_first_order_on_groups(
    case, family, breast_cancer, digits, concrete
):
    """Against leave-group-out refits: higher Spearman, lower median rel. error.

    Random groups of 1-20 % of n (40 groups) and class-coherent groups (5-50 %
    of one class; concrete: quartiles of the target as classes).
    """
    X, y, Xt, yt, metric = _setup(case, breast_cancer, digits, concrete)
    est = TIGHT[case]
    gi = GroupInfluence(clone(est)).fit(X, y, X_target=Xt, y_target=yt)
    rng = np.random.default_rng(1)
    if family == "random":
        removals = _random_groups(len(y), rng, np.linspace(0.01, 0.2, 40))
    else:
        labels = (
            y if case != "ridge" else np.digitize(y, np.quantile(y, [0.25, 0.5, 0.75]))
        )
        removals = _class_groups(labels, rng, shares=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5))
    actual = _refit_changes(est, X, y, Xt, yt, metric, removals, gi.target_value_)
    # score each removal as a two-group labelling: the group vs the rest
    est_first, est_inter = [], []
    for rows in removals:
        g = np.zeros(len(y), dtype=int)
        g[rows] = 1
        res = gi.score_groups(g, method="interaction")
        est_first.append(res.first_order[1])
        est_inter.append(res.estimate[1])
    est_first, est_inter = np.array(est_first), np.array(est_inter)
    rel = lambda e: np.median(np.abs(e - actual) / np.abs(actual))
    sp = lambda e: spearmanr(e, actual)[0]
    assert rel(est_inter) < rel(est_first), (rel(est_inter), rel(est_first))
    assert sp(est_inter) >= sp(est_first), (sp(est_inter), sp(est_first))
