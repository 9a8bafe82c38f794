"""Schedule math: cron across DST in two zones, interval anchoring, once, catch-up, refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ngb.tasks.schedules import (
    ScheduleError,
    next_after,
    next_cron,
    parse_interval,
    resume_next,
    validate,
    zone,
)

BERLIN = zone("Europe/Berlin")
NEW_YORK = zone("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def runs(expr: str, tz, start: datetime, n: int) -> list[datetime]:
    out, t = [], start
    for _ in range(n):
        t = next_cron(expr, tz, t)
        out.append(t)
    return out


def local(ts: list[datetime], tz) -> list[str]:
    return [t.astimezone(tz).strftime("%m-%d %H:%M%z") for t in ts]


def test_daily_cron_keeps_wall_time_across_spring_forward_in_both_zones() -> None:
    # Berlin: 2024-03-31 02:00 -> 03:00. New York: 2024-03-10 02:00 -> 03:00.
    assert local(runs("0 9 * * *", BERLIN, utc(2024, 3, 29), 4), BERLIN) == [
        "03-29 09:00+0100", "03-30 09:00+0100", "03-31 09:00+0200", "04-01 09:00+0200"]
    assert local(runs("0 9 * * *", NEW_YORK, utc(2024, 3, 9), 3), NEW_YORK) == [
        "03-09 09:00-0500", "03-10 09:00-0400", "03-11 09:00-0400"]


def test_cron_in_the_skipped_hour_runs_once_shifted_by_the_gap() -> None:
    assert local(runs("30 2 * * *", BERLIN, utc(2024, 3, 30, 12), 3), BERLIN) == [
        "03-31 03:30+0200", "04-01 02:30+0200", "04-02 02:30+0200"]
    assert local(runs("30 2 * * *", NEW_YORK, utc(2024, 3, 9, 12), 2), NEW_YORK) == [
        "03-10 03:30-0400", "03-11 02:30-0400"]


def test_cron_in_the_repeated_hour_runs_once_unless_it_fires_every_hour() -> None:
    # Berlin 2024-10-27 03:00 CEST -> 02:00 CET; New York 2024-11-03 02:00 EDT -> 01:00 EST.
    assert local(runs("30 2 * * *", BERLIN, utc(2024, 10, 26, 12), 2), BERLIN) == [
        "10-27 02:30+0200", "10-28 02:30+0100"]
    assert local(runs("30 1 * * *", NEW_YORK, utc(2024, 11, 2, 12), 2), NEW_YORK) == [
        "11-03 01:30-0400", "11-04 01:30-0500"]
    # Every 30 minutes follows elapsed time: both passes of the repeated hour, no gap, no double.
    got = runs("*/30 * * * *", BERLIN, utc(2024, 10, 27, 0, 0), 4)
    assert [t - got[0] for t in got] == [timedelta(minutes=30 * i) for i in range(4)]
    assert local(got, BERLIN) == ["10-27 02:30+0200", "10-27 02:00+0100", "10-27 02:30+0100", "10-27 03:00+0100"]
    # ...and across the spring gap, no instant twice and nothing skipped in elapsed time.
    spring = runs("*/15 * * * *", NEW_YORK, utc(2024, 3, 10, 6, 40), 5)
    assert [b - a for a, b in zip(spring, spring[1:], strict=False)] == [timedelta(minutes=15)] * 4


def test_weekday_cron_in_a_zone() -> None:
    # Friday 2026-11-27 10:00 Berlin -> next weekday 09:00 is Monday.
    assert next_cron("0 9 * * 1-5", BERLIN, utc(2026, 11, 27, 9)) == utc(2026, 11, 30, 8)


def test_interval_is_anchored_to_the_schedule_not_to_the_run() -> None:
    slot = utc(2026, 1, 1, 12)
    # Claimed 0.7 s late: the next run is slot + 60 s, not claim + 60 s.
    assert next_after("interval", "60", "UTC", slot, slot + timedelta(seconds=0.7)) == slot + timedelta(seconds=60)
    # Claimed 59.9 s late (a slow turn): still on the grid.
    assert next_after("interval", "1m", "UTC", slot, slot + timedelta(seconds=59.9)) == slot + timedelta(seconds=60)


def test_catch_up_after_downtime_runs_once_then_resumes_the_schedule() -> None:
    slot = utc(2026, 1, 1, 12)
    now = slot + timedelta(hours=5, minutes=7)  # down for 5 hours: ~10 missed half-hour slots
    nxt = next_after("interval", "30m", "UTC", slot, now)
    assert nxt == utc(2026, 1, 1, 17, 30)  # the next slot of the original grid after now
    # cron missed for 3 days: one run now, then the next 09:00.
    nxt = next_after("cron", "0 9 * * *", "Europe/Berlin", utc(2026, 1, 1, 8), utc(2026, 1, 4, 12))
    assert nxt == utc(2026, 1, 5, 8)


def test_once_completes() -> None:
    assert next_after("once", "2026-12-01T18:00", "Europe/Berlin", utc(2026, 12, 1, 17), utc(2026, 12, 1, 17)) is None


def test_validate_first_runs_and_refusals() -> None:
    now = utc(2026, 11, 25, 10)
    assert validate("once", "2026-12-01T18:00", "Europe/Berlin", min_interval=60, now=now) == utc(2026, 12, 1, 17)
    assert validate("interval", "30m", None, min_interval=60, now=now) == now + timedelta(minutes=30)
    assert validate("cron", "0 9 * * 1-5", "Europe/Berlin", min_interval=60, now=now) == utc(2026, 11, 26, 8)
    for kind, value, tz, reason in [
        ("cron", "every day", "UTC", "invalid cron"),
        ("cron", "0 9 * * * *", "UTC", "invalid cron"),
        ("once", "2020-01-01T00:00", "UTC", "in the past"),
        ("once", "tomorrow", "UTC", "ISO time"),
        ("cron", "0 9 * * *", "Mars/Olympus", "unknown time zone"),
        ("interval", "30", "UTC", "at least 60"),
        ("interval", "soon", "UTC", "duration"),
        ("weekly", "x", "UTC", "cron, interval or once"),
    ]:
        with pytest.raises(ScheduleError, match=reason):
            validate(kind, value, tz, min_interval=60, now=now)


def test_parse_interval() -> None:
    assert parse_interval("90") == 90
    assert parse_interval("90s") == 90
    assert parse_interval("1h30m") == 5400
    assert parse_interval("2d") == 172800
    with pytest.raises(ScheduleError):
        parse_interval("5 parsecs")


def test_resume_drops_slots_missed_while_paused() -> None:
    now = utc(2026, 1, 1, 12, 10)
    assert resume_next("interval", "60", "UTC", utc(2026, 1, 1, 12, 0, 30), now) == utc(2026, 1, 1, 12, 10, 30)
    assert resume_next("cron", "0 9 * * *", "UTC", utc(2026, 1, 1, 9), now) == utc(2026, 1, 2, 9)
    assert resume_next("once", "x", "UTC", utc(2026, 1, 1, 9), now) == now  # overdue once: right away
    future = utc(2026, 2, 1)
    assert resume_next("cron", "0 9 * * *", "UTC", future, now) == future
