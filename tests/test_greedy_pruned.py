"""The pruned greedy makes the same picks as the naive greedy rule."""

import numpy as np
import pytest

from sklearn_groupinf._interaction import InteractionOperator
from sklearn_groupinf._selection import _greedy_pruned, greedy_select


def _fixture(seed, n=600, r=6, n_neg=0, n_dup=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n, r)) * rng.uniform(0.1, 2.0, size=(n, 1))
    b = rng.standard_normal(n)
    if n_dup:  # exact ties: duplicated units
        src = rng.choice(n, n_dup, replace=False)
        dst = rng.choice(np.setdiff1d(np.arange(n), src), n_dup, replace=False)
        W[dst], b[dst] = W[src], b[src]
    sigma = np.ones(r)
    sigma[:n_neg] = -1.0  # indefinite middle
    return b, InteractionOperator(W, sigma)


@pytest.mark.parametrize("goal", ["decrease", "increase"])
@pytest.mark.parametrize(
    "seed, n_neg, n_dup", [(0, 0, 0), (1, 2, 0), (2, 0, 40), (3, 3, 40)]
)
def test_pruned_greedy_equals_naive(goal, seed, n_neg, n_dup):
    b, op = _fixture(seed, n_neg=n_neg, n_dup=n_dup)
    naive = greedy_select(b, op, 120, goal=goal, strategy="naive")
    pruned = greedy_select(b, op, 120, goal=goal, strategy="pruned")
    np.testing.assert_array_equal(pruned[0], naive[0])
    np.testing.assert_allclose(pruned[1], naive[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shortlist", [1, 8, 64, 10_000])
def test_shortlist_size_does_not_change_picks(shortlist):
    b, op = _fixture(4, n_neg=1, n_dup=20)
    naive = greedy_select(b, op, 80, strategy="naive")
    avail = np.ones(len(b), dtype=bool)
    stats = {}
    order, est = _greedy_pruned(
        b,
        op.W,
        op.sigma,
        0.5 * op.diag(),
        80,
        1.0,
        avail,
        False,
        shortlist=shortlist,
        stats=stats,
    )
    np.testing.assert_array_equal(order, naive[0])
    np.testing.assert_allclose(est, naive[1], rtol=1e-10, atol=1e-12)
    if shortlist >= 64:  # bounds save passes: fewer than one per step
        assert stats["passes"] < 80


def test_pruned_stop_early_and_exclude():
    b, op = _fixture(5)
    b = b + 0.5  # positive K: marginal changes grow, so the greedy stops
    kw = dict(goal="decrease", stop_early=True, exclude=[0, 1, 2])
    naive = greedy_select(b, op, 200, strategy="naive", **kw)
    pruned = greedy_select(b, op, 200, strategy="pruned", **kw)
    assert 0 < len(naive[0]) < 200
    np.testing.assert_array_equal(pruned[0], naive[0])
    assert not np.isin([0, 1, 2], pruned[0]).any()


def test_pruned_needs_an_implicit_operator():
    from sklearn_groupinf._interaction import DenseInteractionOperator

    b, op = _fixture(6, n=50)
    dense = DenseInteractionOperator(op.W, op.sigma, device="cpu")
    with pytest.raises(ValueError, match="implicit operator"):
        greedy_select(b, dense, 5, strategy="pruned")
    with pytest.raises(ValueError, match="strategy"):
        greedy_select(b, op, 5, strategy="fast")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pruned_greedy_when_picks_leave_the_shortlist(seed):
    # small interactions next to a wide spread of b: few checkpoints, and the
    # units with the smallest upper bounds are the ones picked, so the
    # shortlist must be renewed when no remaining unit is below its threshold
    rng = np.random.default_rng(seed)
    n, r = 3000, 8
    W = rng.standard_normal((n, r)) * 0.01 * rng.uniform(0.2, 1.0, (n, 1))
    b = rng.standard_normal(n) * 0.01
    op = InteractionOperator(W, np.ones(r))
    naive = greedy_select(b, op, 300, strategy="naive")
    stats = {}
    order, est = _greedy_pruned(
        b,
        W,
        op.sigma,
        0.5 * op.diag(),
        300,
        1.0,
        np.ones(n, dtype=bool),
        False,
        shortlist=64,
        stats=stats,
    )
    np.testing.assert_array_equal(order, naive[0])
    np.testing.assert_allclose(est, naive[1], rtol=1e-10, atol=1e-14)
    assert stats["passes"] < 300


def _fitted_pair(max_dense_bytes):
    from sklearn.linear_model import LogisticRegression

    from sklearn_groupinf import GroupInfluence

    rng = np.random.default_rng(7)
    X = rng.standard_normal((400, 5))
    y = (X[:, 0] + 0.5 * rng.standard_normal(400) > 0).astype(int)
    gi = GroupInfluence(
        LogisticRegression(C=0.5),
        interaction="implicit",
        max_dense_bytes=max_dense_bytes,
    )
    return gi.fit(X[:300], y[:300], X_target=X[300:], y_target=y[300:])


def test_lazy_factor_equals_the_stored_factor():
    # below 4 n^2 bytes the per-example factor W = Q H^-1 C is kept as
    # products (RemovalProducts); every operation matches the stored W
    from sklearn_groupinf._lazy_rows import RemovalProducts, row_stats

    lazy = _fitted_pair(1000)._fitted.unit_operator("interaction")
    stored = _fitted_pair(2 * 1024**3)._fitted.unit_operator("interaction")
    assert isinstance(lazy.W, RemovalProducts)
    assert isinstance(stored.W, np.ndarray)
    Ws = stored.W
    np.testing.assert_allclose(np.asarray(lazy.W), Ws, rtol=1e-10, atol=1e-14)
    rng = np.random.default_rng(0)
    u, V = rng.standard_normal(Ws.shape[1]), rng.standard_normal((300, 2))
    np.testing.assert_allclose(lazy.W @ u, Ws @ u, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(lazy.W.T @ V, Ws.T @ V, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(lazy.W[[5, 2]], Ws[[5, 2]], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(lazy.diag(), stored.diag(), rtol=1e-10, atol=1e-16)
    sq, signed = row_stats(lazy.W, lazy.sigma)
    np.testing.assert_allclose(sq, np.sum(Ws**2, axis=1), rtol=1e-10, atol=1e-16)
    np.testing.assert_allclose(lazy.matvec(V), stored.matvec(V), rtol=1e-9)


@pytest.mark.parametrize("goal", ["decrease", "increase"])
def test_selection_on_the_lazy_factor(goal):
    # GroupInfluence.select with the lazy factor: the pruned greedy on it
    # makes the naive greedy's picks on the stored factor
    lazy = _fitted_pair(1000)
    stored = _fitted_pair(2 * 1024**3)
    op = stored._fitted.unit_operator("interaction")
    naive = greedy_select(stored.influence_, op, 40, goal=goal, strategy="naive")
    lop = lazy._fitted.unit_operator("interaction")
    pruned = greedy_select(lazy.influence_, lop, 40, goal=goal, strategy="pruned")
    np.testing.assert_array_equal(pruned[0], naive[0])
    np.testing.assert_allclose(pruned[1], naive[1], rtol=1e-9, atol=1e-15)
    sel = lazy.select(40, method="interaction")
    ref = stored.select(40, method="interaction")
    np.testing.assert_array_equal(sel.indices, ref.indices)


def test_stats_count_passes():
    b, op = _fixture(8, n=2000)
    st_naive, st_pruned = {}, {}
    greedy_select(b, op, 50, strategy="naive", stats=st_naive)
    greedy_select(b, op, 50, strategy="pruned", stats=st_pruned)
    assert st_naive["passes"] == 51
    assert 2 <= st_pruned["passes"] < 51
    assert st_pruned["evaluated"] >= 50


class _DaskRows:
    """A backend whose removal gradients ``Q`` are a Dask array (for the
    Dask greedy: per-example vectors stay Dask arrays)."""

    distributed = True

    def __init__(self, Q, chunks):
        import dask.array as da

        self.Q, self.n_samples, self.n_params = Q, Q.shape[0], Q.shape[1]
        self.dQ = da.from_array(Q, chunks=(chunks, -1))

    def removal_gradient_products(self, V):
        return self.dQ @ V

    def removal_gradients(self, rows):
        return self.Q[rows]


@pytest.mark.parametrize(
    "goal, n_neg, n_dup, stop_early",
    [
        pytest.param("decrease", 0, 0, False, marks=pytest.mark.slow),
        pytest.param("increase", 2, 0, True, marks=pytest.mark.slow),
        ("decrease", 3, 30, False),
    ],
)
def test_dask_greedy_equals_in_memory(goal, n_neg, n_dup, stop_early):
    # the greedy on Dask vectors (checkpoints on the workers, shortlist
    # gathered) makes the picks of the in-memory greedy, with exclude,
    # stop_early, an indefinite middle and duplicated units
    da = pytest.importorskip("dask.array")
    import dask

    from sklearn_groupinf import _selection
    from sklearn_groupinf._lazy_rows import RemovalProducts

    rng = np.random.default_rng(7)
    n, P, r = 1500, 5, 4
    Q = rng.standard_normal((n, P)) * rng.uniform(0.1, 2.0, size=(n, 1))
    b = rng.standard_normal(n)
    if n_dup:
        src = rng.choice(n, n_dup, replace=False)
        dst = rng.choice(np.setdiff1d(np.arange(n), src), n_dup, replace=False)
        Q[dst], b[dst] = Q[src], b[src]
    S = rng.standard_normal((P, r))
    sigma = np.ones(r)
    sigma[:n_neg] = -1.0
    exclude = rng.choice(n, 30, replace=False)
    kw = dict(goal=goal, stop_early=stop_early, exclude=exclude)
    ref = greedy_select(b, InteractionOperator(Q @ S, sigma), 80, **kw)
    top = greedy_select(b, None, 80, **kw)
    W = RemovalProducts(_DaskRows(Q, 400), S)
    db = da.from_array(b, chunks=400)
    with dask.config.set(scheduler="synchronous"):
        for size in (64, 10_000):
            _selection.DASK_SHORTLIST, saved = size, _selection.DASK_SHORTLIST
            try:
                got = greedy_select(db, InteractionOperator(W, sigma), 80, **kw)
            finally:
                _selection.DASK_SHORTLIST = saved
            np.testing.assert_array_equal(got[0], ref[0])
            np.testing.assert_allclose(got[1], ref[1], rtol=1e-10, atol=1e-12)
        got = greedy_select(db, None, 80, **kw)
    np.testing.assert_array_equal(got[0], top[0])
    np.testing.assert_array_equal(got[1], top[1])
