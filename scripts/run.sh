#!/usr/bin/env bash
# Set up what is missing, then run the daemon with the local chat at http://127.0.0.1:8640/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${NGB_VENV:-.venv}/bin/ngb" run --no-build "$@"
