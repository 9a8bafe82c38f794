"""The host side of each group's model socket (``STATE/run/<folder>/model.sock``).

The Claude Code CLI in a container speaks plain HTTP/1.1 (Anthropic Messages API, usually
``stream: true`` server-sent events) to ``127.0.0.1:$NGB_MODEL_PORT``; the runner pipes every TCP
connection byte for byte to the group's unix socket, which this module serves.

The proxy is a door, not a tunnel. Per connection and request it:

* takes at most ``max_connections`` (8) connections per group socket at once; a further one waits
  up to ``slot_wait`` seconds for a slot (an idle keep-alive connection is closed to make room),
  at most ``max_connections`` of them wait, and the rest are answered at once with a 429
  ``rate_limit_error`` and closed;
* cuts a connection that dribbles: a request head must be complete ``head_timeout`` (30 s) after
  the connection opens (or after the first byte of a keep-alive request), a request body must
  make progress every ``body_timeout`` (30 s) and be complete within ``body_deadline``; an idle
  keep-alive connection is closed after ``idle_timeout``;
* decides from the request head alone, before any body byte is read: the caller's key
  (``x-api-key`` or ``Authorization: Bearer``) must be the placeholder issued for that socket's
  group (401 ``authentication_error``; the socket is the identity, the placeholder only proves the
  caller is that group's container); the method and path must be exactly ``POST /v1/messages`` or
  ``POST /v1/messages/count_tokens`` (any query string), compared byte for byte on the raw
  request target, so a fragment (``#``), any percent-encoding (``%2f``, ``%6d``...), ``//``,
  ``.``/``..`` segments, a trailing slash or another case is refused: 403 ``permission_error``,
  one log line naming the group, and ``on_refused(group, reason)`` (the daemon's
  ``ngb_model_proxy_refused_total{group,reason}``); a ``Content-Length`` over ``max_body``
  (8 MiB, the ``model_max_body_bytes`` setting) is refused with 413 ``request_too_large``;
  ``POST /v1/messages`` (the billed route) asks ``admit(group)`` (the daemon's budgets,
  ngb/budgets.py): a refusal is answered with the Anthropic spend-limit error (400
  ``invalid_request_error``, ``x-should-retry: false``); ``count_tokens`` is free and not checked;
* only then reads the body (a chunked body is cut with 413 as soon as it passes ``max_body``);
* drops hop-by-hop and client auth headers, asks for an identity body (so SSE can be parsed on
  the fly), sets the real ``x-api-key`` (none when no key is configured, for keyless local
  upstreams) and forwards the route, query and body to the upstream with httpx;
* streams the response back as it arrives (headers first, then every chunk; never the whole
  body buffered) while counting usage per group from ``message_start`` / ``message_delta`` SSE
  events or a JSON body's ``usage`` object: input and output tokens, cache reads, cache writes
  (with the 1-hour share of ``cache_creation``) and server tool uses (web search / web fetch);
* retries 429 / 503 / 529 responses and connection failures that happened before any byte went
  back to the client, ``retries`` times with exponential backoff and jitter (``retry-after`` is
  honoured, capped), then passes the last error response through;
* closes the client connection if the upstream drops mid-stream (the CLI sees a truncated body);
* cuts a streamed (SSE) answer that sends nothing for ``stall_timeout`` seconds (the CLI sees a
  truncated body and asks again) instead of letting the turn hang until the turn timeout.

A refused request whose body was not read gets ``connection: close``; the proxy then reads and
discards what the client still sends for a moment (never keeping it) so the client sees the
answer instead of a reset. Every refusal is an Anthropic-shaped JSON error.

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

MAX_BODY = 8 * 1024 * 1024  # the model_max_body_bytes setting's default
MAX_HEAD = 64 * 1024
RECEIVE_SIZE = 64 * 1024
MAX_CONNECTIONS = 8  # per group socket at once; as many more may wait SLOT_WAIT for a slot
SLOT_WAIT = 5.0
HEAD_TIMEOUT = 30.0  # a request head must be complete this long after its first byte (or the connect)
BODY_TIMEOUT = 30.0  # a request body must make progress at least this often ...
BODY_DEADLINE = 120.0  # ... and be complete within this
IDLE_TIMEOUT = 60.0  # a keep-alive connection with no new request for this long is closed
LINGER = 1.0  # after refusing a request whose body was not read: discard what still comes this long
LINGER_BYTES = 4 * 1024 * 1024  # ... or up to this much
SKIP_BODY = 64 * 1024  # a refused request's body up to this size is read and dropped (keep-alive)
# The only routes forwarded, matched byte for byte on the raw request target's path (POST only).
ROUTES = {b"/v1/messages": "messages", b"/v1/messages/count_tokens": "count_tokens"}
ROUTE_PATHS = {name: path.decode() for path, name in ROUTES.items()}
BILLED_ROUTES = frozenset({"messages"})  # count_tokens costs nothing: never refused over a budget
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
REASONS = {400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 408: b"Request Timeout",
           413: b"Payload Too Large", 429: b"Too Many Requests", 431: b"Request Header Fields Too Large", 501: b"Not Implemented", 502: b"Bad Gateway",
           504: b"Gateway Timeout"}


@attrs.define
class Usage:
    """Token counts. Per group: running totals; passed to ``on_usage``: one response's share."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    # Cache writes of both lifetimes; the 1-hour ones (priced higher) are also in the next field.
    cache_creation_input_tokens: int = 0
    requests: int = 0
    # The model that answered (response ``model``, else the request's); "" in running totals.
    model: str = attrs.field(default="", eq=False)
    cache_creation_1h_input_tokens: int = 0  # usage.cache_creation.ephemeral_1h_input_tokens
    web_search_requests: int = 0  # usage.server_tool_use.web_search_requests
    web_fetch_requests: int = 0  # usage.server_tool_use.web_fetch_requests

    def add(self, other: Usage) -> None:
        for name in COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
