"""The scikit-learn linear backend against finite differences and sklearn itself."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import (
    GammaRegressor,
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
    TweedieRegressor,
)
from sklearn.metrics import (
    log_loss,
    mean_gamma_deviance,
    mean_poisson_deviance,
    mean_squared_error,
    mean_tweedie_deviance,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from sklearn_groupinf import UnsupportedEstimatorError
from sklearn_groupinf.backends import get_backend


def _data(kind, n=150):
    rng = np.random.default_rng(0)
    if kind == "binary":
        X, y = load_breast_cancer(return_X_y=True)
        X = StandardScaler().fit_transform(X)[:, :8]
    elif kind == "multiclass":
        X, y = load_digits(n_class=4, return_X_y=True)
        X = X[:, ::4] / 16.0
    else:
        X, y = load_diabetes(return_X_y=True)
        X = StandardScaler().fit_transform(X)
        if kind == "positive":
            y = y / 50.0
        elif kind == "multioutput":
            y = np.column_stack([y, 0.5 * y + rng.normal(size=len(y)) * 10])
    idx = rng.permutation(len(X))[:n]
    return X[idx], y[idx], rng.uniform(0.5, 2.0, size=n)


CASES = {
    "logistic_binary": (
        lambda: LogisticRegression(C=0.7, tol=1e-12, max_iter=10000),
        "binary",
        {0: 1.0, 1: 2.5},
    ),
    "logistic_liblinear": (
        lambda: LogisticRegression(
            C=0.7, solver="liblinear", tol=1e-12, max_iter=10000, intercept_scaling=2.0
        ),
        "binary",
        None,
    ),
    "logistic_multinomial": (
        lambda: LogisticRegression(
            C=0.3, solver="newton-cholesky", tol=1e-12, max_iter=1000
        ),
        "multiclass",
        {0: 1.0, 1: 0.5, 2: 2.0, 3: 1.0},
    ),
    "logistic_unpenalised": (
        lambda: LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000),
        "multiclass",
        None,
    ),
    "ridge": (lambda: Ridge(alpha=3.0), "regression", None),
    "ridge_multioutput": (lambda: Ridge(alpha=[1.0, 5.0]), "multioutput", None),
    "ridge_classifier": (
        lambda: RidgeClassifier(alpha=2.0),
        "binary",
        {0: 1.0, 1: 3.0},
    ),
    "ridge_classifier_multi": (lambda: RidgeClassifier(alpha=2.0), "multiclass", None),
    "linear_regression": (lambda: LinearRegression(), "regression", None),
    "poisson": (
        lambda: PoissonRegressor(alpha=0.1, tol=1e-12, max_iter=1000),
        "positive",
        None,
    ),
    "gamma": (
        lambda: GammaRegressor(alpha=0.1, tol=1e-12, max_iter=1000),
        "positive",
        None,
    ),
    "tweedie": (
        lambda: TweedieRegressor(power=1.5, alpha=0.1, tol=1e-12, max_iter=1000),
        "positive",
        None,
    ),
    "tweedie_normal": (
        lambda: TweedieRegressor(power=0, alpha=0.1, tol=1e-12, max_iter=1000),
        "regression",
        None,
    ),
}


def _fitted_backend(name, **kw):
    make, kind, cw = CASES[name]
    X, y, sw = _data(kind)
    est = make()
    if cw is not None:
        est.set_params(class_weight=cw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y, sample_weight=sw)
    backend = get_backend(
        est, X, y, sample_weight=sw, X_target=X[:40], y_target=y[:40], **kw
    )
    return est, backend, (X, y, sw)


def _fd_gradient(f, theta, eps=1e-4):
    out = np.empty_like(theta)
    for j in range(len(theta)):
        e = np.zeros_like(theta)
        e[j] = eps
        out[j] = (f(theta + e) - f(theta - e)) / (2 * eps)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_vanishes_at_sklearn_fit(name):
    """grad J(theta_hat) ~ 0 at sklearn's own fit (catches every scaling error)."""
    _, backend, _ = _fitted_backend(name)
    g = backend.gradient()
    if backend.null_space is not None:
        g = g - backend.null_space @ (backend.null_space.T @ g)
    scale = np.abs(backend.removal_gradients()).max()
    assert np.abs(g).max() <= 1e-5 * scale


