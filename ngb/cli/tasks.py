"""`ngb tasks`: list, add, pause, resume and cancel scheduled tasks, and show their runs.

It works on the state directly, as the operator, through the one task service
(ngb/tasks/service.py); a running daemon is then told that the tasks changed."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx

from ..config import Config
from ..records import Task, TaskStatus, format_time, to_json
from ..tasks.service import Caller, NewTask, TaskError, TaskService
from .support import ApiRefused, daemon_client, fail, with_store

OPERATOR = Caller.operator("cli")
STATUS_OF = {"pause": TaskStatus.PAUSED, "resume": TaskStatus.ACTIVE, "cancel": TaskStatus.CANCELLED}


def add_task_commands(sub: Any) -> None:
    """Register `ngb tasks ...` on the `ngb` subparsers."""
    tasks = sub.add_parser("tasks", help="scheduled tasks: list, add, pause, resume, cancel, runs")
    tsub = tasks.add_subparsers(dest="tasks_cmd", required=True)
    tl = tsub.add_parser("list")
    tl.add_argument("--group", help="only this group's folder")
    tl.add_argument("--json", action="store_true")
    ta = tsub.add_parser("add", help="schedule a task for a group")
    ta.add_argument("group", help="the group's folder (or chat)")
    when = ta.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='cron expression, e.g. "0 9 * * 1-5" (in --tz)')
    when.add_argument("--every", help="interval: 30m, 2h, 1d, or seconds")
    when.add_argument("--at", help="once, at this local time: 2026-12-01T18:00 (in --tz)")
    ta.add_argument("--tz", default=None, help="IANA time zone, e.g. Europe/Berlin (default UTC)")
    ta.add_argument("--prompt", required=True, help="what the agent does when the task runs")
    ta.add_argument(
        "--isolated", action="store_true", help="run in a fresh session, not the group's conversation"
    )
    ta.add_argument(
        "--pre-script", dest="pre_script", help='shell command printing {"wakeAgent": bool, "data": ...}'
    )
    ta.add_argument("--min-interval", dest="min_interval", type=float, default=None, help=argparse.SUPPRESS)
    for name in STATUS_OF:
        tsub.add_parser(name).add_argument("task_id")
    tr = tsub.add_parser("runs", help="the run log of a task, newest first")
    tr.add_argument("task_id")
    tr.add_argument("--limit", type=int, default=20)
    tr.add_argument("--json", action="store_true")
    tasks.set_defaults(fn=cmd_tasks)


def task_line(t: Task) -> str:
    nxt = format_time(t.next_run)[:19] if t.next_run else "-"
    flags = "".join(
        [" isolated" if t.context_mode == "isolated" else "", " pre-script" if t.pre_script else ""]
    )
    schedule = f"{t.schedule_kind.value} {t.schedule_value}" + (
        f" ({t.timezone})" if t.timezone != "UTC" else ""
    )
    return f"{t.id}  {t.folder:<12} {t.status.value:<9} {schedule:<30} next={nxt}{flags}  {t.prompt[:50]!r}"


def poke_scheduler(config: Config) -> None:
    """Tell a running daemon that tasks changed (it would notice within a minute anyway)."""
    client = daemon_client(config)
    if client is None:
        return
    try:  # (not `with client`: httpx refuses to enter a client that has already sent a request)
        client.post("/api/tasks/changed", json={})
    except (httpx.HTTPError, ApiRefused):
        pass
    finally:
        client.close()


def cmd_tasks(config: Config, args: argparse.Namespace) -> int:
    changed = False

    def on_changed() -> None:
        nonlocal changed
        changed = True

    async def run(registry: Any) -> int:
        minimum = (
            config.min_task_interval if getattr(args, "min_interval", None) is None else args.min_interval
        )
        service = TaskService(registry.store, registry, min_interval=minimum, on_changed=on_changed)
        if args.tasks_cmd == "list":
            return _list(await service.list_for(OPERATOR, args.group), as_json=args.json)
        if args.tasks_cmd == "add":
            return await _add(service, args)
        try:
            task = await service.get(OPERATOR, args.task_id)
        except TaskError as exc:
            return fail(str(exc), 1)
        if args.tasks_cmd == "runs":
            return _runs(await registry.store.task_run_rows(task.id, limit=args.limit), as_json=args.json)
        try:
            updated = await service.set_status(OPERATOR, task.id, STATUS_OF[args.tasks_cmd])
        except TaskError as exc:
            return fail(str(exc), 1)
        print(task_line(updated))
        return 0

    code = int(with_store(config, run))
    if changed:
        poke_scheduler(config)
    return code


async def _add(service: TaskService, args: argparse.Namespace) -> int:
    kinds = [(k, v) for k, v in (("cron", args.cron), ("interval", args.every), ("once", args.at)) if v]
    if len(kinds) != 1:
        return fail("give exactly one of --cron, --every, --at")
    kind, value = kinds[0]
    new = NewTask(
        prompt=args.prompt,
        schedule_kind=kind,
        schedule_value=value,
        timezone=args.tz or "UTC",
        context_mode="isolated" if args.isolated else "group",
        pre_script=args.pre_script,
        group=args.group,
    )
    try:
        task = await service.create(OPERATOR, new)
    except TaskError as exc:
        return fail(str(exc))
    print(task_line(task))
    return 0


def _list(tasks: list[Task], *, as_json: bool) -> int:
    if as_json:
        print(json.dumps([to_json(t) for t in tasks], indent=2))
        return 0
    if not tasks:
        print("no tasks")
    for t in tasks:
        print(task_line(t))
    return 0


def _runs(rows: list[dict[str, Any]], *, as_json: bool) -> int:
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no runs yet")
    for r in rows:
        detail = r["error"] or r["result"] or ""
        tokens = f" tokens={r['tokens']}" if r["tokens"] else ""
        print(
            f"#{r['id']:<5} slot={str(r['scheduled_for'] or '-')[:19]} started={r['started_at'][:19]}"
            f" ended={str(r['ended_at'] or '-')[:19]} {r['outcome']:<8}{tokens} {detail[:80]!r}"
        )
    return 0
