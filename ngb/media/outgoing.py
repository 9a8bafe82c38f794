"""A file the agent names in its folder -> a stored attachment to send (the ``send_file`` tool and
Markdown images in a reply). The path must be a plain file inside the group's folder, reached
without following a link (ngb/media/folder.py), and at most ``send_max_bytes``; the bytes are copied
into the media store at once, so what is sent is what the agent had written when it asked."""

from __future__ import annotations

import os
import re
from pathlib import Path

import trio

from ..records import Attachment
from .files import MediaFiles, TooLarge
from .folder import FolderPathError
from .folder import open_for_reading as open_in_folder
from .limits import MediaLimits, megabytes
from .names import safe_name
from .sniff import kind_of, sniff

# ![alt](path) with a path, not a URL: what a reply shows as an image it wrote
MARKDOWN_IMAGE = re.compile(r"!\[([^\]\n]{0,200})\]\(\s*<?([^)\s>]{1,400})>?(?:\s+\"[^\"\n]*\")?\s*\)")


class Outgoing:
    def __init__(self, files: MediaFiles, limits: MediaLimits, groups_dir: Path) -> None:
        self.files = files
        self.limits = limits
        self.groups_dir = groups_dir

    def _take(self, folder: str, path: str, name: str | None) -> Attachment:
        fd, base = open_in_folder(self.groups_dir / folder, path)
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > self.limits.send_max_bytes:
                raise FolderPathError(f"{path!r} is too large to send ({megabytes(size)} > {megabytes(self.limits.send_max_bytes)})")
            if size == 0:
                raise FolderPathError(f"{path!r} is empty")
            try:
                stored = self.files.write_file_sync(f, limit=self.limits.send_max_bytes)
            except TooLarge:
                raise FolderPathError(f"{path!r} grew past {megabytes(self.limits.send_max_bytes)} while it was read") from None
        mime = sniff(stored.head, name or base)
        return Attachment(kind=kind_of(mime), mime=mime, size=stored.size, name=safe_name(name or base, mime),
                          sha256=stored.sha256)

    async def from_folder(self, folder: str, path: str, name: str | None = None) -> Attachment:
        """The file at ``path`` (relative to the group's folder, or under /workspace/group), stored;
        FolderPathError says why not."""
        return await trio.to_thread.run_sync(self._take, folder, path, name)

    async def markdown_images(self, folder: str, text: str) -> tuple[str, list[Attachment]]:
        """A reply's Markdown images of files in the group's folder: the text without them, and the
        images to send after it. A link that is a URL, or names no image of the folder, stays."""
        found: list[Attachment] = []
        out = text
        for match in MARKDOWN_IMAGE.finditer(text):
            target = match.group(2)
            if "://" in target or target.startswith(("data:", "#", "mailto:")):
                continue
            try:
                att = await self.from_folder(folder, target)
            except FolderPathError:
                continue
            if not att.mime.startswith("image/"):
                continue
            found.append(att)
            out = out.replace(match.group(0), "", 1)
        if found:
            out = re.sub(r"[ \t]+\n", "\n", out).strip()
        return out, found
