#!/usr/bin/env bash
# Install the WhatsApp bridge's Node dependencies from the committed lockfile (npm ci), only when
# node_modules is missing or package-lock.json changed since the last install. Idempotent; called
# by scripts/setup.sh. Needs Node.js >= 20 and npm.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "bridge/install.sh: Node.js >= 20 and npm are needed for the WhatsApp bridge (skipping)" >&2
    exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "bridge/install.sh: Node.js $(node --version) is too old; the bridge needs >= 20" >&2
    exit 1
fi

stamp=node_modules/.ngb-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -d node_modules ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "bridge: dependencies up to date"
    exit 0
fi
echo "bridge: npm ci (package-lock.json changed or node_modules missing)"
npm ci --no-audit --no-fund
echo "$want" > "$stamp"
node -e 'require("baileys"); require("ws"); require("pino"); require("qrcode-terminal")'
echo "bridge: dependencies installed"
