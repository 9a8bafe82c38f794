#!/usr/bin/env bash
# The Synapse homeserver the Matrix tests run against (tests/matrix_server.py), installed into a
# venv of its own, never the project's: matrix-synapse pins its own dependencies. Idempotent: a
# version stamp in the venv says it is done (about 20 s and 250 MB the first time, a blink after).
#   NGB_SYNAPSE_VENV  where (default: .venv-synapse in the checkout); the tests read the same variable
#   NGB_VENV          the project venv whose Python builds it (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
SYNAPSE_VERSION=1.163.2
VENV=${NGB_VENV:-.venv}
SYNAPSE_VENV=${NGB_SYNAPSE_VENV:-.venv-synapse}
stamp="$SYNAPSE_VENV/.ngb-synapse-$SYNAPSE_VERSION"
[ -e "$stamp" ] && exit 0
printf '==> installing matrix-synapse %s into %s (for the Matrix tests)\n' "$SYNAPSE_VERSION" "$SYNAPSE_VENV" >&2
rm -rf "$SYNAPSE_VENV"
"$VENV/bin/python" -c 'import sys, venv; venv.create(sys.argv[1], with_pip=True)' "$SYNAPSE_VENV"
"$SYNAPSE_VENV/bin/python" -m pip install -q --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION"
touch "$stamp"
