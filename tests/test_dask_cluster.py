"""GroupInfluence through a ``distributed.LocalCluster`` equals in-memory.

The default suite runs a cluster of two worker threads in this process
(starts in well under a second); the slow test runs two worker processes on
loopback, where every task and result crosses a socket and is pickled. A
recording ``Client.gather`` checks that nothing of size ``n`` comes back to
the client during fit, scoring of in-memory groups, top-k and greedy
selection: per-example vectors stay on the workers and are reduced there.
"""

import logging

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from sklearn_groupinf import (  # noqa: E402
    GroupInfluence,
    _dask_fit,
    _dask_reduce,
    _selection,  # noqa: E402
)

RTOL = 1e-8


def _data(n=3000, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X[:, 1] += 0.6 * X[:, 0]
    y = (X[:, 0] - X[:, 2] + rng.standard_normal(n) > 0).astype(int)
    return X, y, rng.uniform(0.5, 2.0, n), rng.integers(0, 20, n)


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _compare(n=2000, chunks=500):
    X, y, sw, groups = _data(n)
    kw = dict(X_target=X[:300] + 0.1, y_target=y[:300])
    est = LogisticRegression(C=0.5)
    ref = GroupInfluence(est, max_dense_bytes=1000).fit(X, y, sw, **kw)
    gi = GroupInfluence(est, max_dense_bytes=1000).fit(
        da.from_array(X, chunks=(chunks, -1)),
        da.from_array(y, chunks=chunks),
        da.from_array(sw, chunks=chunks),
        **kw,
    )
    assert isinstance(gi.influence_, da.Array)
    assert _rel(gi.theta_, ref.theta_) < RTOL
    assert _rel(gi.influence_.compute(), ref.influence_) < RTOL
    dg = da.from_array(groups, chunks=chunks)
    res, exp = gi.score_groups(dg), ref.score_groups(groups)
    np.testing.assert_array_equal(res.groups, exp.groups)
    assert _rel(res.estimate, exp.estimate) < RTOL
    for method in ("first_order", "interaction"):
        s, r = gi.select(40, method=method), ref.select(40, method=method)
        np.testing.assert_array_equal(s.indices, r.indices)
        assert _rel(s.estimates, r.estimates) < RTOL
    for method in ("interaction", "newton"):
        s = gi.select(5, groups=dg, method=method)
        r = ref.select(5, groups=groups, method=method)
        np.testing.assert_array_equal(s.groups, r.groups)
        np.testing.assert_array_equal(s.indices, r.indices)
        assert _rel(s.estimates, r.estimates) < RTOL
    assert _rel(gi.self_influence(dg), ref.self_influence(groups)) < RTOL
    assert _rel(gi.self_influence().compute(), ref.self_influence()) < RTOL
    K, K_ref = gi.interaction_matrix(dg), ref.interaction_matrix(groups)
    eye = np.eye(K_ref.shape[0])  # operators (max_dense_bytes): their columns
    assert _rel(K @ eye, K_ref @ eye) < RTOL


@pytest.fixture
def _small_pieces(monkeypatch):
    # the first rows, the median's last window and the greedy's shortlist
    # small, so that a gather of n values would stand out
    monkeypatch.setattr(_dask_fit, "SAMPLE_SIZE", 200)
    monkeypatch.setattr(_dask_reduce, "GATHER_MAX", 200)
    monkeypatch.setattr(_selection, "DASK_SHORTLIST", 128)


@pytest.mark.filterwarnings("ignore::UserWarning")  # unreliable-group flags
def test_local_cluster_threads_equals_in_memory(_small_pieces):
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        _compare()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_local_cluster_processes_equals_in_memory(_small_pieces):
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster),
    ):
        _compare()


def _nbytes(obj):
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(o) for o in obj.values())
    return int(getattr(obj, "nbytes", 0))


