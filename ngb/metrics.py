"""Prometheus metrics of one daemon (its own registry, so tests can run several daemons).

Counters and histograms are fed by the daemon's call sites as things happen; gauges that describe
the daemon's current state (live containers, actor states, inbox depths, outbox depth, channel
connections, slots in use) are set from a snapshot right before each scrape (`refresh`), so a
scrape is always current and nothing has to poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from .records import WebRequest

ERROR_KINDS = (
    "actor_crash",  # a GroupActor raised; the supervisor restarted it
    "turn_failed",  # a turn could not be answered (container died, timeout, agent error)
    "delivery",  # the outbox could not hand a message to its channel
    "store",  # a database write needed a retry / failed
    "message_rejected",  # the router refused an inbound message (too large, empty)
    "model_upstream",  # the model API answered an error
    "web",  # an unexpected exception in a web handler
)


class _Sampled(Collector):
    """Counters whose value lives elsewhere (e.g. `Store.write_errors`), read at scrape time."""

    def __init__(self) -> None:
        self.samplers: list[Callable[[], Iterable[Metric]]] = []

    def collect(self) -> Iterable[Metric]:
        for sampler in self.samplers:
            try:
                yield from sampler()
            except Exception:  # noqa: BLE001, S112 - a broken sampler must not break the scrape
                continue


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.started = time.time()
        r = self.registry
        # -- messages and turns ------------------------------------------------------------
        self.messages_in = Counter("ngb_messages_in", "Inbound messages stored", ["channel"], registry=r)
        self.messages_out = Counter("ngb_messages_out", "Bot messages delivered", ["channel"], registry=r)
        self.routed = Counter("ngb_messages_routed", "Routing outcomes", ["outcome"], registry=r)
        self.unregistered_dropped = Counter(
            "ngb_unregistered_dropped", "Messages of unregistered chats past the quota, not stored", ["channel"], registry=r
        )
        self.turns = Counter("ngb_turns", "Input batches handed to an agent", ["group"], registry=r)
        self.preview_edits = Counter("ngb_preview_edits", "Live preview posts and edits that reached a platform",
                                     ["channel"], registry=r)
        self.turn_latency = Histogram(
            "ngb_turn_first_reply_seconds",
            "Time from a batch handed to the agent to its first reply",
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
            registry=r,
        )
        self.reply_latency = Histogram(
            "ngb_reply_latency_seconds",
            "Time from a triggering message being stored to the first reply to it",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
            registry=r,
        )
        # -- containers and actors -----------------------------------------------------------
        self.container_starts = Counter("ngb_container_starts", "Agent containers started", ["group"], registry=r)
        self.container_start_failures = Counter(
            "ngb_container_start_failures", "Agent containers that could not be started", ["group"], registry=r
        )
        self.live_containers = Gauge("ngb_live_containers", "Agent containers running now", registry=r)
        self.container_cap = Gauge("ngb_container_slots", "Most agent containers allowed at once", registry=r)
        self.slots_in_use = Gauge("ngb_container_slots_in_use", "Container slots taken now", registry=r)
        self.slot_wait = Histogram(
            "ngb_slot_wait_seconds", "Time a group waited for a container slot",
            buckets=(0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300), registry=r,
        )
        self.actor_restarts = Counter("ngb_actor_restarts", "Actor crashes followed by a restart", ["group"], registry=r)
        self.actors = Gauge("ngb_actors", "Group actors by state", ["state"], registry=r)
        self.inbox_depth = Gauge("ngb_actor_inbox_depth", "Wake-ups queued in an actor's inbox", ["group"], registry=r)
        self.unanswered = Gauge(
            "ngb_group_unanswered_messages", "Inbound messages past the group's cursor (sampled)", ["group"], registry=r
        )
        # -- delivery ------------------------------------------------------------------------
        self.outbox_depth = Gauge("ngb_outbox_depth", "Outbox rows waiting for delivery", registry=r)
        self.outbox_failed = Gauge("ngb_outbox_failed", "Outbox rows given up on", registry=r)
        self.outbox_retries = Counter("ngb_outbox_retries", "Failed delivery attempts", registry=r)
        # -- model, tasks, channels, errors ----------------------------------------------------
        self.model_tokens = Counter("ngb_model_tokens", "Model tokens", ["group", "kind"], registry=r)
        self.model_proxy_refused = Counter(
            "ngb_model_proxy_refused", "Requests and connections the model proxy refused", ["group", "reason"], registry=r
        )
        self.task_runs = Counter("ngb_task_runs", "Scheduled task runs by outcome", ["outcome"], registry=r)
        self.channel_state = Gauge("ngb_channel_connected", "1 when the channel is connected", ["channel"], registry=r)
        self.media_files = Gauge("ngb_media_files", "Files in since start: taken, or refused with a note (docs/media.md)",
                                 ["outcome"], registry=r)
        self.transcriptions = Gauge("ngb_media_transcriptions", "Voice transcriptions since start", ["outcome"], registry=r)
        self.web_requests = Counter(
            "ngb_web_requests", "Requests through the egress door (docs/web-access.md)", ["group", "verdict"], registry=r
        )
        self.web_bytes = Counter(
            "ngb_web_bytes", "Bytes through the egress door (up: agent to site)", ["group", "direction"], registry=r
        )
        # -- spend and disk (sampled at each scrape) --------------------------------------------
        self.budget_spent = Gauge("ngb_budget_spent_usd", "Model spend in the budget period now running (UTC day, month)",
                                  ["group", "period"], registry=r)
        self.budget_cap = Gauge("ngb_budget_cap_usd", "The budget cap in force, where one is set (docs/budgets.md)",
                                ["group", "period"], registry=r)
        self.disk_free = Gauge("ngb_state_disk_free_bytes", "Free bytes on the state directory's file system", registry=r)
        self.disk_size = Gauge("ngb_state_disk_size_bytes", "Size of the state directory's file system", registry=r)
        self.errors = Counter("ngb_errors", "Errors by kind", ["kind"], registry=r)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
        # -- the web server itself -------------------------------------------------------------
        self.http_requests = Counter("ngb_http_requests", "HTTP requests served", ["method", "status"], registry=r)
        self.http_latency = Histogram(
            "ngb_http_request_seconds", "HTTP request handling time (to the response headers)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=r,
        )
        self.info = Info("ngb_build", "Version of the daemon", registry=r)
        self.uptime = Gauge("ngb_uptime_seconds", "Seconds since the daemon started", registry=r)
        self.uptime.set_function(lambda: time.time() - self.started)
        self._sampled = _Sampled()
        r.register(self._sampled)

    def web_request(self, request: WebRequest) -> None:
        """One request through the egress door, counted by group and verdict, and its bytes."""
        self.web_requests.labels(request.folder, request.verdict.value).inc()
        if request.bytes_up:
            self.web_bytes.labels(request.folder, "up").inc(request.bytes_up)
        if request.bytes_down:
            self.web_bytes.labels(request.folder, "down").inc(request.bytes_down)

    def error(self, kind: str, n: float = 1) -> None:
        self.errors.labels(kind).inc(n)

    def sampled_counter(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A counter read from somewhere else at scrape time (name without `_total`)."""

        def sample() -> Iterable[Metric]:
            family = CounterMetricFamily(name, documentation)
            family.add_metric([], float(read()))
            yield family

        self._sampled.samplers.append(sample)

    def refresh(
        self,
        *,
        live_containers: int,
        cap: int,
        slots_in_use: int,
        actor_states: Mapping[str, int],
        inbox_depths: Mapping[str, int],
        channels: Mapping[str, str],
        outbox: Mapping[str, int] | None = None,
        unanswered: Mapping[str, int] | None = None,
        outbox_retries: int | None = None,
        budgets: Mapping[tuple[str, str], tuple[float, float | None]] | None = None,
        disk: tuple[int, int] | None = None,
    ) -> None:
        """Set the state gauges from a snapshot taken just before a scrape. ``budgets``: (group,
        period) -> (spent, cap or None), the group ``(all)`` for the daemon's total; ``disk``:
        (free, size) bytes of the state directory's file system."""
        if budgets is not None:
            self._replace_pairs(self.budget_spent, {k: spent for k, (spent, _cap) in budgets.items()})
            self._replace_pairs(self.budget_cap, {k: cap for k, (_spent, cap) in budgets.items() if cap})
        if disk is not None:
            self.disk_free.set(disk[0])
            self.disk_size.set(disk[1])
        self.live_containers.set(live_containers)
        self.container_cap.set(cap)
        self.slots_in_use.set(slots_in_use)
        for state in ("idle", "waiting_slot", "starting", "running", "stopping", "backing_off", *actor_states):
            self.actors.labels(state).set(actor_states.get(state, 0))
        self._replace(self.inbox_depth, inbox_depths)
        for name, state in channels.items():
            self.channel_state.labels(name).set(1 if state == "connected" else 0)
        if outbox is not None:
            self.outbox_depth.set(outbox.get("pending", 0))
            self.outbox_failed.set(outbox.get("failed", 0))
        if unanswered is not None:
            self._replace(self.unanswered, unanswered)
        if outbox_retries is not None and outbox_retries > self.outbox_retries._value.get():
            # OutboxSender counts its retries itself; mirror that until it calls inc() directly.
            self.outbox_retries._value.set(outbox_retries)

    @staticmethod
    def _replace(gauge: Gauge, values: Mapping[str, int]) -> None:
        """Set a per-group gauge so removed groups disappear instead of freezing at a stale value."""
        known = {labels[0] for labels in list(gauge._metrics)}
        for gone in known - set(values):
            gauge.remove(gone)
        for group, value in values.items():
            gauge.labels(group).set(value)

    @staticmethod
    def _replace_pairs(gauge: Gauge, values: Mapping[tuple[str, str], float]) -> None:
        """`_replace` for a gauge with two labels."""
        for gone in {tuple(labels) for labels in list(gauge._metrics)} - set(values):
            gauge.remove(*gone)
        for labels, value in values.items():
            gauge.labels(*labels).set(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)
