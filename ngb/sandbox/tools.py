"""The host side of the agent's tools. Every call arrives on a group's own requests socket; that
socket is the caller's identity, and every call is authorized here against that group's rights:
a non-main group may message only its own chat and manage only its own tasks; only the main group
may target other chats, register groups or decide strangers' pairing codes.

Limits before trust (docs/agent-protocol.md): a connection is checked for its peer's uid before a
byte is read, at most ``MAX_CONNECTIONS`` are served at once per socket, a line longer than
``MAX_FRAME`` or not finished within ``FRAME_TIMEOUT`` seconds is answered with an error and the
connection is closed; the socket keeps serving."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

import attrs
import trio

from ..framing import FRAME_TIMEOUT, MAX_FRAME, FrameError, FrameWriter, LineReader, peer_uid
from ..hostperms import DEFAULT_AGENT_UID, allowed_peer
from ..media.folder import FolderPathError
from ..records import Group, Pairing, PairingState, TaskStatus, format_time, to_json
from ..tasks.service import (
    KEEP,
    MAX_SCHEDULE,
    MAX_SCRIPT,
    MAX_ZONE,
    Caller,
    NewTask,
    TaskChange,
    TaskError,
    TaskService,
)

log = logging.getLogger(__name__)

MAX_TEXT = 16000
MAX_ID = 200  # longer request ids are not echoed
MAX_ERROR = 2000  # error texts sent back (and logged) are cut to this
MAX_CONNECTIONS = 4  # served at once per container socket; the runner needs one
HANG_UP_DRAIN = 1.0  # seconds (and HANG_UP_DRAIN_BYTES) a refused connection's input is thrown away
HANG_UP_DRAIN_BYTES = 1 << 20
REFUSAL_LOG_EVERY = 60.0  # seconds: refused connections are logged once per this, with a count
T = TypeVar("T")


def _short(text: str, limit: int = 200) -> str:
    """Agent-controlled text in a log line or an error: bounded, so a request cannot make the
    answer bigger than a frame or flood the log."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


class Refused(Exception):
    """The call is not allowed or not valid; the message goes back to the agent."""


class PairingDesk(Protocol):
    """What the pairing tools use of ngb.pairing.Pairings (injected: sandbox/ sits beside pairing.py
    and does not import it). A code that cannot be decided raises a ValueError (PairingError) whose
    message is one clear line."""

    now: Callable[[], datetime]

    async def approve(self, code_text: str) -> Group: ...

    async def deny(self, code_text: str) -> Pairing: ...

    async def listed(self, everything: bool = False) -> list[Pairing]: ...


def _shown(code: str) -> str:
    """A stored code as people read it (ngb.pairing.shown): ABCD-EFGH."""
    return f"{code[:4]}-{code[4:]}"


@attrs.define
class ToolContext:
    store: Any  # ngb.store.Store
    registry: Any  # ngb.groups.GroupRegistry
    outbox_wake: Callable[[], None]
    trigger: str
    min_interval: float = 60.0
    on_tasks_changed: Callable[[], None] = lambda: None
    plugins: Any = None  # ngb.plugins.PluginManager: the plugins' extra tools
    outgoing: Any = None  # ngb.media.outgoing.Outgoing: files the agent sends (send_file)
    sends_per_turn: int = 10
    pairings: PairingDesk | None = None  # ngb.pairing.Pairings: the main group's pairing tools


