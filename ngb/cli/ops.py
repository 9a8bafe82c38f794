"""The operations commands of `ngb`: service, doctor, init, link (ngb/ops/), usage and budget.

ngb/cli/main.py calls `add_ops_commands(sub)` on its subparsers; each handler takes (config, args)
and returns the exit status, like the other commands.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import Config
from .support import daemon_client, fail


def cmd_service(config: Config, args: argparse.Namespace) -> int:
    from ..ops.service import cmd_service as run

    return run(config, args)


def cmd_doctor(config: Config, args: argparse.Namespace) -> int:
    from ..ops.doctor import cmd_doctor as run

    return run(config, args)


def cmd_init(config: Config, args: argparse.Namespace) -> int:
    from ..ops.init import cmd_init as run

    return run(config, args)


def cmd_link(config: Config, args: argparse.Namespace) -> int:
    """Print the web page's login link (it carries the API token, like the daemon's ready line)."""
    import sys

    from ..api_token import TokenUnavailable, WebToken, client_token, login_link

    try:
        token = WebToken(client_token(config), configured=False)
    except TokenUnavailable as exc:
        print(f"ngb: {exc}", file=sys.stderr)
        return 1
    print(login_link(config, token, "/dashboard" if args.dashboard else "/"))
    return 0


def add_ops_commands(subparsers: Any) -> None:
    """Register `service`, `doctor`, `init` and `link` on the `ngb` subparsers."""
    from ..ops import doctor, init, service

    svc = subparsers.add_parser("service", help="install or remove the systemd service")
    service.add_arguments(svc)
    svc.set_defaults(fn=cmd_service)

    doc = subparsers.add_parser("doctor", help="check Docker, the image, the model, the state; say what to fix")
    doctor.add_arguments(doc)
    doc.set_defaults(fn=cmd_doctor)

    ini = subparsers.add_parser("init", help="first-run set-up: write ngb.toml and a mode-600 env file for secrets")
    init.add_arguments(ini)
    ini.set_defaults(fn=cmd_init)

    link = subparsers.add_parser(
        "link", help="print the chat page's login link (it carries the API token: keep it to yourself)"
    )
    link.add_argument("--dashboard", action="store_true", help="the dashboard's link instead")
    link.set_defaults(fn=cmd_link)

    add_budget_commands(subparsers)


# -- usage and budgets (docs/budgets.md) ------------------------------------------------------
def _with_db(config: Config, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """await fn(store) on the state database (a daemon may be running: SQLite WAL lets both)."""
    import trio

    from ..store import Store

    async def main() -> Any:
        store = Store(config.db_path)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return trio.run(main)


def _read_db(config: Config, fn: Callable[[Any, set[str]], Any]) -> Any:
    """Run fn(conn, folders) on the state database, with the registered groups' folders."""

    async def read(store: Any) -> Any:
        folders = await store.group_folders()
        return await store.run(lambda conn: fn(conn, folders))

    return _with_db(config, read)


def _spend(conn: Any, folders: set[str], config: Config, prices: Any, now: Any) -> dict[str, Any]:
    """Today's and this month's spend per group (`folders`: the registered ones, plus any with
    usage or caps) and in total, with the caps in force."""
    from ..budgets import GLOBAL, Caps, Tally, day_of, month_of, read_caps, row_counts, usage_rows

    overrides = read_caps(conn)
    today, month_start = day_of(now), month_of(now) + "-01"
    tallies: dict[tuple[str, str], Tally] = {}
    folders = set(folders)
    for r in usage_rows(conn, month_start):
        counts = row_counts(r)
        cost = prices.counts_cost(r["model"], counts)
        folders.add(r["folder"])
        for scope in (r["folder"], GLOBAL):
            for period in ("month", "today") if r["day"] == today else ("month",):
                tallies.setdefault((scope, period), Tally()).add(counts, cost)

    def one(scope: str) -> dict[str, Any]:
        base = (
            Caps(config.budget_global_daily_usd, config.budget_global_monthly_usd)
            if scope == GLOBAL
            else Caps(config.budget_daily_usd, config.budget_monthly_usd)
        )
        daily, monthly = overrides.get(scope, (None, None))
        return {
            "today": tallies.get((scope, "today"), Tally()).to_json(),
            "month": tallies.get((scope, "month"), Tally()).to_json(),
            "daily_cap_usd": (base.daily if daily is None else daily) or None,
            "monthly_cap_usd": (base.monthly if monthly is None else monthly) or None,
            "override": {"daily_usd": daily, "monthly_usd": monthly},
        }

    folders |= {s for s in overrides if s != GLOBAL}
    return {"day": today, "month": month_of(now), "groups": {f: one(f) for f in sorted(folders)}, "total": one(GLOBAL)}


