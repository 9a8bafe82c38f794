"""WeCom's files, in and out, for both modes (the robot's long connection and the self-built app).

In, robot (``aibot_msg_callback``): an ``image`` message, the images of a ``mixed`` message, a
``file`` (single chats) and a ``video`` carry a download ``url`` (valid five minutes, no auth) and,
on the long connection, a per-message ``aeskey``: the bytes are AES-256-CBC encrypted with the
Base64-decoded key, IV its first 16 bytes, PKCS#7 padded to 32-byte blocks. They are decrypted as
they stream in (never held whole). A ``voice`` message carries only WeCom's recognition text
(``voice.content``), which is the message's text; there is no recording to fetch.

In, app (callback XML): ``image`` (``MediaId``, else ``PicUrl``), ``voice`` (``MediaId``; its
``Recognition``, when the app has speech recognition on, is the platform transcript), ``video`` and
``file`` (``MediaId``) are fetched from ``GET /cgi-bin/media/get?access_token=&media_id=`` (a JSON
errcode body instead of the bytes is a failed download; an expired token is fetched anew once).

Out, both modes: an image (PNG or JPEG, at most 10 MB) goes as an ``image`` message, anything else
as a ``file`` message (at most 20 MB; WeCom refuses files of 5 bytes or less). The robot uploads
over its websocket (``aibot_upload_media_init`` -> ``_chunk`` x N (512 KB, Base64, at most 100)
-> ``_finish`` -> ``media_id``), then ``aibot_send_msg``; the app uploads with ``POST
/cgi-bin/media/upload?type=image|file`` (multipart field ``media``), then ``message/send`` or
``appchat/send``. Image and file messages have no caption: a caption follows as a text message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import attrs

from ..media.files import CHUNK
from ..media.intake import Fetch, Incoming, MediaIntake, Taken
from ..media.limits import MB
from ..records import AttachmentKind, InboundMessage, OutgoingFile
from .base import ChannelError

UPLOAD_CHUNK = 512 * 1024  # the robot's upload chunks (before Base64)
UPLOAD_MAX_CHUNKS = 100
IMAGE_MAX = 10 * MB  # an image message
FILE_MAX = 20 * MB  # a file message
MIN_BYTES = 6  # "all files must be larger than 5 bytes"
IMAGE_TYPES = {"image/png", "image/jpeg"}
# The app API's errcodes (wecom_callback.py maps them for sends too)
TOKEN_ERRCODES = {40014, 42001}  # invalid / expired access_token: fetch a new one and try again
AUTH_ERRCODES = {40001, 40013, 40091, 41002, 41004, 60020, 48002, 301002}  # secret, corp id, IP, API refused
BUSY_ERRCODES = {-1, 45009, 45033}  # system busy, rate limits
KINDS = {"image": AttachmentKind.IMAGE, "voice": AttachmentKind.VOICE, "video": AttachmentKind.VIDEO,
         "file": AttachmentKind.DOCUMENT}
APP_NAMES = {"image": None, "voice": "voice.amr", "video": "video.mp4", "file": None}


# -- decryption of the robot's downloads -------------------------------------------------------------
class ApiFailed(Exception):
    """The app API answered with an errcode (or could not be asked: ``errcode`` None)."""

    def __init__(self, what: str, errcode: int | None, errmsg: str) -> None:
        super().__init__(f"{what}: errcode {errcode}: {errmsg}" if errcode is not None else f"{what}: {errmsg}")
        self.errcode = errcode

    @property
    def auth(self) -> bool:
        return self.errcode in AUTH_ERRCODES

    @property
    def retryable(self) -> bool:
        return self.errcode is None or self.errcode in AUTH_ERRCODES | TOKEN_ERRCODES | BUSY_ERRCODES


def aes_key(aeskey: str) -> bytes:
    """The 32-byte key of a message's ``aeskey`` (Base64, its padding possibly left off)."""
    raw = base64.b64decode(aeskey + "=" * (-len(aeskey) % 4), validate=False)
    if len(raw) != 32:
        raise ValueError(f"the aeskey is {len(raw)} bytes, not 32")
    return raw


