"""The bytes of every attachment, content-addressed under ``<state>/media/``: ``ab/abcdef...`` (the
sha256, no extension), files 0600 and folders 0700 (never executable, never served by name). A file
is written to ``tmp/`` while it is hashed and counted, then renamed into place; the same bytes twice
are one file. Writing stops at a size limit (``TooLarge``) without keeping what was read."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterable, Callable
from pathlib import Path
from typing import BinaryIO

import attrs
import trio

from .sniff import HEAD_BYTES

CHUNK = 256 * 1024


class TooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes > {limit}")
        self.size = size
        self.limit = limit


@attrs.frozen
class Stored:
    sha256: str
    size: int
    head: bytes  # the first bytes, for sniffing


class _Writer:
    """One file being written: hashed, counted and limited as it goes (sync; run off the loop)."""

    def __init__(self, tmp: Path, limit: int | None) -> None:
        self.path = tmp / f"{secrets.token_hex(12)}.part"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self.size = 0
        self.head = b""
        self.limit = limit

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            raise TooLarge(self.size, self.limit)
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]
        self.hash.update(chunk)
        self.file.write(chunk)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


class MediaFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(mode=0o700, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def _finish(self, w: _Writer) -> Stored:
        w.file.flush()
        os.fsync(w.file.fileno())
        w.file.close()
        sha = w.hash.hexdigest()
        final = self.path(sha)
        final.parent.mkdir(mode=0o700, exist_ok=True)
        if final.exists():
            w.path.unlink()
        else:
            os.replace(w.path, final)
        return Stored(sha, w.size, w.head)

    def _start(self, limit: int | None) -> _Writer:
        self.ensure()
        return _Writer(self.root / "tmp", limit)

    async def write_stream(self, chunks: AsyncIterable[bytes], *, limit: int | None = None) -> Stored:
        """Store what ``chunks`` yields; ``TooLarge`` past ``limit`` bytes (nothing is kept)."""
        w = await trio.to_thread.run_sync(self._start, limit)
        try:
            async for chunk in chunks:
                if chunk:
                    await trio.to_thread.run_sync(w.write, chunk)
            return await trio.to_thread.run_sync(self._finish, w)
        except BaseException:
            w.discard()
            raise

    def write_file_sync(self, source: BinaryIO, *, limit: int | None = None,
                        on_chunk: Callable[[int], None] | None = None) -> Stored:
        """Store what a readable file holds (in a worker thread: this blocks)."""
        w = self._start(limit)
        try:
            while chunk := source.read(CHUNK):
                w.write(chunk)
                if on_chunk is not None:
                    on_chunk(len(chunk))
            return self._finish(w)
        except BaseException:
            w.discard()
            raise

    async def write_bytes(self, data: bytes, *, limit: int | None = None) -> Stored:
        async def one() -> AsyncIterable[bytes]:
            for i in range(0, len(data), CHUNK):
                yield data[i : i + CHUNK]

        return await self.write_stream(one(), limit=limit)

    def remove(self, sha256: str) -> bool:
        try:
            self.path(sha256).unlink()
            return True
        except FileNotFoundError:
            return False