def _cap_text(spent: float, cap: float | None) -> str:
    from ..budgets import fmt_usd

    shown = fmt_usd(spent, is_nanos=False)
    return f"{shown} of {fmt_usd(cap, is_nanos=False)}" if cap else f"{shown} (no cap)"


def cmd_usage(config: Config, args: argparse.Namespace) -> int:
    import json
    from datetime import UTC, datetime

    from ..budgets import PriceTable, fmt_usd, report

    if not config.db_path.exists():
        return fail(f"no state database at {config.db_path} (nothing recorded yet)", 1)
    prices = PriceTable(config.model_prices)
    now = datetime.now(UTC)
    rep, spend = _read_db(
        config,
        lambda c, folders: (
            report(c, prices, days=args.days, folder=args.group, now=now),
            _spend(c, folders, config, prices, now),
        ),
    )
    if args.group is not None:
        spend["groups"] = {k: v for k, v in spend["groups"].items() if k == args.group}
    if args.json:
        print(json.dumps({**rep, "spend": spend}, indent=2))
        return 0
    print(f"model usage {rep['from']} .. {rep['to']} (UTC days){f', group {args.group}' if args.group else ''}")
    days: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rep["rows"]:
        d = days.setdefault((r["day"], r["folder"]), dict.fromkeys(
            ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens", "cost_usd"), 0))
        for k in d:
            d[k] += r[k]
    if not days:
        print("  no model calls recorded")
    else:
        print(f"  {'day':<10}  {'group':<16} {'calls':>6} {'input':>10} {'output':>10} {'cache rd':>10} {'cache wr':>10} {'cost':>10}")
        for (day, folder), d in sorted(days.items()):
            print(f"  {day:<10}  {folder:<16} {d['requests']:>6} {d['input_tokens']:>10} {d['output_tokens']:>10}"
                  f" {d['cache_read_tokens']:>10} {d['cache_creation_tokens']:>10} {fmt_usd(d['cost_usd'], is_nanos=False):>10}")
        t = rep["total"]
        print(f"  {'total':<10}  {'':<16} {t['requests']:>6} {t['input_tokens']:>10} {t['output_tokens']:>10}"
              f" {t['cache_read_tokens']:>10} {t['cache_creation_tokens']:>10} {fmt_usd(t['cost_usd'], is_nanos=False):>10}")
    print(f"spend today ({spend['day']}) and this month ({spend['month']}), against the caps:")
    for folder, s in spend["groups"].items():
        print(f"  {folder:<16} today {_cap_text(s['today']['cost_usd'], s['daily_cap_usd'])},"
              f" month {_cap_text(s['month']['cost_usd'], s['monthly_cap_usd'])}")
    if args.group is None:
        s = spend["total"]
        print(f"  {'all groups':<16} today {_cap_text(s['today']['cost_usd'], s['daily_cap_usd'])},"
              f" month {_cap_text(s['month']['cost_usd'], s['monthly_cap_usd'])}")
    return 0


def _cap_arg(text: str) -> float | None:
    """`default` (the config's), `none`/`off`/`0` (no cap), or an amount of USD."""
    low = text.strip().lower()
    if low == "default":
        return None
    if low in ("none", "off"):
        return 0.0
    from ..budgets import parse_usd

    try:
        return parse_usd(low)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or 'default', 'none')") from None


def cmd_budget(config: Config, args: argparse.Namespace) -> int:
    import json
    from datetime import UTC, datetime

    from ..budgets import GLOBAL, PriceTable, write_caps

    if args.folder and args.global_caps:
        return fail("give a group's folder or --global, not both")
    scope = GLOBAL if args.global_caps else args.folder
    changes = {k: v for k, v in (("daily", args.daily), ("monthly", args.monthly)) if v is not _KEEP}
    if changes:
        if scope is None:
            return fail("name the group (its folder) or --global to change caps")
        client = daemon_client(config)
        if client is not None:  # the running daemon applies it at once (and stores it)
            try:
                r = client.patch(f"/api/budgets/{'global' if scope == GLOBAL else scope}",
                                 json={f"{k}_usd": v for k, v in changes.items()})
            finally:
                client.close()
            if r.status_code >= 400:
                return fail(r.json().get("error", r.text), 1)
        else:

            async def store_caps(store: Any) -> bool:
                if scope != GLOBAL and not await store.group_exists(scope):
                    return False
                await store.run(lambda c: write_caps(c, scope, **changes))
                return True

            if not _with_db(config, store_caps):
                return fail(f"no group with folder {scope!r} (see `ngb groups list`)", 1)
    if not config.db_path.exists():
        return fail(f"no state database at {config.db_path}", 1)
    prices = PriceTable(config.model_prices)
    spend = _read_db(config, lambda c, folders: _spend(c, folders, config, prices, datetime.now(UTC)))
    shown = {"global": spend["total"]} if scope == GLOBAL else (
        {scope: spend["groups"].get(scope)} if scope else {**spend["groups"], "global": spend["total"]})
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    for name, s in shown.items():
        if s is None:
            print(f"{name}: no caps and no usage recorded")
            continue

        def cap(v: float | None, o: float | None) -> str:
            return (f"${v:g}" if v else "none") + (" (config default)" if o is None else " (set for it)")

        print(f"{name + ':':<17} daily {cap(s['daily_cap_usd'], s['override']['daily_usd'])},"
              f" monthly {cap(s['monthly_cap_usd'], s['override']['monthly_usd'])};"
              f" spent today {_cap_text(s['today']['cost_usd'], s['daily_cap_usd'])},"
              f" this month {_cap_text(s['month']['cost_usd'], s['monthly_cap_usd'])}")
    return 0


_KEEP: Any = object()


def add_budget_commands(subparsers: Any) -> None:
    """`ngb usage` and `ngb budget`."""
    use = subparsers.add_parser("usage", help="model tokens and cost per day and group (reads the database)")
    use.add_argument("--group", help="only this group's folder")
    use.add_argument("--days", type=int, default=7, help="the last N UTC days, today included (default 7)")
    use.add_argument("--json", action="store_true")
    use.set_defaults(fn=cmd_usage)

    bud = subparsers.add_parser("budget", help="show or set spending caps (per group, or --global)")
    bud.add_argument("folder", nargs="?", help="the group's folder (omit to list every group's caps)")
    bud.add_argument("--global", dest="global_caps", action="store_true", help="the caps over all groups together")
    bud.add_argument("--daily", type=_cap_arg, default=_KEEP, metavar="USD|none|default",
                     help="daily cap in USD (UTC day); none: no cap; default: the config's")
    bud.add_argument("--monthly", type=_cap_arg, default=_KEEP, metavar="USD|none|default",
                     help="monthly cap in USD (UTC calendar month)")
    bud.add_argument("--json", action="store_true")
    bud.set_defaults(fn=cmd_budget)
