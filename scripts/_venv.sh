# Sourced by demo.sh and test.sh: make .venv and install the pinned CPU torch
# first (a looser requirement would pull a multi-GB CUDA build), then the
# package with the extras given as "$1" (e.g. "[tests]", or "" for none).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".$1"
