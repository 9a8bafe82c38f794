"""The host side of each group's model socket (``STATE/run/<folder>/model.sock``).

The Claude Code CLI in a container speaks plain HTTP/1.1 (Anthropic Messages API, usually
``stream: true`` server-sent events) to ``127.0.0.1:$NGB_MODEL_PORT``; the runner pipes every TCP
connection byte for byte to the group's unix socket, which this module serves.

Per request the proxy:

* checks the caller's key (``x-api-key`` or ``Authorization: Bearer``) against the placeholder
  issued for that socket's group: the socket is the identity, the placeholder only proves the
  caller is that group's container (401 with an Anthropic-shaped error otherwise);
* drops hop-by-hop and client auth headers, asks for an identity body (so SSE can be parsed on
  the fly), sets the real ``x-api-key`` (none when no key is configured, for keyless local
  upstreams) and forwards method, path, query and body to the upstream with httpx;
* streams the response back as it arrives (headers first, then every chunk; never the whole
  body buffered) while counting tokens per group from ``message_start`` / ``message_delta`` SSE
  events or a JSON body's ``usage`` object;
* retries 429 / 503 / 529 responses and connection failures that happened before any byte went
  back to the client, ``retries`` times with exponential backoff and jitter (``retry-after`` is
  honoured, capped), then passes the last error response through;
* closes the client connection if the upstream drops mid-stream (the CLI sees a truncated body);
* cuts a streamed (SSE) answer that sends nothing for ``stall_timeout`` seconds (the CLI sees a
  truncated body and asks again) instead of letting the turn hang until the turn timeout;
* asks ``admit(group)`` (the daemon's budgets, ngb/budgets.py) before forwarding a request that
  costs money (anything but GET/HEAD and ``count_tokens``): a refusal is answered at once with the
  Anthropic spend-limit error (400 ``invalid_request_error``, ``x-should-retry: false``) and nothing
  goes upstream.

The real key is never logged, and any occurrence of it in upstream response headers or bodies is
masked with ``*`` before it reaches the container (same length, so framing is unchanged).

HTTP/1.1 is spoken with h11 directly on trio streams (keep-alive, pipelining, chunked and
content-length request bodies up to ``max_body``), which measured leaner than hypercorn with an
ASGI app for this pass-through job.
"""

from __future__ import annotations

import contextlib
import email.utils
import hmac
import json
import logging
import math
import os
import random
import re
import socket as _socket
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import h11
import httpx
import trio

log = logging.getLogger(__name__)

MAX_BODY = 32 * 1024 * 1024
MAX_HEAD = 64 * 1024
RECEIVE_SIZE = 64 * 1024
RETRY_STATUSES = frozenset({429, 503, 529})
MAX_RETRY_AFTER = 30.0
# A streamed (SSE) answer that sends no byte for this long is cut: the client sees the stream break
# and asks again (the CLI retries), instead of the turn hanging until the turn timeout. The API
# sends ping events while a long answer is produced, so silence this long means a stuck connection.
STALL_TIMEOUT = 120.0
MAX_BACKOFF = 30.0
JSON_USAGE_CAP = 16 * 1024 * 1024  # bigger JSON bodies are passed through but not parsed for usage
SSE_LINE_CAP = 1024 * 1024

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Request headers never forwarded: auth (swapped), framing (httpx recomputes), host, expect.
DROP_REQUEST = HOP_BY_HOP | {b"host", b"content-length", b"x-api-key", b"authorization", b"expect",
                             b"accept-encoding", b"cookie"}
DROP_RESPONSE = HOP_BY_HOP | {b"set-cookie"}

RETRYABLE_ERRORS = (httpx.NetworkError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.RemoteProtocolError)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "request_too_large",
    431: "invalid_request_error",
    501: "invalid_request_error",
    502: "api_error",
    504: "api_error",
}
REASONS = {400: b"Bad Request", 401: b"Unauthorized", 413: b"Payload Too Large",
           431: b"Request Header Fields Too Large", 501: b"Not Implemented", 502: b"Bad Gateway",
           504: b"Gateway Timeout"}


