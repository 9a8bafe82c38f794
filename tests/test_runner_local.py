"""agent/runner.py run as a subprocess on the host (no Docker), against the real Claude Code CLI.

The test plays the host: it serves control.sock and requests.sock in a temporary run folder, and
model.sock as a small unix->TCP forwarder to FakeAnthropic. The CLI bundled with
claude-agent-sdk talks only to the fake (through the runner's 127.0.0.1 listener and model.sock).

The CLI refuses bypassPermissions as root. When the tests run as root they set IS_SANDBOX=1, the
CLI's own switch for deliberate sandboxes (in the container the runner is uid 1000 instead).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.fakes.anthropic import (
    FakeAnthropic,
    drop,
    error_reply,
    slow_reply,
    stall,
    stream_error,
    text_reply,
    tool_call,
)


def needs_cli(test):  # claude-agent-sdk is a locked test dependency: never skipped
    return test


if importlib.util.find_spec("claude_agent_sdk") is None:
    raise RuntimeError("claude-agent-sdk (bundles the Claude Code CLI) is not installed: run scripts/test.sh")

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "agent" / "runner.py"
PLACEHOLDER_KEY = "ngb-placeholder-" + uuid.uuid4().hex[:8]
TIMEOUT = 60  # seconds for any one expected frame; the CLI starts in ~1 s here


# ------------------------------------------------------------------------------- host side


async def unix_listener(path: Path) -> trio.SocketListener:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(16)
    return trio.SocketListener(sock)


class Control:
    """The host end of control.sock: JSON lines both ways, with a history of what came in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""
        self.frames: list[dict[str, Any]] = []
        self.cursor = 0

    async def send(self, frame: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(frame).encode() + b"\n")

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _read_one(self) -> dict[str, Any] | None:
        while b"\n" not in self.buf:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        frame = json.loads(line)
        assert isinstance(frame, dict), frame
        self.frames.append(frame)
        return frame

    async def expect(self, type_: str, within: float = TIMEOUT, **fields: Any) -> dict[str, Any]:
        """The next frame (from the cursor on) of this type whose fields match; others are skipped."""
        with trio.fail_after(within):
            while True:
                while self.cursor < len(self.frames):
                    frame = self.frames[self.cursor]
                    self.cursor += 1
                    if frame.get("type") == type_ and all(frame.get(k) == v for k, v in fields.items()):
                        return frame
                if await self._read_one() is None:
                    raise AssertionError(f"control closed while waiting for {type_} {fields}: {self.frames}")

    async def read_until_closed(self, within: float = TIMEOUT) -> None:
        with trio.fail_after(within):
            while await self._read_one() is not None:
                pass

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == type_]


