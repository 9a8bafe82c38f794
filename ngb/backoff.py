"""Backoff: how long to wait before the next try of something that failed (the outbox's sends, a
crashed actor's restart)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable


def backoff_delay(
    attempt: int, *, base: float = 0.5, cap: float = 30.0, jitter: Callable[[], float] | None = None
) -> float:
    """Exponential backoff with jitter: 50-100% of base * 2^(attempt-1), capped."""
    raw = min(cap, base * math.pow(2, max(0, attempt - 1)))
    return raw * (0.5 + (jitter or random.random)() * 0.5)
