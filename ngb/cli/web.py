"""`ngb web`: what the groups' agents reached through the egress door (docs/web-access.md): the
request log (`ngb web log`) and the per-day sums (`ngb web usage`), read through the running
daemon's API when one answers, else from the state directly. A group's web settings are changed
with `ngb groups web` (groups.py)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import Config
from .support import daemon_client, fail, with_store


def add_web_commands(sub: Any) -> None:
    """Register `ngb web ...` on the `ngb` subparsers."""
    web = sub.add_parser("web", help="the agents' web use: the request log and the daily sums")
    wsub = web.add_subparsers(dest="web_cmd", required=True)
    wl = wsub.add_parser("log", help="the newest requests through the egress door, newest first")
    wl.add_argument("--group", metavar="FOLDER", help="only this group's")
    wl.add_argument("-n", type=int, default=20, metavar="N", help="how many (default 20, at most 500)")
    wl.add_argument("--json", action="store_true")
    wu = wsub.add_parser("usage", help="requests, refusals and bytes per group and UTC day")
    wu.add_argument("--group", metavar="FOLDER", help="only this group's")
    wu.add_argument("--days", type=int, default=7, metavar="N", help="the last N days, today included (default 7)")
    wu.add_argument("--json", action="store_true")
    web.set_defaults(fn=cmd_web)


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KB", "MB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def _read(config: Config, group: str | None, limit: int, days: int) -> dict[str, Any]:
    """{"recent": [...], "usage": [...]} as GET /api/web answers it."""
    from ..records import to_json

    client = daemon_client(config)
    if client:
        params: dict[str, Any] = {"limit": limit, "days": days}
        if group:
            params["group"] = group
        r = client.get("/api/web", params=params)
        if r.status_code >= 400:
            raise ValueError(r.json().get("error", r.text))
        return dict(r.json())

    async def read(registry: Any) -> dict[str, Any]:
        store = registry.store
        recent = await store.recent_web(group, limit) if limit else []
        return {"recent": [to_json(x) for x in recent], "usage": [to_json(u) for u in await store.web_usage(group, days)]}

    return dict(with_store(config, read))


def cmd_web(config: Config, args: argparse.Namespace) -> int:
    from ..folders import validate_folder

    if args.group is not None:
        try:
            validate_folder(args.group)
        except ValueError as exc:
            return fail(str(exc))
    try:
        if args.web_cmd == "log":
            if not 1 <= args.n <= 500:
                return fail("-n must be between 1 and 500")
            data = _read(config, args.group, args.n, 1)
            return _print_log(data["recent"], args)
        if not 1 <= args.days <= 366:
            return fail("--days must be between 1 and 366")
        data = _read(config, args.group, 0, args.days)
        return _print_usage(data["usage"], args)
    except ValueError as exc:
        return fail(str(exc))


def _print_log(rows: list[dict[str, Any]], args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no web requests logged" + (f" for {args.group}" if args.group else ""))
        return 0
    print(f"{'TIME (UTC)':<19}  {'GROUP':<16} {'VERDICT':<8} {'REQUEST':<44} {'UP':>9} {'DOWN':>9}  RULE")
    for r in reversed(rows):  # oldest first, so the newest ends next to the prompt
        request = f"{r['method']} {r['host']}:{r['port']}"
        print(f"{r['time'][:19].replace('T', ' '):<19}  {r['folder'][:16]:<16} {r['verdict']:<8} {request[:44]:<44}"
              f" {human_bytes(r['bytes_up']):>9} {human_bytes(r['bytes_down']):>9}  {r['rule']}")
    return 0


def _print_usage(rows: list[dict[str, Any]], args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no web use in the last {args.days} day(s)" + (f" for {args.group}" if args.group else ""))
        return 0
    print(f"{'DAY (UTC)':<10}  {'GROUP':<16} {'REQUESTS':>8} {'REFUSED':>8} {'UP':>10} {'DOWN':>10}")
    for u in rows:
        print(f"{u['day']:<10}  {u['folder'][:16]:<16} {u['requests']:>8} {u['refused']:>8}"
              f" {human_bytes(u['bytes_up']):>10} {human_bytes(u['bytes_down']):>10}")
    return 0