class Host:
    """Temporary run folder + sockets + the runner subprocess."""

    def __init__(self, fake: FakeAnthropic, base: Path, home: Path) -> None:
        self.fake = fake
        self.base = base
        self.run_dir = base / "run"
        self.workspace = base / "ws"
        self.home = home
        self.requests: list[dict[str, Any]] = []
        self.request_event = trio.Event()
        self.answer: Callable[[dict[str, Any]], dict[str, Any]] = lambda req: {
            "id": req.get("id"),
            "ok": True,
            "result": {"delivered": True},
        }
        self.answer_delay = 0.0
        self.model_connections = 0
        self.proc: trio.Process | None = None
        self.control: Control | None = None
        self.stderr_path = base / "runner.stderr"

    # -- model.sock: unix -> TCP forwarder to the fake ----------------------------------------

    async def serve_model(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = await unix_listener(self.run_dir / "model.sock")
        task_status.started()
        await trio.serve_listeners(self._model_conn, [listener])

    async def _model_conn(self, stream: trio.SocketStream) -> None:
        self.model_connections += 1
        async with stream:
            try:
                upstream = await trio.open_tcp_stream("127.0.0.1", self.fake.port)
            except OSError:
                return
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(_pipe, stream, upstream, nursery.cancel_scope)
                nursery.start_soon(_pipe, upstream, stream, nursery.cancel_scope)

    # -- requests.sock ----------------------------------------------------------------------------

    async def serve_requests(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = await unix_listener(self.run_dir / "requests.sock")
        task_status.started()
        await trio.serve_listeners(self._requests_conn, [listener])

    async def _requests_conn(self, stream: trio.SocketStream) -> None:
        buf = b""
        async with stream:
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    req = json.loads(line)
                    self.requests.append(req)
                    self.request_event.set()
                    self.request_event = trio.Event()
                    await trio.sleep(self.answer_delay)
                    await stream.send_all(json.dumps(self.answer(req)).encode() + b"\n")

    async def wait_request(self, n: int = 1, within: float = TIMEOUT) -> dict[str, Any]:
        with trio.fail_after(within):
            while len(self.requests) < n:
                await self.request_event.wait()
        return self.requests[n - 1]

    # -- runner subprocess ------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ANTHROPIC_", "CLAUDE", "NGB_")) and k != "IS_SANDBOX"
        }
        env.update(
            NGB_RUN_DIR=str(self.run_dir),
            NGB_WORKSPACE=str(self.workspace),
            NGB_MODEL_PORT="0",
            NGB_GROUP="testgroup",
            NGB_IS_MAIN="0",
            NGB_CONNECT_TIMEOUT="20",
            ANTHROPIC_API_KEY=PLACEHOLDER_KEY,
            HOME=str(self.home),
            PYTHONUNBUFFERED="1",
        )
        if os.geteuid() == 0:
            env["IS_SANDBOX"] = "1"  # the CLI's switch for a deliberate sandbox run as root
        return env

    def _open_log(self) -> Any:
        self._stderr_file = open(self.stderr_path, "ab")  # noqa: SIM115 - closed in kill()
        return self._stderr_file

    async def spawn(self, listener: trio.SocketListener) -> Control:
        stderr = self._open_log()
        self.proc = await trio.lowlevel.open_process(
            [sys.executable, str(RUNNER)],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
        with trio.fail_after(TIMEOUT):
            stream = await listener.accept()
        self.control = Control(stream)
        return self.control

    async def wait_exit(self, within: float = 30) -> int:
        assert self.proc is not None
        with trio.fail_after(within):
            return await self.proc.wait()

    async def stop(self) -> int:
        assert self.control is not None
        await self.control.send({"type": "stop"})
        return await self.wait_exit()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the runner and the CLI it started
            except ProcessLookupError:
                pass
        f = getattr(self, "_stderr_file", None)
        if f is not None:
            f.close()

    def runner_log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""


async def _pipe(src: trio.SocketStream, dst: trio.SocketStream, scope: trio.CancelScope) -> None:
    try:
        while True:
            data = await src.receive_some(65536)
            if not data:
                break
            await dst.send_all(data)
        await dst.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        scope.cancel()


@asynccontextmanager
async def running(
    fake: FakeAnthropic,
    *,
    session_id: str | None = None,
    is_main: bool = False,
    send_start: bool = True,
    base: Path | None = None,
    group_memory: str | None = "# Group memory\nGROUP-MEMORY-MARKER-7f3a\n",
    global_memory: str | None = "GLOBAL-MEMORY-MARKER-91c2\n",
    tools: list[dict[str, Any]] | None = None,
) -> AsyncIterator[Host]:
    keep = base is not None  # a caller-owned folder survives, so a later run can resume from it
    if base is None:
        base = Path(tempfile.mkdtemp(prefix="ngb-rt-"))  # short: unix socket paths max out at 108 bytes
    host = Host(fake, base, base / "home")
    for sock in ("control.sock", "requests.sock", "model.sock"):
        (host.run_dir / sock).unlink(missing_ok=True)
    host.run_dir.mkdir(exist_ok=True)
    (host.workspace / "group").mkdir(parents=True, exist_ok=True)
    (host.workspace / "global").mkdir(exist_ok=True)
    host.home.mkdir(exist_ok=True)
    if group_memory is not None:
        (host.workspace / "group" / "CLAUDE.md").write_text(group_memory)
    if global_memory is not None:
        (host.workspace / "global" / "CLAUDE.md").write_text(global_memory)
    ok = False
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(host.serve_model)
            await nursery.start(host.serve_requests)
            control_listener = await unix_listener(host.run_dir / "control.sock")
            control = await host.spawn(control_listener)
            hello = await control.expect("hello")
            assert hello == {"type": "hello", "version": 1}
            if send_start:
                start = {"type": "start", "session_id": session_id, "group": "testgroup", "is_main": is_main}
                if tools is not None:
                    start["tools"] = tools
                await control.send(start)
            try:
                yield host
                ok = True
            finally:
                host.kill()
                nursery.cancel_scope.cancel()
    finally:
        if not ok:
            print("---- runner stderr ----\n" + host.runner_log(), file=sys.stderr)
            if host.control is not None:
                print("---- control frames ----", *host.control.frames, sep="\n", file=sys.stderr)
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeAnthropic:
    return await FakeAnthropic.start(nursery)


def _agent_text(req: Any) -> str:
    return json.dumps(req.json)


# ------------------------------------------------------------------------------------- tests


@needs_cli
async def test_prompt_gets_echo_reply_and_result(fake: FakeAnthropic) -> None:
    async with running(fake) as host:
        control = host.control
        assert control is not None
        await control.send({"type": "input", "batch": 1, "prompt": "hello runner"})
        session = await control.expect("session")
        assert uuid.UUID(session["session_id"])
        assert session["resumed"] is False and session["note"] is None
        out = await control.expect("output", batch=1)
        assert out["text"] == "Echo: hello runner"
        result = await control.expect("result", batch=1)
        assert result["session_id"] == session["session_id"]
        assert result["is_error"] is False and result["error"] is None
        assert result["usage"]["input_tokens"] > 0 and result["usage"]["output_tokens"] > 0
        assert await host.stop() == 0

    # Everything went through model.sock, with the container's placeholder key.
    assert host.model_connections >= 1
    agent = fake.agent_requests
    assert agent, [(r.method, r.path) for r in fake.requests]
    assert all(r.header("x-api-key") == PLACEHOLDER_KEY for r in fake.message_requests)
    body = _agent_text(agent[0])
    # Group memory comes from the CLI reading CLAUDE.md in its cwd; global memory from the runner.
    assert "GROUP-MEMORY-MARKER-7f3a" in body
    assert "GLOBAL-MEMORY-MARKER-91c2" in body
    tools = [t.get("name") for t in agent[0].json["tools"]]
    for name in (
        "send_message",
        "schedule_task",
        "list_tasks",
        "pause_task",
        "resume_task",
        "cancel_task",
        "update_task",
    ):
        assert f"mcp__ngb__{name}" in tools, tools
    assert "mcp__ngb__register_group" not in tools
    assert "SendMessage" not in tools and "CronCreate" not in tools
    # Nothing but the Messages API was asked for.
    assert {(r.method, r.path) for r in fake.requests} <= {("POST", "/v1/messages")}


@needs_cli
@pytest.mark.slow
async def test_follow_up_while_streaming_is_answered_in_same_process(fake: FakeAnthropic) -> None:
    fake.script(slow_reply("a slow answer to the first batch", delay=0.15, chunk=3))
    async with running(fake) as host:
        control = host.control
        assert control is not None and host.proc is not None
        pid = host.proc.pid
        await control.send({"type": "input", "batch": 1, "prompt": "first question"})
        with trio.fail_after(TIMEOUT):
            await fake.wait_for(
                lambda r: "first question" in r.last_user_text() and bool(r.json.get("tools"))
            )
        await trio.sleep(0.3)  # the slow stream is under way now
        await control.send({"type": "input", "batch": 2, "prompt": "second question"})
        out1 = await control.expect("output", batch=1)
        assert out1["text"] == "a slow answer to the first batch"
        r1 = await control.expect("result", batch=1)
        out2 = await control.expect("output", batch=2)
        assert out2["text"] == "Echo: second question"
        r2 = await control.expect("result", batch=2)
        assert r1["session_id"] == r2["session_id"]
        assert host.proc.returncode is None and host.proc.pid == pid
        # The follow-up was asked in the same conversation.
        second = [r for r in fake.agent_requests if "second question" in r.last_user_text()]
        assert second and "a slow answer to the first batch" in _agent_text(second[-1])
        assert len(control.of_type("session")) == 1
        assert await host.stop() == 0


@needs_cli
async def test_tool_calls_go_to_requests_sock_and_back(fake: FakeAnthropic) -> None:
    fake.script(tool_call("mcp__ngb__send_message", {"text": "hello from the tool"}, then="all sent"))
    async with running(fake) as host:
        control = host.control
        assert control is not None
        host.answer = lambda req: {"id": req["id"], "ok": True, "result": {"message_id": "m-42"}}
        await control.send({"type": "input", "batch": 1, "prompt": "please send something"})
        req = await host.wait_request(1)
        assert req["tool"] == "send_message"
        assert req["args"] == {"text": "hello from the tool", "chat": None}
        assert isinstance(req["id"], str)
        out = await control.expect("output", batch=1)
        assert out["text"] == "all sent"
        await control.expect("result", batch=1)
        # The host's answer reached the model as the tool_result.
        followup = [r for r in fake.agent_requests if '"tool_result"' in _agent_text(r)]
        assert followup and "m-42" in _agent_text(followup[0])

        # In-band directive, and a refusal from the host comes back as an error result.
        host.answer = lambda req: {"id": req["id"], "ok": False, "error": "not allowed for this group"}
        args = {"prompt": "water the plants", "schedule_type": "cron", "schedule_value": "0 9 * * *"}
        await control.send(
            {"type": "input", "batch": 2, "prompt": f"[[tool:mcp__ngb__schedule_task {json.dumps(args)}]]"}
        )
        req2 = await host.wait_request(2)
        assert req2["tool"] == "schedule_task"
        assert req2["args"] == {**args, "timezone": None, "context_mode": "group", "chat": None}
        out2 = await control.expect("output", batch=2)
        assert out2["text"] == "Done: mcp__ngb__schedule_task"
        await control.expect("result", batch=2)
        last = fake.agent_requests[-1].json["messages"]
        results = [
            b
            for m in last
            if m["role"] == "user" and isinstance(m["content"], list)
            for b in m["content"]
            if b.get("type") == "tool_result"
        ]
        assert results[-1].get("is_error") is True
        assert "not allowed for this group" in json.dumps(results[-1])
        assert await host.stop() == 0


@needs_cli
async def test_plugin_tools_from_the_start_frame_are_offered_and_go_to_the_host(fake: FakeAnthropic) -> None:
    tools = [
        {"name": "chat_stats", "description": "Counts messages.", "input_schema": {
            "type": "object", "properties": {"days": {"type": "integer"}}, "required": ["days"]}},
        {"name": "admin_only", "description": "x", "input_schema": {"type": "object"}, "main_only": True},
        {"name": "send_message", "description": "a plugin may not replace a built-in"},
        {"name": "Bad Name!", "description": "refused"},
    ]
    fake.script(tool_call("mcp__ngb__chat_stats", {"days": 7}, then="stats done"))
    async with running(fake, tools=tools) as host:
        control = host.control
        assert control is not None
        host.answer = lambda req: {"id": req["id"], "ok": True, "result": {"messages": 12}}
        await control.send({"type": "input", "batch": 1, "prompt": "how chatty were we?"})
        req = await host.wait_request(1)
        assert req["tool"] == "chat_stats" and req["args"] == {"days": 7}  # to the host, as the agent gave it
        assert (await control.expect("output", batch=1))["text"] == "stats done"
        await control.expect("result", batch=1)
        offered = {t["name"]: t for t in fake.agent_requests[0].json["tools"]}
        assert "mcp__ngb__chat_stats" in offered and offered["mcp__ngb__chat_stats"]["input_schema"]["required"] == ["days"]
        assert "mcp__ngb__admin_only" not in offered  # main-only, and this is not the main group
        assert offered["mcp__ngb__send_message"]["description"].startswith("Send a message")  # the built-in kept
        assert not any("Bad" in name for name in offered)
        warnings = [f["message"] for f in control.frames if f.get("type") == "log"]
        assert any("send_message" in w for w in warnings) and any("Bad Name" in w for w in warnings)
        assert await host.stop() == 0


@needs_cli
async def test_register_group_only_for_main(fake: FakeAnthropic) -> None:
    async with running(fake, is_main=True) as host:
        control = host.control
        assert control is not None
        args = {"chat": "tg:123", "folder": "family"}
        await control.send(
            {"type": "input", "batch": 1, "prompt": f"[[tool:mcp__ngb__register_group {json.dumps(args)}]]"}
        )
        req = await host.wait_request(1)
        assert req["tool"] == "register_group"
        assert req["args"] == {**args, "requires_trigger": True}
        await control.expect("result", batch=1)
        assert "mcp__ngb__register_group" in [t["name"] for t in fake.agent_requests[0].json["tools"]]
        assert await host.stop() == 0


@needs_cli
async def test_malformed_frames_get_errors_and_runner_keeps_working(fake: FakeAnthropic) -> None:
    async with running(fake, send_start=False) as host:
        control = host.control
        assert control is not None
        await control.send_raw(b"this is not json\n")
        await control.send({"type": "input", "batch": 9, "prompt": "too early"})
        await control.send({"type": "start", "session_id": None, "group": "testgroup", "is_main": False})
        await control.send_raw(b"garbage {{{\n")
        await control.send_raw(b"\xff\xfe\x80 not utf-8\n")
        await control.send_raw(b'{"type": "input", "prompt": "' + b"x" * (2 * 1024 * 1024) + b'"}\n')
        await control.send({"type": "bogus"})
        await control.send_raw(b"[1, 2, 3]\n")
        await control.send({"type": "input", "batch": "one", "prompt": "bad batch"})
        await control.send({"type": "input", "batch": 3})
        await control.send({"type": "input", "batch": 1, "prompt": "still alive?"})
        out = await control.expect("output", batch=1)
        assert out["text"] == "Echo: still alive?"
        await control.expect("result", batch=1)
        errors = [f["error"] for f in control.of_type("error")]
        assert len(errors) == 9, errors
        assert "not JSON" in errors[0]
        assert "expected a start frame first" in errors[1]
        joined = "\n".join(errors[2:])
        for needle in (
            "UTF-8",
            "longer than",
            "unknown frame type 'bogus'",
            "not a JSON object",
            "input.batch",
            "input.prompt",
        ):
            assert needle in joined, (needle, errors)
        # The early input was not run.
        assert not [r for r in fake.requests if "too early" in _agent_text(r)]
        assert await host.stop() == 0


@needs_cli
async def test_bogus_resume_starts_fresh_and_says_so(fake: FakeAnthropic) -> None:
    bogus = str(uuid.uuid4())
    async with running(fake, session_id=bogus) as host:
        control = host.control
        assert control is not None
        await control.send({"type": "input", "batch": 1, "prompt": "are you there"})
        session = await control.expect("session")
        assert session["resumed"] is False
        assert session["session_id"] != bogus
        assert "could not resume" in session["note"] and bogus in session["note"]
        out = await control.expect("output", batch=1)
        assert out["text"] == "Echo: are you there"
        result = await control.expect("result", batch=1)
        assert result["session_id"] == session["session_id"]
        assert await host.stop() == 0


@needs_cli
async def test_non_uuid_session_id_starts_fresh(fake: FakeAnthropic) -> None:
    async with running(fake, session_id="--not-a-session") as host:
        control = host.control
        assert control is not None
        await control.send({"type": "input", "batch": 1, "prompt": "hi"})
        session = await control.expect("session")
        assert session["resumed"] is False and "not a session id" in session["note"]
        await control.expect("result", batch=1)
        assert await host.stop() == 0


@needs_cli
@pytest.mark.slow
async def test_session_resumes_in_a_new_process(fake: FakeAnthropic) -> None:
    base = Path(tempfile.mkdtemp(prefix="ngb-rt-"))
    try:
        async with running(fake, base=base) as host:
            assert host.control is not None
            await host.control.send({"type": "input", "batch": 1, "prompt": "remember the word pineapple"})
            first = await host.control.expect("result", batch=1)
            assert await host.stop() == 0
        # A new container for the same group: same folder, same HOME (where the CLI keeps sessions).
        async with running(fake, base=base, session_id=first["session_id"]) as host:
            assert host.control is not None
            await host.control.send({"type": "input", "batch": 1, "prompt": "what was the word"})
            session = await host.control.expect("session")
            await host.control.expect("result", batch=1)
            assert await host.stop() == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert session == {"type": "session", "session_id": first["session_id"], "resumed": True, "note": None}
    last = [r for r in fake.agent_requests if "what was the word" in r.last_user_text()][-1]
    assert "remember the word pineapple" in _agent_text(last)


@needs_cli
async def test_stop_before_any_input_exits_cleanly(fake: FakeAnthropic) -> None:
    async with running(fake) as host:
        assert await host.stop() == 0
    assert fake.requests == []


@needs_cli
async def test_model_port_forwards_bytes_to_model_sock(fake: FakeAnthropic) -> None:
    """The runner's TCP listener is a plain pipe: an HTTP request through it reaches the fake."""
    async with running(fake) as host:
        control = host.control
        assert control is not None
        ready = await control.expect("log")
        port = int(ready["message"].split("model_port=")[1].split()[0])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        body = json.dumps({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "ping"}]})
        request = (
            f"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: k\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n{body}"
        ).encode()
        async with stream:
            await stream.send_all(request)
            data = b""
            with trio.fail_after(10):
                while chunk := await stream.receive_some(65536):
                    data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        assert b"Echo: ping" in data
        assert await host.stop() == 0


