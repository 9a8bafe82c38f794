"""The state lock: an advisory lock on ``<state>/run/daemon.lock`` that a running daemon holds,
and how `ngb restore` (ngb/ops/backup.py) tells whether a daemon uses a state directory (the
lock is held, or its web port answers ``/healthz``)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any

LOCK_NAME = "daemon.lock"


class StateLock:
    """An advisory lock on ``<state>/run/daemon.lock`` held while a daemon runs (the file holds its
    pid). `ngb restore` refuses while it is held. Held through an open file: released when the
    daemon exits, however it exits."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._fh: Any = None

    def acquire(self) -> bool:
        """Take the lock; False (and nothing held) when another process or daemon holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the daemon's life
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def daemon_holding(run_dir: Path) -> str | None:
    """Who holds the state lock ("pid N"), or None when no daemon does."""
    path = run_dir / LOCK_NAME
    if not path.exists():
        return None
    try:
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                pid = fh.read().strip()
                return f"pid {pid}" if pid else "another process"
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def daemon_running(config: Any) -> str | None:
    """Why we think a daemon uses this state directory now (None: none does)."""
    holder = daemon_holding(config.run_dir)
    if holder is not None:
        return f"a daemon ({holder}) holds {config.run_dir / LOCK_NAME}"
    import httpx

    host = f"[{config.web_host}]" if ":" in config.web_host else config.web_host
    try:
        r = httpx.get(f"http://{host}:{config.web_port}/healthz", timeout=2)
        body = r.json()
    except (httpx.HTTPError, ValueError):
        return None
    if isinstance(body, dict) and "ok" in body:  # ngb's /healthz answers {"ok": ...}
        return f"a daemon answers /healthz on {host}:{config.web_port}"
    return None
