"""The files part of tests/fakes/lark.py, as the Open Platform documents them (and lark-oapi calls
them):

- ``GET /open-apis/im/v1/messages/{message_id}/resources/{key}?type=image|file`` (tenant token):
  the bytes of a file the message carries (``image_key`` with ``type=image``; ``file_key`` with
  ``type=file``), with ``Content-Disposition``; errors as JSON ``{"code", "msg"}`` (234003: the
  key is not in that message; 234001: a bad ``type``).
- ``POST /open-apis/im/v1/images``: multipart ``image_type=message`` + ``image`` -> ``image_key``
  (JPEG/PNG/WEBP/GIF/TIFF/BMP/ICO, at most 10 MB, not empty).
- ``POST /open-apis/im/v1/files``: multipart ``file_type`` (opus/mp4/pdf/doc/xls/ppt/stream) +
  ``file_name`` + ``file`` -> ``file_key`` (at most 30 MB, not empty).
- ``image`` / ``file`` messages must name a key that was uploaded (or received).

    key = fake.add_file(png_bytes)                 # a file users sent: its key for an event
    fake.push(fake.event(chat, {"image_key": key}, message_type="image"))
    fake.uploads                                   # what the bot uploaded: kind, fields, bytes, filename
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import uuid
from typing import Any
from urllib.parse import quote

from .wsserver import HttpRequest

IMAGE_MAX, FILE_MAX = 10 * 1024 * 1024, 30 * 1024 * 1024
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"RIFF", b"II*\x00", b"MM\x00*", b"BM", b"\x00\x00\x01\x00")
FILE_TYPES = {"opus", "mp4", "pdf", "doc", "xls", "ppt", "stream"}


def keys_in(content: dict[str, Any]) -> set[str]:
    """Every image_key / file_key a message's content names (rich text included)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("image_key", "file_key") and isinstance(v, str):
                    found.add(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(content)
    return found


def form_of(request: HttpRequest) -> dict[str, dict[str, Any]] | None:
    """A multipart/form-data body -> {field: {"bytes", "filename", "content_type"}} (None: not one)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return None
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + request.body)
    if not form.is_multipart():
        return None
    fields: dict[str, dict[str, Any]] = {}
    for part in form.iter_parts():
        name = part.get_param("name", header="content-disposition")
        got: Any = part.get_payload(decode=True)
        if isinstance(name, str):
            fields[name] = {"bytes": got if isinstance(got, bytes) else b"", "filename": part.get_filename(),
                            "content_type": part.get_content_type()}
    return fields


def error(code: int, msg: str, status: int = 400) -> tuple[int, Any]:
    return status, {"code": code, "msg": msg}


class LarkFiles:
    """Mixed into FakeLark: the media it holds and the calls that move it."""

    messages: dict[str, dict[str, Any]]
    _failures: dict[str, list[int]]

    def _init_files(self) -> None:
        self.media: dict[str, dict[str, Any]] = {}  # key -> {"bytes", "type" (image|file), "name"}
        self.uploads: list[dict[str, Any]] = []
        self.downloads: list[tuple[str, str, str]] = []  # (message id, key, type)
        self._keys = itertools.count(1)

    def add_file(self, data: bytes, name: str = "", *, image: bool | None = None) -> str:
        """Bytes a user sent: an image (``img_v3_...``, when ``image`` or, unset, when there is no
        name) or a file (``file_v3_...``); returns the key an event's content names."""
        is_image = (not name) if image is None else image
        key = f"{'img' if is_image else 'file'}_v3_{next(self._keys):04d}_{uuid.uuid4().hex[:12]}"
        self.media[key] = {"bytes": data, "type": "image" if is_image else "file", "name": name}
        return key

    def files_http(self, request: HttpRequest) -> tuple[int, Any] | None:
        """The files calls (the caller checked the tenant token); None for another path."""
        path, method = request.path, request.method
        parts = path.split("/")
        if method == "GET" and len(parts) == 8 and path.startswith("/open-apis/im/v1/messages/") and parts[6] == "resources":
            return self._resource(parts[5], parts[7], request.query.get("type", ""))
        if method == "POST" and path == "/open-apis/im/v1/images":
            return self._upload_image(request)
        if method == "POST" and path == "/open-apis/im/v1/files":
            return self._upload_file(request)
        return None

    def content_error(self, msg_type: str, content: dict[str, Any]) -> tuple[int, Any] | None:
        """An image or file message naming a key this fake does not hold: refused."""
        wanted = {"image": "image_key", "file": "file_key", "audio": "file_key", "media": "file_key"}.get(msg_type)
        if wanted is None:
            return None
        key = str(content.get(wanted) or "")
        if key not in self.media:
            return error(230001, f"invalid {wanted}: {key!r}")
        if (self.media[key]["type"] == "image") != (msg_type == "image"):
            return error(230001, f"{wanted} {key!r} is of another type")
        return None

    def _resource(self, message_id: str, key: str, kind: str) -> tuple[int, Any]:
        failures = self._failures.get("resource")
        if failures:
            code = failures.pop(0)
            return error(code, f"fake failure {code}", 500 if 500 <= code < 600 else 400)
        if kind not in ("image", "file"):
            return error(234001, "Invalid request param.")
        message = self.messages.get(message_id)
        if message is None or key not in message.get("keys", ()) or key not in self.media:
            return error(234003, "File not in msg.")
        held = self.media[key]
        if (held["type"] == "image") != (kind == "image"):
            return error(234001, "Invalid request param.")
        self.downloads.append((message_id, key, kind))
        name = held["name"] or key
        headers = [("content-type", "application/octet-stream"),
                   ("content-disposition", f"attachment; filename*=UTF-8''{quote(name)}")]
        return 200, (held["bytes"], headers)

    def _upload_image(self, request: HttpRequest) -> tuple[int, Any]:
        form = form_of(request)
        if form is None or "image" not in form or "image_type" not in form:
            return error(234001, "Invalid request param.")
        if form["image_type"]["bytes"].decode() != "message":
            return error(234001, "Invalid request param: image_type")
        data = form["image"]["bytes"]
        if not data:
            return error(234010, "File's size can't be 0.")
        if len(data) > IMAGE_MAX:
            return error(234006, "The file size exceed the max value.")
        if not data.startswith(IMAGE_MAGIC):
            return error(234011, "Can't regonnize it's an image.")
        key = self.add_file(data, image=True)
        self.uploads.append({"kind": "image", "key": key, "bytes": data, "filename": form["image"]["filename"],
                             "fields": {"image_type": "message"}})
        return 200, {"code": 0, "msg": "success", "data": {"image_key": key}}

    def _upload_file(self, request: HttpRequest) -> tuple[int, Any]:
        form = form_of(request)
        if form is None or not {"file", "file_type", "file_name"} <= form.keys():
            return error(234001, "Invalid request param.")
        fields = {k: v["bytes"].decode() for k, v in form.items() if k != "file"}
        if fields["file_type"] not in FILE_TYPES or not fields["file_name"]:
            return error(234001, "Invalid request param.")
        data = form["file"]["bytes"]
        if not data:
            return error(234010, "File's size can't be 0.")
        if len(data) > FILE_MAX:
            return error(234006, "The file size exceed the max value.")
        key = self.add_file(data, fields["file_name"], image=False)
        self.uploads.append({"kind": "file", "key": key, "bytes": data, "filename": form["file"]["filename"],
                             "fields": fields})
        return 200, {"code": 0, "msg": "success", "data": {"file_key": key}}