@needs_cli
async def test_api_error_becomes_error_result(fake: FakeAnthropic) -> None:
    async with running(fake) as host:
        control = host.control
        assert control is not None
        await control.send({"type": "input", "batch": 1, "prompt": "[[status:400]] this request is bad"})
        result = await control.expect("result", batch=1)
        assert result["is_error"] is True
        assert "400" in result["error"] and "Invalid request" in result["error"]
        assert result["api_error_status"] == 400
        assert control.of_type("output") == []  # the CLI's "API Error" text is not chat output
        assert await host.stop() == 0


@needs_cli
async def test_overloaded_is_retried_by_the_cli(fake: FakeAnthropic) -> None:
    async with running(fake) as host:
        control = host.control
        assert control is not None
        await control.send({"type": "input", "batch": 1, "prompt": "[[status:529x1]] retry me"})
        out = await control.expect("output", batch=1)
        assert out["text"] == "Echo: retry me"
        result = await control.expect("result", batch=1)
        assert result["is_error"] is False
        tries = [r for r in fake.agent_requests if "retry me" in r.last_user_text()]
        assert [r.status for r in tries] == [529, 200]
        assert await host.stop() == 0


@needs_cli
@pytest.mark.slow
async def test_follow_up_during_a_tool_call_is_answered_once(fake: FakeAnthropic) -> None:
    """A batch sent while a tool call is in flight may be taken into the running turn (the CLI
    merges queued prompts); either way each batch is covered by exactly one result, in order."""
    fake.script(tool_call("mcp__ngb__send_message", {"text": "working on it"}, then="finished the first"))
    async with running(fake) as host:
        control = host.control
        assert control is not None
        host.answer_delay = 1.5
        await control.send({"type": "input", "batch": 1, "prompt": "start a long job"})
        await host.wait_request(1)
        await control.send({"type": "input", "batch": 2, "prompt": "and another thing"})
        r1 = await control.expect("result")
        r2 = await control.expect("result")
        assert (r1["batch"], r2["batch"]) == (1, 2)
        assert r1["is_error"] is False and r2["is_error"] is False
        if r1.get("merged_into") == 2:  # both batches were answered by one turn of the CLI
            assert r1["usage"]["input_tokens"] == 0 and r2["usage"]["input_tokens"] > 0
        texts = [f["text"] for f in control.of_type("output")]
        assert "finished the first" in texts
        # The model was shown the follow-up, in this same session.
        assert any("and another thing" in _agent_text(r) for r in fake.agent_requests)
        assert len({f["session_id"] for f in control.of_type("result")}) == 1
        assert await host.stop() == 0


