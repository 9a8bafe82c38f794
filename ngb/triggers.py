"""When does the bot answer? Trigger words, mentions, sender allowlists, rate limits."""

from __future__ import annotations

import re
import time
from collections import deque
from functools import lru_cache

from .identity import sender_allowed
from .records import Group, Message

__all__ = ["RateLimiter", "is_triggered", "sender_allowed", "starts_with_trigger"]


@lru_cache(maxsize=64)
def _trigger_re(trigger: str) -> re.Pattern[str]:
    # The trigger word at the start (after optional blanks), case-insensitive, ending on a word
    # boundary: "@Andy hi" and "@andy, hi" trigger; "@Andyx hi" and "hi @Andy" do not.
    return re.compile(r"^\s*" + re.escape(trigger) + r"(?![\w])", re.IGNORECASE)


def starts_with_trigger(text: str, trigger: str) -> bool:
    return bool(trigger) and _trigger_re(trigger).match(text) is not None


def is_triggered(group: Group, message: Message, default_trigger: str) -> bool:
    """Should this stored message wake the group's agent?"""
    if message.from_bot or message.reaction_to is not None or not sender_allowed(group, message):
        return False  # (a reaction is context for the next turn, never a trigger)
    if group.is_main or not group.requires_trigger:
        return True
    return message.mentions_bot or starts_with_trigger(message.text, group.trigger or default_trigger)


class RateLimiter:
    """Sliding one-minute windows per key; `allow` records the hit when it is allowed."""

    def __init__(self, per_minute: int, *, window: float = 60.0, clock=time.monotonic) -> None:
        self.per_minute = per_minute
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def allow(self, key: str, limit: int | None = None) -> bool:
        """Record a hit for key if it is under `limit` (default: this limiter's) per window."""
        per_minute = self.per_minute if limit is None else limit
        if per_minute <= 0:
            return True
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and now - hits[0] >= self.window:
            hits.popleft()
        if len(hits) >= per_minute:
            return False
        hits.append(now)
        if len(self._hits) > 10_000:  # bounded memory under a flood of distinct senders
            for stale in [k for k, v in self._hits.items() if not v or now - v[-1] >= self.window]:
                del self._hits[stale]
        return True

    def retry_after(self, key: str) -> float:
        hits = self._hits.get(key)
        if not hits:
            return 0.0
        return max(0.0, self.window - (self._clock() - hits[0]))
