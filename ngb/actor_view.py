"""What is seen of an actor from outside (ActorView, read by /status and /debug/actors and written
only by the actor and its supervisor) and how an actor is set up (ActorSettings, ActorMedia)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from .media.handoff import Handoff
from .media.outgoing import Outgoing
from .records import ThreadMode


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
    thread: str | None = None  # the thread the container serves (a per_thread group; ngb/lanes.py)


@attrs.define
class ActorSettings:
    trigger: str
    assistant_name: str
    idle_timeout: float = 300.0
    turn_timeout: float = 900.0
    start_timeout: float = 60.0
    prescript_timeout: float = 60.0
    previews: bool = True  # live previews where the group does not choose (Group.previews)
    threads: ThreadMode = ThreadMode.SHARED  # where the group does not choose (Group.threads)

    @classmethod
    def from_config(cls, config: Any) -> ActorSettings:
        """From the daemon's Config (ngb/config/settings.py)."""
        return cls(trigger=config.trigger, assistant_name=config.assistant_name, idle_timeout=config.idle_timeout,
                   turn_timeout=config.turn_timeout, prescript_timeout=config.prescript_timeout,
                   previews=config.previews, threads=config.threads)


@attrs.frozen
class ActorMedia:
    """What the actor uses of media: the hand-off of a batch's files, a reply's images, and the
    tools' per-turn count (ngb/media/; all optional: without them a batch is text only)."""

    handoff: Handoff | None = None
    outgoing: Outgoing | None = None
    new_turn: Callable[[str], None] = lambda folder: None
