"""HTTP/1.1 for the model socket: h11 spoken directly on trio streams (keep-alive, pipelining,
chunked and content-length request bodies), one `HttpConnection` per client, Anthropic-shaped JSON
errors, and `bind_unix` for the socket file. Measured leaner than hypercorn with an ASGI app for
this pass-through job. No policy here: ngb/sandbox/model_proxy.py decides what is answered."""

from __future__ import annotations

import contextlib
import json
import os
import socket as _socket
import stat
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import h11
import trio

MAX_HEAD = 64 * 1024
RECEIVE_SIZE = 64 * 1024
LINGER = 1.0  # after refusing a request whose body was not read: discard what still comes this long
LINGER_BYTES = 4 * 1024 * 1024  # ... or up to this much

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    431: "invalid_request_error",
    501: "invalid_request_error",
    502: "api_error",
    504: "api_error",
}
REASONS = {
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    504: b"Gateway Timeout",
}


def error_body(status: int, message: str) -> bytes:
    err = {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}
    return json.dumps(err).encode()


class ClientGone(Exception):
    """The client connection broke; nothing more can be said to it."""


def content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:  # h11 has checked it: digits, one value
        if name == b"content-length":
            return int(value)
    return None


def raw_response(status: int, body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole closing response, for when no request was parsed (h11 cannot answer then)."""
    lines = [
        b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"")),
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    lines += [name + b": " + value for name, value in extra]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class BodyTooLarge(Exception):
    """The request body passed the size limit (what came is dropped)."""


class BodyStalled(Exception):
    """The request body was not complete in time; ``received`` bytes had come."""

    def __init__(self, received: int) -> None:
        super().__init__(f"{received} bytes in")
        self.received = received


class HttpConnection:
    """One client connection: h11 state plus the trio stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.idle_scope: trio.CancelScope | None = None  # set while waiting for a request to start
        self.evicted = False

    def buffered(self) -> bool:
        """Bytes (or the end) of the next request already received."""
        data, closed = self.h11.trailing_data
        return bool(data) or closed

    async def receive(self) -> None:
        try:
            data = await self.stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientGone() from exc
        self.h11.receive_data(bytes(data))  # trio may hand a bytearray; h11 takes bytes (no copy of bytes)

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self.h11.they_are_waiting_for_100_continue:
                await self.send(h11.InformationalResponse(status_code=100, headers=[]))
            await self.receive()

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            await self.send_raw(data)

    async def send_raw(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ClientGone() from exc

    async def send_simple(
        self, status: int, body: bytes, *, close: bool = False, extra: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += list(extra)
        if close:
            headers.append((b"connection", b"close"))
        await self.send(h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b"")))
        await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())

    async def read_body(self, max_body: int, body_timeout: float, body_deadline: float) -> bytes:
        """The whole request body. Raises BodyTooLarge as soon as it passes ``max_body``, BodyStalled
        when it makes no progress for ``body_timeout`` or is not complete within ``body_deadline``."""
        body = bytearray()
        deadline = trio.current_time() + body_deadline
        while True:
            wait = min(body_timeout, deadline - trio.current_time())
            with trio.move_on_after(max(0.0, wait)) as stalled:
                event = await self.next_event()
            if stalled.cancelled_caught:
                raise BodyStalled(len(body))
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > max_body:
                    del body[:]  # not kept while the refusal is answered
                    raise BodyTooLarge()
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:  # ConnectionClosed mid-body
                raise ClientGone()

    async def skip_small_body(self, request: h11.Request, limit: int, timeout: float) -> bool:
        """Read and drop a refused request's small body so the connection can stay; False: it must
        close (body big, chunked, slow, or not sent yet because the client awaits 100-continue)."""
        if self.h11.their_state is h11.DONE:
            return True
        if self.h11.their_state is not h11.SEND_BODY or self.h11.they_are_waiting_for_100_continue:
            return False
        length = content_length(request)
        if length is None or length > limit:
            return False
        with trio.move_on_after(timeout):
            while True:
                event = await self.next_event()
                if isinstance(event, h11.EndOfMessage):
                    return True
                if not isinstance(event, h11.Data):
                    return False
        return False

    async def linger(self) -> None:
        """After a closing answer to a request whose body was not read: say we are done sending,
        then read and drop what the client still sends, briefly (never kept), so it reads the
        answer rather than a connection reset."""
        send_eof = getattr(self.stream, "send_eof", None)
        if send_eof is not None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await send_eof()
        got = 0
        with trio.move_on_after(LINGER):
            while got < LINGER_BYTES:
                try:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return
                if not data:
                    return
                got += len(data)


@contextlib.asynccontextmanager
async def unix_listener(path: Path) -> AsyncIterator[trio.SocketListener]:
    """Listen on a unix socket at ``path`` (see `bind_unix`) while the block runs; afterwards close it
    and remove the file, unless another listener has replaced it meanwhile."""
    sock, inode = await bind_unix(path)
    try:
        yield trio.SocketListener(sock)
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            if path.lstat().st_ino == inode:
                path.unlink()


@contextlib.asynccontextmanager
async def listening(where: Path | trio.SocketListener) -> AsyncIterator[trio.SocketListener]:
    """A listener given (the agent transport's: its owner closes it), or a unix socket at a path
    (see `unix_listener`)."""
    if isinstance(where, trio.SocketListener):
        yield where
        return
    async with unix_listener(Path(where)) as listener:
        yield listener


async def bind_unix(path: Path) -> tuple[trio.socket.SocketType, int]:
    """Bind and listen on a unix socket at ``path`` (0666), replacing a stale socket file.

    Paths longer than sun_path allows are bound through ``/proc/self/fd/<dir>/name`` on Linux.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = path.lstat()
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(f"{path} exists and is not a socket")
        path.unlink()
    sock = trio.socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        if len(os.fsencode(path)) < 100:
            await sock.bind(os.fspath(path))
        else:
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                await sock.bind(f"/proc/self/fd/{dir_fd}/{path.name}")
            finally:
                os.close(dir_fd)
        os.chmod(path, 0o666)  # uid 1000 in the container connects; the run folder guards access
        sock.listen(128)
        return sock, path.lstat().st_ino
    except BaseException:
        sock.close()
        raise
