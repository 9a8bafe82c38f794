"""The web through the egress door (docs/web-access.md): what the groups' agents reached.

    GET    /api/web?group=&limit=&days=  {"day": today (UTC), "recent": the newest logged requests
                                         first (default 50), "usage": per-group sums per UTC day,
                                         newest first (default 7 days)}; `group`: one group's folder

A group's web settings are part of the group: PATCH /api/groups/<chat> (api_groups.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart_trio import QuartTrio

from ..folders import validate_folder
from ..records import to_json, utcnow
from ..store.web import MAX_RECENT
from .common import ApiError, int_arg, str_arg

if TYPE_CHECKING:
    from .backend import WebBackend

MAX_DAYS = 366


def register(app: QuartTrio, daemon: WebBackend) -> None:
    @app.get("/api/web")
    async def web() -> Any:
        limit = int_arg("limit", 50, lo=0, hi=MAX_RECENT)
        days = int_arg("days", 7, lo=1, hi=MAX_DAYS)
        folder = str_arg("group", max_len=64)
        if folder is not None:
            try:
                validate_folder(folder)
            except ValueError as exc:
                raise ApiError(400, f"'group': {exc}") from None
            registered = daemon.registry.by_folder(folder)
            folder = registered.folder if registered is not None else folder  # the log keeps its spelling
        recent = await daemon.store.recent_web(folder, limit) if limit else []
        usage = await daemon.store.web_usage(folder, days)
        return {
            "day": utcnow().date().isoformat(),
            "recent": [to_json(r) for r in recent],
            "usage": [to_json(u) for u in usage],
        }
