"""The door of each group's model socket (``STATE/run/<folder>/model.sock``): who may ask, what,
how much, and at what pace. What passes goes to ngb/sandbox/model_forward.py (upstream, SSE relay,
token counting, stall cut); the HTTP/1.1 plumbing is ngb/sandbox/model_http.py.

The Claude Code CLI in a container speaks plain HTTP/1.1 (Anthropic Messages API, usually
``stream: true`` server-sent events) to ``127.0.0.1:$NGB_MODEL_PORT``; the runner pipes every TCP
connection byte for byte to the group's unix socket, which this module serves.
Per connection and request the door:

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
* only then reads the body (a chunked body is cut with 413 as soon as it passes ``max_body``),
  applies the group's web rules to the model's own web tools (``web_rules(group)``,
  model_web_tools.py: a group whose web is off gets 400 ``invalid_request_error`` "web: off for
  this group ...", as a spend limit does: the CLI reads a 403 as "Failed to authenticate"), and
  hands the request to the forwarding.

A refused request whose body was not read gets ``connection: close``; the proxy then reads and
discards what the client still sends for a moment (never keeping it) so the client sees the
answer instead of a reset. Every refusal is an Anthropic-shaped JSON error.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs
import h11
import httpx
import trio

from .log_budget import LogBudget
from .model_forward import MAX_RETRY_AFTER, STALL_TIMEOUT, CannotForward, ModelForwarder
from .model_http import (
    REASONS,
    BodyStalled,
    BodyTooLarge,
    ClientGone,
    HttpConnection,
    error_body,
    listening,
    raw_response,
)
from .model_rules import BILLED_ROUTES, ROUTE_PATHS, HeadRefusal, judge_head
from .model_usage import Usage
from .model_web_tools import WebToolRefused, apply_web_rules
from .web_policy import WebRules

__all__ = ["ModelProxy", "Usage"]

log = logging.getLogger(__name__)

MAX_BODY = 8 * 1024 * 1024  # the model_max_body_bytes setting's default
MAX_CONNECTIONS = 8  # per group socket at once; as many more may wait SLOT_WAIT for a slot
SLOT_WAIT = 5.0
HEAD_TIMEOUT = 30.0  # a request head must be complete this long after its first byte (or the connect)
BODY_TIMEOUT = 30.0  # a request body must make progress at least this often ...
BODY_DEADLINE = 120.0  # ... and be complete within this
IDLE_TIMEOUT = 60.0  # a keep-alive connection with no new request for this long is closed
SKIP_BODY = 64 * 1024  # a refused request's body up to this size is read and dropped (keep-alive)


@attrs.define(eq=False)
class _Group:
    name: str
    placeholder: bytes
    slots: trio.Semaphore
    waiting: int = 0  # connections waiting for a slot
    idle: dict[int, HttpConnection] = attrs.Factory(dict)  # keep-alive, between requests; oldest first
    log: LogBudget = attrs.Factory(lambda: LogBudget(LOG_LINES, LOG_WINDOW))  # refusal log lines


LOG_LINES = 30
LOG_WINDOW = 60.0


class ModelProxy(ModelForwarder):
    """Serves per-group model sockets (the door) and forwards what passes to one upstream with the
    real credential (`ModelForwarder`)."""

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
        web_rules: Callable[[str], WebRules | None] | None = None,
    ) -> None:
        super().__init__(
            upstream,
            api_key,
            retries=retries,
            backoff_base=backoff_base,
            on_usage=on_usage,
            client=client,
            max_retry_after=max_retry_after,
            timeout=timeout,
            stall_timeout=stall_timeout,
        )
        self.max_body = max_body
        self.admit = admit  # group -> None (forward) or the refusal message (budgets)
        self.on_refused = on_refused  # (group, reason): every refusal, for the metric
        self.max_connections = max(1, max_connections)  # per group socket at once (as many more may wait)
        self.slot_wait = slot_wait
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.body_deadline = body_deadline
        self.idle_timeout = idle_timeout
        self.web_rules = web_rules  # group -> its web rules, for the model's own web tools (model_web_tools.py)
        self.rejected: dict[str, int] = {}  # per group: refusals other than over a budget
        self.refusals: dict[tuple[str, str], int] = {}  # (group, reason) -> refusals, budget included
        self.refused_budget: dict[str, int] = {}  # per group: requests refused over a budget cap

    def __repr__(self) -> str:  # never show the key
        return f"ModelProxy(upstream={self.upstream!r}, api_key={'set' if self._api_key else 'none'})"

    async def serve_group(
        self,
        group: str,
        socket_path: Path | trio.SocketListener,
        placeholder_key: str,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``group`` on ``socket_path`` (a unix socket, removed on exit; or a listener the
        agent transport made) until cancelled."""
        if not placeholder_key:
            raise ValueError("a placeholder key is required")
        if self._api_key is not None and hmac.compare_digest(
            placeholder_key.encode(), self._key_bytes or b""
        ):
            raise ValueError("the placeholder must not be the real key")
        state = _Group(group, placeholder_key.encode(), trio.Semaphore(self.max_connections))
        async with listening(socket_path) as listener, trio.open_nursery() as nursery:
            log.debug("model proxy: group %s listening", group)
            task_status.started()

            async def serve(stream: trio.SocketStream) -> None:
                await self._serve_connection(stream, state)

            await trio.serve_listeners(serve, [listener], handler_nursery=nursery)

    async def _serve_connection(self, stream: trio.abc.Stream, group: _Group) -> None:
        conn = HttpConnection(stream)
        try:
            async with stream:
                if not await self._take_slot(conn, group):
                    return
                try:
                    await self._serve_requests(conn, group)
                finally:
                    group.slots.release()
        except ClientGone:
            pass
        except h11.ProtocolError as exc:
            log.debug("model proxy: group %s: connection ended: %s", group.name, exc)
        except Exception:  # a bug here must cost one connection, never the group's socket
            log.exception("model proxy: group %s: connection handler failed", group.name)

    async def _take_slot(self, conn: HttpConnection, group: _Group) -> bool:
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
        body = error_body(429, f"too many connections: {why}; try again shortly")
        await conn.send_raw(raw_response(429, body, [(b"retry-after", b"1")]))
        return False

    async def _serve_requests(self, conn: HttpConnection, group: _Group) -> None:
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
                        self._refused(
                            group, "timeout", f"no request within {self.head_timeout:g}s; connection closed"
                        )
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
                        await conn.send_simple(
                            status, error_body(status, "malformed HTTP request"), close=True
                        )
                    return
            if head.cancelled_caught:
                self._refused(
                    group,
                    "timeout",
                    f"request head not complete within {self.head_timeout:g}s; connection cut",
                )
                await conn.send_raw(raw_response(408, error_body(408, "request head not complete in time")))
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed (or anything unexpected): done
            if not await self._handle(conn, event, group):
                return
            if conn.h11.our_state is not h11.DONE or conn.h11.their_state is not h11.DONE:
                return
            conn.h11.start_next_cycle()
            first = False

    def _too_large_message(self) -> str:
        return f"request body over {self.max_body} bytes (the daemon's model_max_body_bytes setting)"

    async def _refuse(
        self,
        conn: HttpConnection,
        group: _Group,
        status: int,
        reason: str,
        why: str | None,
        message: str,
        *,
        request: h11.Request | None = None,
        keep_alive: bool = True,
        extra: Iterable[tuple[bytes, bytes]] = (),
    ) -> bool:
        """Answer a refusal (Anthropic-shaped JSON); True if the connection can be kept."""
        if why is not None:
            self._refused(group, reason, why)
        keep = (
            keep_alive
            and request is not None
            and await conn.skip_small_body(request, SKIP_BODY, self.body_timeout)
        )
        pending = conn.h11.their_state is h11.SEND_BODY
        await conn.send_simple(status, error_body(status, message), close=not keep, extra=extra)
        if not keep and pending:
            await conn.linger()
        return keep

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
        skipped = group.log.take()
        if skipped is None:
            return
        more = f" ({skipped} more refusals were not logged)" if skipped else ""
        level = logging.INFO if reason == "budget" else logging.WARNING
        log.log(level, "model proxy: group %s: %s%s", group.name, why, more)

    async def _handle(self, conn: HttpConnection, request: h11.Request, group: _Group) -> bool:
        """Answer one request; False if the connection must close afterwards. Everything is decided
        from the head (model_rules.judge_head); the body is read only for a request that will be forwarded."""
        method = request.method.decode("ascii", "replace")
        verdict = judge_head(request, group.name, group.placeholder, self.max_body, self.admit,
                             self._too_large_message())
        if isinstance(verdict, HeadRefusal):
            if verdict.reason == "budget":
                self.refused_budget[group.name] = self.refused_budget.get(group.name, 0) + 1
            return await self._refuse(conn, group, verdict.status, verdict.reason, verdict.why, verdict.message,
                                      request=request, keep_alive=verdict.keep_alive, extra=verdict.extra)
        route = verdict.route
        try:  # refused bodies: the connection must close
            body = await conn.read_body(self.max_body, self.body_timeout, self.body_deadline)
        except BodyStalled as exc:
            self._refused(group, "timeout", f"request body stalled ({exc.received} bytes in); connection cut")
            await conn.send_simple(408, error_body(408, "request body not complete in time"), close=True)
            return False
        except BodyTooLarge:
            why = f"refused a request body over {self.max_body} bytes"
            await self._refuse(
                conn, group, 413, "too_large", why, self._too_large_message(), keep_alive=False
            )
            return False
        path = ROUTE_PATHS[route]
        if route in BILLED_ROUTES and self.web_rules is not None:
            try:
                rules = self.web_rules(group.name)
                body = body if rules is None else apply_web_rules(body, rules)
            except WebToolRefused as exc:
                # 400 like a spend limit: a 403 reads "Failed to authenticate" in the CLI
                return await self._refuse(conn, group, 400, "web", f"refused {method} {path}: {exc}", str(exc),
                                          request=request, extra=[(b"x-should-retry", b"false")])
        try:
            return await self.forward(conn, request, body, group.name, method, path)
        except CannotForward as exc:
            self._refused(group, "bad_request", f"refused {method} {path}: cannot forward ({exc})")
            await conn.send_simple(400, error_body(400, "request cannot be forwarded"))
            return True
