"""A platform's file -> an ``Attachment`` in the media store, or the one clear note that replaces it.

Every channel hands its files here before it submits the message (the message is then stored with
its attachments in one transaction). Nothing here raises to the channel for a bad file: a file too
large, one too many, of an unknown or executable type, over the chat's quota, or a download that
fails or times out becomes a note such as ``[photo: too large, 31 MB > 20 MB]`` that the channel
adds to the message's text, so the message is stored and answered anyway.

    taken = await media.take_all(chat, [(Incoming(AttachmentKind.IMAGE, name="x.jpg", size=n), fetch)])
    InboundMessage(..., text=with_notes(text, taken.notes), attachments=taken.attachments)

``fetch`` is called only when the file passed the checks that need no bytes; it returns the bytes
(``await fetch()``) or yields them in chunks (``async for``), as the platform's client offers.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from ..records import Attachment, AttachmentKind
from .files import CHUNK, MediaFiles, Stored, TooLarge
from .limits import MediaLimits, megabytes
from .names import safe_name
from .sniff import UNKNOWN, kind_of, sniff

log = logging.getLogger(__name__)

Fetch = Callable[[], Awaitable[bytes] | AsyncIterable[bytes]]
ChatBytes = Callable[[str], Awaitable[int]]  # bytes of files stored for a chat (the quota)

LABELS = {
    AttachmentKind.IMAGE: "photo",
    AttachmentKind.VOICE: "voice message",
    AttachmentKind.AUDIO: "audio",
    AttachmentKind.VIDEO: "video",
    AttachmentKind.DOCUMENT: "file",
    AttachmentKind.OTHER: "file",
}


@attrs.frozen
class Incoming:
    """One file a platform message carries, as the platform describes it (hints, not facts)."""

    kind: AttachmentKind = AttachmentKind.OTHER
    name: str | None = None
    mime: str | None = None
    size: int | None = None  # declared: a file over the limit is refused before it is fetched
    transcript: str | None = None  # the platform's own voice recognition
    label: str | None = None  # the platform's word for it in a note ("sticker"); default by kind

    def describe(self) -> str:
        label = self.label or LABELS[self.kind]
        name = safe_name(self.name, fallback="") if self.name else ""
        return f"{label} {name}" if name and name != label else label


class MediaRefused(Exception):
    """A file that is not taken; ``note`` is what the message says instead."""

    def __init__(self, note: str) -> None:
        super().__init__(note)
        self.note = note


@attrs.frozen
class Taken:
    attachments: tuple[Attachment, ...] = ()
    notes: tuple[str, ...] = ()


def with_notes(text: str, notes: Sequence[str]) -> str:
    """The message's text with the notes of files that could not be had after it."""
    if not notes:
        return text
    joined = " ".join(notes)
    return f"{text}\n{joined}" if text.strip() else joined


def _note(incoming: Incoming, reason: str) -> str:
    note = f"[{incoming.describe()}: {reason}]"
    if incoming.transcript:
        note = f'[{incoming.describe()}: {reason}; its transcript: "{incoming.transcript[:2000]}"]'
    return note


