"""What the channel tests share: waiting for a condition, reading a chat's stored messages, and an
agent behaviour that answers each message of a batch."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from typing import Any

import trio


async def wait_until(predicate: Callable[[], Any], timeout: float = 10) -> Any:
    """Poll predicate until it is truthy (returns its value); fail after timeout seconds."""
    with trio.fail_after(timeout):
        while not (value := predicate()):
            await trio.sleep(0.01)
        return value


async def stored(d: Any, chat: str) -> list[Any]:
    """Every stored message of chat, oldest first."""
    return await d.daemon.store.messages_after(chat, 0)


def echo_each(prompt: str) -> list[str]:
    """A FakeBehaviour reply: one "Echo: ..." per message in the prompt."""
    return [f"Echo: {t}" for t in re.findall(r">([^<]*)</message>", prompt)]


class StoppableDaemon:
    """A daemon (with the in-process fake agent) in the test's nursery that can be stopped, as by
    systemctl stop, and started again on the same state dir; ``start`` returns once the channel
    named ``channel`` is connected."""

    def __init__(self, daemon: Any, channel: str) -> None:
        self.daemon = daemon
        self.channel_name = channel
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()

    @classmethod
    async def start_with(cls, nursery: trio.Nursery, config: Any, behaviour: Any, channel: str,
                         state: str = "connected") -> Any:
        from ngb.daemon import Daemon
        from tests.fakes.agent import FakeLauncher

        running = cls(Daemon(config, launcher_factory=lambda d: FakeLauncher(behaviour)), channel)

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with running.scope:
                    await running.daemon.run(task_status=task_status)
            finally:
                running.stopped.set()

        await nursery.start(run)
        await wait_until(lambda: running.daemon.channels[channel].state == state)
        return running

    @property
    def channel(self) -> Any:
        return self.daemon.channels[self.channel_name]

    async def stop(self) -> None:
        self.scope.cancel()
        with trio.fail_after(10):
            await self.stopped.wait()


async def leave_mid_backlog(url: str, stuck: Callable[[], bool]) -> None:
    """Open a websocket to ``url`` as a client that reads next to nothing (a tiny receive buffer),
    wait until the fake's writer is ``stuck`` in the middle of its backlog, then leave abruptly (RST)."""
    import socket
    import struct
    from urllib.parse import urlsplit

    from wsproto import ConnectionType, WSConnection
    from wsproto.events import Request

    parts = urlsplit(url)
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((parts.hostname, parts.port))
    stream = trio.SocketStream(sock)
    client = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(client.send(Request(host=parts.netloc, target=f"{parts.path}?{parts.query}")))
    await stream.receive_some(4096)  # the 101, perhaps a frame
    await wait_until(stuck)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def stop_process(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    """End a server a fixture started: SIGTERM, then SIGKILL when it is not gone within ``timeout``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
