"""The files side of the fake Discord (tests/fakes/discord.py), as Discord's API documents it:
attachments served the way its CDN serves them (``/attachments/{channel}/{attachment}/{filename}``
with the signed ``ex``/``is``/``hm`` query, no token), and multipart message creates ("Uploading
Files": a ``payload_json`` part and one ``files[n]`` part per file) read back into the JSON body
and the files."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import json
import re
import time
from typing import Any
from urllib.parse import quote

from .wsserver import HttpRequest

IS_VOICE_MESSAGE = 1 << 13  # message flag
UPLOAD_LIMIT = 10 * 1024 * 1024  # per file, a server without boosts


class FakeDiscordCdn:
    """The CDN half of FakeDiscord (a mixin: it shares the fake's token, port, ids and failures)."""

    token: str
    http_base: str
    _failures: dict[str, list[int]]

    def __init__(self) -> None:
        super().__init__()
        self.cdn: dict[str, tuple[bytes, str]] = {}  # CDN path -> (bytes, content type)
        self.downloads: list[str] = []  # CDN paths served
        self.upload_limit = UPLOAD_LIMIT

    def next_id(self) -> int:
        raise NotImplementedError

    def attachment(self, channel_id: int, filename: str, data: bytes, *, content_type: str | None = None,
                   size: int | None = None, voice: bool = False) -> dict[str, Any]:
        """A file a user uploaded, as Discord's attachment object (served on the CDN path);
        ``size`` declares another size than the bytes have, ``voice`` adds a voice note's
        ``duration_secs`` and ``waveform`` (the message then carries IS_VOICE_MESSAGE)."""
        attachment_id = self.next_id()
        filename = filename.replace(" ", "_")  # as Discord does
        path = quote(f"/attachments/{channel_id}/{attachment_id}/{filename}")
        self.cdn[path] = (data, content_type or "application/octet-stream")
        url = f"{self.http_base}{path}?{self._signature(path)}"
        out: dict[str, Any] = {"id": str(attachment_id), "filename": filename, "size": len(data) if size is None else size,
                               "url": url, "proxy_url": url.replace("/attachments/", "/media/attachments/", 1)}
        if content_type:
            out["content_type"] = content_type
        if voice:
            out.update(duration_secs=2.5, waveform=base64.b64encode(bytes(range(0, 256, 8))).decode(), flags=0)
        return out

    def _signature(self, path: str) -> str:
        expires = f"{int(time.time()) + 86400:x}"
        issued = f"{int(time.time()):x}"
        mac = hashlib.sha256(f"{self.token}|{path}|{expires}|{issued}".encode()).hexdigest()
        return f"ex={expires}&is={issued}&hm={mac}&"

    def _cdn(self, request: HttpRequest) -> tuple[int, Any]:
        """GET of an attachment: its bytes, when the URL's signature holds (as Discord's CDN)."""
        failures = self._failures.get("GET /attachments")
        if failures:
            return failures.pop(0), b"fake CDN failure"
        found = self.cdn.get(request.path)
        q = request.query
        if found is None or request.method != "GET" or not {"ex", "is", "hm"} <= q.keys() or q["hm"] != hashlib.sha256(
                f"{self.token}|{request.path}|{q['ex']}|{q['is']}".encode()).hexdigest():
            return 404, b"This content is no longer available."
        self.downloads.append(request.path)
        data, content_type = found
        return 200, (data, [("content-type", content_type)])


def read_body(request: HttpRequest) -> tuple[Any, list[dict[str, Any]]]:
    """A REST request's JSON body and files: JSON, or a multipart message create."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return multipart_message(content_type, request.body)
    return (request.json() if request.body and content_type.startswith("application/json") else None), []


def multipart_message(content_type: str, data: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A multipart message create -> (the JSON of ``payload_json``, its files in ``files[n]`` order,
    each {"filename", "content_type", "bytes"}); ValueError for a body Discord would refuse."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + data)
    if not form.is_multipart():
        raise ValueError("not multipart")
    payload: dict[str, Any] | None = None
    parts: dict[int, dict[str, Any]] = {}
    for part in form.iter_parts():
        name = part.get_param("name", header="content-disposition")
        got: Any = part.get_payload(decode=True)
        raw = got if isinstance(got, bytes) else b""
        if name == "payload_json":
            payload = json.loads(raw)
        elif isinstance(name, str) and (m := re.fullmatch(r"files\[(\d+)\]", name)):
            parts[int(m.group(1))] = {"filename": part.get_filename() or "", "bytes": raw,
                                      "content_type": part.get_content_type()}
    if payload is None:
        raise ValueError("no payload_json")
    listed = payload.get("attachments")
    if listed is not None:  # each names a files[n] part by its id (and may rename it)
        for entry in listed:
            index = int(entry["id"])
            if index not in parts:
                raise ValueError(f"attachments[].id {index} has no files[{index}]")
            if entry.get("filename"):
                parts[index]["filename"] = entry["filename"]
    return payload, [parts[i] for i in sorted(parts)]
