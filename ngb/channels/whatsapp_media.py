"""WhatsApp's files, the daemon's side (bridge/PROTOCOL.md "Media").

In: the bridge (a child process on this host) downloads a message's file with Baileys into the
folder this side gives it (``<state>/whatsapp/media``, 0700, files 0600), never past the size limit
given with it, and the ``message`` frame's ``media`` names the file; it is read from there in
chunks into the media store (``MediaIntake.take_all``) and deleted once the message is stored. A
file the bridge did not download (declared too large, the download failed) becomes the note.
Out: a ``send_file`` frame naming the stored bytes; the bridge sends an image message for an image
and a document message for anything else.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import trio

from ..media.files import CHUNK, TooLarge
from ..media.intake import Fetch, Incoming, MediaIntake, Taken, with_notes
from ..records import Attachment, AttachmentKind, OutgoingFile

# the bridge's `kind` -> (the attachment's kind, the word a note uses)
KINDS = {
    "image": (AttachmentKind.IMAGE, "photo"),
    "video": (AttachmentKind.VIDEO, "video"),
    "audio": (AttachmentKind.AUDIO, "audio"),
    "voice": (AttachmentKind.VOICE, "voice message"),
    "document": (AttachmentKind.DOCUMENT, "file"),
}


@attrs.frozen
class BridgeMedia:
    """The ``media`` field of a ``message`` frame: the file the bridge downloaded (or why not)."""

    kind: AttachmentKind
    label: str
    path: Path | None = None
    mime: str | None = None
    name: str | None = None
    declared_size: int | None = None
    caption: str = ""
    error: str | None = None
    too_large: bool = False


def media_of(frame: dict[str, Any]) -> BridgeMedia | None:
    media = frame.get("media")
    if not isinstance(media, dict):
        return None
    kind, label = KINDS.get(str(media.get("kind")), (AttachmentKind.OTHER, "file"))
    size = media.get("fileLength")
    return BridgeMedia(
        kind=kind,
        label=label,
        path=Path(str(media["path"])) if media.get("path") else None,
        mime=str(media["mimetype"]) if media.get("mimetype") else None,
        name=str(media["fileName"]) if media.get("fileName") else None,
        declared_size=int(size) if isinstance(size, int | float) and size >= 0 else None,
        caption=str(media.get("caption") or ""),
        error=str(media["error"]) if media.get("error") else None,
        too_large=bool(media.get("too_large")),
    )


def inside(folder: Path, path: Path | None) -> Path | None:
    """``path`` when it is a file directly in ``folder`` (where this side told the bridge to put
    downloads); None for anything else, so a frame never makes the daemon read elsewhere."""
    if path is None or not path.is_absolute() or path.parent.resolve() != folder.resolve():
        return None
    return folder.resolve() / path.name


def fetch_file(media: BridgeMedia, folder: Path, limit: int) -> Fetch:
    """The bytes of the bridge's download, read in chunks (a symlink is refused); the bridge's
    reason when it has none."""

    async def chunks() -> AsyncIterator[bytes]:
        if media.too_large:
            raise TooLarge(media.declared_size or limit + 1, limit)
        path = inside(folder, media.path)
        if path is None:
            raise RuntimeError(media.error or "the bridge did not download it")
        fd = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as file:
            while chunk := await trio.to_thread.run_sync(file.read, CHUNK):
                yield chunk

    return chunks


def discard(media: BridgeMedia | None, folder: Path) -> None:
    """Delete the bridge's download (the bytes are in the media store now, or refused)."""
    path = inside(folder, media.path) if media is not None else None
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


async def take(intake: MediaIntake, chat: str, media: BridgeMedia, folder: Path) -> tuple[str, tuple[Attachment, ...]]:
    """The message's text (its caption, with the note of a file not taken) and its attachments."""
    incoming = Incoming(media.kind, name=media.name, mime=media.mime, size=media.declared_size, label=media.label)
    taken: Taken = await intake.take_all(chat, [(incoming, fetch_file(media, folder, intake.limits.max_file_bytes))])
    return with_notes(media.caption, taken.notes), taken.attachments


def file_frame(req: str, jid: str, file: OutgoingFile) -> dict[str, Any]:
    """The ``send_file`` command: the stored bytes' path (the bridge reads it, never changes it)."""
    return {
        "type": "send_file",
        "req": req,
        "chat": jid,
        "path": str(file.path),
        "name": file.name,
        "mime": file.mime,
        "kind": "image" if file.is_image else "document",
        "caption": file.caption,
    }
