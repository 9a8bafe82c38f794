"""The agent transport of today: unix sockets in the group's run folder (``run/<folder>/``, mode
0700/0750 for the daemon and the agent's uid only, ngb/hostperms.py), mounted read-only into the
container at /run/ngb. A connection is admitted when the peer's uid (SO_PEERCRED) is the agent's.

A transport for containers on another machine (docs/scaling.md) would listen on TCP with mutual TLS
or a per-session signed token instead, and admit by that; the launcher would not change."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from ..framing import peer_uid
from ..hostperms import allowed_peer, share_socket, socket_dir
from .model_http import bind_unix
from .runtime_api import BindMount

MOUNT_POINT = "/run/ngb"


class UnixEndpoints:
    def __init__(self, run_dir: Path, agent_uid: int) -> None:
        self.run_dir = run_dir
        self.agent_uid = agent_uid
        self.mounts = [BindMount(str(run_dir.resolve()), MOUNT_POINT, read_only=True)]
        self.environment: dict[str, str] = {}
        self._made: list[tuple[Path, int, trio.socket.SocketType]] = []

    def path(self, name: str) -> Path:
        return self.run_dir / f"{name}.sock"

    async def listener(self, name: str) -> trio.SocketListener:
        """A socket in the run folder (a long path bound through /proc/self/fd, a backlog of 128:
        model_http.bind_unix), connectable by the agent's uid and the daemon only."""
        path = self.path(name)
        sock, inode = await bind_unix(path)
        try:
            share_socket(path, self.agent_uid)
        except BaseException:
            sock.close()
            raise
        self._made.append((path, inode, sock))
        return trio.SocketListener(sock)

    def admits(self, stream: trio.SocketStream) -> bool:
        return allowed_peer(peer_uid(stream), self.agent_uid)

    def close(self) -> None:
        """Close the sockets this session made and remove their files (not one a newer session has
        put there since)."""
        for path, inode, sock in self._made:
            sock.close()
            with contextlib.suppress(OSError):
                if path.lstat().st_ino == inode:
                    path.unlink()
        self._made.clear()


class UnixSocketTransport:
    def __init__(self, run_root: Path, agent_uid: int) -> None:
        self.run_root = run_root
        self.agent_uid = agent_uid

    @asynccontextmanager
    async def open(self, folder: str) -> AsyncIterator[UnixEndpoints]:
        run_dir = self.run_root / folder
        socket_dir(run_dir, self.agent_uid)  # OSError: it cannot be made private
        endpoints = UnixEndpoints(run_dir, self.agent_uid)
        try:
            yield endpoints
        finally:
            endpoints.close()
