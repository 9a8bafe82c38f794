"""Chromium's DevTools protocol over ``--remote-debugging-pipe`` (browser.py drives the browser
with it): Chromium reads commands on its fd 3 and writes answers and events on its fd 4, each a
JSON text ended by a NUL byte. No extra Python package is needed."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from .settings import say

COMMAND_TIMEOUT = 30.0
MAX_MESSAGE = 64 * 1024 * 1024  # one DevTools message (a full-page screenshot is base64 in one)


class BrowserError(Exception):
    """What the agent is told (one line)."""


def encode_message(obj: dict[str, Any]) -> bytes:
    """One DevTools message on the pipe: compact JSON and a NUL byte."""
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    if b"\0" in data:  # JSON escapes control characters, so this cannot happen
        raise ValueError("a DevTools message may not hold a NUL byte")
    return data + b"\0"


class MessageSplitter:
    """Bytes from Chromium's fd 4 -> the JSON messages in them (a message may span reads)."""

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self.buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self.buf += data
        out: list[dict[str, Any]] = []
        while (end := self.buf.find(b"\0")) >= 0:
            raw = bytes(self.buf[:end])
            del self.buf[: end + 1]
            if raw.strip():
                obj = json.loads(raw)
                if isinstance(obj, dict):
                    out.append(obj)
        if len(self.buf) > self.limit:
            raise BrowserError(f"a DevTools message longer than {self.limit} bytes")
        return out


# Puts the pipe ends on fds 3 and 4 and becomes the browser (subprocess cannot place fds itself, and
# dash's redirections take one-digit fds only).
_EXEC_ON_3_4 = (
    "import os, sys; a, b = int(sys.argv[1]), int(sys.argv[2]); os.dup2(a, 3); os.dup2(b, 4); "
    "os.close(a); os.close(b); os.execv(sys.argv[3], sys.argv[3:])"
)


def _high_fd(fd: int) -> int:
    """``fd`` moved to a number >= 10 (so the child's 3<& / 4>& cannot overwrite it), close-on-exec."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class CdpPipe:
    """A child process that speaks the DevTools protocol on fds 3 (in) and 4 (out)."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.writer: asyncio.WriteTransport | None = None
        self.reader: asyncio.Task[None] | None = None
        self.closed: str | None = None  # why, once the pipe is gone

    async def start(self, argv: list[str], *, stderr: Any = asyncio.subprocess.DEVNULL,
                    env: dict[str, str] | None = None) -> None:  # fmt: skip
        cmd_r, cmd_w = (_high_fd(fd) for fd in os.pipe())  # we write, the child reads on fd 3
        ev_r, ev_w = (_high_fd(fd) for fd in os.pipe())  # the child writes on fd 4, we read
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-S", "-E", "-c", _EXEC_ON_3_4, str(cmd_r), str(ev_w), *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=stderr, pass_fds=(cmd_r, ev_w),
                start_new_session=True, env=env,
            )  # fmt: skip
        finally:
            os.close(cmd_r)
            os.close(ev_w)
        loop = asyncio.get_running_loop()
        os.set_blocking(cmd_w, False)
        self.writer, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(cmd_w, "wb", buffering=0))
        self.reader = asyncio.create_task(self._read(ev_r), name="cdp-read")

    async def _read(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        splitter = MessageSplitter()
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(fd, 1 << 20)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            queue.put_nowait(data)
            if not data:
                loop.remove_reader(fd)

        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)
        why = "the browser closed its DevTools pipe"
        try:
            while data := await queue.get():
                for msg in splitter.feed(data):
                    self._dispatch(msg)
        except (BrowserError, ValueError) as exc:
            why = f"the browser's DevTools pipe broke: {exc}"
        finally:
            loop.remove_reader(fd)
            os.close(fd)
            self._fail(why)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "id" in msg:
            fut = self.pending.pop(int(msg["id"]), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        for listener in list(self.listeners):
            try:
                listener(msg)
            except Exception as exc:  # noqa: BLE001 - a listener's bug must not stop the pipe
                say(f"browser: event listener failed: {exc!r}")

    def _fail(self, why: str) -> None:
        if self.closed is None:
            self.closed = why
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(BrowserError(why))
        self.pending.clear()

    async def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
                   timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:  # fmt: skip
        """Send one command; its ``result`` (BrowserError with Chromium's message on an error)."""
        if self.closed is not None or self.writer is None:
            raise BrowserError(self.closed or "the browser is not running")
        mid = next(self.ids)
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[mid] = fut
        try:
            self.writer.write(encode_message(msg))
            answer = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise BrowserError(f"the browser did not answer {method} within {timeout:g}s") from None
        finally:
            self.pending.pop(mid, None)
        if "error" in answer:
            err = answer["error"]
            text = err.get("message", "error") if isinstance(err, dict) else str(err)
            raise BrowserError(f"{method}: {text}")
        result = answer.get("result")
        return result if isinstance(result, dict) else {}

    async def kill(self) -> None:
        """Kill the child's whole process group and wait for it."""
        self._fail("the browser was closed")
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
        if self.reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.reader, 2)
