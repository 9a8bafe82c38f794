"""GroupActor: one per registered group. It owns the group's agent session and at most one container.

The actor never polls: it sleeps on its inbox until the router (or the scheduler) wakes it, then
reads what the agent has not answered yet from the store (the store is the truth, the inbox only
says "look"). A turn takes a container slot, starts the container, hands it every message since the
agent last answered, and then keeps the container for follow-ups until it has been idle for
`idle_timeout`. Each reply is written to the outbox together with the group's new cursor, so a
crash never loses a message and never answers one twice.
"""

from __future__ import annotations

import html
import logging
import math
import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import attrs
import trio

from .framing import FrameError
from .records import Group, Message
from .store import Store
from .triggers import is_triggered

log = logging.getLogger(__name__)


@attrs.frozen
class ExitInfo:
    """How an agent container ended."""

    exit_code: int | None = None
    oom_killed: bool = False
    error: str | None = None

    def describe(self) -> str:
        if self.oom_killed:
            return "the agent ran out of memory"
        if self.error:
            return self.error
        if self.exit_code not in (0, None):
            return f"the agent exited with status {self.exit_code}"
        return "the agent stopped"


class AgentConnection(Protocol):
    """The control channel of one running agent (see docs/agent-protocol.md)."""

    container_id: str
    exit_info: ExitInfo | None

    async def send(self, frame: dict[str, Any]) -> None: ...

    async def receive(self) -> dict[str, Any] | FrameError | None: ...


class Launcher(Protocol):
    """Starts an agent for a group; leaving the context stops and removes it."""

    def session(self, group: Group) -> AbstractAsyncContextManager[AgentConnection]: ...


@attrs.define
class Wake:
    """An inbox item: 'look at the store', optionally on behalf of a scheduled task."""

    reason: str = "message"
    message_id: int | None = None


@attrs.define
class ActorView:
    """What /debug/actors shows of an actor; updated by the actor as it works."""

    folder: str
    chat: str
    state: str = "idle"  # idle | waiting_slot | starting | running | stopping | backing_off
    container_id: str | None = None
    container_started: float | None = None
    session_id: str | None = None
    current_batches: dict[int, int] = attrs.field(factory=dict)
    turns: int = 0
    replies: int = 0
    last_turn_error: str | None = None
    crash_count: int = 0
    last_crash: str | None = None
    last_crash_at: str | None = None
    slot_wait_started: float | None = None


@attrs.define
class ActorSettings:
    trigger: str
    assistant_name: str
    idle_timeout: float = 300.0
    turn_timeout: float = 900.0
    start_timeout: float = 60.0


class TurnFailed(Exception):
    pass


def format_prompt(messages: list[Message]) -> str:
    """The batch handed to the agent: every message since it last answered, oldest first."""
    lines = ["<messages>"]
    for m in messages:
        lines.append(
            f'<message sender="{html.escape(m.sender, quote=True)}" time="{m.time.isoformat(timespec="seconds")}">'
            f"{html.escape(m.text, quote=False)}</message>"
        )
    lines.append("</messages>")
    return "\n".join(lines)


