"""DingTalk's files, in and out: a robot message's picture, file, voice, video or rich-text pictures
become stored ``Attachment``s (or the notes that replace them), and a file out is uploaded, then
sent as the robot's image or file message.

In: each file of a message carries a ``downloadCode``. Once the intake has decided to take it, the
code is exchanged for a short-lived URL through the robot API (``POST
/v1.0/robot/messageFiles/download`` ``{downloadCode, robotCode}`` with the
``x-acs-dingtalk-access-token`` header -> ``{downloadUrl}``), and that URL (signed; no token) is
streamed into the media store. DingTalk declares no size. A voice message's ``recognition`` (its
own speech-to-text) is the transcript, kept even when the download fails. A rich-text message's
text runs are its text; its pictures are its attachments.

Out: the file goes up with ``POST <oapi>/media/upload?access_token=...&type=image|file``
(multipart ``media``) -> ``{errcode: 0, media_id: "@..."}``, then the robot API sends it to the
chat (``groupMessages/send`` or ``oToMessages/batchSend``, as for text): an image (JPEG, PNG, GIF,
BMP) as ``sampleImageMsg`` ``{photoURL: media_id}``, a PDF, Word, Excel, ZIP or RAR file as
``sampleFile`` ``{mediaId, fileName, fileType}``; the caption follows as text. Where a file message
is not allowed (a 1:1 chat the robot API cannot reach, which only its session webhook can: that
takes text and markdown only), an image goes as markdown ``![name](media_id)``; a file of another
type, or one that cannot reach the chat, becomes a markdown line naming it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import httpx
import trio

from ..media.intake import Fetch, Incoming, Taken
from ..media.limits import MB, megabytes
from ..records import AttachmentKind, OutgoingFile
from .base import ChannelError
from .dingtalk_settings import conversation_id_of
from .dingtalk_stream import json_answer

if TYPE_CHECKING:
    from dingtalk_stream import ChatbotMessage

    from ..media.intake import MediaIntake
    from .common import Lru, PartialSends
    from .dingtalk_conversations import Conversation

log = logging.getLogger("ngb.channels.dingtalk")

DOWNLOAD_PATH = "/v1.0/robot/messageFiles/download"
UPLOAD_PATH = "/media/upload"
UPLOAD_MAX = 20 * MB  # media/upload takes images and files up to 20 MB
IMAGE_TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/bmp": "bmp"}
FILE_TYPES = {  # what sampleFile's fileType takes
    "application/pdf": "pdf", "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/zip": "zip", "application/vnd.rar": "rar", "application/x-rar-compressed": "rar",
}
TOKEN_ERRORS = {40001, 40014, 42001}  # oapi: the access token is invalid or expired


def files_of(message: ChatbotMessage) -> list[tuple[Incoming, str]]:
    """The files a robot message carries, each with its download code: (what it is, code)."""
    kind = message.message_type
    content = message.extensions.get("content")
    content = content if isinstance(content, dict) else {}
    if kind == "picture" and message.image_content is not None:
        code = message.image_content.download_code or content.get("pictureDownloadCode")
        return [(Incoming(AttachmentKind.IMAGE, label="photo"), str(code))] if code else []
    if kind == "richText" and message.rich_text_content is not None:
        out: list[tuple[Incoming, str]] = []
        for item in message.rich_text_content.rich_text_list or []:
            if isinstance(item, dict) and "text" not in item:
                code = item.get("downloadCode") or item.get("pictureDownloadCode")
                if code:
                    out.append((Incoming(AttachmentKind.IMAGE, label="photo"), str(code)))
        return out
    code = content.get("downloadCode")
    if not code:
        return []
    if kind == "audio":
        said = str(content.get("recognition") or "").strip() or None
        return [(Incoming(AttachmentKind.VOICE, transcript=said, label="voice message"), str(code))]
    if kind == "video":
        video_type = str(content.get("videoType") or "mp4")
        return [(Incoming(AttachmentKind.VIDEO, name=f"video.{video_type}", label="video"), str(code))]
    if kind == "file":
        return [(Incoming(AttachmentKind.DOCUMENT, name=str(content.get("fileName") or "") or None), str(code))]
    return []


def message_of(file: OutgoingFile) -> tuple[str, str] | None:
    """(upload type, file type) for a robot image or file message; None: DingTalk sends no such file."""
    if file.is_image:
        ext = IMAGE_TYPES.get(file.mime)
        return ("image", ext) if ext else None
    ext = FILE_TYPES.get(file.mime)
    return ("file", ext) if ext else None


def upload_name(file: OutgoingFile, ext: str) -> str:
    """The file's name, ending in the extension of its type (DingTalk shows the file by it)."""
    name = file.name or "file"
    return name if PurePath(name).suffix.lower().lstrip(".") == ext else f"{name}.{ext}"