@attrs.define
class Usage:
    """Token counts. Per group: running totals; passed to ``on_usage``: one response's share."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    requests: int = 0
    # The model that answered (response ``model``, else the request's); "" in running totals.
    model: str = attrs.field(default="", eq=False)

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_input_tokens += other.cache_read_input_tokens
        self.cache_creation_input_tokens += other.cache_creation_input_tokens
        self.requests += other.requests


USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
MODEL_RE = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
FREE_PATH_SUFFIXES = ("/count_tokens",)  # requests that cost nothing: never refused over a budget


def _request_model(body: bytes) -> str:
    """The request's ``model`` (a fallback for responses that do not name theirs)."""
    m = MODEL_RE.search(body)
    return m.group(1).decode("utf-8", "replace") if m else ""


def _model_from(obj: Any) -> str | None:
    return obj[:200] if isinstance(obj, str) and obj else None


def _usage_from(obj: Any, into: dict[str, int]) -> None:
    """Copy the token fields of a ``usage`` object (later values win: message_delta is cumulative)."""
    if not isinstance(obj, dict):
        return
    for name in USAGE_FIELDS:
        value = obj.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            into[name] = value


class _UsageMeter:
    """Watches a response body go by and extracts its token usage, without holding it whole."""

    def __init__(self, content_type: str, content_length: int | None = None) -> None:
        ct = content_type.split(";", 1)[0].strip().lower()
        self.mode = "sse" if ct == "text/event-stream" else "json" if ct.endswith("json") else None
        self.counts: dict[str, int] = {}
        self.model = ""
        self.complete = False  # the usage is final (JSON body all here, or SSE message_stop seen)
        self._expected = content_length
        self._buf = bytearray()
        self._skip_line = False
        self._event = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        if self.mode == "sse":
            self._feed_sse(chunk)
        elif self.mode == "json":
            if len(self._buf) + len(chunk) > JSON_USAGE_CAP:
                self.mode = None
                self._buf = bytearray()
            else:
                self._buf += chunk
                if self._expected is not None and len(self._buf) >= self._expected:
                    self.complete = True

    def finish(self) -> Usage:
        if self.mode == "json" and self._buf:
            try:
                body = json.loads(bytes(self._buf))
            except (ValueError, RecursionError):
                body = None
            if isinstance(body, dict):
                _usage_from(body.get("usage"), self.counts)
                self.model = _model_from(body.get("model")) or self.model
            self._buf = bytearray()
        return Usage(**{name: self.counts.get(name, 0) for name in USAGE_FIELDS}, requests=1, model=self.model)

    def _feed_sse(self, chunk: bytes) -> None:
        buf = self._buf
        buf += chunk
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[start:nl])
            start = nl + 1
            if self._skip_line:
                self._skip_line = False
                continue
            self._sse_line(line[:-1] if line.endswith(b"\r") else line)
        del buf[:start]
        if len(buf) > SSE_LINE_CAP:  # an absurd line: forget it, resync at the next newline
            buf.clear()
            self._skip_line = True

    def _sse_line(self, line: bytes) -> None:
        if not line:
            self._dispatch()
        elif line.startswith(b"event:"):
            self._event = line[6:].strip()
        elif line.startswith(b"data:"):
            data = line[5:]
            self._data.append(data[1:] if data.startswith(b" ") else data)

    def _dispatch(self) -> None:
        event, data = self._event, self._data
        self._event, self._data = b"", []
        if event == b"message_stop":
            self.complete = True
            return
        if not data or event not in (b"message_start", b"message_delta", b""):
            return
        payload = b"\n".join(data)
        if b'"usage"' not in payload and b"message_stop" not in payload:
            return
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError):
            return
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if kind == "message_stop":
            self.complete = True
        elif kind == "message_start" and isinstance(obj.get("message"), dict):
            _usage_from(obj["message"].get("usage"), self.counts)
            self.model = _model_from(obj["message"].get("model")) or self.model
        elif kind == "message_delta":
            _usage_from(obj.get("usage"), self.counts)


