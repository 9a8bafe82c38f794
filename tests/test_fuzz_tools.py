"""Hostile agent: random frames on a group's tool request socket (ngb/sandbox/tools.py).

A real ToolService + Store serve two groups' requests sockets from a trio loop in a background
thread; hypothesis (1,000+ examples each) writes random bytes, random JSON and random tool calls
to group `evil`'s socket with plain blocking sockets. Every line gets exactly one answer, every bad
one an error; the server never dies; group `other` is untouched (no task, no message, its socket
still answers)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ngb.framing import MAX_FRAME
from ngb.groups import GroupRegistry
from ngb.records import Group
from ngb.sandbox.tool_socket import serve_requests
from ngb.sandbox.tools import ToolContext, ToolService
from ngb.store import Store

TOOLS = ["send_message", "schedule_task", "list_tasks", "pause_task", "resume_task", "cancel_task",
         "update_task", "register_group", "list_pairings", "approve_pairing", "deny_pairing", "_tool_send_message", "__init__", "call", "nope", ""]


class ToolServer:
    """Two groups' request sockets served by one trio loop in a thread."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = {"evil": root / "evil.sock", "other": root / "other.sock"}
        self.crashed: list[BaseException] = []
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        assert self._ready.wait(10), "tool server did not start"

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.crashed.append(exc)
            self._ready.set()

    async def _serve(self) -> None:
        self.store = Store(self.root / "ngb.db")
        await self.store.open()
        self.registry = GroupRegistry(self.store, self.root / "groups", self.root / "global")
        await self.registry.load()
        self.evil = await self.registry.add(Group(chat="local:evil", folder="evil"))
        self.other = await self.registry.add(Group(chat="local:other", folder="other"))
        self.service = ToolService(ToolContext(self.store, self.registry, lambda: None, "@Andy", min_interval=60))
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._cancel:
            async with trio.open_nursery() as nursery:
                for name, group in (("evil", self.evil), ("other", self.other)):
                    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
                    await sock.bind(str(self.paths[name]))
                    sock.listen(64)
                    listener = trio.SocketListener(sock)
                    await nursery.start(serve_requests, listener, lambda g=group: g, self.service)
                self._ready.set()
        await self.store.close()

    def run(self, fn: Any) -> Any:
        """Run an async function on the server's loop (for checks)."""
        assert self._token is not None
        return trio.from_thread.run(fn, trio_token=self._token)

    def stop(self) -> None:
        if self._token is not None and self._cancel is not None:
            trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
        self.thread.join(10)


class Client:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = self._connect()
        self.buf = b""

    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(str(self.path))
        return s

    def exchange(self, payload: bytes, expect: int) -> list[dict[str, Any]]:
        self.sock.sendall(payload)
        answers = []
        while len(answers) < expect:
            while b"\n" not in self.buf:
                data = self.sock.recv(1 << 20)
                assert data, "the server closed the connection"
                self.buf += data
            line, self.buf = self.buf.split(b"\n", 1)
            answers.append(json.loads(line))
        return answers

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = ToolServer(tmp_path_factory.mktemp("tools"))
    assert not srv.crashed, srv.crashed
    yield srv
    srv.stop()
    assert not srv.crashed, srv.crashed


@pytest.fixture(scope="module")
def evil(server: ToolServer) -> Any:
    c = Client(server.paths["evil"])
    yield c
    c.close()


