"""The web through the egress door (docs/web-access.md) in the database: `web_log`, one row per
request the door decided (a group's newest `KEEP_PER_FOLDER`, none older than `KEEP_DAYS`), and
`web_usage`, the per-group sums of each UTC day (upsert-added, kept like the model usage). A
group's own web settings are columns of `groups` (rows.py). Like the model usage, both stay when a
group is removed: they are the record of what it did."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from ..records import WebRequest, WebUsageDay, WebVerdict, format_time, utcnow
from .core import StoreCore
from .rows import web_request_from_row, web_request_to_row, web_usage_from_row

KEEP_PER_FOLDER = 500  # log rows kept per group (the newest)
KEEP_DAYS = 30  # log rows older than this go, whatever the count
MAX_RECENT = 500

UPSERT_WEB_USAGE = (
    "INSERT INTO web_usage (folder, day, requests, refused, bytes_up, bytes_down) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(folder, day) DO UPDATE SET requests = requests + excluded.requests,"
    " refused = refused + excluded.refused, bytes_up = bytes_up + excluded.bytes_up,"
    " bytes_down = bytes_down + excluded.bytes_down"
)


def utc_day(time: datetime) -> str:
    """The UTC day (YYYY-MM-DD) a moment falls on: the key of web_usage."""
    return time.astimezone(UTC).date().isoformat()


def write_web(conn: sqlite3.Connection, requests: Sequence[WebRequest], now: datetime) -> None:
    """Log the requests, add them to their days' sums and trim the log (one transaction: `run`)."""
    rows = [web_request_to_row(r) for r in requests]
    cols = list(rows[0])
    conn.executemany(
        f"INSERT INTO web_log ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        [tuple(row[c] for c in cols) for row in rows],
    )
    sums: dict[tuple[str, str], list[int]] = {}
    for r in requests:
        day = sums.setdefault((r.folder, utc_day(r.time)), [0, 0, 0, 0])
        day[0] += 1
        day[1] += r.verdict is WebVerdict.REFUSED
        day[2] += r.bytes_up
        day[3] += r.bytes_down
    conn.executemany(UPSERT_WEB_USAGE, [(*key, *counts) for key, counts in sums.items()])
    conn.execute("DELETE FROM web_log WHERE time < ?", (format_time(now - timedelta(days=KEEP_DAYS)),))
    for folder in {r.folder for r in requests}:
        edge = conn.execute(
            "SELECT time, id FROM web_log WHERE folder = ? ORDER BY time DESC, id DESC LIMIT 1 OFFSET ?",
            (folder, KEEP_PER_FOLDER - 1),
        ).fetchone()
        if edge is not None:
            conn.execute(
                "DELETE FROM web_log WHERE folder = ? AND (time < ? OR (time = ? AND id < ?))",
                (folder, edge[0], edge[0], edge[1]),
            )


class WebMixin(StoreCore):
    """The Store's web log and web usage."""

    async def record_web(self, requests: Sequence[WebRequest]) -> None:
        """Keep what the door decided: the log rows, the day's sums, the log bounded; one transaction."""
        if not requests:
            return
        batch = list(requests)
        await self.run(lambda c: write_web(c, batch, utcnow()))

    async def web_bytes_on(self, folder: str, day: str) -> int:
        """The bytes a group moved through the door (both ways) on a UTC day (YYYY-MM-DD)."""

        def q(c: sqlite3.Connection) -> int:
            row = c.execute(
                "SELECT bytes_up + bytes_down FROM web_usage WHERE folder = ? AND day = ?", (folder, day)
            ).fetchone()
            return int(row[0]) if row else 0

        return await self.run(q)

    async def recent_web(self, folder: str | None = None, limit: int = 50) -> list[WebRequest]:
        """The newest logged requests first (a group's, or every group's)."""
        limit = max(0, min(limit, MAX_RECENT))
        if folder is None:
            return await self.select(
                web_request_from_row, "SELECT * FROM web_log ORDER BY time DESC, id DESC LIMIT ?", (limit,)
            )
        return await self.select(
            web_request_from_row,
            "SELECT * FROM web_log WHERE folder = ? ORDER BY time DESC, id DESC LIMIT ?",
            (folder, limit),
        )

    async def web_usage(self, folder: str | None = None, days: int = 7) -> list[WebUsageDay]:
        """The per-group day sums of the last `days` UTC days (today included), newest day first."""
        since = (utcnow().date() - timedelta(days=max(1, days) - 1)).isoformat()
        sql = "SELECT * FROM web_usage WHERE day >= ?"
        args: tuple[str, ...] = (since,)
        if folder is not None:
            sql += " AND folder = ?"
            args += (folder,)
        return await self.select(web_usage_from_row, sql + " ORDER BY day DESC, folder", args)