class _Masker:
    """Replaces every occurrence of a secret in a byte stream with ``*`` of the same length.

    Works across chunk boundaries without holding bytes back: a secret that straddles two chunks
    has its first part already sent (never the whole secret) and the rest masked in the next one.
    """

    def __init__(self, secret: bytes | None) -> None:
        self.secret = secret if secret and len(secret) >= 4 else None
        self._tail = b""

    def mask(self, chunk: bytes) -> bytes:
        secret = self.secret
        if secret is None or not chunk:
            return chunk
        tail = self._tail
        combined = tail + chunk
        self._tail = combined[-(len(secret) - 1):]
        pos = combined.find(secret)
        if pos < 0:
            return chunk
        out = bytearray(chunk)
        while pos >= 0:
            lo = max(0, pos - len(tail))
            hi = pos + len(secret) - len(tail)
            out[lo:hi] = b"*" * (hi - lo)
            pos = combined.find(secret, pos + 1)
        return bytes(out)


def _error_body(status: int, message: str) -> bytes:
    err = {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}
    return json.dumps(err).encode()


def _retry_after(headers: httpx.Headers) -> float | None:
    raw = headers.get("retry-after-ms")
    if raw is not None:
        try:
            value = float(raw) / 1000
            if math.isfinite(value):
                return max(0.0, value)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
        return max(0.0, value) if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _reason(response: httpx.Response) -> bytes:
    phrase = response.reason_phrase or httpx.codes.get_reason_phrase(response.status_code)
    return phrase.encode("latin-1", "replace")


class _ClientGone(Exception):
    """The client connection broke; nothing more can be said to it."""


