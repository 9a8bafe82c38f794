#!/usr/bin/env python3
"""NanoGridBot agent runner: the program that runs inside each group's container.

It implements the runner side of docs/agent-protocol.md:

* connects to ``$NGB_RUN_DIR/control.sock`` (default ``/run/ngb``), says ``hello``, gets ``start``;
* listens on ``127.0.0.1:$NGB_MODEL_PORT`` and pipes every TCP connection byte-for-byte to
  ``$NGB_RUN_DIR/model.sock`` (the host's model proxy), so the Claude Code CLI reaches the model
  API with ``ANTHROPIC_BASE_URL=http://127.0.0.1:PORT`` and no network of its own;
* drives ``ClaudeSDKClient`` in streaming mode: every ``input`` frame becomes a user message in
  the live session, assistant text becomes ``output`` frames, every ``ResultMessage`` a ``result``;
* serves the host's tools to the agent as an in-process MCP server named ``ngb``; each tool call
  is one JSON-lines request over ``$NGB_RUN_DIR/requests.sock``.

Self-contained on purpose: Python 3.11 stdlib plus ``claude_agent_sdk``, no import of ``ngb``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = 1
MAX_FRAME = 1 << 20  # bytes per JSON line, both ways, newline excluded
PRESCRIPT_STDOUT = 256 * 1024  # bytes of a pre-script's stdout passed to the host
PRESCRIPT_STDERR = 2000  # bytes of its stderr tail
READ_CHUNK = 64 * 1024
# Where the CLI keeps its state (sessions, settings) unless CLAUDE_CONFIG_DIR says otherwise:
# inside the group folder, the one mount that persists per group and is writable.
CONFIG_SUBDIR = ".claude-state"

# Extra fields of the ``ngb`` MCP server's config, passed on to the CLI.
MCP_EXTRA = {"alwaysLoad": True}  # keep the host tools out of deferred tool search

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


def _stderr(msg: str) -> None:
    print(f"[runner {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ framing


class FrameError(Exception):
    """A frame that is too long, not UTF-8, not JSON or not an object."""


TOO_LONG = object()


class LineReader:
    """Reads ``\\n``-terminated lines of at most ``max_frame`` bytes from a StreamReader.

    A longer line is reported once as ``TOO_LONG`` and discarded up to its newline; the stream
    stays usable. ``next()`` returns ``None`` at EOF.
    """

    def __init__(self, reader: asyncio.StreamReader, max_frame: int = MAX_FRAME) -> None:
        self.reader = reader
        self.max_frame = max_frame
        self.buf = bytearray()
        self.discarding = False
        self.eof = False

    async def next(self) -> bytes | object | None:
        while True:
            idx = self.buf.find(b"\n")
            if idx >= 0:
                line = bytes(self.buf[:idx])
                del self.buf[: idx + 1]
                if self.discarding:
                    self.discarding = False
                    continue
                if len(line) > self.max_frame:
                    return TOO_LONG
                return line
            if len(self.buf) > self.max_frame:
                self.buf.clear()
                if not self.discarding:
                    self.discarding = True
                    return TOO_LONG
            if self.eof:
                if self.buf and not self.discarding:
                    line = bytes(self.buf)
                    self.buf.clear()
                    return line
                return None
            chunk = await self.reader.read(READ_CHUNK)
            if not chunk:
                self.eof = True
            else:
                self.buf += chunk


def decode_frame(line: bytes) -> dict[str, Any]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(f"frame is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise FrameError(f"frame is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FrameError(f"frame is not a JSON object (got {type(obj).__name__})")
    return obj


def encode_frame(frame: dict[str, Any]) -> bytes:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


class FrameWriter:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.lock = asyncio.Lock()
        self.closed = False

    async def send(self, frame: dict[str, Any]) -> None:
        data = encode_frame(frame)
        if len(data) > MAX_FRAME + 1:
            data = encode_frame(_shrink(frame))
        async with self.lock:
            if self.closed:
                return
            try:
                self.writer.write(data)
                await self.writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                self.closed = True
                _stderr(f"control write failed: {exc!r}")

    async def close(self) -> None:
        async with self.lock:
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.close()
                await self.writer.wait_closed()


def _shrink(frame: dict[str, Any]) -> dict[str, Any]:
    """Cut the longest string fields of a frame until it fits in MAX_FRAME."""
    frame = dict(frame)
    for _ in range(8):
        if len(encode_frame(frame)) <= MAX_FRAME + 1:
            break
        key = max(
            (k for k, v in frame.items() if isinstance(v, str)), key=lambda k: len(frame[k]), default=None
        )
        if key is None:
            return {"type": frame.get("type", "error"), "error": "frame too large to send"}
        frame[key] = frame[key][: len(frame[key]) // 2] + " [truncated]"
    return frame


def split_text(text: str, limit: int = MAX_FRAME // 2) -> list[str]:
    """Split text into pieces whose UTF-8 JSON encoding stays well under MAX_FRAME."""
    if len(json.dumps(text, ensure_ascii=False).encode()) <= limit:
        return [text]
    pieces, cur, size = [], [], 0
    for ch in text:
        n = len(json.dumps(ch, ensure_ascii=False).encode()) - 2
        if size + n > limit:
            pieces.append("".join(cur))
            cur, size = [], 0
        cur.append(ch)
        size += n
    if cur:
        pieces.append("".join(cur))
    return pieces


# ------------------------------------------------------------------------------ configuration


class Config:
    def __init__(self) -> None:
        self.run_dir = Path(os.environ.get("NGB_RUN_DIR", "/run/ngb"))
        self.workspace = Path(os.environ.get("NGB_WORKSPACE", "/workspace"))
        self.model_port = _env_int("NGB_MODEL_PORT", 8787)
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
    def cwd(self) -> Path:
        return self.workspace / "group"

    @property
    def global_memory(self) -> Path:
        return self.workspace / "global" / "CLAUDE.md"


# ------------------------------------------------------------------------- early SDK / CLI start
#
# Importing claude_agent_sdk takes about half a second (it loads mcp.types / pydantic), and the CLI
# it spawns needs about as long again to reach its first model request. The runner overlaps the
# two: a thread imports the SDK from the runner's first moment, and as soon as the start frame is
# known the runner spawns the bundled CLI itself, with the command line and environment the SDK
# will build for these options. Once the import is done the SDK's own transport runs its normal
# connect(); at the point where it would spawn the CLI it is handed the running process, but only
# if its command, environment, cwd and pipes are exactly the ones the early process got. Otherwise
# the early process is killed and the SDK spawns its own (slower, never wrong).


# Starting the CLI early pays off only when it can run beside the import: with a CPU quota of one
# CPU both are CPU-bound and the sum is the same (measured slightly worse, ~+40 ms).
EARLY_CLI_MIN_CPUS = 1.5


def effective_cpus() -> float:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (v2 or v1)."""
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cpus = float(os.cpu_count() or 1)
    quota = period = 0
    try:
        parts = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if parts and parts[0] != "max":
            quota, period = int(parts[0]), int(parts[1])
    except (OSError, ValueError, IndexError):
        try:
            quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            quota = period = 0
    if quota > 0 and period > 0:
        cpus = min(cpus, quota / period)
    return cpus


