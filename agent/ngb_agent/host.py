"""The runner's links to the host besides the control socket: the model forwarder
(127.0.0.1:PORT -> model.sock), the web forwarder (127.0.0.1:WEB_PORT -> web.sock, the egress door)
and the client of requests.sock (the host's tools)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from pathlib import Path
from typing import Any

from .settings import MAX_FRAME, READ_CHUNK, say
from .wire import TOO_LONG, FrameError, LineReader, decode_frame, encode_frame


async def relay(creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter,
                ureader: asyncio.StreamReader, uwriter: asyncio.StreamWriter) -> None:
    """Pipe both ways until both ends are done (half-closes passed on) or one breaks; then close."""
    tasks = {asyncio.create_task(pipe(creader, uwriter)), asyncio.create_task(pipe(ureader, cwriter))}
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        if any(t.exception() for t in done if not t.cancelled()):
            for t in pending:
                t.cancel()
        else:
            await asyncio.gather(*pending, return_exceptions=True)
    finally:
        for t in tasks:
            t.cancel()
        for w in (cwriter, uwriter):
            with contextlib.suppress(Exception):
                w.close()


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    while True:
        data = await src.read(READ_CHUNK)
        if not data:
            break
        dst.write(data)
        await dst.drain()
    with contextlib.suppress(Exception):
        if dst.can_write_eof():
            dst.write_eof()


class ModelForwarder:
    """127.0.0.1:PORT -> model.sock, byte for byte, one unix connection per TCP connection."""

    def __init__(self, sock_path: Path) -> None:
        self.sock_path = sock_path
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self, port: int) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            ureader, uwriter = await asyncio.open_unix_connection(str(self.sock_path))
        except OSError as exc:
            say(f"{self.sock_path.name} unavailable: {exc!r}")
            with contextlib.suppress(Exception):
                cwriter.write(self.unavailable(exc))
                await cwriter.drain()
                cwriter.close()
            return
        await relay(creader, cwriter, ureader, uwriter)

    def unavailable(self, exc: OSError) -> bytes:
        """The answer when the host's socket cannot be reached: an API error the CLI understands."""
        body = json.dumps(
            {"type": "error", "error": {"type": "api_error", "message": f"model proxy unavailable: {exc}"}}
        ).encode()
        head = (
            "HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        return head + body

NOTES_REQUEST = (
    b"GET http://notes.door.invalid/notes HTTP/1.1\r\nHost: notes.door.invalid\r\nConnection: close\r\n\r\n"
)
MAX_NOTES_ANSWER = 64 * 1024


class WebForwarder(ModelForwarder):
    """127.0.0.1:WEB_PORT -> web.sock: the egress door, the proxy HTTP_PROXY/HTTPS_PROXY name.

    It counts the connections, so that after a tool call that used the web the runner asks the
    door what it refused or cut (`notes`): a client such as the CLI's WebFetch shows only "proxy
    refused the connection", and a cut download only as a broken one. agent_cli.py hands the
    notes to the agent (a hook)."""

    def __init__(self, sock_path: Path) -> None:
        super().__init__(sock_path)
        self.connections = 0  # since the last notes()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.connections += 1
        await super()._handle(creader, cwriter)

    async def notes(self) -> list[str]:
        """The door's refusals and cuts for this group since the last call ([] without asking
        when nothing used the web since)."""
        if not self.connections:
            return []
        self.connections = 0
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.sock_path)), 5)
            try:
                writer.write(NOTES_REQUEST)
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(MAX_NOTES_ANSWER), 5)
            finally:
                writer.close()
        except (TimeoutError, OSError) as exc:
            say(f"web.sock: notes unavailable: {exc!r}")
            return []
        head, _, body = answer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return []
        try:
            notes = json.loads(body)
        except ValueError:
            return []
        return [str(n)[:500] for n in notes if isinstance(n, str)] if isinstance(notes, list) else []

    def unavailable(self, exc: OSError) -> bytes:
        reason = "web: the egress door is not available"
        body = (reason + "\n").encode()
        head = (
            f"HTTP/1.1 502 {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        return head + body


class HostRequests:
    """JSON-lines client for requests.sock; many calls may be in flight on one connection."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.ids = itertools.count(1)
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()

    async def _ensure(self) -> asyncio.StreamWriter:
        if self.writer is None or self.writer.is_closing():
            reader, writer = await asyncio.open_unix_connection(str(self.path))
            self.writer = writer
            self.reader_task = asyncio.create_task(self._read_loop(reader, writer))
        return self.writer

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines = LineReader(reader)
        try:
            while True:
                line = await lines.next()
                if line is None:
                    break
                if line is TOO_LONG:
                    say("requests.sock: answer longer than MAX_FRAME dropped")
                    continue
                assert isinstance(line, bytes)
                if not line.strip():
                    continue
                try:
                    obj = decode_frame(line)
                except FrameError as exc:
                    say(f"requests.sock: {exc}")
                    continue
                fut = self.pending.pop(str(obj.get("id")), None)
                if fut is None:
                    say(f"requests.sock: answer for unknown id: {str(obj)[:300]}")
                elif not fut.done():
                    fut.set_result(obj)
        except (ConnectionError, OSError) as exc:
            say(f"requests.sock read failed: {exc!r}")
        finally:
            if self.writer is writer:
                self.writer = None
            with contextlib.suppress(Exception):
                writer.close()
            for rid, fut in list(self.pending.items()):
                if not fut.done():
                    fut.set_exception(ConnectionError("requests.sock closed before the host answered"))
                self.pending.pop(rid, None)

    async def call(self, tool_name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Send one request; return the host's answer ({"ok": ..., "result"|"error": ...})."""
        rid = f"r{next(self.ids)}"
        data = encode_frame({"id": rid, "tool": tool_name, "args": args})
        if len(data) > MAX_FRAME + 1:
            return {
                "id": rid,
                "ok": False,
                "error": f"request too large ({len(data)} bytes, max {MAX_FRAME})",
            }
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        try:
            async with self.lock:
                writer = await self._ensure()
                self.pending[rid] = fut
                writer.write(data)
                await writer.drain()
            return await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            return {"id": rid, "ok": False, "error": f"the host did not answer within {self.timeout:g}s"}
        except (ConnectionError, OSError) as exc:
            return {"id": rid, "ok": False, "error": f"cannot reach the host: {exc}"}
        finally:
            self.pending.pop(rid, None)

    async def close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        if self.reader_task is not None:
            self.reader_task.cancel()
