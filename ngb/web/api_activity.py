"""The dashboard's charts (docs/api.md, "Activity").

    GET /api/activity?hours=48 | ?days=30 [&group=<folder>]
        messages in and out, turns, failed turns, reply latency (mean and worst, from a triggering
        message stored to its first reply) and spend, per hour (``hours``, 1-168) or per UTC day
        (``days``, 1-90), all groups summed or one group; every bucket of the range is present
        (zeros where nothing happened), oldest first.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from quart import request
from quart_trio import QuartTrio

from ..activity import hour_of
from ..spend import usd
from ..store.activity import ActivityBucket
from .common import ApiError, int_arg, str_arg

if TYPE_CHECKING:
    from .backend import WebBackend


def bucket_json(b: ActivityBucket) -> dict[str, Any]:
    return {
        "bucket": b.bucket,
        "messages_in": b.messages_in,
        "messages_out": b.messages_out,
        "turns": b.turns,
        "failed_turns": b.failed_turns,
        "replies": b.replies,
        "reply_avg_s": round(b.reply_ms_sum / b.replies / 1000, 3) if b.replies else None,
        "reply_max_s": round(b.reply_ms_max / 1000, 3) if b.replies else None,
        "cost_usd": usd(b.cost_nanos),
    }


def bucket_keys(now: datetime, count: int, by_day: bool) -> list[str]:
    """The range's bucket names, oldest first, ending with the one ``now`` is in."""
    if by_day:
        return [(now - timedelta(days=i)).strftime("%Y-%m-%d") for i in range(count - 1, -1, -1)]
    return [hour_of(now - timedelta(hours=i)) for i in range(count - 1, -1, -1)]


def register(app: QuartTrio, daemon: WebBackend) -> None:
    @app.get("/api/activity")
    async def activity() -> Any:
        by_day = bool(request.args.get("days"))
        count = int_arg("days", 30, lo=1, hi=90) if by_day else int_arg("hours", 48, lo=1, hi=168)
        folder = str_arg("group", max_len=64)
        if folder is not None:
            group = daemon.registry.by_folder(folder)
            if group is None:
                raise ApiError(404, f"no group with the folder {folder!r}")
            folder = group.folder
        await daemon.activity.flush()  # the answer holds everything counted so far
        keys = bucket_keys(datetime.now(UTC), count, by_day)
        since = f"{keys[0]}T00" if by_day else keys[0]
        found = {b.bucket: b for b in await daemon.store.activity(since, by_day=by_day, folder=folder)}
        return {
            "bucket": "day" if by_day else "hour",
            "group": folder,
            "series": [bucket_json(found.get(k) or ActivityBucket(k)) for k in keys],
        }
