"""JSON-lines framing over a trio byte stream (the control and requests sockets).

One JSON object per line, UTF-8, ``\\n`` terminated, at most ``MAX_FRAME`` bytes per line (the
newline not counted). See docs/agent-protocol.md.

* :class:`LineReader` turns a stream into frames. Bad input never raises: a line that is too long,
  not UTF-8, not JSON or not an object comes back as a :class:`FrameError` and reading goes on
  with the next line. A too-long line is reported as soon as it passes the cap and its remaining
  bytes are discarded up to the next newline; the reader never holds more than ``max_line + 1``
  bytes. Blank lines (only whitespace, e.g. a stray ``\\r\\n``) are skipped silently.
  Transport errors (``trio.BrokenResourceError`` ...) still propagate.
* A ``strict`` reader (the container sockets) gives up instead: a too-long line, or a line that
  has not ended ``frame_timeout`` seconds (of waiting for the peer) after its first byte, comes
  back as a ``fatal`` FrameError and every later call returns None; the caller answers and hangs
  up. Nothing is buffered past ``max_line + 1`` bytes either way.
* :func:`peer_uid` says which uid is at the other end of a unix socket (``SO_PEERCRED``), known
  before a single byte is read.
* :func:`encode_frame` / :func:`send_frame` write one frame; :class:`FrameWriter` serialises
  concurrent senders on one stream with a ``trio.Lock`` so frames never interleave.
"""

from __future__ import annotations

import json
import socket as _socket
import struct
from typing import Any

import attrs
import trio

MAX_FRAME = 1 << 20
RECEIVE_SIZE = 1 << 16
FRAME_TIMEOUT = 30.0  # seconds a strict reader waits for the rest of a frame once it has begun

__all__ = ["FRAME_TIMEOUT", "MAX_FRAME", "FrameError", "FrameWriter", "LineReader", "decode_line", "encode_frame",
           "peer_uid", "send_frame"]