class SdkLoader:
    """Imports claude_agent_sdk in a background thread.

    Phase 1 (a few ms) imports anyio's asyncio backend and finds the package without running it,
    so the main thread can spawn the CLI through ``anyio.open_process`` without importing anything
    itself while phase 2, the SDK import, runs (two threads importing at once can trip over each
    other's module locks).
    """

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.located = threading.Event()
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[tuple[threading.Event, asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.pkg_dir: Path | None = None
        self.version: str | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="sdk-import", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        try:
            import importlib.util
            import re

            import anyio  # noqa: F401
            import anyio._backends._asyncio  # noqa: F401

            spec = importlib.util.find_spec("claude_agent_sdk")  # does not run the package
            locations = list(spec.submodule_search_locations or []) if spec else []
            if locations:
                pkg = Path(locations[0])
                text = (pkg / "_version.py").read_text(encoding="utf-8")
                m = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.M)
                if m:
                    self.pkg_dir, self.version = pkg, m.group(1)
        except Exception as exc:  # noqa: BLE001 - only the early start is lost
            _stderr(f"early CLI start unavailable: {exc!r}")
        finally:
            self._signal(self.located)
        # The import allocates a few hundred thousand long-lived objects (pydantic models of
        # mcp.types); collecting during it finds next to nothing and costs ~10% of it. Freezing
        # them afterwards keeps later full collections (in the middle of a turn) from walking
        # them all; merely deferring the collection would move that cost into the first turn.
        gc.disable()
        try:
            with contextlib.suppress(BaseException):  # a failure shows again in the main thread
                import claude_agent_sdk  # noqa: F401
        finally:
            gc.freeze()
            gc.enable()
            self._signal(self.finished)

    # The waits are woken with call_soon_threadsafe: asyncio.to_thread would import
    # concurrent.futures.thread on the main thread while the SDK import runs.

    def _signal(self, flag: threading.Event) -> None:
        with self._lock:
            flag.set()
            waiters = [(loop, event) for f, loop, event in self._waiters if f is flag]
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(event.set)

    async def _wait(self, flag: threading.Event) -> None:
        event = asyncio.Event()
        with self._lock:
            if flag.is_set():
                return
            self._waiters.append((flag, asyncio.get_running_loop(), event))
        await event.wait()

    async def wait_located(self) -> bool:
        """True when phase 1 found the package (then the main thread may use anyio)."""
        if self.thread is None:
            return False
        await self._wait(self.located)
        return self.pkg_dir is not None

    async def wait(self) -> None:
        """Until the background import has finished (at once if it never started)."""
        if self.thread is not None:
            await self._wait(self.finished)


SDK_LOADER = SdkLoader()


class EarlyCli:
    """A CLI process started before the SDK was imported, waiting for the SDK to adopt it."""

    def __init__(self, command: list[str], kwargs: dict[str, Any], process: Any) -> None:
        self.command = command
        self.kwargs = kwargs
        self.process = process
        self.adopted = False

    def mismatch(self, command: list[str], kwargs: dict[str, Any]) -> str | None:
        if command != self.command:
            for i, (a, b) in enumerate(zip(command, self.command, strict=False)):
                if a != b:
                    return f"command differs at argument {i} ({a[:80]!r} vs {b[:80]!r})"
            return f"command length differs ({len(command)} vs {len(self.command)})"
        if kwargs.keys() != self.kwargs.keys():
            return f"spawn arguments differ ({sorted(kwargs)} vs {sorted(self.kwargs)})"
        for key, value in kwargs.items():
            if key == "env" and value != self.kwargs["env"]:
                env = self.kwargs["env"]
                keys = sorted(k for k in set(value) | set(env) if value.get(k) != env.get(k))
                return f"environment differs in {keys}"
            if value != self.kwargs[key]:
                return f"spawn argument {key} differs"
        return None

    async def discard(self) -> None:
        """Kill the process (it was not adopted) and reap it."""
        proc, self.process = self.process, None
        if proc is None or self.adopted:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            if proc.returncode is None:
                proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.aclose(), 5)


