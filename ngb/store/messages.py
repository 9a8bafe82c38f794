"""The chat history: inbound messages stored first (group commit), reading and searching them,
the chats seen, what channels keep (their newest stored platform id per chat), and each group's
cursor (the newest message its agent has answered)."""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import trio

from ..records import InboundMessage, Message, SenderSummary, channel_of, format_time, parse_time, utcnow
from .attachments import insert_attachments, with_attachments
from .core import StoreCore, StoreUnavailable
from .rows import message_from_row
from .threads import move_thread_cursor, read_cursor


def ingest_one(conn: sqlite3.Connection, msg: InboundMessage) -> tuple[Message, bool]:
    """Store one inbound message unless its (channel, platform id) is stored already: (message, is_new)."""
    channel = channel_of(msg.chat)
    existing = conn.execute(
        "SELECT * FROM messages WHERE channel = ? AND platform_id = ?", (channel, msg.platform_id)
    ).fetchone()
    if existing is not None:
        return with_attachments(conn, [message_from_row(dict(existing))])[0], False
    at = format_time(msg.time)
    cur = conn.execute(
        "INSERT INTO messages (chat, channel, platform_id, sender, sender_id, text, time, from_bot, mentions_bot,"
        " thread, reaction_to) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
        (msg.chat, channel, msg.platform_id, msg.sender, msg.sender_id, msg.text, at, int(msg.mentions_bot),
         msg.thread, msg.reaction_to),
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
        thread=msg.thread,
        reaction_to=msg.reaction_to,
    )
    if msg.attachments:
        stored = insert_attachments(conn, msg.chat, msg.attachments, message_id=message.id)
        message = attrs.evolve(message, attachments=stored)
    return message, True


def move_cursor(c: sqlite3.Connection, folder: str, to: int, thread: str | None = None) -> None:
    """Move a group's cursor forward to `to` (never back), inside the caller's transaction; with
    ``thread``, that thread's cursor (a per_thread group: ngb/store/threads.py)."""
    if thread is not None:
        move_thread_cursor(c, folder, thread, to)
        return
    c.execute(
        "INSERT INTO cursors (folder, last_message_id) VALUES (?, ?) ON CONFLICT(folder)"
        " DO UPDATE SET last_message_id = MAX(last_message_id, excluded.last_message_id)",
        (folder, to),
    )


