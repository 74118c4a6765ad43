"""Group labels on Dask stay on the workers and give the in-memory results.

:class:`DaskGroupMembership` (codes per chunk, group sums as reductions) is
compared with the in-memory :class:`GroupMembership` it replaces, and every
group result of a Dask fit (scores, Newton estimates, group selection by
``interaction`` and ``newton``, self-influence) with the in-memory fit's, to
``1e-8`` relative, for two chunkings. Dask's synchronous scheduler (the
cluster test with a recording gather is in ``test_dask_cluster.py``).
"""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, PoissonRegressor

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from sklearn_groupinf import GroupInfluence, _dask_fit  # noqa: E402
from sklearn_groupinf._dask_groups import DaskGroupMembership  # noqa: E402
from sklearn_groupinf._groups import GroupMembership  # noqa: E402

RTOL = 1e-8


@pytest.fixture(autouse=True)
def _synchronous(monkeypatch):
    monkeypatch.setattr(_dask_fit, "SAMPLE_SIZE", 300)
    with dask.config.set(scheduler="synchronous"):
        yield


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _labels(kind, n, rng):
    g = rng.integers(0, 23, n)
    if kind == "int":
        return g * 7 - 40
    if kind == "float":
        return g / 4.0
    if kind == "str":
        return np.array([f"m{v}" for v in g], dtype=object)
    out = np.empty(n, dtype=object)  # 1 and "1" are two groups
    out[:] = [v if v % 2 else str(v) for v in g.tolist()]
    return out


@pytest.mark.parametrize("kind", ["int", "float", "str", "mixed"])
def test_membership_equals_in_memory(kind):
    rng = np.random.default_rng(0)
    n = 1000
    groups = _labels(kind, n, rng)
    X = da.from_array(rng.standard_normal((n, 3)), chunks=(300, -1))
    ref = GroupMembership(groups, n)
    # labels chunked unlike X (170 rows): the codes get X's chunks
    m = DaskGroupMembership(da.from_array(groups, chunks=170), X)
    assert m.codes.chunks == X.chunks[:1]
    np.testing.assert_array_equal(m.labels, ref.labels)
    assert [type(v) for v in m.labels] == [type(v) for v in ref.labels]
    np.testing.assert_array_equal(m.sizes, ref.sizes)
    np.testing.assert_array_equal(m.codes.compute(), ref.inverse)
    A = rng.standard_normal((n, 4))
    assert _rel(m.aggregate(A), ref.aggregate(A)) < 1e-13
    a1 = m.aggregate(da.from_array(A[:, 1], chunks=450))  # 1-D, other chunks
    assert _rel(a1, ref.aggregate(A)[:, 1]) < 1e-13
    chosen = [5, 0, 17]
    np.testing.assert_array_equal(m.rows_in_order(chosen), ref.rows_in_order(chosen))
    union = m.rows_of([3, 9])
    assert len(union) == len(ref.rows_of([3, 9]))
    np.testing.assert_array_equal(union.indices(), ref.rows_of([3, 9]))
    # and labels given in memory to a Dask fit are coded the same way
    m2 = DaskGroupMembership(groups, X)
    np.testing.assert_array_equal(m2.codes.compute(), ref.inverse)


def test_membership_errors():
    rng = np.random.default_rng(1)
    X = da.from_array(rng.standard_normal((100, 2)), chunks=(30, -1))
    g = rng.integers(0, 4, 100).astype(float)
    g[57] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        DaskGroupMembership(da.from_array(g, chunks=30), X)
    obj = np.arange(100).astype(object)
    obj[3] = None
    with pytest.raises(ValueError, match="missing"):
        DaskGroupMembership(da.from_array(obj, chunks=30), X)
    with pytest.raises(ValueError, match=r"shape \(100,\)"):
        DaskGroupMembership(da.from_array(np.arange(99), chunks=30), X)
    with pytest.raises(ValueError, match="groups is None"):
        DaskGroupMembership(None, X)


