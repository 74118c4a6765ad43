"""The linear path works where torch cannot be imported (torch is an extra).

A subprocess installs a meta-path finder that refuses ``torch`` (and its
submodules) before importing the package, then runs the linear path: ``fit``,
``score_groups``, ``select`` with interaction over a dense interaction matrix
(numpy/BLAS tiles), ``GroupSelector`` and the ``groupinf demo`` command. Its
numbers are compared with the same computation in this process (where torch,
when installed, builds the dense tiles), and the features that need torch
must fail with an error naming the ``torch`` extra.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from sklearn_groupinf import GroupInfluence, GroupSelector
from sklearn_groupinf._interaction import _dense_numpy, dense_from_factors

EXTRA = 'pip install "sklearn-groupinf[torch]"'

BLOCK_TORCH = """
import importlib.abc
import sys


class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
        return None


sys.meta_path.insert(0, _NoTorch())
for _name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
    del sys.modules[_name]
"""


def _data():
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    groups = np.arange(300) % 12
    return X[:300], y[:300], X[300:450], y[300:450], groups


def _linear_path():
    """The computation run with and without torch; returns plain numbers."""
    X, y, Xt, yt, groups = _data()
    gi = GroupInfluence(
        LogisticRegression(C=1.0), method="interaction", interaction="dense"
    ).fit(X, y, X_target=Xt, y_target=yt)
    res = gi.score_groups(groups)
    K = gi.interaction_matrix(groups=groups)
    sel = gi.select(5, groups=groups)
    sel_ex = gi.select(10)
    selector = GroupSelector(LogisticRegression(C=1.0), budget=15, random_state=0).fit(
        X, y
    )
    return {
        "influence": gi.influence_.tolist(),
        "estimate": res.estimate.tolist(),
        "K": K.tolist(),
        "selected_groups": np.asarray(sel.groups).tolist(),
        "selected_examples": np.asarray(sel_ex.indices).tolist(),
        "selection_estimates": np.asarray(sel_ex.estimates).tolist(),
        "selector_removed": selector.removed_indices_.tolist(),
    }


CHILD = (
    BLOCK_TORCH
    + """
import io
import json
import contextlib

try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("torch was importable: the blocker failed")

import test_no_torch as t

out = t._linear_path()

X, y, Xt, yt, groups = t._data()
errors = {}
try:
    t.GroupInfluence(t.LogisticRegression(), target=lambda y, z: z**2).fit(
        X, y, X_target=Xt, y_target=yt
    )
except ImportError as exc:
    errors["callable_target"] = str(exc)
try:
    gi = t.GroupInfluence(t.LogisticRegression(), device="cuda")
    gi.fit(X, y, X_target=Xt, y_target=yt).interaction_matrix()
except ImportError as exc:
    errors["cuda"] = str(exc)
try:
    import sklearn_groupinf.torch  # noqa: F401
except ImportError as exc:
    errors["torch_subpackage"] = str(exc)
out["errors"] = errors

from sklearn_groupinf.cli import main

buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    code = main(["demo", "--n-refit", "2"])
out["demo_exit"] = code
out["demo_stdout"] = buf.getvalue()
out["torch_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
print("RESULT" + json.dumps(out))
"""
)


def _run_child(code, tag):
    """Run ``code`` in a fresh interpreter; the JSON it printed after ``tag``."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=__file__.rsplit("/", 1)[0],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith(tag)][-1]
    return json.loads(line[len(tag) :])


@pytest.fixture(scope="module")
def without_torch():
    return _run_child(CHILD, "RESULT")


def test_linear_path_without_torch_equals_with_torch(without_torch):
    ref = _linear_path()
    assert without_torch["torch_loaded"] == []
    for key in ("influence", "estimate", "K", "selection_estimates"):
        np.testing.assert_allclose(
            without_torch[key], ref[key], rtol=1e-10, atol=1e-14, err_msg=key
        )
    for key in ("selected_groups", "selected_examples", "selector_removed"):
        assert without_torch[key] == ref[key], key


def test_features_needing_torch_name_the_extra(without_torch):
    errors = without_torch["errors"]
    assert EXTRA in errors["callable_target"]
    assert EXTRA in errors["cuda"]
    assert "torch" in errors["torch_subpackage"]


def test_cli_demo_without_torch(without_torch):
    assert without_torch["demo_exit"] in (0, None)
    out = without_torch["demo_stdout"]
    assert "digits" in out and "parameters" in out


def test_numpy_tiles_equal_direct_product():
    """The numpy/BLAS tiles (no torch) against ``W diag(sigma) W'`` in one product."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((53, 7))
    sigma = np.array([1, 1, -1, 1, -1, 1, 1.0])
    ref = (W * sigma) @ W.T
    for tile in (1, 10, 53, 100):
        out = _dense_numpy(W, sigma, np.empty((53, 53)), tile)
        np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-13)
    out32 = _dense_numpy(W, sigma, np.empty((53, 53), dtype=np.float32), 10)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, ref, rtol=1e-5, atol=1e-5)
    # the torch tiles (when torch is installed) agree with the numpy tiles
    np.testing.assert_allclose(
        dense_from_factors(W, sigma, device="cpu", tile_size=10),
        ref,
        rtol=1e-13,
        atol=1e-13,
    )


def _cpu_only_machine():
    import glob
    import os

    return sys.platform.startswith("linux") and not (
        os.path.exists("/proc/driver/nvidia/version") or glob.glob("/dev/nvidia[0-9]*")
    )


@pytest.mark.skipif(not _cpu_only_machine(), reason="an NVIDIA driver is visible")
def test_dense_interaction_on_a_cpu_machine_does_not_import_torch():
    # torch installed but unused by the linear path: building the dense
    # interaction matrix must not import it (seconds of import time, and it
    # could only give the CPU on a machine without an NVIDIA driver)
    pytest.importorskip("torch")
    child = (
        "import sys, json\n"
        "import test_no_torch as t\n"
        "out = t._linear_path()\n"
        "print('LOADED' + json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] == 'torch')))\n"
    )
    assert _run_child(child, "LOADED") == []
