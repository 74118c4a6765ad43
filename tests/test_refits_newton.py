"""The Newton finish of torch refits, on objectives with a known minimum."""

import numpy as np
import pytest

from sklearn_groupinf import _refits


class _Quartic:
    """``J(t) = sum_j a_j (t_j^2 - 1)^2 / 4 + b_j t_j``: a dense backend stand-in.

    With ``|b_j| < a_j / (3 sqrt 3)`` each coordinate has two minima near
    ``+-1`` and a maximum near 0 (the Hessian is indefinite there); the
    stationary points solve the cubic ``a (t^3 - t) + b = 0`` exactly.
    """

    matrix_free = False

    def __init__(self, a, b, theta):
        self.a, self.b, self.theta = np.asarray(a), np.asarray(b), np.array(theta)
        self.n_hessians = 0

    def get_theta(self):
        return self.theta.copy()

    def set_theta(self, theta):
        self.theta = np.array(theta, dtype=float)

    def objective(self, theta=None):
        t = self.theta if theta is None else theta
        return float(np.sum(self.a * (t * t - 1) ** 2 / 4 + self.b * t))

    def gradient(self):
        t = self.theta
        return self.a * (t**3 - t) + self.b

    def exact_hessian(self):
        self.n_hessians += 1
        return np.diag(self.a * (3 * self.theta**2 - 1))

    def stationarity(self):
        return float(np.linalg.norm(self.gradient()))


@pytest.fixture
def stationarity_is_gradient_norm(monkeypatch):
    monkeypatch.setattr(_refits, "stationarity", lambda b, norms: b.stationarity())


def _exact_root(a, b, start):
    """The stationary point of ``a (t^3 - t) + b`` in the basin of ``start``."""
    roots = np.roots([a, 0.0, -a, b])
    roots = roots[np.abs(roots.imag) < 1e-12].real
    roots = roots[3 * roots**2 - 1 > 0]  # minima only
    return roots[np.argmin(np.abs(roots - start))]


@pytest.mark.usefixtures("stationarity_is_gradient_norm")
def test_finish_reaches_the_exact_minimum_with_few_hessians():
    a, b = np.array([1.0, 2.0, 5.0]), np.array([0.05, -0.1, 0.3])
    start = np.array([1.3, -0.8, 1.1])  # in the minima's basins
    be = _Quartic(a, b, start)
    stat = _refits.newton_finish(be, None, tol=1e-12)
    expected = [_exact_root(a[j], b[j], start[j]) for j in range(3)]
    assert stat <= 1e-12
    np.testing.assert_allclose(be.theta, expected, rtol=0, atol=1e-12)
    # chord steps reuse factorisations: fewer Hessians than steps taken
    assert be.n_hessians <= 6


@pytest.mark.usefixtures("stationarity_is_gradient_norm")
def test_basin_only_stops_on_an_indefinite_hessian_and_full_finish_does_not():
    a, b = np.array([1.0, 1.0]), np.array([0.05, 0.0])
    start = np.array([0.2, 1.2])  # first coordinate near the maximum
    be = _Quartic(a, b, start)
    stat = _refits.newton_finish(be, None, tol=1e-12, basin_only=True)
    assert stat > 1e-6 and be.n_hessians == 1
    np.testing.assert_array_equal(be.theta, start)  # nothing taken
    be = _Quartic(a, b, start)
    stat = _refits.newton_finish(be, None, tol=1e-12)  # Levenberg-Marquardt
    assert stat <= 1e-12
    assert np.all(3 * be.theta**2 - 1 > 0)  # a minimum, not the maximum
    assert be.objective() < _Quartic(a, b, start).objective()


@pytest.mark.usefixtures("stationarity_is_gradient_norm")
def test_finish_gives_up_on_a_flat_valley_instead_of_burning_hessians():
    class Flat(_Quartic):  # a round-off floor: steps change nothing measurable
        def objective(self, theta=None):
            return 0.0

        def gradient(self):
            return np.array([1e-3])

    be = Flat([1.0], [0.3], [2.0])
    stat = _refits.newton_finish(be, None, tol=1e-12)
    assert stat == pytest.approx(1e-3)
    assert be.n_hessians <= _refits._STALL_HESSIANS + 1


@pytest.mark.usefixtures("stationarity_is_gradient_norm")
def test_levenberg_marquardt_path_is_followed_while_the_gradient_grows():
    # from next to the maximum at 0 each step triples t: the gradient norm
    # rises for about ten steps while the objective falls; that is progress
    be = _Quartic([1.0], [0.0], [1e-5])
    stat = _refits.newton_finish(be, None, tol=1e-12)
    assert stat <= 1e-12
    np.testing.assert_allclose(np.abs(be.theta), [1.0], rtol=0, atol=1e-12)
