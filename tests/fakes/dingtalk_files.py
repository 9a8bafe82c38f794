"""The files half of tests/fakes/dingtalk.py, as DingTalk documents it:

* ``POST /v1.0/robot/messageFiles/download`` ``{downloadCode, robotCode}`` with the
  ``x-acs-dingtalk-access-token`` header -> ``{downloadUrl}``: a signed URL (``/oss/<key>?Expires=
  ...&Signature=...``, no token) good for a while; an unknown code: HTTP 400
  ``invalidParameter.downloadCode``. ``GET`` that URL serves the bytes (``fail_download(status)``
  makes the next GET of a file answer ``status``).
* ``POST /media/upload?access_token=...&type=image|file`` (the oapi host), multipart field ``media``
  -> ``{errcode: 0, errmsg: "ok", type, media_id: "@...", created_at}``. Images: jpg, png, gif, bmp;
  files: doc, docx, xls, xlsx, ppt, pptx, zip, pdf, rar (by the part's file name); at most 20 MB.
  A bad token: ``{errcode: 40014, errmsg: "不合法的access_token"}``.
* The robot messages that carry files: ``sampleImageMsg`` ``{photoURL}`` (a media id or a URL) and
  ``sampleFile`` ``{mediaId, fileName, fileType}`` (fileType: xlsx, pdf, zip, rar, doc, docx).
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import itertools
import time
import uuid
from typing import Any

from .wsserver import HttpRequest

UPLOAD_MAX = 20 * 1024 * 1024
UPLOAD_TYPES = {"image": {"jpg", "jpeg", "png", "gif", "bmp"},
                "file": {"doc", "docx", "xls", "xlsx", "ppt", "pptx", "zip", "pdf", "rar"}}
SAMPLE_FILE_TYPES = {"xlsx", "pdf", "zip", "rar", "doc", "docx"}


class FakeFiles:
    """Files the users send (by download code) and files the robot uploads (by media id)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.by_code: dict[str, bytes] = {}  # downloadCode -> bytes
        self.signed: dict[str, str] = {}  # oss key -> downloadCode
        self.media: dict[str, dict[str, Any]] = {}  # media_id -> {"bytes", "filename", "type", "content_type"}
        self.exchanges: list[dict[str, Any]] = []  # messageFiles/download bodies
        self.downloads: list[str] = []  # GETs of signed URLs (their keys)
        self.uploads: list[dict[str, Any]] = []  # media/upload calls: type, filename, status
        self._fail_downloads: list[int] = []
        self._ids = itertools.count(1)

    def add(self, data: bytes) -> str:
        """A file a user sent: its download code."""
        code = f"dc{next(self._ids):03d}" + uuid.uuid4().hex
        self.by_code[code] = data
        return code

    def fail_download(self, status: int, times: int = 1) -> None:
        self._fail_downloads.extend([status] * times)

    def media_bytes(self, media_id: str) -> bytes:
        return self.media[media_id]["bytes"]

    # -- messageFiles/download and the signed URL ----------------------------------------------------
    def exchange(self, body: dict[str, Any], robot_code: str) -> tuple[int, Any]:
        self.exchanges.append(body)
        if body.get("robotCode") != robot_code:
            return 400, {"code": "invalidParameter.robotCode", "message": "robotCode 不存在"}
        code = body.get("downloadCode")
        if code not in self.by_code:
            return 400, {"code": "invalidParameter.downloadCode", "message": "downloadCode 无效"}
        key = uuid.uuid4().hex
        self.signed[key] = code
        expires = int(time.time()) + 3600
        signature = hashlib.sha256(f"{key}{expires}".encode()).hexdigest()[:24]
        return 200, {"downloadUrl": f"{self.base}/oss/{key}?Expires={expires}&OSSAccessKeyId=LTAI0000&Signature={signature}"}

    def serve(self, request: HttpRequest) -> tuple[int, Any]:
        key = request.path.rpartition("/")[2]
        self.downloads.append(key)
        if request.method != "GET" or key not in self.signed or "Signature" not in request.query:
            return 403, b"<Error><Code>AccessDenied</Code></Error>"
        if self._fail_downloads:
            return self._fail_downloads.pop(0), b"<Error><Code>InternalError</Code></Error>"
        return 200, (self.by_code[self.signed[key]], [("content-type", "application/octet-stream")])

    # -- media/upload ----------------------------------------------------------------------------------
    def upload(self, request: HttpRequest, token_ok: bool) -> tuple[int, Any]:
        kind = request.query.get("type", "")
        record: dict[str, Any] = {"type": kind, "filename": None, "errcode": 0}
        self.uploads.append(record)

        def refuse(errcode: int, errmsg: str) -> tuple[int, Any]:
            record["errcode"] = errcode
            return 200, {"errcode": errcode, "errmsg": errmsg}

        if request.method != "POST":
            return 405, {"errcode": 43002, "errmsg": "需要POST请求"}
        if not token_ok:
            return refuse(40014, "不合法的access_token")
        if kind not in UPLOAD_TYPES:
            return refuse(40004, "不合法的媒体文件类型")
        part = media_part(request.headers.get("content-type", ""), request.body)
        if part is None:
            return refuse(41005, "缺少多媒体文件数据")
        filename, content_type, data = part
        record["filename"] = filename
        ext = filename.rpartition(".")[2].lower() if "." in filename else ""
        if ext not in UPLOAD_TYPES[kind]:
            return refuse(40005, "不合法的文件类型")
        if len(data) > UPLOAD_MAX:
            return refuse(40006, "不合法的文件大小")
        media_id = f"@lA{kind[0].upper()}P{uuid.uuid4().hex[:20]}"
        self.media[media_id] = {"bytes": data, "filename": filename, "type": kind, "content_type": content_type}
        return 200, {"errcode": 0, "errmsg": "ok", "type": kind, "media_id": media_id,
                     "created_at": int(time.time() * 1000)}

    # -- robot messages with files --------------------------------------------------------------------
    def message(self, key: str, param: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """A sampleImageMsg or sampleFile's record (msgtype, media id, bytes...), or why it is refused."""
        if key == "sampleImageMsg":
            photo = param.get("photoURL")
            if not isinstance(photo, str) or not photo:
                return None, "photoURL 不能为空"
            if photo.startswith("@"):
                if photo not in self.media or self.media[photo]["type"] != "image":
                    return None, "photoURL 无效"
                return {"msgtype": "image", "media_id": photo, "bytes": self.media_bytes(photo)}, None
            return {"msgtype": "image", "url": photo}, None
        media_id, name, file_type = param.get("mediaId"), param.get("fileName"), param.get("fileType")
        if media_id not in self.media:
            return None, "mediaId 无效"
        if not name or file_type not in SAMPLE_FILE_TYPES:
            return None, f"fileType {file_type} 不支持"
        return {"msgtype": "file", "media_id": media_id, "bytes": self.media_bytes(str(media_id)),
                "file_name": name, "file_type": file_type}, None


class FileMessages:
    """The users' messages with files, for FakeDingTalk (a mixin: it pushes through ``push``)."""

    files: FakeFiles
    chatbot_user_id: str

    push: Any  # FakeDingTalk.push

    def picture(self, conversation_id: str, data: bytes, *, group: bool = True, **kw: Any) -> dict[str, Any]:
        """A photo (``msgtype: picture``): its ``downloadCode`` (and ``pictureDownloadCode``)."""
        code = self.files.add(data)
        content = {"downloadCode": code, "pictureDownloadCode": "pdc" + code}
        return self._file_message(conversation_id, group, "picture", content, **kw)

    def voice(self, conversation_id: str, data: bytes, recognition: str | None, *, group: bool = False,
              **kw: Any) -> dict[str, Any]:
        """A voice message (``msgtype: audio``): its download code, duration (ms) and DingTalk's recognition."""
        content: dict[str, Any] = {"downloadCode": self.files.add(data), "duration": 3000}
        if recognition is not None:
            content["recognition"] = recognition
        return self._file_message(conversation_id, group, "audio", content, **kw)

    def file_message(self, conversation_id: str, name: str, data: bytes, *, group: bool = False,
                     **kw: Any) -> dict[str, Any]:
        content = {"downloadCode": self.files.add(data), "fileName": name, "spaceId": "21000001",
                   "fileId": uuid.uuid4().hex[:12]}
        return self._file_message(conversation_id, group, "file", content, **kw)

    def rich_text(self, conversation_id: str, *runs: str | bytes, group: bool = True, **kw: Any) -> dict[str, Any]:
        """A rich-text message: each str a text run, each bytes a picture."""
        items: list[dict[str, Any]] = []
        for run in runs:
            if isinstance(run, bytes):
                code = self.files.add(run)
                items.append({"type": "picture", "downloadCode": code, "pictureDownloadCode": "pdc" + code})
            else:
                items.append({"text": run})
        return self._file_message(conversation_id, group, "richText", {"richText": items}, **kw)

    def _file_message(self, conversation_id: str, group: bool, msgtype: str, content: dict[str, Any],
                      **kw: Any) -> dict[str, Any]:
        if group:
            kw.setdefault("at_users", [{"dingtalkId": self.chatbot_user_id}])
        return self.push(conversation_id, "2" if group else "1", msgtype=msgtype, content=content, **kw)


def media_part(content_type: str, body: bytes) -> tuple[str, str, bytes] | None:
    """The multipart body's ``media`` part: (file name, content type, bytes)."""
    if not content_type.startswith("multipart/form-data"):
        return None
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not form.is_multipart():
        return None
    for part in form.iter_parts():
        if part.get_param("name", header="content-disposition") == "media":
            got: Any = part.get_payload(decode=True)
            return part.get_filename() or "", part.get_content_type(), got if isinstance(got, bytes) else b""
    return None