def _pair(est, chunks, n=1500, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    sw = rng.uniform(0.5, 2.0, n)
    if isinstance(est, PoissonRegressor):
        y = rng.poisson(np.exp(0.3 * X[:, 0]))
    else:
        y = (X[:, 0] + rng.standard_normal(n) > 0).astype(int)
    kw = dict(X_target=X[:300] + 0.1, y_target=y[:300])
    ref = GroupInfluence(est).fit(X, y, sw, **kw)
    gi = GroupInfluence(est).fit(
        da.from_array(X, chunks=(chunks, -1)),
        da.from_array(y, chunks=chunks),
        da.from_array(sw, chunks=chunks),
        **kw,
    )
    groups = rng.integers(0, 40, n)
    return gi, ref, groups


@pytest.mark.filterwarnings("ignore::UserWarning")  # unreliable-group flags
@pytest.mark.parametrize(
    "est", [LogisticRegression(C=0.3), PoissonRegressor(alpha=0.05)], ids=str
)
def test_group_selection_equals_in_memory(est):
    # greedy over groups: interaction (group factor) and newton (each
    # candidate union's Newton step from the per-group sums reduced once)
    gi, ref, groups = _pair(est, 400)
    dg = da.from_array(groups, chunks=250)
    for method in ("interaction", "newton"):
        s = gi.select(6, groups=dg, method=method)
        r = ref.select(6, groups=groups, method=method)
        np.testing.assert_array_equal(s.groups, r.groups)
        np.testing.assert_array_equal(s.indices, r.indices)
        assert _rel(s.estimates, r.estimates) < RTOL
    res = gi.score_groups(dg, method="newton")
    exp = ref.score_groups(groups, method="newton")
    assert _rel(res.estimate, exp.estimate) < RTOL
    np.testing.assert_array_equal(res.reliable, exp.reliable)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_group_results_do_not_depend_on_chunk_size():
    a, ref, groups = _pair(LogisticRegression(C=0.3), 250)
    b, _, _ = _pair(LogisticRegression(C=0.3), 1100)
    for gi in (a, b):
        dg = da.from_array(groups, chunks=333)
        res = gi.score_groups(dg, method="newton")
        exp = ref.score_groups(groups, method="newton")
        assert _rel(res.estimate, exp.estimate) < RTOL
        assert _rel(gi.self_influence(dg), ref.self_influence(groups)) < RTOL
        assert _rel(gi.self_influence().compute(), ref.self_influence()) < RTOL
    ea = a.score_groups(da.from_array(groups, chunks=250)).estimate
    eb = b.score_groups(da.from_array(groups, chunks=1100)).estimate
    assert _rel(ea, eb) < 1e-10


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_newton_without_reduced_hessians_gathers_each_group(monkeypatch):
    # per-group Hessians over max_group_bytes: each group's rows are
    # gathered (selected on the workers by the codes); same estimates
    from sklearn_groupinf._dask_backend import DaskLinearBackend

    gi, ref, groups = _pair(LogisticRegression(C=0.3), 400)
    groups = groups % 4
    monkeypatch.setattr(DaskLinearBackend, "max_group_bytes", 0)
    res = gi.score_groups(da.from_array(groups, chunks=400), method="newton")
    assert "groups" not in gi._state.backend._cache  # nothing reduced per group
    exp = ref.score_groups(groups, method="newton")
    assert _rel(res.estimate, exp.estimate) < RTOL


def test_rounds_on_dask_are_refused():
    gi, _, groups = _pair(LogisticRegression(C=0.3), 400)
    with pytest.raises(ValueError, match="n_rounds=2"):
        gi.select(4, groups=da.from_array(groups, chunks=400), n_rounds=2)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_dask_labels_are_coded_once(monkeypatch):
    # the same Dask column in later calls reuses its codes and per-group sums
    from sklearn_groupinf import _dask_groups

    gi, ref, groups = _pair(LogisticRegression(C=0.3), 400)
    made = []
    init = _dask_groups.DaskGroupMembership.__init__

    def counting(self, *args):
        made.append(1)
        init(self, *args)

    monkeypatch.setattr(_dask_groups.DaskGroupMembership, "__init__", counting)
    dg = da.from_array(groups, chunks=400)
    res = gi.score_groups(dg, method="newton")
    cached = gi._state.backend._cache["groups"]
    s = gi.select(3, groups=da.from_array(groups, chunks=400), method="newton")
    assert len(made) == 1
    assert gi._state.backend._cache["groups"] is cached  # not reduced again
    assert _rel(res.estimate, ref.score_groups(groups, method="newton").estimate) < RTOL
    np.testing.assert_array_equal(
        s.groups, ref.select(3, groups=groups, method="newton").groups
    )
    gi.score_groups(groups % 7)  # other labels: coded anew
    assert len(made) == 2


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_verbose_progress_lines(capsys):
    # a progress line per pass on the cluster path, with the elapsed time
    rng = np.random.default_rng(3)
    X = rng.standard_normal((900, 3))
    y = (X[:, 0] + rng.standard_normal(900) > 0).astype(int)
    gi = GroupInfluence(LogisticRegression(), verbose=1).fit(
        da.from_array(X, chunks=(300, -1)),
        da.from_array(y, chunks=300),
        X_target=X[:50],
        y_target=y[:50],
    )
    gi.score_groups(da.from_array(np.arange(900) % 5, chunks=300), method="newton")
    err = capsys.readouterr().err
    for line in (
        "900 examples in 3 chunks",
        "objective, gradient and 4 x 4 Hessian over the chunks",
        "group labels coded on the workers: 5 groups",
        "Hessians and gradient sums of 5 groups over the chunks",
    ):
        assert line in err, err
    assert "s since the backend]" in err
