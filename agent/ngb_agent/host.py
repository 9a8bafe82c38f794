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
        up = asyncio.create_task(self._pipe(creader, uwriter))
        down = asyncio.create_task(self._down(ureader, cwriter))
        try:
            done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_EXCEPTION)
            if any(t.exception() for t in done if not t.cancelled()):
                for t in pending:
                    t.cancel()
            else:
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            for t in (up, down):
                t.cancel()
            for w in (cwriter, uwriter):
                with contextlib.suppress(Exception):
                    w.close()

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

    async def _down(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """The host's side to the client's."""
        await self._pipe(src, dst)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while True:
            data = await src.read(READ_CHUNK)
            if not data:
                break
            dst.write(data)
            await dst.drain()
        with contextlib.suppress(Exception):
            if dst.can_write_eof():
                dst.write_eof()


MAX_WEB_NOTES = 20


class WebForwarder(ModelForwarder):
    """127.0.0.1:WEB_PORT -> web.sock: the egress door, the proxy HTTP_PROXY/HTTPS_PROXY name.

    It keeps the door's refusals (the rule is the reason phrase of its answer, marked
    ``x-ngb-web: refused``), because a client such as the CLI's WebFetch shows only "proxy refused
    the connection": agent_cli.py hands them to the agent after the tool call (a hook)."""

    def __init__(self, sock_path: Path) -> None:
        super().__init__(sock_path)
        self.refusals: list[str] = []

    def take_refusals(self) -> list[str]:
        """The refusals seen since the last call (the newest MAX_WEB_NOTES)."""
        taken, self.refusals = self.refusals, []
        return taken

    async def _down(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        first = await src.read(READ_CHUNK)
        if first:
            rule = door_refusal(first)
            if rule is not None:
                self.refusals.append(rule)
                del self.refusals[:-MAX_WEB_NOTES]
            dst.write(first)
            await dst.drain()
        await self._pipe(src, dst)

    def unavailable(self, exc: OSError) -> bytes:
        reason = "web: the egress door is not available"
        body = (reason + "\n").encode()
        head = (
            f"HTTP/1.1 502 {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        return head + body


def door_refusal(head: bytes) -> str | None:
    """The rule of an answer of the egress door that refused ("web: ..."), else None."""
    status, _, rest = head.partition(b"\r\n")
    fields = rest.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
    if not status.startswith(b"HTTP/1.") or b"x-ngb-web: refused" not in fields:
        return None
    parts = status.decode("utf-8", "replace").split(" ", 2)
    return parts[2].strip()[:300] if len(parts) == 3 and parts[2].startswith("web:") else None


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