class GroupActor:
    def __init__(
        self,
        group: Group,
        *,
        store: Store,
        launcher: Launcher,
        slots: trio.CapacityLimiter,
        settings: ActorSettings,
        outbox_wake: Callable[[], None],
        view: ActorView | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.group = group
        self.store = store
        self.launcher = launcher
        self.slots = slots
        self.settings = settings
        self.outbox_wake = outbox_wake
        self.view = view or ActorView(folder=group.folder, chat=group.chat)
        self._on_event = on_event or (lambda kind, data: None)
        self._draining = draining
        self._failures: dict[int, int] = {}
        self._deadline: trio.CancelScope | None = None
        self._batches: dict[int, int] = {}
        self._next_batch = 1
        self._sent_upto = 0

    @property
    def folder(self) -> str:
        return self.group.folder

    # -- the loop ------------------------------------------------------------------------
    async def run(self, inbox: trio.MemoryReceiveChannel[Wake]) -> None:
        while True:
            if self._draining():
                await trio.sleep_forever()
            pending = await self._triggered_pending()
            if pending is None:
                self.view.state = "idle"
                await inbox.receive()
                _drain_nowait(inbox)
                continue
            await self._session(inbox)

    async def _triggered_pending(self) -> list[Message] | None:
        pending = await self.store.pending_input(self.folder, self.group.chat)
        if any(is_triggered(self.group, m, self.settings.trigger) for m in pending):
            return pending
        return None

    # -- one container's life ----------------------------------------------------------------
    async def _session(self, inbox: trio.MemoryReceiveChannel[Wake]) -> None:
        self.view.state = "waiting_slot"
        self.view.slot_wait_started = trio.current_time()
        async with self.slots:
            waited = trio.current_time() - self.view.slot_wait_started
            self.view.slot_wait_started = None
            self._on_event("slot_acquired", {"wait": waited})
            self.view.state = "starting"
            reason: str | None = None
            outstanding: dict[int, int] = {}
            try:
                async with self.launcher.session(self.group) as conn:
                    self.view.container_id = conn.container_id
                    self.view.container_started = trio.current_time()
                    self._on_event("container_started", {})
                    try:
                        reason = await self._converse(conn, inbox)
                    finally:
                        outstanding = dict(self._batches)
                        self.view.state = "stopping"
                exit_info = conn.exit_info
            except TurnFailed as exc:
                reason, exit_info = str(exc), None
                outstanding = dict(self._batches) or await self._pending_as_batch()
            finally:
                self.view.container_id = None
                self.view.container_started = None
                self.view.current_batches = {}
                self._batches = {}
            if outstanding:
                why = reason or "the agent stopped"
                if exit_info is not None and (exit_info.oom_killed or why == "exited"):
                    why = exit_info.describe()
                await self._turn_failed(outstanding, why)

    async def _pending_as_batch(self) -> dict[int, int]:
        pending = await self.store.pending_input(self.folder, self.group.chat)
        return {0: pending[-1].id} if pending else {}

    async def _converse(self, conn: AgentConnection, inbox: trio.MemoryReceiveChannel[Wake]) -> str | None:
        """Feed the agent and relay its output until it is idle, done, or dead. Returns why it
        ended when a batch was left unanswered (None when it ended cleanly)."""
        self._batches = {}
        self.view.current_batches = self._batches
        self._sent_upto = await self.store.cursor(self.folder)
        session_id = await self.store.session_id(self.folder)
        self.view.session_id = session_id
        await conn.send({"type": "start", "session_id": session_id, "group": self.folder, "is_main": self.group.is_main})
        self.view.state = "running"
        ended: str | None = None
        with trio.CancelScope() as deadline:
            self._deadline = deadline
            await self._send_pending(conn)
            if not self._batches:
                return None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._follow_ups, conn, inbox)
                ended = await self._read_frames(conn)
                nursery.cancel_scope.cancel()
        self._deadline = None
        if deadline.cancelled_caught:
            if self._batches:
                return f"the agent took longer than {self.settings.turn_timeout:g}s"
            return None
        return ended if self._batches else None

    def _arm(self, busy: bool) -> None:
        if self._deadline is None:
            return
        now = trio.current_time()
        if busy:
            self._deadline.deadline = now + self.settings.turn_timeout
        elif self._draining():
            self._deadline.deadline = now
        else:
            self._deadline.deadline = now + self.settings.idle_timeout

    async def _send_pending(self, conn: AgentConnection) -> bool:
        pending = await self.store.pending_input(self.folder, self.group.chat, after=self._sent_upto)
        if not pending or not any(is_triggered(self.group, m, self.settings.trigger) for m in pending):
            return False
        batch = self._next_batch
        self._next_batch += 1
        self._batches[batch] = pending[-1].id
        self._sent_upto = pending[-1].id
        self.view.turns += 1
        self._arm(busy=True)
        self._on_event("batch_sent", {"batch": batch, "first_message": pending[0].id, "count": len(pending)})
        await conn.send({"type": "input", "batch": batch, "prompt": format_prompt(pending)})
        return True

    async def _follow_ups(self, conn: AgentConnection, inbox: trio.MemoryReceiveChannel[Wake]) -> None:
        async for _wake in inbox:
            _drain_nowait(inbox)
            if self._draining():
                continue
            await self._send_pending(conn)

    async def _read_frames(self, conn: AgentConnection) -> str:
        batch_had_output: set[int] = set()
        while True:
            frame = await conn.receive()
            if frame is None:
                return "exited"
            if isinstance(frame, FrameError):
                log.warning("group %s: malformed frame from the agent: %s", self.folder, frame.reason)
                continue
            kind = frame.get("type")
            if kind == "output":
                batch = frame.get("batch")
                text = frame.get("text")
                if not isinstance(text, str) or not text.strip():
                    continue
                cursor_to = self._covered(batch, pop=False)
                if cursor_to is None:
                    # Output outside a live batch (e.g. late text): deliver it, move nothing.
                    await self.store.queue_message(self.folder, self.group.chat, text)
                else:
                    await self.store.commit_reply(self.folder, self.group.chat, text, cursor_to)
                    if batch not in batch_had_output:
                        batch_had_output.add(batch)
                        self._on_event("first_reply", {"batch": batch})
                self.view.replies += 1
                self.outbox_wake()
            elif kind == "result":
                batch = frame.get("batch")
                cursor_to = self._covered(batch, pop=True)
                session_id = frame.get("session_id")
                if isinstance(session_id, str) and session_id:
                    await self._save_session(session_id)
                if cursor_to is not None:
                    if frame.get("is_error") and batch not in batch_had_output:
                        error = str(frame.get("error") or "the agent reported an error")
                        self.view.last_turn_error = error
                        await self.store.record_failed_turn(
                            self.folder, cursor_to, error, (self.group.chat, f"⚠️ Sorry, I could not answer: {error}")
                        )
                        self.outbox_wake()
                    else:
                        await self.store.advance_cursor(self.folder, cursor_to)
                    self._failures.clear()
                self._on_event("result", {"batch": batch, "usage": frame.get("usage")})
                if not self._batches:
                    self._arm(busy=False)
            elif kind == "session":
                session_id = frame.get("session_id")
                if isinstance(session_id, str) and session_id:
                    await self._save_session(session_id)
                if frame.get("note"):
                    log.info("group %s: %s", self.folder, frame["note"])
            elif kind == "error":
                log.warning("group %s: agent error: %s", self.folder, frame.get("error"))
                self.view.last_turn_error = str(frame.get("error"))
            elif kind == "log":
                log.info("group %s: agent: %s", self.folder, str(frame.get("message"))[:500])
            else:
                log.warning("group %s: unknown frame type from the agent: %r", self.folder, kind)

    def _covered(self, batch: object, *, pop: bool) -> int | None:
        """The cursor position a frame for `batch` stands for. The runner may answer several
        queued batches in one go (it merges follow-ups that arrive mid-turn into the next query), so
        a frame for batch N covers every open batch up to N."""
        if not isinstance(batch, int) or isinstance(batch, bool):
            return None
        covered = [b for b in self._batches if b <= batch]
        if not covered:
            return None
        cursor_to = max(self._batches[b] for b in covered)
        if pop:
            for b in covered:
                del self._batches[b]
        return cursor_to

    async def _save_session(self, session_id: str) -> None:
        if session_id != self.view.session_id:
            self.view.session_id = session_id
            await self.store.set_session(self.folder, session_id)

    async def _turn_failed(self, outstanding: dict[int, int], reason: str) -> None:
        up_to = max(outstanding.values())
        self.view.last_turn_error = reason
        tries = self._failures.get(up_to, 0) + 1
        self._failures[up_to] = tries
        log.warning("group %s: turn failed (%s), try %d", self.folder, reason, tries)
        if tries < 2:
            return  # retried once in a fresh container: the cursor did not move
        self._failures.pop(up_to, None)
        await self.store.record_failed_turn(
            self.folder, up_to, reason, (self.group.chat, f"⚠️ Sorry, I could not answer: {reason}.")
        )
        self.outbox_wake()


def _drain_nowait(inbox: trio.MemoryReceiveChannel[Wake]) -> None:
    while True:
        try:
            inbox.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 30.0, jitter: Callable[[], float] | None = None) -> float:
    """Exponential backoff with jitter: 50-100% of base * 2^(attempt-1), capped."""
    raw = min(cap, base * math.pow(2, max(0, attempt - 1)))
    return raw * (0.5 + (jitter or random.random)() * 0.5)

