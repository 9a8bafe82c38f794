"""Scheduled runs inside an agent's container: handing queued runs to the live session, their
pre-scripts, and recording how each run ended. The actor (ngb/actor.py) calls these; the per-container
state they touch lives in its Conversation (ngb/conversation.py)."""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable
from typing import Any

import attrs

from ..agent_link import AgentConnection
from ..conversation import Conversation, TaskTurn
from ..protocol import Input, Prescript, PrescriptResult, Result
from ..records import Task, TaskStatus
from ..store import Store

log = logging.getLogger(__name__)


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
    return (
        f"⚠️ {runs} interrupted by a restart ({ids}) and not repeated, since "
        f"{'it' if one else 'they'} may have partly run. `ngb tasks runs <id>` shows what happened; "
        "the schedule goes on."
    )


def interpret_prescript(frame: PrescriptResult) -> tuple[bool, Any, str | None]:
    """A prescript_result -> (wake the agent?, data, error). A script that failed to run, exited
    non-zero, timed out or did not print one JSON object with a boolean wakeAgent is an error (the
    run is recorded failed with that reason)."""
    if frame.error:
        return False, None, f"pre-script could not run: {frame.error}"
    if frame.timed_out:
        return (
            False,
            None,
            f"pre-script timed out after {'?' if frame.timeout is None else f'{frame.timeout:g}'}s",
        )
    stderr = frame.stderr.strip()[-500:]
    if frame.exit_code != 0:
        return (
            False,
            None,
            f"pre-script exited with status {frame.exit_code}" + (f": {stderr}" if stderr else ""),
        )
    stdout = frame.stdout.strip()
    if frame.truncated:
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
        return (
            False,
            None,
            f'pre-script must print JSON {{"wakeAgent": true|false, "data": ...}}, printed: {shown}',
        )
    return verdict["wakeAgent"], verdict.get("data"), None