def _recorder(sizes):
    """``Client.gather`` and a wrapper appending the bytes it returns to ``sizes``."""
    gather = distributed.Client.gather

    def recording_gather(self, futures, *args, **kwargs):
        out = gather(self, futures, *args, **kwargs)
        sizes.append(_nbytes(out))
        return out

    return gather, recording_gather


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_nothing_of_size_n_comes_to_the_client(_small_pieces, monkeypatch):
    n, chunks = 8000, 1000
    X, y, _, groups = _data(n)
    sizes = []
    gather, recording_gather = _recorder(sizes)

    monkeypatch.setattr(distributed.Client, "gather", recording_gather)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        gi = GroupInfluence(LogisticRegression(), max_dense_bytes=1000).fit(
            da.from_array(X, chunks=(chunks, -1)),
            da.from_array(y, chunks=chunks),
            X_target=X[:300],
            y_target=y[:300],
        )
        gi.score_groups(groups, method="interaction")
        first = gi.select(50, method="first_order")
        greedy = gi.select(50, method="interaction")
        infl = gi.influence_.compute()  # asked for: n floats, the only such
    assert len(sizes) > 20
    assert max(sizes[:-1]) < 8 * n / 4, sorted(sizes)[-5:]
    assert sizes[-1] >= 8 * n
    # and they are right: the selections from the gathered influences
    np.testing.assert_array_equal(first.indices, np.argsort(infl, kind="stable")[:50])
    ref = GroupInfluence(LogisticRegression(), max_dense_bytes=1000).fit(
        X, y, X_target=X[:300], y_target=y[:300]
    )
    np.testing.assert_array_equal(
        greedy.indices, ref.select(50, method="interaction").indices
    )


