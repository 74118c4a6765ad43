#!/usr/bin/env bash
# Install the package into .venv (CPU torch first) and run the main job on
# bundled data: group influence of the ten digit classes, first-order vs
# interaction-aware vs actual refits. Extra arguments go to `groupinf demo`.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" ""
.venv/bin/python -m sklearn_groupinf demo "$@"
