"""QQ's files over OneBot v11, in and out: ``image``, ``record`` (voice), ``video`` and ``file``
segments become stored attachments (or the notes that replace them); a file out is an inline
``base64://`` image segment or an upload of a group/private file through a folder both sides see.

In, per segment, the ways the implementations offer, tried in order until one gives bytes:
- the segment's ``url`` (NapCat, Lagrange, go-cqhttp give one for images; NapCat for files and
  videos too), streamed by the intake;
- the action ``get_image`` / ``get_record`` (``out_format`` mp3) / ``get_file`` (NapCat), whose
  answer holds ``base64`` (NapCat with ``enableLocalFile2Url``), a local ``file`` path, or a ``url``.
A record tries ``get_record`` first: the URL NapCat gives for it is QQ's raw SILK, which nothing
reads (a URL that gives SILK counts as a failed way). A local path is read only inside the shared folder (``media_dir``, the path mapped from
``media_dir_onebot``, no symlink out of it); any other path the implementation names is refused.

Out: an image up to ``image_max_mb`` goes as ``{"type": "image", "data": {"file": "base64://..."}}``
in one ``send_msg`` (quoting the trigger, the caption as its text); anything else is copied into
``<media_dir>/outgoing/`` and sent with ``upload_group_file`` / ``upload_private_file`` (NapCat,
go-cqhttp, Lagrange), the caption as a text message after it. Without a shared folder, or where the
implementation has no upload action, a line naming the file goes instead.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import attrs
import trio

from ..media.intake import Incoming, with_notes
from ..media.limits import megabytes
from ..records import AttachmentKind, InboundMessage, OutgoingFile
from .base import ChannelError
from .common import split_text
from .onebot_actions import ActionFailed
from .onebot_messages import markdown_to_plain, parse_chat, render, to_segments

if TYPE_CHECKING:
    from ..media.intake import Fetch, MediaIntake
    from .common import PartialSends
    from .onebot_actions import OneBotConnection

log = logging.getLogger("ngb.channels.onebot")

# segment type -> (the kind it is taken as, the action that fetches it)
MEDIA = {
    "image": (AttachmentKind.IMAGE, "get_image"),
    "record": (AttachmentKind.VOICE, "get_record"),
    "video": (AttachmentKind.VIDEO, "get_file"),
    "file": (AttachmentKind.DOCUMENT, "get_file"),
}
RECORD_FORMAT = "mp3"  # get_record's out_format: what the transcription services read
OUTGOING = "outgoing"  # the subfolder of the shared folder that uploads are staged in
STALE_UPLOAD = 3600.0  # a staged upload left behind (the call timed out) is removed after this
UNSUPPORTED = 1404  # OneBot's retcode for an action the implementation does not have
READ_CHUNK = 1 << 16

Source = Callable[[], Awaitable[AsyncIterator[bytes]]]


class Unavailable(Exception):
    """One way to a file did not give it; the reason goes into the note."""


def declared_size(data: dict[str, Any]) -> int | None:
    raw = str(data.get("file_size") or "")
    return int(raw) if raw.isdigit() else None


def incoming_of(segment: dict[str, Any]) -> Incoming:
    """A media segment as the intake takes it. Only a ``file`` segment's name is a real file name
    (an image's or a record's ``file`` is QQ's hash of it)."""
    kind = MEDIA[segment["type"]][0]
    data = segment["data"]
    name = str(data.get("name") or data.get("file") or "") or None if segment["type"] == "file" else None
    return Incoming(kind, name=name, size=declared_size(data))


def http_url(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith(("http://", "https://")) else None


def shared_path(given: str, local_root: Path, remote_root: str) -> Path | None:
    """The daemon's path of a file the implementation names (``/x/y`` or ``file:///x/y``), when it
    lies inside the shared folder and is a regular file there (no symlink leads out); else None."""
    if given.startswith("file://"):
        given = unquote(urlsplit(given).path)
    path = PurePosixPath(given)
    if not path.is_absolute() or ".." in path.parts:
        return None
    try:
        inside = path.relative_to(PurePosixPath(remote_root))
    except ValueError:
        return None
    try:
        root = local_root.resolve(strict=True)
        local = root.joinpath(*inside.parts).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not local.is_relative_to(root) or not local.is_file():
        return None
    return local


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _read(path: Path) -> AsyncIterator[bytes]:
    async with await trio.open_file(path, "rb") as f:
        while chunk := await f.read(READ_CHUNK):
            yield chunk


def _decode(value: str) -> bytes:
    try:
        return base64.b64decode(value.removeprefix("base64://"), validate=True)
    except (binascii.Error, ValueError):
        raise Unavailable("the implementation's base64 is not valid") from None


class OneBotFiles:
    """The files half of OneBotChannel (a mixin: it shares the channel's connection and sends)."""

    settings: Any
    media: MediaIntake
    self_id: str
    nickname: str
    state: str
    _conn: OneBotConnection | None
    _partial: PartialSends

    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        raise NotImplementedError

    async def _send_msg(self, conn: OneBotConnection, kind: str, target: int, message: list[dict[str, Any]]) -> str:
        raise NotImplementedError

    def _quote(self, chat: str, kind: str, target: int, reply_to: str | None) -> str | None:
        raise NotImplementedError

    # -- in ----------------------------------------------------------------------------------------------
    async def take_media(self, inbound: InboundMessage, event: dict[str, Any]) -> InboundMessage:
        """The message with its files stored as attachments; the text loses their placeholders and
        gains a note for each file that could not be had."""
        segments = to_segments(event.get("message", event.get("raw_message", "")))
        files = [s for s in segments if s["type"] in MEDIA]
        if not files:
            return inbound
        taken = await self.media.take_all(inbound.chat, [(incoming_of(s), self._fetch(s)) for s in files])
        self_id = str(event.get("self_id") or self.self_id or "")
        text = render([s for s in segments if s["type"] not in MEDIA], self_id, self.nickname).text
        return attrs.evolve(inbound, text=with_notes(text, taken.notes), attachments=taken.attachments)

    def _fetch(self, segment: dict[str, Any]) -> Fetch:
        kind, data = segment["type"], segment["data"]
        sources: list[Source] = []
        params: dict[str, Any] = {"file_id": str(data["file_id"])} if data.get("file_id") else {
            "file": str(data.get("file") or "")}
        if kind == "record":
            params["out_format"] = RECORD_FORMAT
        if params.get("file") or params.get("file_id"):
            sources.append(lambda: self._from_action(MEDIA[kind][1], params))
        url = http_url(data.get("url"))
        if url:
            # a record's URL is QQ's raw SILK on NapCat: the action (which converts it) goes first
            sources.insert(len(sources) if kind == "record" else 0, lambda: self._from_url(url))

        async def chunks() -> AsyncIterator[bytes]:
            reasons: list[str] = []
            for source in sources:
                started = False
                try:
                    stream = await source()
                    async with aclosing(stream):  # type: ignore[type-var]
                        first = await anext(stream, None)
                        if kind == "record" and first and first.lstrip(b"\x02").startswith(b"#!SILK"):
                            raise Unavailable("QQ's raw SILK audio, which nothing reads")
                        started = True
                        if first is not None:
                            yield first
                            async for chunk in stream:
                                yield chunk
                    return
                except Exception as exc:  # noqa: BLE001 - this way failed before any byte; the next may work
                    if started:
                        raise
                    reasons.append(str(exc) or type(exc).__name__)
            raise RuntimeError("; ".join(reasons) or "the message gives no way to fetch it")

        return chunks

    async def _from_url(self, url: str) -> AsyncIterator[bytes]:
        return self.media.fetch_url(url)()  # type: ignore[return-value]

    async def _from_action(self, action: str, params: dict[str, Any]) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise Unavailable(f"{action}: not connected")
        try:
            data = await conn.call(action, params, self.settings.api_timeout)
        except ActionFailed as exc:
            raise Unavailable(str(exc)) from None
        except (TimeoutError, trio.TooSlowError):
            raise Unavailable(f"{action}: no answer in time") from None
        except ConnectionError:
            raise Unavailable(f"{action}: the connection closed") from None
        if not isinstance(data, dict):
            raise Unavailable(f"{action} answered no file")
        encoded = data.get("base64")
        if isinstance(encoded, str) and encoded:
            return _once(_decode(encoded))
        given = data.get("file")
        if isinstance(given, str) and given.startswith("base64://"):
            return _once(_decode(given))
        url = http_url(data.get("url")) or http_url(given)
        if isinstance(given, str) and given and not http_url(given):
            local = self._shared(given)
            if local is not None:
                return _read(local)
            if url is None:
                raise Unavailable(f"{action} gave a path on the OneBot host that is not shared "
                                  "(set channels.qq.media_dir)")
        if url is None:
            raise Unavailable(f"{action} answered no file")
        return await self._from_url(url)

    def _shared(self, given: str) -> Path | None:
        local_root, remote_root = self.settings.media_dir, self.settings.media_dir_remote
        if local_root is None or remote_root is None:
            return None
        local = shared_path(given, local_root, remote_root)
        if local is None:
            log.warning("qq: not reading %r: it is not a file inside channels.qq.media_dir", given)
        return local

    # -- out ---------------------------------------------------------------------------------------------
    async def send_file(self, chat: str, file: OutgoingFile, reply_to: str | None = None) -> str | None:
        """An image (up to ``image_max_mb``) as a base64 image segment quoting the trigger, the
        caption its text; anything else uploaded as a group or private file through the shared
        folder, the caption after it; without that folder, a line naming the file."""
        kind, target = parse_chat(chat)
        conn = self._conn
        if conn is None:
            raise ChannelError(f"qq is {self.state}", retryable=True)
        limit = self.settings.image_max_bytes
        if file.is_image and file.size <= limit:
            return await self._send_image(conn, chat, kind, target, file, reply_to)
        if self.settings.media_dir is None:
            why = "QQ file uploads are not set up" if not file.is_image else f"images over {megabytes(limit)} " \
                  "go as files, and QQ file uploads are not set up"
            log.warning("qq: %s not sent as a file: set channels.qq.media_dir (docs/channels/qq-onebot.md)",
                        file.name)
            return await self._name_it(chat, file, reply_to, why)
        return await self._upload(conn, chat, kind, target, file, reply_to)

    async def _send_image(self, conn: OneBotConnection, chat: str, kind: str, target: int, file: OutgoingFile,
                          reply_to: str | None) -> str | None:
        parts = split_text(markdown_to_plain(file.caption), self.settings.part_limit) if file.caption.strip() else []
        key = self._partial.key(chat, f"file:{file.path}\n{file.caption}", reply_to)
        ids = list(self._partial.done(key))
        if not ids:
            try:
                data = await trio.to_thread.run_sync(file.path.read_bytes)
            except OSError as exc:
                raise ChannelError(f"qq: the file to send cannot be read ({exc.strerror or exc})",
                                   retryable=False) from None
            message: list[dict[str, Any]] = []
            quote = self._quote(chat, kind, target, reply_to)
            if quote:
                message.append({"type": "reply", "data": {"id": quote}})
            message.append({"type": "image", "data": {"file": "base64://" + base64.b64encode(data).decode()}})
            if parts:
                message.append({"type": "text", "data": {"text": parts[0]}})
            ids.append(await self._send_msg(conn, kind, target, message))
            self._partial.record(key, ids[-1])
        for index in range(len(ids), len(parts)):
            ids.append(await self._send_msg(conn, kind, target, [{"type": "text", "data": {"text": parts[index]}}]))
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return next((i for i in ids if i), None)

    async def _upload(self, conn: OneBotConnection, chat: str, kind: str, target: int, file: OutgoingFile,
                      reply_to: str | None) -> str | None:
        key = self._partial.key(chat, f"upload:{file.path}\n{file.caption}", reply_to)
        if not self._partial.done(key):
            try:
                staged, remote = await trio.to_thread.run_sync(self._stage, file)
            except OSError as exc:
                log.error("qq: cannot put %s into channels.qq.media_dir (%s); naming it instead", file.name, exc)
                return await self._name_it(chat, file, reply_to, "the daemon could not stage the upload")
            action = "upload_group_file" if kind == "group" else "upload_private_file"
            params: dict[str, Any] = {"group_id" if kind == "group" else "user_id": target, "file": remote,
                                      "name": file.name}
            keep = False
            try:
                await conn.call(action, params, self.settings.upload_timeout)
            except ActionFailed as exc:
                if exc.retcode == UNSUPPORTED:
                    log.warning("qq: the OneBot implementation has no %s; naming %s instead", action, file.name)
                    return await self._name_it(chat, file, reply_to, "this QQ connection cannot upload files")
                raise ChannelError(f"qq: {exc}", retryable=exc.retcode not in (1400, UNSUPPORTED)) from None
            except (TimeoutError, trio.TooSlowError):
                keep = True  # it may still be reading it; swept after an hour
                raise ChannelError(f"qq: {action} got no answer in time", retryable=True) from None
            except ConnectionError as exc:
                raise ChannelError(f"qq: {exc}", retryable=True) from None
            finally:
                if not keep:
                    staged.unlink(missing_ok=True)
            self._partial.record(key, "")
        sent = await self.send(chat, file.caption, reply_to) if file.caption.strip() else None
        self._partial.finish(key)
        return sent

    def _stage(self, file: OutgoingFile) -> tuple[Path, str]:
        """Copy the file into ``<media_dir>/outgoing/`` (readable by the implementation's user);
        its path there as the daemon and as the implementation see it."""
        folder = self.settings.media_dir / OUTGOING
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        now = time.time()
        for old in folder.iterdir():
            try:
                if old.is_file() and not old.is_symlink() and now - old.stat().st_mtime > STALE_UPLOAD:
                    old.unlink()
            except OSError:
                continue
        name = f"{secrets.token_hex(6)}-{PurePath(file.name).name or 'file'}"
        staged = folder / name
        with file.path.open("rb") as src, open(staged, "xb") as dst:  # noqa: PTH123 - "x": never an existing path
            shutil.copyfileobj(src, dst)
        os.chmod(staged, 0o644)  # noqa: PTH101 - the implementation may run as another user
        return staged, f"{self.settings.media_dir_remote.rstrip('/')}/{OUTGOING}/{name}"

    async def _name_it(self, chat: str, file: OutgoingFile, reply_to: str | None, why: str) -> str | None:
        label = "image" if file.is_image else "file"
        line = f"[{label} {file.name}, {megabytes(file.size)}: not sent, {why}]"
        text = f"{file.caption}\n{line}" if file.caption.strip() else line
        return await self.send(chat, text, reply_to)
