"""The Claude Code CLI this container runs: its options (environment, system note, tools), the
session to resume, and the ClaudeSDKClient that drives it (on the early-started process when the
SDK accepts it, see early_cli.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .browser import Browser
from .browser_tools import BROWSER_SERVER, browser_hooks, browser_server, merge_hooks
from .early_cli import EARLY_CLI_MIN_CPUS, SDK_LOADER, EarlyCli, adopting_transport, effective_cpus
from .host import HostRequests
from .host_tools import build_mcp_server
from .settings import (
    CLI_SETTINGS,
    CONFIG_SUBDIR,
    DISALLOWED_TOOLS,
    MCP_EXTRA,
    QUIET_ENV,
    RUNNER_NOTE,
    Config,
    say,
)


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


WEB_NOTE = "The egress door (the daemon's web proxy, your only way to the web) during this tool call:"


class AgentCli:
    def __init__(
        self, cfg: Config, requests: HostRequests, web_notes: Callable[[], Awaitable[list[str]]] | None = None
    ) -> None:
        self.cfg = cfg
        self.requests = requests
        self.web_notes = web_notes  # the door's refusals and cuts since the last call (host.WebForwarder)
        self.port = 0  # the model forwarder's, set once it listens
        self.group = cfg.env_group or "group"
        self.is_main = bool(cfg.env_is_main)
        self.extra_tools: list[dict[str, Any]] = []  # the plugins' tools (start.tools)
        self.want_session: str | None = None
        self.previews = False  # start.previews: stream the model's partial messages (drafts.py)
        self.resumed = False
        self.fresh_note: str | None = None
        self.early: EarlyCli | None = None
        self._cli_base: tuple[dict[str, str], str] | None = None
        # headless Chromium, started by its tools; none while the group's web is off (NGB_WEB_MODE)
        self.browser = Browser(0 if cfg.web_mode == "off" else cfg.web_port, cfg.cwd)

    def cli_base(self) -> tuple[dict[str, str], str]:
        """The CLI's extra environment and appended system prompt (computed once per runner)."""
        if self._cli_base is not None:
            return self._cli_base
        env = {k: v for k, v in QUIET_ENV.items() if k not in os.environ}
        env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{self.port}"
        # Sessions must outlive the container (HOME is a tmpfs there) for resume to work.
        env["CLAUDE_CONFIG_DIR"] = os.environ.get("CLAUDE_CONFIG_DIR") or str(self.cfg.cwd / CONFIG_SUBDIR)
        if not os.environ.get("ANTHROPIC_API_KEY") and not os.environ.get("ANTHROPIC_AUTH_TOKEN"):
            env["ANTHROPIC_API_KEY"] = "ngb-placeholder"
        append = RUNNER_NOTE.format(
            group=self.group, main=" (the main group: you may manage other groups)" if self.is_main else ""
        )
        try:
            global_md = self.cfg.global_memory.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            global_md = ""
        if global_md:
            append += "\n# Global memory (shared by all groups, read-only)\n" + global_md + "\n"
        self._cli_base = (env, append)
        return self._cli_base

    def options(self, resume: str | None) -> Any:
        from claude_agent_sdk import ClaudeAgentOptions

        env, append = self.cli_base()
        server = build_mcp_server(self.requests, self.is_main, self.extra_tools)
        server = {**server, **MCP_EXTRA}
        return ClaudeAgentOptions(
            cwd=str(self.cfg.cwd),
            permission_mode="bypassPermissions",
            resume=resume,
            setting_sources=["project"],
            system_prompt={"type": "preset", "preset": "claude_code", "append": append},
            # The SDK's McpSdkServerConfig does not list alwaysLoad, which it passes on to the CLI.
            mcp_servers=self.mcp_servers(server),
            disallowed_tools=list(DISALLOWED_TOOLS),
            model=self.cfg.model,
            settings=CLI_SETTINGS,
            hooks=merge_hooks(self.hooks(), browser_hooks(self.browser)),  # type: ignore[arg-type]
            env=dict(env),
            verbatim_prompts=True,
            max_buffer_size=16 * 1024 * 1024,
            include_partial_messages=self.previews,
            stderr=lambda line: say(f"[cli] {line.rstrip()}"),
        )

    def mcp_servers(self, host_tools: dict[str, Any]) -> dict[str, Any]:
        """The host's tools, and the browser's where this image has a browser and the container a
        way to the web (else its six tool schemas would cost tokens in every request for nothing)."""
        servers = {"ngb": host_tools}
        if self.browser.unavailable() is None:
            servers[BROWSER_SERVER] = {**browser_server(self.browser), **MCP_EXTRA}
        return servers

    def hooks(self) -> dict[str, list[Any]] | None:
        """After every tool call (succeeded or failed) that used the web: what the door refused or
        cut meanwhile, as context for the model, because clients such as WebFetch show only "proxy
        refused the connection", and a cut download only as a broken one."""
        if self.web_notes is None:
            return None
        from claude_agent_sdk import HookMatcher

        take = self.web_notes

        def after(event: str) -> Callable[..., Awaitable[dict[str, Any]]]:
            async def hook(_input: Any, _tool_use_id: str | None, _context: Any) -> dict[str, Any]:
                rules = list(dict.fromkeys(await take()))
                if not rules:
                    return {}
                note = WEB_NOTE + "".join(f"\n- {rule}" for rule in rules)
                return {"hookSpecificOutput": {"hookEventName": event, "additionalContext": note}}

            return hook

        events = ("PostToolUse", "PostToolUseFailure")
        return {event: [HookMatcher(matcher=None, hooks=[after(event)])] for event in events}  # type: ignore[list-item]

    def first_resume(self) -> str | None:
        resume = self.want_session
        if resume is not None and not is_uuid(resume):
            self.fresh_note = f"stored session id {resume!r} is not a session id; started a new session"
            resume = None
        return resume

    def predicted_spawn(
        self, pkg_dir: Path, sdk_version: str, resume: str | None
    ) -> tuple[list[str], dict[str, Any]]:
        """The ``anyio.open_process`` call SubprocessCLITransport.connect() makes for options(resume)
        (claude-agent-sdk 0.2.188); the SDK's own call is compared with it before the early
        process is used, so a difference costs time, never correctness."""
        env, append = self.cli_base()
        cmd = [str(pkg_dir / "_bundled" / "claude"), "--output-format", "stream-json", "--verbose"]
        cmd += ["--append-system-prompt", append, "--disallowedTools", ",".join(DISALLOWED_TOOLS)]
        if self.cfg.model:
            cmd += ["--model", self.cfg.model]
        cmd += ["--permission-mode", "bypassPermissions"]
        if resume:
            cmd.append(f"--resume={resume}")
        cmd += ["--settings", CLI_SETTINGS]
        mcp = {"type": "sdk", "name": "ngb", **MCP_EXTRA}
        servers: dict[str, Any] = {"ngb": mcp}
        if self.browser.unavailable() is None:
            servers[BROWSER_SERVER] = {"type": "sdk", "name": BROWSER_SERVER, **MCP_EXTRA}
        cmd += ["--mcp-config", json.dumps({"mcpServers": servers})]
        cmd += ["--setting-sources=project", "--input-format", "stream-json"]
        process_env = {k: v for k, v in os.environ.items() if k != "CLAUDECODE"}
        process_env["CLAUDE_CODE_ENTRYPOINT"] = "sdk-py"
        process_env.update(env)
        process_env["CLAUDE_AGENT_SDK_VERSION"] = sdk_version
        process_env.pop("CLAUDE_AGENT_SDK_DERIVED_CLIENT_APP", None)
        if not any(k.upper() == "CLAUDE_CODE_SDK_READS_SESSION_STATE" for k in process_env):
            process_env["CLAUDE_CODE_SDK_READS_SESSION_STATE"] = "1"
        process_env["PWD"] = str(self.cfg.cwd)
        kwargs = {
            "stdin": subprocess.PIPE,
            "stdout": subprocess.PIPE,
            "stderr": subprocess.PIPE,
            "cwd": str(self.cfg.cwd),
            "env": process_env,
            "user": None,
        }
        return cmd, kwargs

    async def start_early(self) -> None:
        """Spawn the CLI for the first connect attempt while the SDK is still importing."""
        mode = os.environ.get("NGB_EARLY_CLI", "auto").strip().lower()
        if mode in ("0", "false", "no", "off"):
            return
        if mode not in ("1", "true", "yes", "on") and effective_cpus() < EARLY_CLI_MIN_CPUS:
            return  # one CPU: the CLI's start-up would only slow the import down as much
        if not await SDK_LOADER.wait_located():
            return
        if SDK_LOADER.finished.is_set():
            return  # the SDK is already imported: nothing to overlap
        pkg_dir, version = SDK_LOADER.pkg_dir, SDK_LOADER.version
        assert pkg_dir is not None and version is not None
        if sys.platform == "win32" or not (pkg_dir / "_bundled" / "claude").is_file():
            return
        try:
            import anyio  # imported already by SdkLoader phase 1

            cmd, kwargs = self.predicted_spawn(pkg_dir, version, self.first_resume())
            process = await anyio.open_process(cmd, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the SDK will start it later
            say(f"early CLI start failed: {exc!r}")
            return
        self.early = EarlyCli(cmd, kwargs, process)

    def new_client(self, options: Any, early: EarlyCli | None) -> Any:
        """A ClaudeSDKClient; with ``early``, one whose transport adopts that process."""
        from claude_agent_sdk import ClaudeSDKClient

        if early is not None:
            try:
                return ClaudeSDKClient(options, transport=adopting_transport(options, early))
            except Exception as exc:  # noqa: BLE001 - an SDK that changed inside: the plain way
                say(f"early CLI not used: {exc!r}")
        return ClaudeSDKClient(options)

    async def open_client(self, warn: Callable[[str], Awaitable[None]]) -> Any:
        """The connected client: resuming the stored session, or (if that fails) a new one."""
        early, self.early = self.early, None
        try:
            resume = self.first_resume()
            if resume is not None:
                client = self.new_client(self.options(resume), early)
                early_for_fresh = None
                try:
                    await client.connect()
                except Exception as exc:  # noqa: BLE001 - any failure to resume means: start fresh
                    reason = " ".join(str(exc).split())[:300]
                    self.fresh_note = f"could not resume session {resume}: {reason}; started a new session"
                    await warn(self.fresh_note)
                else:
                    self.resumed = True
                    return client
            else:
                early_for_fresh = early
            client = self.new_client(self.options(None), early_for_fresh)
            await client.connect()
            return client
        finally:
            if early is not None:
                await early.discard()  # a no-op once the SDK adopted it

    async def discard_early(self) -> None:
        if self.early is not None:
            early, self.early = self.early, None
            await early.discard()