@pytest.mark.parametrize("name", sorted(CASES))
def test_derivatives_match_finite_differences(name):
    """Objective gradient/Hessian, target gradient/Hessian, third derivatives."""
    _, backend, _ = _fitted_backend(name)
    rng = np.random.default_rng(1)
    theta0 = backend.get_theta() + 0.05 * rng.normal(size=backend.n_params)
    backend.set_theta(theta0)
    fd = _fd_gradient(backend.objective, theta0)
    np.testing.assert_allclose(
        backend.gradient(), fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max()
    )

    def grad_at(t):
        backend.set_theta(t)
        return backend.gradient()

    v = rng.normal(size=backend.n_params)
    eps = 1e-5
    hv_fd = (grad_at(theta0 + eps * v) - grad_at(theta0 - eps * v)) / (2 * eps)
    backend.set_theta(theta0)
    H = backend.hessian()
    np.testing.assert_allclose(H @ v, hv_fd, rtol=1e-5, atol=1e-6 * np.abs(hv_fd).max())
    # target gradient and Hessian
    gf_fd = _fd_gradient(backend.target_value, theta0)
    np.testing.assert_allclose(
        backend.target_gradient(),
        gf_fd,
        rtol=1e-5,
        atol=1e-7 * max(np.abs(gf_fd).max(), 1e-12),
    )
    tg_at = lambda t: (backend.set_theta(t), backend.target_gradient())[1]
    hf_fd = (tg_at(theta0 + eps * v) - tg_at(theta0 - eps * v)) / (2 * eps)
    backend.set_theta(theta0)
    np.testing.assert_allclose(
        backend.target_hessian() @ v,
        hf_fd,
        rtol=1e-5,
        atol=1e-7 * max(np.abs(hf_fd).max(), 1e-12),
    )
    # third derivative: T_v = d/dt H(theta + t v)
    H_at = lambda t: (backend.set_theta(t), backend.hessian())[1]
    T_fd = (H_at(theta0 + eps * v) - H_at(theta0 - eps * v)) / (2 * eps)
    backend.set_theta(theta0)
    T = backend.third_derivative_matrix(v)
    np.testing.assert_allclose(
        T, T_fd, rtol=1e-4, atol=1e-6 * max(np.abs(T_fd).max(), 1e-12)
    )


@pytest.mark.parametrize(
    "name",
    [
        "logistic_binary",
        "logistic_multinomial",
        "poisson",
        "ridge_multioutput",
        "gamma",
    ],
)
def test_per_example_quantities_are_consistent(name):
    """Removal gradients, per-example HVPs and group Hessians sum up correctly."""
    _, backend, (X, y, sw) = _fitted_backend(name)
    rows = np.arange(0, 30)
    H_S = backend.group_hessian(rows)
    v = np.random.default_rng(0).normal(size=backend.n_params)
    R = backend.example_hessian_vector(v, rows)
    np.testing.assert_allclose(R.sum(axis=0), H_S @ v, rtol=1e-10, atol=1e-12)
    # H = sum_i H_i (+ penalty for sum-form objectives)
    H_all = backend.group_hessian(np.arange(backend.n_samples))
    H = backend.hessian()
    diff = H - H_all
    assert np.allclose(diff, np.diag(np.diag(diff)), atol=1e-10 * np.abs(H).max())
    # removal gradients of the training rows == candidate gradients of the same rows
    Q = backend.removal_gradients(rows)
    Qc = backend.candidate_gradients(X[rows], y[rows], sw[rows])
    np.testing.assert_allclose(Q, Qc, rtol=1e-12, atol=1e-14)


def test_removal_gradient_matches_objective_derivative():
    """q_i = -d J / d s_i-scaled removal, including the mean-form penalty."""
    for name in ["poisson", "logistic_binary"]:
        est, backend, (X, y, sw) = _fitted_backend(name)
        Q = backend.removal_gradients()
        # sum form: J = sum_i q-part + penalty; d/d theta of s_i * l~_i is q_i
        i = 7
        sw2 = sw.copy()
        sw2[i] = 0.0
        b2 = get_backend(est, X, y, sample_weight=sw2, X_target=X[:40], y_target=y[:40])
        b2.set_theta(backend.get_theta())
        np.testing.assert_allclose(
            backend.gradient() - b2.gradient(), Q[i], rtol=1e-9, atol=1e-12
        )


@pytest.mark.parametrize(
    "name,metric",
    [
        ("logistic_binary", lambda y, est, X: log_loss(y, est.predict_proba(X))),
        ("logistic_multinomial", lambda y, est, X: log_loss(y, est.predict_proba(X))),
        ("ridge", lambda y, est, X: mean_squared_error(y, est.predict(X))),
        ("ridge_multioutput", lambda y, est, X: mean_squared_error(y, est.predict(X))),
        (
            "ridge_classifier",
            lambda y, est, X: mean_squared_error(
                np.where(y == 1, 1.0, -1.0), est.decision_function(X)
            ),
        ),
        ("poisson", lambda y, est, X: mean_poisson_deviance(y, est.predict(X))),
        ("gamma", lambda y, est, X: mean_gamma_deviance(y, est.predict(X))),
        (
            "tweedie",
            lambda y, est, X: mean_tweedie_deviance(y, est.predict(X), power=1.5),
        ),
    ],
)
def test_default_target_equals_sklearn_metric(name, metric):
    est, backend, (X, y, _) = _fitted_backend(name)
    assert backend.target_value() == pytest.approx(
        metric(y[:40], est, X[:40]), rel=1e-10
    )


