#!/usr/bin/env bash
# The newer Pythons we promise (3.12, 3.13, ...): for each one found, a venv of its own from
# requirements.lock, then the suite's quick part (no Docker, no slow tests) under it. The full
# suite, with Docker, runs under the main venv's Python (scripts/test.sh).
#
#   NGB_COMPAT_PYTHONS="python3.12 /opt/py/bin/python3.13"   which interpreters (default: python3.12
#                                                              and newer on PATH, or else installed
#                                                              by pyenv)
#   NGB_COMPAT=0                                              skip
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${NGB_COMPAT:-1}" = "0" ] && exit 0

pythons=${NGB_COMPAT_PYTHONS:-}
usable() { "$1" -c 'import venv, ensurepip' >/dev/null 2>&1; }
if [ -z "$pythons" ]; then
  pyenv_root=$(command -v pyenv >/dev/null 2>&1 && pyenv root 2>/dev/null || true)
  for minor in 12 13 14 15; do
    if usable "python3.$minor"; then  # on PATH (a pyenv shim of a version not selected fails here)
      pythons="$pythons python3.$minor"
      continue
    fi
    for candidate in $(ls -d "${pyenv_root:-/nonexistent}"/versions/3."$minor".*/bin/python3."$minor" 2>/dev/null | sort -V -r); do
      if usable "$candidate"; then pythons="$pythons $candidate"; break; fi
    done
  done
fi
if [ -z "${pythons// /}" ]; then
  echo "compat: no Python 3.12 or newer on PATH; only $(python3 --version 2>&1) was tested"
  exit 0
fi

status=0
for py in $pythons; do
  version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  venv=".venv-compat/$version"
  stamp="$venv/.ngb-lock-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
  if [ ! -e "$stamp" ]; then
    echo "compat: Python $version: installing requirements.lock into $venv"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements.lock
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
    touch "$stamp"
  fi
  echo "compat: Python $version: the quick tests (-m 'not docker and not slow and not hostuser')"
  if ! "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not docker and not slow and not hostuser" "$@"; then
    echo "compat: FAILED under Python $version" >&2
    status=1
  fi
done
exit $status
