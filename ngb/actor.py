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
import json
import logging
import math
import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import attrs
import trio

from .framing import FrameError
from .logs import CHAT, GROUP
from .records import Group, Message, Task, TaskStatus
from .store import Store
from .triggers import is_triggered, sender_allowed

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
    """An inbox item: 'look at the store' (new messages, or runs the scheduler queued: reason
    "task"). The store is the truth; wakes may be coalesced or dropped without losing work."""

    reason: str = "message"
    message_id: int | None = None


@attrs.define
class TaskTurn:
    """A scheduled task's run while this actor works on it."""

    run_id: int
    task: Task
    batch: int | None = None
    outputs: list[str] = attrs.field(factory=list)
    data: Any = None


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
    prescript_timeout: float = 60.0


class TurnFailed(Exception):
    pass


def format_task_prompt(task: Task, data: Any = None) -> str:
    """The input batch of a scheduled task: its prompt, and what its pre-script found."""
    schedule = f"{task.schedule_kind.value} {task.schedule_value}"
    lines = [
        f'<scheduled_task id="{html.escape(task.id, quote=True)}" schedule="{html.escape(schedule, quote=True)}"'
        f' mode="{html.escape(task.context_mode, quote=True)}">',
        html.escape(task.prompt, quote=False),
    ]
    if data is not None:
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, indent=1)
        lines.append(f"<pre_script_data>{html.escape(text, quote=False)}</pre_script_data>")
    lines.append("</scheduled_task>")
    lines.append("(This is a scheduled task, not a chat message: what you write is sent to the chat.)")
    return "\n".join(lines)


def interrupted_notice(task_ids: list[str]) -> str:
    """What the chat is told about scheduled runs cut short by a restart (they are not repeated)."""
    ids = ", ".join(dict.fromkeys(task_ids))
    one = len(task_ids) == 1
    runs = "A scheduled task run was" if one else f"{len(task_ids)} scheduled task runs were"
    return (f"⚠️ {runs} interrupted by a restart ({ids}) and not repeated, since "
            f"{'it' if one else 'they'} may have partly run. `ngb tasks runs <id>` shows what happened; "
            "the schedule goes on.")


def interpret_prescript(frame: dict[str, Any]) -> tuple[bool, Any, str | None]:
    """A prescript_result frame -> (wake the agent?, data, error). A script that failed to run,
    exited non-zero, timed out or did not print one JSON object with a boolean wakeAgent is an
    error (the run is recorded failed with that reason)."""
    if frame.get("error"):
        return False, None, f"pre-script could not run: {frame['error']}"
    if frame.get("timed_out"):
        return False, None, f"pre-script timed out after {frame.get('timeout', '?')}s"
    code = frame.get("exit_code")
    stderr = str(frame.get("stderr") or "").strip()[-500:]
    if code != 0:
        return False, None, f"pre-script exited with status {code}" + (f": {stderr}" if stderr else "")
    stdout = str(frame.get("stdout") or "").strip()
    if frame.get("truncated"):
        return False, None, "pre-script printed more than the allowed output"
    try:
        verdict = json.loads(stdout.splitlines()[-1]) if stdout else None
    except (ValueError, IndexError):
        verdict = None
    if verdict is None:
        try:
            verdict = json.loads(stdout)
        except ValueError:
            verdict = None
    if not isinstance(verdict, dict) or not isinstance(verdict.get("wakeAgent"), bool):
        shown = stdout[:200] or "(nothing)"
        return False, None, f'pre-script must print JSON {{"wakeAgent": true|false, "data": ...}}, printed: {shown}'
    return verdict["wakeAgent"], verdict.get("data"), None


def format_prompt(messages: list[Message], unlisted: frozenset[int] = frozenset()) -> str:
    """The batch handed to the agent: every message since it last answered, oldest first; those
    whose id is in `unlisted` are marked as from a sender not on the group's allow-list."""
    lines = ["<messages>"]
    for m in messages:
        mark = ' unlisted="true"' if m.id in unlisted else ""
        lines.append(
            f'<message sender="{html.escape(m.sender, quote=True)}"{mark} time="{m.time.isoformat(timespec="seconds")}">'
            f"{html.escape(m.text, quote=False)}</message>"
        )
    lines.append("</messages>")
    return "\n".join(lines)