CACHE_CREATION_FIELDS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")  # usage.cache_creation
SERVER_TOOL_FIELDS = ("web_search_requests", "web_fetch_requests")  # usage.server_tool_use
COUNT_FIELDS = (*USAGE_FIELDS, "requests", "cache_creation_1h_input_tokens", *SERVER_TOOL_FIELDS)
MODEL_RE = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')


def _request_model(body: bytes) -> str:
    """The request's ``model`` (a fallback for responses that do not name theirs)."""
    m = MODEL_RE.search(body)
    return m.group(1).decode("utf-8", "replace") if m else ""


def _model_from(obj: Any) -> str | None:
    return obj[:200] if isinstance(obj, str) and obj else None


def _copy_counts(obj: Any, names: Iterable[str], into: dict[str, int]) -> None:
    if not isinstance(obj, dict):
        return
    for name in names:
        value = obj.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            into[name] = value


def _usage_from(obj: Any, into: dict[str, int]) -> None:
    """Copy the billable fields of a ``usage`` object (later values win: message_delta is
    cumulative): the token counts, the ``cache_creation`` split by lifetime and the
    ``server_tool_use`` request counts."""
    if not isinstance(obj, dict):
        return
    _copy_counts(obj, USAGE_FIELDS, into)
    _copy_counts(obj.get("cache_creation"), CACHE_CREATION_FIELDS, into)
    _copy_counts(obj.get("server_tool_use"), SERVER_TOOL_FIELDS, into)


def _usage_of(counts: dict[str, int], model: str) -> Usage:
    """One response's Usage from the fields seen. Cache writes: the total the API reports, or the
    sum of the per-lifetime split if that is larger (the total then includes the 1-hour share)."""
    split_5m = counts.get("ephemeral_5m_input_tokens", 0)
    split_1h = counts.get("ephemeral_1h_input_tokens", 0)
    creation = max(counts.get("cache_creation_input_tokens", 0), split_5m + split_1h)
    return Usage(
        input_tokens=counts.get("input_tokens", 0),
        output_tokens=counts.get("output_tokens", 0),
        cache_read_input_tokens=counts.get("cache_read_input_tokens", 0),
        cache_creation_input_tokens=creation,
        cache_creation_1h_input_tokens=split_1h,
        web_search_requests=counts.get("web_search_requests", 0),
        web_fetch_requests=counts.get("web_fetch_requests", 0),
        requests=1,
        model=model,
    )


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
        return _usage_of(self.counts, self.model)

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


