"""The files messages carry: their rows (the bytes are in the media store, ngb/media/files.py, by
sha256), read together with the messages and outbox rows they belong to, the bytes a chat holds
(its quota), transcripts, and retention (rows marked gone, the hashes no row still needs)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TypeVar

import attrs

from ..records import Attachment, AttachmentKind, Message, OutboxItem, format_time, utcnow
from .core import StoreCore

M = TypeVar("M", Message, OutboxItem)


def attachment_from_row(row: sqlite3.Row) -> Attachment:
    return Attachment(
        kind=AttachmentKind(row["kind"]), mime=row["mime"], size=int(row["size"]), name=row["name"],
        sha256=row["sha256"], id=int(row["id"]), transcript=row["transcript"],
        transcript_source=row["transcript_source"], gone=bool(row["gone"]),
    )


def insert_attachments(c: sqlite3.Connection, chat: str, attachments: Iterable[Attachment], *,
                       message_id: int | None = None, outbox_id: int | None = None) -> tuple[Attachment, ...]:
    """Store attachment rows (in the caller's transaction); the records come back with their ids."""
    out = []
    now = format_time(utcnow())
    for a in attachments:
        cur = c.execute(
            "INSERT INTO attachments (chat, message_id, outbox_id, kind, mime, size, name, sha256, transcript,"
            " transcript_source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (chat, message_id, outbox_id, str(a.kind), a.mime, a.size, a.name, a.sha256, a.transcript,
             a.transcript_source, now),
        )
        out.append(attrs.evolve(a, id=int(cur.lastrowid or 0)))
    return tuple(out)


def _with(c: sqlite3.Connection, records: Sequence[M], column: str) -> list[M]:
    if not records:
        return []
    ids = [r.id for r in records]
    found: dict[int, list[Attachment]] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ",".join("?" * len(part))
        for row in c.execute(f"SELECT * FROM attachments WHERE {column} IN ({marks}) ORDER BY id", part):
            found.setdefault(int(row[column]), []).append(attachment_from_row(row))
    return [attrs.evolve(r, attachments=tuple(found[r.id])) if r.id in found else r for r in records]


def with_attachments(c: sqlite3.Connection, messages: Sequence[Message]) -> list[Message]:
    """The messages with their attachments (one query for all of them)."""
    return _with(c, messages, "message_id")


def outbox_with_attachments(c: sqlite3.Connection, items: Sequence[OutboxItem]) -> list[OutboxItem]:
    return _with(c, items, "outbox_id")


def queue_file_row(c: sqlite3.Connection, folder: str, chat: str, attachment: Attachment, caption: str,
                   reply_to: str | None = None) -> int:
    """One outbox row that sends one file (``caption`` as its text), in the caller's transaction."""
    cur = c.execute(
        "INSERT INTO outbox (folder, chat, text, reply_to, created_at) VALUES (?, ?, ?, ?, ?)",
        (folder, chat, caption, reply_to, format_time(utcnow())),
    )
    outbox_id = int(cur.lastrowid or 0)
    insert_attachments(c, chat, [attachment], outbox_id=outbox_id)
    return outbox_id


class AttachmentsMixin(StoreCore):
    """The Store's attachment rows."""

    async def attachment(self, attachment_id: int) -> tuple[Attachment, str] | None:
        """An attachment and the chat it belongs to."""

        def q(c: sqlite3.Connection) -> tuple[Attachment, str] | None:
            row = c.execute("SELECT * FROM attachments WHERE id = ?", (attachment_id,)).fetchone()
            return (attachment_from_row(row), row["chat"]) if row else None

        return await self.run(q)

    async def chat_media_bytes(self, chat: str) -> int:
        """Bytes of the files a chat holds now (its quota counts these)."""
        return await self.run(lambda c: int(c.execute(
            "SELECT COALESCE(SUM(size), 0) FROM attachments WHERE chat = ? AND gone = 0", (chat,)).fetchone()[0]))

    async def set_transcript(self, attachment_id: int, text: str, source: str) -> None:
        await self.run(lambda c: c.execute(
            "UPDATE attachments SET transcript = ?, transcript_source = ? WHERE id = ?", (text, source, attachment_id)))

    async def queue_file(self, folder: str, chat: str, attachment: Attachment, caption: str = "",
                         reply_to: str | None = None) -> int:
        """Queue one file to send (the agent's send_file): an outbox row with its attachment."""
        return await self.run(lambda c: queue_file_row(c, folder, chat, attachment, caption, reply_to))

    async def expire_attachments(self, before: datetime) -> int:
        """Mark the files stored before ``before`` gone (the rows stay: a message still says it had
        them). Returns how many."""
        return await self.run(lambda c: c.execute(
            "UPDATE attachments SET gone = 1 WHERE gone = 0 AND created_at < ?", (format_time(before),)).rowcount)

    async def needed_hashes(self) -> set[str]:
        """The sha256 of every file a row still needs (not gone)."""
        return await self.run(lambda c: {r[0] for r in c.execute("SELECT DISTINCT sha256 FROM attachments WHERE gone = 0")})
