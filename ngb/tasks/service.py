"""The one place a scheduled task is created, changed or listed, with the caller's rights.

The CLI (as the operator), the REST API (as the operator) and the agent's tools (as the calling
group) all come here; each maps a `TaskError` to its own output (a one-line message and an exit
code, an HTTP status with a JSON error, a tool error result).

Rights: the operator may act on any group's tasks; a group's agent only on its own group's,
except the main group's, which may act on any group's.

Rules (docs/tasks.md):
- a schedule is checked and its first run computed by `schedules.validate`;
- resuming a paused task keeps its schedule's grid: the slots missed while paused are dropped and
  the task goes to its next slot (`schedules.resume_next`), whoever resumes it;
- a cancelled or completed task cannot be paused, resumed or cancelled (409); a cancelled one
  cannot be changed; a new schedule revives a completed (once) task.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import attrs

from ..records import Group, ScheduleKind, Task, TaskStatus, utcnow
from .schedules import ScheduleError, resume_next, validate

log = logging.getLogger(__name__)

MAX_PROMPT = 16000
MAX_SCHEDULE = 200  # characters of a schedule's value
MAX_ZONE = 64
MAX_SCRIPT = 4000
MAX_TASK_ID = 100
CONTEXT_MODES = ("group", "isolated")


class TaskError(ValueError):
    """A task change refused. `status` says why, as the HTTP status the API answers: 400 invalid,
    403 not allowed to this caller, 404 no such task or group (for this caller), 409 not possible
    in the task's state."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class GroupLookup(Protocol):
    """The registered groups (ngb.groups.GroupRegistry)."""

    def get(self, chat: str) -> Group | None: ...

    def by_folder(self, folder: str) -> Group | None: ...


@attrs.frozen
class Caller:
    """Who changes tasks: the operator (group None: any group), or a group's agent."""

    created_by: str  # recorded on the tasks it creates: "cli", "api", "agent:<folder>"
    group: Group | None = None

    @classmethod
    def operator(cls, via: str) -> Caller:
        return cls(created_by=via)

    @classmethod
    def agent(cls, group: Group) -> Caller:
        return cls(created_by=f"agent:{group.folder}", group=group)

    def may_act_on(self, folder: str) -> bool:
        return self.group is None or self.group.is_main or self.group.folder == folder


@attrs.frozen(kw_only=True)
class NewTask:
    prompt: str
    schedule_kind: str
    schedule_value: str
    timezone: str = "UTC"
    context_mode: str = "group"
    pre_script: str | None = None
    group: str | None = None  # the owner's folder or chat; None: the calling group's


KEEP: Any = object()  # TaskChange.pre_script: leave it as it is


@attrs.frozen(kw_only=True)
class TaskChange:
    """What to change in a task; None (pre_script: left out) keeps the field."""

    prompt: str | None = None
    context_mode: str | None = None
    pre_script: Any = KEEP  # str, or None to remove it
    schedule_kind: str | None = None
    schedule_value: str | None = None
    timezone: str | None = None


def _text(name: str, value: str, limit: int, *, allow_empty: bool = False) -> None:
    if not allow_empty and not value.strip():
        raise TaskError(f"'{name}' must not be empty")
    if len(value) > limit:
        raise TaskError(f"'{name}' is longer than {limit} characters")


def _mode(mode: str) -> None:
    if mode not in CONTEXT_MODES:
        raise TaskError("context_mode must be 'group' or 'isolated'")


