"""Schedules of tasks: validation and the next run time (cron in an IANA zone, interval, once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .records import ScheduleKind


class ScheduleError(ValueError):
    """A schedule the daemon refuses; the message is shown to the user as is."""


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from exc


def validate(kind: str, value: str, tz: str | None, *, min_interval: float, now: datetime) -> datetime:
    """Check a schedule and return its first run time (UTC)."""
    try:
        k = ScheduleKind(kind)
    except ValueError as exc:
        raise ScheduleError(f"schedule type must be cron, interval or once, not {kind!r}") from exc
    tzinfo = zone(tz)
    if k is ScheduleKind.CRON:
        if not croniter.is_valid(value):
            raise ScheduleError(f"invalid cron expression {value!r} (five fields: minute hour day month weekday)")
        return next_cron(value, tzinfo, now)
    if k is ScheduleKind.INTERVAL:
        try:
            seconds = float(value)
        except ValueError as exc:
            raise ScheduleError(f"interval must be a number of seconds, not {value!r}") from exc
        if seconds < min_interval:
            raise ScheduleError(f"interval must be at least {min_interval:g} seconds")
        return now + timedelta(seconds=seconds)
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ScheduleError(f"once needs an ISO time like 2026-12-24T18:00, not {value!r}") from exc
    if at.tzinfo is None:
        at = at.replace(tzinfo=tzinfo)
    if at <= now:
        raise ScheduleError(f"{value} is in the past")
    return at.astimezone(UTC)


def next_cron(expr: str, tzinfo: ZoneInfo, after: datetime) -> datetime:
    local = after.astimezone(tzinfo)
    return croniter(expr, local).get_next(datetime).astimezone(UTC)