class MediaIntake:
    def __init__(self, files: MediaFiles, limits: MediaLimits | None = None, *,
                 chat_bytes: ChatBytes | None = None) -> None:
        self.files = files
        self.limits = limits or MediaLimits()
        self._chat_bytes = chat_bytes
        self.taken = 0
        self.refused = 0

    # -- many files of one message ------------------------------------------------------------------
    async def take_all(self, chat: str, items: Sequence[tuple[Incoming, Fetch]]) -> Taken:
        attachments: list[Attachment] = []
        notes: list[str] = []
        limit = self.limits.max_files
        for incoming, fetch in items[:limit]:
            try:
                attachments.append(await self.take(chat, incoming, fetch))
            except MediaRefused as exc:
                notes.append(exc.note)
        if len(items) > limit:
            self.refused += len(items) - limit
            notes.append(f"[{len(items) - limit} more files not taken: at most {limit} per message]")
        return Taken(tuple(attachments), tuple(notes))

    # -- one file -----------------------------------------------------------------------------------------
    async def take(self, chat: str, incoming: Incoming, fetch: Fetch) -> Attachment:
        """Fetch, store and describe one file; ``MediaRefused`` with the note when it is not taken."""
        try:
            return await self._take(chat, incoming, fetch)
        except MediaRefused as exc:
            self.refused += 1
            log.info("media: %s in %s not taken: %s", incoming.describe(), chat, exc.note)
            raise

    async def _take(self, chat: str, incoming: Incoming, fetch: Fetch) -> Attachment:
        lim = self.limits
        if incoming.size is not None and incoming.size > lim.max_file_bytes:
            raise MediaRefused(_note(incoming, f"too large, {megabytes(incoming.size)} > {megabytes(lim.max_file_bytes)}"))
        room = await self._room(chat, incoming)
        limit = min(lim.max_file_bytes, room)
        try:
            with trio.fail_after(lim.download_timeout):
                stored = await self._store(fetch, limit)
        except TooLarge as exc:
            if exc.limit < lim.max_file_bytes:
                raise MediaRefused(_note(incoming, f"the chat's file quota is full ({megabytes(lim.group_quota_bytes)})")) from None
            raise MediaRefused(_note(incoming, f"too large, over {megabytes(lim.max_file_bytes)}")) from None
        except trio.TooSlowError:
            raise MediaRefused(_note(incoming, f"the download timed out after {lim.download_timeout:g} s")) from None
        except MediaRefused:
            raise
        except Exception as exc:  # noqa: BLE001 - a platform's error of any kind becomes the note
            log.warning("media: download of %s failed: %r", incoming.describe(), exc)
            raise MediaRefused(_note(incoming, f"the download failed ({_short_error(exc)})")) from None
        return self.describe(stored, incoming)

    def describe(self, stored: Stored, incoming: Incoming) -> Attachment:
        """The attachment of stored bytes: the type from the bytes; refused when it is unknown."""
        mime = sniff(stored.head, incoming.name)
        if stored.size == 0:
            raise MediaRefused(_note(incoming, "the file is empty"))
        if mime == "application/x-executable":
            raise MediaRefused(_note(incoming, "executable files are not taken"))
        if mime == UNKNOWN:
            raise MediaRefused(_note(incoming, "unknown file type (not an image, audio, video, document or text)"))
        kind = kind_of(mime, incoming.kind)
        self.taken += 1
        return Attachment(
            kind=kind,
            mime=mime,
            size=stored.size,
            name=safe_name(incoming.name, mime, fallback=LABELS[kind].replace(" ", "-")),
            sha256=stored.sha256,
            transcript=incoming.transcript or None,
            transcript_source="platform" if incoming.transcript else None,
        )

    async def _room(self, chat: str, incoming: Incoming) -> int:
        """Bytes the chat may still store under its quota."""
        if self._chat_bytes is None:
            return self.limits.group_quota_bytes
        used = await self._chat_bytes(chat)
        room = self.limits.group_quota_bytes - used
        if room <= 0 or (incoming.size is not None and incoming.size > room):
            raise MediaRefused(_note(incoming, f"the chat's file quota is full ({megabytes(self.limits.group_quota_bytes)})"))
        return room

    async def _store(self, fetch: Fetch, limit: int) -> Stored:
        got: Any = fetch()
        if inspect.isawaitable(got):
            got = await got
        if isinstance(got, bytes | bytearray | memoryview):
            data = bytes(got)
            if len(data) > limit:
                raise TooLarge(len(data), limit)
            return await self.files.write_bytes(data, limit=limit)
        return await self.files.write_stream(got, limit=limit)

    # -- a download over HTTP ---------------------------------------------------------------------------
    def fetch_url(self, url: str, headers: dict[str, str] | None = None, *,
                  client: httpx.AsyncClient | None = None) -> Fetch:
        """A fetch that streams ``url`` (a platform's file URL, with its auth headers); an HTTP
        error status is a failed download."""

        async def chunks() -> AsyncIterator[bytes]:
            own = client is None
            c = client or httpx.AsyncClient(timeout=self.limits.download_timeout, follow_redirects=True)
            try:
                async with c.stream("GET", url, headers=headers) as response:
                    if response.status_code >= 400:
                        raise RuntimeError(f"HTTP {response.status_code}")
                    async for chunk in response.aiter_bytes(CHUNK):
                        yield chunk
            finally:
                if own:
                    await c.aclose()

        return chunks


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


class NoMedia(MediaIntake):
    """The intake of a channel built without the daemon's media store: every file is a note."""

    def __init__(self) -> None:
        super().__init__(MediaFiles(_NOWHERE))

    async def take(self, chat: str, incoming: Incoming, fetch: Fetch) -> Attachment:
        self.refused += 1
        raise MediaRefused(_note(incoming, "files are not kept here (no media store)"))


_NOWHERE = Path("/nonexistent/ngb-media")
