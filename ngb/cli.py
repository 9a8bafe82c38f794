"""The `ngb` command: run, chat, groups, tasks, image, backup, restore."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import trio

from . import __version__
from .cli_support import ApiRefused, daemon_client, fail
from .config import Config, ConfigError, load_config

log = logging.getLogger("ngb")


# -- run ----------------------------------------------------------------------------------
def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from .daemon import Daemon, StateDirBusy
    from .logs import setup_logging

    setup_logging(config.log_level, config.log_format, secrets=[config.anthropic_api_key, config.api_token])
    if not config.anthropic_api_key and "anthropic.com" in config.model_upstream:
        log.warning(
            "no ANTHROPIC_API_KEY set: the agent cannot reach the model. Set it, or point NGB_MODEL_UPSTREAM at "
            "a compatible server (for a try without a key: python -m tests.fakes.anthropic --port 8788)."
        )
    if not args.no_build:
        from .sandbox.image import ImageBuildError, ensure_image

        try:
            ensure_image(config.image, progress=lambda line: print(line, file=sys.stderr, flush=True))
        except ImageBuildError as exc:
            return fail(f"cannot build the agent image: {exc}")
    from .ops.backup import BackupError

    daemon = Daemon(config)
    try:
        trio.run(daemon.run)
    except (OSError, BackupError, StateDirBusy, ConfigError) as exc:  # BackupError: no copy before a pending
        return fail(f"cannot start: {exc}", 1)  # migration; ConfigError: the generated API token's file
    except KeyboardInterrupt:
        return 130
    return 0


# -- groups -------------------------------------------------------------------------------
def _with_store(config: Config, fn: Any) -> Any:
    """Run fn(registry) against the state directly (the daemon is not running)."""
    from .groups import GroupRegistry
    from .store import Store

    async def main() -> Any:
        store = Store(config.db_path)
        await store.open()
        try:
            registry = GroupRegistry(store, config.groups_dir, config.global_dir, agent_uid=config.agent_uid)
            await registry.load()
            return await fn(registry)
        finally:
            await store.close()

    previous = os.umask(0o077)  # what this writes is the daemon's state: never readable by the host's others
    try:
        return trio.run(main)
    finally:
        os.umask(previous)


def cmd_groups(config: Config, args: argparse.Namespace) -> int:
    from .folders import validate_folder
    from .identity import normalise_sender_ids
    from .records import Group, to_json

    client = daemon_client(config)
    if args.groups_cmd == "list":
        if client:
            groups = client.get("/api/groups").json()
        else:
            groups = [to_json(g) for g in _with_store(config, lambda r: _async(r.all()))]
        if args.json:
            print(json.dumps(groups, indent=2))
            return 0
        if not groups:
            print("no groups registered")
        for g in groups:
            flags = [f for f, on in (("main", g["is_main"]), ("no-trigger", not g["requires_trigger"])) if on]
            print(f"{g['chat']:<30} folder={g['folder']:<20} {' '.join(flags)}")
        return 0
    if args.groups_cmd == "add":
        try:
            validate_folder(args.folder)
        except ValueError as exc:
            return fail(str(exc))
        if ":" not in args.chat:
            return fail(f"chat {args.chat!r} must look like <channel>:<id>, e.g. local:family or telegram:-1001234")
        try:
            allowed = normalise_sender_ids(args.chat, args.allow)
        except ValueError as exc:
            return fail(str(exc))
        if client:
            r = client.post(
                "/api/groups",
                json={"chat": args.chat, "folder": args.folder, "is_main": args.main, "requires_trigger": not args.no_trigger,
                      "allowed_senders": list(allowed), "unlisted_context": args.unlisted_context},
            )
            if r.status_code >= 400:
                return fail(r.json().get("error", r.text))
        else:
            group = Group(chat=args.chat, folder=args.folder, is_main=args.main, requires_trigger=not args.no_trigger,
                          allowed_senders=allowed, unlisted_context=args.unlisted_context)
            try:
                _with_store(config, lambda r: r.add(group))
            except ValueError as exc:
                return fail(str(exc))
        print(f"registered {args.chat} (folder {args.folder})")
        return 0
    if args.groups_cmd == "remove":
        if client:
            r = client.delete(f"/api/groups/{args.chat}")
            if r.status_code == 404:
                return fail(f"no group for chat {args.chat}", 1)
        elif _with_store(config, lambda r: r.remove(args.chat)) is None:
            return fail(f"no group for chat {args.chat}", 1)
        print(f"removed {args.chat} (its folder stays on disk)")
        return 0
    if args.groups_cmd == "senders":
        return _groups_senders(config, client, args)
    if args.groups_cmd in ("allow", "disallow"):
        return _groups_allow(config, client, args)
    return fail("usage: ngb groups list|add|remove|senders|allow|disallow")


def _groups_senders(config: Config, client: httpx.Client | None, args: argparse.Namespace) -> int:
    from .identity import id_allowed
    from .records import to_json

    if ":" not in args.chat:
        return fail(f"chat {args.chat!r} must look like <channel>:<id>, e.g. telegram:-1001234")
    if client:
        r = client.get("/api/senders", params={"chat": args.chat})
        if r.status_code >= 400:
            return fail(r.json().get("error", r.text))
        rows = r.json()
    else:
        async def read(registry: Any) -> list[dict[str, Any]]:
            group = registry.get(args.chat)
            return [{**to_json(s), "allowed": id_allowed(group, s.sender_id)} for s in await registry.store.recent_senders(args.chat)]

        rows = _with_store(config, read)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no messages from anyone in {args.chat} yet")
        return 0
    print(f"{'SENDER ID (for allow-lists)':<40} {'NAME (shown only)':<24} {'MSGS':>5}  LAST              ALLOWED")
    for row in rows:
        allowed = {None: "-", True: "yes", False: "no"}[row["allowed"]]
        print(f"{row['sender_id'] or '(none)':<40} {row['name'][:24]:<24} {row['messages']:>5}  {row['last_time'][:16]}  {allowed}")
    return 0


def _groups_allow(config: Config, client: httpx.Client | None, args: argparse.Namespace) -> int:
    import attrs

    from .identity import normalise_sender_ids

    try:
        ids = normalise_sender_ids(args.chat, args.sender_ids)
    except ValueError as exc:
        return fail(str(exc))

    def changed(current: tuple[str, ...] | list[str]) -> list[str]:
        if args.groups_cmd == "allow":
            return list(dict.fromkeys([*current, *ids]))
        return [s for s in current if s not in ids]

    if client:
        r = client.get(f"/api/groups/{args.chat}")
        if r.status_code == 404:
            return fail(f"no group for chat {args.chat}", 1)
        new = changed(r.json()["allowed_senders"])
        r = client.patch(f"/api/groups/{args.chat}", json={"allowed_senders": new})
        if r.status_code >= 400:
            return fail(r.json().get("error", r.text))
    else:
        async def edit(registry: Any) -> list[str] | None:
            group = registry.get(args.chat)
            if group is None:
                return None
            new = changed(group.allowed_senders)
            await registry.store.update_group(attrs.evolve(group, allowed_senders=tuple(new)))
            return new

        new = _with_store(config, edit)
        if new is None:
            return fail(f"no group for chat {args.chat}", 1)
    print(f"{args.chat}: " + (f"allowed senders: {', '.join(new)}" if new else "everyone may use the bot (no allow-list)"))
    return 0


async def _async(value: Any) -> Any:
    return value


# -- tasks --------------------------------------------------------------------------------
def _poke_scheduler(config: Config) -> None:
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


def _task_line(t: Any) -> str:
    from .records import format_time

    nxt = format_time(t.next_run)[:19] if t.next_run else "-"
    flags = "".join([" isolated" if t.context_mode == "isolated" else "", " pre-script" if t.pre_script else ""])
    schedule = f"{t.schedule_kind.value} {t.schedule_value}" + (f" ({t.timezone})" if t.timezone != "UTC" else "")
    return f"{t.id}  {t.folder:<12} {t.status.value:<9} {schedule:<30} next={nxt}{flags}  {t.prompt[:50]!r}"


def cmd_tasks(config: Config, args: argparse.Namespace) -> int:
    import secrets

    from .records import ScheduleKind, Task, TaskStatus, to_json, utcnow
    from .sandbox.tools import Refused, set_task_status
    from .schedules import ScheduleError, validate

    changed = False

    async def run(registry: Any) -> int:
        nonlocal changed
        store = registry.store
        if args.tasks_cmd == "list":
            tasks = await store.tasks(args.group)
            if args.json:
                print(json.dumps([to_json(t) for t in tasks], indent=2))
                return 0
            if not tasks:
                print("no tasks")
            for t in tasks:
                print(_task_line(t))
            return 0
        if args.tasks_cmd == "add":
            group = registry.get(args.group) or registry.by_folder(args.group)
            if group is None:
                return fail(f"no group {args.group!r} (give its folder or chat; see `ngb groups list`)")
            kinds = [(k, v) for k, v in (("cron", args.cron), ("interval", args.every), ("once", args.at)) if v]
            if len(kinds) != 1:
                return fail("give exactly one of --cron, --every, --at")
            kind, value = kinds[0]
            try:
                minimum = args.min_interval
                if minimum is None:
                    minimum = float(getattr(config, "min_task_interval", None) or os.environ.get("NGB_MIN_TASK_INTERVAL") or 60)
                first = validate(kind, value, args.tz, min_interval=minimum, now=utcnow())
            except ScheduleError as exc:
                return fail(str(exc))
            task = Task(
                id=f"task-{secrets.token_hex(4)}",
                folder=group.folder,
                chat=group.chat,
                prompt=args.prompt,
                schedule_kind=ScheduleKind(kind),
                schedule_value=value,
                timezone=args.tz or "UTC",
                context_mode="isolated" if args.isolated else "group",
                next_run=first,
                pre_script=args.pre_script,
                created_by="cli",
            )
            await store.add_task(task)
            changed = True
            print(_task_line(task))
            return 0
        task = await store.task(args.task_id)
        if task is None:
            return fail(f"no task {args.task_id}", 1)
        if args.tasks_cmd == "runs":
            rows = await store.task_run_rows(task.id, limit=args.limit)
            if args.json:
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
        status = {"pause": TaskStatus.PAUSED, "resume": TaskStatus.ACTIVE, "cancel": TaskStatus.CANCELLED}[args.tasks_cmd]
        try:
            updated = await set_task_status(store, task, status)
        except Refused as exc:
            return fail(str(exc), 1)
        changed = True
        print(_task_line(updated))
        return 0

    code = int(_with_store(config, run))
    if changed:
        _poke_scheduler(config)
    return code


# -- image --------------------------------------------------------------------------------
def cmd_image(config: Config, args: argparse.Namespace) -> int:
    from .sandbox.image import ImageBuildError, ensure_image

    try:
        ensure_image(config.image, force=args.force, progress=lambda line: print(line, flush=True))
    except ImageBuildError as exc:
        return fail(str(exc))
    return 0


def cmd_chat(config: Config, args: argparse.Namespace) -> int:
    from .chat_client import main_from_args

    return main_from_args(args, config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ngb", description="NanoGridBot: a self-hosted personal Claude assistant daemon.")
    parser.add_argument("--config", type=Path, help="TOML config file (default: $NGB_CONFIG or ./ngb.toml)")
    parser.add_argument("--version", action="version", version=f"ngb {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run the daemon (builds the agent image first when missing)")
    run.add_argument("--no-build", action="store_true", help="do not check or build the agent image")
    run.set_defaults(fn=cmd_run)

    chat = sub.add_parser("chat", help="talk to the assistant in the terminal (local chat)")
    from .chat_client import add_arguments

    add_arguments(chat)
    chat.set_defaults(fn=cmd_chat)

    groups = sub.add_parser("groups", help="list, add or remove registered chats")
    gsub = groups.add_subparsers(dest="groups_cmd", required=True)
    gl = gsub.add_parser("list")
    gl.add_argument("--json", action="store_true")
    ga = gsub.add_parser("add")
    ga.add_argument("chat", help="e.g. local:family, telegram:-1001234")
    ga.add_argument("--folder", required=True, help="the group's folder name under state/groups/")
    ga.add_argument("--main", action="store_true", help="make this the main (admin) group")
    ga.add_argument("--no-trigger", action="store_true", help="answer every message, not only ones with the trigger")
    ga.add_argument("--allow", action="append", default=[], metavar="SENDER_ID",
                    help="only this sender (the platform's user id, never a name) may use the bot; repeatable")
    ga.add_argument("--unlisted-context", action="store_true",
                    help="show other senders' messages to the agent as context, marked as unlisted")
    gr = gsub.add_parser("remove")
    gr.add_argument("chat")
    gs = gsub.add_parser("senders", help="who wrote in a chat lately: the ids allow-lists take, with names")
    gs.add_argument("chat")
    gs.add_argument("--json", action="store_true")
    for name, helptext in (("allow", "add sender ids to a group's allow-list"),
                           ("disallow", "remove sender ids from a group's allow-list (empty list: everyone)")):
        gp = gsub.add_parser(name, help=helptext)
        gp.add_argument("chat")
        gp.add_argument("sender_ids", nargs="+", metavar="SENDER_ID")
    groups.set_defaults(fn=cmd_groups)

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
    ta.add_argument("--isolated", action="store_true", help="run in a fresh session, not the group's conversation")
    ta.add_argument("--pre-script", dest="pre_script", help='shell command printing {"wakeAgent": bool, "data": ...}')
    ta.add_argument("--min-interval", dest="min_interval", type=float, default=None, help=argparse.SUPPRESS)
    for name in ("pause", "resume", "cancel"):
        tsub.add_parser(name).add_argument("task_id")
    tr = tsub.add_parser("runs", help="the run log of a task, newest first")
    tr.add_argument("task_id")
    tr.add_argument("--limit", type=int, default=20)
    tr.add_argument("--json", action="store_true")
    tasks.set_defaults(fn=cmd_tasks)

    image = sub.add_parser("image", help="build the agent image")
    image.add_argument("action", choices=["build"])
    image.add_argument("--force", action="store_true", help="rebuild even when current")
    image.set_defaults(fn=cmd_image)

    from .ops.backup import add_arguments as add_backup_commands

    add_backup_commands(sub)  # backup, restore

    from .cli_ops import add_ops_commands

    add_ops_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return fail(str(exc))
    try:
        return int(args.fn(config, args))
    except ApiRefused as exc:
        return fail(str(exc), 1)


if __name__ == "__main__":
    sys.exit(main())