def _lines_expected(payload: bytes) -> int:
    """How many answers a payload that ends with a newline gets: one per non-blank line."""
    return sum(1 for line in payload.split(b"\n")[:-1] if line.strip())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_random_bytes_each_line_answered_with_an_error(server: ToolServer, evil: Client, data: bytes) -> None:
    payload = data.replace(b"\n", b" ") + b"\n"
    expect = _lines_expected(payload)
    answers = evil.exchange(payload, expect)
    for a in answers:
        if not a["ok"]:
            assert isinstance(a["error"], str) and a["error"]
    if expect:
        # random bytes are never a valid call
        assert not answers[0]["ok"]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "id": json_values,
            "tool": st.sampled_from(TOOLS) | json_values,
            "args": st.dictionaries(
                st.sampled_from(["text", "chat", "prompt", "schedule_type", "schedule_value", "timezone",
                                 "context_mode", "pre_script", "task_id", "folder", "requires_trigger", "x"]),
                json_values | st.sampled_from(["local:other", "local:evil", "cron", "interval", "once",
                                               "* * * * *", "60000", "../../etc", "other", "Other", "global"]),
                max_size=6,
            ) | json_values,
        },
    )
)
def test_random_calls_answered_and_other_group_untouched(server: ToolServer, evil: Client, frame: dict) -> None:
    line = json.dumps(frame).encode() + b"\n"
    (answer,) = evil.exchange(line, 1)
    assert set(answer) >= {"id", "ok"}
    if not answer["ok"]:
        assert isinstance(answer["error"], str) and answer["error"]
        assert not answer["error"].startswith("internal error"), answer
    else:
        result = answer["result"]
        assert result.get("chat", "local:evil") == "local:evil", answer  # never another chat


def test_oversized_and_hostile_lines(server: ToolServer) -> None:
    c = Client(server.paths["evil"])
    # a line over the frame limit, then a valid call: one error, and the connection is closed
    # (nothing after the too-long line is read); a new connection is served
    (answer,) = c.exchange(b"x" * (MAX_FRAME + 10) + b"\n" + b'{"id": 1, "tool": "list_tasks", "args": {}}\n', 1)
    assert not answer["ok"] and "too long" in answer["error"] and "connection closed" in answer["error"]
    assert c.sock.recv(100) == b""
    c.close()
    c = Client(server.paths["evil"])
    # a request whose echo would be bigger than a frame (huge id, huge unknown tool name)
    big = "é" * (MAX_FRAME // 3)
    ctrl = "\x7f" * (MAX_FRAME // 4)  # 1 byte in, 5 out: repr() escapes it, JSON its backslash
    for frame in ({"id": big, "tool": "list_tasks", "args": {}}, {"id": 2, "tool": big, "args": {}},
                  {"id": 3, "tool": ctrl, "args": {}}, {"id": 4, "tool": "pause_task", "args": {"task_id": ctrl}}):
        (a,) = c.exchange(json.dumps(frame, ensure_ascii=False).encode() + b"\n", 1)
        assert len(json.dumps(a, ensure_ascii=False).encode()) <= MAX_FRAME
    # still alive
    (a,) = c.exchange(b'{"id": 3, "tool": "list_tasks", "args": {}}\n', 1)
    assert a["ok"] and a["id"] == 3
    c.close()


def test_reset_connections_do_not_stop_the_server(server: ToolServer) -> None:
    for _ in range(50):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(server.paths["evil"]))
        s.sendall(b'{"id": 1, "tool": "list_tasks", "args": {}}\n' * 50 + b'{"partial": ')
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # unread answers + linger 0: the server sees a reset
    # A new connection is served once the server has let go of the reset ones (until then it may
    # be refused as one too many: at most MAX_CONNECTIONS at once).
    for _ in range(200):
        c = Client(server.paths["evil"])
        (a,) = c.exchange(b'{"id": 9, "tool": "list_tasks", "args": {}}\n', 1)
        c.close()
        if "too many connections" not in str(a.get("error")):
            break
        time.sleep(0.05)
    assert a["ok"]
    assert not server.crashed


def test_zz_other_group_untouched_after_the_fuzzing(server: ToolServer) -> None:
    async def check() -> tuple[list, list]:
        tasks = await server.store.tasks("other")
        outbox = await server.store.run(
            lambda c: c.execute("SELECT * FROM outbox WHERE chat = 'local:other' OR folder = 'other'").fetchall()
        )
        return tasks, outbox

    tasks, outbox = server.run(check)
    assert tasks == [] and outbox == []
    assert sorted(g.chat for g in server.registry.all()) == ["local:evil", "local:other"]
    c = Client(server.paths["other"])
    (a,) = c.exchange(b'{"id": "o", "tool": "list_tasks", "args": {}}\n', 1)
    assert a == {"id": "o", "ok": True, "result": {"tasks": []}}
    c.close()
    assert not server.crashed
