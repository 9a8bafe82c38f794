"""The transactional outbox: replies queued with the cursor move that answers their input (one
transaction), notices, failed turns, and delivery (an outbox row marked sent together with the
bot's message stored in the chat history)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..records import Attachment, Message, OutboxItem, OutboxState, channel_of, format_time, utcnow
from .attachments import outbox_with_attachments, queue_file_row, with_attachments
from .core import StoreCore
from .messages import move_cursor
from .rows import message_from_row, outbox_from_row


class OutboxMixin(StoreCore):
    """The Store's outbox and failed turns."""

    async def commit_reply(
        self, folder: str, chat: str, text: str, cursor_to: int | None, reply_to: str | None = None,
        files: Sequence[Attachment] = (), preview_id: str | None = None, thread: str | None = None,
        reply_thread: str = "",
    ) -> int:
        """One transaction: queue the reply in the outbox (then one row per file it shows, e.g. its
        Markdown images) and move the group's cursor (None: move nothing). ``preview_id``: the
        message that showed the reply growing, which the outbox edits instead of sending anew.
        ``thread``: the cursor moved is that thread's (a per_thread group); ``reply_thread``: the
        thread the reply answers in (kept with it in the history)."""

        def q(c: sqlite3.Connection) -> int:
            first = 0
            if text.strip():
                cur = c.execute(
                    "INSERT INTO outbox (folder, chat, text, reply_to, created_at, preview_id, thread)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (folder, chat, text, reply_to, format_time(utcnow()), preview_id, reply_thread),
                )
                first = int(cur.lastrowid or 0)
            for attachment in files:
                row = queue_file_row(c, folder, chat, attachment, "", reply_to)
                first = first or row
            if cursor_to is not None:
                move_cursor(c, folder, cursor_to, thread)
            return first

        return await self.run(q)

    async def queue_message(self, folder: str, chat: str, text: str) -> int:
        """Queue a message that answers no input (a tool's send_message, an error notice)."""

        def q(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "INSERT INTO outbox (folder, chat, text, created_at) VALUES (?, ?, ?, ?)",
                (folder, chat, text, format_time(utcnow())),
            )
            return int(cur.lastrowid or 0)

        return await self.run(q)

    async def record_failed_turn(
        self, folder: str, up_to: int, reason: str, notice: tuple[str, str] | None, thread: str | None = None
    ) -> None:
        """Give up on a batch: remember why, move the cursor past it, and queue a notice, atomically."""

        def q(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO failed_turns (folder, up_to_message, reason, time) VALUES (?, ?, ?, ?)",
                (folder, up_to, reason, format_time(utcnow())),
            )
            move_cursor(c, folder, up_to, thread)
            if notice:
                c.execute(
                    "INSERT INTO outbox (folder, chat, text, created_at) VALUES (?, ?, ?, ?)",
                    (folder, notice[0], notice[1], format_time(utcnow())),
                )

        await self.run(q)

    async def failed_turns(self, folder: str) -> list[dict[str, Any]]:
        return await self.run(
            lambda c: [
                dict(r)
                for r in c.execute("SELECT * FROM failed_turns WHERE folder = ? ORDER BY id", (folder,))
            ]
        )

    async def pending_outbox(self, limit: int = 100) -> list[OutboxItem]:
        def q(c: sqlite3.Connection) -> list[OutboxItem]:
            rows = c.execute("SELECT * FROM outbox WHERE state = 'pending' ORDER BY id LIMIT ?", (limit,))
            return outbox_with_attachments(c, [outbox_from_row(r) for r in rows])

        return await self.run(q)

    async def outbox_items(self, chat: str, limit: int = 100) -> list[OutboxItem]:
        """The chat's outbox rows in any state (sent, pending, given up), oldest first."""
        return await self.select(outbox_from_row, "SELECT * FROM outbox WHERE chat = ? ORDER BY id LIMIT ?", (chat, limit))

    async def outbox_depth(self) -> int:
        return await self.run(
            lambda c: int(c.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0])
        )

    @staticmethod
    def _store_bot_message(
        c: sqlite3.Connection, item: OutboxItem, sender: str, platform_id: str | None
    ) -> int:
        channel = channel_of(item.chat)
        cur = c.execute(
            "INSERT INTO messages (chat, channel, platform_id, sender, text, time, from_bot, thread)"
            " VALUES (?, ?, ?, ?, ?, ?, 1, ?)",
            (
                item.chat,
                channel,
                platform_id or f"ngb-out-{item.id}",
                sender,
                item.text,
                format_time(utcnow()),
                item.thread,
            ),
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
                return with_attachments(c, [message_from_row(dict(got))])[0]
            message_id = self._store_bot_message(c, item, sender, platform_id)
            c.execute("UPDATE attachments SET message_id = ? WHERE outbox_id = ?", (message_id, item.id))
            c.execute(
                "UPDATE outbox SET state = 'sent', sent_at = ?, attempts = attempts + 1, message_id = ? WHERE id = ?",
                (format_time(utcnow()), message_id, item.id),
            )
            c.execute(
                "UPDATE chats SET last_message_at = ? WHERE chat = ?", (format_time(utcnow()), item.chat)
            )
            return with_attachments(c, [message_from_row(
                dict(c.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone())
            )])[0]

        return await self.run(q)

    async def outbox_attempt_failed(self, item_id: int, error: str, *, give_up: bool) -> None:
        def q(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, state = ? WHERE id = ?",
                (error[:2000], "failed" if give_up else "pending", item_id),
            )

        await self.run(q)
