"""Telegram's files: what a message carries (photo, document, voice, audio, video, video note,
animation) as ``Incoming`` hints with their file ids, albums held until they are complete, and the
multipart upload of a file the agent sends (sendPhoto / sendVoice / sendDocument).

Albums: Telegram sends each item of an album as its own message with the same ``media_group_id``.
``AlbumHold`` keeps the parts of one album until a message that is not part of it arrives, the
album is full (10), or ``wait`` seconds passed without a new part; the parts then become ONE
message (the first part's platform id, every part's files, the captions joined)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import attrs
import trio

from ..media.intake import Fetch, Incoming
from ..media.limits import MB
from ..records import AttachmentKind, InboundMessage, OutgoingFile
from .common import utf16_len

DOWNLOAD_LIMIT = 20 * MB  # the Bot API's getFile serves files up to 20 MB
PHOTO_LIMIT = 10 * MB  # sendPhoto takes up to 10 MB; larger images go as documents
CAPTION_LIMIT = 1024  # characters after entity parsing (UTF-16 code units)
ALBUM_MAX = 10  # items in one Telegram album
VOICE_MIMES = ("audio/ogg", "audio/opus")  # what sendVoice plays as a voice note (OGG/Opus)


@attrs.frozen
class FileRef:
    """One file of a message: what Telegram says about it, and the file_id getFile takes."""

    incoming: Incoming
    file_id: str


@attrs.frozen
class Part:
    """One update's message, parsed: its record (placeholder text), its caption or text, its files."""

    update_id: int
    inbound: InboundMessage
    text: str  # the message's own text or caption ("" when it has none)
    files: tuple[FileRef, ...] = ()
    album: tuple[int, str] | None = None  # (chat id, media_group_id)


def files_of(message: Any, limit: int) -> tuple[FileRef, ...]:
    """The files a Message carries (python-telegram-bot objects), largest photo size within
    ``limit`` (the smallest when none is; it is then refused by its declared size)."""
    refs: list[FileRef] = []
    if message.photo:
        sizes = sorted(message.photo, key=lambda s: (s.file_size or 0, s.width * s.height))
        fitting = [s for s in sizes if (s.file_size or 0) <= limit]
        best = fitting[-1] if fitting else sizes[0]
        refs.append(FileRef(Incoming(AttachmentKind.IMAGE, size=best.file_size, label="photo"),
                            best.file_id))
    if message.animation:  # Telegram also sets `document` for an animation: one file, not two
        a = message.animation
        refs.append(FileRef(Incoming(AttachmentKind.VIDEO, name=a.file_name, mime=a.mime_type, size=a.file_size,
                                     label="GIF"), a.file_id))
    elif message.document:
        d = message.document
        refs.append(FileRef(Incoming(AttachmentKind.DOCUMENT, name=d.file_name, mime=d.mime_type, size=d.file_size),
                            d.file_id))
    if message.voice:
        v = message.voice
        refs.append(FileRef(Incoming(AttachmentKind.VOICE, mime=v.mime_type, size=v.file_size,
                                     label="voice message"), v.file_id))
    if message.audio:
        a = message.audio
        refs.append(FileRef(Incoming(AttachmentKind.AUDIO, name=a.file_name or a.title, mime=a.mime_type,
                                     size=a.file_size, label="audio"), a.file_id))
    if message.video:
        v = message.video
        refs.append(FileRef(Incoming(AttachmentKind.VIDEO, name=v.file_name, mime=v.mime_type, size=v.file_size,
                                     label="video"), v.file_id))
    if message.video_note:
        n = message.video_note
        refs.append(FileRef(Incoming(AttachmentKind.VIDEO, size=n.file_size,
                                     label="video message"), n.file_id))
    return tuple(refs)


def part_of(update_id: int, inbound: InboundMessage, message: Any, limit: int) -> Part:
    group = message.media_group_id
    return Part(update_id, inbound, message.text or message.caption or "", files_of(message, limit),
                (message.chat.id, str(group)) if group else None)


