"""At most so many log lines a window from one source (a group's refusals at a door): a steered
agent must not flood the daemon's log. The lines left out are counted, and the next line logged
says how many; what they were about stays in the metrics and the store."""

from __future__ import annotations

import math
import time

import attrs


@attrs.define
class LogBudget:
    lines: int = 30
    window: float = 60.0  # seconds
    _start: float = -math.inf
    _used: int = 0
    _skipped: int = 0

    def take(self) -> int | None:
        """None: leave this line out (it is counted); else how many were left out before it."""
        now = time.monotonic()
        if now - self._start >= self.window:
            self._start, self._used = now, 0
        if self._used >= self.lines:
            self._skipped += 1
            return None
        self._used += 1
        skipped, self._skipped = self._skipped, 0
        return skipped