REFUSAL_TEXT = {
    "fragment": "a fragment (#) in the request target",
    "not_a_path": "the request target is not a path",
    "encoded": "a percent-encoded character in the path",
    "double_slash": "an empty path segment (//)",
    "dot_segment": "a . or .. path segment",
    "variant": "not the exact route (case or trailing slash)",
    "path": "not a route the agent may use",
    "method": "only POST is forwarded",
}


def _target_route(method: bytes, target: bytes) -> tuple[str | None, str]:
    """(route name, "") for a request the proxy forwards, else (None, why it is refused).

    The path is compared byte for byte with the routes: there is nothing to decode or normalise,
    and anything that an upstream or a gateway could decode or normalise differently (a fragment,
    percent-encoding, ``//``, dot segments, case, a trailing slash) is refused outright."""
    if b"#" in target:
        return None, "fragment"
    if not target.startswith(b"/"):
        return None, "not_a_path"
    path = target.split(b"?", 1)[0]
    if b"%" in path:
        return None, "encoded"
    if b"//" in path:
        return None, "double_slash"
    if any(segment in (b".", b"..") for segment in path.split(b"/")):
        return None, "dot_segment"
    route = ROUTES.get(path)
    if route is None:
        return None, "variant" if path.lower().rstrip(b"/") in ROUTES else "path"
    if method != b"POST":
        return None, "method"
    return route, ""


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:  # h11 has checked it: digits, one value
        if name == b"content-length":
            return int(value)
    return None


