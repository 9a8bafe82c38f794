"""The host side of the agent's tools. Every call arrives on a group's own requests socket; that
socket is the caller's identity, and every call is authorized here against that group's rights:
a non-main group may message only its own chat and manage only its own tasks; only the main group
may target other chats, register groups or decide strangers' pairing codes.

Limits before trust (docs/agent-protocol.md): a connection is checked for its peer's uid before a
byte is read, at most ``MAX_CONNECTIONS`` are served at once per socket, a line longer than
``MAX_FRAME`` or not finished within ``FRAME_TIMEOUT`` seconds is answered with an error and the
connection is closed; the socket keeps serving."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

import attrs

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
T = TypeVar("T")


def short(text: str, limit: int = 200) -> str:
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
    # (folder, emoji) -> the platform id of the message reacted to; ValueError says why not
    # (ngb.reactions.AckReactions.react_current: only the message the group is answering)
    react: Callable[[str, str], Awaitable[str]] | None = None


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
            raise Refused(f"unknown tool {short(tool)!r}")
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

    async def _tool_react(self, caller: Group, args: dict[str, Any]) -> dict[str, Any]:
        """An emoji on the message the group is answering (the host picks it; docs/conversations.md)."""
        emoji = self._str(args, "emoji", limit=32)
        assert emoji is not None
        if self.ctx.react is None:
            raise Refused("reactions are not available on this host")
        try:
            target = await self.ctx.react(caller.folder, emoji)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        return {"reacted": emoji.strip(), "message": target}

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

