"""The sd_notify + watchdog protocol, against a unix datagram socket standing in for systemd's
NOTIFY_SOCKET (ngb/ops/sdnotify.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from ngb.ops.sdnotify import notify_address, run_notifier, watchdog_interval
from tests.conftest import free_port, make_config

ROOT = Path(__file__).resolve().parent.parent


class FakeSystemd:
    """A NOTIFY_SOCKET: records every datagram with the time it arrived."""

    def __init__(self, address: str | bytes) -> None:
        self.address = address
        self.sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.messages: list[tuple[float, list[str]]] = []

    async def bind(self) -> None:
        await self.sock.bind(self.address)

    async def serve(self) -> None:
        while True:
            data = await self.sock.recv(4096)
            self.messages.append((time.monotonic(), data.decode().split("\n")))

    def assignments(self) -> list[str]:
        return [a for _, m in self.messages for a in m]

    def times_of(self, assignment: str) -> list[float]:
        return [t for t, m in self.messages if assignment in m]

    async def wait_for(self, assignment: str, timeout: float = 5) -> None:
        with trio.fail_after(timeout):
            while assignment not in self.assignments():
                await trio.sleep(0.01)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # A short path: unix socket paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="ngb-sd-") as tmp:
        yield Path(tmp)


async def start_fake(nursery: trio.Nursery, address: str | bytes) -> FakeSystemd:
    fake = FakeSystemd(address)
    await fake.bind()
    nursery.start_soon(fake.serve)
    return fake


def test_addresses_and_intervals() -> None:
    assert notify_address({}) is None
    assert notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert notify_address({"NOTIFY_SOCKET": "@abstract/name"}) == b"\0abstract/name"
    assert notify_address({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}) is None


async def test_without_notify_socket_it_returns_at_once() -> None:
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_notifier(trio.Event(), task_status=task_status, env={}))
    # and it never needed the event


async def test_ready_only_once_the_event_is_set_then_stopping(sock_dir: Path) -> None:
    path = str(sock_dir / "notify")
    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery, path)
        ready = trio.Event()
        async with trio.open_nursery() as inner:
            await inner.start(lambda task_status: run_notifier(ready, task_status=task_status, env={"NOTIFY_SOCKET": path}))
            await fake.wait_for("STATUS=starting")
            await trio.sleep(0.2)
            assert "READY=1" not in fake.assignments()
            ready.set()
            await fake.wait_for("READY=1")
            ready_msg = next(m for _, m in fake.messages if "READY=1" in m)
            assert f"MAINPID={os.getpid()}" in ready_msg and any(a.startswith("STATUS=ready") for a in ready_msg)
            assert "WATCHDOG=1" not in fake.assignments()  # no WATCHDOG_USEC, no pings
            await trio.sleep(0.1)
            assert "STOPPING=1" not in fake.assignments()  # still running after READY
            inner.cancel_scope.cancel()
        await fake.wait_for("STOPPING=1")
        assert fake.assignments().count("READY=1") == 1
        nursery.cancel_scope.cancel()


async def test_watchdog_pings_at_half_the_interval(sock_dir: Path) -> None:
    path = str(sock_dir / "notify")
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}
    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery, path)
        ready = trio.Event()
        ready.set()
        await nursery.start(lambda task_status: run_notifier(ready, task_status=task_status, env=env))
        await trio.sleep(1.0)
        pings = fake.times_of("WATCHDOG=1")
        # one every 0.1 s: about 10 in a second (timer slack allowed), never a gap near the 0.2 s limit
        assert 7 <= len(pings) <= 12, pings
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert max(gaps) < 0.17, gaps
        nursery.cancel_scope.cancel()


async def test_a_stalled_loop_stops_the_pings(sock_dir: Path) -> None:
    """A blocking call on the trio thread starves the ping task: systemd would restart us."""
    path = str(sock_dir / "notify")
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery, path)
        ready = trio.Event()
        ready.set()
        await nursery.start(lambda task_status: run_notifier(ready, task_status=task_status, env=env))
        await trio.sleep(0.35)
        before = len(fake.times_of("WATCHDOG=1"))
        stall_start = time.monotonic()
        time.sleep(0.8)  # the loop is stuck: no task runs  # noqa: ASYNC251 - on purpose
        stall_end = time.monotonic()
        await trio.sleep(0.35)
        pings = fake.times_of("WATCHDOG=1")
        assert before >= 2
        # The datagrams that arrived during the stall: none (the receiver runs on the same loop, so
        # look at the gap between the last ping sent before and the first one after).
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert max(gaps) >= 0.75, gaps  # longer than WatchdogSec (0.2 s): systemd kills the service
        assert len(pings) > before + 1  # and the pings resume once the loop runs again
        assert stall_end - stall_start >= 0.8
        nursery.cancel_scope.cancel()


async def test_a_stalled_loop_sends_nothing_seen_from_another_thread(sock_dir: Path) -> None:
    """The same, with the receiver in a thread (not starved by the stall): timestamps are real."""
    path = str(sock_dir / "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(0.05)
    seen: list[float] = []
    stop = False

    def listen() -> None:
        while not stop:
            try:
                data = receiver.recv(4096)
            except TimeoutError:
                continue
            if b"WATCHDOG=1" in data:
                seen.append(time.monotonic())

    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: trio.to_thread.run_sync(listen, abandon_on_cancel=True))
        ready = trio.Event()
        ready.set()
        await nursery.start(lambda task_status: run_notifier(ready, task_status=task_status, env=env))
        await trio.sleep(0.3)
        t0 = time.monotonic()
        time.sleep(0.6)  # noqa: ASYNC251 - the stall under test
        t1 = time.monotonic()
        await trio.sleep(0.3)
        stop = True
        nursery.cancel_scope.cancel()
    receiver.close()
    during = [t for t in seen if t0 + 0.01 < t < t1 - 0.01]
    assert during == [], during
    assert any(t < t0 for t in seen) and any(t > t1 for t in seen)


async def test_watchdog_pid_of_another_process_means_no_pings(sock_dir: Path) -> None:
    path = str(sock_dir / "notify")
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"}
    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery, path)
        ready = trio.Event()
        ready.set()
        await nursery.start(lambda task_status: run_notifier(ready, task_status=task_status, env=env))
        await fake.wait_for("READY=1")
        await trio.sleep(0.3)
        assert "WATCHDOG=1" not in fake.assignments()
        nursery.cancel_scope.cancel()


async def test_unhealthy_hook_skips_pings(sock_dir: Path) -> None:
    path = str(sock_dir / "notify")
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"}
    state = {"ok": False}

    def healthy() -> bool:
        if state["ok"] is None:
            raise RuntimeError("broken hook")
        return bool(state["ok"])

    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery, path)
        ready = trio.Event()
        await nursery.start(lambda task_status: run_notifier(ready, task_status=task_status, env=env, healthy=healthy))
        await trio.sleep(0.25)
        assert "WATCHDOG=1" not in fake.assignments()
        state["ok"] = True
        await fake.wait_for("WATCHDOG=1")
        state["ok"] = None  # a hook that raises counts as unhealthy, and does not kill the task
        await trio.sleep(0.1)
        count = len(fake.times_of("WATCHDOG=1"))
        await trio.sleep(0.25)
        assert len(fake.times_of("WATCHDOG=1")) == count
        nursery.cancel_scope.cancel()


async def test_abstract_socket(sock_dir: Path) -> None:
    name = f"ngb-test-{os.getpid()}-{time.monotonic_ns()}"
    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery, b"\0" + name.encode())
        ready = trio.Event()
        ready.set()
        await nursery.start(lambda task_status: run_notifier(ready, task_status=task_status, env={"NOTIFY_SOCKET": "@" + name}))
        await fake.wait_for("READY=1")
        nursery.cancel_scope.cancel()


async def test_a_missing_socket_is_not_fatal(sock_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = {"NOTIFY_SOCKET": str(sock_dir / "nobody-listens"), "WATCHDOG_USEC": "50000"}
    ready = trio.Event()
    ready.set()
    with trio.move_on_after(0.3):
        await run_notifier(ready, env=env)
    warnings = [r for r in caplog.records if "cannot send" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not once per ping


async def test_ready_after_web_and_channels_with_the_real_daemon(tmp_path: Path, sock_dir: Path) -> None:
    """What ngb/daemon.py does: run_notifier(daemon.ready) in the root nursery. READY=1 arrives
    only once /healthz answers."""
    from ngb.daemon import Daemon
    from tests.fakes.agent import FakeLauncher

    path = str(sock_dir / "notify")
    config = make_config(tmp_path)
    launcher = FakeLauncher(None)
    daemon = Daemon(config, launcher_factory=lambda d: launcher)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}
    async with trio.open_nursery() as nursery:
        fake = await start_fake(nursery, path)
        await nursery.start(lambda task_status: run_notifier(daemon.ready, task_status=task_status, env=env))
        nursery.start_soon(daemon.run)
        await fake.wait_for("READY=1", timeout=20)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.web_port}") as http:
            r = await http.get("/healthz")
            assert r.status_code == 200
        await fake.wait_for("WATCHDOG=1")
        nursery.cancel_scope.cancel()


def _daemon_wired() -> bool:
    return "run_notifier" in (ROOT / "ngb" / "daemon.py").read_text()


@pytest.mark.slow
def test_ngb_run_process_speaks_the_protocol(tmp_path: Path, sock_dir: Path) -> None:
    """The real `ngb run` process as systemd runs it: READY=1, watchdog pings, STOPPING=1 on SIGTERM."""
    path = str(sock_dir / "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(30)
    port = free_port()
    env = dict(
        os.environ,
        NOTIFY_SOCKET=path,
        WATCHDOG_USEC="1000000",
        NGB_STATE_DIR=str(tmp_path / "state"),
        NGB_WEB_PORT=str(port),
        NGB_MOUNT_ALLOWLIST=str(tmp_path / "none.toml"),
        NGB_SHUTDOWN_GRACE="1",
    )
    env.pop("NGB_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ngb", "run", "--no-build"], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        got: list[str] = []
        deadline = time.monotonic() + 30
        while "READY=1" not in got and time.monotonic() < deadline:
            got += receiver.recv(4096).decode().split("\n")
        assert "READY=1" in got, got
        assert f"MAINPID={proc.pid}" in got
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        receiver.settimeout(2)
        got += receiver.recv(4096).decode().split("\n")
        assert "WATCHDOG=1" in got
        proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in got:
            got += receiver.recv(4096).decode().split("\n")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        receiver.close()
