"""Discord's files, in and out: a message's attachments become stored ``Attachment``s (or the notes
that replace them), and a file out is one message with the file as a multipart attachment.

In: each attachment of a message (gateway MESSAGE_CREATE and catch-up history alike) is streamed
from its CDN ``url`` (signed by Discord; no token sent) through ``MediaIntake.take_all``; its
declared ``size`` is checked before anything is downloaded, ``content_type`` and ``filename`` are
hints only (the type comes from the bytes). A message flagged IS_VOICE_MESSAGE (1 << 13) carries a
voice note. Out: ``send_file`` posts the stored file (opened in a worker thread; discord.py streams
it from the asyncio loop, never the trio loop) as ``files[0]`` with the caption as the content, the
reply reference, no pings and, when given, an idempotency nonce; a caption past 2,000 characters
follows as text messages. Images and documents both go as attachments (Discord shows images inline
by their file extension, so an image's name gets one when it has none).
"""

from __future__ import annotations

import mimetypes
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from ..media.intake import Incoming, Taken
from ..records import AttachmentKind, OutgoingFile
from .base import ChannelError
from .common import split_text, utf16_len
from .discord_threads import locate, platform_id_in

if TYPE_CHECKING:
    from ..media.intake import MediaIntake
    from .common import LastTrigger, PartialSends

IS_VOICE_MESSAGE = 1 << 13  # message flag: the (single) attachment is a voice note
PART_LIMIT = 1990  # under Discord's 2000-character limit on a message's content
NONCE_MAX = 25  # Discord's limit on a nonce string
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif"}


def is_voice_message(message: Any) -> bool:
    flags = getattr(message, "flags", None)
    return bool(int(getattr(flags, "value", 0) or 0) & IS_VOICE_MESSAGE)


def incoming_of(attachment: Any, *, voice: bool = False) -> Incoming:
    """A discord.Attachment as the intake takes it: the platform's word for it, as hints."""
    mime = (attachment.content_type or "").split(";", 1)[0].strip().lower() or None
    if voice:
        kind = AttachmentKind.VOICE
    elif mime and mime.startswith("image/"):
        kind = AttachmentKind.IMAGE
    elif mime and mime.startswith("audio/"):
        kind = AttachmentKind.AUDIO
    elif mime and mime.startswith("video/"):
        kind = AttachmentKind.VIDEO
    else:
        kind = AttachmentKind.DOCUMENT
    size = attachment.size if isinstance(attachment.size, int) and attachment.size >= 0 else None
    return Incoming(kind, name=attachment.filename or None, mime=mime, size=size)


async def take_attachments(media: MediaIntake, chat: str, message: Any) -> Taken:
    """Every attachment of a discord.Message into the media store (or a note each)."""
    attachments = list(message.attachments or ())
    if not attachments:
        return Taken()
    voice = is_voice_message(message)
    items = [(incoming_of(a, voice=voice), media.fetch_url(a.url)) for a in attachments]
    return await media.take_all(chat, items)


def upload_name(file: OutgoingFile) -> str:
    """The name the file goes up with: an image without an image extension gets one (by its mime),
    so Discord shows it inline."""
    name = file.name or "file"
    if file.is_image and PurePath(name).suffix.lower() not in IMAGE_EXTENSIONS:
        ext = mimetypes.guess_extension(file.mime) or ""
        if ext.lower() in IMAGE_EXTENSIONS:
            name += ext
    return name


class DiscordFiles:
    """The files-out half of DiscordChannel (a mixin: it shares the channel's client and sends)."""

    client: Any
    state: str
    _partial: PartialSends
    _last_trigger: LastTrigger

    async def _post(self, channel_id: int, content: str | None, reference: int | None, nonce: str | None, *,
                    ping_author: bool = False, file: Any = None) -> str:
        raise NotImplementedError

    async def _send_part(self, channel_id: int, part: str, reference: int | None, nonce: str | None, *,
                         ping_author: bool = False) -> str:
        raise NotImplementedError

    async def send_file(self, chat: str, file: OutgoingFile, reply_to: str | None = None, *,
                        idempotency_key: str | None = None) -> str | None:
        """Post ``file`` as an attachment (the caption its content, referencing ``reply_to`` or the
        chat's newest trigger); a caption too long for one message follows as text. Returns the
        id of the message that carries the file. ``idempotency_key`` (optional) becomes nonces
        with ``enforce_nonce``, as for ``send``; a retry after the file went sends only the rest."""
        import trio

        if self.client is None or self.client.user is None:
            raise ChannelError(f"discord is {self.state}", retryable=True)
        channel_id, reference = locate(chat, reply_to or self._last_trigger.get(chat))  # (in its thread)
        caption = file.caption or ""
        inline = caption if caption.strip() and utf16_len(caption) <= PART_LIMIT else ""
        rest = split_text(caption, PART_LIMIT, measure=utf16_len) if caption.strip() and not inline else []
        key = self._partial.key(chat, f"file:{file.path}\n{caption}", reply_to)
        ids = list(self._partial.done(key))

        def nonce(suffix: str) -> str | None:
            return f"{idempotency_key}.{suffix}"[-NONCE_MAX:] if idempotency_key else None

        if not ids:
            try:
                fp = await trio.to_thread.run_sync(file.path.open, "rb")
            except OSError as exc:
                raise ChannelError(f"discord: the file to send cannot be read ({exc.strerror or exc})",
                                   retryable=False) from None
            close = fp.close  # (discord.File stubs fp.close while it owns it)
            try:
                sent = await self._post(channel_id, inline or None, reference, nonce("f"),
                                        ping_author=bool(reply_to), file=(fp, upload_name(file)))
                ids.append(platform_id_in(chat, channel_id, sent))
            finally:
                close()
            self._partial.record(key, ids[0])
        for index in range(len(ids) - 1, len(rest)):
            sent = await self._send_part(channel_id, rest[index], None, nonce(f"c{index}"))
            ids.append(platform_id_in(chat, channel_id, sent))
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return ids[0]