async def decrypted(chunks: AsyncIterable[bytes], aeskey: str) -> AsyncIterator[bytes]:
    """The plaintext of an AES-256-CBC download, chunk by chunk; ValueError for broken bytes."""
    from Crypto.Cipher import AES

    key = aes_key(aeskey)
    cipher = AES.new(key, AES.MODE_CBC, key[:16])
    pending = b""  # ciphertext short of a whole block
    held = b""  # plaintext whose end may be the padding
    async for chunk in chunks:
        pending += chunk
        cut = len(pending) - len(pending) % 16
        if cut:
            held += cipher.decrypt(pending[:cut])
            pending = pending[cut:]
            if len(held) > 32:
                yield held[:-32]
                held = held[-32:]
    pad = held[-1] if held else 0
    if pending or not 1 <= pad <= 32 or held[-pad:] != bytes([pad]) * pad:
        raise ValueError("the file could not be decrypted (bad length or padding)")
    if held[:-pad]:
        yield held[:-pad]


def disposition_name(header: str | None) -> str | None:
    """The file name of a Content-Disposition header (``filename*=UTF-8''..`` first)."""
    if not header:
        return None
    if m := re.search(r"filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)", header):
        return unquote(m.group(1).strip().strip('"')) or None
    if m := re.search(r'filename\s*=\s*"([^"]*)"|filename\s*=\s*([^;\s]+)', header):
        return (m.group(1) or m.group(2) or "").strip() or None
    return None


@attrs.frozen
class Download:
    """One file of a platform message: how the intake sees it, and how to fetch it."""

    incoming: Incoming
    fetch: Fetch
    names: list[str] = attrs.field(factory=list, eq=False)  # the name the download gave, once fetched


async def take_downloads(media: MediaIntake, inbound: InboundMessage, items: list[Download]) -> InboundMessage:
    """The message with its files taken (or the notes that replace them)."""
    from ..media.intake import with_notes

    if not items:
        return inbound
    taken: Taken = await media.take_all(inbound.chat, [(d.incoming, d.fetch) for d in items])
    attachments = taken.attachments
    if len(items) == 1 and len(attachments) == 1 and items[0].names and not items[0].incoming.name:
        from ..media.names import safe_name  # a file whose name only its download told

        att = attachments[0]
        attachments = (attrs.evolve(att, name=safe_name(items[0].names[0], att.mime, fallback=att.name)),)
    return attrs.evolve(inbound, text=with_notes(inbound.text, taken.notes), attachments=attachments)


def _named(chunks: Callable[[list[str]], AsyncIterator[bytes]]) -> tuple[Fetch, list[str]]:
    names: list[str] = []
    return (lambda: chunks(names)), names


# -- the robot's files in ----------------------------------------------------------------------------
def robot_items(body: dict[str, Any]) -> list[tuple[AttachmentKind, str, dict[str, Any]]]:
    """(kind, label, {url, aeskey}) of every file a robot callback carries."""
    msgtype = body.get("msgtype")
    if msgtype == "mixed":
        items = (body.get("mixed") or {}).get("msg_item") or []
        return [(AttachmentKind.IMAGE, "photo", i["image"]) for i in items
                if i.get("msgtype") == "image" and isinstance(i.get("image"), dict) and i["image"].get("url")]
    if msgtype in ("image", "file", "video") and isinstance(body.get(msgtype), dict) and body[msgtype].get("url"):
        kind = KINDS[str(msgtype)]
        return [(kind, {"image": "photo", "file": "file", "video": "video"}[str(msgtype)], body[msgtype])]
    return []


def robot_downloads(media: MediaIntake, body: dict[str, Any]) -> list[Download]:
    out = []
    for kind, label, item in robot_items(body):
        url, aeskey = str(item["url"]), str(item.get("aeskey") or "")
        names: list[str] = []

        def fetch(url: str = url, aeskey: str = aeskey, names: list[str] = names) -> AsyncIterable[bytes]:
            got = url_get(url, names, media.limits.download_timeout)
            return decrypted(got, aeskey) if aeskey else got

        out.append(Download(Incoming(kind, label=label), fetch, names))
    return out


async def url_get(url: str, names: list[str], timeout: float) -> AsyncIterator[bytes]:
    """A robot's download URL, streamed (signed: no auth); its Content-Disposition name kept."""
    import httpx

    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client:
            async with client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise RuntimeError(f"HTTP {response.status_code}")
                if name := disposition_name(response.headers.get("content-disposition")):
                    names.append(name)
                async for chunk in response.aiter_bytes(CHUNK):
                    yield chunk
    except httpx.HTTPError as exc:  # (its text may quote the signed URL)
        raise RuntimeError(f"cannot reach WeCom's file host ({type(exc).__name__})") from None