def merge(parts: Sequence[Part]) -> tuple[InboundMessage, str, tuple[FileRef, ...]]:
    """The parts of one album (or a single message) -> the record of the first part with every
    part's mention and reply, the captions joined, and every file in order."""
    first = parts[0].inbound
    files = tuple(ref for p in parts for ref in p.files)
    if len(parts) == 1 and not files:
        return first, first.text, ()
    text = "\n".join(p.text for p in parts if p.text.strip())
    reply_to = next((p.inbound.reply_to for p in parts if p.inbound.reply_to), None)
    inbound = attrs.evolve(first, mentions_bot=any(p.inbound.mentions_bot for p in parts), reply_to=reply_to)
    return inbound, text, files


class AlbumHold:
    """The parts of one album, held until it is complete. ``add`` returns the messages (lists of
    parts) that are ready now, in arrival order; ``take`` empties the hold."""

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self.parts: list[Part] = []
        self.deadline = 0.0  # trio time: flush when no new part came by then
        self.added = trio.Event()  # set (and replaced) when a part is held

    @property
    def held(self) -> bool:
        return bool(self.parts)

    @property
    def ids(self) -> set[int]:
        return {p.update_id for p in self.parts}

    @property
    def first_id(self) -> int | None:
        return self.parts[0].update_id if self.parts else None

    def add(self, part: Part) -> list[list[Part]]:
        ready: list[list[Part]] = []
        if self.parts and part.album != self.parts[0].album:
            ready.append(self.take())  # a message of something else: the album before it is complete
        if part.album is None:
            ready.append([part])
            return ready
        self.parts.append(part)
        self.deadline = trio.current_time() + self.wait
        self.added.set()
        self.added = trio.Event()
        if len(self.parts) >= ALBUM_MAX:
            ready.append(self.take())
        return ready

    def take(self) -> list[Part]:
        parts, self.parts = self.parts, []
        return parts


def fetcher(channel: Any, file_id: str) -> Fetch:
    """The fetch of one file (for ``MediaIntake.take_all``): getFile through the channel's bridge,
    then the bytes streamed from the file URL (``<base_file_url><token>/<file_path>``)."""

    async def chunks() -> AsyncIterator[bytes]:
        try:
            file = await channel.bridge.call(channel.bot.get_file, file_id)
            url = file.file_path or ""
            if not url.startswith(("http://", "https://")):
                raise RuntimeError("Telegram gave no file URL")
            source: Any = channel.media.fetch_url(url)()
            async for chunk in source:
                yield chunk
        except Exception as exc:  # noqa: BLE001 - the note names the error, never the token in the URL
            raise RuntimeError(channel.status.redact(str(exc) or type(exc).__name__)) from None

    return chunks


# -- files out ---------------------------------------------------------------------------------------
def upload_method(file: OutgoingFile) -> tuple[str, str]:
    """(the Bot method, its file field) for a file: a photo, a voice note, or a document."""
    if file.is_image and file.size <= PHOTO_LIMIT and file.mime in ("image/jpeg", "image/png", "image/webp"):
        return "send_photo", "photo"
    if file.mime in VOICE_MIMES:
        return "send_voice", "voice"
    return "send_document", "document"


def caption_fits(caption: str) -> bool:
    return utf16_len(caption) <= CAPTION_LIMIT


async def upload(bot: Any, method: str, field: str, file: OutgoingFile, chat_id: int, **kwargs: Any) -> Any:
    """On the asyncio loop: open the stored file and send it as a multipart upload; httpx reads
    the file in chunks as it sends (the bytes are never read whole into memory here)."""
    from telegram import InputFile

    with open(file.path, "rb") as handle:  # noqa: ASYNC230 - a local open on the asyncio thread, not the trio loop
        payload = InputFile(handle, filename=file.name, read_file_handle=False)
        return await getattr(bot, method)(chat_id, **{field: payload}, **kwargs)