def _raw_response(status: int, body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole closing response, for when no request was parsed (h11 cannot answer then)."""
    lines = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"")), b"content-type: application/json",
             b"content-length: %d" % len(body), b"connection: close"]
    lines += [name + b": " + value for name, value in extra]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class _HttpConnection:
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
            raise _ClientGone() from exc
        self.h11.receive_data(data)

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


@attrs.define(eq=False)
class _Group:
    name: str
    placeholder: bytes
    slots: trio.Semaphore
    waiting: int = 0  # connections waiting for a slot
    idle: dict[int, _HttpConnection] = attrs.Factory(dict)  # keep-alive, between requests; oldest first
    log_window: float = -math.inf  # refusal log lines: at most LOG_LINES per LOG_WINDOW seconds
    log_lines: int = 0
    log_skipped: int = 0


LOG_LINES = 30
LOG_WINDOW = 60.0


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
        on_refused: Callable[[str, str], None] | None = None,
        max_connections: int = MAX_CONNECTIONS,
        slot_wait: float = SLOT_WAIT,
        head_timeout: float = HEAD_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        body_deadline: float = BODY_DEADLINE,
        idle_timeout: float = IDLE_TIMEOUT,
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
        self.on_refused = on_refused  # (group, reason): every refusal, for the metric
        self.max_connections = max(1, max_connections)  # per group socket at once (as many more may wait)
        self.slot_wait = slot_wait
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.body_deadline = body_deadline
        self.idle_timeout = idle_timeout
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=timeout or httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=30.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0),
            follow_redirects=False,
        )
        self._usage: dict[str, Usage] = {}
        self.rejected: dict[str, int] = {}  # per group: refusals other than over a budget
        self.refusals: dict[tuple[str, str], int] = {}  # (group, reason) -> refusals, budget included
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
        state = _Group(group, placeholder_key.encode(), trio.Semaphore(self.max_connections))
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
                if not await self._take_slot(conn, group):
                    return
                try:
                    await self._serve_requests(conn, group)
                finally:
                    group.slots.release()
        except _ClientGone:
            pass
        except h11.ProtocolError as exc:
            log.debug("model proxy: group %s: connection ended: %s", group.name, exc)
        except Exception:  # a bug here must cost one connection, never the group's socket
            log.exception("model proxy: group %s: connection handler failed", group.name)

    async def _take_slot(self, conn: _HttpConnection, group: _Group) -> bool:
        """One of the group's connection slots, or False after refusing the connection (429)."""
        try:
            group.slots.acquire_nowait()
            return True
        except trio.WouldBlock:
            pass
        if group.waiting < self.max_connections:
            for other in group.idle.values():  # the oldest idle keep-alive connection makes room
                other.evicted = True
                if other.idle_scope is not None:
                    other.idle_scope.cancel()
                break
            group.waiting += 1
            try:
                with trio.move_on_after(self.slot_wait):
                    await group.slots.acquire()
                    return True
            finally:
                group.waiting -= 1
        why = f"more than {self.max_connections} connections at once on this group's model socket"
        self._refused(group, "connections", f"refused a connection: {why}")
        body = _error_body(429, f"too many connections: {why}; try again shortly")
        await conn.send_raw(_raw_response(429, body, [(b"retry-after", b"1")]))
        return False

    async def _serve_requests(self, conn: _HttpConnection, group: _Group) -> None:
        first = True
        while True:
            # The first request's head must be complete head_timeout after the connect; a later
            # one may start within idle_timeout, then has head_timeout for the rest of its head.
            now = trio.current_time()
            deadline = now + (self.head_timeout if first else self.idle_timeout)
            if not conn.buffered():
                with trio.CancelScope(deadline=deadline) as waiting:
                    conn.idle_scope = waiting
                    if not first:  # between keep-alive requests: may be closed to make room
                        group.idle[id(conn)] = conn
                    try:
                        await conn.receive()
                    finally:
                        group.idle.pop(id(conn), None)
                        conn.idle_scope = None
                if waiting.cancelled_caught:
                    if first and not conn.evicted:
                        self._refused(group, "timeout", f"no request within {self.head_timeout:g}s; connection closed")
                    return  # an idle keep-alive connection (or one evicted to make room): close quietly
                if not first:
                    deadline = trio.current_time() + self.head_timeout
            elif not first:
                deadline = now + self.head_timeout
            with trio.CancelScope(deadline=deadline) as head:
                try:
                    event = await conn.next_event()
                except h11.RemoteProtocolError as exc:
                    self._refused(group, "malformed", f"malformed HTTP: {exc}")
                    if conn.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                        status = exc.error_status_hint if exc.error_status_hint in REASONS else 400
                        await conn.send_simple(status, _error_body(status, "malformed HTTP request"), close=True)
                    return
            if head.cancelled_caught:
                self._refused(group, "timeout", f"request head not complete within {self.head_timeout:g}s; "
                              "connection cut")
                await conn.send_raw(_raw_response(408, _error_body(408, "request head not complete in time")))
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed (or anything unexpected): done
            if not await self._handle(conn, event, group):
                return
            if conn.h11.our_state is not h11.DONE or conn.h11.their_state is not h11.DONE:
                return
            conn.h11.start_next_cycle()
            first = False

    async def _read_body(self, conn: _HttpConnection, group: _Group) -> bytes | None:
        """The whole request body, or None after refusing it (the connection must then close):
        413 as soon as it passes max_body, 408 when it stalls for body_timeout or is not complete
        within body_deadline."""
        body = bytearray()
        deadline = trio.current_time() + self.body_deadline
        while True:
            wait = min(self.body_timeout, deadline - trio.current_time())
            with trio.move_on_after(max(0.0, wait)) as stalled:
                event = await conn.next_event()
            if stalled.cancelled_caught:
                self._refused(group, "timeout", f"request body stalled ({len(body)} bytes in); connection cut")
                await conn.send_simple(408, _error_body(408, "request body not complete in time"), close=True)
                return None
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body:
                    del body[:]
                    await self._refuse(conn, group, 413, "too_large", "refused a request body over "
                                       f"{self.max_body} bytes", self._too_large_message(), keep_alive=False)
                    return None
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:  # ConnectionClosed mid-body
                raise _ClientGone()

    def _too_large_message(self) -> str:
        return f"request body over {self.max_body} bytes (the daemon's model_max_body_bytes setting)"

    async def _skip_body(self, conn: _HttpConnection, request: h11.Request) -> bool:
        """Read and drop a refused request's small body so the connection can stay; False: it must
        close (body big, chunked, slow, or not sent yet because the client awaits 100-continue)."""
        if conn.h11.their_state is h11.DONE:
            return True
        if conn.h11.their_state is not h11.SEND_BODY or conn.h11.they_are_waiting_for_100_continue:
            return False
        length = _content_length(request)
        if length is None or length > SKIP_BODY:
            return False
        with trio.move_on_after(self.body_timeout):
            while True:
                event = await conn.next_event()
                if isinstance(event, h11.EndOfMessage):
                    return True
                if not isinstance(event, h11.Data):
                    return False
        return False

    async def _refuse(self, conn: _HttpConnection, group: _Group, status: int, reason: str, why: str | None,
                      message: str, *, request: h11.Request | None = None, keep_alive: bool = True,
                      extra: Iterable[tuple[bytes, bytes]] = ()) -> bool:
        """Answer a refusal (Anthropic-shaped JSON); True if the connection can be kept."""
        if why is not None:
            self._refused(group, reason, why)
        keep = keep_alive and request is not None and await self._skip_body(conn, request)
        pending = conn.h11.their_state is h11.SEND_BODY
        await conn.send_simple(status, _error_body(status, message), close=not keep, extra=extra)
        if not keep and pending:
            await conn.linger()
        return keep

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

    def _refused(self, group: _Group, reason: str, why: str) -> None:
        """Count a refusal (and tell on_refused); log it, at most LOG_LINES a minute per group."""
        if reason != "budget":
            self.rejected[group.name] = self.rejected.get(group.name, 0) + 1
        key = (group.name, reason)
        self.refusals[key] = self.refusals.get(key, 0) + 1
        if self.on_refused is not None:
            try:
                self.on_refused(group.name, reason)
            except Exception:
                log.exception("model proxy: on_refused callback failed")
        now = time.monotonic()
        if now - group.log_window >= LOG_WINDOW:
            group.log_window, group.log_lines = now, 0
        if group.log_lines >= LOG_LINES:
            group.log_skipped += 1
            return
        group.log_lines += 1
        skipped, group.log_skipped = group.log_skipped, 0
        more = f" ({skipped} more refusals were not logged)" if skipped else ""
        level = logging.INFO if reason == "budget" else logging.WARNING
        log.log(level, "model proxy: group %s: %s%s", group.name, why, more)

    async def _handle(self, conn: _HttpConnection, request: h11.Request, group: _Group) -> bool:
        """Answer one request; False if the connection must close afterwards. Everything is decided
        from the head; the body is read only for a request that will be forwarded."""
        method = request.method.decode("ascii", "replace")
        shown = request.target.decode("ascii", "replace")[:200]
        if not self._authorized(request, group):
            return await self._refuse(
                conn, group, 401, "auth", f"refused {method} {shown}: missing or wrong API key for this group",
                "invalid x-api-key: this key is not valid on this model socket", request=request,
            )
        route, reason = _target_route(request.method, request.target)
        if route is None:
            return await self._refuse(
                conn, group, 403, reason, f"refused {method} {shown}: {REFUSAL_TEXT[reason]}",
                f"{method} {shown} is not allowed on this model socket: only POST /v1/messages and "
                "POST /v1/messages/count_tokens are forwarded", request=request,
            )
        length = _content_length(request)
        if length is not None and length > self.max_body:
            return await self._refuse(conn, group, 413, "too_large",
                                      f"refused {method} {shown}: Content-Length {length} over {self.max_body}",
                                      self._too_large_message(), request=request, keep_alive=False)
        if route in BILLED_ROUTES and self.admit is not None:
            try:
                refusal = self.admit(group.name)
            except Exception:  # a bug in the budget check must not open the tap: refuse
                log.exception("model proxy: group %s: the budget check failed", group.name)
                refusal = "the spending check failed; see the daemon's log"
            if refusal is not None:
                self.refused_budget[group.name] = self.refused_budget.get(group.name, 0) + 1
                return await self._refuse(conn, group, 400, "budget", f"refused {method} {shown} over budget",
                                          refusal, request=request, extra=[(b"x-should-retry", b"false")])
        body = await self._read_body(conn, group)
        if body is None:
            return False
        return await self._forward(conn, request, body, group, method, route)

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
        self, conn: _HttpConnection, request: h11.Request, body: bytes, group: _Group, method: str, route: str
    ) -> bool:
        path = ROUTE_PATHS[route]
        _, query_mark, query = request.target.partition(b"?")
        url = self.upstream + path + (query_mark + query).decode("ascii")
        headers = self._upstream_headers(request)
        started = time.monotonic()
        attempt = 0
        try:
            upstream_request = self._client.build_request(method, url, headers=headers, content=body)
        except (httpx.InvalidURL, httpx.HTTPError, ValueError, TypeError) as exc:
            self._refused(group, "bad_request", f"refused {method} {path}: cannot forward ({type(exc).__name__})")
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
