"""Serving a group's requests socket (``requests.sock``): who may connect (SocketGate: the peer's
uid, at most ``MAX_CONNECTIONS`` at once, refusals logged with a count), the line framing with
its limits (``MAX_FRAME``, ``FRAME_TIMEOUT``), and each request answered by ngb/sandbox/tools.py's
ToolService as the group the socket belongs to (docs/agent-protocol.md)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import trio

from ..framing import FRAME_TIMEOUT, MAX_FRAME, FrameError, FrameWriter, LineReader, peer_uid
from ..hostperms import DEFAULT_AGENT_UID, allowed_peer
from ..records import Group
from .tools import MAX_CONNECTIONS, MAX_ERROR, MAX_ID, Refused, ToolService, short

log = logging.getLogger("ngb.sandbox.tools")

HANG_UP_DRAIN = 1.0  # seconds (and HANG_UP_DRAIN_BYTES) a refused connection's input is thrown away
HANG_UP_DRAIN_BYTES = 1 << 20
REFUSAL_LOG_EVERY = 60.0  # seconds: refused connections are logged once per this, with a count


class SocketGate:
    """Who may use one container socket, and how many at once: the peer's uid is checked on
    accept (before a byte is read), and past ``limit`` open connections a new one is refused.
    Refusals are logged once per ``REFUSAL_LOG_EVERY`` seconds with a count, so a connect loop
    cannot flood the log."""

    def __init__(self, name: str, folder: Callable[[], str], *, agent_uid: int, limit: int = MAX_CONNECTIONS) -> None:
        self.name = name
        self._folder = folder
        self.agent_uid = agent_uid
        self.limit = limit
        self.active = 0
        self.refused = 0
        self._unlogged = 0
        self._logged_at: float | None = None

    def check(self, stream: trio.SocketStream) -> str | None:
        """None if this connection may be served (then call :meth:`release` when it ends), else
        why not (already counted and logged)."""
        uid = peer_uid(stream)
        if not allowed_peer(uid, self.agent_uid):
            why = f"a process of uid {uid} may not use this socket (only the agent's uid {self.agent_uid})"
        elif self.active >= self.limit:
            why = f"too many connections (at most {self.limit} at once)"
        else:
            self.active += 1
            return None
        self.refused += 1
        self._unlogged += 1
        now = trio.current_time()
        if self._logged_at is None or now - self._logged_at >= REFUSAL_LOG_EVERY:
            more = f" ({self._unlogged} refused since the last line)" if self._unlogged > 1 else ""
            log.warning("%s[%s]: connection refused: %s%s", self.name, self._folder(), why, more)
            self._logged_at, self._unlogged = now, 0
        return why

    def release(self) -> None:
        self.active -= 1


async def hang_up(stream: trio.SocketStream, last: dict[str, Any] | None = None) -> None:
    """Close a connection so that the peer reads our last frame: closing a unix socket with
    unread input resets it, and the peer would see only the reset. So: send, shut our side, and
    throw away (never keep) what is still coming for up to HANG_UP_DRAIN seconds or bytes."""
    with trio.move_on_after(HANG_UP_DRAIN), contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        if last is not None:
            await FrameWriter(stream).send(last)
        await stream.send_eof()
        dropped = 0
        while dropped < HANG_UP_DRAIN_BYTES:
            data = await stream.receive_some(4096)
            if not data:
                break
            dropped += len(data)
    await stream.aclose()


async def serve_requests(
    listener: trio.SocketListener,
    caller: Callable[[], Group],
    service: ToolService,
    *,
    agent_uid: int = DEFAULT_AGENT_UID,
    max_connections: int = MAX_CONNECTIONS,
    frame_timeout: float = FRAME_TIMEOUT,
    max_frame: int = MAX_FRAME,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the JSON-lines tool protocol on a group's requests socket until cancelled."""
    gate = SocketGate("tools", lambda: caller().folder, agent_uid=agent_uid, limit=max_connections)

    async def connection(stream: trio.SocketStream) -> None:
        refused = gate.check(stream)
        if refused is not None:
            await hang_up(stream, {"id": None, "ok": False, "error": f"connection refused: {refused}"})
            return
        try:
            await serve(stream)
        finally:
            gate.release()

    async def serve(stream: trio.SocketStream) -> None:
        reader = LineReader(stream, max_frame, strict=True, frame_timeout=frame_timeout)
        writer = FrameWriter(stream)
        async with stream:
            while True:
                try:
                    frame = await reader.next_frame()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the agent reset the connection: only this connection ends
                if frame is None:
                    return
                reply = await _answer(frame)
                try:
                    try:
                        await writer.send(reply)
                    except ValueError as exc:  # the answer does not fit in a frame
                        log.warning("tools[%s]: answer not sendable: %s", caller().folder, short(str(exc)))
                        await writer.send({"id": None, "ok": False, "error": "the answer is too large to send"})
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if isinstance(frame, FrameError) and frame.fatal:
                    await hang_up(stream)  # the error went back; the rest is not read
                    return

    async def _answer(frame: dict[str, Any] | FrameError) -> dict[str, Any]:
        group = caller()
        if isinstance(frame, FrameError):
            closing = "; connection closed" if frame.fatal else ""
            log.warning("tools[%s]: malformed request: %s%s", group.folder, frame.reason, closing)
            return {"id": None, "ok": False, "error": f"malformed request: {frame.reason}{closing}"}
        request_id = frame.get("id")
        if not isinstance(request_id, (str, int)) or isinstance(request_id, bool) or len(str(request_id)) > MAX_ID:
            request_id = None  # an id is echoed back: only short ones
        tool, args = frame.get("tool"), frame.get("args", {})
        if not isinstance(tool, str) or not isinstance(args, dict):
            return {"id": request_id, "ok": False, "error": "a request needs 'tool' (string) and 'args' (object)"}
        try:
            result = await service.call(group, tool, args)
        except Refused as exc:
            service.refusals += 1
            log.warning("tools[%s]: refused %s: %s", group.folder, short(tool), short(str(exc)))
            return {"id": request_id, "ok": False, "error": short(str(exc), MAX_ERROR)}
        except Exception as exc:  # noqa: BLE001 - a tool bug answers an error, never kills the daemon
            log.exception("tools[%s]: %s failed", group.folder, short(tool))
            return {"id": request_id, "ok": False, "error": f"internal error: {type(exc).__name__}"}
        return {"id": request_id, "ok": True, "result": result}

    async with trio.open_nursery() as nursery:
        task_status.started()
        await trio.serve_listeners(connection, [listener], handler_nursery=nursery)


