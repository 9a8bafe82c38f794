"""Lark's files, in and out: the image, file, audio and video of a message (and the images and videos
embedded in a rich-text ``post``) become stored ``Attachment``s (or the notes that replace them);
a file out is an upload, then an ``image`` or ``file`` message, its caption a text message after it.

In: the event names each file by a key (``image_key`` for images, ``file_key`` for files, audio and
video; no size, no type). Each is downloaded with the tenant token from the message-resources API,
``GET /open-apis/im/v1/messages/{message_id}/resources/{key}?type=image|file`` (lark-oapi's
``GetMessageResourceRequest``), streamed here on the trio side with httpx rather than through the
SDK's ``aget``, which holds the whole file (up to 100 MB) in memory before a limit could be checked.
An error answer is Lark's JSON ``{"code", "msg"}``; a rejected token is refreshed once. Stickers
cannot be downloaded by a bot: they stay a placeholder.

Out: ``POST /open-apis/im/v1/images`` (multipart ``image_type=message``, ``image``) -> ``image_key``
for an image Lark takes (JPEG, PNG, WEBP, GIF, TIFF, BMP, ICO; at most 10 MB), else
``POST /open-apis/im/v1/files`` (``file_type`` pdf/doc/xls/ppt or stream, ``file_name``, ``file``;
at most 30 MB) -> ``file_key``; both through the SDK (``image.acreate``/``file.acreate``). Then
the message goes out as ``send`` sends text: a reply to the trigger (in its thread when asked),
with the outbox's key as its ``uuid``.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import attrs
import httpx
import trio

from ..media.files import CHUNK
from ..media.intake import Fetch, Incoming, with_notes
from ..records import AttachmentKind, InboundMessage, OutgoingFile
from .base import ChannelError
from .common import split_text
from .lark_sdk import TOKEN_INVALID, ApiError, LarkParts
from .lark_settings import chat_id_of

log = logging.getLogger("ngb.channels.lark")

IMAGE_MAX = 10 * 1024 * 1024  # im/v1/images
FILE_MAX = 30 * 1024 * 1024  # im/v1/files
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif", "image/tiff", "image/bmp",
               "image/x-icon", "image/vnd.microsoft.icon"}
FILE_TYPES = {
    "application/pdf": "pdf",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "doc",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xls",
    "application/vnd.ms-powerpoint": "ppt",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "ppt",
}  # anything else goes up as "stream" (videos and audio too: sent as file messages)
CAPTION_LIMIT = 4000
UUID_MAX = 50


@attrs.frozen
class Resource:
    """One file a message carries: its key, the resource ``type`` it is downloaded as, and what the
    event says of it."""

    key: str
    type: str  # "image" | "file"
    incoming: Incoming


def resources_of(message_type: str, content: str) -> list[Resource]:
    """The downloadable files of a message's content JSON, in order."""
    try:
        data = json.loads(content or "{}")
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    if message_type == "image" and data.get("image_key"):
        return [Resource(str(data["image_key"]), "image", Incoming(AttachmentKind.IMAGE))]
    if message_type in ("file", "audio", "media") and data.get("file_key"):
        kind = {"file": AttachmentKind.DOCUMENT, "audio": AttachmentKind.VOICE, "media": AttachmentKind.VIDEO}
        name = str(data.get("file_name") or "") or None
        return [Resource(str(data["file_key"]), "file", Incoming(kind[message_type], name=name))]
    if message_type != "post":
        return []
    doc = data if "content" in data else next((v for v in data.values() if isinstance(v, dict) and "content" in v), {})
    found: list[Resource] = []
    for paragraph in doc.get("content") or []:
        for el in paragraph if isinstance(paragraph, list) else []:
            if not isinstance(el, dict):
                continue
            if el.get("tag") == "img" and el.get("image_key"):
                found.append(Resource(str(el["image_key"]), "image", Incoming(AttachmentKind.IMAGE)))
            elif el.get("tag") == "media" and el.get("file_key"):
                found.append(Resource(str(el["file_key"]), "file", Incoming(AttachmentKind.VIDEO)))
    return found


def file_type_of(mime: str) -> str:
    return FILE_TYPES.get(mime, "stream")


def goes_as_image(file: OutgoingFile) -> bool:
    """An image Lark's image upload takes (the rest of the images go as files)."""
    return file.is_image and file.mime in IMAGE_TYPES and file.size <= IMAGE_MAX


