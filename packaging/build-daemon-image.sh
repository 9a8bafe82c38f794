#!/usr/bin/env bash
# Build the daemon image of docker-compose.yml with the wheels fetched on the host first (the
# host's pip configuration: proxies, mirrors, CA), so the build itself needs no network.
#   packaging/build-daemon-image.sh [TAG]      BASE_IMAGE=... to pick the base
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-nanogridbot-daemon:latest}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
WHEELS=.cache/daemon-wheels
mkdir -p "$WHEELS"
"$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > "$WHEELS/requirements.txt"
echo "==> downloading the daemon's wheels into $WHEELS" >&2
"$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: -c requirements.lock -r "$WHEELS/requirements.txt" -d "$WHEELS"
echo "==> docker build -f Dockerfile.daemon -t $TAG" >&2
exec docker build -f Dockerfile.daemon ${BASE_IMAGE:+--build-arg BASE_IMAGE="$BASE_IMAGE"} -t "$TAG" .