class DingTalkFiles:
    """The files half of DingTalkChannel (a mixin: it shares the channel's HTTP client, token and
    sending). Inbound: ``take_files``; outbound: ``send_file``."""

    settings: Any
    state: str
    media: MediaIntake
    http: httpx.AsyncClient | None
    _convs: Lru
    _partial: PartialSends
    _token: tuple[str, float] | None

    if TYPE_CHECKING:  # DingTalkSending's, in the channel
        async def _access_token(self) -> str: ...

        async def _robot_message(self, chat: str, conversation_id: str, conv: Conversation | None, msg_key: str,
                                 param: dict[str, Any]) -> str: ...

        async def _deliver(self, chat: str, conversation_id: str, kind: str, body: dict[str, str]) -> str | None: ...

        async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None: ...

    # -- in ------------------------------------------------------------------------------------------------
    async def take_files(self, chat: str, message: ChatbotMessage) -> Taken:
        """Every file of a robot message into the media store (or a note each)."""
        files = files_of(message)
        if not files:
            return Taken()
        return await self.media.take_all(chat, [(incoming, self._download(code)) for incoming, code in files])

    def _download(self, code: str) -> Fetch:
        """A fetch: the download code exchanged for its URL, then the URL streamed."""

        async def chunks() -> AsyncIterator[bytes]:
            url = await self._download_url(code)
            stream = self.media.fetch_url(url)()  # the signed URL: no token goes with it
            assert isinstance(stream, AsyncIterable)
            async for chunk in stream:
                yield chunk

        return chunks

    async def _download_url(self, code: str) -> str:
        if self.http is None:
            raise RuntimeError(f"dingtalk is {self.state}")
        body = {"downloadCode": code, "robotCode": self.settings.robot_code}
        for attempt in range(2):
            token = await self._access_token()
            response = await self.http.post(self.settings.api_base + DOWNLOAD_PATH, json=body,
                                            headers={"x-acs-dingtalk-access-token": token})
            answer = json_answer(response)
            if response.status_code == 401 and attempt == 0:
                self._token = None
                continue
            url = answer.get("downloadUrl")
            if response.status_code == 200 and isinstance(url, str) and url.startswith(("https://", "http://")):
                return url
            code_text = str(answer.get("code") or "")
            raise RuntimeError(f"download code refused: HTTP {response.status_code} {code_text}".strip())
        raise RuntimeError("download code refused: the access token was refused twice")

    # -- out -----------------------------------------------------------------------------------------------
    async def send_file(self, chat: str, file: OutgoingFile, reply_to: str | None = None) -> str | None:
        """Send ``file`` as the robot's image or file message (markdown where none is allowed), the
        caption after it. Returns the robot API's processQueryKey of the file's message (None when it
        went through the session webhook). A retry after the file went sends only the caption."""
        conversation_id = conversation_id_of(chat)
        if self.http is None:
            raise ChannelError(f"dingtalk is {self.state}", retryable=True)
        if file.size > UPLOAD_MAX:
            raise ChannelError(f"dingtalk: {file.name} is larger than DingTalk takes ({megabytes(file.size)} > "
                               f"{megabytes(UPLOAD_MAX)})", retryable=False)
        caption = file.caption or ""
        key = self._partial.key(chat, f"file:{file.path}\n{caption}", reply_to)
        if not self._partial.done(key):
            first, inline = await self._send_one(chat, conversation_id, file)
            self._partial.record(key, first or "")
            if inline:
                self._partial.record(key, "caption")  # it went with the file
        done = self._partial.done(key)
        if caption.strip() and len(done) == 1:
            await self.send(chat, caption)
        self._partial.finish(key)
        return done[0] or None

    async def _send_one(self, chat: str, conversation_id: str, file: OutgoingFile) -> tuple[str | None, bool]:
        """The file's own message: (its processQueryKey, whether the caption went with it)."""
        conv: Conversation | None = self._convs.get(chat)
        reachable = conv is None or conv.kind == "2" or bool(conv.staff_id)  # by the robot API
        kind = message_of(file)
        if kind is not None and reachable:
            upload, ext = kind
            media_id = await self._upload(file, upload, ext)
            if upload == "image":
                key = await self._robot_message(chat, conversation_id, conv, "sampleImageMsg", {"photoURL": media_id})
            else:
                param = {"mediaId": media_id, "fileName": upload_name(file, ext), "fileType": ext}
                key = await self._robot_message(chat, conversation_id, conv, "sampleFile", param)
            return key, False
        name = file.name or "file"
        if kind is not None and kind[0] == "image":  # only the session webhook reaches the chat
            media_id = await self._upload(file, "image", kind[1])
            text = f"![{_md(name)}]({media_id})"
            if (file.caption or "").strip():
                text += "\n\n" + file.caption
            return await self._deliver(chat, conversation_id, "markdown", {"title": name[:30], "text": text}), True
        why = ("DingTalk robots send images as JPEG, PNG, GIF or BMP and files as PDF, Word, Excel, ZIP or RAR"
               if kind is None else "a file message cannot reach this chat")
        text = f"📎 **{_md(name)}** ({megabytes(file.size)}): not sent, {why}."
        return await self._deliver(chat, conversation_id, "markdown", {"title": name[:30], "text": text}), False

    async def _upload(self, file: OutgoingFile, upload: str, ext: str) -> str:
        """media/upload -> the media id."""
        assert self.http is not None
        try:
            data = await trio.to_thread.run_sync(file.path.read_bytes)
        except OSError as exc:
            raise ChannelError(f"dingtalk: the file to send cannot be read ({exc.strerror or exc})",
                               retryable=False) from None
        for attempt in range(2):
            token = await self._access_token()
            try:
                response = await self.http.post(
                    self.settings.oapi_base + UPLOAD_PATH, params={"access_token": token, "type": upload},
                    files={"media": (upload_name(file, ext), data, file.mime)})
            except httpx.HTTPError as exc:
                raise ChannelError(f"dingtalk: media upload: {type(exc).__name__}", retryable=True) from None
            answer = json_answer(response)
            errcode = answer.get("errcode", 0 if response.status_code == 200 else response.status_code)
            media_id = answer.get("media_id")
            if response.status_code == 200 and errcode == 0 and isinstance(media_id, str) and media_id:
                return media_id
            if errcode in TOKEN_ERRORS and attempt == 0:
                self._token = None
                continue
            what = f"dingtalk: media upload: HTTP {response.status_code} errcode {errcode} {answer.get('errmsg') or ''}"
            retry = response.status_code >= 500 or response.status_code == 429 or errcode in (-1, 90002)
            raise ChannelError(what.strip(), retryable=retry)
        raise ChannelError("dingtalk: media upload: the access token was refused twice", retryable=True)


def _md(name: str) -> str:
    """A file name inside markdown: its brackets and emphasis marks escaped, on one line."""
    return " ".join(name.split()).translate({ord(c): f"\\{c}" for c in "\\[]()*_`"})
