"""The store's one connection and how every statement reaches it.

One connection, WAL mode, used only from worker threads that hold a one-token CapacityLimiter, so
the trio loop never blocks on disk and no two statements interleave. Every public coroutine is one
transaction (`run`). Write errors that can pass (a locked database, a full disk) are retried with
backoff and logged; the caller only sees `StoreUnavailable` once the retry budget is spent, and
nothing is written half-way because each call is one transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
import trio

from .schema import migrate, schema_version

log = logging.getLogger("ngb.store")
R = TypeVar("R")

RETRYABLE = ("database is locked", "database or disk is full", "disk I/O error", "database table is locked")


class StoreUnavailable(RuntimeError):
    """The database could not be written after retries (disk full, locked, I/O error)."""


class StoreCore:
    """The connection, its lifecycle and the transaction runner the query mixins build on."""

    backup_before_migrate = True  # see schema.migrate and ngb/store/copy.py

    def __init__(self, path: Path, *, retries: int = 8, retry_base: float = 0.05) -> None:
        self.path = path
        self._retries = retries
        self._retry_base = retry_base
        self._limiter = trio.CapacityLimiter(1)
        self._conn: sqlite3.Connection | None = None
        self.db: sqlite_utils.Database | None = None
        self.write_errors = 0

    # -- lifecycle -------------------------------------------------------------------------
    def open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        self._conn = conn
        self.db = sqlite_utils.Database(conn)
        migrate(conn, self.path, backup_first=self.backup_before_migrate)

    async def open(self) -> None:
        await trio.to_thread.run_sync(self.open_sync, limiter=self._limiter)

    def close_sync(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # pragma: no cover - best effort on shutdown
                log.warning("store: checkpoint on close failed: %s", exc)
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        await trio.to_thread.run_sync(self.close_sync, limiter=self._limiter)

    @property
    def schema_version(self) -> int:
        assert self._conn is not None
        return schema_version(self._conn)

    # -- plumbing --------------------------------------------------------------------------
    def _tx(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """Run fn in one IMMEDIATE transaction, retrying transient failures."""
        conn = self._conn
        if conn is None:
            raise StoreUnavailable("the store is closed")
        delay = self._retry_base
        for attempt in range(self._retries + 1):
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                    conn.execute("COMMIT")
                    return result
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if not any(text in str(exc) for text in RETRYABLE):
                    raise
                self.write_errors += 1
                if attempt == self._retries:
                    raise StoreUnavailable(f"database write failed after {attempt + 1} tries: {exc}") from exc
                log.warning("store: %s; retrying in %.2fs (try %d)", exc, delay, attempt + 1)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    async def run(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """Run fn(conn) in one transaction on the store's thread."""
        return await trio.to_thread.run_sync(self._tx, fn, limiter=self._limiter)

    async def select(self, from_row: Callable[[sqlite3.Row], R], sql: str, params: tuple[Any, ...] = ()) -> list[R]:
        """The records of one query's rows, in its order (`from_row`: a converter of rows.py)."""
        return await self.run(lambda c: [from_row(r) for r in c.execute(sql, params).fetchall()])

    def run_sync(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        return self._tx(fn)

    # -- meta --------------------------------------------------------------------------------
    async def meta(self, key: str) -> str | None:
        def q(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return str(row[0]) if row else None

        return await self.run(q)

    async def set_meta(self, key: str, value: str) -> None:
        await self.run(
            lambda c: c.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )

    # -- maintenance -----------------------------------------------------------------------
    async def ping(self) -> None:
        """One trivial statement through the store's thread (the web's /healthz)."""
        await self.run(lambda c: c.execute("SELECT 1").fetchone())

    async def integrity_ok(self) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            return bool(c.execute("PRAGMA quick_check").fetchone()[0] == "ok")

        return await trio.to_thread.run_sync(lambda: q(self._require_conn()), limiter=self._limiter)

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("the store is closed")
        return self._conn
