"""What the daemon did, per UTC hour and group, for the dashboard's charts (docs/api.md,
"Activity"): messages in and out, turns, failed turns, the time from a triggering message to its
first reply, and model spend. Kept by the daemon itself, no outside service.

Counts are added in memory where things happen (the router, the outbox, the actors' turn events,
the budgets' cost of each model response) and written to the store's `activity` table in one
transaction every `flush_every` seconds and at shutdown: never a write per message. A kill -9
loses at most the last interval of chart data (the messages themselves are in the store). Only
registered groups are counted; a chat nobody registered has no folder to chart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from .store.activity import COUNTS, KEEP_DAYS

log = logging.getLogger(__name__)

FLUSH_EVERY = 30.0
_INDEX = {name: i for i, name in enumerate(COUNTS)}


def hour_of(moment: datetime) -> str:
    """The activity table's hour key: ``2026-12-04T21`` (UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H")


class Activity:
    def __init__(self, store: Any, *, flush_every: float = FLUSH_EVERY,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.flush_every = flush_every
        self.clock = clock
        self._pending: dict[tuple[str, str], list[int]] = {}

    def _add(self, folder: str, name: str, n: int = 1) -> None:
        row = self._pending.setdefault((hour_of(self.clock()), folder), [0] * len(COUNTS))
        i = _INDEX[name]
        row[i] = max(row[i], n) if name == "reply_ms_max" else row[i] + n

    def message_in(self, folder: str | None) -> None:
        """A message stored for ``folder`` (None: a chat nobody registered, not counted)."""
        if folder is not None:
            self._add(folder, "messages_in")

    def message_out(self, folder: str | None) -> None:
        if folder is not None:
            self._add(folder, "messages_out")

    def turn(self, folder: str) -> None:
        self._add(folder, "turns")

    def failed_turn(self, folder: str) -> None:
        self._add(folder, "failed_turns")

    def reply(self, folder: str, seconds: float) -> None:
        """The first reply to a triggering message, ``seconds`` after it was stored."""
        ms = max(0, round(seconds * 1000))
        self._add(folder, "replies")
        self._add(folder, "reply_ms_sum", ms)
        self._add(folder, "reply_ms_max", ms)

    def cost(self, folder: str, nanos: int) -> None:
        if nanos > 0:
            self._add(folder, "cost_nanos", nanos)

    async def flush(self) -> None:
        """Write what was counted since the last flush (kept in memory for the next one if it fails)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        rows = [(hour, folder, *counts) for (hour, folder), counts in pending.items()]
        prune = hour_of(self.clock() - timedelta(days=KEEP_DAYS))
        try:
            await self.store.add_activity(rows, prune_before=prune)
        except Exception as exc:  # noqa: BLE001 - charts must never take the daemon down
            log.warning("activity: could not write %d rows (%s); kept for the next flush", len(rows), exc)
            for key, counts in pending.items():
                row = self._pending.setdefault(key, [0] * len(COUNTS))
                for i, n in enumerate(counts):
                    row[i] = max(row[i], n) if COUNTS[i] == "reply_ms_max" else row[i] + n

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await trio.sleep(self.flush_every)
                await self.flush()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.flush()
