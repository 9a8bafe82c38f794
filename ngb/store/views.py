"""The web's read views: a page of a chat's history, full-text search with a hit count, the
backlog per group, outbox and task-run counts. Each is one read on the store's thread, like every
other Store method, shaped for the API's pages (ngb/web/ reads them through ngb/web/queries.py)."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..records import Message, TaskRun
from .attachments import with_attachments
from .core import StoreCore
from .rows import message_from_row, task_run_from_row

SEARCH_COUNT_CAP = 1000


def fts_phrase(query: str) -> str:
    """User text as an FTS5 query that never errors: each word a quoted prefix-free token, all
    required (AND). 'deploy friday' finds messages that contain both words."""
    # NUL ends an SQL string inside FTS5's parser ("unterminated string", a 500): it is a blank here.
    words = [w for w in query.replace("\x00", " ").split() if w]
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


def _newest(
    c: sqlite3.Connection, table: str, column: str, value: Any, *, before: int | None, limit: int
) -> tuple[list[sqlite3.Row], bool]:
    """A page of `table`'s rows whose `column` is `value`: the `limit` newest (by id, newest
    first) older than id `before` (None: from the newest), and whether there are older ones."""
    older = "" if before is None else " AND id < ?"
    params = (value,) + (() if before is None else (before,)) + (limit + 1,)
    rows = c.execute(f"SELECT * FROM {table} WHERE {column} = ?{older} ORDER BY id DESC LIMIT ?", params).fetchall()
    return rows[:limit], len(rows) > limit


class ViewsMixin(StoreCore):
    """The Store's read views for the web API."""

    async def message_page(self, chat: str, *, before: int | None, limit: int) -> tuple[list[Message], bool]:
        """The `limit` newest messages of a chat older than `before` (oldest first), and whether
        there are older ones."""

        def q(c: sqlite3.Connection) -> tuple[list[Message], bool]:
            rows, more = _newest(c, "messages", "chat", chat, before=before, limit=limit)
            return with_attachments(c, [message_from_row(r) for r in reversed(rows)]), more

        return await self.run(q)

    async def search_page(
        self, query: str, *, chat: str | None, limit: int, offset: int
    ) -> tuple[list[Message], int, bool]:
        """Full-text search over the FTS index, newest first, with the number of hits: exact up to
        SEARCH_COUNT_CAP, else that cap and False (counting every hit of a common word costs a walk
        of its whole posting list; a page costs only the page)."""
        phrase = fts_phrase(query)

        def q(c: sqlite3.Connection) -> tuple[list[Message], int, bool]:
            # Newest first straight from the index (FTS5 walks rowids in descending order and stops at
            # the page); CROSS JOIN keeps the index as the outer loop when filtering by chat.
            if chat:
                hits = (
                    "SELECT f.rowid AS id FROM messages_fts f CROSS JOIN messages m ON m.id = f.rowid"
                    " WHERE messages_fts MATCH ? AND m.chat = ?"
                )
                args: tuple[Any, ...] = (phrase, chat)
            else:
                hits = "SELECT rowid AS id FROM messages_fts WHERE messages_fts MATCH ?"
                args = (phrase,)
            total = c.execute(
                f"SELECT COUNT(*) FROM ({hits} LIMIT ?)", (*args, SEARCH_COUNT_CAP + 1)
            ).fetchone()[0]
            rows = c.execute(
                f"SELECT m.* FROM ({hits} ORDER BY id DESC LIMIT ? OFFSET ?) h JOIN messages m ON m.id = h.id"
                " ORDER BY m.id DESC",
                (*args, limit, offset),
            ).fetchall()
            exact = total <= SEARCH_COUNT_CAP
            return with_attachments(c, [message_from_row(r) for r in rows]), int(min(total, SEARCH_COUNT_CAP)), exact

        return await self.run(q)

    async def chat_known(self, chat: str) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            return (
                c.execute(
                    "SELECT 1 FROM chats WHERE chat = ? UNION SELECT 1 FROM groups WHERE chat = ?",
                    (chat, chat),
                ).fetchone()
                is not None
            )

        return await self.run(q)

    async def pending_summary(self, chats: dict[str, str]) -> dict[str, dict[str, Any]]:
        """Per group folder: unanswered inbound messages since its cursor and the oldest one's time.
        `chats` maps folder -> chat."""

        def q(c: sqlite3.Connection) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for folder, chat in chats.items():
                row = c.execute("SELECT last_message_id FROM cursors WHERE folder = ?", (folder,)).fetchone()
                cursor = int(row[0]) if row else 0
                got = c.execute(
                    "SELECT COUNT(*), MIN(time) FROM messages WHERE chat = ? AND id > ? AND from_bot = 0",
                    (chat, cursor),
                ).fetchone()
                session = c.execute(
                    "SELECT session_id, updated_at FROM sessions WHERE folder = ?", (folder,)
                ).fetchone()
                out[folder] = {
                    "cursor": cursor,
                    "unanswered": int(got[0]),
                    "oldest_unanswered": got[1],
                    "stored_session_id": session[0] if session else None,
                    "session_updated_at": session[1] if session else None,
                }
            return out

        return await self.run(q)

    async def outbox_counts(self) -> dict[str, int]:
        def q(c: sqlite3.Connection) -> dict[str, int]:
            counts = {"pending": 0, "failed": 0, "retrying": 0}
            for state, n, retrying in c.execute(
                "SELECT state, COUNT(*), SUM(attempts > 0) FROM outbox WHERE state != 'sent' GROUP BY state"
            ):
                counts[state] = int(n)
                if state == "pending":
                    counts["retrying"] = int(retrying or 0)
            return counts

        return await self.run(q)

    async def task_runs_page(
        self, task_id: str, *, before: int | None, limit: int
    ) -> tuple[list[TaskRun], bool]:
        def q(c: sqlite3.Connection) -> tuple[list[TaskRun], bool]:
            rows, more = _newest(c, "task_runs", "task_id", task_id, before=before, limit=limit)
            return [task_run_from_row(r) for r in rows], more

        return await self.run(q)

    async def task_run_counts(self) -> dict[str, dict[str, int]]:
        """task id -> {outcome: count}."""

        def q(c: sqlite3.Connection) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for task_id, outcome, n in c.execute(
                "SELECT task_id, outcome, COUNT(*) FROM task_runs GROUP BY task_id, outcome"
            ):
                out.setdefault(task_id, {})[outcome] = int(n)
            return out

        return await self.run(q)
