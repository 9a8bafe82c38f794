"""Limits before trust on the container sockets (ngb/sandbox/tools.py, ngb/framing.py, the
launcher's control connection): an over-long line is refused as soon as it passes the cap and the
connection closed, a line that dribbles in is cut after the frame timeout, at most
MAX_CONNECTIONS connections are served at once, and through all of it the socket keeps answering."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from ngb.framing import MAX_FRAME, FrameError
from ngb.groups import GroupRegistry
from ngb.protocol import Hello
from ngb.records import Group
from ngb.sandbox import launcher as launcher_mod
from ngb.sandbox.tool_socket import serve_requests
from ngb.sandbox.tools import MAX_CONNECTIONS, ToolContext, ToolService
from ngb.store import Store

FRAME_TIMEOUT = 0.5  # the test server's; the daemon's is ngb.framing.FRAME_TIMEOUT
LIST = b'{"id": "ok", "tool": "list_tasks", "args": {}}\n'


class Conn:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def frame(self) -> dict[str, Any] | None:
        """The next answer, or None when the server closed the connection."""
        while b"\n" not in self.buf:
            try:
                data = await self.stream.receive_some(1 << 16)
            except trio.BrokenResourceError:
                return None
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return dict(json.loads(line))

    async def call(self) -> dict[str, Any] | None:
        await self.send(LIST)
        return await self.frame()

    async def aclose(self) -> None:
        await self.stream.aclose()


class Server:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def connect(self) -> Conn:
        return Conn(await trio.open_unix_socket(str(self.path)))

    async def served(self) -> Conn:
        """A connection that got an answer (waits while earlier ones are still being let go)."""
        with trio.fail_after(10):
            while True:
                conn = await self.connect()
                answer = await conn.call()
                if answer is not None and answer.get("ok"):
                    return conn
                await conn.aclose()
                await trio.sleep(0.02)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    store = Store(tmp_path / "ngb.db")
    await store.open()
    registry = GroupRegistry(store, tmp_path / "groups", tmp_path / "global")
    await registry.load()
    group = await registry.add(Group(chat="local:evil", folder="evil"))
    service = ToolService(ToolContext(store, registry, lambda: None, "@Andy"))
    path = tmp_path / "requests.sock"
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(64)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: serve_requests(
                trio.SocketListener(sock), lambda: group, service, frame_timeout=FRAME_TIMEOUT, task_status=task_status
            )
        )
        yield Server(path)
        nursery.cancel_scope.cancel()
    await store.close()


async def test_an_over_long_line_is_refused_at_the_cap_and_the_connection_closed(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await server.connect()
    answers: list[dict[str, Any] | None] = []

    async def attacker_sends() -> None:
        try:  # 30 MiB, no newline: the server must not wait for (or keep) the rest
            for _ in range(30):
                await conn.send(b"x" * (1 << 20))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(attacker_sends)
        with trio.fail_after(10):
            answers.append(await conn.frame())
            answers.append(await conn.frame())
        nursery.cancel_scope.cancel()
    first, after = answers
    assert first is not None and not first["ok"]
    assert f"line too long (over {MAX_FRAME} bytes)" in first["error"] and "connection closed" in first["error"]
    assert after is None  # closed
    lines = [r.getMessage() for r in caplog.records if "too long" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("tools[evil]:")
    await conn.aclose()
    # the socket keeps answering
    ok = await server.served()
    await ok.aclose()


async def test_a_dribbling_line_is_cut_and_an_idle_connection_is_not(server: Server) -> None:
    idle = await server.served()  # answered once, then quiet: an agent between tool calls
    slow = await server.connect()
    await slow.send(b'{"id": 1, "tool": "list_')  # and never the rest
    with trio.fail_after(10):
        answer = await slow.frame()
        assert answer is not None and "not finished within" in answer["error"], answer
        assert await slow.frame() is None  # closed
    # the idle connection waited longer than the frame timeout and is still served
    assert (await idle.call() or {}).get("ok")
    # a line trickling in a byte at a time: still cut (the clock runs for the whole line)
    trickle = await server.connect()
    got: list[dict[str, Any] | None] = []

    async def drip() -> None:
        try:
            while True:
                await trickle.send(b" {")
                await trio.sleep(FRAME_TIMEOUT / 5)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drip)
        with trio.fail_after(10):
            got.append(await trickle.frame())
        nursery.cancel_scope.cancel()
    assert got[0] is not None and "not finished within" in got[0]["error"], got
    for c in (idle, slow, trickle):
        await c.aclose()


async def test_too_many_connections_are_refused_and_the_socket_keeps_answering(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    held = [await server.served() for _ in range(MAX_CONNECTIONS)]
    extra = [await server.connect() for _ in range(5)]
    for conn in extra:
        with trio.fail_after(10):
            answer = await conn.frame()
            assert answer is not None and "too many connections" in answer["error"], answer
            assert await conn.frame() is None
        await conn.aclose()
    refusals = [r.getMessage() for r in caplog.records if "too many connections" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].startswith("tools[evil]: connection refused")  # not one per attempt
    for conn in held:  # the ones being served still are
        assert (await conn.call() or {}).get("ok")
    await held.pop().aclose()
    held.append(await server.served())  # a freed place is taken again
    for conn in held:
        await conn.aclose()


async def test_control_connection_reads_strictly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control socket: a too-long or unfinished frame ends the agent connection (the actor
    sees a fatal error, then the end), nothing past the cap is kept."""
    monkeypatch.setattr(launcher_mod, "FRAME_TIMEOUT", FRAME_TIMEOUT)
    a, b = trio.socket.socketpair()
    peer, ours = trio.SocketStream(a), trio.SocketStream(b)
    conn = launcher_mod.AgentStream("cid", ours)

    async def flood() -> None:
        with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError)):
            await peer.send_all(b'{"type": "hello", "version": 1}\n' + b"y" * (8 * MAX_FRAME))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            assert await conn.receive() == Hello(version=1)
            error = await conn.receive()
            assert isinstance(error, FrameError) and error.fatal and "too long" in error.reason
            assert await conn.receive() is None
            await ours.aclose()  # what the actor does on the end of the stream

    c, d = trio.socket.socketpair()
    peer2 = trio.SocketStream(c)
    conn2 = launcher_mod.AgentStream("cid", trio.SocketStream(d))
    await peer2.send_all(b'{"type": "out')
    with trio.fail_after(10):
        error = await conn2.receive()
    assert isinstance(error, FrameError) and error.fatal and "not finished" in error.reason
    assert await conn2.receive() is None
    for s in (peer, ours, peer2):
        await s.aclose()
