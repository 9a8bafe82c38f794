"""Conversation: what the actor knows about its one live container, created when the container
starts and dropped when it ends (nothing of it outlives the container).

It holds the batches handed to the agent and not answered yet (batch -> the cursor they stand
for), whom each batch replies to, the scheduled runs open in it, and the deadline that stops the
container (a turn's timeout while busy, the idle timeout after; at once when idle while another
group waits for a container slot: an idle container never keeps a slot from a waiting turn).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio

from .records import Task


@attrs.define
class TaskTurn:
    """A scheduled task's run while this actor works on it."""

    run_id: int
    task: Task
    batch: int | None = None
    outputs: list[str] = attrs.field(factory=list)
    data: Any = None


@attrs.define
class Conversation:
    turn_timeout: float
    idle_timeout: float
    draining: Callable[[], bool] = lambda: False
    isolated: TaskTurn | None = None  # this container serves one isolated run
    # another group waits for a container slot: this container ends as soon as it is idle
    slot_wanted: Callable[[], bool] = lambda: False
    end_when_idle: bool = False  # stop as soon as nothing is open (an isolated run waits)
    sent_upto: int = 0  # the newest message id handed to the agent
    batches: dict[int, int] = attrs.field(factory=dict)  # open batch -> the cursor it stands for
    reply_to: dict[int, str | None] = attrs.field(factory=dict)  # batch -> platform id of its last trigger
    reply_thread: dict[int, str] = attrs.field(factory=dict)  # batch -> the thread of its last trigger
    tasks: dict[int, TaskTurn] = attrs.field(factory=dict)  # open task batches
    prescripts: dict[str, TaskTurn] = attrs.field(factory=dict)  # pre-scripts sent, result not back yet
    had_output: set[int | None] = attrs.field(factory=set)  # batches that said something
    deadline: trio.CancelScope | None = None
    idle_since: float | None = None  # trio time the container last became idle (None: busy, or ending)
    _next_batch: int = 1

    def __attrs_post_init__(self) -> None:
        self.end_when_idle = self.end_when_idle or self.isolated is not None

    def new_batch(self) -> int:
        batch = self._next_batch
        self._next_batch += 1
        return batch

    def busy(self) -> bool:
        """A batch or a task run is open in the container."""
        return bool(self.batches or self.tasks or self.prescripts)

    def arm(self, busy: bool) -> None:
        """Move the deadline: a turn's timeout from now while busy; else the idle timeout (now,
        when draining or when this container is to end once idle)."""
        if self.deadline is None:
            return
        now = trio.current_time()
        if busy:
            self.deadline.deadline = now + self.turn_timeout
            self.idle_since = None
        elif self.draining() or self.end_when_idle or self.slot_wanted():
            self.deadline.deadline = now
            self.idle_since = None
        else:
            self.deadline.deadline = now + self.idle_timeout
            if self.idle_since is None:
                self.idle_since = now

    def rearm_if_idle(self) -> None:
        if not self.busy():
            self.arm(busy=False)

    def stop_if_idle(self) -> bool:
        """End the container now when nothing is open in it: True when told to."""
        if self.deadline is None or self.busy():
            return False
        self.deadline.deadline = trio.current_time()
        self.end_when_idle = True
        self.idle_since = None
        return True

    def covered(self, batch: object, *, pop: bool) -> int | None:
        """The cursor position a frame for `batch` stands for. The runner may answer several
        queued batches in one go (it merges follow-ups that arrive mid-turn into the next query), so
        a frame for batch N covers every open batch up to N."""
        if not isinstance(batch, int) or isinstance(batch, bool):
            return None
        covered = [b for b in self.batches if b <= batch]
        if not covered:
            return None
        cursor_to = max(self.batches[b] for b in covered)
        if pop:
            for b in covered:
                del self.batches[b]
        return cursor_to

    def taken_runs(self) -> list[TaskTurn]:
        """The scheduled runs this container took and has not finished."""
        turns = {id(t): t for t in [*self.tasks.values(), *self.prescripts.values()]}
        return list(turns.values())