class MessagesMixin(StoreCore):
    """The Store's messages, chats, channel marks and cursors."""

    _ingest = staticmethod(ingest_one)
    _advance = staticmethod(move_cursor)

    def __init__(self, path: Path, *, retries: int = 8, retry_base: float = 0.05) -> None:
        super().__init__(path, retries=retries, retry_base=retry_base)
        self._ingest_queue: list[tuple[InboundMessage, list[Any], trio.Event]] = []
        self._ingest_flushing = False

    def _ingest_batch(self, batch: list[InboundMessage]) -> list[tuple[Message, bool] | BaseException]:
        """Store a batch in one transaction; if one message fails for a reason of its own, store
        each message in its own transaction so only that one fails."""
        try:
            return list(self._tx(lambda c: [ingest_one(c, m) for m in batch]))
        except StoreUnavailable:
            raise
        except Exception:
            if len(batch) == 1:
                raise
        results: list[tuple[Message, bool] | BaseException] = []
        for m in batch:
            try:
                results.append(self._tx(functools.partial(ingest_one, msg=m)))
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
        return result

    async def messages_after(self, chat: str, after: int, limit: int = 200) -> list[Message]:
        def q(c: sqlite3.Connection) -> list[Message]:
            if after <= 0:
                rows = c.execute(
                    "SELECT * FROM (SELECT * FROM messages WHERE chat = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
                    (chat, limit),
                ).fetchall()
            else:
                rows = c.execute(
                    "SELECT * FROM messages WHERE chat = ? AND id > ? ORDER BY id LIMIT ?",
                    (chat, after, limit),
                ).fetchall()
            return with_attachments(c, [message_from_row(dict(r)) for r in rows])

        return await self.run(q)

    async def message(self, message_id: int) -> Message | None:
        def q(c: sqlite3.Connection) -> Message | None:
            row = c.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
            return with_attachments(c, [message_from_row(dict(row))])[0] if row else None

        return await self.run(q)

    async def search(
        self, query: str, *, chat: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Message]:
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
            return [message_from_row(dict(r)) for r in c.execute(sql, args).fetchall()]

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
                SenderSummary(
                    sender_id=r["sender_id"],
                    name=r["sender"],
                    messages=int(r["n"]),
                    last_time=parse_time(r["time"]),
                )
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

    # -- what channels keep: the newest stored platform id per chat, the bot's own messages ------
    async def channel_marks(self, channel: str) -> dict[str, str]:
        """chat -> the newest platform message id the channel stored there (channels.common.NewestStored)."""

        def q(c: sqlite3.Connection) -> dict[str, str]:
            rows = c.execute("SELECT chat, mark FROM channel_marks WHERE channel = ?", (channel,)).fetchall()
            return {str(r[0]): str(r[1]) for r in rows}

        return await self.run(q)

    async def set_channel_mark(self, channel: str, chat: str, mark: str) -> None:
        """Keep ``mark`` as the chat's newest stored platform id (the channel orders its own ids)."""
        await self.run(
            lambda c: c.execute(
                "INSERT INTO channel_marks (chat, channel, mark, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(chat) DO UPDATE SET channel = excluded.channel, mark = excluded.mark,"
                " updated_at = excluded.updated_at",
                (chat, channel, mark, format_time(utcnow())),
            )
        )

    async def sent_by_bot(self, channel: str, platform_id: str) -> bool:
        """Whether the channel's message ``platform_id`` is one the bot sent (a reply to it is a trigger)."""

        def q(c: sqlite3.Connection) -> bool:
            row = c.execute(
                "SELECT from_bot FROM messages WHERE channel = ? AND platform_id = ?", (channel, platform_id)
            ).fetchone()
            return bool(row and row[0])

        return await self.run(q)

    # -- cursors ---------------------------------------------------------------------------------
    async def cursor(self, folder: str, thread: str | None = None) -> int:
        """The group's cursor; with ``thread``, that thread's (a per_thread group)."""
        return await self.run(lambda c: read_cursor(c, folder, thread))

    async def pending_input(
        self, folder: str, chat: str, after: int | None = None, limit: int = 500, thread: str | None = None
    ) -> list[Message]:
        """Messages of the group's chat the agent has not answered yet (not written by the bot);
        with ``thread``, only that thread's, after its own cursor (a per_thread group)."""

        def q(c: sqlite3.Connection) -> list[Message]:
            start = read_cursor(c, folder, thread) if after is None else after
            in_thread = "" if thread is None else " AND thread = ?"
            rows = c.execute(
                f"SELECT * FROM (SELECT * FROM messages WHERE chat = ?{in_thread} AND id > ? AND from_bot = 0"
                " ORDER BY id DESC LIMIT ?) ORDER BY id",
                (chat, start, limit) if thread is None else (chat, thread, start, limit),
            ).fetchall()
            return with_attachments(c, [message_from_row(dict(r)) for r in rows])

        return await self.run(q)

    async def texts_of(self, channel: str, platform_ids: list[str]) -> dict[str, str]:
        """platform id -> text of those stored messages of a channel (what reactions are on)."""

        def q(c: sqlite3.Connection) -> dict[str, str]:
            marks = ", ".join("?" * len(platform_ids))
            rows = c.execute(f"SELECT platform_id, text FROM messages WHERE channel = ? AND platform_id IN ({marks})",
                             (channel, *platform_ids)).fetchall()
            return {str(r[0]): str(r[1]) for r in rows}

        return await self.run(q) if platform_ids else {}

    async def advance_cursor(self, folder: str, to: int, thread: str | None = None) -> None:
        await self.run(lambda c: move_cursor(c, folder, to, thread))
