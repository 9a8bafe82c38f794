"""Scheduled tasks over HTTP: CRUD, pause/resume, the run log and the CLI's change signal.

    GET    /api/tasks?group=&status=          tasks (with run counts by outcome)
    POST   /api/tasks                         TaskCreate -> 201 Task
    GET    /api/tasks/<id>                    one task
    PATCH  /api/tasks/<id>                    TaskUpdate (prompt, schedule, timezone, context mode)
    DELETE /api/tasks/<id>                    cancel it (runs are kept)
    POST   /api/tasks/<id>/pause | /resume    -> Task
    GET    /api/tasks/<id>/runs?before=&limit=  newest first; `next_before` pages back
    POST   /api/tasks/changed                 tasks were changed in the database behind the daemon's
                                              back (the `ngb tasks` CLI writes the store directly):
                                              re-plan the schedule now

The rules (and the operator's rights) are ngb/tasks/service.py's; a TaskError answers its status
with its message. Every change calls the tools' `on_tasks_changed` hook (the scheduler's poke).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from quart_trio import QuartTrio

from ..records import TaskStatus, format_time, to_json
from ..tasks.service import Caller, NewTask, TaskChange, TaskError, TaskService
from . import queries
from .common import MAX_PAGE, ApiError, int_arg, json_body, str_arg

if TYPE_CHECKING:
    from .backend import WebBackend

T = TypeVar("T")
OPERATOR = Caller.operator("api")


@attrs.frozen(kw_only=True)
class TaskCreate:
    """The body of POST /api/tasks: the fields of NewTask that the API accepts, by the same names."""

    group: str  # the owning group's folder
    prompt: str
    schedule_kind: str
    schedule_value: str
    timezone: str = "UTC"
    context_mode: str = "group"


@attrs.frozen(kw_only=True)
class TaskUpdate:
    """The body of PATCH /api/tasks/<id>: the fields of TaskChange that the API accepts, by the same names."""

    prompt: str | None = None
    schedule_kind: str | None = None
    schedule_value: str | None = None
    timezone: str | None = None
    context_mode: str | None = None


async def _answer(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except TaskError as exc:
        raise ApiError(exc.status, str(exc)) from None


def register(app: QuartTrio, daemon: WebBackend) -> list[str]:
    """Add the task routes. Returns the operations added, e.g. "POST /api/tasks"."""
    added: list[str] = []

    def route(method: str, rule: str) -> Any:
        def wrap(fn: Any) -> Any:
            app.add_url_rule(rule, f"api_tasks_{fn.__name__}", fn, methods=[method])
            added.append(f"{method} {rule}")
            return fn

        return wrap

    def service() -> TaskService:
        ctx = daemon.tools.ctx  # read at each request: the hook may be replaced
        return TaskService(
            daemon.store, daemon.registry, min_interval=ctx.min_interval, on_changed=ctx.on_tasks_changed
        )

    @route("POST", "/api/tasks/changed")
    async def tasks_changed() -> Any:
        daemon.scheduler.poke()
        return {"ok": True, "next_due": daemon.scheduler.next_due and daemon.scheduler.next_due.isoformat()}

    @route("GET", "/api/tasks")
    async def list_tasks() -> Any:
        group = str_arg("group", max_len=64)
        status = str_arg("status", max_len=20)
        if status is not None and status not in {s.value for s in TaskStatus}:
            raise ApiError(400, "'status' must be one of " + ", ".join(s.value for s in TaskStatus))
        tasks = await service().list_for(OPERATOR, group)
        counts = await queries.task_run_counts(daemon.store)
        next_due = daemon.scheduler.next_due
        return {
            "tasks": [
                {**to_json(t), "runs": counts.get(t.id, {})}
                for t in tasks
                if status is None or t.status.value == status
            ],
            "next_due": format_time(next_due) if next_due is not None else None,
        }

    @route("POST", "/api/tasks")
    async def create_task() -> Any:
        body, _ = await json_body(TaskCreate)
        new = NewTask(**attrs.asdict(body, recurse=False))  # no pre_script over HTTP: TaskCreate has none
        task = await _answer(lambda: service().create(OPERATOR, new))
        return to_json(task), 201

    @route("GET", "/api/tasks/<task_id>")
    async def get_task(task_id: str) -> Any:
        return to_json(await _answer(lambda: service().get(OPERATOR, task_id)))

    @route("PATCH", "/api/tasks/<task_id>")
    async def update_task(task_id: str) -> Any:
        tasks = service()
        await _answer(lambda: tasks.get(OPERATOR, task_id))  # 404 before the body's 400
        body, _ = await json_body(TaskUpdate)
        change = TaskChange(**attrs.asdict(body, recurse=False))  # pre_script is kept: TaskUpdate has none
        task, changed = await _answer(lambda: tasks.update(OPERATOR, task_id, change))
        if not changed:
            raise ApiError(
                400, "nothing to change: send prompt, schedule_kind, schedule_value, timezone or context_mode"
            )
        return to_json(task)

    @route("POST", "/api/tasks/<task_id>/pause")
    async def pause_task(task_id: str) -> Any:
        return to_json(await _answer(lambda: service().pause(OPERATOR, task_id)))

    @route("POST", "/api/tasks/<task_id>/resume")
    async def resume_task(task_id: str) -> Any:
        return to_json(await _answer(lambda: service().resume(OPERATOR, task_id)))

    @route("DELETE", "/api/tasks/<task_id>")
    async def cancel_task(task_id: str) -> Any:
        return to_json(await _answer(lambda: service().cancel(OPERATOR, task_id)))

    @route("GET", "/api/tasks/<task_id>/runs")
    async def task_runs(task_id: str) -> Any:
        await _answer(lambda: service().get(OPERATOR, task_id))
        before = int_arg("before", 0) or None
        limit = int_arg("limit", 50, lo=1, hi=MAX_PAGE)
        runs, more = await queries.task_runs_page(daemon.store, task_id, before=before, limit=limit)
        return {
            "task_id": task_id,
            "runs": [to_json(r) for r in runs],
            "next_before": runs[-1].id if more and runs else None,
        }

    return added