# -- the app's files in ------------------------------------------------------------------------------
Token = Callable[[], Awaitable[str]]


def app_downloads(media: MediaIntake, http: Any, api_base: str, token: Token, drop: Callable[[str], None],
                  xml: Any) -> list[Download]:
    """The file of a callback message (image, voice, video, file), fetched through media/get."""
    def field(name: str) -> str:
        return (xml.findtext(name) or "").strip()

    msgtype = field("MsgType")
    if msgtype not in KINDS:
        return []
    media_id, pic_url = field("MediaId"), field("PicUrl")
    name = field("FileName") or APP_NAMES[msgtype]
    if msgtype == "voice" and field("Format"):
        name = f"voice.{field('Format').lower()}"
    size = int(field("FileSize")) if field("FileSize").isdigit() else None
    incoming = Incoming(KINDS[msgtype], name=name, size=size, transcript=field("Recognition") or None,
                        label={"image": "photo", "voice": "voice message"}.get(msgtype))
    if media_id:
        fetch, names = _named(lambda names: media_get(http, api_base, token, drop, media_id, names))
        return [Download(incoming, fetch, names)]
    if msgtype == "image" and pic_url:
        return [Download(incoming, media.fetch_url(pic_url))]
    return [Download(incoming, _missing)]


def _missing() -> Awaitable[bytes]:
    async def fail() -> bytes:
        raise RuntimeError("WeCom gave no MediaId")

    return fail()


async def media_get(http: Any, api_base: str, token: Token, drop: Callable[[str], None], media_id: str,
                    names: list[str]) -> AsyncIterator[bytes]:
    """The bytes of ``media_id`` (GET /cgi-bin/media/get), streamed; RuntimeError with WeCom's errcode
    (never the URL: it holds the token)."""
    import httpx

    if http is None:
        raise RuntimeError("the WeCom app is not running")
    for attempt in (1, 2):
        tok = await token()
        try:
            async with http.stream("GET", api_base + "/cgi-bin/media/get",
                                   params={"access_token": tok, "media_id": media_id}) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}")
                disposition = response.headers.get("content-disposition")
                kind = response.headers.get("content-type", "")
                if not disposition and kind.startswith(("application/json", "text/plain")):
                    errcode, errmsg = _errcode(await response.aread())
                    if errcode in TOKEN_ERRCODES and attempt == 1:
                        drop(tok)
                        continue
                    raise RuntimeError(f"WeCom errcode {errcode}: {errmsg}"[:120])
                if name := disposition_name(disposition):
                    names.append(name)
                async for chunk in response.aiter_bytes(CHUNK):
                    yield chunk
                return
        except httpx.HTTPError as exc:
            raise RuntimeError(f"cannot reach WeCom ({type(exc).__name__})") from None


def _errcode(body: bytes) -> tuple[Any, str]:
    try:
        data = json.loads(body[:65536])
    except ValueError:
        return None, "not the file and not a JSON answer"
    if not isinstance(data, dict):
        return None, "not the file"
    return data.get("errcode"), str(data.get("errmsg") or "")


# -- files out ---------------------------------------------------------------------------------------
def upload_type(file: OutgoingFile) -> str:
    """``image`` or ``file``: how WeCom takes this file; ChannelError (for good) when it cannot."""
    if file.size < MIN_BYTES:
        raise ChannelError(f"wecom: {file.name!r} is too small to send (WeCom takes files of more than 5 bytes)",
                           retryable=False)
    if file.is_image and file.mime in IMAGE_TYPES and file.size <= IMAGE_MAX:
        return "image"
    if file.size > FILE_MAX:
        raise ChannelError(f"wecom: {file.name!r} is larger than WeCom takes (20 MB)", retryable=False)
    return "file"


def _md5(path: Any) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fp:
        while block := fp.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


Command = Callable[[str, dict[str, Any]], Awaitable[Any]]


