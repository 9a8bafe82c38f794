"""Schedules of tasks: validation and the next run time (cron in an IANA zone, interval, once).

Rules (see docs/tasks.md):
- cron runs on the wall clock of the task's zone. A time that does not exist (the hour skipped
  when clocks go forward) runs shifted forward by the gap (02:30 -> 03:30 in Europe/Berlin), once.
  A time that exists twice (the hour repeated when clocks go back) runs once, in its first pass,
  unless the expression fires every hour (hour field `*`): then it runs in both passes, because
  those jobs follow elapsed time.
- interval is anchored to the schedule: the next run is the previous *scheduled* time plus k
  intervals, the first such time after now. Late or slow runs never make it drift.
- once runs at its time and then the task is completed.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ..records import ScheduleKind

# Zone offsets never change by more than this at a transition; bounds the cron search.
_MAX_SHIFT = timedelta(hours=3)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


class ScheduleError(ValueError):
    """A schedule the daemon refuses; the message is shown to the user as is."""


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from exc


def parse_interval(value: str) -> float:
    """'90' (seconds), '90s', '30m', '2h', '1d', '1w', '1h30m' -> seconds."""
    text = value.strip().lower().replace(" ", "")
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ScheduleError(f"interval must be a duration like 30m, 2h, 1d or a number of seconds, not {value!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def validate(kind: str, value: str, tz: str | None, *, min_interval: float, now: datetime) -> datetime:
    """Check a schedule and return its first run time (UTC)."""
    try:
        k = ScheduleKind(kind)
    except ValueError as exc:
        raise ScheduleError(f"schedule type must be cron, interval or once, not {kind!r}") from exc
    tzinfo = zone(tz)
    if k is ScheduleKind.CRON:
        if not croniter.is_valid(value) or len(value.split()) != 5:
            raise ScheduleError(f"invalid cron expression {value!r} (five fields: minute hour day month weekday)")
        return next_cron(value, tzinfo, now)
    if k is ScheduleKind.INTERVAL:
        seconds = parse_interval(value)
        if not math.isfinite(seconds) or seconds < min_interval:
            raise ScheduleError(f"interval must be at least {min_interval:g} seconds")
        return now + timedelta(seconds=seconds)
    at = parse_once(value, tzinfo)
    if at <= now:
        raise ScheduleError(f"{value} is in the past")
    return at


def parse_once(value: str, tzinfo: ZoneInfo) -> datetime:
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise ScheduleError(f"once needs an ISO time like 2026-12-24T18:00, not {value!r}") from exc
    if at.tzinfo is None:
        at = at.replace(tzinfo=tzinfo)
    return at.astimezone(UTC)


def _instants(naive: datetime, tzinfo: ZoneInfo, both_folds: bool) -> list[datetime]:
    """The UTC instants a local wall time stands for: one normally, none-made-one in a gap
    (shifted forward by the gap, PEP 495 fold=0), one or two in a repeated hour."""
    first = naive.replace(tzinfo=tzinfo, fold=0)
    second = naive.replace(tzinfo=tzinfo, fold=1)
    a, b = first.astimezone(UTC), second.astimezone(UTC)
    if a == b:
        return [a]
    # Gap: fold=0 maps to the later instant (offset before the change), fold=1 to the earlier.
    if a > b:
        return [a]
    return [a, b] if both_folds else [a]


def _every_hour(expr: str) -> bool:
    hours = croniter(expr).expanded[1]
    return hours == ["*"] or len(hours) == 24


def next_cron(expr: str, tzinfo: ZoneInfo, after: datetime) -> datetime:
    """The first instant strictly after `after` at which the cron expression fires in `tzinfo`."""
    after = after.astimezone(UTC)
    both = _every_hour(expr)
    start = after.astimezone(tzinfo).replace(tzinfo=None, fold=0) - _MAX_SHIFT
    it = croniter(expr, start)
    best: datetime | None = None
    for _ in range(100_000):
        naive = it.get_next(datetime)
        if best is not None and naive - _MAX_SHIFT > best.astimezone(tzinfo).replace(tzinfo=None):
            break
        for instant in _instants(naive, tzinfo, both):
            if instant > after and (best is None or instant < best):
                best = instant
    if best is None:  # pragma: no cover - croniter raises first for impossible expressions
        raise ScheduleError(f"cron expression {expr!r} never fires")
    return best


def next_after(kind: ScheduleKind | str, value: str, tz: str, slot: datetime, now: datetime) -> datetime | None:
    """Where a task's next run goes once the run scheduled for `slot` was claimed at `now`.

    The first scheduled time strictly after both `slot` and `now`, so a task that missed several
    runs (the daemon was down) runs once for all of them and then resumes its schedule. None: the
    task is done (once)."""
    k = ScheduleKind(kind)
    if k is ScheduleKind.ONCE:
        return None
    if k is ScheduleKind.CRON:
        return next_cron(value, zone(tz), max(slot, now))
    seconds = parse_interval(value)
    if seconds <= 0:
        raise ScheduleError("interval must be positive")
    step = timedelta(seconds=seconds)
    if now < slot:
        return slot + step
    k_steps = math.floor((now - slot) / step) + 1
    return slot + k_steps * step


def resume_next(kind: ScheduleKind | str, value: str, tz: str, next_run: datetime | None, now: datetime) -> datetime | None:
    """next_run for a task being resumed: slots missed while paused are dropped (cron and interval
    go to their next future slot, interval still on its original grid); a once task whose time
    passed while paused runs right away."""
    k = ScheduleKind(kind)
    if next_run is None or next_run > now:
        return next_run
    if k is ScheduleKind.ONCE:
        return now
    return next_after(k, value, tz, next_run, now)
