from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trio

from ngb.api_token import client_token
from ngb.config import load_config
from ngb.daemon import Daemon
from ngb.sandbox.image import ensure_image
from tests.fakes.agent import FakeBehaviour, FakeLauncher


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(tmp_path: Path, **env: str) -> Any:
    base = {
        "NGB_STATE_DIR": str(tmp_path / "state"),
        "NGB_WEB_PORT": str(free_port()),
        "NGB_MOUNT_ALLOWLIST": str(tmp_path / "no-allowlist.toml"),
        "NGB_IDLE_TIMEOUT": "0.3",
    }
    base.update(env)
    return load_config(None, env=base)


def api_headers(config: Any) -> dict[str, str]:
    """The Authorization header an `ngb` command on this host sends to the daemon of `config` (a
    Config, or just its state dir): the configured token, else the one the daemon generated into
    its state dir (so call it after the daemon started)."""
    if isinstance(config, str | Path):
        config = SimpleNamespace(state_dir=Path(config), api_token=None)
    return {"Authorization": f"Bearer {client_token(config, env={})}"}


class Running:
    """A daemon in the test's nursery. `http` is signed in as the local `ngb` commands are (the
    generated token) unless the test configured its own NGB_API_TOKEN: then it sends none, and
    the test does what a client of that token would."""

    def __init__(self, daemon: Daemon, launcher: FakeLauncher) -> None:
        self.daemon = daemon
        self.launcher = launcher
        cfg = daemon.config
        self.base_url = f"http://127.0.0.1:{cfg.web_port}"
        assert daemon.web_token is not None
        self.token = daemon.web_token.value
        headers = {} if daemon.web_token.configured else {"Authorization": f"Bearer {self.token}"}
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=10)

    def anonymous(self) -> httpx.AsyncClient:
        """A client without the token (the caller closes it)."""
        return httpx.AsyncClient(base_url=self.base_url, timeout=10)

    async def post(self, chat: str, text: str, sender: str = "alice") -> int:
        r = await self.http.post(f"/api/chats/{chat}/messages", json={"sender": sender, "text": text})
        assert r.status_code == 202, r.text
        return int(r.json()["id"])

    async def history(self, chat: str = "main", after: int = 0) -> list[dict[str, Any]]:
        r = await self.http.get(f"/api/chats/{chat}/messages", params={"after": after})
        assert r.status_code == 200, r.text
        return list(r.json())

    async def wait_bot_replies(self, chat: str, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        with trio.fail_after(timeout):
            while True:
                bot = [m for m in await self.history(chat) if m["from_bot"]]
                if len(bot) >= count:
                    return bot
                await trio.sleep(0.02)


@pytest.fixture
async def run_daemon(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    async with trio.open_nursery() as nursery:
        started: list[Running] = []

        async def start(behaviour: FakeBehaviour | None = None, *, state: Path | None = None, **env: str) -> Running:
            config = make_config(state or tmp_path, **env)
            launcher = FakeLauncher(behaviour)
            daemon = Daemon(config, launcher_factory=lambda d: launcher)
            await nursery.start(daemon.run)
            running = Running(daemon, launcher)
            started.append(running)
            return running

        yield start
        for r in started:
            await r.http.aclose()
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="session")
def docker_client():
    """The real Docker engine. The test command starts it; a missing engine is a failure, not a skip."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"no Docker engine (scripts/test.sh starts one): {exc}")
    return client


@pytest.fixture(scope="session")
def agent_image(docker_client) -> str:
    """The agent image, built on a fresh machine (minutes), else found in ~0.05 s."""
    lines: list[str] = []
    image_id = ensure_image(progress=lines.append)
    print("\n".join(lines))
    return image_id


# -- markers and hangs -----------------------------------------------------------------------------
# A test that uses the Docker engine or the agent image is marked `docker` (the quick set and the
# compat runs leave those out): checked at collection, so a forgotten marker is an error.
_DOCKER_FIXTURES = frozenset({"docker_client", "agent_image", "private_engine"})
# How long one trio test may run before it is cancelled and reported by name (pyproject's
# `timeout`, or a test's @pytest.mark.timeout(N)). pytest-timeout's own signal would land inside
# trio's loop and break every later test, so for trio tests it runs only as a last resort (thread
# method: every stack, then exit) a minute later, e.g. for a fixture whose teardown hangs.
_TRIO_HANG_MARGIN = 60.0


class TestHung(Exception):
    """A trio test ran past its time limit (it was cancelled; the message names it)."""


@pytest.hookimpl(trylast=True)  # after pytest-trio marked the async tests
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items
                if _DOCKER_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("docker")]
    if unmarked:
        raise pytest.UsageError("tests that use Docker must be marked docker: " + ", ".join(unmarked))
    for item in items:
        obj = getattr(item, "obj", None)
        if item.get_closest_marker("trio") is None or obj is None or hasattr(obj, "hypothesis"):
            continue
        limit = _time_limit(item)
        if limit > 0:
            item.obj = _cancelled_after(obj, limit, item.nodeid)  # type: ignore[attr-defined]
            item.add_marker(pytest.mark.timeout(limit + _TRIO_HANG_MARGIN, method="thread"), append=False)


def _time_limit(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout") or 0)


def _cancelled_after(test: Callable[..., Any], limit: float, nodeid: str) -> Callable[..., Any]:
    """The test, cancelled after ``limit`` seconds of wall-clock time (a thread keeps the time:
    tests on trio's mock clock run hours of virtual time in a second)."""
    import functools
    import threading

    @functools.wraps(test)
    async def guarded(**kwargs: Any) -> None:
        token = trio.lowlevel.current_trio_token()
        finished, hung = threading.Event(), threading.Event()
        with trio.CancelScope() as scope:

            def watch() -> None:
                if not finished.wait(limit):
                    hung.set()
                    try:
                        token.run_sync_soon(scope.cancel)
                    except trio.RunFinishedError:
                        pass

            threading.Thread(target=watch, name=f"hang guard {nodeid}", daemon=True).start()
            try:
                await test(**kwargs)
            finally:
                finished.set()
        if hung.is_set() and scope.cancelled_caught:
            raise TestHung(f"{nodeid} still running after {limit:g} s: cancelled (a hang?)")

    return guarded


@pytest.fixture(scope="session")
def dovecot() -> Any:
    """Debian's Dovecot (IMAP + LMTP) on loopback, rootless, for the session (tests/mail_servers.py).
    The test command installs it; missing, the email tests fail. Its folder is not under pytest's
    tmp dirs: those are 0700 root's, and Dovecot runs as nobody."""
    import shutil
    import tempfile

    from tests.mail_servers import Dovecot

    folder = Path(tempfile.mkdtemp(prefix="ngb-dovecot-"))
    server = Dovecot.start(folder)
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def border_smtp(dovecot: Any) -> Any:
    """aiosmtpd in this process: stamps Authentication-Results, relays into the Dovecot's LMTP."""
    from tests.mail_servers import BorderSmtp

    server = BorderSmtp.start(dovecot.lmtp_port)
    yield server
    server.stop()
