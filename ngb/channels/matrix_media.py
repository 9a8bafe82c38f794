"""Matrix's files, both ways, through the homeserver's content repository.

In: an ``m.image``/``m.audio``/``m.video``/``m.file`` message names its file by ``mxc://`` URI
(``url``), or in an encrypted room by an encrypted-file object (``file``: the URI, the AES-CTR key,
its counter block and the SHA-256 of the ciphertext). The channel downloads it from the configured
homeserver only (authenticated media, ``/_matrix/client/v1/media/download``, with the legacy
``/_matrix/media/v3`` path for servers older than Matrix 1.11), streams it into the media store
(decrypting on the way, the hash checked at the end: a file whose hash does not match is a note,
never an attachment) and gives the message its attachments. A file's caption is ``body`` when
``filename`` says the name (Matrix 1.10); otherwise ``body`` is the name and the text is empty.
A voice message (``org.matrix.msc3245.voice``) is a voice note.

Out: ``send_file`` uploads the bytes (``/_matrix/media/v3/upload``, streamed from the file; in an
encrypted room encrypted first, chunk by chunk) and posts the message that shows them, a reply to
the trigger in its thread like a text reply, the caption as its body (the name in ``filename``).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import trio

from ..media.intake import Fetch, Incoming, MediaRefused
from ..records import AttachmentKind, OutgoingFile
from .base import ChannelError

log = logging.getLogger("ngb.channels.matrix")

MSGTYPES = {"m.image": AttachmentKind.IMAGE, "m.audio": AttachmentKind.AUDIO, "m.video": AttachmentKind.VIDEO,
            "m.file": AttachmentKind.DOCUMENT}
OUT_MSGTYPES = {AttachmentKind.IMAGE: "m.image", AttachmentKind.AUDIO: "m.audio", AttachmentKind.VOICE: "m.audio",
                AttachmentKind.VIDEO: "m.video"}
VOICE_KEY = "org.matrix.msc3245.voice"
MXC = re.compile(r"mxc://([A-Za-z0-9.\-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?)/([A-Za-z0-9_\-]+)")
CHUNK = 256 * 1024


@attrs.frozen
class FileSecret:
    """How an encrypted attachment is read: AES-256-CTR ``key`` and counter block ``iv``, and the
    SHA-256 of the ciphertext (attachment encryption v2)."""

    key: bytes
    iv: bytes
    sha256: bytes


@attrs.frozen
class MatrixFile:
    """The file an ``m.room.message`` carries."""

    mxc: str
    incoming: Incoming
    caption: str  # the text that goes with the file ("" when body is only the name)
    secret: FileSecret | None = None


def _b64(text: Any) -> bytes:
    """Unpadded base64, standard or URL-safe (a JWK's ``k`` is URL-safe)."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    text = text.translate(str.maketrans("-_", "+/"))
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _unb64(data: bytes, *, url: bool = False) -> str:
    encoded = base64.urlsafe_b64encode(data) if url else base64.b64encode(data)
    return encoded.decode().rstrip("=")


def secret_of(file: Any) -> FileSecret:
    """The decryption info of an encrypted-file object; ValueError when it is not usable."""
    if not isinstance(file, dict):
        raise ValueError("the file object is not an object")
    jwk = file.get("key") or {}
    if not isinstance(jwk, dict) or jwk.get("alg") != "A256CTR":
        raise ValueError("the key is not an A256CTR key")
    key, iv, digest = _b64(jwk.get("k")), _b64(file.get("iv")), _b64((file.get("hashes") or {}).get("sha256"))
    if len(key) != 32 or len(iv) != 16 or len(digest) != 32:
        raise ValueError("the key, counter or hash has the wrong length")
    return FileSecret(key, iv, digest)


def file_of(content: dict[str, Any]) -> MatrixFile | str | None:
    """The file of a message's content; None when it has none; a note (str) when it names one that
    cannot be read."""
    kind = MSGTYPES.get(str(content.get("msgtype") or ""))
    if kind is None:
        return None
    raw_info = content.get("info")
    info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    body = str(content.get("body") or "")
    filename = content.get("filename") if isinstance(content.get("filename"), str) else None
    name = filename or body or None
    caption = body if filename and body and body != filename else ""
    if kind is AttachmentKind.AUDIO and VOICE_KEY in content:
        kind = AttachmentKind.VOICE
    size = info.get("size")
    incoming = Incoming(kind, name=name, mime=str(info.get("mimetype") or "") or None,
                        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None)
    secret: FileSecret | None = None
    if "file" in content:
        url = (content["file"] or {}).get("url") if isinstance(content["file"], dict) else None
        try:
            secret = secret_of(content["file"])
        except (ValueError, TypeError) as exc:
            return f"[{incoming.describe()}: its encryption info is unusable ({exc})]"
    else:
        url = content.get("url")
    if not isinstance(url, str) or not MXC.fullmatch(url):
        return f"[{incoming.describe()}: no usable mxc:// address]"
    return MatrixFile(url, incoming, caption, secret)


def download_urls(homeserver: str, mxc: str) -> tuple[str, str]:
    """The authenticated (Matrix 1.11) and the legacy download URL of ``mxc`` on ``homeserver``."""
    match = MXC.fullmatch(mxc)
    if match is None:
        raise ValueError(f"not an mxc URI: {mxc!r}")
    where = f"{quote(match[1], safe='')}/{quote(match[2], safe='')}"
    return (f"{homeserver}/_matrix/client/v1/media/download/{where}",
            f"{homeserver}/_matrix/media/v3/download/{where}")


def decrypting(chunks: AsyncIterator[bytes], secret: FileSecret, note: str) -> AsyncIterator[bytes]:
    """The plaintext of an encrypted attachment's ciphertext chunks; ``MediaRefused(note)`` at the
    end when the ciphertext's SHA-256 is not the one the event gave (what was written is dropped)."""
    from Crypto.Cipher import AES

    async def plain() -> AsyncIterator[bytes]:
        cipher = AES.new(secret.key, AES.MODE_CTR, nonce=b"", initial_value=secret.iv)
        digest = hashlib.sha256()
        async for chunk in chunks:
            digest.update(chunk)
            yield cipher.decrypt(chunk)
        if digest.digest() != secret.sha256:
            raise MediaRefused(note)

    return plain()


class Encryptor:
    """Attachment encryption v2 for an upload: AES-256-CTR with a fresh key, the SHA-256 of the
    ciphertext kept for the event's ``hashes``."""

    def __init__(self) -> None:
        from Crypto.Cipher import AES

        self.key = secrets.token_bytes(32)
        self.iv = secrets.token_bytes(8) + bytes(8)  # the counter's low 64 bits start at 0
        self._cipher = AES.new(self.key, AES.MODE_CTR, nonce=b"", initial_value=self.iv)
        self._digest = hashlib.sha256()

    def __call__(self, chunk: bytes) -> bytes:
        out: bytes = self._cipher.encrypt(chunk)
        self._digest.update(out)
        return out

    def file_object(self, mxc: str) -> dict[str, Any]:
        return {"url": mxc, "v": "v2", "iv": _unb64(self.iv), "hashes": {"sha256": _unb64(self._digest.digest())},
                "key": {"kty": "oct", "alg": "A256CTR", "ext": True, "k": _unb64(self.key, url=True),
                        "key_ops": ["encrypt", "decrypt"]}}


async def file_bytes(path: Path, encrypt: Encryptor | None) -> AsyncIterator[bytes]:
    """A file read a chunk at a time in a worker thread, encrypted on the way when asked."""
    async with await trio.open_file(path, "rb") as f:
        while chunk := await f.read(CHUNK):
            yield encrypt(chunk) if encrypt is not None else chunk


def file_content(file: OutgoingFile, mxc: str, encryptor: Encryptor | None) -> dict[str, Any]:
    """The ``m.room.message`` that shows an uploaded file."""
    content: dict[str, Any] = {"msgtype": OUT_MSGTYPES.get(file.kind, "m.file"),
                               "body": file.caption.strip() or file.name, "filename": file.name,
                               "info": {"mimetype": file.mime, "size": file.size}}
    if file.kind is AttachmentKind.VOICE:
        content[VOICE_KEY] = {}
    if encryptor is not None:
        content["file"] = encryptor.file_object(mxc)
    else:
        content["url"] = mxc
    return content


class MatrixFiles:
    """The files half of MatrixChannel (a mixin: it shares the channel's settings, media intake and client)."""

    settings: Any
    media: Any
    client: Any
    token: str  # the access token in use
    status: Any

    # -- in --------------------------------------------------------------------------------------------
    async def take_file(self, chat: str, content: dict[str, Any]) -> tuple[tuple[Any, ...], tuple[str, ...], str]:
        """The attachments, notes and caption of a message's file (all empty when it carries none)."""
        found = file_of(content)
        if found is None:
            return (), (), ""
        if isinstance(found, str):
            return (), (found,), ""
        taken = await self.media.take_all(chat, [(found.incoming, self._fetch(found))])
        return taken.attachments, taken.notes, found.caption

    def _fetch(self, file: MatrixFile) -> Fetch:
        """The file's bytes from the configured homeserver (never from a server the event names),
        with the bot's token; decrypted when the file is encrypted."""
        current, legacy = download_urls(self.settings.homeserver, file.mxc)
        headers = {"Authorization": f"Bearer {self.token}"}
        timeout = self.settings.request_timeout

        async def chunks() -> AsyncIterator[bytes]:
            async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as http:
                for url in (current, legacy):
                    async with http.stream("GET", url, headers=headers) as response:
                        if response.status_code in (400, 404) and url == current and await _unrecognized(response):
                            continue  # a homeserver without authenticated media: the legacy path
                        if response.status_code >= 400:
                            raise RuntimeError(f"HTTP {response.status_code}")
                        async for chunk in response.aiter_bytes(CHUNK):
                            yield chunk
                        return

        def fetch() -> AsyncIterator[bytes]:
            if file.secret is None:
                return chunks()
            note = f"[{file.incoming.describe()}: its bytes do not match the hash of the encrypted event]"
            return decrypting(chunks(), file.secret, note)

        return fetch

    # -- out -------------------------------------------------------------------------------------------
    async def upload(self, file: OutgoingFile, *, encrypted: bool) -> tuple[str, Encryptor | None]:
        """The file's bytes into the content repository (encrypted for an encrypted room): its mxc URI."""
        try:
            size = (await trio.Path(file.path).stat()).st_size
        except OSError as exc:
            raise ChannelError(f"matrix: the file to send is gone ({exc.strerror})", retryable=False) from None
        encryptor = Encryptor() if encrypted else None
        headers = {"Authorization": f"Bearer {self.token}", "Content-Length": str(size),
                   "Content-Type": "application/octet-stream" if encrypted else (file.mime or "application/octet-stream")}
        url = f"{self.settings.homeserver}/_matrix/media/v3/upload"
        try:
            async with httpx.AsyncClient(timeout=self.settings.request_timeout) as http:
                response = await http.post(url, params={"filename": file.name}, headers=headers,
                                           content=file_bytes(file.path, encryptor))
        except (httpx.HTTPError, OSError) as exc:
            raise ChannelError(self.status.redact(f"matrix: upload: {type(exc).__name__}: {exc}"), retryable=True) from None
        if response.status_code != 200:
            error = _errcode(response)
            retryable = response.status_code not in (400, 403, 413) and error != "M_TOO_LARGE"
            raise ChannelError(f"matrix: upload: HTTP {response.status_code} {error}".rstrip(), retryable=retryable)
        mxc = (response.json() or {}).get("content_uri")
        if not isinstance(mxc, str) or not MXC.fullmatch(mxc):
            raise ChannelError("matrix: upload: the homeserver gave no content_uri", retryable=True)
        return mxc, encryptor


async def _unrecognized(response: httpx.Response) -> bool:
    await response.aread()
    return _errcode(response) == "M_UNRECOGNIZED" or response.status_code == 404 and not response.content


def _errcode(response: httpx.Response) -> str:
    try:
        return str((response.json() or {}).get("errcode") or "")
    except ValueError:
        return ""
