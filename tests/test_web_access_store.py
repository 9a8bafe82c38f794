"""The store's side of the web through the egress door (ngb/store/web.py, migration 10): a group's
web settings as columns, the request log kept bounded, the per-day sums the door and the views read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import attrs
import pytest

import ngb.store.schema as schema_module
from ngb.records import Group, WebMode, WebRequest, WebVerdict, utcnow
from ngb.store import MIGRATIONS, Store
from ngb.store.web import KEEP_PER_FOLDER, utc_day


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "ngb.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def req(folder: str = "family", *, ago: timedelta = timedelta(0), host: str = "example.com", refused: bool = False,
        up: int = 0, down: int = 0, rule: str = "") -> WebRequest:
    return WebRequest(folder=folder, time=utcnow() - ago, host=host, port=443, method="CONNECT",
                      verdict=WebVerdict.REFUSED if refused else WebVerdict.ALLOWED, rule=rule,
                      address="" if refused else "93.184.215.14", bytes_up=up, bytes_down=down, duration_ms=12)


async def count(store: Store, folder: str) -> int:
    return int(await store.run(lambda c: c.execute("SELECT COUNT(*) FROM web_log WHERE folder = ?", (folder,)).fetchone()[0]))


async def test_migration_adds_the_web_to_an_existing_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "state" / "ngb.db"
    before = MIGRATIONS.index(next(m for m in MIGRATIONS if "CREATE TABLE web_log" in m))
    with monkeypatch.context() as m:  # a database as the release before the web left it
        m.setattr(schema_module, "MIGRATIONS", MIGRATIONS[:before])
        old = Store(db)
        await old.open()
        await old.run(lambda c: c.execute(
            "INSERT INTO groups (chat, folder, allowed_senders, added_at) VALUES"
            " ('local:family', 'family', '[\"alice\"]', '2026-01-01T00:00:00.000+00:00')"))
        await old.close()
    store = Store(db)
    await store.open()
    try:
        assert store.schema_version == len(MIGRATIONS) >= before + 1  # the web (and whatever came after)
        group = await store.group("local:family")
        assert group is not None and group.allowed_senders == ("alice",)
        assert (group.web, group.web_allow, group.web_deny) == (None, (), ()), "an old group takes the daemon's default"
        await store.record_web([req(up=5, down=7)])
        assert [r.host for r in await store.recent_web("family")] == ["example.com"]
        assert await store.web_bytes_on("family", utc_day(utcnow())) == 12
    finally:
        await store.close()
    assert list((tmp_path / "state" / "backups").glob(f"pre-migration-v{before}-*.db")), "copied before migrating"


async def test_group_web_settings_round_trip(store: Store) -> None:
    group = Group(chat="local:family", folder="family", web=WebMode.ALLOWLIST,
                  web_allow=("example.com", "*.wikipedia.org"), web_deny=("ads.example.com",))
    await store.add_group(group)
    await store.add_group(Group(chat="local:other", folder="other"))
    got = await store.group("local:family")
    assert got == attrs.evolve(group, added_at=got.added_at if got else None)  # stored to the millisecond
    assert [g.web for g in await store.groups()] == [WebMode.ALLOWLIST, None]
    await store.update_group(attrs.evolve(group, web=WebMode.OPEN, web_allow=(), web_deny=("x.example",)))
    got = await store.group("local:family")
    assert got is not None and (got.web, got.web_allow, got.web_deny) == (WebMode.OPEN, (), ("x.example",))
    await store.update_group(attrs.evolve(got, web=None))
    got = await store.group("local:family")
    assert got is not None and got.web is None, "back to the daemon's default"


async def test_recent_is_newest_first_by_time_per_group(store: Store) -> None:
    # logged out of order (a long tunnel is logged when it ends): the view orders by time
    await store.record_web([req(ago=timedelta(minutes=5), host="b.example"), req(ago=timedelta(minutes=1), host="a.example")])
    await store.record_web([req(ago=timedelta(minutes=10), host="c.example"), req("ops", host="ops.example")])
    assert [r.host for r in await store.recent_web("family")] == ["a.example", "b.example", "c.example"]
    assert [r.host for r in await store.recent_web("family", limit=2)] == ["a.example", "b.example"]
    assert [r.host for r in await store.recent_web()] == ["ops.example", "a.example", "b.example", "c.example"]
    assert await store.recent_web("nobody") == []
    first = (await store.recent_web("family", limit=1))[0]  # every field comes back as logged
    assert (first.folder, first.port, first.method, first.duration_ms) == ("family", 443, "CONNECT", 12)
    assert first.verdict is WebVerdict.ALLOWED and first.address == "93.184.215.14" and first.time.tzinfo is not None


async def test_record_web_keeps_the_log_bounded(store: Store) -> None:
    n = KEEP_PER_FOLDER + 30
    await store.record_web([req(ago=timedelta(seconds=n - i), host=f"h{i}.example") for i in range(n - 10)])
    await store.record_web([req(ago=timedelta(seconds=10 - i), host=f"h{n - 10 + i}.example") for i in range(10)])
    await store.record_web([req("ops", host="ops.example"), req("ops", ago=timedelta(days=31), host="old.example")])
    assert await count(store, "family") == KEEP_PER_FOLDER, "the newest 500 of a group"
    hosts = {r.host for r in await store.recent_web("family", limit=KEEP_PER_FOLDER)}
    assert f"h{n - 1}.example" in hosts and f"h{n - KEEP_PER_FOLDER}.example" in hosts
    assert f"h{n - KEEP_PER_FOLDER - 1}.example" not in hosts and "h0.example" not in hosts, "the oldest went"
    assert [r.host for r in await store.recent_web("ops")] == ["ops.example"], "nothing older than 30 days"
    assert await count(store, "ops") == 1
    # the sums count every request, trimmed from the log or not
    today = {u.folder: u.requests for u in await store.web_usage(days=1)}
    assert today == {"family": n, "ops": 1}


async def test_usage_sums_per_group_and_day(store: Store) -> None:
    day = timedelta(days=1)
    await store.record_web([
        req(up=100, down=1000), req(refused=True, rule="web: 10.0.0.5 is a private address"),
        req(ago=day, up=1, down=2), req("ops", up=7, down=8),
    ])
    await store.record_web([req(up=10, down=20), req(ago=day * 8, up=50, down=50)])
    today, yesterday = utc_day(utcnow()), utc_day(utcnow() - day)
    week = await store.web_usage("family", days=7)
    assert [(u.day, u.requests, u.refused, u.bytes_up, u.bytes_down) for u in week] == [
        (today, 3, 1, 110, 1020), (yesterday, 1, 0, 1, 2)], "newest day first, the 8-day-old one outside"
    assert len(await store.web_usage("family", days=9)) == 3
    assert [u.day for u in await store.web_usage("family", days=1)] == [today]
    assert [(u.day, u.folder) for u in await store.web_usage(days=2)] == [
        (today, "family"), (today, "ops"), (yesterday, "family")]
    assert await store.web_bytes_on("family", today) == 1130
    assert await store.web_bytes_on("family", yesterday) == 3
    assert await store.web_bytes_on("ops", yesterday) == 0
    await store.record_web([])  # nothing to keep: no transaction, no error


async def test_removing_a_group_keeps_its_web_record(store: Store) -> None:
    """As with its model usage: what a group did stays after it is unregistered."""
    await store.add_group(Group(chat="local:family", folder="family", web=WebMode.OPEN))
    await store.record_web([req(down=9)])
    await store.remove_group("local:family")
    assert [r.folder for r in await store.recent_web()] == ["family"]
    assert await store.web_bytes_on("family", utc_day(utcnow())) == 9
