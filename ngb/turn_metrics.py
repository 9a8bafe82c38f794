"""The daemon's turn figures, from the router's outcomes and the actors' events: turns, how long a
reply took (from the message's arrival, and from the batch reaching the agent), slot waits,
container starts, failed turns and task runs (ngb/metrics.py), and since when a group's oldest open
batch runs (/debug/actors); and the gauges sampled every few seconds (outbox depth, channels,
media)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import trio

from .activity import Activity
from .metrics import Metrics
from .records import Message

MAX_ARRIVALS = 10_000  # triggered messages remembered until their batch starts (oldest dropped first)


class TurnMetrics:
    def __init__(self, metrics: Metrics, live_containers: Callable[[], int], activity: Activity | None = None) -> None:
        self.metrics = metrics
        self.activity = activity  # the same turns, hour by hour, for the dashboard's charts
        self._live_containers = live_containers
        self._batch_started: dict[tuple[str, int], tuple[float, float]] = {}  # -> (sent, arrived)
        self._arrived: dict[int, float] = {}  # triggered message id -> when it was routed

    def routed(self, message: Message, outcome: str) -> None:
        self.metrics.routed.labels(outcome).inc()
        if outcome == "triggered":
            self._arrived[message.id] = trio.current_time()
            while len(self._arrived) > MAX_ARRIVALS:
                self._arrived.pop(next(iter(self._arrived)))

    def running_since(self, folder: str) -> float | None:
        """When the group's oldest open batch went to its agent (trio clock), or None."""
        starts = [sent for (f, _batch), (sent, _arrived) in list(self._batch_started.items()) if f == folder]
        return min(starts) if starts else None

    async def sample_forever(self, store: Any, channels: Mapping[str, Any], media: Any, handoff: Any,
                             every: float = 5.0) -> None:
        """The gauges: outbox depth (``store``), each channel connected or not, files taken and
        refused (``media``: the MediaIntake), transcriptions (``handoff``'s transcriber, if any)."""
        m = self.metrics
        while True:
            try:
                m.outbox_depth.set(await store.outbox_depth())
            except Exception:  # noqa: BLE001 - metrics must never take the daemon down
                pass
            for name, channel in channels.items():
                m.channel_state.labels(name).set(1 if channel.state == "connected" else 0)
            m.media_files.labels("taken").set(media.taken)
            m.media_files.labels("refused").set(media.refused)
            if handoff is not None:
                m.transcriptions.labels("ok").set(handoff.transcriber.done)
                m.transcriptions.labels("failed").set(handoff.transcriber.failed)
            await trio.sleep(every)

    def event(self, folder: str, kind: str, data: dict[str, Any]) -> None:
        now = trio.current_time()
        if kind == "slot_acquired":
            self.metrics.slot_wait.observe(data["wait"])
        elif kind == "container_started":
            self.metrics.container_starts.labels(folder).inc()
        elif kind == "container_start_failed":
            self.metrics.container_start_failures.labels(folder).inc()
        elif kind == "batch_sent":
            self.metrics.turns.labels(folder).inc()
            if self.activity is not None:
                self.activity.turn(folder)
            arrived = self._arrived.pop(data.get("first_message", -1), None)
            self._batch_started[(folder, data["batch"])] = (now, arrived if arrived is not None else now)
        elif kind == "first_reply":
            started = self._batch_started.pop((folder, data["batch"]), None)
            if started is not None:
                self.metrics.turn_latency.observe(now - started[0])
                self.metrics.reply_latency.observe(now - started[1])
                if self.activity is not None:
                    self.activity.reply(folder, now - started[1])
        elif kind == "result":
            self._batch_started.pop((folder, data["batch"]), None)
        elif kind == "turn_failed":
            self.metrics.error("turn_failed")
            if self.activity is not None:
                self.activity.failed_turn(folder)
        elif kind == "task_run_finished":
            self.metrics.task_runs.labels(data["outcome"]).inc(data.get("count", 1))
        self.metrics.live_containers.set(self._live_containers())
