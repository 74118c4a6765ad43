#!/usr/bin/env bash
# Install everything the test suite needs into .venv (CPU torch first) and run it.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# the pinned CPU build of torch must come before the package (a looser
# requirement would pull a multi-GB CUDA build)
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[tests]"
.venv/bin/python -m pytest "$@"
