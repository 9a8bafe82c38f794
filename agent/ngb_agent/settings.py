"""The runner's settings: the container's environment (Config), the limits of the wire, and the
fixed setup of the Claude Code CLI (quiet environment, tools it must not use, the system note)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

MAX_FRAME = 1 << 20  # bytes per JSON line, both ways, newline excluded
PRESCRIPT_STDOUT = 256 * 1024  # bytes of a pre-script's stdout passed to the host
PRESCRIPT_STDERR = 2000  # bytes of its stderr tail
READ_CHUNK = 64 * 1024
# Where the CLI keeps its state (sessions, settings) unless CLAUDE_CONFIG_DIR says otherwise:
# inside the group folder, the one mount that persists per group and is writable.
CONFIG_SUBDIR = ".claude-state"

# Extra fields of the ``ngb`` MCP server's config, passed on to the CLI.
MCP_EXTRA = {"alwaysLoad": True}  # keep the host tools out of deferred tool search

# The CLI's own settings (--settings): WebFetch asks no outside service whether a domain is safe,
# because the daemon's egress door decides what each group may reach (docs/web-access.md).
CLI_SETTINGS = '{"skipWebFetchPreflight": true}'
# Claude Code tools that would start turns on their own, talk to other sessions, or clash with
# the host's scheduler / send_message: the host owns those jobs.
DISALLOWED_TOOLS = ["CronCreate", "CronDelete", "CronList", "ScheduleWakeup", "SendMessage", "RemoteTrigger"]

# Environment for the CLI: no telemetry, no update checks, no other outside traffic.
# Values already present in the container's environment win (the operator may override).
QUIET_ENV = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "DISABLE_COST_WARNINGS": "1",
    "DISABLE_INSTALLATION_CHECKS": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
    "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
    "CLAUDE_CODE_ENABLE_TELEMETRY": "0",
    # The host's model proxy already retries 429/529/overloaded (model_retries, 3 by default) with
    # backoff; the CLI's own 10 retries on top made a rate-limited API see up to 44 calls for one
    # request. Two CLI retries still cover a stream that breaks after its first bytes (which the
    # proxy cannot retry): at most 3 x 4 = 12 calls.
    "CLAUDE_CODE_MAX_RETRIES": "2",
}

RUNNER_NOTE = """\
# NanoGridBot
You are the assistant of the chat group "{group}"{main}. Each user turn holds chat messages from \
that group. Text you write in reply is delivered to the chat. To post a message right away \
(for example a progress note during a long task, or a message in a scheduled task), use the \
mcp__ngb__send_message tool. Use the mcp__ngb__*_task tools to schedule, list and manage \
recurring or one-off tasks. Your working directory is the group's own folder; its CLAUDE.md is \
your memory for this group.
"""


def say(msg: str) -> None:
    """A line on the runner's stderr (the container's log)."""
    print(f"[runner {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class Config:
    def __init__(self) -> None:
        self.run_dir = Path(os.environ.get("NGB_RUN_DIR", "/run/ngb"))
        self.workspace = Path(os.environ.get("NGB_WORKSPACE", "/workspace"))
        self.model_port = _env_int("NGB_MODEL_PORT", 8787)
        # The egress door's proxy on loopback (0: the daemon gave this container no web.sock)
        self.web_port = _env_int("NGB_WEB_PORT", 0)
        # The group's web mode when the container started (off: no browser tools this container)
        self.web_mode = os.environ.get("NGB_WEB_MODE", "")
        self.connect_timeout = _env_float("NGB_CONNECT_TIMEOUT", 30.0)
        self.request_timeout = _env_float("NGB_REQUEST_TIMEOUT", 300.0)
        self.model = os.environ.get("NGB_MODEL") or None
        self.env_group = os.environ.get("NGB_GROUP") or None
        raw_main = os.environ.get("NGB_IS_MAIN")
        self.env_is_main = None if raw_main is None else raw_main.strip().lower() in ("1", "true", "yes")

    @property
    def control_sock(self) -> Path:
        return self.run_dir / "control.sock"

    @property
    def requests_sock(self) -> Path:
        return self.run_dir / "requests.sock"

    @property
    def model_sock(self) -> Path:
        return self.run_dir / "model.sock"

    @property
    def web_sock(self) -> Path:
        return self.run_dir / "web.sock"

    @property
    def cwd(self) -> Path:
        return self.workspace / "group"

    @property
    def global_memory(self) -> Path:
        return self.workspace / "global" / "CLAUDE.md"
