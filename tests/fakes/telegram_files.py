"""The files of the fake Telegram Bot API (tests/fakes/telegram.py), as the Bot API has them: a
user's message carrying a file (``user_media``), getFile and the download at
``/file/bot<token>/<file_path>``, and sendPhoto / sendDocument / sendVoice taking the file as a
multipart/form-data part (named after the field, or ``attach://<name>``), each recorded in
``uploads``. A mixin of ``FakeTelegram``: it shares the fake's messages, replies and topics."""

from __future__ import annotations

import email.message
import itertools
import re
from typing import Any

CAPTION_LIMIT = 1024  # characters after entity parsing
DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile serves files up to 20 MB


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """A multipart/form-data body -> (text fields, files: name -> filename, mime, bytes)."""
    header = email.message.Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str):
        raise ValueError("multipart without a boundary")
    fields: dict[str, str] = {}
    files: dict[str, dict[str, Any]] = {}
    for section in body.split(b"--" + boundary.encode())[1:]:
        if section.startswith(b"--"):
            break  # the closing delimiter
        head, _, data = section.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        part = email.message.Message()
        for line in head.decode("utf-8").split("\r\n"):
            name, _, value = line.partition(":")
            part[name.strip()] = value.strip()
        data = data.removesuffix(b"\r\n")
        field = part.get_param("name", header="content-disposition")
        filename = part.get_param("filename", header="content-disposition")
        if not isinstance(field, str):
            continue
        if isinstance(filename, str):
            files[field] = {"filename": filename, "mime": part.get_content_type(), "bytes": data}
        else:
            fields[field] = data.decode("utf-8")
    return fields, files

