#!/usr/bin/env bash
# Set up what is missing (Docker engine, Python deps, agent image), then run the whole test suite,
# then the short benchmark (bench/short.py, < 1 minute), which fails when a figure is past its goal
# by more than its margin. The benchmark runs after a full run (no arguments) or with NGB_BENCH=1;
# NGB_BENCH=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
NGB_EXTRA_PACKAGES="chromium systemd docker-compose ${NGB_EXTRA_PACKAGES:-}" bash scripts/setup.sh
VENV=${NGB_VENV:-.venv}
"$VENV/bin/ruff" check .
"$VENV/bin/python" -m pytest "$@"
if [ "${NGB_BENCH:-$([ $# -eq 0 ] && echo 1 || echo 0)}" = "1" ]; then
  exec "$VENV/bin/python" -m bench --short --check
fi