@attrs.define(eq=False)
class TaskRuns:
    """One actor's scheduled runs: started, fed to the agent, and finished in the store."""

    store: Store
    folder: str
    prescript_timeout: float = attrs.field(kw_only=True)
    _on_event: Callable[[str, dict[str, Any]], None] = attrs.field(kw_only=True)
    _outbox_wake: Callable[[], None] = attrs.field(kw_only=True)
    _count_turn: Callable[[], None] = attrs.field(kw_only=True)

    async def interrupt_earlier(self, chat: str) -> None:
        """A run handed to an agent of an earlier actor (or daemon) is over: never run it twice."""
        interrupted = await self.store.interrupt_runs(self.folder, (chat, interrupted_notice))
        if interrupted:
            log.warning(
                "group %s: %d task run(s) interrupted by a restart recorded as failed",
                self.folder,
                len(interrupted),
            )
            self._on_event("task_run_finished", {"outcome": "error", "count": len(interrupted)})
            self._outbox_wake()

    async def send_queued(self, conv: Conversation, conn: AgentConnection) -> None:
        """Hand the queued `group`-mode runs to the live session. Queued isolated runs need a
        container of their own: this one then stops as soon as it is idle."""
        for run_id, task in await self.store.queued_runs(self.folder):
            if task.context_mode == "isolated":
                conv.end_when_idle = True
                conv.rearm_if_idle()
                continue
            await self.start(conv, conn, run_id, task)

    async def start(self, conv: Conversation, conn: AgentConnection, run_id: int, task: Task) -> None:
        if not await self.store.start_run(run_id):
            return  # taken already (or ended)
        turn = TaskTurn(run_id, task)
        current = await self.store.task(task.id)
        if current is None or current.status in (TaskStatus.PAUSED, TaskStatus.CANCELLED):
            state = "deleted" if current is None else current.status.value
            await self.finish(turn, "skipped", error=f"the task was {state} before the run started")
            return
        turn.task = current
        if current.pre_script:
            script_id = f"p{run_id}"
            conv.prescripts[script_id] = turn
            conv.arm(busy=True)
            await conn.send(
                Prescript(id=script_id, command=current.pre_script, timeout=self.prescript_timeout)
            )
            return
        await self._send_batch(conv, conn, turn)

    async def _send_batch(self, conv: Conversation, conn: AgentConnection, turn: TaskTurn) -> None:
        batch = conv.new_batch()
        turn.batch = batch
        conv.tasks[batch] = turn
        self._count_turn()
        conv.arm(busy=True)
        self._on_event("batch_sent", {"batch": batch, "task": turn.task.id})
        await conn.send(Input(batch=batch, prompt=format_task_prompt(turn.task, turn.data)))

    async def prescript_done(self, conv: Conversation, conn: AgentConnection, frame: PrescriptResult) -> None:
        turn = conv.prescripts.pop(frame.id, None)
        if turn is None:
            log.warning("group %s: prescript_result for an unknown id %r", self.folder, frame.id)
            return
        if frame.timeout is None:
            frame = attrs.evolve(frame, timeout=self.prescript_timeout)
        wake, data, error = interpret_prescript(frame)
        if error is not None:
            log.warning("group %s: task %s: %s", self.folder, turn.task.id, error)
            await self.finish(turn, "error", error=error)
        elif not wake:
            await self.finish(turn, "skipped", result="pre-script: wakeAgent false")
        else:
            turn.data = data
            await self._send_batch(conv, conn, turn)
        conv.rearm_if_idle()

    def speaker(self, conv: Conversation, batch: int | None, text: str) -> TaskTurn | None:
        """The run an output frame for `batch` belongs to (None: the chat's own batch); notes the
        text as the run's, and marks earlier runs merged into this batch as answered."""
        turn = conv.tasks.get(batch) if batch is not None else None
        if turn is None and conv.isolated is not None:
            turn = conv.isolated  # an isolated container speaks only for its run
        if turn is not None:
            turn.outputs.append(text)
        for b, t in conv.tasks.items():
            if batch is not None and b <= batch and t is not turn:
                t.outputs.append("")  # merged into a later batch: it was answered
        return turn

    async def results(self, conv: Conversation, frame: Result) -> None:
        """A result for batch N ends every open task batch up to N (merged turns)."""
        batch = frame.batch
        if batch is None:
            return
        for b in sorted(b for b in conv.tasks if b <= batch):
            turn = conv.tasks.pop(b)
            usage = frame.usage if b == batch else None
            tokens = None
            if usage is not None:
                tokens = sum(int(usage.get(k) or 0) for k in ("input_tokens", "output_tokens")) or None
            text = " ".join(o for o in turn.outputs if o).strip()
            if frame.is_error and not turn.outputs:
                error = frame.error or "the agent reported an error"
                await self.finish(turn, "error", error=error, tokens=tokens)
                await self.store.queue_message(
                    self.folder, turn.task.chat, f"⚠️ Scheduled task {turn.task.id} failed: {error}"
                )
                self._outbox_wake()
            else:
                await self.finish(turn, "ok", tokens=tokens, result=text[:500] or None)

    async def fail_unstarted(self, isolated: TaskTurn | None, reason: str) -> None:
        """The container never took a run: the runs this session was for fail now (a scheduled run
        is not retried: the next slot is its retry)."""
        if isolated is not None:
            candidates = [(isolated.run_id, isolated.task)]
        else:
            candidates = [
                q for q in await self.store.queued_runs(self.folder) if q[1].context_mode != "isolated"
            ]
        for run_id, task in candidates:
            if await self.store.start_run(run_id):
                await self.finish(TaskTurn(run_id, task), "error", error=reason)

    async def finish(
        self,
        turn: TaskTurn,
        outcome: str,
        *,
        error: str | None = None,
        tokens: int | None = None,
        result: str | None = None,
    ) -> None:
        await self.store.finish_run(turn.run_id, outcome, error=error, tokens=tokens, result=result)
        self._on_event("task_run_finished", {"outcome": outcome, "task": turn.task.id, "count": 1})
