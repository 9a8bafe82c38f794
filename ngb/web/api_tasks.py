"""Scheduled tasks: CRUD, pause/resume and the run log.

    GET    /api/tasks?group=&status=          tasks (with run counts by outcome)
    POST   /api/tasks                         TaskCreate -> 201 Task
    GET    /api/tasks/<id>                    one task
    PATCH  /api/tasks/<id>                    TaskUpdate (prompt, schedule, timezone, context mode)
    DELETE /api/tasks/<id>                    cancel it (runs are kept)
    POST   /api/tasks/<id>/pause | /resume    -> Task
    GET    /api/tasks/<id>/runs?before=&limit=  newest first; `next_before` pages back

Every change calls the scheduler's `on_tasks_changed` hook so it re-reads the due times at once.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

import attrs
from quart_trio import QuartTrio

from ..records import ScheduleKind, Task, TaskStatus, format_time, to_json, utcnow
from ..schedules import ScheduleError, validate
from . import queries
from .common import MAX_PAGE, ApiError, check_text, frozen, int_arg, json_body, str_arg

if TYPE_CHECKING:
    from ..daemon import Daemon

log = logging.getLogger(__name__)

MAX_PROMPT = 16000
CONTEXT_MODES = ("group", "isolated")


@frozen
class TaskCreate:
    group: str  # the owning group's folder
    prompt: str
    schedule_kind: str
    schedule_value: str
    timezone: str = "UTC"
    context_mode: str = "group"


@frozen
class TaskUpdate:
    prompt: str | None = None
    schedule_kind: str | None = None
    schedule_value: str | None = None
    timezone: str | None = None
    context_mode: str | None = None


def _taken(app: QuartTrio, rule: str, method: str) -> bool:
    return any(r.rule == rule and method in (r.methods or ()) for r in app.url_map.iter_rules())


def register(app: QuartTrio, daemon: Daemon) -> list[str]:
    """Add the task routes the app does not serve yet (a tasks_api module registered first
    wins for the routes it has). Returns the operations added, e.g. "POST /api/tasks"."""
    added: list[str] = []

    def route(method: str, rule: str) -> Any:
        def wrap(fn: Any) -> Any:
            if not _taken(app, rule, method):
                app.add_url_rule(rule, f"api_tasks_{fn.__name__}", fn, methods=[method])
                added.append(f"{method} {rule}")
            return fn

        return wrap

    def min_interval() -> float:
        return float(getattr(daemon.tools.ctx, "min_interval", 60.0))

    def changed() -> None:
        hook = getattr(daemon.tools.ctx, "on_tasks_changed", None)
        if hook is not None:
            hook()

    def first_run(kind: str, value: str, tz: str) -> Any:
        try:
            return validate(kind, value, tz, min_interval=min_interval(), now=utcnow())
        except ScheduleError as exc:
            raise ApiError(400, str(exc)) from None

    def check_mode(mode: str) -> None:
        if mode not in CONTEXT_MODES:
            raise ApiError(400, "'context_mode' must be 'group' or 'isolated'")

    async def find(task_id: str) -> Task:
        if len(task_id) > 100:
            raise ApiError(400, "task ids are at most 100 characters")
        task = await daemon.store.task(task_id)
        if task is None:
            raise ApiError(404, f"no task {task_id!r}")
        return task

    @route("GET", "/api/tasks")
    async def list_tasks() -> Any:
        group = str_arg("group", max_len=64)
        status = str_arg("status", max_len=20)
        if status is not None and status not in {s.value for s in TaskStatus}:
            raise ApiError(400, "'status' must be one of " + ", ".join(s.value for s in TaskStatus))
        tasks = await daemon.store.tasks(group)
        counts = await queries.task_run_counts(daemon.store)
        scheduler = getattr(daemon, "scheduler", None)
        next_due = getattr(scheduler, "next_due", None)
        return {
            "tasks": [{**to_json(t), "runs": counts.get(t.id, {})} for t in tasks if status is None or t.status.value == status],
            "next_due": format_time(next_due) if next_due is not None else None,
        }

    @route("POST", "/api/tasks")
    async def create_task() -> Any:
        body, _ = await json_body(TaskCreate)
        check_text("prompt", body.prompt, max_len=MAX_PROMPT)
        check_text("schedule_value", body.schedule_value, max_len=200)
        check_text("timezone", body.timezone, max_len=64)
        check_mode(body.context_mode)
        group = daemon.registry.by_folder(body.group)
        if group is None:
            raise ApiError(404, f"no group with folder {body.group!r}")
        first = first_run(body.schedule_kind, body.schedule_value, body.timezone)
        task = Task(
            id=f"task-{secrets.token_hex(4)}",
            folder=group.folder,
            chat=group.chat,
            prompt=body.prompt,
            schedule_kind=ScheduleKind(body.schedule_kind),
            schedule_value=body.schedule_value,
            timezone=body.timezone,
            context_mode=body.context_mode,
            next_run=first,
            created_by="api",
        )
        await daemon.store.add_task(task)
        changed()
        log.info("task %s created for %s over the API", task.id, group.folder)
        return to_json(task), 201

    @route("GET", "/api/tasks/<task_id>")
    async def get_task(task_id: str) -> Any:
        return to_json(await find(task_id))

    @route("PATCH", "/api/tasks/<task_id>")
    async def update_task(task_id: str) -> Any:
        task = await find(task_id)
        body, raw = await json_body(TaskUpdate)
        if task.status in (TaskStatus.CANCELLED, TaskStatus.COMPLETED):
            raise ApiError(409, f"task {task.id} is {task.status.value}")
        changes: dict[str, Any] = {}
        if raw.get("prompt") is not None:
            check_text("prompt", body.prompt, max_len=MAX_PROMPT)
            changes["prompt"] = body.prompt
        if raw.get("context_mode") is not None:
            assert body.context_mode is not None
            check_mode(body.context_mode)
            changes["context_mode"] = body.context_mode
        kind = body.schedule_kind or task.schedule_kind.value
        value = body.schedule_value or task.schedule_value
        tz = body.timezone or task.timezone
        check_text("schedule_value", value, max_len=200)
        check_text("timezone", tz, max_len=64)
        if (kind, value, tz) != (task.schedule_kind.value, task.schedule_value, task.timezone):
            changes.update(
                next_run=first_run(kind, value, tz), schedule_kind=ScheduleKind(kind), schedule_value=value, timezone=tz
            )
        if not changes:
            raise ApiError(400, "nothing to change: send prompt, schedule_kind, schedule_value, timezone or context_mode")
        new = attrs.evolve(task, **changes)
        await daemon.store.update_task(new)
        changed()
        return to_json(new)

    async def set_status(task_id: str, status: TaskStatus) -> Any:
        task = await find(task_id)
        if task.status in (TaskStatus.CANCELLED, TaskStatus.COMPLETED):
            raise ApiError(409, f"task {task.id} is {task.status.value}")
        changes: dict[str, Any] = {"status": status}
        if status is TaskStatus.ACTIVE and task.schedule_kind is not ScheduleKind.ONCE:
            if task.next_run is None or task.next_run < utcnow():
                # Paused through its due time: run at the next slot, not in a burst of missed ones.
                changes["next_run"] = first_run(task.schedule_kind.value, task.schedule_value, task.timezone)
        new = attrs.evolve(task, **changes)
        await daemon.store.update_task(new)
        changed()
        log.info("task %s: %s over the API", task.id, status.value)
        return to_json(new)

    @route("POST", "/api/tasks/<task_id>/pause")
    async def pause_task(task_id: str) -> Any:
        return await set_status(task_id, TaskStatus.PAUSED)

    @route("POST", "/api/tasks/<task_id>/resume")
    async def resume_task(task_id: str) -> Any:
        return await set_status(task_id, TaskStatus.ACTIVE)

    @route("DELETE", "/api/tasks/<task_id>")
    async def cancel_task(task_id: str) -> Any:
        return await set_status(task_id, TaskStatus.CANCELLED)

    @route("GET", "/api/tasks/<task_id>/runs")
    async def task_runs(task_id: str) -> Any:
        await find(task_id)
        before = int_arg("before", 0) or None
        limit = int_arg("limit", 50, lo=1, hi=MAX_PAGE)
        runs, more = await queries.task_runs_page(daemon.store, task_id, before=before, limit=limit)
        return {"task_id": task_id, "runs": [to_json(r) for r in runs], "next_before": runs[-1].id if more and runs else None}

    return added
