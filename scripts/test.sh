#!/usr/bin/env bash
# Set up what is missing (Docker engine, Python deps, Node.js, agent image), check the code (ruff,
# mypy, vulture, the import-layer contract), then run the WhatsApp
# bridge's tests (node --test bridge/test) and the whole test suite,
# then the short benchmark (bench/short.py, < 1 minute), which fails when a figure is past its goal
# by more than its margin. The benchmark runs after a full run (no arguments) or with NGB_BENCH=1;
# NGB_BENCH=0 skips it. A full run measures branch coverage (NGB_COVERAGE=0/1) and fails under
# its floor. Then, likewise (NGB_COMPAT=0/1), scripts/compat.sh runs the quick tests
# again under each newer Python found (3.12, 3.13, ...), each in a venv of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
trap 'echo "test: $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s in all (exit $?)" >&2' EXIT
# Servers the tests run themselves on loopback, from Debian's packages: Dovecot (IMAP + LMTP, the
# email tests: tests/mail_servers.py), nginx (the reverse proxy test: tests/nginx_proxy.py) and
# prometheus (its promtool checks the alert rules: tests/test_monitoring.py).
# Installed for the tests only: a system service a package started is stopped again.
test_services="dovecot:dovecot-imapd nginx:nginx prometheus:prometheus"
new_services=""
for pair in $test_services; do
  dpkg -s "${pair#*:}" >/dev/null 2>&1 || new_services="$new_services ${pair%%:*}"
done
NGB_EXTRA_PACKAGES="chromium systemd docker-compose dovecot-imapd dovecot-lmtpd nginx prometheus ${NGB_EXTRA_PACKAGES:-}" bash scripts/setup.sh
for service in $new_services; do
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now "$service" >/dev/null 2>&1 || true
  elif command -v service >/dev/null 2>&1; then
    service "$service" stop >/dev/null 2>&1 || true
  fi
done
VENV=${NGB_VENV:-.venv}
NGB_VENV="$VENV" bash scripts/setup-synapse.sh  # the Matrix tests' homeserver, in its own venv
"$VENV/bin/ruff" check .
# The habits that keep the structure (docs/architecture.md): zero type errors at mypy's standard
# level over ngb/ and agent/, no dead code (vulture; allow list in tests/vulture_allow.py), and the
# layer contract (.importlinter; tests/test_layers.py runs it too, with the check that every module
# has a layer).
"$VENV/bin/mypy"
"$VENV/bin/vulture"
"$VENV/bin/lint-imports" --no-cache
# The WhatsApp bridge's own tests (bridge/test), on the Node the daemon runs; no Node is a failure.
NGB_NODE=$("$VENV/bin/python" -c 'from ngb.channels.whatsapp import find_node; print(find_node() or "")')
[ -n "$NGB_NODE" ] || { echo "test: no Node.js >= 20 for the WhatsApp bridge (scripts/setup.sh installs one)" >&2; exit 1; }
export NGB_NODE
(cd bridge && "$NGB_NODE" --test --test-reporter=spec test/*.test.js)
full=$([ $# -eq 0 ] && echo 1 || echo 0)
if [ "${NGB_COVERAGE:-$full}" = "1" ]; then
  # Branch coverage of ngb/ and agent/ (pyproject's [tool.coverage.*]); the run fails under the
  # floor in pyproject (fail_under) and names the least covered modules. Report:
  # .coverage-data/report.txt, one line per module, least covered first.
  export COVERAGE_FILE="$PWD/.coverage-data/run"
  rm -rf .coverage-data && mkdir -p .coverage-data
  chmod 1777 .coverage-data  # the tests run some commands as other host users (hostuser): they write here too
  "$VENV/bin/python" -m coverage run -m pytest "$@"
  "$VENV/bin/python" -m coverage combine -q
  "$VENV/bin/python" -m coverage report > .coverage-data/report.txt || true
  echo "coverage: the 15 least covered modules (all: .coverage-data/report.txt)"
  sed -n '1,2p;3,17p' .coverage-data/report.txt
  tail -n 1 .coverage-data/report.txt
  "$VENV/bin/python" -m coverage report --format=total > /dev/null \
    || { echo "test: branch coverage $("$VENV/bin/python" -m coverage report --format=total --fail-under=0)% is under the floor (pyproject: fail_under)" >&2; exit 1; }
else
  "$VENV/bin/python" -m pytest "$@"
fi
if [ "${NGB_BENCH:-$full}" = "1" ]; then
  "$VENV/bin/python" -m bench --short --check
fi
if [ "${NGB_COMPAT:-$full}" = "1" ]; then
  NGB_COMPAT=1 bash scripts/compat.sh  # the quick tests again under Python 3.12+ when present
fi
