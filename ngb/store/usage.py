"""Model token usage and spending caps in the database: the `usage` table (upsert-added per UTC
day, group and model), the per-group cap overrides (`budget_caps`) and the budget notices already
sent (`budget_notices`). ngb/budgets.py holds the rules (prices, periods, caps, notices); this
holds their SQL, as functions on a connection (for `store.run`) and as Store methods."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from .core import StoreCore

# The usage table's count columns, in the order counts travel in (Tally.add, write_usage):
# cache_creation_tokens holds cache writes of both lifetimes, cache_creation_1h_tokens the 1-hour share.
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
EXTRA_FIELDS = ("cache_creation_1h_tokens", "web_search_requests", "web_fetch_requests")
COUNT_FIELDS = (*TOKEN_FIELDS, "requests", *EXTRA_FIELDS)

Caps = tuple[float | None, float | None]  # (daily, monthly) USD overrides; None: the config default

UPSERT_USAGE = (
    f"INSERT INTO usage (day, folder, model, {', '.join(COUNT_FIELDS)})"
    f" VALUES (?, ?, ?, {', '.join('?' * len(COUNT_FIELDS))})"
    " ON CONFLICT(day, folder, model) DO UPDATE SET "
    + ", ".join(f"{f} = {f} + excluded.{f}" for f in COUNT_FIELDS)
)

UNSET: Any = object()  # a cap left as it is


def write_usage(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Upsert-add rows of (day, folder, model, counts...) in COUNT_FIELDS order; rows with fewer
    counts get zeros for the missing trailing ones."""
    width = 3 + len(COUNT_FIELDS)
    conn.executemany(UPSERT_USAGE, [tuple(r) + (0,) * (width - len(r)) for r in rows])


def row_counts(row: Mapping[str, Any]) -> list[int]:
    """A usage row's counts in COUNT_FIELDS order (columns a database not yet migrated lacks: 0)."""
    return [int(row.get(f) or 0) for f in COUNT_FIELDS]


def usage_rows(
    conn: sqlite3.Connection, since_day: str, until_day: str | None = None, folder: str | None = None
) -> list[dict[str, Any]]:
    sql = "SELECT * FROM usage WHERE day >= ?"
    args: list[Any] = [since_day]
    if until_day is not None:
        sql += " AND day <= ?"
        args.append(until_day)
    if folder is not None:
        sql += " AND folder = ?"
        args.append(folder)
    sql += " ORDER BY day, folder, model"
    return [dict(r) for r in conn.execute(sql, args).fetchall()]


def read_caps(conn: sqlite3.Connection) -> dict[str, Caps]:
    return {
        str(r[0]): (r[1], r[2])
        for r in conn.execute("SELECT folder, daily_usd, monthly_usd FROM budget_caps").fetchall()
    }


def write_caps(
    conn: sqlite3.Connection, scope: str, daily: float | None = UNSET, monthly: float | None = UNSET
) -> Caps:
    """Change a group's (or the global '*') cap overrides; only the given ones. Returns the new pair."""
    old = read_caps(conn).get(scope, (None, None))
    new = (old[0] if daily is UNSET else daily, old[1] if monthly is UNSET else monthly)
    if new == (None, None):
        conn.execute("DELETE FROM budget_caps WHERE folder = ?", (scope,))
    else:
        conn.execute(
            "INSERT INTO budget_caps (folder, daily_usd, monthly_usd, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(folder) DO UPDATE SET daily_usd = excluded.daily_usd,"
            " monthly_usd = excluded.monthly_usd, updated_at = excluded.updated_at",
            (scope, new[0], new[1], datetime.now(UTC).isoformat(timespec="seconds")),
        )
    return new


def notices_since(conn: sqlite3.Connection, since: str) -> set[tuple[str, str]]:
    """Forget the notices sent before `since` (periods long over); the (folder, notice) sent since."""
    conn.execute("DELETE FROM budget_notices WHERE sent_at < ?", (since,))
    return {
        (str(r[0]), str(r[1]))
        for r in conn.execute("SELECT folder, notice FROM budget_notices WHERE sent_at >= ?", (since,))
    }


class UsageMixin(StoreCore):
    """The Store's usage, caps and budget notices."""

    async def add_usage(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Upsert-add usage rows (day, folder, model, counts...) in one transaction."""
        await self.run(lambda c: write_usage(c, rows))

    async def usage_rows(
        self, since_day: str, until_day: str | None = None, folder: str | None = None
    ) -> list[dict[str, Any]]:
        return await self.run(lambda c: usage_rows(c, since_day, until_day, folder))

    async def budget_caps(self) -> dict[str, Caps]:
        """folder (or '*') -> its (daily, monthly) cap overrides."""
        return await self.run(read_caps)

    async def set_budget_caps(
        self, scope: str, daily: float | None = UNSET, monthly: float | None = UNSET
    ) -> Caps:
        return await self.run(lambda c: write_caps(c, scope, daily, monthly))

    async def budget_state(
        self, month_start: str
    ) -> tuple[dict[str, Caps], list[dict[str, Any]], set[tuple[str, str]]]:
        """In one transaction: the cap overrides, the usage rows since `month_start`, and the
        notices sent since then (older ones are deleted)."""

        def q(c: sqlite3.Connection) -> tuple[dict[str, Caps], list[dict[str, Any]], set[tuple[str, str]]]:
            noticed = notices_since(c, month_start)
            return read_caps(c), usage_rows(c, month_start), noticed

        return await self.run(q)

    async def record_budget_notice(self, folder: str, notice: str, sent_at: str) -> bool:
        """Remember a notice as sent; False when it was already."""
        return await self.run(
            lambda c: bool(
                c.execute(
                    "INSERT OR IGNORE INTO budget_notices (folder, notice, sent_at) VALUES (?, ?, ?)",
                    (folder, notice, sent_at),
                ).rowcount
            )
        )