@attrs.frozen
class FrameError:
    """A line that could not be turned into a frame; ``reason`` is safe to send back to the peer.
    ``fatal``: the reader has given up on the stream (a strict reader's too-long or unfinished line)."""

    reason: str
    fatal: bool = False


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_line(line: bytes) -> dict[str, Any] | FrameError:
    """Parse one line (without its newline) into a JSON object, or say why not. Never raises."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return FrameError(f"invalid UTF-8 at byte {exc.start}")
    try:
        obj = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        return FrameError("invalid JSON: nested too deeply")
    except ValueError as exc:  # JSONDecodeError, over-long integers, NaN/Infinity
        return FrameError(f"invalid JSON: {str(exc)[:200]}")
    if not isinstance(obj, dict):
        return FrameError(f"not a JSON object (got {type(obj).__name__})")
    return obj


class LineReader:
    """Read frames from a trio ``ReceiveStream``, one :meth:`next_frame` call at a time."""

    def __init__(self, stream: trio.abc.ReceiveStream, max_line: int = MAX_FRAME, *,
                 receive_size: int = RECEIVE_SIZE, strict: bool = False, frame_timeout: float | None = None) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self._strict = strict
        self._frame_timeout = frame_timeout
        self._waited = 0.0  # seconds spent waiting for the peer since the current line began
        self._done = False  # a fatal error was returned: the stream is given up
        self._stream = stream
        self._max_line = max_line
        self._receive_size = max(1, receive_size)
        self._buf = bytearray()
        self._scanned = 0  # bytes at the start of _buf known to hold no newline
        self._discarding = False  # inside a too-long line: drop bytes up to the next newline
        self._eof = False

    @property
    def buffered(self) -> int:
        """Bytes currently held (at most ``max_line + 1``)."""
        return len(self._buf)

    async def next_frame(self) -> dict[str, Any] | FrameError | None:
        """The next frame, a FrameError for a bad line, or None at end of stream."""
        if self._done:
            return None
        while True:
            if self._discarding:
                if not await self._discard_to_newline():
                    return None
                continue
            idx = self._buf.find(b"\n", self._scanned)
            if idx >= 0:
                line = bytes(self._buf[:idx])
                del self._buf[: idx + 1]
                self._scanned = 0
                self._waited = 0.0  # the next line's clock starts now
                if len(line) > self._max_line:
                    # Only reachable when the cap is crossed within the last read; same answer.
                    return self._too_long()
                if not line.strip():
                    continue
                return decode_line(line)
            self._scanned = len(self._buf)
            if len(self._buf) > self._max_line:
                self._buf.clear()
                self._scanned = 0
                self._discarding = True
                return self._too_long()
            if self._eof:
                if self._buf.strip():
                    line = bytes(self._buf)
                    self._buf.clear()
                    self._scanned = 0
                    return decode_line(line)  # a last line without its newline still counts
                self._buf.clear()
                return None
            want = min(self._receive_size, self._max_line + 1 - len(self._buf))
            data = await self._receive(want)
            if data is None:
                return self._give_up(f"frame not finished within {self._frame_timeout:g}s")
            if not data:
                self._eof = True
            else:
                self._buf += data

    async def _receive(self, want: int) -> bytes | bytearray | None:
        """The next bytes; None when a begun line has waited out frame_timeout. Only time spent
        waiting for the peer counts (a caller busy elsewhere between reads is not the peer's fault);
        waiting for the first byte of a line is never limited (an idle agent is fine)."""
        if self._frame_timeout is None or not self._buf:
            self._waited = 0.0
            return await self._stream.receive_some(want)
        left = self._frame_timeout - self._waited
        if left <= 0:
            return None
        started = trio.current_time()
        data: bytes | bytearray | None = None
        with trio.move_on_after(left):
            data = await self._stream.receive_some(want)
        self._waited += trio.current_time() - started
        return data

    def _too_long(self) -> FrameError:
        reason = f"line too long (over {self._max_line} bytes)"
        return self._give_up(reason) if self._strict else FrameError(reason)

    def _give_up(self, reason: str) -> FrameError:
        self._done = True
        self._buf.clear()
        self._discarding = False
        return FrameError(reason, fatal=True)

    async def _discard_to_newline(self) -> bool:
        """Drop bytes up to and including the next newline; False at end of stream."""
        while True:
            if self._buf:
                idx = self._buf.find(b"\n")
                if idx >= 0:
                    del self._buf[: idx + 1]
                    self._scanned = 0
                    self._discarding = False
                    return True
                self._buf.clear()
            if self._eof:
                return False
            data = await self._stream.receive_some(min(self._receive_size, self._max_line + 1))
            if not data:
                self._eof = True
                return False
            self._buf += data


def encode_frame(obj: Any, max_frame: int = MAX_FRAME) -> bytes:
    """Compact UTF-8 JSON plus ``\\n``. ValueError if it is not serialisable or over the cap."""
    try:
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, UnicodeEncodeError) as exc:
        raise ValueError(f"frame is not serialisable: {exc}") from exc
    if len(data) > max_frame:
        raise ValueError(f"frame too large: {len(data)} bytes (max {max_frame})")
    return data + b"\n"


async def send_frame(stream: trio.abc.SendStream, obj: Any, max_frame: int = MAX_FRAME) -> None:
    """Send one frame. Not safe for concurrent senders on one stream: use :class:`FrameWriter`."""
    await stream.send_all(encode_frame(obj, max_frame))


class FrameWriter:
    """Sends frames on one stream; concurrent :meth:`send` calls queue on a lock, never interleave.

    A send cancelled part-way leaves a partial line on the wire; the writer then refuses further
    sends (``trio.BrokenResourceError``) rather than glue the next frame onto half a line.
    """

    def __init__(self, stream: trio.abc.SendStream, max_frame: int = MAX_FRAME) -> None:
        self._stream = stream
        self._max_frame = max_frame
        self._lock = trio.Lock()
        self._broken = False

    async def send(self, obj: Any) -> None:
        data = encode_frame(obj, self._max_frame)  # encode errors raise before touching the stream
        async with self._lock:
            if self._broken:
                raise trio.BrokenResourceError("an earlier frame was cut off mid-send")
            done = False
            try:
                await self._stream.send_all(data)
                done = True
            finally:
                if not done:
                    self._broken = True


def peer_uid(stream: trio.SocketStream) -> int | None:
    """The uid of the process at the other end of a connected unix socket (``SO_PEERCRED``, set
    at connect time: nothing the peer sends can change it); None where it cannot be had."""
    try:
        raw = stream.socket.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", raw)
    except (OSError, AttributeError, struct.error):
        return None
    return int(uid)
