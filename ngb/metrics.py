"""Prometheus metrics of one daemon (its own registry, so tests can run several daemons)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_in = Counter("ngb_messages_in", "Inbound messages stored", ["channel"], registry=r)
        self.messages_out = Counter("ngb_messages_out", "Bot messages delivered", ["channel"], registry=r)
        self.routed = Counter("ngb_messages_routed", "Routing outcomes", ["outcome"], registry=r)
        self.turns = Counter("ngb_turns", "Input batches handed to an agent", ["group"], registry=r)
        self.turn_latency = Histogram(
            "ngb_turn_first_reply_seconds",
            "Time from a batch handed to the agent to its first reply",
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
            registry=r,
        )
        self.container_starts = Counter("ngb_container_starts", "Agent containers started", ["group"], registry=r)
        self.live_containers = Gauge("ngb_live_containers", "Agent containers running now", registry=r)
        self.slot_wait = Histogram(
            "ngb_slot_wait_seconds", "Time a group waited for a container slot",
            buckets=(0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300), registry=r,
        )
        self.actor_restarts = Counter("ngb_actor_restarts", "Actor crashes followed by a restart", ["group"], registry=r)
        self.outbox_depth = Gauge("ngb_outbox_depth", "Outbox rows waiting for delivery", registry=r)
        self.outbox_retries = Counter("ngb_outbox_retries", "Failed delivery attempts", registry=r)
        self.model_tokens = Counter("ngb_model_tokens", "Model tokens", ["group", "kind"], registry=r)
        self.task_runs = Counter("ngb_task_runs", "Scheduled task runs by outcome", ["outcome"], registry=r)
        self.channel_state = Gauge("ngb_channel_connected", "1 when the channel is connected", ["channel"], registry=r)
        self.errors = Counter("ngb_errors", "Errors by kind", ["kind"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
