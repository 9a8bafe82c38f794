"""Activity per UTC hour and group, for the dashboard's charts: the `activity` table (migration 14),
upsert-added in batches by ngb/activity.py, read back summed per hour or per day."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import attrs

from .core import StoreCore

# The counts, in the order they travel (ngb/activity.py); reply_ms_max is kept as a maximum.
COUNTS = ("messages_in", "messages_out", "turns", "failed_turns", "replies", "reply_ms_sum", "reply_ms_max",
          "cost_nanos")
KEEP_DAYS = 90

UPSERT = (
    f"INSERT INTO activity (hour, folder, {', '.join(COUNTS)}) VALUES (?, ?, {', '.join('?' * len(COUNTS))})"
    " ON CONFLICT(hour, folder) DO UPDATE SET "
    + ", ".join("reply_ms_max = max(reply_ms_max, excluded.reply_ms_max)" if f == "reply_ms_max"
                else f"{f} = {f} + excluded.{f}" for f in COUNTS)
)


@attrs.frozen
class ActivityBucket:
    """One hour (``2026-12-04T21``) or day (``2026-12-04``) of activity, all groups or one."""

    bucket: str
    messages_in: int = 0
    messages_out: int = 0
    turns: int = 0
    failed_turns: int = 0
    replies: int = 0
    reply_ms_sum: int = 0
    reply_ms_max: int = 0
    cost_nanos: int = 0


def write_activity(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Upsert-add rows of (hour, folder, counts in COUNTS order)."""
    conn.executemany(UPSERT, list(rows))


def read_activity(conn: sqlite3.Connection, since_hour: str, by_day: bool, folder: str | None) -> list[ActivityBucket]:
    bucket = "substr(hour, 1, 10)" if by_day else "hour"
    sums = ", ".join("MAX(reply_ms_max)" if f == "reply_ms_max" else f"SUM({f})" for f in COUNTS)
    sql = f"SELECT {bucket} AS b, {sums} FROM activity WHERE hour >= ?"
    args: list[Any] = [since_hour]
    if folder is not None:
        sql += " AND folder = ?"
        args.append(folder)
    sql += " GROUP BY b ORDER BY b"
    return [ActivityBucket(row[0], *(int(v or 0) for v in row[1:])) for row in conn.execute(sql, args).fetchall()]


class ActivityMixin(StoreCore):
    """The Store's hourly activity."""

    async def add_activity(self, rows: Iterable[tuple[Any, ...]], prune_before: str | None = None) -> None:
        """Upsert-add (hour, folder, counts...) rows in one transaction; drop hours before ``prune_before``."""

        def write(conn: sqlite3.Connection) -> None:
            write_activity(conn, rows)
            if prune_before is not None:
                conn.execute("DELETE FROM activity WHERE hour < ?", (prune_before,))

        await self.run(write)

    async def activity(self, since_hour: str, *, by_day: bool = False, folder: str | None = None) -> list[ActivityBucket]:
        return await self.run(lambda c: read_activity(c, since_hour, by_day, folder))