@needs_cli
async def test_stop_during_a_turn_exits_cleanly(fake: FakeAnthropic) -> None:
    fake.script(slow_reply("x" * 200, delay=0.2, chunk=2))
    async with running(fake) as host:
        control = host.control
        assert control is not None
        await control.send({"type": "input", "batch": 1, "prompt": "take your time"})
        with trio.fail_after(TIMEOUT):
            await fake.wait_for(lambda r: "take your time" in r.last_user_text())
        with trio.fail_after(20):
            assert await host.stop() == 0


@needs_cli
async def test_sigterm_and_host_hangup_exit_cleanly(fake: FakeAnthropic) -> None:
    async with running(fake) as host:
        assert host.control is not None and host.proc is not None
        await host.control.expect("log")  # serving
        host.proc.send_signal(signal.SIGTERM)
        assert await host.wait_exit() == 0
    async with running(fake) as host:
        assert host.control is not None
        await host.control.expect("log")
        await host.control.stream.aclose()
        assert await host.wait_exit() == 0


# ------------------------------------------------------------------- the fake on its own (no CLI)


def _sse_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for chunk in raw.strip().split("\n\n"):
        name = data = None
        for line in chunk.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        assert name is not None and data is not None and data["type"] == name
        events.append((name, data))
    return events