class _OpenProcessShim:
    """Stands in for the ``anyio`` module inside the SDK's transport during one connect():
    ``open_process`` returns the early CLI when the SDK asks for exactly that process."""

    def __init__(self, real: Any, early: EarlyCli) -> None:
        self._real = real
        self._early: EarlyCli | None = early

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def open_process(self, command: Any, **kwargs: Any) -> Any:
        early, self._early = self._early, None
        if early is not None and early.process is not None:
            reason = "command is not a list"
            if isinstance(command, list):
                reason = early.mismatch([str(c) for c in command], kwargs)
            if reason is None:
                early.adopted = True
                return early.process
            _stderr(f"early CLI not used ({reason}); starting it the SDK's way")
            await early.discard()
        return await self._real.open_process(command, **kwargs)


_ADOPTING_TRANSPORT: Any = None


def adopting_transport(options: Any, early: EarlyCli) -> Any:
    """The SDK's own subprocess transport, set to adopt ``early`` instead of spawning."""
    global _ADOPTING_TRANSPORT
    if _ADOPTING_TRANSPORT is None:
        from claude_agent_sdk._internal.transport import subprocess_cli

        class AdoptingTransport(subprocess_cli.SubprocessCLITransport):  # type: ignore[misc, valid-type]
            def __init__(self, options: Any, early: EarlyCli) -> None:
                super().__init__(prompt=_no_prompt(), options=options)
                self._early: EarlyCli | None = early

            async def connect(self) -> None:
                early, self._early = self._early, None
                real = subprocess_cli.anyio
                if early is None or self._process is not None or not hasattr(real, "open_process"):
                    if early is not None:
                        await early.discard()
                    await super().connect()
                    return
                subprocess_cli.anyio = _OpenProcessShim(real, early)
                try:
                    await super().connect()
                finally:
                    subprocess_cli.anyio = real
                    if not early.adopted:
                        await early.discard()

        _ADOPTING_TRANSPORT = AdoptingTransport
    return _ADOPTING_TRANSPORT(options, early)


async def _no_prompt() -> AsyncIterator[dict[str, Any]]:
    return
    yield {}  # pragma: no cover - makes this an (empty) async generator


# ---------------------------------------------------------------------------- model forwarder


class ModelForwarder:
    """127.0.0.1:PORT -> model.sock, byte for byte, one unix connection per TCP connection."""

    def __init__(self, sock_path: Path) -> None:
        self.sock_path = sock_path
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.connections = 0

    async def start(self, port: int) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            ureader, uwriter = await asyncio.open_unix_connection(str(self.sock_path))
        except OSError as exc:
            _stderr(f"model.sock unavailable: {exc!r}")
            body = json.dumps(
                {
                    "type": "error",
                    "error": {"type": "api_error", "message": f"model proxy unavailable: {exc}"},
                }
            ).encode()
            head = (
                "HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            ).encode()
            with contextlib.suppress(Exception):
                cwriter.write(head + body)
                await cwriter.drain()
                cwriter.close()
            return
        up = asyncio.create_task(self._pipe(creader, uwriter))
        down = asyncio.create_task(self._pipe(ureader, cwriter))
        try:
            done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_EXCEPTION)
            if any(t.exception() for t in done if not t.cancelled()):
                for t in pending:
                    t.cancel()
            else:
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            for t in (up, down):
                t.cancel()
            for w in (cwriter, uwriter):
                with contextlib.suppress(Exception):
                    w.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while True:
            data = await src.read(READ_CHUNK)
            if not data:
                break
            dst.write(data)
            await dst.drain()
        with contextlib.suppress(Exception):
            if dst.can_write_eof():
                dst.write_eof()


# ------------------------------------------------------------------------------ host requests


