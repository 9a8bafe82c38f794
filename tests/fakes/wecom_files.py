"""WeCom's files, for the fakes of both modes.

- ``FakeWeComFiles``: the robot's download host. A file put here is stored encrypted the way WeCom
  serves a long-connection robot's image or file: AES-256-CBC under a fresh 32-byte key (IV its
  first 16 bytes, PKCS#7 padded to 32-byte blocks); the callback carries the ``url`` and the key
  Base64-encoded as ``aeskey``. ``GET /wecom-file/<n>`` needs no auth (the URL is the secret, valid
  five minutes on WeCom) and answers with ``Content-Disposition`` naming the file.
- ``media_part``: the ``media`` part of a ``media/upload`` multipart body, as the app API reads it.
- ``upload_refusal``: WeCom's limits on an uploaded file (image 10 MB PNG/JPEG, voice 2 MB AMR,
  video 10 MB MP4, file 20 MB; every file more than 5 bytes).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import os
from typing import Any
from urllib.parse import quote

import attrs
import trio
from Crypto.Cipher import AES

from .wsserver import HttpRequest, HttpWsServer

MB = 1024 * 1024
LIMITS = {"image": 10 * MB, "voice": 2 * MB, "video": 10 * MB, "file": 20 * MB}
MAGIC = {"image": (b"\x89PNG", b"\xff\xd8\xff"), "voice": (b"#!AMR",), "video": ()}


def encrypt_file(data: bytes, key: bytes) -> bytes:
    """WeCom's side of a robot's download: AES-256-CBC, IV the key's first 16 bytes, PKCS#7 to 32."""
    pad = 32 - len(data) % 32
    return AES.new(key, AES.MODE_CBC, key[:16]).encrypt(data + bytes([pad]) * pad)


@attrs.define
class Stored:
    data: bytes  # the plain bytes
    name: str
    content_type: str = "application/octet-stream"


class FakeWeComFiles(HttpWsServer):
    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, tuple[bytes, Stored]] = {}  # id -> (ciphertext, the file)
        self.downloads: list[str] = []
        self._fail: list[int] = []
        self._n = 0

    @classmethod
    async def start(cls, nursery: trio.Nursery) -> FakeWeComFiles:
        fake = cls()
        await nursery.start(fake.serve)
        return fake

    def put(self, data: bytes, name: str = "file", content_type: str = "application/octet-stream", *,
            encrypt: bool = True) -> dict[str, str]:
        """Store a file as WeCom would for a robot's message -> {"url", "aeskey"} (no key: plain)."""
        self._n += 1
        key = os.urandom(32)
        file_id = f"{self._n}{base64.urlsafe_b64encode(os.urandom(9)).decode()}"
        self.files[file_id] = (encrypt_file(data, key) if encrypt else data, Stored(data, name, content_type))
        item = {"url": f"{self.http_base}/wecom-file/{file_id}"}
        if encrypt:
            item["aeskey"] = base64.b64encode(key).decode()
        return item

    def fail_next(self, status: int = 500) -> None:
        self._fail.append(status)

    async def http(self, request: HttpRequest) -> tuple[int, Any]:
        file_id = request.path.removeprefix("/wecom-file/")
        if request.method != "GET" or file_id not in self.files:
            return 404, b"not found"
        if self._fail:
            return self._fail.pop(0), b"upstream trouble"
        self.downloads.append(file_id)
        body, stored = self.files[file_id]
        return 200, (body, [("content-type", "application/octet-stream"),
                            ("content-disposition", f"attachment; filename*=UTF-8''{quote(stored.name)}")])


def media_part(request: HttpRequest) -> Stored | None:
    """The ``media`` part of a multipart upload (None: no such part, or not multipart)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return None
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.body)
    if not form.is_multipart():
        return None
    for part in form.iter_parts():
        if part.get_param("name", header="content-disposition") == "media":
            got: Any = part.get_payload(decode=True)
            return Stored(got if isinstance(got, bytes) else b"", part.get_filename() or "",
                          part.get_content_type())
    return None


def upload_refusal(kind: str, stored: Stored) -> tuple[int, str] | None:
    """(errcode, errmsg) where WeCom refuses this upload, else None."""
    if kind not in LIMITS:
        return 40004, "invalid media type"
    if len(stored.data) <= 5:
        return 40005, "invalid file size (at least 6 bytes)"
    if len(stored.data) > LIMITS[kind]:
        return 40006, "invalid file size"
    magic = MAGIC.get(kind, ())
    if kind == "video" and stored.data[4:8] != b"ftyp" or magic and not stored.data.startswith(magic):
        return 40005, f"invalid file type for {kind}"
    return None
