"""A tiny HTTP/1.1 + WebSocket server on one loopback port for the platform fakes (Slack, Discord).

Raw trio sockets with h11 (HTTP) and wsproto (WebSocket), so a fake controls its connections:
``drop()`` cuts every open connection abruptly (TCP RST, like a network failure), ``down()`` /
``up()`` refuse new connections meanwhile. WebSocket pings are answered with pongs; a client's
close frame is answered.

A client may leave at any moment, and the server takes it quietly: a send to a websocket whose
peer is gone (closed, reset, or cut by ``drop()``) is dropped and marks it ``closed`` instead of
raising, so a fake's writer task or a test calling ``send_json`` never sees an error for it; a
connection error that still escapes a handler (an HTTP answer to a gone client, its nursery's
exception group) ends that connection only, never the server or the test's nursery.

Subclasses implement ``http(request)`` and ``websocket(path, ws)``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError


@attrs.define
class HttpRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def params(self) -> dict[str, Any]:
        """Query + body (JSON or form-encoded), merged."""
        out: dict[str, Any] = dict(self.query)
        if self.body:
            if self.headers.get("content-type", "").startswith("application/json"):
                loaded = json.loads(self.body)
                if isinstance(loaded, dict):
                    out.update(loaded)
            else:
                out.update(parse_qsl(self.body.decode()))
        return out

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class WebSocket:
    """One server-side WebSocket connection."""

    def __init__(self, stream: trio.SocketStream, conn: WSConnection, path: str, query: dict[str, str]) -> None:
        self.stream = stream
        self.conn = conn
        self.path = path
        self.query = query
        self._send_lock = trio.Lock()
        self._incoming_send, self.incoming = trio.open_memory_channel[str | bytes | None](1000)
        self.closed = False
        self.close_code: int | None = None
        self.dropped = 0  # sends dropped because the peer had left

    async def send_text(self, text: str) -> None:
        await self._send(TextMessage(data=text))

    async def send_json(self, payload: Any) -> None:
        await self.send_text(json.dumps(payload))

    async def send_bytes(self, data: bytes) -> None:
        await self._send(BytesMessage(data=data))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                await self._send(CloseConnection(code=code, reason=reason))
            self.closed = True

    async def _send(self, event: Any) -> None:
        """Send one event; dropped (counted in ``dropped``) when the peer is gone."""
        if self.closed:
            self.dropped += 1
            return
        async with self._send_lock:
            if self.closed:
                self.dropped += 1
                return
            try:
                await self.stream.send_all(self.conn.send(event))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, LocalProtocolError):
                self.closed = True  # the peer left (reset, closed): what it would have got is dropped
                self.dropped += 1

    async def receive(self) -> str | bytes | None:
        """The next message (None once the connection is closed)."""
        try:
            return await self.incoming.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None

    async def reader(self) -> None:
        text: list[str] = []
        data: list[bytes] = []
        try:
            while True:
                try:
                    chunk = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not chunk:
                    return
                self.conn.receive_data(chunk)
                for event in self.conn.events():
                    if isinstance(event, TextMessage):
                        text.append(event.data)
                        if event.message_finished:
                            await self._incoming_send.send("".join(text))
                            text.clear()
                    elif isinstance(event, BytesMessage):
                        data.append(bytes(event.data))
                        if event.message_finished:
                            await self._incoming_send.send(b"".join(data))
                            data.clear()
                    elif isinstance(event, Ping):
                        with contextlib.suppress(Exception):
                            async with self._send_lock:
                                await self.stream.send_all(self.conn.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        self.close_code = event.code
                        if not self.closed:
                            with contextlib.suppress(Exception):
                                async with self._send_lock:
                                    await self.stream.send_all(self.conn.send(event.response()))
                        self.closed = True
                        return
        finally:
            self.closed = True
            self._incoming_send.close()


# What a connection handler may raise when its client goes away mid-conversation.
# (A fake's own bug, any other exception, still fails the test.)
_PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError)


class HttpWsServer:
    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = 0
        self._conn_scopes: set[trio.CancelScope] = set()
        self._down = False
        self._cancel: trio.CancelScope | None = None
        self.connections_accepted = 0
        self.websockets: list[WebSocket] = []  # open ones

    # -- life cycle ------------------------------------------------------------------------------
    async def serve(self, *, port: int = 0, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        with trio.CancelScope() as scope:
            self._cancel = scope
            async with trio.open_nursery() as nursery:
                task_status.started(self)
                await trio.serve_listeners(self._connection, listeners, handler_nursery=nursery)

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    @property
    def http_base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://{self.host}:{self.port}"

    # -- outages ---------------------------------------------------------------------------------
    def drop(self) -> None:
        """Cut every open connection now (RST)."""
        for scope in list(self._conn_scopes):
            scope.cancel()

    def down(self) -> None:
        self._down = True
        self.drop()

    def up(self) -> None:
        self._down = False

    # -- to implement ----------------------------------------------------------------------------
    async def http(self, request: HttpRequest) -> tuple[int, Any]:
        return 404, {"error": "not found"}

    async def websocket(self, ws: WebSocket) -> None:
        await ws.close(4000, "no websocket here")

    # -- plumbing --------------------------------------------------------------------------------
    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections_accepted += 1
        try:
            if not self._down:
                with trio.CancelScope() as scope:
                    self._conn_scopes.add(scope)
                    try:
                        await self._serve_connection(stream)
                    except* _PEER_GONE:
                        pass  # the client left (or spoke nonsense): this connection ends, nothing else
                    finally:
                        self._conn_scopes.discard(scope)
        finally:
            with contextlib.suppress(OSError):
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await trio.aclose_forcefully(stream)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            head += chunk
        first = head.split(b"\r\n\r\n", 1)[0].lower()
        if b"upgrade: websocket" in first:
            await self._serve_websocket(stream, head)
        else:
            await self._serve_http(stream, head)

    async def _serve_websocket(self, stream: trio.SocketStream, head: bytes) -> None:
        conn = WSConnection(ConnectionType.SERVER)
        conn.receive_data(head)
        request = next((e for e in conn.events() if isinstance(e, Request)), None)
        if request is None:
            return
        await stream.send_all(conn.send(AcceptConnection()))
        url = urlsplit(request.target)
        ws = WebSocket(stream, conn, url.path, dict(parse_qsl(url.query)))
        self.websockets.append(ws)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ws.reader)
                await self.websocket(ws)
                nursery.cancel_scope.cancel()
        finally:
            ws.closed = True
            self.websockets.remove(ws)

    async def _serve_http(self, stream: trio.SocketStream, head: bytes) -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(head)
        while True:
            request: h11.Request | None = None
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            assert request is not None
            if any(k.lower() == b"upgrade" and v.lower() == b"websocket" for k, v in request.headers):
                # a websocket Upgrade on a kept-alive connection (aiohttp reuses its pool)
                lines = [request.method + b" " + request.target + b" HTTP/1.1"]
                lines += [k + b": " + v for k, v in request.headers]
                raw = b"\r\n".join(lines) + b"\r\n\r\n" + conn.trailing_data[0]
                await self._serve_websocket(stream, raw)
                return
            url = urlsplit(request.target.decode())
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            status, payload = await self.http(
                HttpRequest(request.method.decode(), url.path, dict(parse_qsl(url.query)), headers, body)
            )
            extra: list[tuple[str, str]] = []
            if isinstance(payload, tuple):  # (payload, extra headers)
                payload, extra = payload
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            kind = [] if isinstance(payload, bytes) else [("content-type", "application/json")]
            out_headers = [*kind, ("content-length", str(len(data))), *extra]
            await stream.send_all(conn.send(h11.Response(status_code=status, headers=out_headers)))
            await stream.send_all(conn.send(h11.Data(data=data)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
