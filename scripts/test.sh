#!/usr/bin/env bash
# Set up what is missing (Docker engine, Python deps, agent image), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
NGB_EXTRA_PACKAGES="chromium systemd docker-compose ${NGB_EXTRA_PACKAGES:-}" bash scripts/setup.sh
VENV=${NGB_VENV:-.venv}
"$VENV/bin/ruff" check .
exec "$VENV/bin/python" -m pytest "$@"
