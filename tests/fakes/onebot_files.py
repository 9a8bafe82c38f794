"""The files side of the fake OneBot implementation (tests/fakes/onebot.py), as NapCat and go-cqhttp
document them:

- media segments as a message carries them: ``image`` ``{file: "<MD5>.jpg", url, file_size,
  summary}``, ``record`` ``{file: "<hash>.amr", url, file_size}`` (NapCat's record URL gives QQ's
  raw SILK), ``file`` ``{file: <name>, file_id, file_size}`` (NapCat; no URL);
- the URLs served by an HTTP server standing in for QQ's media host
  (``/download?appid=1407&fileid=...&rkey=...``; a wrong rkey is 403, a file made to fail 404);
- ``get_image`` / ``get_record`` (``out_format``) / ``get_file`` (``file`` or ``file_id``) answered
  the way the file was made to be: ``path`` (a local ``file`` path on the implementation's host,
  OneBot v11's answer), ``base64`` (NapCat with ``enableLocalFile2Url``: the path and the bytes),
  ``url`` (go-cqhttp's get_image: ``{size, filename, url}``) or ``unsupported`` (1404);
- ``upload_group_file`` / ``upload_private_file`` (``file``: a local path the implementation reads,
  ``name``): read from the shared folder and recorded.

The implementation's host is a container: it sees the shared folder as ``seen_as``
(``/napcat/shared``), which is ``folder`` on the test's disk; a path outside it is one the daemon
cannot read (``/root/.config/QQ/NapCat/temp/...``).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
from pathlib import Path, PurePosixPath
from typing import Any

import attrs

from .wsserver import HttpRequest, HttpWsServer

SILK = b"\x02#!SILK_V3" + bytes(range(64))  # what QQ's record URL serves: nothing else reads it
PRIVATE_TEMP = "/root/.config/QQ/NapCat/temp"  # the implementation's own folder (not shared)
FILE_ACTIONS = {"get_image", "get_record", "get_file", "upload_group_file", "upload_private_file"}


@attrs.frozen
class Failed:
    retcode: int
    wording: str


@attrs.define
class Media:
    data: bytes
    name: str
    answer: str  # how the get_* action answers: path | base64 | url | unsupported
    fileid: str


class FakeQQMediaHost(HttpWsServer):
    """QQ's media host: ``GET /download?fileid=...&rkey=...``."""

    def __init__(self) -> None:
        super().__init__()
        self.rkey = secrets.token_hex(8)
        self.blobs: dict[str, bytes] = {}
        self.failing: set[str] = set()
        self.downloads: list[str] = []  # fileids served

    def url(self, fileid: str) -> str:
        return f"{self.http_base}/download?appid=1407&fileid={fileid}&rkey={self.rkey}"

    async def http(self, request: HttpRequest) -> tuple[int, Any]:
        fileid = request.query.get("fileid", "")
        if request.method != "GET" or request.path != "/download" or fileid not in self.blobs:
            return 404, {"retcode": -5503007, "retmsg": "file not found"}
        if request.query.get("rkey") != self.rkey:
            return 403, {"retcode": -5503005, "retmsg": "rkey expired"}
        if fileid in self.failing:
            return 404, {"retcode": -5503007, "retmsg": "file not found"}
        self.downloads.append(fileid)
        return 200, (self.blobs[fileid], [("content-type", "application/octet-stream")])


