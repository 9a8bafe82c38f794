"""Files posted to the local chat API: the one request that may be larger than ``max_body_bytes``.

Every other request keeps the small body limit (the app's ``MAX_CONTENT_LENGTH``). A
``multipart/form-data`` POST to ``/api/chats/<name>/messages`` may carry up to ``media_max_files``
files of ``media_max_file_mb`` each (plus a little for the form): ``UploadAwareRequest`` picks that
limit when the request is made, so the body is refused (413) from its Content-Length, before any of
it is read. The form parser spools each file part to a temporary file (memory stays flat), and
``upload_fetch`` hands it to the media intake in chunks, off the event loop."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

import trio
from quart_trio.wrappers import TrioRequest

from ..media.files import CHUNK
from ..media.intake import Fetch

UPLOAD_PATH = re.compile(r"^/api/chats/[^/]+/messages$")
FORM_SLACK = 1024 * 1024  # the form's own fields and part headers


class UploadAwareRequest(TrioRequest):
    upload_limit: int | None = None  # set on the class by create_app (bytes; None: no uploads)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = type(self).upload_limit
        if limit is not None and self.is_upload():
            self.max_content_length = limit  # what the form parser checks
            self.body = self.body_class(self.content_length, limit)  # what the body checks

    def is_upload(self) -> bool:
        return (self.method == "POST" and self.mimetype == "multipart/form-data"
                and bool(UPLOAD_PATH.match(self.path)))


def upload_limit(config: Any) -> int:
    """The largest body a file upload may have."""
    return config.media_max_files * config.media_max_file_mb * 1024 * 1024 + FORM_SLACK


def upload_fetch(stream: BinaryIO) -> Fetch:
    """A fetch that reads a spooled upload in chunks, each read in a worker thread."""

    async def chunks() -> AsyncIterator[bytes]:
        stream.seek(0)
        while chunk := await trio.to_thread.run_sync(stream.read, CHUNK):
            yield chunk

    return chunks
