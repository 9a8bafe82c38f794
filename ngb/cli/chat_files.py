"""Files in the terminal chat (``ngb chat --file PATH``, ``/file PATH`` in the interactive client):
the files to upload, checked before anything is posted, as the multipart parts of
``POST /api/chats/{chat}/messages``, and a message's attachments as the lines the terminal prints,
``[image: cat.png (12 KB) http://127.0.0.1:8080/api/files/7]``.

The daemon sniffs the type from the bytes; the MIME type sent here is only the name's guess.
"""

from __future__ import annotations

import mimetypes
import shlex
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin

import attrs

from ..media.limits import megabytes


class FileProblem(Exception):
    """A file named on the command line that cannot be sent (missing, a directory, unreadable)."""


@attrs.frozen
class FileToSend:
    path: Path  # absolute
    name: str
    mime: str
    size: int


def file_to_send(raw: str | Path) -> FileToSend:
    """The file at ``raw`` (``~`` expanded), checked: it exists, is a regular file, can be read."""
    path = Path(raw).expanduser()
    try:
        path = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise FileProblem(f"cannot send {raw}: no such file") from exc
    if not path.is_file():
        raise FileProblem(f"cannot send {raw}: not a regular file")
    try:
        with path.open("rb"):
            size = path.stat().st_size
    except OSError as exc:
        raise FileProblem(f"cannot send {raw}: {exc.strerror or exc}") from exc
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileToSend(path=path, name=path.name, mime=mime, size=size)


def files_to_send(raws: Sequence[str | Path]) -> tuple[FileToSend, ...]:
    return tuple(file_to_send(raw) for raw in raws)


@contextmanager
def multipart_files(files: Sequence[FileToSend]) -> Iterator[list[tuple[str, tuple[str, IO[bytes], str]]]]:
    """httpx ``files=`` parts, one ``file`` part per file; httpx streams them from the open files."""
    with ExitStack() as stack:
        yield [("file", (f.name, stack.enter_context(f.path.open("rb")), f.mime)) for f in files]


def split_file_command(arg: str) -> tuple[str, str]:
    """``/file`` arguments -> (path, text): ``/file cat.png look at this``, ``/file "my cat.png"``.

    An argument that is an existing path as a whole (spaces and all) is taken as the path."""
    arg = arg.strip()
    if not arg:
        raise FileProblem("usage: /file PATH [text]")
    if Path(arg).expanduser().is_file():
        return arg, ""
    try:
        parts = shlex.split(arg)
    except ValueError as exc:
        raise FileProblem(f"/file: {exc}") from exc
    return parts[0], " ".join(parts[1:])


def size_text(size: Any) -> str:
    """``512 B``, ``12 KB``, ``2.5 MB``: as the daemon's notes write sizes."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return "? KB"
    return f"{size} B" if size < 1024 else megabytes(size)


def printable(text: str) -> str:
    """No control or format characters (a name must not drive the terminal), whitespace runs as one space."""
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    return " ".join(text.split()) or "file"


def attachment_lines(msg: dict[str, Any], base_url: str) -> list[str]:
    """One ``[kind: name (size) url]`` line per attachment of a message (bad entries skipped)."""
    out = []
    items = msg.get("attachments")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        kind = str(item.get("kind") or "file")
        name = printable(str(item.get("name") or "file"))
        url = item.get("url")
        where = f" {urljoin(base_url.rstrip('/') + '/', url)}" if isinstance(url, str) and url else ""
        out.append(f"[{kind}: {name} ({size_text(item.get('size'))}){where}]")
    return out
