"""Threads of a per_thread group (docs/conversations.md): each thread its own cursor and session.

A per_thread group's own cursor (table ``cursors``) stays where it was when the group turned
per_thread: it is the floor below every thread's cursor, so a thread seen for the first time starts
there, not at the chat's first message. A thread's cursor moves in the same transaction as the reply
that answers it (``move_cursor(..., thread=...)``), exactly like the group's does in shared mode.
"""

from __future__ import annotations

import sqlite3

from ..records import format_time, utcnow
from .core import StoreCore


def read_cursor(c: sqlite3.Connection, folder: str, thread: str | None = None) -> int:
    """The group's cursor; with ``thread``, that thread's (never below the group's)."""
    row = c.execute("SELECT last_message_id FROM cursors WHERE folder = ?", (folder,)).fetchone()
    floor = int(row[0]) if row else 0
    if thread is None:
        return floor
    row = c.execute(
        "SELECT last_message_id FROM thread_state WHERE folder = ? AND thread = ?", (folder, thread)
    ).fetchone()
    return max(floor, int(row[0]) if row else 0)


def move_thread_cursor(c: sqlite3.Connection, folder: str, thread: str, to: int) -> None:
    c.execute(
        "INSERT INTO thread_state (folder, thread, last_message_id, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(folder, thread) DO UPDATE SET last_message_id = MAX(last_message_id, excluded.last_message_id),"
        " updated_at = excluded.updated_at",
        (folder, thread, to, format_time(utcnow())),
    )


class ThreadsMixin(StoreCore):
    """The Store's per-thread cursors and sessions."""

    async def waiting_threads(self, folder: str, chat: str, limit: int = 50) -> list[str]:
        """The threads of a per_thread group's chat with messages the agent has not answered, the
        one waiting longest first."""

        def q(c: sqlite3.Connection) -> list[str]:
            floor = read_cursor(c, folder)
            rows = c.execute(
                "SELECT m.thread, MIN(m.id) AS first FROM messages m LEFT JOIN thread_state t"
                " ON t.folder = ? AND t.thread = m.thread"
                " WHERE m.chat = ? AND m.from_bot = 0 AND m.id > ? AND m.id > COALESCE(t.last_message_id, 0)"
                " GROUP BY m.thread ORDER BY first LIMIT ?",
                (folder, chat, floor, limit),
            ).fetchall()
            return [str(r[0]) for r in rows]

        return await self.run(q)

    async def thread_session(self, folder: str, thread: str) -> str | None:
        def q(c: sqlite3.Connection) -> str | None:
            row = c.execute(
                "SELECT session_id FROM thread_state WHERE folder = ? AND thread = ?", (folder, thread)
            ).fetchone()
            return str(row[0]) if row and row[0] else None

        return await self.run(q)

    async def set_thread_session(self, folder: str, thread: str, session_id: str) -> None:
        def q(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO thread_state (folder, thread, session_id, last_message_id, updated_at)"
                " VALUES (?, ?, ?, (SELECT COALESCE(MAX(last_message_id), 0) FROM cursors WHERE folder = ?), ?)"
                " ON CONFLICT(folder, thread) DO UPDATE SET session_id = excluded.session_id,"
                " updated_at = excluded.updated_at",
                (folder, thread, session_id, folder, format_time(utcnow())),
            )

        await self.run(q)

    async def thread_sessions(self, folder: str) -> dict[str, str]:
        """thread -> session id, for a per_thread group (what /debug and the API show)."""

        def q(c: sqlite3.Connection) -> dict[str, str]:
            rows = c.execute(
                "SELECT thread, session_id FROM thread_state WHERE folder = ? AND session_id IS NOT NULL", (folder,)
            ).fetchall()
            return {str(r[0]): str(r[1]) for r in rows}

        return await self.run(q)