class HostRequests:
    """JSON-lines client for requests.sock; many calls may be in flight on one connection."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.ids = itertools.count(1)
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()

    async def _ensure(self) -> asyncio.StreamWriter:
        if self.writer is None or self.writer.is_closing():
            reader, writer = await asyncio.open_unix_connection(str(self.path))
            self.writer = writer
            self.reader_task = asyncio.create_task(self._read_loop(reader, writer))
        return self.writer

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines = LineReader(reader)
        try:
            while True:
                line = await lines.next()
                if line is None:
                    break
                if line is TOO_LONG:
                    _stderr("requests.sock: answer longer than MAX_FRAME dropped")
                    continue
                assert isinstance(line, bytes)
                if not line.strip():
                    continue
                try:
                    obj = decode_frame(line)
                except FrameError as exc:
                    _stderr(f"requests.sock: {exc}")
                    continue
                fut = self.pending.pop(str(obj.get("id")), None)
                if fut is None:
                    _stderr(f"requests.sock: answer for unknown id: {str(obj)[:300]}")
                elif not fut.done():
                    fut.set_result(obj)
        except (ConnectionError, OSError) as exc:
            _stderr(f"requests.sock read failed: {exc!r}")
        finally:
            if self.writer is writer:
                self.writer = None
            with contextlib.suppress(Exception):
                writer.close()
            for rid, fut in list(self.pending.items()):
                if not fut.done():
                    fut.set_exception(ConnectionError("requests.sock closed before the host answered"))
                self.pending.pop(rid, None)

    async def call(self, tool_name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Send one request; return the host's answer ({"ok": ..., "result"|"error": ...})."""
        rid = f"r{next(self.ids)}"
        data = encode_frame({"id": rid, "tool": tool_name, "args": args})
        if len(data) > MAX_FRAME + 1:
            return {
                "id": rid,
                "ok": False,
                "error": f"request too large ({len(data)} bytes, max {MAX_FRAME})",
            }
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        try:
            async with self.lock:
                writer = await self._ensure()
                self.pending[rid] = fut
                writer.write(data)
                await writer.drain()
            return await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            return {"id": rid, "ok": False, "error": f"the host did not answer within {self.timeout:g}s"}
        except (ConnectionError, OSError) as exc:
            return {"id": rid, "ok": False, "error": f"cannot reach the host: {exc}"}
        finally:
            self.pending.pop(rid, None)

    async def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        if self.reader_task is not None:
            self.reader_task.cancel()


# -------------------------------------------------------------------------------- host tools

_STR_OR_NULL = {"type": ["string", "null"]}
_SCHEDULE_FIELDS: dict[str, Any] = {
    "prompt": {"type": "string", "description": "What the agent should do when the task runs."},
    "schedule_type": {"type": "string", "enum": ["cron", "interval", "once"]},
    "schedule_value": {
        "type": "string",
        "description": "cron: a cron expression ('0 9 * * 1-5'); interval: a duration ('30m', '2h', '1d') "
        "or seconds ('1800'); once: a local ISO time ('2025-06-01T09:00:00').",
    },
    "timezone": {**_STR_OR_NULL, "description": "IANA zone for cron/once, e.g. 'Europe/Berlin'."},
    "context_mode": {
        "type": "string",
        "enum": ["group", "isolated"],
        "description": "group: run in this group's conversation; isolated: a fresh session.",
    },
    "chat": {**_STR_OR_NULL, "description": "Target chat (main group only); default this group's chat."},
    "pre_script": {
        **_STR_OR_NULL,
        "description": "Optional shell command run in your container before each run; it must print "
        'JSON {"wakeAgent": true|false, "data": ...}. false: the run is skipped without waking you (cheap '
        "checks such as 'tell me only if the build broke'); data is added to the prompt.",
    },
}
_TASK_ID = {"task_id": {"type": "string"}}

TOOL_SPECS: list[tuple[str, str, dict[str, Any], dict[str, Any], bool]] = [
    # name, description, JSON schema, defaults, main-only
    (
        "send_message",
        "Send a message to the chat right away (progress notes, results of scheduled tasks). "
        "Your normal reply text is delivered anyway; use this for extra or early messages.",
        {
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "chat": {
                    **_STR_OR_NULL,
                    "description": "Another chat (main group only); default this group.",
                },
            },
            "required": ["text"],
        },
        {"chat": None},
        False,
    ),
    (
        "schedule_task",
        "Schedule a task: a prompt the agent runs later, on a cron schedule, an interval, or once.",
        {
            "type": "object",
            "properties": _SCHEDULE_FIELDS,
            "required": ["prompt", "schedule_type", "schedule_value"],
        },
        {"timezone": None, "context_mode": "group", "chat": None},
        False,
    ),
    ("list_tasks", "List the scheduled tasks you may see.", {"type": "object", "properties": {}}, {}, False),
    (
        "pause_task",
        "Pause a scheduled task.",
        {"type": "object", "properties": _TASK_ID, "required": ["task_id"]},
        {},
        False,
    ),
    (
        "resume_task",
        "Resume a paused task.",
        {"type": "object", "properties": _TASK_ID, "required": ["task_id"]},
        {},
        False,
    ),
    (
        "cancel_task",
        "Cancel (delete) a scheduled task.",
        {"type": "object", "properties": _TASK_ID, "required": ["task_id"]},
        {},
        False,
    ),
    (
        "update_task",
        "Change fields of a scheduled task; give only the fields to change.",
        {"type": "object", "properties": {**_TASK_ID, **_SCHEDULE_FIELDS}, "required": ["task_id"]},
        {},
        False,
    ),
    (
        "register_group",
        "Register a chat as a group the assistant serves (main group only).",
        {
            "type": "object",
            "properties": {
                "chat": {"type": "string", "description": "The chat's id, as the host lists it."},
                "folder": {
                    "type": "string",
                    "description": "Folder name for the group's files (a-z, 0-9, -).",
                },
                "requires_trigger": {
                    "type": "boolean",
                    "description": "Answer only when triggered (default true).",
                },
            },
            "required": ["chat", "folder"],
        },
        {"requires_trigger": True},
        True,
    ),
]


