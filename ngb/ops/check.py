"""One line of `ngb doctor`: what was checked, how it went, and how to fix it (ngb/ops/doctor.py
and ngb/ops/channel_checks.py make them)."""

from __future__ import annotations

import attrs


@attrs.frozen
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "fail"
