"""GroupActor: one per registered group. It owns the group's agent session and at most one container.

The actor never polls: it sleeps on its inbox until the router (or the scheduler) wakes it, then
reads what the agent has not answered yet from the store (the store is the truth, the inbox only
says "look"). A turn takes a container slot, starts the container, hands it every message since the
agent last answered, and then keeps the container for follow-ups until it has been idle for
`idle_timeout`. Each reply is written to the outbox together with the group's new cursor, so a
crash never loses a message and never answers one twice.

What the actor knows about its live container is one Conversation (ngb/conversation.py); the
scheduled runs it serves are handled by ngb/tasks/runs.py; the frames are ngb/protocol.py's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from .actor_commands import Command, GroupChanged, Wake
from .actor_frames import AgentFrames
from .actor_view import ActorMedia, ActorSettings, ActorView
from .agent_link import AgentConnection, ExitInfo, Launcher, TurnFailed  # noqa: F401 - ExitInfo: its old home
from .backoff import backoff_delay  # noqa: F401 - its old home (the lead may drop it)
from .conversation import Conversation, TaskTurn
from .lanes import WHOLE_CHAT, Lane, Lanes
from .logs import CHAT, GROUP
from .media.handoff import Placed
from .preview_sink import NoPreviews, PreviewSink
from .prompts import format_prompt, prompt_messages
from .protocol import (
    ImageRef,
    Input,
    Start,
)
from .records import Group, Message, channel_of
from .store import Store
from .tasks.runs import TaskRuns
from .triggers import is_triggered
from .turn_gate import TurnGate

log = logging.getLogger(__name__)


class GroupActor(AgentFrames):
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
        plugins: Any = None,
        budgets: Any = None,
        media: ActorMedia | None = None,
        previews: PreviewSink | None = None,
        make_room: Callable[[], object] = lambda: None,
    ) -> None:
        self.group = group
        self._make_room = make_room  # every slot taken: ask the supervisor to end an idle container
        self._previews = previews or NoPreviews()
        self.media = media or ActorMedia()
        self.store = store
        self.launcher = launcher
        self.slots = slots
        self.settings = settings
        self.outbox_wake = outbox_wake
        self.view = view or ActorView(folder=group.folder, chat=group.chat)
        self._on_event = on_event or (lambda kind, data: None)
        self._draining = draining
        self._gate = TurnGate(plugins, budgets)
        self._failures: dict[int, int] = {}
        self._conv: Conversation | None = None  # the live container's, while there is one
        self._lanes = Lanes(store, group.folder)
        self._lane: Lane = WHOLE_CHAT  # what the container serves: the chat, or one thread (ngb/lanes.py)
        self._container_gone = trio.Event()  # set when the live container's session ends

        def count_turn() -> None:
            self.view.turns += 1

        self._runs = TaskRuns(
            store,
            group.folder,
            prescript_timeout=settings.prescript_timeout,
            on_event=self._on_event,
            outbox_wake=outbox_wake,
            count_turn=count_turn,
        )

    def stop_if_idle(self) -> bool:
        """Stop the live container now when it is idle (no batch, no task run open): True when it
        was told to, False when it is working or there is none."""
        return self._conv is not None and self._conv.stop_if_idle()

    async def stop_idle_container(self, timeout: float) -> bool:
        """Stop the idle container and wait until it is gone: True when there is none any more;
        False when it is working (nothing is stopped) or did not end within ``timeout``."""
        if self.view.container_id is None:
            return True
        gone = self._container_gone
        if not self.stop_if_idle():
            return False
        with trio.move_on_after(timeout):
            await gone.wait()
        return self.view.container_id is None

    async def wait_session_end(self) -> None:
        """Return when the current container session (or the wait for its slot) has ended."""
        await self._container_gone.wait()

    def busy(self) -> bool:
        """A batch or a task run is open in the live container."""
        return self._conv is not None and self._conv.busy()

    def idle_since(self) -> float | None:
        """When the live container became idle (trio time); None when there is none, it is
        working, or it is ending already."""
        return None if self._conv is None else self._conv.idle_since

    @property
    def folder(self) -> str:
        return self.group.folder

    # -- the loop ------------------------------------------------------------------------
    async def run(self, inbox: trio.MemoryReceiveChannel[Command]) -> None:
        GROUP.set(self.folder)  # every log line of this actor's task tree names its group (ngb/logs.py)
        CHAT.set(self.group.chat)
        await self._runs.interrupt_earlier(self.group.chat)
        while True:
            if self._draining():
                self.view.state = "idle"
                await trio.sleep_forever()
            self._lane, pending = await self._lanes.next(self.group, self.settings.trigger, self.settings.threads)
            if pending is not None and (await self._gate.veto(self.group, pending)) is not None:
                # vetoed: seen, not answered
                await self.store.advance_cursor(self.folder, pending[-1].id, self._lane.thread)
                pending = None
            queued = await self.store.queued_runs(self.folder)
            in_group = [q for q in queued if q[1].context_mode != "isolated"] if self._lane.serves_tasks else []
            if pending is not None or in_group:
                await self._session(inbox)
            elif queued:
                run_id, task = queued[0]
                await self._session(inbox, isolated=TaskTurn(run_id, task))
            else:
                self.view.state = "idle"
                self._apply(await inbox.receive())
                self._apply_queued(inbox)

    def _apply(self, command: Command) -> None:
        match command:
            case GroupChanged(group=group):
                self.group = group
            case Wake():
                pass  # the loop looks at the store next

    def _apply_queued(self, inbox: trio.MemoryReceiveChannel[Command]) -> None:
        while True:
            try:
                self._apply(inbox.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    # -- one container's life ----------------------------------------------------------------
    async def _session(
        self, inbox: trio.MemoryReceiveChannel[Command], isolated: TaskTurn | None = None
    ) -> None:
        self.view.state = "waiting_slot"
        self.view.slot_wait_started = trio.current_time()
        if self.slots.available_tokens < 1:
            self._make_room()
        async with self.slots:
            waited = trio.current_time() - self.view.slot_wait_started
            self.view.slot_wait_started = None
            self._on_event("slot_acquired", {"wait": waited})
            self.view.state = "starting"
            self.view.thread = self._lane.thread
            conv = Conversation(
                self.settings.turn_timeout, self.settings.idle_timeout, self._draining, isolated,
                slot_wanted=lambda: self.slots.statistics().tasks_waiting > 0,
            )
            reason: str | None = None
            outstanding: dict[int, int] = {}
            try:
                async with self.launcher.session(self.group) as conn:
                    self.view.container_id = conn.container_id
                    self.view.container_started = trio.current_time()
                    self._on_event("container_started", {})
                    try:
                        reason = await self._converse(conv, conn, inbox)
                    finally:
                        outstanding = dict(conv.batches)
                        self.view.state = "stopping"
                exit_info = conn.exit_info
            except TurnFailed as exc:
                reason, exit_info = str(exc), None
                if self.view.container_started is None:
                    self._on_event("container_start_failed", {"reason": reason[:200]})
                outstanding = dict(conv.batches) or (
                    await self._pending_as_batch() if isolated is None else {}
                )
                if not conv.taken_runs():
                    # The container never took a run: the runs this session was for fail now.
                    await self._runs.fail_unstarted(isolated, str(exc))
            finally:
                self.view.state = "idle"
                self.view.container_id = None
                self.view.container_started = None
                self._container_gone.set()
                self._container_gone = trio.Event()
                self.view.current_batches = {}
                self._conv = None
                self._previews.drop(self.folder)
            why = reason or "the agent stopped"
            if exit_info is not None and (exit_info.oom_killed or why == "exited"):
                why = exit_info.describe()
            for turn in conv.taken_runs():
                await self._runs.finish(turn, "error", error=f"the run did not finish: {why}")
            if outstanding:
                # An OOM kill would only happen again in a fresh container of the same size: no retry.
                oom = exit_info is not None and exit_info.oom_killed
                if oom:
                    log.warning(
                        "group %s: the agent was killed at the memory limit; raise container_memory "
                        "(NGB_CONTAINER_MEMORY) if this group needs more",
                        self.folder,
                    )
                await self._turn_failed(outstanding, why, retry=not oom)

    async def _pending_as_batch(self) -> dict[int, int]:
        pending = await self._lanes.pending(self._lane, self.group.chat)
        return {0: pending[-1].id} if pending else {}

    async def _converse(
        self, conv: Conversation, conn: AgentConnection, inbox: trio.MemoryReceiveChannel[Command]
    ) -> str | None:
        """Feed the agent and relay its output until it is idle, done, or dead. Returns why it
        ended when a batch was left unanswered (None when it ended cleanly).

        With `conv.isolated`, the container serves that one task run in a fresh session (no chat
        history, the group's session neither resumed nor replaced) and stops when it is done."""
        isolated = conv.isolated
        self._conv = conv
        self.view.current_batches = conv.batches
        conv.sent_upto = await self._lanes.cursor(self._lane)
        session_id = None if isolated else await self._lanes.session(self._lane)
        if not isolated:
            self.view.session_id = session_id
        tools = self._gate.tools(self.group)
        await conn.send(
            Start(
                session_id=session_id,
                group=self.folder,
                is_main=self.group.is_main,
                tools=list(tools or []),
                isolated=isolated is not None,
                previews=isolated is None and self._wants_previews(),
            )
        )
        self.view.state = "running"
        ended: str | None = None
        with trio.CancelScope() as deadline:
            conv.deadline = deadline
            if isolated:
                await self._runs.start(conv, conn, isolated.run_id, isolated.task)
            else:
                await self._send_pending(conv, conn)
                await self._serve_tasks(conv, conn)
                await self._make_way(conv)
            if not conv.busy():
                return None
            async with trio.open_nursery() as nursery:
                if not isolated:
                    nursery.start_soon(self._follow_ups, conv, conn, inbox)
                ended = await self._read_frames(conv, conn)
                nursery.cancel_scope.cancel()
        conv.deadline = None
        if deadline.cancelled_caught:
            if conv.busy():
                return f"the agent took longer than {self.settings.turn_timeout:g}s"
            return None
        return ended if conv.busy() else None

    async def _send_pending(self, conv: Conversation, conn: AgentConnection) -> bool:
        pending = await self._lanes.pending(self._lane, self.group.chat, after=conv.sent_upto)
        if not pending or not any(is_triggered(self.group, m, self.settings.trigger) for m in pending):
            return False
        shown, unlisted = prompt_messages(self.group, pending)
        if await self._gate.veto(self.group, shown) is not None:  # a plugin vetoed: seen, not answered
            conv.sent_upto = pending[-1].id
            if not conv.batches:
                await self.store.advance_cursor(self.folder, pending[-1].id, self._lane.thread)
            return False
        placed, images = await self._place_files(shown)
        batch = conv.new_batch()
        conv.batches[batch] = pending[-1].id
        triggered = [m for m in pending if is_triggered(self.group, m, self.settings.trigger)]
        conv.reply_to[batch] = triggered[-1].platform_id if triggered else None
        conv.reply_thread[batch] = triggered[-1].thread if triggered else ""
        conv.sent_upto = pending[-1].id
        self.view.turns += 1
        conv.arm(busy=True)
        self._on_event("batch_sent", {"batch": batch, "first_message": pending[0].id, "count": len(pending),
                                      "reply_to": conv.reply_to[batch]})
        prefix = self._gate.prefix()
        self.media.new_turn(self.folder)
        reacted = await self.store.texts_of(channel_of(self.group.chat), [m.reaction_to for m in shown if m.reaction_to])
        prompt = format_prompt(shown, unlisted, placed, reacted)
        await conn.send(Input(batch=batch, prompt=prefix + prompt, images=images))
        return True

    async def _place_files(self, shown: list[Message]) -> tuple[Placed | None, list[ImageRef]]:
        """The batch's files into the group's folder, its images for the model (ngb/media/handoff.py)."""
        if self.media.handoff is None or not any(m.attachments for m in shown):
            return None, []
        placed = await self.media.handoff.place(self.folder, shown)
        return placed, [ImageRef(path=i.path, media_type=i.media_type) for i in placed.images]

    async def _follow_ups(
        self, conv: Conversation, conn: AgentConnection, inbox: trio.MemoryReceiveChannel[Command]
    ) -> None:
        async for command in inbox:
            self._apply(command)
            self._apply_queued(inbox)
            if self._draining():
                continue
            await self._send_pending(conv, conn)
            await self._serve_tasks(conv, conn)
            await self._make_way(conv)

    async def _make_way(self, conv: Conversation) -> None:
        """Another thread of a per_thread group waits: this container ends as soon as it is idle."""
        if not conv.end_when_idle and await self._lanes.other_waiting(self._lane, self.group, self.settings.trigger):
            conv.end_when_idle = True
            conv.rearm_if_idle()

    async def _serve_tasks(self, conv: Conversation, conn: AgentConnection) -> None:
        if self._lane.serves_tasks:  # (a per_thread group's tasks run in the chat's own lane)
            await self._runs.send_queued(conv, conn)

    def _wants_previews(self) -> bool:
        wanted = self.group.previews if self.group.previews is not None else self.settings.previews
        return wanted and self._previews.can_preview(self.group.chat)