def test_pipeline_prefix_is_a_fixed_feature_map():
    X, y, sw = _data("binary")
    X = X * 10 + 3
    pipe = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-12)).fit(X, y)
    b_pipe = get_backend(pipe, X, y, X_target=X[:20], y_target=y[:20])
    Z = pipe[0].transform(X)
    b_lr = get_backend(pipe[-1], Z, y, X_target=Z[:20], y_target=y[:20])
    np.testing.assert_allclose(b_pipe.hessian(), b_lr.hessian())
    np.testing.assert_allclose(b_pipe.removal_gradients(), b_lr.removal_gradients())
    # frozen estimators are used as they are
    b_frozen = get_backend(
        FrozenEstimator(pipe), X, y, X_target=X[:20], y_target=y[:20]
    )
    np.testing.assert_allclose(b_frozen.get_theta(), b_pipe.get_theta())


def test_balanced_class_weight_is_frozen_with_warning():
    X, y, sw = _data("binary")
    est = LogisticRegression(class_weight="balanced").fit(X, y, sample_weight=sw)
    with pytest.warns(UserWarning, match="freezes it to the fitted weights"):
        backend = get_backend(est, X, y, sample_weight=sw, X_target=X, y_target=y)
    from sklearn.utils.class_weight import compute_class_weight

    cw = compute_class_weight("balanced", classes=est.classes_, y=y, sample_weight=sw)
    np.testing.assert_allclose(backend.sample_weight, sw * cw[y])


@pytest.mark.parametrize(
    "est,match",
    [
        (LogisticRegression(l1_ratio=1.0, solver="saga"), "L1 or elastic-net"),
        (LogisticRegression(l1_ratio=0.5, solver="saga"), "L1 or elastic-net"),
        (LinearSVC(), "does not support LinearSVC"),
        (SGDClassifier(), "does not support SGDClassifier"),
        (Ridge(positive=True), "bound-constrained"),
        (TweedieRegressor(power=1.5, link="identity"), "non-convex"),
    ],
)
def test_unsupported_estimators_raise_clear_errors(est, match):
    X, y, _ = _data(
        "positive" if isinstance(est, (TweedieRegressor, Ridge)) else "binary"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    with pytest.raises(UnsupportedEstimatorError, match=match):
        get_backend(est, X, y, X_target=X, y_target=y)


@pytest.mark.parametrize(
    "name",
    [
        "logistic_binary",
        "logistic_multinomial",
        "ridge_multioutput",
        "poisson",
        "gamma",
    ],
)
def test_loss_gradients_match_finite_differences(name):
    """``grad l_i``: l_i = (J(s) - J(s without i)) / s_i, less the penalty share.

    Mean-form GLMs fold the penalty 1/2 alpha ||w||^2 into every example;
    ``l_i`` is the data loss alone.
    """
    est, backend, (X, y, sw) = _fitted_backend(name)
    i = 11
    sw2 = sw.copy()
    sw2[i] = 0.0
    b2 = get_backend(est, X, y, sample_weight=sw2, X_target=X[:40], y_target=y[:40])
    mean_form = isinstance(est, (PoissonRegressor, GammaRegressor))
    d = X.shape[1]

    s_i = backend.sample_weight[i]  # sample weight x class weight

    def loss_i(theta):
        value = (backend.objective(theta) - b2.objective(theta)) / s_i
        return value - (0.5 * est.alpha * theta[:d] @ theta[:d] if mean_form else 0)

    theta = backend.get_theta()
    # central differences are exact for the quadratic Ridge loss: a large step
    # keeps the cancellation in J(s) - J(s without i) small
    fd = _fd_gradient(loss_i, theta, eps=1e-2 if isinstance(est, Ridge) else 1e-4)
    L = backend.loss_gradients([i])[0]
    np.testing.assert_allclose(L, fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max())
    # sum form: q_i = s_i grad l_i; mean form: plus the penalty share
    q = backend.removal_gradients([i])[0]
    if not mean_form:
        np.testing.assert_allclose(q, s_i * L, rtol=1e-12, atol=1e-14)
    # the rows argument and the aggregated form agree with the full matrix
    full = backend.loss_gradients()
    np.testing.assert_allclose(full[[3, 11]], backend.loss_gradients([3, 11]))
    M = np.zeros((2, backend.n_samples))
    M[0, :5], M[1, 5:] = 1.0, 2.0
    np.testing.assert_allclose(
        backend.aggregated_loss_gradients(M, batch_size=7), M @ full, rtol=1e-12
    )
