"""What is seen of an actor from outside (ActorView, read by /status and /debug/actors and written
only by the actor and its supervisor) and how an actor is set up (ActorSettings)."""

from __future__ import annotations

import attrs


@attrs.define
class ActorView:
    """What /debug/actors shows of an actor; updated by the actor as it works."""

    folder: str
    chat: str
    state: str = "idle"  # idle | waiting_slot | starting | running | stopping | backing_off
    container_id: str | None = None
    container_started: float | None = None
    session_id: str | None = None
    current_batches: dict[int, int] = attrs.field(factory=dict)
    turns: int = 0
    replies: int = 0
    last_turn_error: str | None = None
    crash_count: int = 0
    last_crash: str | None = None
    last_crash_at: str | None = None
    slot_wait_started: float | None = None


@attrs.define
class ActorSettings:
    trigger: str
    assistant_name: str
    idle_timeout: float = 300.0
    turn_timeout: float = 900.0
    start_timeout: float = 60.0
    prescript_timeout: float = 60.0