def _body(text: str, *, stream: bool = True, tools: bool = True, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-test",
        "max_tokens": 100,
        "stream": stream,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }
    if tools:
        body["tools"] = [{"name": "mcp__ngb__send_message", "input_schema": {"type": "object"}}]
    body.update(extra)
    return body


async def test_fake_streams_like_the_api(fake: FakeAnthropic) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        r = await http.post(
            "/v1/messages?beta=true",
            json=_body("hi <b>there</b>"),
            headers={"x-api-key": "sk-test", "anthropic-version": "2023-06-01"},
        )
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(r.text)
        names = [n for n, _ in events]
        assert names[:3] == ["message_start", "ping", "content_block_start"]
        assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
        assert text == "Echo: hi <b>there</b>"
        delta = dict(events)["message_delta"]
        assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] > 0
        assert dict(events)["message_start"]["message"]["model"] == "claude-test"

        r = await http.post("/v1/messages", json=_body("plain", stream=False))
        msg = r.json()
        assert msg["type"] == "message" and msg["content"] == [{"type": "text", "text": "Echo: plain"}]
        assert msg["stop_reason"] == "end_turn" and msg["usage"]["input_tokens"] > 0

        r = await http.post("/v1/messages/count_tokens", json=_body("count me", stream=False))
        assert r.status_code == 200 and r.json()["input_tokens"] > 0

        r = await http.get("/v1/nothing-here")
        assert r.status_code == 404 and r.json()["type"] == "error"
    assert fake.requests[0].header("x-api-key") == "sk-test"
    assert fake.requests[0].query == "beta=true"
    assert fake.requests[0].last_user_text() == "hi <b>there</b>"


