"""The launcher's handshake (ngb/sandbox/launcher.py): the runner's hello carries the protocol
version; a runner that speaks another version fails the turn with one clear error."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from ngb.agent_link import ExitInfo, TurnFailed
from ngb.framing import encode_frame
from ngb.protocol import PROTOCOL_VERSION, Hello, encode
from ngb.sandbox.launcher import AgentStream, ContainerLauncher
from ngb.sandbox.transport import UnixEndpoints


class RunningForever:
    """A runtime whose container never exits."""

    async def wait(self, container_id: str) -> ExitInfo:
        await trio.sleep_forever()
        raise AssertionError


async def handshake(tmp_path: Path, hello: dict) -> AgentStream:
    launcher = ContainerLauncher(
        runtime=RunningForever(),  # type: ignore[arg-type]
        transport=None,  # type: ignore[arg-type]
        proxy=None,  # type: ignore[arg-type]
        tools=None,  # type: ignore[arg-type]
        config=SimpleNamespace(start_timeout=10, agent_uid=os.geteuid()),
        current_group=lambda folder: None,
    )
    path = tmp_path / "control.sock"
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(1)
    listener = trio.SocketListener(sock)
    try:
        return await _accept(launcher, listener, path, hello)
    except BaseExceptionGroup as group:  # the nursery's wrapping of the one error
        raise group.exceptions[0] from None


async def _accept(
    launcher: ContainerLauncher, listener: trio.SocketListener, path: Path, hello: dict
) -> AgentStream:
    async with trio.open_nursery() as nursery:

        async def runner() -> None:
            stream = await trio.open_unix_socket(str(path))
            await stream.send_all(encode_frame(hello))
            await trio.sleep_forever()

        nursery.start_soon(runner)
        try:
            return await launcher._accept(listener, UnixEndpoints(path.parent, os.geteuid()), "c1", nursery, "g")
        finally:
            nursery.cancel_scope.cancel()


async def test_a_hello_of_this_version_is_accepted(tmp_path: Path) -> None:
    conn = await handshake(tmp_path, encode(Hello(PROTOCOL_VERSION)))
    assert conn.container_id == "c1"


async def test_a_hello_of_another_version_fails_the_turn_clearly(tmp_path: Path) -> None:
    with pytest.raises(
        TurnFailed, match=f"protocol version {PROTOCOL_VERSION + 1}, this daemon {PROTOCOL_VERSION}"
    ):
        await handshake(tmp_path, {"type": "hello", "version": PROTOCOL_VERSION + 1})


async def test_no_hello_fails_the_turn(tmp_path: Path) -> None:
    with pytest.raises(TurnFailed, match="did not say hello"):
        await handshake(tmp_path, {"type": "log", "level": "info", "message": "hi"})
