#!/usr/bin/env bash
# Install the package into .venv (CPU torch first) and run the main job on
# bundled data: group influence of the ten digit classes, first-order vs
# interaction-aware vs actual refits. Extra arguments go to `groupinf demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e .
.venv/bin/python -m sklearn_groupinf demo "$@"
