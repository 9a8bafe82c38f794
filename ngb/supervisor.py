"""The supervisor: a nursery of GroupActors. A crashed actor is restarted with backoff and jitter;
its inbox (a memory channel owned here, not by the actor) survives the crash, so nothing queued is
lost, and the crash is recorded for /status and /debug/actors."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

import attrs
import trio

from .actor import GroupActor
from .actor_commands import Command, GroupChanged, Wake, WakeReason
from .actor_view import ActorView
from .backoff import backoff_delay
from .records import Group, format_time, utcnow

log = logging.getLogger(__name__)


@attrs.define
class ActorHandle:
    group: Group
    view: ActorView
    inbox_send: trio.MemorySendChannel[Command]
    inbox_receive: trio.MemoryReceiveChannel[Command]
    cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    actor: GroupActor | None = None
    task: trio.lowlevel.Task | None = None
    done: trio.Event = attrs.field(factory=trio.Event)

    def inbox_depth(self) -> int:
        return self.inbox_send.statistics().current_buffer_used


class Supervisor:
    INBOX_SIZE = 1024

    def __init__(
        self,
        make_actor: Callable[[Group, ActorView], GroupActor],
        *,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        on_crash: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self._make_actor = make_actor
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._on_crash = on_crash or (lambda folder, exc: None)
        self._nursery: trio.Nursery | None = None
        self.actors: dict[str, ActorHandle] = {}
        self.draining = False
        self.running = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.running = True
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self.running = False

    def start_actor(self, group: Group) -> ActorHandle:
        if self._nursery is None:
            raise RuntimeError("the supervisor is not running")
        handle = self.actors.get(group.folder)
        if handle is not None:
            handle.group = group
            return handle
        send, receive = trio.open_memory_channel[Command](self.INBOX_SIZE)
        handle = ActorHandle(
            group=group,
            view=ActorView(folder=group.folder, chat=group.chat),
            inbox_send=send,
            inbox_receive=receive,
        )
        self.actors[group.folder] = handle
        self._nursery.start_soon(self._supervise, handle, name=f"actor:{group.folder}")
        handle.inbox_send.send_nowait(Wake(WakeReason.START))  # look for work left by an earlier run
        return handle

    async def stop_actor(self, folder: str) -> None:
        handle = self.actors.pop(folder, None)
        if handle is not None:
            handle.cancel_scope.cancel()
            await handle.done.wait()

    def wake(self, folder: str, wake: Wake | None = None) -> bool:
        handle = self.actors.get(folder)
        if handle is None:
            return False
        try:
            handle.inbox_send.send_nowait(wake or Wake())
        except trio.WouldBlock:
            pass  # a wake is already queued; the actor reads the store, so nothing is lost
        return True

    def update_group(self, group: Group) -> None:
        """A group's settings changed: its actor uses them from now on (its trigger check, the next
        container's mounts), and looks again at what is stored (a looser trigger may make stored
        messages answerable)."""
        handle = self.actors.get(group.folder)
        if handle is None:
            return
        handle.group = group  # what a restarted actor starts with
        try:
            handle.inbox_send.send_nowait(GroupChanged(group))
        except trio.WouldBlock:  # never dropped: wait for room
            assert self._nursery is not None
            self._nursery.start_soon(handle.inbox_send.send, GroupChanged(group))
        self.wake(group.folder, Wake(WakeReason.GROUP_CHANGED))

    def make_room(self) -> bool:
        """Every container slot is taken and a turn waits: end the container that has been idle
        longest (its group starts a new one on its next message). False when none is idle: the
        next container to become idle ends then (Conversation.slot_wanted)."""
        idle = [(since, h.actor) for h in self.actors.values()
                if h.actor is not None and (since := h.actor.idle_since()) is not None]
        for _, actor in sorted(idle, key=lambda pair: pair[0]):
            if actor.stop_if_idle():
                log.debug("group %s: its idle container ends to free a slot for a waiting turn", actor.folder)
                return True
        return False

    def actor_busy(self, folder: str) -> bool:
        """The group's actor has a batch or a task run open in its container."""
        handle = self.actors.get(folder)
        return handle is not None and (handle.actor is None or handle.actor.busy())

    async def stop_idle_container(self, folder: str, timeout: float) -> bool:
        """Stop the group's container if it is idle and wait until it is gone: True when the group
        has no container any more; False when it is working or did not end within ``timeout``."""
        handle = self.actors.get(folder)
        if handle is None or handle.view.container_id is None:
            return True
        if handle.actor is None:
            return False
        return await handle.actor.stop_idle_container(timeout)

    def session_forgotten(self, folder: str) -> None:
        """The group's stored session was reset: its view shows none."""
        handle = self.actors.get(folder)
        if handle is not None:
            handle.view.session_id = None

    def begin_drain(self) -> None:
        """Stop starting new turns; idle containers stop, busy ones finish their batch."""
        self.draining = True
        for handle in self.actors.values():
            actor = handle.actor
            if actor is not None:
                actor.stop_if_idle()

    def busy(self) -> int:
        return len(self._busy_actors())

    def _busy_actors(self) -> list[GroupActor]:
        return [
            h.actor
            for h in self.actors.values()
            if h.actor is not None and h.view.state not in ("idle", "backing_off")
        ]

    async def wait_idle(self) -> None:
        """Return once no actor has a container or waits for one (the caller bounds the wait; with
        ``begin_drain`` first, nothing new starts). Woken by each container's end, no polling."""
        while busy := self._busy_actors():
            await busy[0].wait_session_end()

    async def _supervise(self, handle: ActorHandle) -> None:
        handle.task = trio.lowlevel.current_task()
        attempt = 0
        try:
            with handle.cancel_scope:
                while True:
                    actor = self._make_actor(handle.group, handle.view)
                    handle.actor = actor
                    started = trio.current_time()
                    try:
                        await actor.run(handle.inbox_receive)
                        return
                    except Exception as exc:  # noqa: BLE001 - an actor crash must not take the daemon down
                        view = handle.view
                        view.crash_count += 1
                        view.last_crash = f"{type(exc).__name__}: {exc}"
                        view.last_crash_at = format_time(utcnow())
                        log.error(
                            "actor %s crashed (%d): %s\n%s",
                            handle.group.folder,
                            view.crash_count,
                            view.last_crash,
                            "".join(traceback.format_exception(exc)[-6:]),
                        )
                        self._on_crash(handle.group.folder, exc)
                        attempt = 1 if trio.current_time() - started > self._backoff_cap else attempt + 1
                        view.state = "backing_off"
                        await trio.sleep(
                            backoff_delay(attempt, base=self._backoff_base, cap=self._backoff_cap)
                        )
                        self.wake(handle.group.folder, Wake(WakeReason.RESTART))
        finally:
            handle.done.set()