def test_exact_median_and_topk_against_numpy(monkeypatch):
    import dask

    monkeypatch.setattr(_dask_reduce, "GATHER_MAX", 50)
    rng = np.random.default_rng(3)
    with dask.config.set(scheduler="synchronous"):
        for n, ties in [(1, False), (2, False), (999, False), (4000, True)]:
            x = rng.standard_normal(n)
            if ties:
                x = np.round(x, 1)  # many equal values
            dx = da.from_array(x, chunks=max(1, n // 7))
            assert _dask_reduce.exact_median(dx) == np.median(x)
            excl = rng.choice(n, size=n // 5, replace=False)
            s = x.copy()
            s[excl] = np.inf
            k = min(n, 30)
            order, vals = _dask_reduce.dask_topk(dx, k, excl)
            expect = np.argsort(s, kind="stable")[:k]
            expect = expect[np.isfinite(s[expect])]
            np.testing.assert_array_equal(order, expect)
            np.testing.assert_array_equal(vals, x[expect])


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_group_labels_stay_on_the_cluster(_small_pieces, monkeypatch):
    # labels as a Dask array: coded on the workers; scores (interaction and
    # newton), group selection (interaction and newton), group and per-example
    # self-influence and the group interaction matrix gather nothing of size
    # n (the codes alone would be 4 n bytes); results equal in-memory ones
    n, chunks = 12_000, 1500
    X, y, _, _ = _data(n)
    groups = np.random.default_rng(4).integers(0, 60, n) * 3
    dg = da.from_array(groups, chunks=1500)
    sizes = []
    gather, recording_gather = _recorder(sizes)

    kw = dict(X_target=X[:300], y_target=y[:300])
    est = LogisticRegression()
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        gi = GroupInfluence(est, max_dense_bytes=100_000).fit(
            da.from_array(X, chunks=(chunks, -1)), da.from_array(y, chunks=chunks), **kw
        )
        monkeypatch.setattr(distributed.Client, "gather", recording_gather)
        scores = {m: gi.score_groups(dg, method=m) for m in ("interaction", "newton")}
        picks = {
            m: gi.select(4, groups=dg, method=m) for m in ("interaction", "newton")
        }
        sigma_g = gi.self_influence(dg)
        sigma = gi.self_influence()  # lazy: a Dask array
        K = gi.interaction_matrix(dg, form="dense")
        monkeypatch.setattr(distributed.Client, "gather", gather)
        assert isinstance(sigma, da.Array)
        sigma = sigma.compute()
    assert len(sizes) > 5
    assert max(sizes) < 8 * n / 4, sorted(sizes)[-5:]
    ref = GroupInfluence(est, max_dense_bytes=100_000).fit(X, y, **kw)
    for m, res in scores.items():
        exp = ref.score_groups(groups, method=m)
        np.testing.assert_array_equal(res.groups, exp.groups)
        assert _rel(res.estimate, exp.estimate) < RTOL
    for m, s in picks.items():
        r = ref.select(4, groups=groups, method=m)
        np.testing.assert_array_equal(s.groups, r.groups)
        np.testing.assert_array_equal(s.indices, r.indices)
        assert _rel(s.estimates, r.estimates) < RTOL
    assert _rel(sigma_g, ref.self_influence(groups)) < RTOL
    assert _rel(sigma, ref.self_influence()) < RTOL
    assert _rel(K, ref.interaction_matrix(groups, form="dense")) < RTOL


def _parquet(tmp_path, region=False):
    """Ten small Parquet files (features, label, merchant[, region]), in memory too.

    Without ``region``, dask 2026.8 reads the merchant column in 3 partitions
    and the features in 5.
    """
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rng = np.random.default_rng(0)
    feats = [f"x{j}" for j in range(4)]
    frames = []
    for i in range(10):
        X = rng.standard_normal((2000, 4))
        y = (X[:, 0] + rng.standard_normal(2000) > 0).astype(int)
        frame = pd.DataFrame(X, columns=feats).assign(
            label=y, merchant=rng.integers(0, 50, 2000)
        )
        if region:
            frame["region"] = rng.choice(["north", "south", "west"], 2000)
        frame.to_parquet(tmp_path / f"part-{i:03d}.parquet")
        frames.append(frame)
    Xt = rng.standard_normal((100, 4))
    kw = dict(X_target=Xt, y_target=(Xt[:, 0] > 0).astype(int))
    return feats, pd.concat(frames, ignore_index=True), kw


class _SchedulerLog(logging.Handler):
    """The distributed scheduler's log messages (without pytest's caplog)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        logging.getLogger("distributed.scheduler").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("distributed.scheduler").removeHandler(self)


def _threads_cluster():
    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    )


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_parquet_labels_chunked_unlike_x(tmp_path):
    # dask fuses Parquet reads differently for the label column and for X:
    # the codes are rechunked to X's chunks once (rechunking the labels in
    # every pass made the scheduler warn about reused keys); group scores
    # and the newton greedy equal the in-memory ones
    dd = pytest.importorskip("dask.dataframe")
    feats, full, kw = _parquet(tmp_path)
    with _SchedulerLog() as log, _threads_cluster() as c, distributed.Client(c):
        df = dd.read_parquet(str(tmp_path / "*.parquet"))
        gi = GroupInfluence(LogisticRegression(), method="interaction").fit(
            df[feats], df["label"], **kw
        )
        assert df["merchant"].to_dask_array().numblocks != (
            gi._state.backend.X.numblocks[0],
        )  # the labels come in other partitions than X
        res = gi.score_groups(df["merchant"], method="newton")
        picks = gi.select(3, groups=df["merchant"], method="newton")
    assert not [m for m in log.messages if "run_spec" in m], log.messages
    ref = GroupInfluence(LogisticRegression(), method="interaction").fit(
        full[feats].to_numpy(), full["label"].to_numpy(), **kw
    )
    g = full["merchant"].to_numpy()
    assert _rel(res.estimate, ref.score_groups(g, method="newton").estimate) < RTOL
    r = ref.select(3, groups=g, method="newton")
    np.testing.assert_array_equal(picks.groups, r.groups)
    np.testing.assert_array_equal(picks.indices, r.indices)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_parquet_leave_group_out_string_labels(tmp_path):
    # refits with labels coded on the workers (Parquet strings chunked
    # unlike X): no reused-key warning, the in-memory refits' results
    dd = pytest.importorskip("dask.dataframe")
    from sklearn_groupinf.evaluation import leave_group_out

    feats, full, kw = _parquet(tmp_path, region=True)
    with _SchedulerLog() as log, _threads_cluster() as c, distributed.Client(c):
        df = dd.read_parquet(str(tmp_path / "*.parquet"))
        lgo = leave_group_out(
            LogisticRegression(), df[feats], df["label"], df["region"], **kw
        )
    assert not [m for m in log.messages if "run_spec" in m], log.messages
    region = full["region"].to_numpy()
    np.testing.assert_array_equal(lgo.groups, ["north", "south", "west"])
    np.testing.assert_array_equal(lgo.size, [np.sum(region == r) for r in lgo.groups])
    ref = leave_group_out(
        LogisticRegression(),
        full[feats].to_numpy(),
        full["label"].to_numpy(),
        region,
        stationarity_tol=1e-10,
        **kw,
    )
    assert _rel(lgo.actual, ref.actual) < max(1e-7, 10 * ref.stationarity.max())
