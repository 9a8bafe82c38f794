"""``GET /api/files/<id>``: an attachment's bytes, behind the API's auth like every /api route.

The bytes are sent as stored (streamed from the media store, ranges honoured). Only types a
browser shows safely are inline (images but SVG, audio, video, PDF, plain text); anything else is a
download. Every answer carries ``nosniff`` and a sandboxing CSP, so a file can never run script in
the daemon's origin whatever it contains. A file removed by retention answers 410."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from quart import send_file
from quart_trio import QuartTrio

from .common import error

if TYPE_CHECKING:
    from .backend import WebBackend

INLINE = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"})


def inline(mime: str) -> bool:
    return mime in INLINE or mime.split("/", 1)[0] in ("audio", "video")


def disposition(mime: str, name: str) -> str:
    kind = "inline" if inline(mime) else "attachment"
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def register(app: QuartTrio, daemon: WebBackend) -> None:
    @app.get("/api/files/<int:file_id>")
    async def get_file(file_id: int) -> Any:
        found = await daemon.store.attachment(file_id)
        if found is None:
            return error(404, f"no file {file_id}")
        attachment, _chat = found
        path = daemon.media_files.path(attachment.sha256)
        if attachment.gone or not path.is_file():
            return error(410, f"file {file_id} ({attachment.name}) is no longer kept (media retention)")
        mime = attachment.mime if inline(attachment.mime) else "application/octet-stream"
        response = await send_file(path, mimetype=mime, conditional=True)
        response.headers["Content-Disposition"] = disposition(attachment.mime, attachment.name)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response.headers["Cache-Control"] = "private, max-age=86400"
        return response
