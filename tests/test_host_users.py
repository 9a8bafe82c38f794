"""The host's other users are kept out (ngb/hostperms.py): a real second, unprivileged account,
created here with useradd (and removed with userdel), tries to read the state and to connect to
the group's sockets, from its own process (setpriv). It must get "permission denied" every time,
while the daemon runs and, in the docker test, while a real agent container is up and using the
very same sockets. Needs root (to create the account); CI and the dev machine run tests as root."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import trio

from ngb.daemon import Daemon
from ngb.records import Group, InboundMessage
from ngb.sandbox.tool_socket import serve_requests
from ngb.sandbox.tools import ToolContext, ToolService
from ngb.store import Store
from tests.conftest import make_config
from tests.fakes.agent import FakeLauncher
from tests.fakes.anthropic import FakeAnthropic

REAL_KEY = "sk-ant-test-REAL-KEY-must-never-leak-0123456789"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("setpriv") is None,
                                reason="creating a second host account needs root, useradd and setpriv")

PROBE = r"""
import json, os, socket, sys
out = {}
for kind, path in json.loads(sys.argv[1]):
    try:
        if kind == "read":
            with open(path, "rb") as fh:
                fh.read(1)
        elif kind == "list":
            os.listdir(path)
        elif kind in ("connect", "talk"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(path)
            if kind == "talk":
                s.sendall(b'{"id": "x", "tool": "list_tasks", "args": {}}\n')
                data = b""
                while b"\n" not in data:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                out[path] = data.decode(errors="replace")
                continue
        out[path] = "ok"
    except OSError as exc:
        out[path] = os.strerror(exc.errno) if exc.errno else repr(exc)
print(json.dumps(out))
"""

DENIED = os.strerror(13)  # "Permission denied"


@attrs.frozen
class Stranger:
    name: str
    uid: int
    gid: int

    def probe(self, *attempts: tuple[str, Path]) -> dict[str, str]:
        """Run the attempts as this account, in its own process; path -> "ok" or the error."""
        cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
               "/usr/bin/python3", "-c", PROBE, json.dumps([(k, str(p)) for k, p in attempts])]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, cwd="/")
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))


@pytest.fixture
def stranger() -> Iterator[Stranger]:
    """A real unprivileged account (a system one: its uid is not the agents' 1000)."""
    name = f"ngbprobe{os.getpid() % 100000}"
    subprocess.run(["userdel", name], capture_output=True, check=False)
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    try:
        ids = subprocess.run(["id", "-u", name], check=True, capture_output=True, text=True).stdout.strip()
        gid = subprocess.run(["id", "-g", name], check=True, capture_output=True, text=True).stdout.strip()
        user = Stranger(name, int(ids), int(gid))
        assert user.uid != 1000
        yield user
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A folder every user may walk into (pytest's own tmp folders are 0700, which would hide the
    state from the other account whatever the daemon did)."""
    base = Path(tempfile.mkdtemp(prefix="ngb-hostusers-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _db_files(state: Path) -> list[Path]:
    return [p for p in (state / "ngb.db", state / "ngb.db-wal", state / "ngb.db-shm") if p.exists()]


async def test_running_daemon_state_and_database_are_closed(
    stranger: Stranger, open_base: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An older install: the folder 0755 and the database 0644 (as a umask of 022 made them)
    state = open_base / "state"
    old_umask = os.umask(0o022)
    try:
        state.mkdir()
        store = Store(state / "ngb.db")
        store.open_sync()
        store.close_sync()
    finally:
        os.umask(old_umask)
    assert stranger.probe(("read", state / "ngb.db")) == {str(state / "ngb.db"): "ok"}  # the hole

    caplog.set_level(logging.WARNING)
    config = make_config(open_base)
    daemon = Daemon(config, launcher_factory=lambda d: FakeLauncher(None))
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        files = _db_files(state)
        assert {p.name for p in files} >= {"ngb.db", "ngb.db-wal"}  # WAL mode: all three while open
        attempts = [("list", state), ("list", state / "groups"), ("list", state / "run"),
                    *[("read", p) for p in files]]
        result = stranger.probe(*attempts)
        assert result == {str(p): DENIED for _, p in attempts}, result
        # and the modes say so, for the files too (not only the folder in front of them)
        assert (state.stat().st_mode & 0o777) == 0o700
        for p in files:
            assert (p.stat().st_mode & 0o077) == 0, (p, oct(p.stat().st_mode))
        nursery.cancel_scope.cancel()
    tightened = [r.getMessage() for r in caplog.records if "closed to the host's other users" in r.getMessage()]
    assert len(tightened) == 1 and "0755 -> 0700" in tightened[0] and "0644 -> 0600" in tightened[0]


async def test_a_stranger_reaching_a_tools_socket_is_refused_by_uid(
    stranger: Stranger, open_base: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Even where the modes let them through (an operator's chmod, an odd mount), the tools
    socket checks who is at the other end before it reads a byte."""
    store = Store(open_base / "ngb.db")
    await store.open()
    from ngb.groups import GroupRegistry

    registry = GroupRegistry(store, open_base / "groups", open_base / "global")
    await registry.load()
    group = await registry.add(Group(chat="local:main", folder="main", is_main=True))
    service = ToolService(ToolContext(store, registry, lambda: None, "@Andy"))
    path = open_base / "requests.sock"
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    os.chmod(path, 0o666)  # wide open on purpose
    sock.listen(8)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_requests, trio.SocketListener(sock), lambda: group, service)
        result = await trio.to_thread.run_sync(lambda: stranger.probe(("talk", path)))
        answer = json.loads(result[str(path)])
        assert answer["ok"] is False and f"uid {stranger.uid} may not use this socket" in answer["error"], answer
        # the daemon's own uid (here: root, standing in for the agent) is still served
        mine = await trio.open_unix_socket(str(path))
        await mine.send_all(b'{"id": 1, "tool": "list_tasks", "args": {}}\n')
        assert b'"ok":true' in await mine.receive_some(65536)
        await mine.aclose()
        nursery.cancel_scope.cancel()
    await store.close()
    refused = [r.getMessage() for r in caplog.records if "connection refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].startswith("tools[main]:") and f"uid {stranger.uid}" in refused[0]


async def test_a_stranger_reaching_a_web_socket_is_refused_by_uid(
    stranger: Stranger, open_base: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The egress door checks the peer's uid like the tools socket: a stranger on a wide-open
    web.sock gets the connection closed before the door reads a byte (no 400 for its bytes)."""
    from ngb.records import WebMode
    from ngb.sandbox.web_door import WebDoor, WebLimits
    from ngb.sandbox.web_policy import WebRules

    door = WebDoor(WebLimits(turn_bytes=0, day_bytes=0, max_connections=4, connect_timeout=3, idle_timeout=5),
                   agent_uid=1000)
    path = open_base / "web.sock"
    rules = WebRules(folder="main", mode=WebMode.OPEN)
    async with trio.open_nursery() as nursery:
        await nursery.start(door.serve_group, "main", path, lambda: rules)
        os.chmod(path, 0o666)  # wide open on purpose
        result = await trio.to_thread.run_sync(lambda: stranger.probe(("talk", path)))
        # closed without an answer (the probe sees EOF, a reset or a broken pipe, as the timing falls)
        assert result[str(path)] in ("", "Connection reset by peer", "Broken pipe"), result
        mine = await trio.open_unix_socket(str(path))  # root, standing in for the agent
        await mine.send_all(b"CONNECT 10.0.0.5:443 HTTP/1.1\r\n\r\n")
        assert (await mine.receive_some(65536)).startswith(b"HTTP/1.1 403 web: 10.0.0.5 is a private address")
        await mine.aclose()
        nursery.cancel_scope.cancel()
    refused = [r.getMessage() for r in caplog.records if "another uid" in r.getMessage()]
    assert refused == ["web[main]: a connection from another uid was refused"], refused


def _tool_results(fake: FakeAnthropic) -> list[str]:
    out: list[str] = []
    for req in fake.message_requests:
        for message in (req.json or {}).get("messages", []):
            content = message.get("content")
            if isinstance(content, list):
                out += [json.dumps(b.get("content")) for b in content if b.get("type") == "tool_result"]
    return out


@pytest.mark.docker
@pytest.mark.slow
async def test_a_live_agent_containers_sockets_are_closed_to_a_stranger(
    stranger: Stranger, open_base: Path, agent_image: str
) -> None:
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        config = make_config(
            open_base,
            NGB_MODEL_UPSTREAM=fake.url,
            ANTHROPIC_API_KEY=REAL_KEY,
            NGB_IDLE_TIMEOUT="120",  # the container stays up, idle, while the stranger tries
            NGB_INSTANCE=f"hostusers{os.getpid()}",
            NGB_CONTAINER_MEMORY="768m",
        )
        daemon = Daemon(config)
        await nursery.start(daemon.run)
        # A turn in which the agent uses its tools socket: the sockets work for the agent's uid.
        await daemon.router.handle(InboundMessage(
            chat="local:main", sender="alice", sender_id="alice", platform_id="hostusers-1",
            text='[[tool:mcp__ngb__list_tasks {}]]',
        ))
        with trio.fail_after(120):
            while not any("tasks" in r for r in _tool_results(fake)):
                await trio.sleep(0.1)
        run = config.run_dir / "main"
        socks = [run / "requests.sock", run / "control.sock", run / "model.sock", run / "web.sock"]
        assert all(p.exists() for p in socks), list(run.iterdir())
        assert daemon.supervisor.actors["main"].view.container_id  # still up
        files = _db_files(config.state_dir)
        attempts = [*(("connect", p) for p in socks), *(("read", p) for p in files), ("list", run)]
        result = await trio.to_thread.run_sync(lambda: stranger.probe(*attempts))
        assert result == {str(p): DENIED for _, p in attempts}, result
        # Not only the state folder in front: with it and run/ opened up (an operator's chmod),
        # the group's socket folder, its sockets and the database still keep the stranger out.
        os.chmod(config.state_dir, 0o755)
        os.chmod(config.run_dir, 0o755)
        try:
            result = await trio.to_thread.run_sync(lambda: stranger.probe(*attempts))
        finally:
            os.chmod(config.state_dir, 0o700)
            os.chmod(config.run_dir, 0o700)
        assert result == {str(p): DENIED for _, p in attempts}, result
        # The database is the daemon's only: it really is one (not an empty file) and readable by root.
        with sqlite3.connect(f"file:{files[0]}?mode=ro", uri=True) as db:
            assert db.execute("SELECT count(*) FROM messages").fetchone()[0] >= 1
        nursery.cancel_scope.cancel()