class LarkMedia(LarkParts):
    """The files half of LarkChannel (a mixin: it shares the channel's client, token and sends)."""

    state: str
    _partial: Any  # common.PartialSends
    _last_trigger: Any  # common.LastTrigger

    if TYPE_CHECKING:  # lark_send's (declared only: a method here would shadow it in LarkChannel)
        async def _deliver(self, chat_id: str, msg_type: str, content: str, reply_to: str | None,
                           uuid: str | None) -> str: ...

        async def _send_part(self, chat_id: str, part: str, reply_to: str | None, uuid: str | None) -> str: ...

        def _rate_limited(self, exc: ApiError, attempt: int) -> bool: ...

        def _send_error(self, exc: Exception) -> ChannelError | None: ...

    # -- in -------------------------------------------------------------------------------------------
    async def _with_media(self, inbound: InboundMessage, message_type: str, content: str) -> InboundMessage:
        """``inbound`` with the message's files taken (attachments, or a note each)."""
        found = resources_of(message_type, content)
        if not found:
            return inbound
        message_id = inbound.platform_id or ""
        items = [(r.incoming, self._resource_fetch(message_id, r.key, r.type)) for r in found]
        taken = await self.media.take_all(inbound.chat, items)
        return attrs.evolve(inbound, text=with_notes(inbound.text, taken.notes), attachments=taken.attachments)

    def _resource_fetch(self, message_id: str, key: str, kind: str) -> Fetch:
        url = (f"{self.settings.domain}/open-apis/im/v1/messages/{quote(message_id, safe='')}"
               f"/resources/{quote(key, safe='')}")

        async def chunks() -> AsyncIterator[bytes]:
            async with httpx.AsyncClient(timeout=self.settings.request_timeout) as client:
                for attempt in (0, 1):
                    token = await self._tenant_token(refresh=attempt == 1)
                    headers = {"Authorization": f"Bearer {token}"}
                    async with client.stream("GET", url, params={"type": kind}, headers=headers) as response:
                        if response.status_code < 300:
                            async for chunk in response.aiter_bytes(CHUNK):
                                yield chunk
                            return
                        code, msg = await _error_of(response)
                        if code in TOKEN_INVALID and attempt == 0:
                            continue
                        raise RuntimeError(f"code {code}: {msg}" if code else f"HTTP {response.status_code}")

        return chunks

    # -- out ------------------------------------------------------------------------------------------
    async def send_file(self, chat: str, file: OutgoingFile, reply_to: str | None = None, *,
                        idempotency_key: str | None = None) -> str | None:
        """Upload ``file`` and send it as an image or a file message (a reply to ``reply_to`` or the
        chat's newest trigger, as ``send`` replies); the caption follows as text. Returns the id
        of the message that carries the file; a retry after it went sends only the rest."""
        chat_id = chat_id_of(chat)
        if self.client is None:
            raise ChannelError(f"lark is {self.state}", retryable=True)
        if file.size > FILE_MAX:
            raise ChannelError(f"lark: {file.name} is larger than Lark takes ({file.size} bytes > 30 MB)",
                               retryable=False)
        target = reply_to or self._last_trigger.get(chat)
        threaded = bool(target) and (self.settings.reply_in_thread or bool(self._threads.get(target or "")))
        caption = file.caption if file.caption.strip() else ""
        parts = split_text(caption, CAPTION_LIMIT) if caption else []
        key = self._partial.key(chat, f"file:{file.path}\n{caption}", reply_to)
        ids = list(self._partial.done(key))

        def uuid(suffix: str) -> str | None:
            return f"{idempotency_key}.{suffix}"[-UUID_MAX:] if idempotency_key else None

        if not ids:
            try:
                data = await trio.to_thread.run_sync(file.path.read_bytes)
            except OSError as exc:
                raise ChannelError(f"lark: the file to send cannot be read ({exc.strerror or exc})",
                                   retryable=False) from None
            msg_type, content = await self._upload(file, data)
            ids.append(await self._deliver(chat_id, msg_type, content, target, uuid("f")))
            self._partial.record(key, ids[0])
        for index in range(len(ids) - 1, len(parts)):
            to = target if threaded else None
            ids.append(await self._send_part(chat_id, parts[index], to, uuid(f"c{index}")))
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return ids[0]

    async def _upload(self, file: OutgoingFile, data: bytes) -> tuple[str, str]:
        """The bytes uploaded: the message type and content that show them."""
        from lark_oapi.api.im.v1 import (
            CreateFileRequest,
            CreateFileRequestBody,
            CreateImageRequest,
            CreateImageRequestBody,
        )

        name = file.name or "file"

        def stream() -> io.BytesIO:
            buffer = io.BytesIO(data)
            buffer.name = name  # the multipart part's filename (httpx takes it from .name)
            return buffer

        if goes_as_image(file):
            def image_request() -> Any:
                body = CreateImageRequestBody.builder().image_type("message").image(stream()).build()
                return CreateImageRequest.builder().request_body(body).build()

            response = await self._upload_call("im.v1.image.create", self.client.im.v1.image.acreate, image_request)
            return "image", json.dumps({"image_key": response.data.image_key})

        def file_request() -> Any:
            body = CreateFileRequestBody.builder().file_type(file_type_of(file.mime)).file_name(name) \
                .file(stream()).build()
            return CreateFileRequest.builder().request_body(body).build()

        response = await self._upload_call("im.v1.file.create", self.client.im.v1.file.acreate, file_request)
        return "file", json.dumps({"file_key": response.data.file_key})

    async def _upload_call(self, what: str, call: Any, build: Any) -> Any:
        for attempt in range(3):
            try:
                return await self._api(what, call, build)
            except Exception as exc:  # noqa: BLE001 - mapped to ChannelError, or raised as it is
                if isinstance(exc, ApiError) and self._rate_limited(exc, attempt):
                    await trio.sleep(1.0 + attempt)
                    continue
                error = self._send_error(exc)
                if error is None:
                    raise
                raise error from None
        raise ChannelError("lark: could not upload", retryable=True)


async def _error_of(response: httpx.Response) -> tuple[Any, str]:
    """Lark's ``{"code", "msg"}`` of an error answer (read at most 64 KB of it)."""
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > 65536:
            break
    try:
        data = json.loads(body)
    except ValueError:
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    return data.get("code"), str(data.get("msg") or "")