def tool_result_text(answer: dict[str, Any]) -> dict[str, Any]:
    if answer.get("ok"):
        result = answer.get("result")
        if result is None:
            text = "ok"
        elif isinstance(result, str):
            text = result
        else:
            text = json.dumps(result, ensure_ascii=False)
        return {"content": [{"type": "text", "text": text}]}
    return {
        "content": [{"type": "text", "text": f"error: {answer.get('error') or 'request failed'}"}],
        "is_error": True,
    }


MAX_EXTRA_TOOLS = 50
_EXTRA_TOOL_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def extra_tool_problem(spec: Any) -> str | None:
    """Why a plugin tool spec from the start frame is unusable (None: it is fine)."""
    if not isinstance(spec, dict):
        return "a tool spec must be an object"
    name = spec.get("name")
    if not isinstance(name, str) or not _EXTRA_TOOL_NAME.fullmatch(name):
        return f"tool name {str(name)[:70]!r} must match [a-z][a-z0-9_]{{0,63}}"
    if any(name == builtin[0] for builtin in TOOL_SPECS):
        return f"tool {name}: a built-in tool has that name"
    if not isinstance(spec.get("description", ""), str):
        return f"tool {name}: description must be a string"
    schema = spec.get("input_schema", {"type": "object"})
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        return f"tool {name}: input_schema must be a JSON schema of type object"
    return None


def build_mcp_server(requests: HostRequests, is_main: bool, extra: list[dict[str, Any]] | None = None) -> Any:
    """The ``ngb`` MCP server: the host's built-in tools, plus the plugins' tools the start frame
    named (``extra``; the host authorizes and validates every call of either kind)."""
    from claude_agent_sdk import create_sdk_mcp_server, tool

    tools = []
    for name, description, schema, defaults, main_only in TOOL_SPECS:
        if main_only and not is_main:
            continue

        def make(name: str = name, defaults: dict[str, Any] = defaults) -> Any:
            async def handler(args: dict[str, Any]) -> dict[str, Any]:
                full = {**defaults, **(args or {})}
                answer = await requests.call(name, full)
                return tool_result_text(answer)

            return handler

        tools.append(tool(name, description, schema)(make()))
    for spec in extra or []:
        if spec.get("main_only") and not is_main:
            continue

        def make_extra(name: str = spec["name"]) -> Any:
            async def handler(args: dict[str, Any]) -> dict[str, Any]:
                return tool_result_text(await requests.call(name, dict(args or {})))

            return handler

        schema = spec.get("input_schema") or {"type": "object", "properties": {}}
        tools.append(tool(spec["name"], str(spec.get("description") or spec["name"]), schema)(make_extra()))
    return create_sdk_mcp_server(name="ngb", version="1.0.0", tools=tools)


# ------------------------------------------------------------------------------------- agent


