#!/usr/bin/env bash
# Install everything the test suite needs into .venv (CPU torch first) and run it.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -m slow
set -euo pipefail
source "$(dirname "$0")/_venv.sh" "[tests]"
.venv/bin/python -m pytest "$@"
