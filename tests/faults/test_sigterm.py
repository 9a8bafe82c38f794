"""SIGTERM to a daemon process (the fake agent, in the daemon's own process) while 5 turns run: it
exits 0 within the grace period and the 5 turns finished (their replies are stored)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import api_headers, free_port

ROOT = Path(__file__).resolve().parent.parent.parent

DAEMON = """
import logging, sys, trio
from pathlib import Path
from tests.conftest import make_config
from tests.fakes.agent import FakeBehaviour, FakeLauncher
from ngb.daemon import Daemon
logging.basicConfig(level=logging.INFO)
config = make_config(Path(sys.argv[1]), NGB_WEB_PORT=sys.argv[2], NGB_SHUTDOWN_GRACE="5", NGB_IDLE_TIMEOUT="30")
launcher = FakeLauncher(FakeBehaviour(delay=float(sys.argv[3])))
trio.run(Daemon(config, launcher_factory=lambda d: launcher).run)
"""


@pytest.mark.slow
@pytest.mark.parametrize("delay", [1.5])
def test_sigterm_during_five_turns_exits_0_within_grace(tmp_path: Path, delay: float) -> None:
    port = free_port()
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-c", DAEMON, str(tmp_path), str(port), str(delay)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        deadline = time.monotonic() + 20
        while True:
            try:
                if http.get("/healthz").status_code == 200:
                    http.headers.update(api_headers(tmp_path / "state"))  # the token it generated
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)
        for i in range(5):
            r = http.post("/api/groups", json={"chat": f"local:s{i}", "folder": f"s{i}", "requires_trigger": False})
            assert r.status_code == 201, r.text
        for i in range(5):
            assert http.post(f"/api/chats/s{i}/messages", json={"sender": "a", "text": f"q{i}"}).status_code == 202
        deadline = time.monotonic() + 10
        while sum(1 for a in http.get("/debug/actors").json() if a.get("state") == "running") < 5:
            assert time.monotonic() < deadline, http.get("/debug/actors").text[:2000]
            time.sleep(0.02)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(5 + 3)
        took = time.monotonic() - t0
        assert code == 0, (tmp_path / "daemon.log").read_text()[-3000:]
        assert took < 5, f"exit took {took:.1f}s"
        conn = sqlite3.connect(tmp_path / "state" / "ngb.db")
        for i in range(5):
            rows = conn.execute("SELECT text FROM messages WHERE chat = ? AND from_bot = 1", (f"local:s{i}",)).fetchall()
            assert [r[0] for r in rows] == [f"Echo: q{i}"], (i, rows)
        conn.close()
        http.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