class Runner:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.out: FrameWriter | None = None
        self.lines: LineReader | None = None
        self.forwarder = ModelForwarder(cfg.model_sock)
        self.requests = HostRequests(cfg.requests_sock, cfg.request_timeout)
        self.client: Any = None
        self.group = cfg.env_group or "group"
        self.is_main = bool(cfg.env_is_main)
        self.extra_tools: list[dict[str, Any]] = []  # the plugins' tools (start.tools)
        self.want_session: str | None = None
        self.resumed = False
        self.fresh_note: str | None = None
        self.session_id: str | None = None
        self.session_sent: str | None = None
        self.pending: dict[int, str] = {}  # batch -> message uuid, not yet answered
        self.uuid_batch: dict[str, int] = {}
        self.current_batch: int | None = None
        self.last_batch: int = 0
        self.stop_event = asyncio.Event()
        self.serving = False
        self.side_tasks: set[asyncio.Task[None]] = set()
        self.early: EarlyCli | None = None
        self._cli_base: tuple[dict[str, str], str] | None = None

    # -- frames ---------------------------------------------------------------------------

    async def send(self, frame: dict[str, Any]) -> None:
        if self.out is not None:
            await self.out.send(frame)

    async def log(self, level: str, message: str) -> None:
        _stderr(f"{level}: {message}")
        await self.send({"type": "log", "level": level, "message": message})

    async def error(self, message: str) -> None:
        _stderr(f"error frame: {message}")
        await self.send({"type": "error", "error": message})

    async def read_frame(self) -> dict[str, Any] | None:
        """Next well-formed frame from the host; malformed ones are answered and skipped."""
        assert self.lines is not None
        while True:
            line = await self.lines.next()
            if line is None:
                return None
            if line is TOO_LONG:
                await self.error(f"frame longer than {MAX_FRAME} bytes, discarded")
                continue
            assert isinstance(line, bytes)
            if not line.strip():
                continue
            try:
                frame = decode_frame(line)
            except FrameError as exc:
                await self.error(str(exc))
                continue
            problem = validate_host_frame(frame)
            if problem:
                await self.error(problem)
                continue
            return frame

    # -- lifecycle --------------------------------------------------------------------------

    async def connect_control(self) -> None:
        deadline = time.monotonic() + self.cfg.connect_timeout
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.cfg.control_sock))
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise ConnectionError(f"cannot connect to {self.cfg.control_sock}: {exc}") from exc
                await asyncio.sleep(0.2)
        self.lines = LineReader(reader)
        self.out = FrameWriter(writer)

    async def handshake(self) -> bool:
        await self.send({"type": "hello", "version": PROTOCOL_VERSION})
        while True:
            frame = await self.read_frame()
            if frame is None:
                return False
            kind = frame["type"]
            if kind == "start":
                break
            if kind == "stop":
                return False
            await self.error(f"expected a start frame first, got {kind!r}; ignored")
        sid = frame.get("session_id")
        self.want_session = sid if isinstance(sid, str) and sid.strip() else None
        if isinstance(frame.get("group"), str) and frame["group"]:
            self.group = frame["group"]
        if isinstance(frame.get("is_main"), bool):
            if self.cfg.env_is_main is not None and frame["is_main"] != self.cfg.env_is_main:
                await self.log("warning", "start.is_main disagrees with NGB_IS_MAIN; using start.is_main")
            self.is_main = frame["is_main"]
        self.extra_tools = []
        for spec in frame.get("tools") or []:
            problem = extra_tool_problem(spec)
            if problem is not None:
                await self.log("warning", f"plugin tool left out: {problem}")
            elif len(self.extra_tools) < MAX_EXTRA_TOOLS:
                self.extra_tools.append(spec)
        return True

    def cli_base(self) -> tuple[dict[str, str], str]:
        """The CLI's extra environment and appended system prompt (computed once per runner)."""
        if self._cli_base is not None:
            return self._cli_base
        env = {k: v for k, v in QUIET_ENV.items() if k not in os.environ}
        env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{self.forwarder.port}"
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
            mcp_servers={"ngb": server},
            disallowed_tools=list(DISALLOWED_TOOLS),
            model=self.cfg.model,
            env=dict(env),
            verbatim_prompts=True,
            max_buffer_size=16 * 1024 * 1024,
            stderr=lambda line: _stderr(f"[cli] {line.rstrip()}"),
        )

    def first_resume(self) -> str | None:
        resume = self.want_session
        if resume is not None and not _is_uuid(resume):
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
        mcp = {"type": "sdk", "name": "ngb", **MCP_EXTRA}
        cmd += ["--mcp-config", json.dumps({"mcpServers": {"ngb": mcp}})]
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

    async def start_cli_early(self) -> None:
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
            _stderr(f"early CLI start failed: {exc!r}")
            return
        self.early = EarlyCli(cmd, kwargs, process)

    def new_client(self, options: Any, early: EarlyCli | None) -> Any:
        """A ClaudeSDKClient; with ``early``, one whose transport adopts that process."""
        from claude_agent_sdk import ClaudeSDKClient

        if early is not None:
            try:
                return ClaudeSDKClient(options, transport=adopting_transport(options, early))
            except Exception as exc:  # noqa: BLE001 - an SDK that changed inside: the plain way
                _stderr(f"early CLI not used: {exc!r}")
        return ClaudeSDKClient(options)

    async def open_client(self) -> None:
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
                    await self.log("warning", self.fresh_note)
                else:
                    self.client = client
                    self.resumed = True
                    return
            else:
                early_for_fresh = early
            client = self.new_client(self.options(None), early_for_fresh)
            await client.connect()
            self.client = client
        finally:
            if early is not None:
                await early.discard()  # a no-op once the SDK adopted it

    async def run(self) -> int:
        try:
            await self.connect_control()
        except ConnectionError as exc:
            _stderr(str(exc))
            return 1
        try:
            if not await self.handshake():
                _stderr("host closed the control connection or stopped before start")
                return 0
            await self.forwarder.start(self.cfg.model_port)
            await self.start_cli_early()
            try:
                await SDK_LOADER.wait()
                await self.open_client()
            except Exception as exc:  # noqa: BLE001
                await self.error(f"agent failed to start: {' '.join(str(exc).split())[:1000]}")
                return 1
            await self.log(
                "info",
                f"ready: group={self.group} main={self.is_main} model_port={self.forwarder.port}"
                f" resume={self.want_session or '-'} resumed={self.resumed}",
            )
            return await self.serve()
        finally:
            await self.shutdown()

    async def serve(self) -> int:
        self.serving = True
        control = asyncio.create_task(self.pump_control(), name="control")
        messages = asyncio.create_task(self.pump_messages(), name="messages")
        stopper = asyncio.create_task(self.stop_event.wait(), name="stop")
        done, _ = await asyncio.wait({control, messages, stopper}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if messages in done and not self.stop_event.is_set():
            exc = messages.exception()
            reason = f"{type(exc).__name__}: {exc}" if exc else "the agent process ended"
            await self.error(f"agent stopped unexpectedly: {' '.join(reason.split())[:1000]}")
            code = 1
        elif control in done and not control.cancelled() and control.exception() is not None:
            exc = control.exception()
            await self.error(f"control loop failed: {exc!r}")
            code = 1
        for t in (control, messages, stopper):
            t.cancel()
        await asyncio.gather(control, messages, stopper, return_exceptions=True)
        return code

    async def shutdown(self) -> None:
        if self.early is not None:
            early, self.early = self.early, None
            await early.discard()
        if self.client is not None:
            client, self.client = self.client, None
            if self.pending:
                # A turn is running: abort it, or the CLI finishes it first (the SDK waits 5 s).
                try:
                    await asyncio.wait_for(client.interrupt(), 3)
                except Exception as exc:  # noqa: BLE001 - best effort on the way out
                    _stderr(f"interrupt: {exc!r}")
            try:
                # Not under wait_for: the SDK bounds this itself and must not be cancelled
                # half-way (it would skip killing the CLI).
                await client.disconnect()
            except Exception as exc:  # noqa: BLE001 - best effort on the way out
                _stderr(f"disconnect: {exc!r}")
        await self.requests.close()
        await self.forwarder.close()
        if self.out is not None:
            await self.out.close()

    # -- pumps ------------------------------------------------------------------------------

    async def pump_control(self) -> None:
        while True:
            frame = await self.read_frame()
            if frame is None:
                _stderr("control connection closed by the host")
                self.stop_event.set()
                return
            kind = frame["type"]
            if kind == "stop":
                self.stop_event.set()
                return
            if kind == "start":
                await self.error("duplicate start frame ignored")
                continue
            if kind == "input":
                await self.submit(frame["batch"], frame["prompt"])
            elif kind == "prescript":
                t = asyncio.create_task(self.run_prescript(frame), name=f"prescript:{frame['id']}")
                self.side_tasks.add(t)
                t.add_done_callback(self.side_tasks.discard)

    async def run_prescript(self, frame: dict[str, Any]) -> None:
        """Run a scheduled task's pre-script (``/bin/sh -c``, cwd the group folder, the agent's
        sandbox) and report exit status, output and timeout; the host decides what they mean."""
        result: dict[str, Any] = {
            "type": "prescript_result",
            "id": frame["id"],
            "exit_code": None,
            "timed_out": False,
            "truncated": False,
            "stdout": "",
            "stderr": "",
            "error": None,
        }
        timeout = float(frame.get("timeout") or 60)
        try:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                frame["command"],
                cwd=str(self.cfg.cwd) if self.cfg.cwd.is_dir() else None,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            result["error"] = f"cannot start /bin/sh: {exc}"
            await self.send(result)
            return

        async def capped(stream: asyncio.StreamReader, cap: int, tail: bool) -> tuple[bytes, bool]:
            kept, over = b"", False
            while chunk := await stream.read(65536):
                kept += chunk
                if len(kept) > cap:
                    over = True
                    kept = kept[-cap:] if tail else kept[:cap]
            return kept, over

        assert proc.stdout is not None and proc.stderr is not None
        try:
            (out, over), (err, _) = await asyncio.wait_for(
                asyncio.gather(capped(proc.stdout, PRESCRIPT_STDOUT, False), capped(proc.stderr, PRESCRIPT_STDERR, True)),
                timeout,
            )
            result["exit_code"] = await asyncio.wait_for(proc.wait(), max(1.0, timeout))
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
            result["timed_out"] = True
            result["timeout"] = timeout
            await self.send(result)
            return
        result.update(stdout=out.decode("utf-8", "replace"), stderr=err.decode("utf-8", "replace"), truncated=over)
        await self.send(result)

    async def submit(self, batch: int, prompt: str) -> None:
        if batch in self.pending:
            await self.error(f"batch {batch} is already pending; ignored")
            return
        u = str(uuid.uuid4())
        self.pending[batch] = u
        self.uuid_batch[u] = batch
        if self.current_batch is None:
            self.current_batch = batch
        message = {
            "type": "user",
            "message": {"role": "user", "content": prompt},
            "parent_tool_use_id": None,
            "uuid": u,
        }

        async def one() -> AsyncIterator[dict[str, Any]]:
            yield message

        await self.client.query(one())

    def _batches_of(self, msg: Any) -> list[int]:
        uuids = list(getattr(msg, "user_message_uuids", None) or [])
        single = getattr(msg, "user_message_uuid", None)
        if single and single not in uuids:
            uuids.append(single)
        return sorted({self.uuid_batch[u] for u in uuids if u in self.uuid_batch})

    async def pump_messages(self) -> None:
        from claude_agent_sdk import AssistantMessage, ResultMessage, SystemMessage, TextBlock

        async for msg in self.client.receive_messages():
            if isinstance(msg, SystemMessage):
                if msg.subtype == "init":
                    await self.note_session(msg.data.get("session_id"))
            elif isinstance(msg, AssistantMessage):
                if msg.parent_tool_use_id is not None:
                    continue  # a subagent's step, not text for the chat
                batches = self._batches_of(msg)
                if batches:
                    self.current_batch = max(batches)
                await self.note_session(getattr(msg, "session_id", None))
                batch = self.current_batch if self.current_batch is not None else self.last_batch
                if getattr(msg, "error", None):
                    # The CLI's own "API Error: ..." text: the result frame carries it, not the chat.
                    text = " ".join(b.text for b in msg.content if isinstance(b, TextBlock))
                    await self.log("warning", f"model error ({msg.error}) in batch {batch}: {text[:500]}")
                    continue
                for block in msg.content:
                    if isinstance(block, TextBlock) and block.text.strip():
                        for piece in split_text(block.text):
                            await self.send({"type": "output", "batch": batch, "text": piece})
            elif isinstance(msg, ResultMessage):
                await self.note_session(msg.session_id)
                for frame in self.result_frames(msg):
                    await self.send(frame)

    def result_frames(self, msg: Any) -> list[dict[str, Any]]:
        """One ``result`` per batch this turn answered, in order; usage and cost on the last.

        The CLI takes prompts that arrive while a turn runs into that turn (or merges queued ones
        into the next), so one ResultMessage can cover several batches; it lists their uuids.
        A turn that took in no batch of ours (one the agent started itself) gets ``batch: null``.
        """
        batches = self._batches_of(msg)
        origin_kind = (msg.origin or {}).get("kind") if isinstance(msg.origin, dict) else None
        if not batches and self.pending and origin_kind in (None, "human"):
            batches = [min(self.pending)]  # a CLI that does not echo message uuids
        if batches:
            top = max(batches)
            batches = sorted(set(batches) | {b for b in self.pending if b <= top})
        for b in batches:
            u = self.pending.pop(b, None)
            if u is not None:
                self.uuid_batch.pop(u, None)
        if batches:
            self.last_batch = max(batches)
        self.current_batch = min(self.pending) if self.pending else None
        usage = msg.usage or {}
        error = None
        if msg.is_error:
            parts = list(msg.errors or [])
            if msg.result and msg.result not in parts:
                parts.append(msg.result)
            error = "; ".join(str(p) for p in parts) or msg.subtype
            if msg.api_error_status and str(msg.api_error_status) not in error:
                error = f"{error} (HTTP {msg.api_error_status})"
        last = {
            "type": "result",
            "batch": batches[-1] if batches else None,
            "session_id": msg.session_id,
            "is_error": bool(msg.is_error),
            "error": error,
            "usage": {
                "input_tokens": int(usage.get("input_tokens") or 0),
                "output_tokens": int(usage.get("output_tokens") or 0),
                "cache_creation_input_tokens": int(usage.get("cache_creation_input_tokens") or 0),
                "cache_read_input_tokens": int(usage.get("cache_read_input_tokens") or 0),
            },
            "cost_usd": msg.total_cost_usd,
            "num_turns": msg.num_turns,
            "duration_ms": msg.duration_ms,
            "subtype": msg.subtype,
            "api_error_status": msg.api_error_status,
        }
        earlier = [
            {
                **last,
                "batch": b,
                "merged_into": batches[-1],
                "cost_usd": 0.0,
                "usage": dict.fromkeys(last["usage"], 0),
            }
            for b in batches[:-1]
        ]
        return [*earlier, last]

    async def note_session(self, sid: Any) -> None:
        if not isinstance(sid, str) or not sid or sid == self.session_sent:
            return
        first = self.session_sent is None
        self.session_id = sid
        self.session_sent = sid
        resumed = first and self.resumed and sid == self.want_session
        note = self.fresh_note if first else "the agent switched to a new session"
        if first and self.resumed and sid != self.want_session:
            note = f"asked to resume {self.want_session}, the agent reports session {sid}"
        await self.send({"type": "session", "session_id": sid, "resumed": resumed, "note": note})


def validate_host_frame(frame: dict[str, Any]) -> str | None:
    kind = frame.get("type")
    if not isinstance(kind, str):
        return "frame has no string 'type'"
    if kind == "start":
        sid = frame.get("session_id")
        if sid is not None and not isinstance(sid, str):
            return "start.session_id must be a string or null"
        if "group" in frame and not isinstance(frame["group"], str):
            return "start.group must be a string"
        if "is_main" in frame and not isinstance(frame["is_main"], bool):
            return "start.is_main must be a boolean"
        if "tools" in frame and not isinstance(frame["tools"], list):
            return "start.tools must be a list"
        return None
    if kind == "input":
        batch = frame.get("batch")
        if not isinstance(batch, int) or isinstance(batch, bool):
            return "input.batch must be an integer"
        if not isinstance(frame.get("prompt"), str):
            return "input.prompt must be a string"
        if not frame["prompt"].strip():
            return "input.prompt is empty"
        return None
    if kind == "stop":
        return None
    if kind == "prescript":
        if not isinstance(frame.get("id"), str) or not frame["id"]:
            return "prescript.id must be a non-empty string"
        if not isinstance(frame.get("command"), str) or not frame["command"].strip():
            return "prescript.command must be a non-empty string"
        timeout = frame.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
            return "prescript.timeout must be a positive number"
        return None
    return f"unknown frame type {kind!r}"


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def amain() -> int:
    runner = Runner(Config())
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal() -> None:
        # While serving, stop like a stop frame; before that (handshake, SDK start), give up now.
        if runner.serving:
            runner.stop_event.set()
        elif task is not None:
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    try:
        return await runner.run()
    except asyncio.CancelledError:
        _stderr("stopped by a signal before the agent was ready")
        return 0


def main() -> None:
    SDK_LOADER.start()  # the SDK import overlaps the handshake and the CLI's start-up
    try:
        code = asyncio.run(amain())
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()