async def robot_upload(command: Command, file: OutgoingFile, kind: str) -> str:
    """Upload over the robot's websocket (init, chunks, finish) -> the media_id."""
    import trio

    chunks = -(-file.size // UPLOAD_CHUNK)
    if chunks > UPLOAD_MAX_CHUNKS:
        raise ChannelError(f"wecom: {file.name!r} is larger than the robot can upload", retryable=False)
    try:
        md5 = await trio.to_thread.run_sync(_md5, file.path)
        fp = await trio.to_thread.run_sync(file.path.open, "rb")
    except OSError as exc:
        raise ChannelError(f"wecom: the file to send cannot be read ({exc.strerror or exc})", retryable=False) from None
    try:
        init = await command("aibot_upload_media_init", {"type": kind, "filename": file.name or "file",
                                                         "total_size": file.size, "total_chunks": chunks, "md5": md5})
        upload_id = str((init or {}).get("upload_id") or "")
        if not upload_id:
            raise ChannelError("wecom: the upload was not given an upload_id", retryable=True)
        for index in range(chunks):
            data = await trio.to_thread.run_sync(fp.read, UPLOAD_CHUNK)
            await command("aibot_upload_media_chunk", {"upload_id": upload_id, "chunk_index": index,
                                                       "base64_data": base64.b64encode(data).decode("ascii")})
        done = await command("aibot_upload_media_finish", {"upload_id": upload_id})
    finally:
        fp.close()
    media_id = str((done or {}).get("media_id") or "")
    if not media_id:
        raise ChannelError("wecom: the upload was not given a media_id", retryable=True)
    return media_id


class WeComAppFiles:
    """The files-out half of the app channel (a mixin: it shares the channel's token and sends)."""

    settings: Any
    _partial: Any

    async def _access_token(self, *, force: bool = False) -> str:
        raise NotImplementedError

    def _drop_token(self, token: str) -> None:
        raise NotImplementedError

    async def _call(self, what: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def _deliver(self, target: str, kind: str, payload: dict[str, Any]) -> str:
        raise NotImplementedError

    def _api_error(self, exc: Exception) -> ChannelError:
        raise NotImplementedError

    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        raise NotImplementedError

    async def send_file(self, chat: str, file: OutgoingFile, reply_to: str | None = None) -> str | None:
        """Upload ``file`` (media/upload) and send it as an image or file message to the user or app
        group chat; a caption follows as text. A retry after the file went sends only the caption."""
        prefix, _, target = chat.partition(":")
        if prefix != "wecom" or not target:
            raise ChannelError(f"not a WeCom chat: {chat!r} (expected wecom:<userid or chatid>)", retryable=False)
        kind = upload_type(file)
        key = self._partial.key(chat, f"file:{file.path}\n{file.caption}", reply_to)
        ids = list(self._partial.done(key))
        if not ids:
            try:
                media_id = await self._upload(file, kind)
                ids.append(await self._deliver(target, kind, {"media_id": media_id}))
            except ApiFailed as exc:  # mapped as for text
                raise self._api_error(exc) from None
            self._partial.record(key, ids[0])
        if file.caption.strip() and len(ids) == 1:
            ids.append(await self.send(chat, file.caption, reply_to) or "")
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return ids[0] or None

    async def _upload(self, file: OutgoingFile, kind: str) -> str:
        """POST /cgi-bin/media/upload (multipart, field ``media``) -> media_id; once more with a
        fresh token on 40014/42001."""
        import trio

        for attempt in (1, 2):
            token = await self._access_token()
            try:
                fp = await trio.to_thread.run_sync(file.path.open, "rb")
            except OSError as exc:
                raise ChannelError(f"wecom: the file to send cannot be read ({exc.strerror or exc})",
                                   retryable=False) from None
            try:
                data = await self._call("media/upload", "POST", "/cgi-bin/media/upload",
                                        params={"access_token": token, "type": kind},
                                        files={"media": (file.name or "file", fp, file.mime)})
            finally:
                fp.close()
            errcode = int(data.get("errcode") or 0)
            if errcode in TOKEN_ERRCODES and attempt == 1:
                self._drop_token(token)
                continue
            if errcode:
                raise ApiFailed("media/upload", errcode, str(data.get("errmsg") or ""))
            media_id = str(data.get("media_id") or "")
            if not media_id:
                raise ApiFailed("media/upload", None, "no media_id in the answer")
            return media_id
        raise AssertionError("unreachable")
