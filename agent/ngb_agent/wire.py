"""The runner's end of the JSON-lines sockets (asyncio): a bounded line reader, a locked writer,
and the frames of ngb/protocol.py read and written as typed records."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from .protocol import BadFrame, decode_out
from .settings import MAX_FRAME, READ_CHUNK, say


class FrameError(Exception):
    """A frame that is too long, not UTF-8, not JSON or not an object."""


TOO_LONG = object()


class LineReader:
    """Reads ``\\n``-terminated lines of at most ``max_frame`` bytes from a StreamReader.

    A longer line is reported once as ``TOO_LONG`` and discarded up to its newline; the stream
    stays usable. ``next()`` returns ``None`` at EOF.
    """

    def __init__(self, reader: asyncio.StreamReader, max_frame: int = MAX_FRAME) -> None:
        self.reader = reader
        self.max_frame = max_frame
        self.buf = bytearray()
        self.discarding = False
        self.eof = False

    async def next(self) -> bytes | object | None:
        while True:
            idx = self.buf.find(b"\n")
            if idx >= 0:
                line = bytes(self.buf[:idx])
                del self.buf[: idx + 1]
                if self.discarding:
                    self.discarding = False
                    continue
                if len(line) > self.max_frame:
                    return TOO_LONG
                return line
            if len(self.buf) > self.max_frame:
                self.buf.clear()
                if not self.discarding:
                    self.discarding = True
                    return TOO_LONG
            if self.eof:
                if self.buf and not self.discarding:
                    line = bytes(self.buf)
                    self.buf.clear()
                    return line
                return None
            chunk = await self.reader.read(READ_CHUNK)
            if not chunk:
                self.eof = True
            else:
                self.buf += chunk


def decode_frame(line: bytes) -> dict[str, Any]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(f"frame is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise FrameError(f"frame is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FrameError(f"frame is not a JSON object (got {type(obj).__name__})")
    return obj


def encode_frame(frame: dict[str, Any]) -> bytes:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


class FrameWriter:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.lock = asyncio.Lock()
        self.closed = False

    async def send(self, frame: dict[str, Any]) -> None:
        data = encode_frame(frame)
        if len(data) > MAX_FRAME + 1:
            data = encode_frame(shrink(frame))
        async with self.lock:
            if self.closed:
                return
            try:
                self.writer.write(data)
                await self.writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                self.closed = True
                say(f"control write failed: {exc!r}")

    async def close(self) -> None:
        async with self.lock:
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.close()
                await self.writer.wait_closed()


def shrink(frame: dict[str, Any]) -> dict[str, Any]:
    """Cut the longest string fields of a frame until it fits in MAX_FRAME."""
    frame = dict(frame)
    for _ in range(8):
        if len(encode_frame(frame)) <= MAX_FRAME + 1:
            break
        key = max(
            (k for k, v in frame.items() if isinstance(v, str)), key=lambda k: len(frame[k]), default=None
        )
        if key is None:
            return {"type": frame.get("type", "error"), "error": "frame too large to send"}
        frame[key] = frame[key][: len(frame[key]) // 2] + " [truncated]"
    return frame


def split_text(text: str, limit: int = MAX_FRAME // 2) -> list[str]:
    """Split text into pieces whose UTF-8 JSON encoding stays well under MAX_FRAME."""
    if len(json.dumps(text, ensure_ascii=False).encode()) <= limit:
        return [text]
    pieces: list[str] = []
    cur: list[str] = []
    size = 0
    for ch in text:
        n = len(json.dumps(ch, ensure_ascii=False).encode()) - 2
        if size + n > limit:
            pieces.append("".join(cur))
            cur, size = [], 0
        cur.append(ch)
        size += n
    if cur:
        pieces.append("".join(cur))
    return pieces


# ------------------------------------------------------------------------------ configuration


def validate_host_frame(frame: dict[str, Any]) -> str | None:
    """What is wrong with a frame from the host (None: it is a good one)."""
    decoded = decode_out(frame)
    return decoded.reason if isinstance(decoded, BadFrame) else None
