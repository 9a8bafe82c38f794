"""The egress door (docs/web-access.md): the only way an agent container reaches the web.

The container stays ``--network none``. Its runner offers an HTTP proxy on the container's loopback
and forwards each connection, byte for byte, over the group's own ``web.sock``; here the door
serves that socket, so the group is known from the socket, never from what a request claims.

Per connection: the head is read within limits (ngb/sandbox/web_head.py), then the group's rules
decide on the host and port (ngb/sandbox/web_policy.py), the name is resolved here, every address
it resolved to is checked (so a name that points at the host, the LAN or a metadata service is
refused, however it is spelled and whatever it answered a moment ago), and the door connects to a
checked address only. HTTPS goes through a CONNECT tunnel (the TLS stays end to end between the
agent and the site: the door sees host, port and byte counts, never the content); plain HTTP is
forwarded one request per connection. Limits: bytes per turn and per UTC day per group, connections
at once per group, a connect timeout and an idle timeout; a tunnel past a limit is cut.

Every request is logged with its group and verdict, counted in metrics and kept in the store
(``web_log``, ``web_usage``) by a writer task that never slows a tunnel down. Refusals and cuts are
also kept for the runner, which asks for them (``GET http://notes.door.invalid/notes`` through the
door) after a tool call that used the web and hands them to the agent: a tunnel that is cut, or a
refused CONNECT, shows in most clients only as a failed connection."""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import socket as _socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import trio

from ..framing import peer_uid
from ..host_patterns import is_address
from ..hostperms import allowed_peer
from ..records import WebRequest, WebVerdict
from .log_budget import LogBudget
from .model_http import listening
from .web_head import BadHead, ProxyRequest, answer, read_head
from .web_policy import IPAddress, WebRules
from .web_record import WebRecorder

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MB = 1024 * 1024
MAX_NOTES = 20  # refusals and cuts kept per group for the runner (the newest)
# The runner asks for them after each tool call that used the web (agent/ngb_agent/host.py): a
# plain-HTTP GET of this URL through the door itself, answered by the door (.invalid never resolves).
NOTES_HOST = "notes.door.invalid"  # any path
LOG_LINES = 30  # refusal log lines per group and LOG_WINDOW
LOG_WINDOW = 60.0

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (the system resolver, off the event loop)."""
    infos = await trio.socket.getaddrinfo(host, port, type=_socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in out:
            out.append(address)
    return out


@attrs.frozen
class WebLimits:
    turn_bytes: int = 50 * MB  # 0: no limit
    day_bytes: int = 500 * MB  # 0: no limit
    max_connections: int = 8
    connect_timeout: float = 10.0
    idle_timeout: float = 30.0

    @classmethod
    def from_config(cls, config: Any) -> WebLimits:
        return cls(
            turn_bytes=config.web_turn_mb * MB,
            day_bytes=config.web_day_mb * MB,
            max_connections=config.web_max_connections,
            connect_timeout=config.web_connect_timeout,
            idle_timeout=config.web_idle_timeout,
        )


@attrs.define
class _Account:
    """One group's use: bytes this turn and this day, connections open now."""

    turn_bytes: int = 0
    day: str = ""
    day_bytes: int = 0
    connections: int = 0
    notes: list[str] = attrs.Factory(list)  # refusals and cuts the runner has not fetched yet (NOTES_HOST)
    log: LogBudget = attrs.Factory(lambda: LogBudget(LOG_LINES, LOG_WINDOW))  # refusal log lines


