"""What a budget counts and compares: a tally of token counts and their cost over a period, money
as integer nano-dollars (sums and cap comparisons are exact), the UTC day and month periods, the
caps of a group (or of all groups: GLOBAL), and why a call is refused (`Block`, with its notice).
ngb/budgets.py keeps the tallies and applies the caps."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from .store.usage import COUNT_FIELDS

NANO = 1_000_000_000
GLOBAL = "*"  # the budget_caps row of the global caps


@attrs.define
class Tally:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    requests: int = 0
    cost_nanos: int = 0
    cache_creation_1h_tokens: int = 0
    web_search_requests: int = 0
    web_fetch_requests: int = 0

    def add(self, counts: Iterable[int], cost_nanos: int) -> None:
        """Counts in COUNT_FIELDS order (the trailing ones may be left out: zero)."""
        for name, n in zip(COUNT_FIELDS, counts, strict=False):
            setattr(self, name, getattr(self, name) + n)
        self.cost_nanos += cost_nanos

    def to_json(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_creation_tokens": self.cache_creation_tokens,
            "cache_creation_1h_tokens": self.cache_creation_1h_tokens,
            "web_search_requests": self.web_search_requests,
            "web_fetch_requests": self.web_fetch_requests,
            "requests": self.requests,
            "cost_usd": usd(self.cost_nanos),
        }


def usd(nanos: int) -> float:
    return round(nanos / NANO, 6)


def nanos(amount_usd: float) -> int:
    return round(amount_usd * NANO)


def fmt_usd(nanos_or_usd: int | float, *, is_nanos: bool = True) -> str:
    amount = nanos_or_usd / NANO if is_nanos else float(nanos_or_usd)
    if amount == 0 or abs(amount) >= 1:
        return f"${amount:,.2f}"
    return f"${amount:.6f}".rstrip("0").rstrip(".") if abs(amount) < 0.01 else f"${amount:.2f}"


def day_of(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d")


def month_of(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m")


def next_day(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, at.day, tzinfo=UTC) + timedelta(days=1)


def next_month(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return datetime(at.year + (at.month == 12), at.month % 12 + 1, 1, tzinfo=UTC)


@attrs.frozen
class Caps:
    """USD; 0: no cap. `None` in an override: the config default."""

    daily: float = 0.0
    monthly: float = 0.0


@attrs.frozen
class Block:
    """Why a call is refused."""

    folder: str
    scope: str  # the group's folder, or GLOBAL
    kind: str  # "daily" | "monthly"
    period: str
    spent: int  # nano-USD
    cap: float  # USD
    resets_at: datetime

    @property
    def notice_key(self) -> str:
        return f"{'global' if self.scope == GLOBAL else 'group'}|{self.kind}|{self.period}|{nanos(self.cap)}"

    def text(self) -> str:
        when = "today" if self.kind == "daily" else "this month"
        whose = "across all groups" if self.scope == GLOBAL else "for this group"
        how = (
            f"ngb budget --global --{self.kind} <USD>"
            if self.scope == GLOBAL
            else f"ngb budget {self.folder} --{self.kind} <USD>"
        )
        api = "PATCH /api/budgets/" + ("global" if self.scope == GLOBAL else self.folder)
        return (
            f"budget reached: {fmt_usd(self.spent)} of {fmt_usd(self.cap, is_nanos=False)} {when} {whose}; "
            f"resets at {self.resets_at.strftime('%Y-%m-%d %H:%M')} UTC (model calls are paused until then); "
            f"raise with `{how}` (or {api})"
        )
