"""The model proxy's forwarding: a request the door (ngb/sandbox/model_proxy.py) let through goes
to the upstream with the real key, and its answer comes back as it arrives.

`ModelForwarder` drops hop-by-hop and client auth headers, asks for an identity body (so SSE can be
parsed on the fly), sets the real ``x-api-key`` (none when no key is configured, for keyless local
upstreams) and forwards the route, query and body with httpx. It streams the response back (headers
first, then every chunk; never the whole body buffered) while counting usage per group
(ngb/sandbox/model_usage.py); retries 429 / 503 / 529 responses and connection failures that
happened before any byte went back, ``retries`` times with exponential backoff and jitter
(``retry-after`` honoured, capped), then passes the last error response through; closes the client
connection if the upstream drops mid-stream; and cuts a streamed (SSE) answer that sends nothing
for ``stall_timeout`` seconds (the CLI sees a truncated body and asks again) instead of letting the
turn hang until the turn timeout.

The real key is never logged, and any occurrence of it in upstream response headers or bodies is
masked with ``*`` before it reaches the container (same length, so framing is unchanged).
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable

import attrs
import h11
import httpx
import trio

from .model_http import ClientGone, HttpConnection, error_body
from .model_usage import Usage, UsageMeter, finish_usage

log = logging.getLogger("ngb.sandbox.model_proxy")

RETRY_STATUSES = frozenset({429, 503, 529})
MAX_RETRY_AFTER = 30.0
# A streamed (SSE) answer that sends no byte for this long is cut: the client sees the stream break
# and asks again (the CLI retries), instead of the turn hanging until the turn timeout. The API
# sends ping events while a long answer is produced, so silence this long means a stuck connection.
STALL_TIMEOUT = 120.0
MAX_BACKOFF = 30.0

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
DROP_REQUEST = HOP_BY_HOP | {
    b"host",
    b"content-length",
    b"x-api-key",
    b"authorization",
    b"expect",
    b"accept-encoding",
    b"cookie",
}
DROP_RESPONSE = HOP_BY_HOP | {b"set-cookie"}

RETRYABLE_ERRORS = (httpx.NetworkError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.RemoteProtocolError)


class Masker:
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
        self._tail = combined[-(len(secret) - 1) :]
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


def retry_after(headers: httpx.Headers) -> float | None:
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


def reason_phrase(response: httpx.Response) -> bytes:
    phrase = response.reason_phrase or httpx.codes.get_reason_phrase(response.status_code)
    return phrase.encode("latin-1", "replace")


class CannotForward(Exception):
    """httpx cannot build the upstream request (the door answers 400); the text names the error."""


class ModelForwarder:
    """Forwards to one upstream with the real credential and counts each group's usage."""

    def __init__(
        self,
        upstream: str,
        api_key: str | None,
        *,
        retries: int = 3,
        backoff_base: float = 0.5,
        on_usage: Callable[[str, Usage], None] | None = None,
        client: httpx.AsyncClient | None = None,
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
        self.max_retry_after = max_retry_after
        self.stall_timeout = stall_timeout  # a streamed answer silent this long is cut (0: never)
        self.stalled = 0
        self.on_usage = on_usage
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=timeout or httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=30.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0),
            follow_redirects=False,
        )
        self._usage: dict[str, Usage] = {}

    def usage(self, group: str) -> Usage:
        """Running totals for ``group`` (a copy; zeros if it never asked)."""
        u = self._usage.get(group)
        return attrs.evolve(u) if u is not None else Usage()

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

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
            after = retry_after(response.headers)
            if after is not None:
                return min(after, self.max_retry_after)
        base = min(self.backoff_base * (2**attempt), MAX_BACKOFF)
        return base / 2 + random.uniform(0, base / 2)

    async def _wait_to_retry(
        self, group: str, attempt: int, what: str, response: httpx.Response | None = None
    ) -> None:
        """Log and sleep out the backoff before retry ``attempt + 1``; ``what`` went wrong upstream
        (an error's name, or "answered <status>" with the ``response``, closed here: its
        Retry-After sets the delay)."""
        delay = self._backoff(attempt, response)
        if response is not None:
            await response.aclose()
        log.warning(
            "model proxy: group %s: upstream %s, retry %d/%d in %.2fs", group, what, attempt + 1, self.retries, delay
        )
        await trio.sleep(delay)

    async def forward(
        self, conn: HttpConnection, request: h11.Request, body: bytes, group: str, method: str, path: str
    ) -> bool:
        """Send one admitted request (its body read) to ``path`` upstream and relay the answer; False
        if the client connection must close afterwards. Raises CannotForward (nothing sent)."""
        _, query_mark, query = request.target.partition(b"?")
        url = self.upstream + path + (query_mark + query).decode("ascii")
        headers = self._upstream_headers(request)
        started = time.monotonic()
        attempt = 0
        try:
            upstream_request = self._client.build_request(method, url, headers=headers, content=body)
        except (httpx.InvalidURL, httpx.HTTPError, ValueError, TypeError) as exc:
            raise CannotForward(type(exc).__name__) from None
        while True:
            try:
                response = await self._client.send(upstream_request, stream=True)
            except RETRYABLE_ERRORS as exc:
                if attempt < self.retries:
                    await self._wait_to_retry(group, attempt, type(exc).__name__)
                    attempt += 1
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
                await self._wait_to_retry(group, attempt, f"answered {response.status_code}", response)
                attempt += 1
                continue
            break
        try:
            keep, usage = await self._relay(conn, response, group, body)
        finally:
            await response.aclose()
        log.debug(
            "model proxy: group %s: %s %s -> %d in %.2fs (in %d, out %d)%s",
            group,
            method,
            path,
            response.status_code,
            time.monotonic() - started,
            usage.input_tokens,
            usage.output_tokens,
            "" if keep else " [closed]",
        )
        return keep

    async def _upstream_failed(self, conn: HttpConnection, group: str, exc: Exception, status: int) -> bool:
        what = type(exc).__name__
        log.warning("model proxy: group %s: upstream failed: %s", group, what)
        message = (
            f"model upstream unreachable ({what})" if status == 502 else f"model upstream timed out ({what})"
        )
        await conn.send_simple(status, error_body(status, message))
        return True

    async def _relay(
        self, conn: HttpConnection, response: httpx.Response, group: str, request_body: bytes = b""
    ) -> tuple[bool, Usage]:
        """Pass the response through as it arrives; count its usage (before the final chunk goes
        out, so a client that has the whole response also sees the counts). Returns (keep the
        connection, this response's usage)."""
        length = response.headers.get("content-length", "")
        meter = UsageMeter(
            response.headers.get("content-type", ""), int(length) if length.isdigit() else None
        )
        masker = Masker(self._key_bytes)
        named: set[bytes] = set()
        for listed in response.headers.get_list("connection"):
            named.update(v.strip().lower().encode("latin-1") for v in listed.split(","))
        out_headers: list[tuple[bytes, bytes]] = []
        for name, value in response.headers.raw:
            lname = name.lower()
            if lname in DROP_RESPONSE or lname in named:
                continue
            if self._key_bytes is not None and self._key_bytes in value:
                value = value.replace(self._key_bytes, b"*" * len(self._key_bytes))
            out_headers.append((name, value))
        usage: Usage | None = None
        try:
            await conn.send(
                h11.Response(
                    status_code=response.status_code, headers=out_headers, reason=reason_phrase(response)
                )
            )
            chunks = response.aiter_raw()
            idle = self.stall_timeout if meter.mode == "sse" and self.stall_timeout > 0 else math.inf
            while True:
                with trio.move_on_after(idle) as silent:
                    chunk = await anext(chunks, None)
                if silent.cancelled_caught:
                    self.stalled += 1
                    log.warning(
                        "model proxy: group %s: the streamed answer sent nothing for %.0fs; cutting it "
                        "(the agent asks again)",
                        group,
                        idle,
                    )
                    return False, usage or self._count(group, finish_usage(meter, request_body))
                if chunk is None:
                    break
                meter.feed(chunk)
                if meter.complete and usage is None:
                    usage = self._count(group, finish_usage(meter, request_body))
                await conn.send(h11.Data(data=masker.mask(chunk)))
            if usage is None:
                usage = self._count(group, finish_usage(meter, request_body))
            await conn.send(h11.EndOfMessage())
        except ClientGone:
            log.info("model proxy: group %s: client went away mid-response", group)
            return False, usage or self._count(group, finish_usage(meter, request_body))
        except (httpx.HTTPError, h11.LocalProtocolError) as exc:
            log.warning(
                "model proxy: group %s: upstream response broke off (%s); closing the connection",
                group,
                type(exc).__name__,
            )
            return False, usage or self._count(group, finish_usage(meter, request_body))
        return True, usage

    def _count(self, group: str, usage: Usage) -> Usage:
        self._usage.setdefault(group, Usage()).add(usage)
        if self.on_usage is not None:
            try:
                self.on_usage(group, attrs.evolve(usage))
            except Exception:
                log.exception("model proxy: on_usage callback failed")
        return usage