class FakeOneBotFiles:
    """What FakeOneBot answers for files; ``folder`` (seen by the implementation as ``seen_as``)
    is the folder it shares with the daemon, None when it shares none."""

    def __init__(self, host: FakeQQMediaHost) -> None:
        self.host = host
        self.folder: Path | None = None
        self.seen_as = "/napcat/shared"
        self.uploads_supported = True
        self.media: dict[str, Media] = {}  # segment "file" or file_id -> the file
        self.uploads: list[dict[str, Any]] = []  # {kind, target, name, data, file}
        self._ids = itertools.count(1)

    # -- what users send ---------------------------------------------------------------------------
    def _add(self, data: bytes, name: str, answer: str, *, url_bytes: bytes | None = None) -> Media:
        fileid = base64.urlsafe_b64encode(hashlib.sha1(data + bytes([next(self._ids)])).digest()).decode().rstrip("=")
        media = Media(data, name, answer, fileid)
        self.host.blobs[fileid] = data if url_bytes is None else url_bytes
        self.media[name] = media
        self.media[fileid] = media
        return media

    def image(self, data: bytes, *, url: bool = True, answer: str = "path", size: int | None = None) -> dict[str, Any]:
        """An image segment as NapCat reports it (``url``: whether it carries one)."""
        media = self._add(data, f"{hashlib.md5(data).hexdigest().upper()}.jpg", answer)
        seg: dict[str, Any] = {"file": media.name, "summary": "", "sub_type": 0,
                               "file_size": str(len(data) if size is None else size)}
        if url:
            seg["url"] = self.host.url(media.fileid)
        return {"type": "image", "data": seg}

    def record(self, data: bytes, *, answer: str = "base64") -> dict[str, Any]:
        """A voice message: its URL serves SILK; get_record gives ``data`` (the converted file)."""
        media = self._add(data, f"{hashlib.md5(data).hexdigest()}.amr", answer, url_bytes=SILK)
        return {"type": "record", "data": {"file": media.name, "url": self.host.url(media.fileid),
                                           "file_size": str(len(SILK))}}

    def file(self, data: bytes, name: str, *, answer: str = "path") -> dict[str, Any]:
        """A file as NapCat reports it: name, file_id and size, no URL."""
        media = self._add(data, name, answer)
        return {"type": "file", "data": {"file": name, "file_id": media.fileid, "file_size": str(len(data))}}

    def fail_download(self, segment: dict[str, Any]) -> None:
        """The segment's URL answers 404 from now on."""
        self.host.failing.add(self.media[segment["data"]["file"]].fileid)

    # -- actions -----------------------------------------------------------------------------------
    def answer(self, action: str, params: dict[str, Any]) -> Any:
        if action in ("upload_group_file", "upload_private_file"):
            return self._upload(action, params)
        media = self.media.get(str(params.get("file_id") or params.get("file") or ""))
        if media is None:
            return Failed(1404 if action == "get_file" else 100, "file not found")
        if media.answer == "unsupported":
            return Failed(1404, f"unsupported action {action}")
        if media.answer == "url":  # go-cqhttp's get_image
            return {"size": len(media.data), "filename": media.name, "url": self.host.url(media.fileid)}
        stored = f"{PRIVATE_TEMP}/{media.name}"
        if media.answer == "path" and self.folder is not None:
            (self.folder / media.name).write_bytes(media.data)
            stored = f"{self.seen_as}/{media.name}"
        out: dict[str, Any] = {"file": stored, "file_size": str(len(media.data)), "file_name": media.name}
        if media.answer == "base64":
            out["base64"] = base64.b64encode(media.data).decode()
        return out

    def _upload(self, action: str, params: dict[str, Any]) -> Any:
        if not self.uploads_supported:
            return Failed(1404, f"unsupported action {action}")
        given = PurePosixPath(str(params.get("file") or ""))
        try:
            inside = given.relative_to(self.seen_as)
        except ValueError:
            return Failed(100, f"file not found: {given}")
        if self.folder is None or not (self.folder / inside).is_file():
            return Failed(100, f"file not found: {given}")
        group = action == "upload_group_file"
        self.uploads.append({"kind": "group" if group else "private",
                             "target": int(params["group_id" if group else "user_id"]),
                             "name": params.get("name"), "data": (self.folder / inside).read_bytes(),
                             "file": str(given)})
        return None  # go-cqhttp answers no data
