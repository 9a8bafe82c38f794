"""The scheduler's part of the REST API: the CLI's change signal.

    POST /api/tasks/changed   tasks were changed in the database behind the daemon's back (the
                              `ngb tasks` CLI writes the store directly): re-plan the schedule now

Everything else under /api/tasks (list, create, update, pause, resume, cancel, runs) is served by
ngb/web/api_tasks.py. app.py calls `register(app, daemon)` first when this module exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from ..daemon import Daemon


def register(app: QuartTrio, daemon: Daemon) -> list[str]:
    @app.post("/api/tasks/changed")
    async def tasks_changed() -> Any:
        daemon.scheduler.poke()
        return {"ok": True, "next_due": daemon.scheduler.next_due and daemon.scheduler.next_due.isoformat()}

    return ["POST /api/tasks/changed"]