class FilesMixin:
    token: str
    user_message: Any
    _bot_message: Any
    _place: Any
    _topic_error: Any
    _notify: Any

    def _init_files(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}  # file_id -> bytes, file_path, size (declared), unique id
        self._file_ids = itertools.count(1)
        self._download_failures: list[int] = []
        self.downloads: list[tuple[str, int]] = []  # (file_path, status) of each file download
        self.uploads: list[dict[str, Any]] = []  # each sendPhoto/sendDocument/sendVoice that was accepted

    def add_file(self, data: bytes, *, folder: str = "documents", ext: str = "bin",
                 declared_size: int | None = None) -> dict[str, Any]:
        """A file the fake serves (getFile, then its download): its file_id, file_unique_id, file_size."""
        n = next(self._file_ids)
        file_id = f"BQACAgQAAx{n:06d}fake"
        size = len(data) if declared_size is None else declared_size
        self.files[file_id] = {"bytes": data, "path": f"{folder}/file_{n}.{ext}", "size": size, "unique": f"AgAD{n}"}
        return {"file_id": file_id, "file_unique_id": f"AgAD{n}", "file_size": size}

    def user_media(self, chat_id: int, kind: str, data: bytes = b"", *, caption: str | None = None,
                   media_group_id: str | None = None, file_name: str | None = None, mime_type: str | None = None,
                   declared_size: int | None = None, photo_sizes: list[bytes] | None = None,
                   **kw: Any) -> dict[str, Any]:
        """Queue a user's message carrying a file as Telegram sends it (``kind``: photo, document,
        voice, audio, video, video_note, animation, sticker); ``data`` is what the download serves
        (a photo: each of ``photo_sizes``, small to large; ``declared_size`` is the largest's)."""
        content: dict[str, Any] = {}
        if kind == "photo":
            sizes = photo_sizes or [data]
            content["photo"] = [
                {**self.add_file(b, folder="photos", ext="jpg", declared_size=declared_size if i == len(sizes) - 1 else None),
                 "width": 320 * (i + 1), "height": 240 * (i + 1)}
                for i, b in enumerate(sizes)
            ]
        else:
            folder, ext = {"voice": ("voice", "oga"), "audio": ("music", "mp3"), "video": ("videos", "mp4"),
                           "video_note": ("video_notes", "mp4"), "animation": ("animations", "mp4"),
                           "sticker": ("stickers", "webp")}.get(kind, ("documents", "bin"))
            obj = self.add_file(data, folder=folder, ext=ext, declared_size=declared_size)
            if file_name:
                obj["file_name"] = file_name
            if mime_type:
                obj["mime_type"] = mime_type
            if kind in ("voice", "audio", "video", "video_note", "animation"):
                obj["duration"] = 3
            if kind in ("video", "animation", "sticker"):
                obj.update(width=512, height=512)
            if kind == "video_note":
                obj["length"] = 240
            if kind == "sticker":
                obj.update(type="regular", is_animated=False, is_video=False)
            content[kind] = obj
            if kind == "animation":
                content["document"] = dict(obj)  # Telegram sends an animation as a document too
        if media_group_id:
            content["media_group_id"] = media_group_id
        return self.user_message(chat_id, caption or "", content=content, **kw)

    def fail_download(self, status: int, times: int = 1) -> None:
        """The next ``times`` file downloads are answered ``status``."""
        self._download_failures.extend([status] * times)

    def _download(self, path: str) -> tuple[int, dict[str, Any] | bytes]:
        """GET /file/bot<token>/<file_path>: the file's bytes."""
        m = re.fullmatch(r"/file/bot([^/]+)/(.+)", path)
        if not m or m.group(1) != self.token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        found = next((f for f in self.files.values() if f["path"] == m.group(2)), None)
        status = self._download_failures.pop(0) if self._download_failures else (200 if found else 404)
        self.downloads.append((m.group(2), status))
        if status != 200 or found is None:
            return status, {"ok": False, "error_code": status, "description": "Not Found" if status == 404 else "fake failure"}
        return 200, found["bytes"]

    async def _m_getFile(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        file_id = str(params.get("file_id") or "")
        f = self.files.get(file_id)
        if f is None:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"}
        if f["size"] > DOWNLOAD_LIMIT:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: file is too big"}
        return 200, {"ok": True, "result": {"file_id": file_id, "file_unique_id": f["unique"], "file_size": f["size"],
                                            "file_path": f["path"]}}

    async def _m_sendPhoto(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self._upload("sendPhoto", "photo", params)

    async def _m_sendDocument(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self._upload("sendDocument", "document", params)

    async def _m_sendVoice(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self._upload("sendVoice", "voice", params)

    def _upload(self, method: str, field: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A file sent as the Bot API takes it: a multipart part named ``field`` (or ``attach://x``)."""
        chat_id = int(params["chat_id"])
        files = params.pop("_files", {})
        value = params.get(field)
        got = files.get(field)
        if got is None and isinstance(value, str) and value.startswith("attach://"):
            got = files.get(value.removeprefix("attach://"))
        if got is None:
            return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: there is no {field} in the request"}
        from .telegram import parse_html, utf16_len

        caption = str(params.get("caption") or "")
        plain = caption
        if caption and params.get("parse_mode") == "HTML":
            plain, error = parse_html(caption)
            if error:
                return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: can't parse entities: {error}"}
        if utf16_len(plain) > CAPTION_LIMIT:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message caption is too long"}
        if (refused := self._topic_error(chat_id, params)) is not None:
            return refused
        stored = self.add_file(got["bytes"])
        if field == "photo":
            content: dict[str, Any] = {"photo": [{**stored, "width": 640, "height": 480}]}
        else:
            content = {field: {**stored, "file_name": got["filename"], "mime_type": got["mime"]}}
            if field == "voice":
                content[field] = {**stored, "mime_type": got["mime"], "duration": 1}
        if plain:
            content["caption"] = plain
        message = self._bot_message(chat_id, **content)
        if (refused := self._place(chat_id, params, message)) is not None:
            return refused
        self.uploads.append({"method": method, "chat_id": chat_id, "caption": plain, "bytes": got["bytes"],
                             "filename": got["filename"], "mime": got["mime"], "params": params, "message": message,
                             "reply_to": message.get("reply_to_message", {}).get("message_id"),
                             "topic": message.get("message_thread_id")})
        self._notify()
        return 200, {"ok": True, "result": message}