def prompt_messages(group: Group, pending: list[Message]) -> tuple[list[Message], frozenset[int]]:
    """What of `pending` reaches the agent: by default only messages of allowed senders (a sender
    not on the allow-list never reaches the prompt, even riding along with an allowed one's); with
    the group's `unlisted_context` on, theirs too, marked. Returns (shown, ids marked unlisted)."""
    unlisted = frozenset(m.id for m in pending if not sender_allowed(group, m))
    if group.unlisted_context:
        return pending, unlisted
    return [m for m in pending if m.id not in unlisted], frozenset()


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
        plugins: Any = None,
        budgets: Any = None,
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
        self._plugins = plugins  # ngb.plugins.PluginManager: before_turn, extra tools
        self._budgets = budgets  # ngb.budgets.Budgets: a group over its spend cap gets no turn
        self._decided: tuple[tuple[int, int], Any] | None = None  # the last before_turn answer
        self._failures: dict[int, int] = {}
        self._deadline: trio.CancelScope | None = None
        self._batches: dict[int, int] = {}
        self._reply_to: dict[int, str | None] = {}  # batch -> platform id of its last triggered message
        self._tasks: dict[int, TaskTurn] = {}  # open task batches
        self._prescripts: dict[str, TaskTurn] = {}  # pre-scripts sent, result not back yet
        self._isolated: TaskTurn | None = None  # this container serves one isolated run
        self._end_when_idle = False
        self._next_batch = 1
        self._sent_upto = 0
        self._container_gone = trio.Event()  # set when the live container's session ends

    def stop_if_idle(self) -> bool:
        """Stop the live container now when it is idle (no batch, no task run open): True when it
        was told to, False when it is working or there is none."""
        if self._deadline is None or self.busy():
            return False
        self._deadline.deadline = trio.current_time()
        return True

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

    def busy(self) -> bool:
        """A batch or a task run is open in the live container."""
        return bool(self._batches or self._tasks or self._prescripts)

    @property
    def folder(self) -> str:
        return self.group.folder

    # -- the loop ------------------------------------------------------------------------
    async def run(self, inbox: trio.MemoryReceiveChannel[Wake]) -> None:
        GROUP.set(self.folder)  # every log line of this actor's task tree names its group (ngb/logs.py)
        CHAT.set(self.group.chat)
        # A run handed to an agent of an earlier actor (or daemon) is over: never run it twice.
        interrupted = await self.store.interrupt_runs(self.folder, (self.group.chat, interrupted_notice))
        if interrupted:
            log.warning("group %s: %d task run(s) interrupted by a restart recorded as failed", self.folder,
                        len(interrupted))
            self._on_event("task_run_finished", {"outcome": "error", "count": len(interrupted)})
            self.outbox_wake()
        while True:
            if self._draining():
                self.view.state = "idle"
                await trio.sleep_forever()
            pending = await self._triggered_pending()
            if pending is not None and (await self._decide(pending)) is not None:
                await self.store.advance_cursor(self.folder, pending[-1].id)  # vetoed: seen, not answered
                pending = None
            queued = await self.store.queued_runs(self.folder)
            in_group = [q for q in queued if q[1].context_mode != "isolated"]
            if pending is not None or in_group:
                await self._session(inbox)
            elif queued:
                run_id, task = queued[0]
                await self._session(inbox, isolated=TaskTurn(run_id, task))
            else:
                self.view.state = "idle"
                await inbox.receive()
                _drain_nowait(inbox)

    async def _triggered_pending(self) -> list[Message] | None:
        pending = await self.store.pending_input(self.folder, self.group.chat)
        if any(is_triggered(self.group, m, self.settings.trigger) for m in pending):
            return pending
        return None

    # -- one container's life ----------------------------------------------------------------
    async def _session(self, inbox: trio.MemoryReceiveChannel[Wake], isolated: TaskTurn | None = None) -> None:
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
                        reason = await self._converse(conn, inbox, isolated)
                    finally:
                        outstanding = dict(self._batches)
                        self.view.state = "stopping"
                exit_info = conn.exit_info
            except TurnFailed as exc:
                reason, exit_info = str(exc), None
                started = self._taken_runs()
                outstanding = dict(self._batches) or (await self._pending_as_batch() if isolated is None else {})
                if not started:
                    # The container never took a run: the runs this session was for fail now
                    # (a scheduled run is not retried: the next slot is its retry).
                    await self._fail_unstarted_runs(isolated, str(exc))
            finally:
                self.view.state = "idle"
                self.view.container_id = None
                self.view.container_started = None
                self._container_gone.set()
                self._container_gone = trio.Event()
                self.view.current_batches = {}
                self._batches = {}
                open_runs = self._taken_runs()
                self._tasks, self._prescripts, self._isolated = {}, {}, None
                self._end_when_idle = False
            why = reason or "the agent stopped"
            if exit_info is not None and (exit_info.oom_killed or why == "exited"):
                why = exit_info.describe()
            for turn in open_runs:
                await self._finish_run(turn, "error", error=f"the run did not finish: {why}")
            if outstanding:
                # An OOM kill would only happen again in a fresh container of the same size: no retry.
                oom = exit_info is not None and exit_info.oom_killed
                if oom:
                    log.warning("group %s: the agent was killed at the memory limit; raise container_memory "
                                "(NGB_CONTAINER_MEMORY) if this group needs more", self.folder)
                await self._turn_failed(outstanding, why, retry=not oom)

    def _taken_runs(self) -> list[TaskTurn]:
        turns = {id(t): t for t in [*self._tasks.values(), *self._prescripts.values()]}
        return list(turns.values())

    async def _fail_unstarted_runs(self, isolated: TaskTurn | None, reason: str) -> None:
        if isolated is not None:
            candidates = [(isolated.run_id, isolated.task)]
        else:
            candidates = [q for q in await self.store.queued_runs(self.folder) if q[1].context_mode != "isolated"]
        for run_id, task in candidates:
            if await self.store.start_run(run_id):
                await self._finish_run(TaskTurn(run_id, task), "error", error=reason)

    async def _pending_as_batch(self) -> dict[int, int]:
        pending = await self.store.pending_input(self.folder, self.group.chat)
        return {0: pending[-1].id} if pending else {}

    async def _converse(
        self, conn: AgentConnection, inbox: trio.MemoryReceiveChannel[Wake], isolated: TaskTurn | None = None
    ) -> str | None:
        """Feed the agent and relay its output until it is idle, done, or dead. Returns why it
        ended when a batch was left unanswered (None when it ended cleanly).

        With `isolated`, the container serves that one task run in a fresh session (no chat
        history, the group's session neither resumed nor replaced) and stops when it is done."""
        self._batches = {}
        self._tasks, self._prescripts = {}, {}
        self._isolated = isolated
        self._end_when_idle = isolated is not None
        self.view.current_batches = self._batches
        self._sent_upto = await self.store.cursor(self.folder)
        session_id = None if isolated else await self.store.session_id(self.folder)
        if not isolated:
            self.view.session_id = session_id
        start: dict[str, Any] = {"type": "start", "session_id": session_id, "group": self.folder, "is_main": self.group.is_main}
        if self._plugins is not None and self._plugins.tool_specs(self.group):
            start["tools"] = self._plugins.tool_specs(self.group)  # the plugins' extra tools
        if isolated:
            start["isolated"] = True
        await conn.send(start)
        self.view.state = "running"
        ended: str | None = None
        with trio.CancelScope() as deadline:
            self._deadline = deadline
            if isolated:
                await self._start_run(conn, isolated.run_id, isolated.task)
            else:
                await self._send_pending(conn)
                await self._send_runs(conn)
            if not self.busy():
                return None
            async with trio.open_nursery() as nursery:
                if not isolated:
                    nursery.start_soon(self._follow_ups, conn, inbox)
                ended = await self._read_frames(conn)
                nursery.cancel_scope.cancel()
        self._deadline = None
        if deadline.cancelled_caught:
            if self.busy():
                return f"the agent took longer than {self.settings.turn_timeout:g}s"
            return None
        return ended if self.busy() else None

    def _arm(self, busy: bool) -> None:
        if self._deadline is None:
            return
        now = trio.current_time()
        if busy:
            self._deadline.deadline = now + self.settings.turn_timeout
        elif self._draining() or self._end_when_idle:
            self._deadline.deadline = now
        else:
            self._deadline.deadline = now + self.settings.idle_timeout

    async def _send_pending(self, conn: AgentConnection) -> bool:
        pending = await self.store.pending_input(self.folder, self.group.chat, after=self._sent_upto)
        if not pending or not any(is_triggered(self.group, m, self.settings.trigger) for m in pending):
            return False
        shown, unlisted = prompt_messages(self.group, pending)
        if await self._decide(shown) is not None:  # a plugin vetoed: seen, not answered
            self._sent_upto = pending[-1].id
            if not self._batches:
                await self.store.advance_cursor(self.folder, pending[-1].id)
            return False
        batch = self._next_batch
        self._next_batch += 1
        self._batches[batch] = pending[-1].id
        triggered = [m for m in pending if is_triggered(self.group, m, self.settings.trigger)]
        self._reply_to[batch] = triggered[-1].platform_id if triggered else None
        self._sent_upto = pending[-1].id
        self.view.turns += 1
        self._arm(busy=True)
        self._on_event("batch_sent", {"batch": batch, "first_message": pending[0].id, "count": len(pending)})
        prefix = self._decided[1].prefix() if self._plugins is not None and self._decided else ""
        await conn.send({"type": "input", "batch": batch, "prompt": prefix + format_prompt(shown, unlisted)})
        return True

    async def _decide(self, pending: list[Message]) -> str | None:
        """Whether this batch gets a turn: the veto reason, or None. A group over its spend cap gets
        none (its chat was told once, by the budgets, and no container is started for nothing);
        then the plugins' before_turn is asked (once per batch)."""
        if self._budgets is not None and self._budgets.admit(self.folder) is not None:
            log.info("group %s: spend cap reached; messages up to %d seen, not answered", self.folder, pending[-1].id)
            return "spend cap reached"
        if self._plugins is None:
            return None
        key = (pending[0].id, pending[-1].id)
        if self._decided is None or self._decided[0] != key:
            self._decided = (key, await self._plugins.before_turn(self.group, pending))
        return self._decided[1].veto  # type: ignore[no-any-return]

    async def _follow_ups(self, conn: AgentConnection, inbox: trio.MemoryReceiveChannel[Wake]) -> None:
        async for _wake in inbox:
            _drain_nowait(inbox)
            if self._draining():
                continue
            await self._send_pending(conn)
            await self._send_runs(conn)

    # -- scheduled task runs ---------------------------------------------------------------
    async def _send_runs(self, conn: AgentConnection) -> None:
        """Hand the queued `group`-mode runs to the live session. Queued isolated runs need a
        container of their own: this one then stops as soon as it is idle."""
        for run_id, task in await self.store.queued_runs(self.folder):
            if task.context_mode == "isolated":
                self._end_when_idle = True
                if not self.busy():
                    self._arm(busy=False)
                continue
            await self._start_run(conn, run_id, task)

    async def _start_run(self, conn: AgentConnection, run_id: int, task: Task) -> None:
        if not await self.store.start_run(run_id):
            return  # taken already (or ended)
        turn = TaskTurn(run_id, task)
        current = await self.store.task(task.id)
        if current is None or current.status in (TaskStatus.PAUSED, TaskStatus.CANCELLED):
            state = "deleted" if current is None else current.status.value
            await self._finish_run(turn, "skipped", error=f"the task was {state} before the run started")
            return
        turn.task = current
        if current.pre_script:
            script_id = f"p{run_id}"
            self._prescripts[script_id] = turn
            self._arm(busy=True)
            await conn.send(
                {
                    "type": "prescript",
                    "id": script_id,
                    "command": current.pre_script,
                    "timeout": self.settings.prescript_timeout,
                }
            )
            return
        await self._send_task_batch(conn, turn)

    async def _send_task_batch(self, conn: AgentConnection, turn: TaskTurn) -> None:
        batch = self._next_batch
        self._next_batch += 1
        turn.batch = batch
        self._tasks[batch] = turn
        self.view.turns += 1
        self._arm(busy=True)
        self._on_event("batch_sent", {"batch": batch, "task": turn.task.id})
        await conn.send({"type": "input", "batch": batch, "prompt": format_task_prompt(turn.task, turn.data)})

    async def _prescript_result(self, conn: AgentConnection, frame: dict[str, Any]) -> None:
        turn = self._prescripts.pop(str(frame.get("id")), None)
        if turn is None:
            log.warning("group %s: prescript_result for an unknown id %r", self.folder, frame.get("id"))
            return
        frame = {**frame, "timeout": frame.get("timeout", self.settings.prescript_timeout)}
        wake, data, error = interpret_prescript(frame)
        if error is not None:
            log.warning("group %s: task %s: %s", self.folder, turn.task.id, error)
            await self._finish_run(turn, "error", error=error)
        elif not wake:
            await self._finish_run(turn, "skipped", result="pre-script: wakeAgent false")
        else:
            turn.data = data
            await self._send_task_batch(conn, turn)
        if not self.busy():
            self._arm(busy=False)

    async def _finish_run(
        self, turn: TaskTurn, outcome: str, *, error: str | None = None, tokens: int | None = None, result: str | None = None
    ) -> None:
        await self.store.finish_run(turn.run_id, outcome, error=error, tokens=tokens, result=result)
        self._on_event("task_run_finished", {"outcome": outcome, "task": turn.task.id, "count": 1})

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
                chat = self.group.chat
                turn = self._tasks.get(batch) if isinstance(batch, int) else None
                if turn is None and self._isolated is not None:
                    turn = self._isolated  # an isolated container speaks only for its run
                if turn is not None:
                    chat = turn.task.chat
                    turn.outputs.append(text)
                for b, t in self._tasks.items():
                    if isinstance(batch, int) and b <= batch and t is not turn:
                        t.outputs.append("")  # merged into a later batch: it was answered
                if cursor_to is None:
                    # Output outside a live batch (e.g. late text, a task's answer): deliver it,
                    # move nothing.
                    await self.store.queue_message(self.folder, chat, text)
                else:
                    reply_to = self._reply_to.get(batch) if isinstance(batch, int) and turn is None else None
                    await self.store.commit_reply(self.folder, chat, text, cursor_to, reply_to=reply_to)
                    if batch not in batch_had_output:
                        batch_had_output.add(batch)
                        self._on_event("first_reply", {"batch": batch})
                self.view.replies += 1
                self.outbox_wake()
            elif kind == "result":
                batch = frame.get("batch")
                cursor_to = self._covered(batch, pop=True)
                session_id = frame.get("session_id")
                if isinstance(session_id, str) and session_id and self._isolated is None:
                    await self._save_session(session_id)
                await self._task_results(frame)
                if cursor_to is not None:
                    if frame.get("is_error") and batch not in batch_had_output and not self._over_budget():
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
                if not self.busy():
                    self._arm(busy=False)
            elif kind == "prescript_result":
                await self._prescript_result(conn, frame)
            elif kind == "session":
                session_id = frame.get("session_id")
                if isinstance(session_id, str) and session_id and self._isolated is None:
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

    async def _task_results(self, frame: dict[str, Any]) -> None:
        """A result for batch N ends every open task batch up to N (merged turns)."""
        batch = frame.get("batch")
        if not isinstance(batch, int) or isinstance(batch, bool):
            return
        for b in sorted(b for b in self._tasks if b <= batch):
            turn = self._tasks.pop(b)
            usage = frame.get("usage") if b == batch else None
            tokens = None
            if isinstance(usage, dict):
                tokens = sum(int(usage.get(k) or 0) for k in ("input_tokens", "output_tokens")) or None
            text = " ".join(o for o in turn.outputs if o).strip()
            if frame.get("is_error") and not turn.outputs:
                error = str(frame.get("error") or "the agent reported an error")
                await self._finish_run(turn, "error", error=error, tokens=tokens)
                await self.store.queue_message(
                    self.folder, turn.task.chat, f"⚠️ Scheduled task {turn.task.id} failed: {error}"
                )
                self.outbox_wake()
            else:
                await self._finish_run(turn, "ok", tokens=tokens, result=text[:500] or None)

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

    def _over_budget(self) -> bool:
        """The proxy refused this turn's model call for the spend cap: the budget notice already
        told the chat, so no second "could not answer" message."""
        return self._budgets is not None and self._budgets.blocked(self.folder) is not None

    async def _save_session(self, session_id: str) -> None:
        if session_id != self.view.session_id:
            self.view.session_id = session_id
            await self.store.set_session(self.folder, session_id)

    async def _turn_failed(self, outstanding: dict[int, int], reason: str, *, retry: bool = True) -> None:
        up_to = max(outstanding.values())
        self.view.last_turn_error = reason
        tries = self._failures.get(up_to, 0) + 1
        self._failures[up_to] = tries
        log.warning("group %s: turn failed (%s), try %d", self.folder, reason, tries)
        self._on_event("turn_failed", {"reason": reason, "try": tries})
        if tries < 2 and retry:
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

