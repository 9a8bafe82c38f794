"""The files half of tests/fakes/slack.py (a mixin of FakeSlack): Slack's private file downloads
and its three-step external upload, on the fake's one loopback port, as Slack's docs describe them.

Downloads: ``GET /files-pri/<team>-<file id>/[download/]<name>`` with ``Authorization: Bearer <bot
token>`` gets the bytes (``Content-Type`` the file's, ``Content-Disposition`` on ``/download/``);
without it, or with another token, Slack's HTML sign-in page with 200. ``fail_download(id, status)``
makes a file's downloads answer that status. Uploads: files.getUploadURLExternal (``filename``,
``length``) -> ``{"upload_url", "file_id"}``; ``POST`` the bytes to the URL (raw body or a multipart
file part; no token: the URL is the secret) -> ``OK - <length>``; files.completeUploadExternal
(``files`` JSON ``[{"id", "title"}]``, ``channel_id``, ``initial_comment``, ``thread_ts``) shares the
file as a ``file_share`` message of the bot and answers ``{"files": [{"id", "title"}]}``; files.info
(with ``shares``: where the file was shared).
"""

from __future__ import annotations

import itertools
import json
import mimetypes
import time
import uuid
from typing import Any

from .wsserver import HttpRequest


class FakeSlackFiles:
    bot_token: str
    bot_user: str
    bot_id: str
    team: str
    http_base: str
    history: dict[str, list[dict[str, Any]]]

    def next_ts(self) -> str:
        raise NotImplementedError

    def _add(self, channel: str, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def _notify(self) -> None:
        raise NotImplementedError

    def init_files(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}  # file id -> {"file": the file object, "data": bytes}
        self.downloads: list[tuple[str, bool]] = []  # (file id, authorised) per download asked for
        self.uploads: list[dict[str, Any]] = []  # completed uploads (files.completeUploadExternal)
        self._upload_slots: dict[str, dict[str, Any]] = {}  # upload URL key -> the upload being made
        self._download_failures: dict[str, int] = {}
        self._file_ids = itertools.count(1)

    def add_file(self, data: bytes, name: str, mimetype: str = "application/octet-stream", *,
                 filetype: str | None = None, user: str = "U1001", **extra: Any) -> dict[str, Any]:
        """Keep ``data`` as a Slack file; returns its file object (as events carry it)."""
        file_id = f"F{next(self._file_ids):08d}"
        base = f"{self.http_base}/files-pri/{self.team}-{file_id}"
        file: dict[str, Any] = {
            "id": file_id, "created": int(time.time()), "timestamp": int(time.time()), "name": name,
            "title": name, "mimetype": mimetype, "filetype": filetype or (name.rsplit(".", 1)[-1].lower() if "." in name else "binary"),
            "pretty_type": mimetype, "user": user, "user_team": self.team, "editable": False, "size": len(data),
            "mode": "hosted", "is_external": False, "external_type": "", "is_public": False,
            "public_url_shared": False, "display_as_bot": False, "username": "",
            "url_private": f"{base}/{name}", "url_private_download": f"{base}/download/{name}",
            "media_display_type": "unknown", "permalink": f"https://fake.slack.com/files/{user}/{file_id}/{name}",
            "is_starred": False, "has_rich_preview": False, "file_access": "visible", **extra,
        }
        self.files[file_id] = {"file": file, "data": data}
        return file

    def fail_download(self, file_id: str, status: int = 500) -> None:
        self._download_failures[file_id] = status

    def _download(self, request: HttpRequest) -> tuple[int, Any]:
        """GET /files-pri/<team>-<id>/[download/]<name>: the bytes for the bot token; Slack's sign-in
        page (HTML, 200) for anything else."""
        key = request.path.split("/")[2]
        file_id = key.partition("-")[2]
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        authorised = token == self.bot_token
        self.downloads.append((file_id, authorised))
        if not authorised:
            return 200, (LOGIN_PAGE, [("content-type", "text/html; charset=utf-8")])
        stored = self.files.get(file_id)
        if stored is None or request.method != "GET":
            return 404, (b"Not Found", [("content-type", "text/plain")])
        status = self._download_failures.get(file_id)
        if status is not None:
            return status, (b"<html><body>Internal Server Error</body></html>", [("content-type", "text/html")])
        file = stored["file"]
        headers = [("content-type", file["mimetype"])]
        if "/download/" in request.path:
            headers.append(("content-disposition", f'attachment; filename="{file["name"]}"'))
        return 200, (stored["data"], headers)

    def _upload(self, request: HttpRequest) -> tuple[int, Any]:
        """POST the bytes to an upload URL files.getUploadURLExternal gave (raw body or multipart)."""
        slot = self._upload_slots.get(request.path.rsplit("/", 1)[-1])
        if slot is None or request.method != "POST":
            return 404, (b"Not Found", [("content-type", "text/plain")])
        data = request.body
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            data = _first_part(data, kind)
        slot["data"] = data
        slot["content_length"] = request.headers.get("content-length")
        slot["chunked"] = "chunked" in request.headers.get("transfer-encoding", "")
        return 200, (f"OK - {len(data)}".encode(), [("content-type", "text/plain")])

    async def _m_files_getUploadURLExternal(self, params: dict[str, Any]) -> tuple[int, Any]:
        filename, length = params.get("filename"), str(params.get("length") or "")
        if not filename or not length.isdigit():
            return 200, {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._file_ids):08d}"
        key = uuid.uuid4().hex
        self._upload_slots[key] = {"file_id": file_id, "filename": filename, "length": int(length), "data": None}
        return 200, {"ok": True, "upload_url": f"{self.http_base}/upload/v1/{key}", "file_id": file_id}

    async def _m_files_completeUploadExternal(self, params: dict[str, Any]) -> tuple[int, Any]:
        try:
            wanted = json.loads(str(params.get("files") or ""))
        except ValueError:
            return 200, {"ok": False, "error": "invalid_arguments"}
        slots = {s["file_id"]: (k, s) for k, s in self._upload_slots.items()}
        if not isinstance(wanted, list) or not wanted or any(f.get("id") not in slots for f in wanted):
            return 200, {"ok": False, "error": "file_not_found"}
        if any(slots[f["id"]][1]["data"] is None for f in wanted):
            return 200, {"ok": False, "error": "file_uploads_incomplete"}  # nothing was POSTed to the URL
        channel = params.get("channel_id") or None  # any channel, as chat.postMessage here
        comment = params.get("initial_comment") or None
        thread_ts = params.get("thread_ts") or None
        files = []
        for f in wanted:
            key, slot = slots[f["id"]]
            del self._upload_slots[key]
            file = self.add_file(slot["data"], slot["filename"], _mime_of(slot["filename"]), user=self.bot_user)
            del self.files[file["id"]]
            file["id"] = f["id"]
            file["title"] = f.get("title") or slot["filename"]
            self.files[f["id"]] = {"file": file, "data": slot["data"]}
            files.append(file)
        ts = None
        if channel is not None:
            ts = self.next_ts()
            message: dict[str, Any] = {"type": "message", "subtype": "file_share", "user": self.bot_user,
                                       "bot_id": self.bot_id, "text": comment or "", "ts": ts, "team": self.team,
                                       "files": files, "upload": True, "display_as_bot": False}
            if thread_ts:
                message["thread_ts"] = str(thread_ts)
            self._add(str(channel), message)
            for file in files:  # files.info tells where a file was shared (its answer here does not)
                share = {"ts": ts, "channel_name": str(channel), "team_id": self.team, "share_user_id": self.bot_user}
                if thread_ts:
                    share["thread_ts"] = str(thread_ts)
                self.files[file["id"]]["file"] = {**file, "shares": {"public": {str(channel): [share]}}}
        for file in files:
            self.uploads.append({"channel": channel, "thread_ts": thread_ts, "initial_comment": comment,
                                 "bytes": self.files[file["id"]]["data"], "filename": file["name"],
                                 "title": file["title"], "ts": ts, "params": params,
                                 "content_length": slots[file["id"]][1]["content_length"]})
        self._notify()
        return 200, {"ok": True, "files": [{"id": f["id"], "title": f["title"]} for f in files]}

    async def _m_files_info(self, params: dict[str, Any]) -> tuple[int, Any]:
        stored = self.files.get(str(params.get("file", "")))
        if stored is None:
            return 200, {"ok": False, "error": "file_not_found"}
        return 200, {"ok": True, "file": stored["file"], "comments": [], "response_metadata": {"next_cursor": ""}}


LOGIN_PAGE = (b'<!DOCTYPE html>\n<html lang="en-US" class="">\n<head>\n<meta charset="utf-8">\n'
              b"<title>Slack</title>\n</head>\n<body><h1>Sign in to Fake Team</h1>"
              b'<form action="/signin" method="post"><input type="email" name="email"></form></body>\n</html>\n')


def _mime_of(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def _first_part(body: bytes, content_type: str) -> bytes:
    """The first file part of a multipart/form-data body."""
    boundary = content_type.partition("boundary=")[2].strip('"').encode()
    for part in body.split(b"--" + boundary)[1:]:
        head, _, data = part.partition(b"\r\n\r\n")
        if b"filename=" in head:
            return data.removesuffix(b"\r\n")
    return b""
