"""SQLite state behind one owner.

One connection, WAL mode, used only from worker threads that hold a one-token CapacityLimiter, so
the trio loop never blocks on disk and no two statements interleave. Every public coroutine is one
transaction. Schema changes are numbered migrations applied in order from an empty database
(`PRAGMA user_version` records the last one applied).

Write errors that can pass (a locked database, a full disk) are retried with backoff and logged;
the caller only sees `StoreUnavailable` once the retry budget is spent, and nothing is written
half-way because each call is one transaction.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import attrs
import sqlite_utils
import trio

from .records import (
    Group,
    InboundMessage,
    Message,
    OutboxItem,
    OutboxState,
    SenderSummary,
    Task,
    TaskRun,
    TaskStatus,
    channel_of,
    converter,
    format_time,
    parse_time,
    utcnow,
)

log = logging.getLogger(__name__)
R = TypeVar("R")

MIGRATIONS: list[str] = [
    # 1: the core tables
    """
    CREATE TABLE groups (
        chat TEXT PRIMARY KEY,
        folder TEXT NOT NULL UNIQUE COLLATE NOCASE,
        is_main INTEGER NOT NULL DEFAULT 0,
        requires_trigger INTEGER NOT NULL DEFAULT 1,
        trigger TEXT,
        allowed_senders TEXT NOT NULL DEFAULT '[]',
        mounts TEXT NOT NULL DEFAULT '[]',
        added_at TEXT NOT NULL
    );
    CREATE TABLE chats (
        chat TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        name TEXT,
        last_message_at TEXT
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        chat TEXT NOT NULL,
        channel TEXT NOT NULL,
        platform_id TEXT,
        sender TEXT NOT NULL,
        sender_id TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        time TEXT NOT NULL,
        from_bot INTEGER NOT NULL DEFAULT 0,
        mentions_bot INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX messages_platform_id ON messages(channel, platform_id);
    CREATE INDEX messages_chat_id ON messages(chat, id);
    CREATE VIRTUAL TABLE messages_fts USING fts5(text, content='messages', content_rowid='id');
    CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);
    END;
    CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END;
    CREATE TABLE cursors (
        folder TEXT PRIMARY KEY,
        last_message_id INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        folder TEXT PRIMARY KEY,
        session_id TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        folder TEXT NOT NULL,
        chat TEXT NOT NULL,
        text TEXT NOT NULL,
        reply_to TEXT,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at TEXT NOT NULL,
        sent_at TEXT,
        message_id INTEGER
    );
    CREATE INDEX outbox_pending ON outbox(state, id);
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE failed_turns (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        folder TEXT NOT NULL,
        up_to_message INTEGER NOT NULL,
        reason TEXT NOT NULL,
        time TEXT NOT NULL
    );
    """,
    # 2: scheduled tasks and their runs
    """
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        folder TEXT NOT NULL,
        chat TEXT NOT NULL,
        prompt TEXT NOT NULL,
        schedule_kind TEXT NOT NULL,
        schedule_value TEXT NOT NULL,
        timezone TEXT NOT NULL DEFAULT 'UTC',
        context_mode TEXT NOT NULL DEFAULT 'group',
        status TEXT NOT NULL DEFAULT 'active',
        next_run TEXT,
        last_run TEXT,
        last_result TEXT,
        pre_script TEXT,
        created_by TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    );
    CREATE INDEX tasks_due ON tasks(status, next_run);
    CREATE TABLE task_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        outcome TEXT NOT NULL DEFAULT 'running',
        error TEXT,
        tokens INTEGER
    );
    CREATE INDEX task_runs_task ON task_runs(task_id, id);
    """,
    # 3: exactly-once task runs: the slot a run was claimed for is unique per task; a run is
    # 'queued' (claimed, not yet handed to the agent) or 'running' until it ends.
    """
    ALTER TABLE task_runs ADD COLUMN scheduled_for TEXT;
    ALTER TABLE task_runs ADD COLUMN result TEXT;
    CREATE UNIQUE INDEX task_runs_slot ON task_runs(task_id, scheduled_for);
    CREATE INDEX task_runs_open ON task_runs(outcome, task_id) WHERE outcome IN ('queued', 'running');
    """,
    # 4: per-group rate limits (NULL: the daemon's defaults)
    """
    ALTER TABLE groups ADD COLUMN sender_rate_per_minute INTEGER;
    ALTER TABLE groups ADD COLUMN group_rate_per_minute INTEGER;
    """,
    # 5: model token usage per UTC day, group and model (upsert-added by ngb/budgets.py); per-group
    # spending cap overrides (folder '*': the global caps; NULL: the config default; 0: no cap);
    # the budget notices already sent (one per group, cap and period)
    """
    CREATE TABLE usage (
        day TEXT NOT NULL,
        folder TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens INTEGER NOT NULL DEFAULT 0,
        cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
        requests INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (day, folder, model)
    ) WITHOUT ROWID;
    CREATE INDEX usage_folder_day ON usage(folder, day);
    CREATE TABLE budget_caps (
        folder TEXT PRIMARY KEY,
        daily_usd REAL,
        monthly_usd REAL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE budget_notices (
        folder TEXT NOT NULL,
        notice TEXT NOT NULL,
        sent_at TEXT NOT NULL,
        PRIMARY KEY (folder, notice)
    );
    """,
    # 6: senders not on a group's allow-list may reach its prompt as marked context (0: never)
    """
    ALTER TABLE groups ADD COLUMN unlisted_context INTEGER NOT NULL DEFAULT 0;
    """,
    # 7: usage also counts the 1-hour share of the cache writes (priced higher; cache_creation_tokens
    # stays the total) and server tool requests (web search, web fetch): ngb/budgets.py prices them
    """
    ALTER TABLE usage ADD COLUMN cache_creation_1h_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN web_search_requests INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN web_fetch_requests INTEGER NOT NULL DEFAULT 0;
    """,
    # 8: per chat, the newest platform message id a channel has stored (moved only after the store),
    # so its catch-up after a reconnect or a restart starts there (Discord, Slack, QQ)
    """
    CREATE TABLE channel_marks (
        chat TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        mark TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
]

RETRYABLE = ("database is locked", "database or disk is full", "disk I/O error", "database table is locked")


class StoreUnavailable(RuntimeError):
    """The database could not be written after retries (disk full, locked, I/O error)."""


def _message(row: dict[str, Any] | sqlite3.Row) -> Message:
    return Message(
        id=row["id"],
        chat=row["chat"],
        sender=row["sender"],
        text=row["text"],
        time=parse_time(row["time"]),
        from_bot=bool(row["from_bot"]),
        platform_id=row["platform_id"],
        sender_id=row["sender_id"],
        mentions_bot=bool(row["mentions_bot"]),
    )


def _group(row: dict[str, Any]) -> Group:
    data = dict(row)
    data["allowed_senders"] = tuple(json.loads(data["allowed_senders"]))
    data["mounts"] = tuple(json.loads(data["mounts"]))
    return converter.structure(data, Group)


def _group_row(group: Group) -> dict[str, Any]:
    row = converter.unstructure(group)
    row["is_main"] = int(group.is_main)
    row["requires_trigger"] = int(group.requires_trigger)
    row["unlisted_context"] = int(group.unlisted_context)
    row["allowed_senders"] = json.dumps(list(group.allowed_senders))
    row["mounts"] = json.dumps(list(group.mounts))
    return row


def _outbox(row: dict[str, Any]) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        chat=row["chat"],
        text=row["text"],
        folder=row["folder"],
        created_at=parse_time(row["created_at"]),
        state=OutboxState(row["state"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        reply_to=row["reply_to"],
    )


def _task(row: dict[str, Any]) -> Task:
    return converter.structure({k: v for k, v in row.items() if v is not None}, Task)


def _task_row(task: Task) -> dict[str, Any]:
    return converter.unstructure(task)


class Store:
    """The daemon's only door to SQLite."""

    backup_before_migrate = True  # see _migrate and ngb/ops/backup.py

    def __init__(self, path: Path, *, retries: int = 8, retry_base: float = 0.05) -> None:
        self.path = path
        self._retries = retries
        self._retry_base = retry_base
        self._limiter = trio.CapacityLimiter(1)
        self._conn: sqlite3.Connection | None = None
        self.db: sqlite_utils.Database | None = None
        self.write_errors = 0
        self._ingest_queue: list[tuple[InboundMessage, list[Any], trio.Event]] = []
        self._ingest_flushing = False

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
        self._migrate()

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
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        assert self._conn is not None
        current = self.schema_version
        if 0 < current < len(MIGRATIONS) and self.backup_before_migrate:
            # A copy of the database (only) in state/backups/ first; no copy, no migration.
            from .db_copy import pre_migration_backup

            pre_migration_backup(self._conn, self.path, current, len(MIGRATIONS))
        for number, script in enumerate(MIGRATIONS, start=1):
            if number <= current:
                continue
            log.info("store: applying migration %d", number)
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(script):
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {number}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

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

    def run_sync(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        return self._tx(fn)

    # -- messages --------------------------------------------------------------------------
    @staticmethod
    def _ingest(conn: sqlite3.Connection, msg: InboundMessage) -> tuple[Message, bool]:
        channel = channel_of(msg.chat)
        existing = conn.execute(
            "SELECT * FROM messages WHERE channel = ? AND platform_id = ?", (channel, msg.platform_id)
        ).fetchone()
        if existing is not None:
            return _message(dict(existing)), False
        at = format_time(msg.time)
        cur = conn.execute(
            "INSERT INTO messages (chat, channel, platform_id, sender, sender_id, text, time, from_bot, mentions_bot)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
            (msg.chat, channel, msg.platform_id, msg.sender, msg.sender_id, msg.text, at, int(msg.mentions_bot)),
        )
        conn.execute(
            "INSERT INTO chats (chat, channel, last_message_at) VALUES (?, ?, ?)"
            " ON CONFLICT(chat) DO UPDATE SET last_message_at = excluded.last_message_at",
            (msg.chat, channel, at),
        )
        # The row is exactly what was written: build it here instead of reading it back.
        message = Message(
            id=int(cur.lastrowid or 0),
            chat=msg.chat,
            sender=msg.sender,
            text=msg.text,
            time=parse_time(at),
            from_bot=False,
            platform_id=msg.platform_id,
            sender_id=msg.sender_id,
            mentions_bot=bool(msg.mentions_bot),
        )
        return message, True

    def _ingest_batch(self, batch: list[InboundMessage]) -> list[tuple[Message, bool] | BaseException]:
        """Store a batch in one transaction; if one message fails for a reason of its own, store
        each message in its own transaction so only that one fails."""
        try:
            return list(self._tx(lambda c: [self._ingest(c, m) for m in batch]))
        except StoreUnavailable:
            raise
        except Exception:
            if len(batch) == 1:
                raise
        results: list[tuple[Message, bool] | BaseException] = []
        for m in batch:
            try:
                results.append(self._tx(lambda c, m=m: self._ingest(c, m)))
            except StoreUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - handed to that message's caller
                results.append(exc)
        return results

    async def ingest(self, msg: InboundMessage) -> tuple[Message, bool]:
        """Store an inbound message; idempotent on (channel, platform id). Returns (message, is_new)
        only once the message is committed.

        Group commit: while one batch is being written, the messages that arrive meanwhile queue
        up and are written together in the next transaction (one thread hop, one commit for all of
        them). Nobody's call returns before the commit that holds its message, so "stored first"
        holds for each message exactly as with one transaction per message."""
        slot: list[Any] = []
        done = trio.Event()
        self._ingest_queue.append((msg, slot, done))
        # Shielded (bounded by the store's retry budget): a caller in the queue may be handed the
        # writer's role, and the messages of other callers must not be stranded by its cancellation.
        with trio.CancelScope(shield=True):
            if self._ingest_flushing:
                await done.wait()  # woken with our result, or to take over as the writer
            if not slot:
                self._ingest_flushing = True
                try:
                    while not slot:  # write until our own message is committed, then hand over
                        pending = self._ingest_queue[:512]
                        del self._ingest_queue[:512]
                        try:
                            results: list[Any] = await trio.to_thread.run_sync(
                                self._ingest_batch, [p[0] for p in pending], limiter=self._limiter
                            )
                        except BaseException as exc:  # noqa: BLE001 - every caller of the batch sees it
                            results = [exc] * len(pending)
                        for (_, their_slot, their_done), result in zip(pending, results, strict=True):
                            their_slot.append(result)
                            their_done.set()
                finally:
                    if self._ingest_queue:
                        self._ingest_queue[0][2].set()  # the next in line writes; the flag stays set
                    else:
                        self._ingest_flushing = False
        result = slot[0]
        if isinstance(result, BaseException):
            raise result
        return result  # type: ignore[no-any-return]

    async def messages_after(self, chat: str, after: int, limit: int = 200) -> list[Message]:
        def q(c: sqlite3.Connection) -> list[Message]:
            if after <= 0:
                rows = c.execute(
                    "SELECT * FROM (SELECT * FROM messages WHERE chat = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
                    (chat, limit),
                ).fetchall()
            else:
                rows = c.execute(
                    "SELECT * FROM messages WHERE chat = ? AND id > ? ORDER BY id LIMIT ?", (chat, after, limit)
                ).fetchall()
            return [_message(dict(r)) for r in rows]

        return await self.run(q)

    async def message(self, message_id: int) -> Message | None:
        def q(c: sqlite3.Connection) -> Message | None:
            row = c.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
            return _message(dict(row)) if row else None

        return await self.run(q)

    async def search(self, query: str, *, chat: str | None = None, limit: int = 50, offset: int = 0) -> list[Message]:
        """Full-text search (FTS5 syntax; a plain phrase is quoted so user text never errors)."""
        phrase = '"' + query.replace("\x00", " ").replace('"', '""') + '"'  # NUL would end FTS5's string

        def q(c: sqlite3.Connection) -> list[Message]:
            # Newest first straight from the FTS index (FTS5 walks rowids in descending order and
            # stops at the page), then the rows by primary key: a word in a third of 1,000,000
            # messages costs a page, not a sort of every match (bench/bench_fts.py).
            if chat:
                sql = (
                    "SELECT m.* FROM messages_fts f CROSS JOIN messages m ON m.id = f.rowid"
                    " WHERE messages_fts MATCH ? AND m.chat = ? ORDER BY f.rowid DESC LIMIT ? OFFSET ?"
                )
                args: tuple[Any, ...] = (phrase, chat, limit, offset)
            else:
                sql = (
                    "SELECT m.* FROM (SELECT rowid AS id FROM messages_fts WHERE messages_fts MATCH ?"
                    " ORDER BY rowid DESC LIMIT ? OFFSET ?) f JOIN messages m ON m.id = f.id ORDER BY m.id DESC"
                )
                args = (phrase, limit, offset)
            return [_message(dict(r)) for r in c.execute(sql, args).fetchall()]

        return await self.run(q)

    async def chats(self) -> list[dict[str, Any]]:
        def q(c: sqlite3.Connection) -> list[dict[str, Any]]:
            return [dict(r) for r in c.execute("SELECT * FROM chats ORDER BY chat").fetchall()]

        return await self.run(q)

    async def ensure_chat(self, chat: str, name: str | None = None) -> None:
        def q(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO chats (chat, channel, name) VALUES (?, ?, ?) ON CONFLICT(chat) DO NOTHING",
                (chat, channel_of(chat), name),
            )

        await self.run(q)

    # -- groups ----------------------------------------------------------------------------
    async def groups(self) -> list[Group]:
        return await self.run(lambda c: [_group(dict(r)) for r in c.execute("SELECT * FROM groups ORDER BY added_at")])

    async def group(self, chat: str) -> Group | None:
        def q(c: sqlite3.Connection) -> Group | None:
            row = c.execute("SELECT * FROM groups WHERE chat = ?", (chat,)).fetchone()
            return _group(dict(row)) if row else None

        return await self.run(q)

    async def group_by_folder(self, folder: str) -> Group | None:
        def q(c: sqlite3.Connection) -> Group | None:
            row = c.execute("SELECT * FROM groups WHERE folder = ?", (folder,)).fetchone()
            return _group(dict(row)) if row else None

        return await self.run(q)

    async def add_group(self, group: Group) -> None:
        """Register a chat. Raises ValueError when the chat or folder is taken."""

        def q(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM groups WHERE chat = ?", (group.chat,)).fetchone():
                raise ValueError(f"chat {group.chat} is already registered")
            if c.execute("SELECT 1 FROM groups WHERE folder = ?", (group.folder,)).fetchone():
                raise ValueError(f"folder {group.folder!r} is already used by another group")
            if group.is_main:
                c.execute("UPDATE groups SET is_main = 0")
            row = _group_row(group)
            cols = ", ".join(row)
            c.execute(f"INSERT INTO groups ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
            # The agent answers what arrives from now on, not the chat's whole past.
            last = c.execute("SELECT COALESCE(MAX(id), 0) FROM messages WHERE chat = ?", (group.chat,)).fetchone()[0]
            c.execute(
                "INSERT INTO cursors (folder, last_message_id) VALUES (?, ?)"
                " ON CONFLICT(folder) DO UPDATE SET last_message_id = excluded.last_message_id",
                (group.folder, last),
            )
            c.execute(
                "INSERT INTO chats (chat, channel) VALUES (?, ?) ON CONFLICT(chat) DO NOTHING",
                (group.chat, channel_of(group.chat)),
            )

        await self.run(q)

    async def recent_senders(self, chat: str, *, scan: int = 5000, limit: int = 100) -> list[SenderSummary]:
        """Who wrote in the chat lately (its newest `scan` inbound messages), newest first: each
        sender id once, with the display name of their newest message."""

        def q(c: sqlite3.Connection) -> list[SenderSummary]:
            rows = c.execute(
                "SELECT sender_id, sender, time, MAX(id) AS last_id, COUNT(*) AS n FROM"
                " (SELECT id, sender_id, sender, time FROM messages WHERE chat = ? AND from_bot = 0"
                "  ORDER BY id DESC LIMIT ?)"
                " GROUP BY sender_id ORDER BY last_id DESC LIMIT ?",
                (chat, scan, limit),
            ).fetchall()
            return [
                SenderSummary(sender_id=r["sender_id"], name=r["sender"], messages=int(r["n"]), last_time=parse_time(r["time"]))
                for r in rows
            ]

        return await self.run(q)

    async def prune_unregistered(self, keep: int, keep_per_chat: int) -> int:
        """Delete the oldest messages of chats that are not registered (the local chat excepted)
        beyond `keep_per_chat` per chat and `keep` in all; returns how many went."""

        def q(c: sqlite3.Connection) -> int:
            unregistered = (
                "SELECT id, chat FROM messages WHERE chat NOT IN (SELECT chat FROM groups)"
                " AND chat NOT LIKE 'local:%'"
            )
            gone = c.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER"
                f" (PARTITION BY chat ORDER BY id DESC) AS rn FROM ({unregistered})) WHERE rn > ?)",
                (keep_per_chat,),
            ).rowcount
            gone += c.execute(
                f"DELETE FROM messages WHERE id IN (SELECT id FROM ({unregistered}) ORDER BY id DESC LIMIT -1 OFFSET ?)",
                (keep,),
            ).rowcount
            return int(gone)

        return await self.run(q)

    async def update_group(self, group: Group) -> None:
        def q(c: sqlite3.Connection) -> None:
            row = _group_row(group)
            sets = ", ".join(f"{k} = ?" for k in row if k != "chat")
            c.execute(f"UPDATE groups SET {sets} WHERE chat = ?", (*[v for k, v in row.items() if k != "chat"], group.chat))

        await self.run(q)

    async def remove_group(self, chat: str) -> Group | None:
        def q(c: sqlite3.Connection) -> Group | None:
            row = c.execute("SELECT * FROM groups WHERE chat = ?", (chat,)).fetchone()
            if row is None:
                return None
            c.execute("DELETE FROM groups WHERE chat = ?", (chat,))
            return _group(dict(row))

        return await self.run(q)

    # -- what channels keep: the newest stored platform id per chat, the bot's own messages ------
    async def channel_marks(self, channel: str) -> dict[str, str]:
        """chat -> the newest platform message id the channel stored there (channels.common.NewestStored)."""

        def q(c: sqlite3.Connection) -> dict[str, str]:
            rows = c.execute("SELECT chat, mark FROM channel_marks WHERE channel = ?", (channel,)).fetchall()
            return {str(r[0]): str(r[1]) for r in rows}

        return await self.run(q)

    async def set_channel_mark(self, channel: str, chat: str, mark: str) -> None:
        """Keep ``mark`` as the chat's newest stored platform id (the channel orders its own ids)."""
        await self.run(lambda c: c.execute(
            "INSERT INTO channel_marks (chat, channel, mark, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(chat) DO UPDATE SET channel = excluded.channel, mark = excluded.mark,"
            " updated_at = excluded.updated_at",
            (chat, channel, mark, format_time(utcnow())),
        ))

    async def sent_by_bot(self, channel: str, platform_id: str) -> bool:
        """Whether the channel's message ``platform_id`` is one the bot sent (a reply to it is a trigger)."""

        def q(c: sqlite3.Connection) -> bool:
            row = c.execute("SELECT from_bot FROM messages WHERE channel = ? AND platform_id = ?",
                            (channel, platform_id)).fetchone()
            return bool(row and row[0])

        return await self.run(q)

    # -- cursors, turns, outbox ------------------------------------------------------------
    async def cursor(self, folder: str) -> int:
        def q(c: sqlite3.Connection) -> int:
            row = c.execute("SELECT last_message_id FROM cursors WHERE folder = ?", (folder,)).fetchone()
            return int(row[0]) if row else 0

        return await self.run(q)

    @staticmethod
    def _advance(c: sqlite3.Connection, folder: str, to: int) -> None:
        c.execute(
            "INSERT INTO cursors (folder, last_message_id) VALUES (?, ?) ON CONFLICT(folder)"
            " DO UPDATE SET last_message_id = MAX(last_message_id, excluded.last_message_id)",
            (folder, to),
        )

    async def pending_input(self, folder: str, chat: str, after: int | None = None, limit: int = 500) -> list[Message]:
        """Messages of the group's chat the agent has not answered yet (not written by the bot)."""

        def q(c: sqlite3.Connection) -> list[Message]:
            start = after
            if start is None:
                row = c.execute("SELECT last_message_id FROM cursors WHERE folder = ?", (folder,)).fetchone()
                start = int(row[0]) if row else 0
            rows = c.execute(
                "SELECT * FROM (SELECT * FROM messages WHERE chat = ? AND id > ? AND from_bot = 0"
                " ORDER BY id DESC LIMIT ?) ORDER BY id",
                (chat, start, limit),
            ).fetchall()
            return [_message(dict(r)) for r in rows]

        return await self.run(q)

    async def commit_reply(
        self, folder: str, chat: str, text: str, cursor_to: int, reply_to: str | None = None
    ) -> int:
        """One transaction: queue the reply in the outbox and move the group's cursor."""

        def q(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO outbox (folder, chat, text, reply_to, created_at) VALUES (?, ?, ?, ?, ?)",
                (folder, chat, text, reply_to, format_time(utcnow())),
            )
            self._advance(c, folder, cursor_to)
            return int(cur.lastrowid or 0)

        return await self.run(q)

    async def advance_cursor(self, folder: str, to: int) -> None:
        await self.run(lambda c: self._advance(c, folder, to))

    async def queue_message(self, folder: str, chat: str, text: str) -> int:
        """Queue a message that answers no input (a tool's send_message, an error notice)."""

        def q(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO outbox (folder, chat, text, created_at) VALUES (?, ?, ?, ?)",
                (folder, chat, text, format_time(utcnow())),
            )
            return int(cur.lastrowid or 0)

        return await self.run(q)

    async def record_failed_turn(self, folder: str, up_to: int, reason: str, notice: tuple[str, str] | None) -> None:
        """Give up on a batch: remember why, move the cursor past it, and queue a notice, atomically."""

        def q(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO failed_turns (folder, up_to_message, reason, time) VALUES (?, ?, ?, ?)",
                (folder, up_to, reason, format_time(utcnow())),
            )
            self._advance(c, folder, up_to)
            if notice:
                c.execute(
                    "INSERT INTO outbox (folder, chat, text, created_at) VALUES (?, ?, ?, ?)",
                    (folder, notice[0], notice[1], format_time(utcnow())),
                )

        await self.run(q)

    async def failed_turns(self, folder: str) -> list[dict[str, Any]]:
        return await self.run(
            lambda c: [dict(r) for r in c.execute("SELECT * FROM failed_turns WHERE folder = ? ORDER BY id", (folder,))]
        )

    async def pending_outbox(self, limit: int = 100) -> list[OutboxItem]:
        def q(c: sqlite3.Connection) -> list[OutboxItem]:
            rows = c.execute("SELECT * FROM outbox WHERE state = 'pending' ORDER BY id LIMIT ?", (limit,)).fetchall()
            return [_outbox(dict(r)) for r in rows]

        return await self.run(q)

    async def outbox_items(self, chat: str, limit: int = 100) -> list[OutboxItem]:
        """The chat's outbox rows in any state (sent, pending, given up), oldest first."""

        def q(c: sqlite3.Connection) -> list[OutboxItem]:
            rows = c.execute("SELECT * FROM outbox WHERE chat = ? ORDER BY id LIMIT ?", (chat, limit)).fetchall()
            return [_outbox(dict(r)) for r in rows]

        return await self.run(q)

    async def outbox_depth(self) -> int:
        return await self.run(lambda c: int(c.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]))

    @staticmethod
    def _store_bot_message(c: sqlite3.Connection, item: OutboxItem, sender: str, platform_id: str | None) -> int:
        channel = channel_of(item.chat)
        cur = c.execute(
            "INSERT INTO messages (chat, channel, platform_id, sender, text, time, from_bot) VALUES (?, ?, ?, ?, ?, ?, 1)",
            (item.chat, channel, platform_id or f"ngb-out-{item.id}", sender, item.text, format_time(utcnow())),
        )
        return int(cur.lastrowid or 0)

    async def deliver(self, item: OutboxItem, sender: str, platform_id: str | None) -> Message:
        """Mark an outbox row sent and store the bot's message in the chat history, atomically.

        For the local chat this *is* the delivery (readers poll the history), so it is exactly once.
        For remote channels it runs after the platform acknowledged the send."""

        def q(c: sqlite3.Connection) -> Message:
            row = c.execute("SELECT state, message_id FROM outbox WHERE id = ?", (item.id,)).fetchone()
            if row is not None and row["state"] == OutboxState.SENT and row["message_id"]:
                got = c.execute("SELECT * FROM messages WHERE id = ?", (row["message_id"],)).fetchone()
                return _message(dict(got))
            message_id = self._store_bot_message(c, item, sender, platform_id)
            c.execute(
                "UPDATE outbox SET state = 'sent', sent_at = ?, attempts = attempts + 1, message_id = ? WHERE id = ?",
                (format_time(utcnow()), message_id, item.id),
            )
            c.execute(
                "UPDATE chats SET last_message_at = ? WHERE chat = ?", (format_time(utcnow()), item.chat)
            )
            return _message(dict(c.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()))

        return await self.run(q)

    async def outbox_attempt_failed(self, item_id: int, error: str, *, give_up: bool) -> None:
        def q(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, state = ? WHERE id = ?",
                (error[:2000], "failed" if give_up else "pending", item_id),
            )

        await self.run(q)

    # -- sessions --------------------------------------------------------------------------
    async def session_id(self, folder: str) -> str | None:
        def q(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT session_id FROM sessions WHERE folder = ?", (folder,)).fetchone()
            return str(row[0]) if row else None

        return await self.run(q)

    async def set_session(self, folder: str, session_id: str | None) -> None:
        def q(c: sqlite3.Connection) -> None:
            if session_id is None:
                c.execute("DELETE FROM sessions WHERE folder = ?", (folder,))
            else:
                c.execute(
                    "INSERT INTO sessions (folder, session_id, updated_at) VALUES (?, ?, ?) ON CONFLICT(folder)"
                    " DO UPDATE SET session_id = excluded.session_id, updated_at = excluded.updated_at",
                    (folder, session_id, format_time(utcnow())),
                )

        await self.run(q)

    # -- tasks -----------------------------------------------------------------------------
    async def add_task(self, task: Task) -> None:
        def q(c: sqlite3.Connection) -> None:
            row = _task_row(task)
            c.execute(
                f"INSERT INTO tasks ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
            )

        await self.run(q)

    async def update_task(self, task: Task) -> None:
        def q(c: sqlite3.Connection) -> None:
            row = _task_row(task)
            sets = ", ".join(f"{k} = ?" for k in row if k != "id")
            c.execute(f"UPDATE tasks SET {sets} WHERE id = ?", (*[v for k, v in row.items() if k != "id"], task.id))

        await self.run(q)

    async def task(self, task_id: str) -> Task | None:
        def q(c: sqlite3.Connection) -> Task | None:
            row = c.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            return _task(dict(row)) if row else None

        return await self.run(q)

    async def tasks(self, folder: str | None = None) -> list[Task]:
        def q(c: sqlite3.Connection) -> list[Task]:
            if folder is None:
                rows = c.execute("SELECT * FROM tasks ORDER BY created_at").fetchall()
            else:
                rows = c.execute("SELECT * FROM tasks WHERE folder = ? ORDER BY created_at", (folder,)).fetchall()
            return [_task(dict(r)) for r in rows]

        return await self.run(q)

    async def task_runs(self, task_id: str, limit: int = 50) -> list[TaskRun]:
        def q(c: sqlite3.Connection) -> list[TaskRun]:
            rows = c.execute(
                "SELECT * FROM task_runs WHERE task_id = ? ORDER BY id DESC LIMIT ?", (task_id, limit)
            ).fetchall()
            return [converter.structure({k: v for k, v in dict(r).items() if v is not None}, TaskRun) for r in rows]

        return await self.run(q)

    async def patch_task(self, task_id: str, changes: dict[str, Any]) -> Task | None:
        """Change some fields of a task (only those), in one transaction. Returns the new task."""

        def q(c: sqlite3.Connection) -> Task | None:
            if changes:
                row = {k: getattr(v, "value", v) for k, v in converter.unstructure(changes).items()}
                sets = ", ".join(f"{k} = ?" for k in row)
                c.execute(f"UPDATE tasks SET {sets} WHERE id = ?", (*row.values(), task_id))
            got = c.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            return _task(dict(got)) if got else None

        return await self.run(q)

    async def task_run_rows(self, task_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The run log of a task, newest first, as rows (with scheduled_for and result)."""
        return await self.run(
            lambda c: [
                dict(r)
                for r in c.execute(
                    "SELECT * FROM task_runs WHERE task_id = ? ORDER BY id DESC LIMIT ?", (task_id, limit)
                ).fetchall()
            ]
        )

    # -- the scheduler's side -----------------------------------------------------------------
    async def next_due(self) -> datetime | None:
        """The earliest next_run of an active task (an index lookup, cheap with 10k tasks)."""

        def q(c: sqlite3.Connection) -> datetime | None:
            row = c.execute(
                "SELECT MIN(next_run) FROM tasks WHERE status = 'active' AND next_run IS NOT NULL"
            ).fetchone()
            return parse_time(row[0]) if row and row[0] else None

        return await self.run(q)

    async def claim_due(
        self, now: datetime, next_after: Callable[[Task, datetime, datetime], datetime | None], limit: int = 500
    ) -> list[tuple[Task, int, datetime]]:
        """Claim every task due at `now`, in ONE transaction: for each, insert its TaskRun row for
        the slot (next_run) and move next_run past now (or complete a once task). Returns the
        (task, run id, slot) triples to hand to the actors. A task whose previous run is still queued or
        running gets a 'skipped' run for this slot instead (runs of one task never overlap). The
        unique (task_id, scheduled_for) index makes a second claim of a slot impossible."""

        def q(c: sqlite3.Connection) -> list[tuple[Task, int, datetime]]:
            at = format_time(now)
            rows = c.execute(
                "SELECT * FROM tasks WHERE status = 'active' AND next_run IS NOT NULL AND next_run <= ?"
                " ORDER BY next_run LIMIT ?",
                (at, limit),
            ).fetchall()
            claimed: list[tuple[Task, int, datetime]] = []
            for row in rows:
                task = _task(dict(row))
                slot = task.next_run
                assert slot is not None
                try:
                    nxt = next_after(task, slot, now)
                except Exception as exc:  # noqa: BLE001 - a broken schedule pauses its task only
                    log.error("scheduler: task %s has a broken schedule, pausing it: %s", task.id, exc)
                    c.execute(
                        "UPDATE tasks SET status = 'paused', last_result = ? WHERE id = ?",
                        (f"paused: broken schedule: {exc}"[:500], task.id),
                    )
                    continue
                status = TaskStatus.COMPLETED if nxt is None else TaskStatus.ACTIVE
                busy = c.execute(
                    "SELECT 1 FROM task_runs WHERE task_id = ? AND outcome IN ('queued', 'running') LIMIT 1",
                    (task.id,),
                ).fetchone()
                if busy:
                    cur = c.execute(
                        "INSERT OR IGNORE INTO task_runs (task_id, scheduled_for, started_at, ended_at, outcome, error)"
                        " VALUES (?, ?, ?, ?, 'skipped', 'the previous run had not finished')",
                        (task.id, format_time(slot), at, at),
                    )
                else:
                    cur = c.execute(
                        "INSERT OR IGNORE INTO task_runs (task_id, scheduled_for, started_at, outcome)"
                        " VALUES (?, ?, ?, 'queued')",
                        (task.id, format_time(slot), at),
                    )
                c.execute(
                    "UPDATE tasks SET next_run = ?, status = ?, last_run = ? WHERE id = ?",
                    (format_time(nxt) if nxt else None, status.value, at, task.id),
                )
                if cur.rowcount and not busy:
                    task = attrs.evolve(task, next_run=nxt, status=status, last_run=now)
                    claimed.append((task, int(cur.lastrowid or 0), slot))
                elif not cur.rowcount:
                    log.warning("scheduler: task %s slot %s was already claimed", task.id, format_time(slot))
            return claimed

        return await self.run(q)

    async def queued_runs(self, folder: str) -> list[tuple[int, Task]]:
        """Runs claimed for this group's tasks and not yet handed to the agent, oldest first."""

        def q(c: sqlite3.Connection) -> list[tuple[int, Task]]:
            rows = c.execute(
                "SELECT r.id AS run_id, t.* FROM task_runs r JOIN tasks t ON t.id = r.task_id"
                " WHERE r.outcome = 'queued' AND t.folder = ? ORDER BY r.id",
                (folder,),
            ).fetchall()
            out = []
            for r in rows:
                data = dict(r)
                run_id = data.pop("run_id")
                out.append((int(run_id), _task(data)))
            return out

        return await self.run(q)

    async def start_run(self, run_id: int) -> bool:
        """queued -> running, once: False when the run was already taken or ended."""

        def q(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "UPDATE task_runs SET outcome = 'running', started_at = ? WHERE id = ? AND outcome = 'queued'",
                (format_time(utcnow()), run_id),
            )
            return bool(cur.rowcount)

        return await self.run(q)

    async def finish_run(
        self, run_id: int, outcome: str, *, error: str | None = None, tokens: int | None = None, result: str | None = None
    ) -> None:
        """End a run (ok | error | skipped) and note the outcome on its task."""

        def q(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE task_runs SET outcome = ?, error = ?, tokens = ?, result = ?, ended_at = ?"
                " WHERE id = ? AND outcome IN ('queued', 'running')",
                (outcome, (error or None) and error[:2000], tokens, (result or None) and result[:2000],
                 format_time(utcnow()), run_id),
            )
            summary = outcome if not (error or result) else f"{outcome}: {error or result}"
            c.execute(
                "UPDATE tasks SET last_result = ? WHERE id = (SELECT task_id FROM task_runs WHERE id = ?)",
                (summary[:500], run_id),
            )

        await self.run(q)

    async def interrupt_runs(
        self, folder: str | None = None, notice: tuple[str, Callable[[list[str]], str]] | None = None
    ) -> list[str]:
        """Runs handed to an agent that is gone (the daemon or the actor restarted) are over: they
        are recorded as failed, never run again. Queued runs (never handed over) stay queued.
        Returns the interrupted runs' task ids. ``notice`` (chat, text for those ids) queues a
        message to that chat in the same transaction, so the group hears of it exactly once."""

        def q(c: sqlite3.Connection) -> list[str]:
            where = " WHERE outcome = 'running'"
            args: tuple[Any, ...] = ()
            if folder is not None:
                where += " AND task_id IN (SELECT id FROM tasks WHERE folder = ?)"
                args = (folder,)
            ids = [str(r[0]) for r in c.execute("SELECT task_id FROM task_runs" + where + " ORDER BY id", args)]
            if not ids:
                return []
            c.execute(
                "UPDATE task_runs SET outcome = 'error', ended_at = ?,"
                " error = 'interrupted: the daemon or the agent stopped before the run finished'" + where,
                (format_time(utcnow()), *args),
            )
            if notice is not None and folder is not None:
                c.execute(
                    "INSERT INTO outbox (folder, chat, text, created_at) VALUES (?, ?, ?, ?)",
                    (folder, notice[0], notice[1](ids), format_time(utcnow())),
                )
            return ids

        return await self.run(q)

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
    async def integrity_ok(self) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            return c.execute("PRAGMA quick_check").fetchone()[0] == "ok"

        return await trio.to_thread.run_sync(lambda: q(self._require_conn()), limiter=self._limiter)

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("the store is closed")
        return self._conn


def _split_sql(script: str) -> Sequence[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements: list[str] = []
    buf: list[str] = []
    for line in script.strip().splitlines():
        buf.append(line)
        candidate = "\n".join(buf).strip()
        if candidate.endswith(";") and sqlite3.complete_statement(candidate):
            statements.append(candidate)
            buf = []
    if "\n".join(buf).strip():
        statements.append("\n".join(buf).strip())
    return statements