class _Cut(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class WebDoor:
    def __init__(
        self,
        limits: WebLimits,
        *,
        resolver: Resolver = resolve,
        day_bytes: Callable[[str, str], Awaitable[int]] | None = None,
        on_request: Callable[[WebRequest], None] = lambda request: None,
        agent_uid: int | None = None,
    ) -> None:
        self.limits = limits
        self.resolver = resolver
        self._day_bytes = day_bytes  # (folder, day) -> bytes already used that day (the store)
        self.recorder = WebRecorder(on_request)  # metrics at once, the store in batches (web_record.py)
        self.agent_uid = agent_uid
        self._accounts: dict[str, _Account] = {}

    # -- the group's turn and day ------------------------------------------------------------
    def new_turn(self, folder: str) -> None:
        """A group's turn began: its per-turn byte budget starts again."""
        account = self._accounts.get(folder)
        if account is not None:
            account.turn_bytes = 0

    async def _account(self, folder: str) -> _Account:
        account = self._accounts.setdefault(folder, _Account())
        today = datetime.now(UTC).date().isoformat()
        if account.day != today:
            account.day, account.day_bytes = today, 0
            if self._day_bytes is not None:
                try:
                    account.day_bytes = await self._day_bytes(folder, today)
                except Exception as exc:  # noqa: BLE001 - the store being slow must not stop the web
                    log.warning("web[%s]: today's use could not be read (%s); counting from 0", folder, exc)
        return account

    def _over(self, account: _Account) -> str | None:
        lim = self.limits
        if lim.turn_bytes and account.turn_bytes >= lim.turn_bytes:
            return f"web: this turn's {lim.turn_bytes // MB} MB of web traffic are used (web_turn_mb)"
        if lim.day_bytes and account.day_bytes >= lim.day_bytes:
            return f"web: today's {lim.day_bytes // MB} MB of web traffic for this group are used (web_day_mb)"
        return None

    # -- the socket ----------------------------------------------------------------------------
    async def serve_group(
        self,
        folder: str,
        socket_path: Path | trio.SocketListener,
        rules: Callable[[], WebRules],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``folder``'s web.sock until cancelled. ``rules`` is read at each request, so a
        change of the group's settings applies to its next request."""
        async with listening(socket_path) as listener, trio.open_nursery() as nursery:
            task_status.started()

            async def serve(stream: trio.SocketStream) -> None:
                if self.agent_uid is not None and not allowed_peer(peer_uid(stream), self.agent_uid):
                    log.warning("web[%s]: a connection from another uid was refused", folder)
                    await stream.aclose()
                    return
                await self.serve_connection(stream, folder, rules)

            await trio.serve_listeners(serve, [listener], handler_nursery=nursery)

    async def serve_connection(self, stream: trio.abc.Stream, folder: str, rules: Callable[[], WebRules]) -> None:
        """One client connection: one proxy request (a tunnel, or a plain-HTTP exchange)."""
        async with stream:
            try:
                request = await read_head(stream)
            except BadHead as exc:
                await _send_quietly(stream, answer(exc.status, exc.why))
                log.info("web[%s]: bad request: %s", folder, exc.why)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if request is None:
                return
            try:
                if request.host == NOTES_HOST and request.method == "GET" and not request.tunnel:
                    await self._send_notes(stream, folder)
                    return
                await self._serve(stream, folder, rules(), request)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except Exception:  # a bug here must cost one connection, never the group's socket
                log.exception("web[%s]: connection handler failed", folder)

    async def _serve(self, client: trio.abc.Stream, folder: str, rules: WebRules, req: ProxyRequest) -> None:
        started = time.monotonic()
        host, why = rules.check_target(req.host, req.port)
        account = await self._account(folder)
        status = 403
        if why is None:
            why = self._over(account)
            status = 429
        if why is None and account.connections >= self.limits.max_connections:
            why, status = f"web: too many connections at once ({self.limits.max_connections}, web_max_connections)", 429
        if why is not None:
            await self._refuse(client, folder, req, host, status, why, started)
            return
        account.connections += 1
        try:
            site, address, why, status = await self._connect(rules, host, req.port)
            if site is None:
                await self._refuse(client, folder, req, host, status, why, started)
                return
            async with site:
                if req.tunnel:
                    await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    first = req.rest
                else:
                    first = req.forward_head() + req.rest
                up, down, cut = await self._relay(client, site, account, first, f"{host}:{req.port}")
        finally:
            account.connections -= 1
        record = WebRequest(
            folder=folder, time=datetime.now(UTC), host=host, port=req.port, method=req.method,
            verdict=WebVerdict.ALLOWED, rule=cut, address=str(address), bytes_up=up, bytes_down=down,
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        log.info("web[%s]: %s %s:%d via %s: %d B up, %d B down, %.1f s%s", folder, req.method, host, req.port,
                 address, up, down, record.duration_ms / 1000, f"; cut: {cut}" if cut else "")
        self.recorder.record(record)

    async def _connect(
        self, rules: WebRules, host: str, port: int
    ) -> tuple[trio.SocketStream | None, IPAddress | None, str, int]:
        """(stream, address, "", 0) connected to a checked address of ``host``, or (None, None, why,
        status) saying why not."""
        try:
            with trio.fail_after(self.limits.connect_timeout):
                addresses = [ipaddress.ip_address(host)] if is_address(host) else await self.resolver(host, port)
        except trio.TooSlowError:
            return None, None, f"web: {host} did not resolve in {self.limits.connect_timeout:g} s", 504
        except (OSError, ValueError) as exc:
            return None, None, f"web: {host} does not resolve ({_reason(exc)})", 502
        if not addresses:
            return None, None, f"web: {host} does not resolve", 502
        for address in addresses:
            why = rules.check_address(address)
            if why is not None:
                shown = why if str(address) == host else f"{why} ({host} resolves to it)"
                return None, None, shown, 403
        last = ""
        for address in addresses:
            try:
                with trio.fail_after(self.limits.connect_timeout):
                    return await trio.open_tcp_stream(str(address), port), address, "", 0
            except trio.TooSlowError:
                last = f"web: {host} ({address}) did not answer in {self.limits.connect_timeout:g} s"
            except OSError as exc:
                last = f"web: {host} ({address}): {_reason(exc)}"
        return None, None, last, 504 if "did not answer" in last else 502

    async def _relay(
        self, client: trio.abc.Stream, site: trio.abc.Stream, account: _Account, first: bytes, target: str
    ) -> tuple[int, int, str]:
        """Bytes both ways until either side closes, a limit is passed or both are idle for the idle
        timeout: (bytes up, bytes down, why it was cut or "")."""
        counts = [0, 0]
        cut: list[str] = []
        last = [trio.current_time()]

        def add(direction: int, n: int) -> None:
            counts[direction] += n
            account.turn_bytes += n
            account.day_bytes += n
            last[0] = trio.current_time()
            over = self._over(account)
            if over is not None:
                raise _Cut(over)

        async def pump(src: trio.abc.Stream, dst: trio.abc.Stream, direction: int, nursery: trio.Nursery) -> None:
            try:
                while True:
                    data = await src.receive_some(CHUNK)
                    if not data:
                        break
                    await dst.send_all(data)
                    add(direction, len(data))
            except _Cut as exc:
                cut.append(exc.why)
                _note(account, f"{exc.why}: the connection to {target} was cut after {counts[1]:,} bytes in")
                nursery.cancel_scope.cancel()
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                nursery.cancel_scope.cancel()
                return
            # One side is done: tell the other (a half-close), and let the other direction finish.
            if isinstance(dst, trio.SocketStream):
                try:
                    await dst.send_eof()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    nursery.cancel_scope.cancel()

        async def idle_watch(nursery: trio.Nursery) -> None:
            while True:
                wake = last[0] + self.limits.idle_timeout
                if trio.current_time() >= wake:
                    cut.append(f"web: no traffic for {self.limits.idle_timeout:g} s (web_idle_timeout)")
                    _note(account, f"{cut[-1]}: the connection to {target} was cut after {counts[1]:,} bytes in")
                    nursery.cancel_scope.cancel()
                    return
                await trio.sleep_until(wake)

        try:
            if first:
                await site.send_all(first)
                add(0, len(first))
        except _Cut as exc:
            _note(account, f"{exc.why}: the connection to {target} was cut")
            return counts[0], counts[1], exc.why
        async with trio.open_nursery() as nursery:
            watcher = trio.CancelScope()

            async def directions() -> None:
                async with trio.open_nursery() as both:
                    both.start_soon(pump, client, site, 0, nursery)
                    both.start_soon(pump, site, client, 1, nursery)
                watcher.cancel()

            async def watch() -> None:
                with watcher:
                    await idle_watch(nursery)

            nursery.start_soon(directions)
            nursery.start_soon(watch)
        return counts[0], counts[1], cut[0] if cut else ""

    async def _refuse(
        self, client: trio.abc.Stream, folder: str, req: ProxyRequest, host: str, status: int, why: str, started: float
    ) -> None:
        _note(await self._account(folder), why)
        await _send_quietly(client, answer(status, why))
        self._log_refusal(folder, f"refused {req.method} {host}:{req.port}: {why}")
        self.recorder.record(WebRequest(
            folder=folder, time=datetime.now(UTC), host=host, port=req.port, method=req.method,
            verdict=WebVerdict.REFUSED, rule=why, duration_ms=round((time.monotonic() - started) * 1000),
        ))

    async def _send_notes(self, client: trio.abc.Stream, folder: str) -> None:
        """The runner's question (NOTES_HOST): the group's refusals and cuts since it last asked,
        as a JSON list of sentences, then forgotten."""
        account = await self._account(folder)
        notes, account.notes = account.notes, []
        body = json.dumps(notes).encode()
        await _send_quietly(client, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)

    def _log_refusal(self, folder: str, text: str) -> None:
        """One warning line per refusal, at most LOG_LINES a minute per group (a steered agent must
        not flood the log); the lines left out are counted in the next one. Each is in the store."""
        skipped = self._accounts.setdefault(folder, _Account()).log.take()
        if skipped is None:
            return
        more = f" ({skipped} more refusals were not logged; ngb web log has them)" if skipped else ""
        log.warning("web[%s]: %s%s", folder, text, more)

def _note(account: _Account, text: str) -> None:
    account.notes.append(text)
    del account.notes[:-MAX_NOTES]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, _socket.gaierror):
        return "no such host" if exc.errno in (_socket.EAI_NONAME, getattr(_socket, "EAI_NODATA", -5)) else str(exc.strerror or exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        return {errno.ECONNREFUSED: "connection refused", errno.ENETUNREACH: "network unreachable",
                errno.EHOSTUNREACH: "host unreachable"}.get(exc.errno, exc.strerror or str(exc))
    return str(exc) or type(exc).__name__


async def _send_quietly(stream: trio.abc.Stream, data: bytes) -> None:
    try:
        with trio.move_on_after(5):
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