class ToolService:
    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self.refusals = 0
        self._files_this_turn: dict[str, int] = {}  # folder -> files sent since its turn began

    def new_turn(self, folder: str) -> None:
        """A group's turn began (the actor sent it input): its send_file count starts again."""
        self._files_this_turn.pop(folder, None)

    async def call(self, caller: Group, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        handler = getattr(self, f"_tool_{tool}", None)
        if handler is None or tool.startswith("_"):
            if self.ctx.plugins is not None and self.ctx.plugins.has_tool(tool):
                # Same door, same caller identity: the plugin's handler gets the calling group.
                return await self.ctx.plugins.call_tool(caller, tool, args)
            raise Refused(f"unknown tool {_short(tool)!r}")
        return await handler(caller, args)

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _str(args: dict[str, Any], key: str, *, required: bool = True, limit: int = MAX_TEXT) -> str | None:
        value = args.get(key)
        if value is None:
            if required:
                raise Refused(f"missing {key!r}")
            return None
        if not isinstance(value, str):
            raise Refused(f"{key!r} must be a string")
        if len(value) > limit:
            raise Refused(f"{key!r} is longer than {limit} characters")
        return value

    def _target_chat(self, caller: Group, chat: str | None) -> str:
        if chat is None or chat == caller.chat:
            return caller.chat
        if not caller.is_main:
            raise Refused("only the main group may send to another chat")
        if self.ctx.registry.get(chat) is None:
            raise Refused(f"chat {chat!r} is not a registered group")
        return chat

    @property
    def tasks(self) -> TaskService:
        """The task rules, with this context's store, groups, minimum interval and change hook
        (read at each call: the daemon's hook may be replaced)."""
        ctx = self.ctx
        return TaskService(ctx.store, ctx.registry, min_interval=ctx.min_interval, on_changed=ctx.on_tasks_changed)

    @staticmethod
    async def _tasks(call: Callable[[], Awaitable[T]]) -> T:
        """A task service call; its refusal goes back to the agent as the tool's error."""
        try:
            return await call()
        except TaskError as exc:
            raise Refused(str(exc)) from None

    # -- tools ---------------------------------------------------------------------------
    async def _tool_send_message(self, caller: Group, args: dict[str, Any]) -> dict[str, Any]:
        text = self._str(args, "text")
        assert text is not None
        if not text.strip():
            raise Refused("the message is empty")
        chat = self._target_chat(caller, self._str(args, "chat", required=False, limit=300))
        target = self.ctx.registry.get(chat) or caller
        item = await self.ctx.store.queue_message(target.folder, chat, text)
        self.ctx.outbox_wake()
        return {"queued": item, "chat": chat}

    async def _tool_send_file(self, caller: Group, args: dict[str, Any]) -> dict[str, Any]:
        """A file of the caller's folder to its chat (images as photos): the path must stay inside the
        folder with no link on the way, under the size limit and the count per turn."""
        path = self._str(args, "path", limit=1000)
        assert path is not None
        caption = self._str(args, "caption", required=False, limit=MAX_TEXT) or ""
        chat = self._target_chat(caller, self._str(args, "chat", required=False, limit=300))
        outgoing = self.ctx.outgoing
        if outgoing is None:
            raise Refused("sending files is not set up on this host")
        sent = self._files_this_turn.get(caller.folder, 0)
        if sent >= self.ctx.sends_per_turn:
            raise Refused(f"at most {self.ctx.sends_per_turn} files per turn")
        try:
            attachment = await outgoing.from_folder(caller.folder, path)
        except FolderPathError as exc:
            raise Refused(str(exc)) from None
        self._files_this_turn[caller.folder] = sent + 1
        target = self.ctx.registry.get(chat) or caller
        item = await self.ctx.store.queue_file(target.folder, chat, attachment, caption)
        self.ctx.outbox_wake()
        log.info("tool send_file: %s (%s, %d bytes) to %s", attachment.name, attachment.mime, attachment.size, chat)
        return {"queued": item, "chat": chat, "name": attachment.name, "type": attachment.mime, "size": attachment.size}

    async def _tool_schedule_task(self, caller: Group, args: dict[str, Any]) -> dict[str, Any]:
        prompt = self._str(args, "prompt")
        kind = self._str(args, "schedule_type", limit=20)
        value = self._str(args, "schedule_value", limit=MAX_SCHEDULE)
        tz = self._str(args, "timezone", required=False, limit=MAX_ZONE) or "UTC"
        mode = self._str(args, "context_mode", required=False, limit=20) or "group"
        pre_script = self._str(args, "pre_script", required=False, limit=MAX_SCRIPT) or None
        chat = self._str(args, "chat", required=False, limit=300)
        assert prompt is not None and kind is not None and value is not None
        new = NewTask(prompt=prompt, schedule_kind=kind, schedule_value=value, timezone=tz, context_mode=mode,
                      pre_script=pre_script, group=chat)
        task = await self._tasks(lambda: self.tasks.create(Caller.agent(caller), new))
        return {"task_id": task.id, "next_run": task.next_run and format_time(task.next_run)}

    async def _tool_list_tasks(self, caller: Group, args: dict[str, Any]) -> dict[str, Any]:
        tasks = await self._tasks(lambda: self.tasks.list_for(Caller.agent(caller)))
        return {"tasks": [to_json(t) for t in tasks]}

    async def _set_status(self, caller: Group, args: dict[str, Any], status: TaskStatus) -> dict[str, Any]:
        task_id = self._str(args, "task_id", limit=100)
        assert task_id is not None
        updated = await self._tasks(lambda: self.tasks.set_status(Caller.agent(caller), task_id, status))
        return {"task_id": updated.id, "status": status.value, "next_run": updated.next_run and format_time(updated.next_run)}

    async def _tool_pause_task(self, caller: Group, args: dict[str, Any]) -> dict[str, Any]:
        return await self._set_status(caller, args, TaskStatus.PAUSED)

    async def _tool_resume_task(self, caller: Group, args: dict[str, Any]) -> dict[str, Any]:
        return await self._set_status(caller, args, TaskStatus.ACTIVE)

    async def _tool_cancel_task(self, caller: Group, args: dict[str, Any]) -> dict[str, Any]:
        return await self._set_status(caller, args, TaskStatus.CANCELLED)

    async def _tool_update_task(self, caller: Group, args: dict[str, Any]) -> dict[str, Any]:
        task_id = self._str(args, "task_id", limit=100)
        assert task_id is not None
        change = TaskChange(
            prompt=self._str(args, "prompt") if args.get("prompt") is not None else None,
            context_mode=self._str(args, "context_mode", limit=20) if args.get("context_mode") is not None else None,
            pre_script=self._str(args, "pre_script", required=False, limit=MAX_SCRIPT) if "pre_script" in args else KEEP,
            schedule_kind=self._str(args, "schedule_type", required=False, limit=20),
            schedule_value=self._str(args, "schedule_value", required=False, limit=MAX_SCHEDULE),
            timezone=self._str(args, "timezone", required=False, limit=MAX_ZONE),
        )
        updated, fields = await self._tasks(lambda: self.tasks.update(Caller.agent(caller), task_id, change))
        return {"task_id": updated.id, "updated": fields}

    async def _tool_register_group(self, caller: Group, args: dict[str, Any]) -> dict[str, Any]:
        if not caller.is_main:
            raise Refused("only the main group may register groups")
        chat = self._str(args, "chat", limit=300)
        folder = self._str(args, "folder", limit=64)
        requires_trigger = args.get("requires_trigger", True)
        if not isinstance(requires_trigger, bool):
            raise Refused("'requires_trigger' must be true or false")
        assert chat is not None and folder is not None
        try:
            group = await self.ctx.registry.add(Group(chat=chat, folder=folder, requires_trigger=requires_trigger))
        except ValueError as exc:
            raise Refused(str(exc)) from exc
        return {"chat": group.chat, "folder": group.folder}

    # Strangers' DMs waiting for a code (docs/conversations.md): the same Pairings the CLI, the API
    # and the dashboard use, so an approved chat gets its folder and its welcome the same way.
    def _pairings(self, caller: Group, what: str) -> PairingDesk:
        if not caller.is_main:
            raise Refused(f"only the main group may {what}")
        if self.ctx.pairings is None:
            raise Refused("pairing is not available on this host")
        return self.ctx.pairings

    def _code(self, args: dict[str, Any]) -> str:
        code = self._str(args, "code", limit=40)
        assert code is not None
        return code

    async def _tool_list_pairings(self, caller: Group, args: dict[str, Any]) -> dict[str, Any]:
        pairings = self._pairings(caller, "list pairing codes")
        everything = args.get("all", False)
        if not isinstance(everything, bool):
            raise Refused("'all' must be true or false")
        now = pairings.now()
        return {"pairings": [{
            "code": _shown(p.code), "chat": p.chat, "sender": p.sender, "sender_id": p.sender_id,
            "created": format_time(p.created), "expires": format_time(p.expires), "state": str(p.state),
            "expired": p.state is PairingState.PENDING and p.expires <= now, "folder": p.folder or None,
        } for p in await pairings.listed(everything)]}

    async def _tool_approve_pairing(self, caller: Group, args: dict[str, Any]) -> dict[str, Any]:
        pairings = self._pairings(caller, "approve pairing codes")
        code = self._code(args)
        try:
            group = await pairings.approve(code)
        except ValueError as exc:  # PairingError: wrong, used or expired code, or too many wrong ones
            raise Refused(str(exc)) from None
        log.info("tool approve_pairing: %s approved %s as group %s", caller.folder, group.chat, group.folder)
        return {"chat": group.chat, "folder": group.folder}

    async def _tool_deny_pairing(self, caller: Group, args: dict[str, Any]) -> dict[str, Any]:
        pairings = self._pairings(caller, "deny pairing codes")
        code = self._code(args)
        try:
            pairing = await pairings.deny(code)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        log.info("tool deny_pairing: %s denied %s", caller.folder, pairing.chat)
        return {"chat": pairing.chat, "state": str(pairing.state)}


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
                        log.warning("tools[%s]: answer not sendable: %s", caller().folder, _short(str(exc)))
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
            log.warning("tools[%s]: refused %s: %s", group.folder, _short(tool), _short(str(exc)))
            return {"id": request_id, "ok": False, "error": _short(str(exc), MAX_ERROR)}
        except Exception as exc:  # noqa: BLE001 - a tool bug answers an error, never kills the daemon
            log.exception("tools[%s]: %s failed", group.folder, _short(tool))
            return {"id": request_id, "ok": False, "error": f"internal error: {type(exc).__name__}"}
        return {"id": request_id, "ok": True, "result": result}

    async with trio.open_nursery() as nursery:
        task_status.started()
        await trio.serve_listeners(connection, [listener], handler_nursery=nursery)