class _HttpConnection:
    """One client connection: h11 state plus the trio stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self.h11.they_are_waiting_for_100_continue:
                await self.send(h11.InformationalResponse(status_code=100, headers=[]))
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise _ClientGone() from exc
            self.h11.receive_data(data)

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise _ClientGone() from exc

    async def send_simple(self, status: int, body: bytes, *, close: bool = False,
                          extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += list(extra)
        if close:
            headers.append((b"connection", b"close"))
        await self.send(h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b"")))
        await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())


@attrs.define
class _Group:
    name: str
    placeholder: bytes


class ModelProxy:
    """Serves per-group model sockets and forwards to one upstream with the real credential."""

    def __init__(
        self,
        upstream: str,
        api_key: str | None,
        *,
        retries: int = 3,
        backoff_base: float = 0.5,
        on_usage: Callable[[str, Usage], None] | None = None,
        admit: Callable[[str], str | None] | None = None,
        client: httpx.AsyncClient | None = None,
        max_body: int = MAX_BODY,
        max_retry_after: float = MAX_RETRY_AFTER,
        timeout: httpx.Timeout | None = None,
        stall_timeout: float = STALL_TIMEOUT,
    ) -> None:
        if not upstream.startswith(("http://", "https://")):
            raise ValueError(f"model upstream must be an http(s) URL, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self._api_key = api_key or None
        self._key_bytes = self._api_key.encode() if self._api_key else None
        self.retries = max(0, retries)
        self.backoff_base = backoff_base
        self.max_body = max_body
        self.max_retry_after = max_retry_after
        self.stall_timeout = stall_timeout  # a streamed answer silent this long is cut (0: never)
        self.stalled = 0
        self.on_usage = on_usage
        self.admit = admit  # group -> None (forward) or the refusal message (budgets)
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=timeout or httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=30.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0),
            follow_redirects=False,
        )
        self._usage: dict[str, Usage] = {}
        self.rejected: dict[str, int] = {}  # per group: requests refused (bad key, bad request, too big)
        self.refused_budget: dict[str, int] = {}  # per group: requests refused over a budget cap

    def __repr__(self) -> str:  # never show the key
        return f"ModelProxy(upstream={self.upstream!r}, api_key={'set' if self._api_key else 'none'})"

    # -- public --------------------------------------------------------------------------------

    def usage(self, group: str) -> Usage:
        """Running totals for ``group`` (a copy; zeros if it never asked)."""
        u = self._usage.get(group)
        return attrs.evolve(u) if u is not None else Usage()

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def serve_group(
        self,
        group: str,
        socket_path: Path,
        placeholder_key: str,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``socket_path`` for ``group`` until cancelled; the file is removed on exit."""
        if not placeholder_key:
            raise ValueError("a placeholder key is required")
        if self._api_key is not None and hmac.compare_digest(placeholder_key.encode(), self._key_bytes or b""):
            raise ValueError("the placeholder must not be the real key")
        state = _Group(group, placeholder_key.encode())
        socket_path = Path(socket_path)
        sock, inode = await _bind_unix(socket_path)
        try:
            listener = trio.SocketListener(sock)
            log.debug("model proxy: group %s listening on %s", group, socket_path)
            async with trio.open_nursery() as nursery:
                task_status.started()
                await trio.serve_listeners(
                    lambda stream: self._serve_connection(stream, state), [listener], handler_nursery=nursery
                )
        finally:
            sock.close()
            with contextlib.suppress(OSError):
                if socket_path.lstat().st_ino == inode:
                    socket_path.unlink()

    # -- connections ---------------------------------------------------------------------------

    async def _serve_connection(self, stream: trio.abc.Stream, group: _Group) -> None:
        conn = _HttpConnection(stream)
        try:
            async with stream:
                while True:
                    try:
                        event = await conn.next_event()
                    except h11.RemoteProtocolError as exc:
                        self._reject(group, f"malformed HTTP: {exc}")
                        if conn.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                            status = exc.error_status_hint if exc.error_status_hint in REASONS else 400
                            await conn.send_simple(status, _error_body(status, "malformed HTTP request"), close=True)
                        return
                    if not isinstance(event, h11.Request):
                        return  # ConnectionClosed (or anything unexpected): done
                    if not await self._handle(conn, event, group):
                        return
                    if conn.h11.our_state is not h11.DONE or conn.h11.their_state is not h11.DONE:
                        return
                    conn.h11.start_next_cycle()
        except _ClientGone:
            pass
        except h11.ProtocolError as exc:
            log.debug("model proxy: group %s: connection ended: %s", group.name, exc)
        except Exception:  # a bug here must cost one connection, never the group's socket
            log.exception("model proxy: group %s: connection handler failed", group.name)

    async def _read_body(self, conn: _HttpConnection, request: h11.Request) -> bytes | None:
        """The whole request body, or None after answering 413 (the connection must then close)."""
        for name, value in request.headers:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                await conn.send_simple(413, _error_body(413, f"request body over {self.max_body} bytes"), close=True)
                return None
        body = bytearray()
        while True:
            event = await conn.next_event()
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body:
                    await conn.send_simple(413, _error_body(413, f"request body over {self.max_body} bytes"),
                                           close=True)
                    return None
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:  # ConnectionClosed mid-body
                raise _ClientGone()

    def _authorized(self, request: h11.Request, group: _Group) -> bool:
        ok = False
        for name, value in request.headers:
            if name == b"x-api-key":
                candidate = value.strip()
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                candidate = value[7:].strip()
            else:
                continue
            ok = ok or hmac.compare_digest(candidate, group.placeholder)
        return ok

    def _reject(self, group: _Group, why: str) -> None:
        self.rejected[group.name] = self.rejected.get(group.name, 0) + 1
        log.warning("model proxy: group %s: %s", group.name, why)

    async def _handle(self, conn: _HttpConnection, request: h11.Request, group: _Group) -> bool:
        """Answer one request; False if the connection must close afterwards."""
        body = await self._read_body(conn, request)
        if body is None:
            self._reject(group, "request body too large")
            return False
        method = request.method.decode("ascii", "replace")
        target = request.target
        path = target.split(b"?", 1)[0].decode("ascii", "replace")[:200]
        if not self._authorized(request, group):
            self._reject(group, f"refused {method} {path}: missing or wrong API key for this group")
            await conn.send_simple(
                401, _error_body(401, "invalid x-api-key: this key is not valid on this model socket")
            )
            return True
        if not target.startswith(b"/") or target.startswith(b"//"):
            self._reject(group, f"refused {method}: request target is not an origin path")
            await conn.send_simple(400, _error_body(400, "request target must be a path"))
            return True
        if self.admit is not None and method not in ("GET", "HEAD") and not path.endswith(FREE_PATH_SUFFIXES):
            try:
                refusal = self.admit(group.name)
            except Exception:  # a bug in the budget check must not open the tap: refuse
                log.exception("model proxy: group %s: the budget check failed", group.name)
                refusal = "the spending check failed; see the daemon's log"
            if refusal is not None:
                self.refused_budget[group.name] = self.refused_budget.get(group.name, 0) + 1
                log.info("model proxy: group %s: refused %s %s over budget", group.name, method, path)
                await conn.send_simple(400, _error_body(400, refusal), extra=[(b"x-should-retry", b"false")])
                return True
        return await self._forward(conn, request, body, group, method, path)

    # -- upstream ------------------------------------------------------------------------------

    def _upstream_headers(self, request: h11.Request) -> list[tuple[bytes, bytes]]:
        named_by_connection: set[bytes] = set()
        for name, value in request.headers:
            if name == b"connection":
                named_by_connection.update(v.strip().lower() for v in value.split(b","))
        headers = [
            (name, value)
            for name, value in request.headers
            if name not in DROP_REQUEST and name not in named_by_connection
        ]
        headers.append((b"accept-encoding", b"identity"))
        if self._key_bytes is not None:
            headers.append((b"x-api-key", self._key_bytes))
        return headers

    def _backoff(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            after = _retry_after(response.headers)
            if after is not None:
                return min(after, self.max_retry_after)
        base = min(self.backoff_base * (2**attempt), MAX_BACKOFF)
        return base / 2 + random.uniform(0, base / 2)

    async def _forward(
        self, conn: _HttpConnection, request: h11.Request, body: bytes, group: _Group, method: str, path: str
    ) -> bool:
        url = self.upstream + request.target.decode("ascii")
        headers = self._upstream_headers(request)
        started = time.monotonic()
        attempt = 0
        try:
            upstream_request = self._client.build_request(method, url, headers=headers, content=body)
        except (httpx.InvalidURL, httpx.HTTPError, ValueError, TypeError) as exc:
            self._reject(group, f"refused {method} {path}: cannot forward ({type(exc).__name__})")
            await conn.send_simple(400, _error_body(400, "request cannot be forwarded"))
            return True
        while True:
            try:
                response = await self._client.send(upstream_request, stream=True)
            except RETRYABLE_ERRORS as exc:
                if attempt < self.retries:
                    delay = self._backoff(attempt, None)
                    log.warning("model proxy: group %s: upstream %s, retry %d/%d in %.2fs",
                                group.name, type(exc).__name__, attempt + 1, self.retries, delay)
                    attempt += 1
                    await trio.sleep(delay)
                    continue
                return await self._upstream_failed(conn, group, exc, 502)
            except httpx.TimeoutException as exc:
                return await self._upstream_failed(conn, group, exc, 504)
            except httpx.HTTPError as exc:
                return await self._upstream_failed(conn, group, exc, 502)
            if (
                response.status_code in RETRY_STATUSES
                and attempt < self.retries
                and response.headers.get("x-should-retry", "").lower() != "false"
            ):
                delay = self._backoff(attempt, response)
                await response.aclose()
                log.warning("model proxy: group %s: upstream answered %d, retry %d/%d in %.2fs",
                            group.name, response.status_code, attempt + 1, self.retries, delay)
                attempt += 1
                await trio.sleep(delay)
                continue
            break
        try:
            keep, usage = await self._relay(conn, response, group, body)
        finally:
            await response.aclose()
        log.debug("model proxy: group %s: %s %s -> %d in %.2fs (in %d, out %d)%s", group.name, method, path,
                  response.status_code, time.monotonic() - started, usage.input_tokens, usage.output_tokens,
                  "" if keep else " [closed]")
        return keep

    async def _upstream_failed(self, conn: _HttpConnection, group: _Group, exc: Exception, status: int) -> bool:
        what = type(exc).__name__
        log.warning("model proxy: group %s: upstream failed: %s", group.name, what)
        message = f"model upstream unreachable ({what})" if status == 502 else f"model upstream timed out ({what})"
        await conn.send_simple(status, _error_body(status, message))
        return True

    async def _relay(
        self, conn: _HttpConnection, response: httpx.Response, group: _Group, request_body: bytes = b""
    ) -> tuple[bool, Usage]:
        """Pass the response through as it arrives; count its usage (before the final chunk goes
        out, so a client that has the whole response also sees the counts). Returns (keep the
        connection, this response's usage)."""
        length = response.headers.get("content-length", "")
        meter = _UsageMeter(response.headers.get("content-type", ""), int(length) if length.isdigit() else None)
        masker = _Masker(self._key_bytes)
        named: set[bytes] = set()
        for value in response.headers.get_list("connection"):
            named.update(v.strip().lower().encode("latin-1") for v in value.split(","))
        out_headers = []
        for name, value in response.headers.raw:
            lname = name.lower()
            if lname in DROP_RESPONSE or lname in named:
                continue
            if self._key_bytes is not None and self._key_bytes in value:
                value = value.replace(self._key_bytes, b"*" * len(self._key_bytes))
            out_headers.append((name, value))
        usage: Usage | None = None
        try:
            await conn.send(h11.Response(status_code=response.status_code, headers=out_headers,
                                         reason=_reason(response)))
            chunks = response.aiter_raw()
            idle = self.stall_timeout if meter.mode == "sse" and self.stall_timeout > 0 else math.inf
            while True:
                with trio.move_on_after(idle) as silent:
                    chunk = await anext(chunks, None)
                if silent.cancelled_caught:
                    self.stalled += 1
                    log.warning("model proxy: group %s: the streamed answer sent nothing for %.0fs; cutting it "
                                "(the agent asks again)", group.name, idle)
                    return False, usage or self._count(group.name, _finish(meter, request_body))
                if chunk is None:
                    break
                meter.feed(chunk)
                if meter.complete and usage is None:
                    usage = self._count(group.name, _finish(meter, request_body))
                await conn.send(h11.Data(data=masker.mask(chunk)))
            if usage is None:
                usage = self._count(group.name, _finish(meter, request_body))
            await conn.send(h11.EndOfMessage())
        except _ClientGone:
            log.info("model proxy: group %s: client went away mid-response", group.name)
            return False, usage or self._count(group.name, _finish(meter, request_body))
        except (httpx.HTTPError, h11.LocalProtocolError) as exc:
            log.warning("model proxy: group %s: upstream response broke off (%s); closing the connection",
                        group.name, type(exc).__name__)
            return False, usage or self._count(group.name, _finish(meter, request_body))
        return True, usage

    def _count(self, group: str, usage: Usage) -> Usage:
        self._usage.setdefault(group, Usage()).add(usage)
        if self.on_usage is not None:
            try:
                self.on_usage(group, attrs.evolve(usage))
            except Exception:
                log.exception("model proxy: on_usage callback failed")
        return usage


def _finish(meter: _UsageMeter, request_body: bytes) -> Usage:
    usage = meter.finish()
    if not usage.model and request_body:
        usage.model = _request_model(request_body)
    return usage


async def _bind_unix(path: Path) -> tuple[trio.socket.SocketType, int]:
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