async def test_fake_directives(fake: FakeAnthropic) -> None:
    async with httpx.AsyncClient(base_url=fake.url) as http:
        args = {"text": "nested {braces}", "meta": {"a": [1, {"b": 2}]}}
        r = await http.post(
            "/v1/messages", json=_body(f"go [[tool:mcp__ngb__send_message {json.dumps(args)}]]")
        )
        events = _sse_events(r.text)
        start = [d for n, d in events if n == "content_block_start"][0]["content_block"]
        assert start["type"] == "tool_use" and start["name"] == "mcp__ngb__send_message"
        partial_json = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta")
        assert json.loads(partial_json) == args
        assert dict(events)["message_delta"]["delta"]["stop_reason"] == "tool_use"

        follow = _body("ignored", stream=False)
        follow["messages"] += [
            {"role": "assistant", "content": [start | {"input": args}]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": start["id"], "content": "ok"}],
            },
        ]
        r = await http.post("/v1/messages", json=follow)
        assert r.json()["content"][0]["text"] == "Done: mcp__ngb__send_message"

        r = await http.post("/v1/messages", json=_body("[[status:429]] hi", stream=False))
        assert r.status_code == 429 and r.headers["retry-after"] == "0"
        assert r.json() == {
            "type": "error",
            "error": {"type": "rate_limit_error", "message": r.json()["error"]["message"]},
        }
        r = await http.post("/v1/messages", json=_body("[[status:529x1]] again", stream=False))
        assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error"
        r = await http.post("/v1/messages", json=_body("[[status:529x1]] again", stream=False))
        assert r.status_code == 200 and r.json()["content"][0]["text"] == "Echo: again"

        t0 = trio.current_time()
        r = await http.post("/v1/messages", json=_body("[[sleep:0.3]]nap", stream=False))
        assert trio.current_time() - t0 >= 0.3 and r.json()["content"][0]["text"] == "Echo: nap"


