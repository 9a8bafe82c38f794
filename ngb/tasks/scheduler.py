"""The scheduler: one trio task that hands due tasks to their group's actor.

It never polls. It sleeps until the earliest next_run among the active tasks (one index lookup),
or until `poke()` says the tasks changed (a tool call, the CLI through the API). When it wakes it
*claims* every due task in one SQLite transaction: the TaskRun row for the slot is inserted
('queued') and the task's next_run moves past now (a once task completes). Only then is the owning
actor woken; the actor finds the queued run in the store, so a wake that is lost or coalesced loses
nothing. Exactly once across kill -9:

- killed before the claim commits: nothing happened; the task is still due and is claimed after
  the restart (catch-up);
- killed after the claim, before the actor handed the run to the agent: the run is still 'queued'
  and the actor runs it after the restart, once;
- killed after the run was handed to the agent ('running'): the agent may have acted, so the run is
  never repeated; at start the actor records it as failed ('interrupted').

Catch-up: next_run always moves to the first scheduled time after *now*, so a task that missed
several slots while the daemon was down runs once for all of them, then resumes its schedule.

A sleep never exceeds `max_sleep` (60 s): the wait uses trio's monotonic clock, which stops while
the machine is suspended and does not follow wall-clock steps; the bounded sleep resynchronises
with the wall clock and picks up edits made to the database behind the daemon's back. That is one
indexed query a minute: no measurable CPU (bench/bench_scheduler.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import trio

from ..records import Task, utcnow
from ..store import Store
from .schedules import next_after

log = logging.getLogger(__name__)


def task_next_after(task: Task, slot: datetime, now: datetime) -> datetime | None:
    return next_after(task.schedule_kind, task.schedule_value, task.timezone, slot, now)


class Scheduler:
    def __init__(
        self,
        store: Store,
        dispatch: Callable[[str], bool],
        *,
        now: Callable[[], datetime] = utcnow,
        max_sleep: float = 60.0,
        batch: int = 500,
        on_claimed: Callable[[Task, int, float], None] | None = None,
    ) -> None:
        """dispatch(folder) wakes that group's actor (False: the group has no actor).
        on_claimed(task, run_id, lateness) is told each claim and how late it was (seconds)."""
        self.store = store
        self.dispatch = dispatch
        self.now = now
        self.max_sleep = max_sleep
        self.batch = batch
        self._on_claimed = on_claimed or (lambda *_: None)
        self._changed = trio.Event()
        self.next_due: datetime | None = None
        self.claimed = 0
        self.wakeups = 0
        self.running = False

    def poke(self) -> None:
        """Tasks changed: re-read the earliest due time now."""
        self._changed.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        task_status.started()
        try:
            while True:
                await self.tick()
                await self._sleep()
        finally:
            self.running = False

    async def tick(self) -> int:
        """Claim and dispatch everything due now. Returns how many runs were claimed."""
        self.wakeups += 1
        self._changed = trio.Event()  # before reading: a poke during the read is not lost
        total = 0
        while True:
            now = self.now()
            claimed = await self.store.claim_due(now, task_next_after, limit=self.batch)
            folders: dict[str, list[tuple[Task, int]]] = {}
            for task, run_id, slot in claimed:
                self._on_claimed(task, run_id, (now - slot).total_seconds())
                folders.setdefault(task.folder, []).append((task, run_id))
            for folder, runs in folders.items():
                if not self.dispatch(folder):
                    for task, run_id in runs:
                        log.warning("scheduler: task %s belongs to group %s, which is not registered", task.id, folder)
                        await self.store.finish_run(run_id, "error", error=f"group {folder!r} is not registered")
            total += len(claimed)
            self.claimed += len(claimed)
            if len(claimed) < self.batch:
                break
        self.next_due = await self.store.next_due()
        return total

    async def _sleep(self) -> None:
        delay = self.max_sleep
        if self.next_due is not None:
            delay = min(delay, (self.next_due - self.now()).total_seconds() + 0.001)
        if delay <= 0:
            return
        with trio.move_on_after(delay):
            await self._changed.wait()

