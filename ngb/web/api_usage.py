"""Model usage, cost and spending caps (docs/budgets.md).

    GET    /api/usage?group=&days=       usage and cost per UTC day, group and model (default 7 days)
    GET    /api/budgets                  the caps in force, the per-group overrides, the prices
    PATCH  /api/budgets/<folder>         set a group's caps ("global": the global caps):
                                         {"daily_usd": n|null, "monthly_usd": n|null}; null = the
                                         config default, 0 = no cap; in force for the next call
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from quart_trio import QuartTrio

from ..budgets import GLOBAL, MAX_USD, report
from .common import ApiError, int_arg, read_json, str_arg

if TYPE_CHECKING:
    from .backend import WebBackend

log = logging.getLogger(__name__)

MAX_DAYS = 366


def scope_json(daemon: WebBackend, scope: str) -> dict[str, Any]:
    budgets = daemon.budgets
    caps = budgets.caps(scope)
    daily, monthly = budgets.overrides.get(scope, (None, None))
    today, month = budgets.spend(scope)
    return {
        "daily_usd": caps.daily or None,
        "monthly_usd": caps.monthly or None,
        "override": {"daily_usd": daily, "monthly_usd": monthly},
        "today_usd": today.to_json()["cost_usd"],
        "month_usd": month.to_json()["cost_usd"],
    }


def _amount(key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"'{key}' must be null (the config default), 0 (no cap) or an amount of USD")
    if not 0 <= value <= MAX_USD:
        raise ApiError(400, f"'{key}' must be between 0 and {MAX_USD:.0f}")
    return float(value)


def register(app: QuartTrio, daemon: WebBackend) -> None:
    @app.get("/api/usage")
    async def usage() -> Any:
        days = int_arg("days", 7, lo=1, hi=MAX_DAYS)
        group = str_arg("group", max_len=64)
        await daemon.budgets.flush()  # so the answer holds every response counted so far
        prices = daemon.budgets.prices
        return await daemon.store.run(
            lambda c: report(c, prices, days=days, folder=group, now=daemon.budgets.clock())
        )

    @app.get("/api/budgets")
    async def budgets() -> Any:
        b = daemon.budgets
        folders = sorted({g.folder for g in daemon.registry.all()} | {s for s in b.overrides if s != GLOBAL})
        return {
            "defaults": {"daily_usd": b.defaults.daily or None, "monthly_usd": b.defaults.monthly or None},
            "global": scope_json(daemon, GLOBAL),
            "groups": {f: scope_json(daemon, f) for f in folders},
            "prices": b.prices.describe(),
        }

    @app.patch("/api/budgets/<folder>")
    async def set_budget(folder: str) -> Any:
        scope = GLOBAL if folder == "global" else folder
        if scope != GLOBAL and daemon.registry.by_folder(folder) is None:
            raise ApiError(404, f"no group with folder {folder!r} (\"global\" sets the global caps)")
        data = await read_json()
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object (Content-Type: application/json)")
        changes = {k: _amount(k, data[k]) for k in ("daily_usd", "monthly_usd") if k in data}
        unknown = sorted(set(data) - {"daily_usd", "monthly_usd"})
        if unknown:
            raise ApiError(400, f"unknown field {unknown[0]!r}: send daily_usd and/or monthly_usd")
        if not changes:
            raise ApiError(400, "nothing to change: send daily_usd and/or monthly_usd (null = the config default, 0 = no cap)")
        kwargs = {("daily" if k == "daily_usd" else "monthly"): v for k, v in changes.items()}
        await daemon.budgets.set_caps(scope, **kwargs)
        log.info("budgets: %s caps changed: %s", folder, ", ".join(f"{k}={v}" for k, v in changes.items()))
        return scope_json(daemon, scope)