@attrs.define(eq=False)
class TaskService:
    store: Any  # ngb.store.Store
    groups: GroupLookup
    min_interval: float = attrs.field(default=60.0, kw_only=True)
    # called after every change (the scheduler re-reads the due times)
    on_changed: Callable[[], None] = attrs.field(default=lambda: None, kw_only=True)
    now: Callable[[], datetime] = attrs.field(default=utcnow, kw_only=True)

    def first_run(self, kind: str, value: str, tz: str) -> datetime:
        _text("schedule_value", value, MAX_SCHEDULE)
        _text("timezone", tz, MAX_ZONE)
        try:
            return validate(kind, value, tz, min_interval=self.min_interval, now=self.now())
        except ScheduleError as exc:
            raise TaskError(str(exc)) from None

    def owner(self, caller: Caller, name: str | None) -> Group:
        """The group a new task belongs to: `name` (a folder or a chat), or the caller's own."""
        own = caller.group
        if own is not None and (name is None or name in (own.chat, own.folder)):
            return own
        if own is not None and not own.is_main:
            raise TaskError("only the main group may schedule tasks for another chat", 403)
        group = None if name is None else self.groups.get(name) or self.groups.by_folder(name)
        if group is None:
            raise TaskError(f"no group {name!r} (give its folder or chat; see `ngb groups list`)", 404)
        return group

    async def create(self, caller: Caller, new: NewTask) -> Task:
        _text("prompt", new.prompt, MAX_PROMPT)
        _mode(new.context_mode)
        if new.pre_script is not None:
            _text("pre_script", new.pre_script, MAX_SCRIPT, allow_empty=True)
        group = self.owner(caller, new.group)
        first = self.first_run(new.schedule_kind, new.schedule_value, new.timezone)
        task = Task(
            id=f"task-{secrets.token_hex(4)}",
            folder=group.folder,
            chat=group.chat,
            prompt=new.prompt,
            schedule_kind=ScheduleKind(new.schedule_kind),
            schedule_value=new.schedule_value,
            timezone=new.timezone,
            context_mode=new.context_mode,
            next_run=first,
            pre_script=new.pre_script or None,
            created_by=caller.created_by,
        )
        await self.store.add_task(task)
        self.on_changed()
        log.info("task %s created for %s by %s", task.id, group.folder, caller.created_by)
        return task

    async def get(self, caller: Caller, task_id: str) -> Task:
        """The task, if the caller may see it (else 404, as if there were none)."""
        if len(task_id) > MAX_TASK_ID:
            raise TaskError(f"'task_id' is longer than {MAX_TASK_ID} characters")
        task = await self.store.task(task_id)
        if task is None or not caller.may_act_on(task.folder):
            where = "" if caller.group is None else " in this group"
            raise TaskError(f"no task {task_id!r}{where}", 404)
        return task

    async def list_for(self, caller: Caller, folder: str | None = None) -> list[Task]:
        """The caller's tasks (a non-main group sees only its own), or one group's."""
        if caller.group is not None and not caller.group.is_main:
            folder = caller.group.folder
        tasks: list[Task] = await self.store.tasks(folder)
        return tasks

    async def update(self, caller: Caller, task_id: str, change: TaskChange) -> tuple[Task, list[str]]:
        """Change a task; returns it and the names of the fields that changed (maybe none)."""
        task = await self.get(caller, task_id)
        if task.status is TaskStatus.CANCELLED:
            raise TaskError(f"task {task.id} is cancelled", 409)
        changes: dict[str, Any] = {}
        if change.prompt is not None:
            _text("prompt", change.prompt, MAX_PROMPT)
            changes["prompt"] = change.prompt
        if change.context_mode is not None:
            _mode(change.context_mode)
            changes["context_mode"] = change.context_mode
        if change.pre_script is not KEEP:
            if change.pre_script is not None:
                _text("pre_script", change.pre_script, MAX_SCRIPT, allow_empty=True)
            changes["pre_script"] = change.pre_script or None
        kind = change.schedule_kind or task.schedule_kind.value
        value = change.schedule_value or task.schedule_value
        tz = change.timezone or task.timezone
        if (kind, value, tz) != (task.schedule_kind.value, task.schedule_value, task.timezone):
            changes["next_run"] = self.first_run(kind, value, tz)
            changes.update(schedule_kind=ScheduleKind(kind), schedule_value=value, timezone=tz)
            if task.status is TaskStatus.COMPLETED:
                changes["status"] = TaskStatus.ACTIVE  # a new schedule revives a finished once task
        if not changes:
            return task, []
        updated = await self.store.patch_task(task.id, changes)
        if updated is None:
            raise TaskError(f"no task {task.id!r}", 404)
        self.on_changed()
        return updated, sorted(changes)

    async def set_status(self, caller: Caller, task_id: str, status: TaskStatus) -> Task:
        """Pause, resume or cancel. Resuming a paused task keeps its schedule's grid and drops the
        slots missed while paused (schedules.resume_next)."""
        task = await self.get(caller, task_id)
        if task.status in (TaskStatus.CANCELLED, TaskStatus.COMPLETED):
            raise TaskError(f"task {task.id} is {task.status.value}", 409)
        changes: dict[str, Any] = {"status": status}
        if status is TaskStatus.ACTIVE and task.status is TaskStatus.PAUSED:
            changes["next_run"] = resume_next(
                task.schedule_kind, task.schedule_value, task.timezone, task.next_run, self.now()
            )
        updated = await self.store.patch_task(task.id, changes)
        if updated is None:
            raise TaskError(f"no task {task.id!r}", 404)
        self.on_changed()
        log.info("task %s: %s by %s", task.id, status.value, caller.created_by)
        return updated

    async def pause(self, caller: Caller, task_id: str) -> Task:
        return await self.set_status(caller, task_id, TaskStatus.PAUSED)

    async def resume(self, caller: Caller, task_id: str) -> Task:
        return await self.set_status(caller, task_id, TaskStatus.ACTIVE)

    async def cancel(self, caller: Caller, task_id: str) -> Task:
        return await self.set_status(caller, task_id, TaskStatus.CANCELLED)