async def test_fake_script_and_admin_api(fake: FakeAnthropic) -> None:
    async with httpx.AsyncClient(base_url=fake.url, timeout=10) as http:
        fake.script(
            error_reply(529),
            text_reply("scripted!", match="pick me"),
            stall(0.3, text="late"),
            drop(after_events=3),
            stream_error(),
        )
        # A side request (no tools, e.g. a title) never takes a scripted answer.
        r = await http.post("/v1/messages", json=_body("title please", stream=False, tools=False))
        assert r.json()["content"][0]["text"] == "Echo: title please"
        r = await http.post("/v1/messages", json=_body("x"))
        assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error"
        t0 = trio.current_time()
        r = await http.post("/v1/messages", json=_body("x"))  # "match" holds the text reply back
        assert trio.current_time() - t0 >= 0.3
        assert "late" in r.text  # the stall was next; it ended after 0.3 s and finished normally
        r = await http.post("/v1/messages", json=_body("pick me please", stream=False))
        assert r.json()["content"][0]["text"] == "scripted!"
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("/v1/messages", json=_body("x"))
        r = await http.post("/v1/messages", json=_body("x"))
        assert _sse_events(r.text)[-1] == (
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )

        r = await http.post("/_fake/script", json={"responses": [{"kind": "text", "text": "from afar"}]})
        assert r.json() == {"queued": 1}
        r = await http.post("/v1/messages", json=_body("x", stream=False))
        assert r.json()["content"][0]["text"] == "from afar"
        recorded = (await http.get("/_fake/requests")).json()
        assert [q["path"] for q in recorded].count("/v1/messages") == 7
        assert all(q["path"] != "/_fake/script" for q in recorded)
        assert (await http.post("/_fake/reset")).json() == {"ok": True}
        assert (await http.get("/_fake/requests")).json() == []


async def test_fake_unbounded_stall_ends_when_the_client_goes(fake: FakeAnthropic) -> None:
    fake.script(stall())
    async with httpx.AsyncClient(base_url=fake.url) as http:
        with trio.move_on_after(0.5) as scope:
            await http.post("/v1/messages", json=_body("x"))
        assert scope.cancelled_caught


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@needs_cli
async def test_cli_death_is_reported_and_runner_exits(fake: FakeAnthropic) -> None:
    fake.script(slow_reply("y" * 300, delay=0.2, chunk=2))
    async with running(fake) as host:
        control = host.control
        assert control is not None and host.proc is not None
        await control.send({"type": "input", "batch": 1, "prompt": "long one"})
        with trio.fail_after(TIMEOUT):
            await fake.wait_for(lambda r: "long one" in r.last_user_text())
        cli = _children(host.proc.pid)
        assert cli, "the runner has no child process"
        for pid in cli:
            os.kill(pid, signal.SIGKILL)
        err = await control.expect("error")
        assert "agent stopped unexpectedly" in err["error"]
        assert await host.wait_exit() == 1
