"""Backups and restores (ngb/ops/backup.py): a backup taken while the daemon writes restores to a
consistent database holding every message committed before it started; a round trip through the
CLI restores the database and the folders and never carries secrets; restore refuses while a
daemon runs; the store backs the database up before it migrates an older schema."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import pytest
import trio

import ngb.store.schema as schema_module
from ngb.cli import main
from ngb.ops.backup import (
    PRE_MIGRATION_KEEP,
    BackupError,
    StateLock,
    create_backup,
    daemon_holding,
    pre_migration_backup,
    restore_backup,
)
from ngb.records import InboundMessage
from ngb.store import MIGRATIONS, Store
from tests.conftest import make_config


def text_for(i: int) -> str:
    return f"message {i} " + "x" * (i * 37 % 900)  # a length of its own: a torn row would show


def check_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")  # FTS matches its table
    conn.rollback()
    return conn


async def test_backup_during_100_concurrent_writes_restores_consistently(run_daemon, tmp_path: Path) -> None:
    d = await run_daemon(NGB_SENDER_RATE_PER_MINUTE="100000", NGB_GROUP_RATE_PER_MINUTE="100000")
    config = d.daemon.config
    target = tmp_path / "during.tar.gz"
    returned: set[str] = set()
    before_backup: set[str] = set()
    rng = random.Random(7)

    async def writer(i: int) -> None:
        await trio.sleep(rng.random() * 0.3)
        await d.daemon.router.handle(
            InboundMessage(chat="local:main", sender=f"s{i % 7}", text=text_for(i), platform_id=f"w{i}")
        )
        returned.add(f"w{i}")

    async def backup() -> None:
        await trio.sleep(0.12)
        before_backup.update(returned)  # committed before the backup started
        await trio.to_thread.run_sync(create_backup, config, target)

    async with trio.open_nursery() as nursery:
        for i in range(100):
            nursery.start_soon(writer, i)
        nursery.start_soon(backup)
    assert 0 < len(before_backup) < 100, "the backup ran while messages were being written"
    assert len(returned) == 100

    restored = make_config(tmp_path / "elsewhere")
    manifest = await trio.to_thread.run_sync(restore_backup, restored, target)
    assert manifest["schema_version"] == len(MIGRATIONS)
    conn = check_db(restored.db_path)
    rows = {r["platform_id"]: r for r in conn.execute("SELECT * FROM messages WHERE platform_id LIKE 'w%'")}
    assert before_backup <= set(rows), sorted(before_backup - set(rows))
    for pid, row in rows.items():  # no partial rows: every stored message is whole
        i = int(pid[1:])
        assert row["text"] == text_for(i) and row["sender"] == f"s{i % 7}" and row["chat"] == "local:main"
    outbox = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'sent' AND message_id IS NULL").fetchone()[0]
    assert outbox == 0, "a sent reply always has its stored message"
    conn.close()
    # The restored state starts as a daemon of its own.
    r2 = await run_daemon(state=tmp_path / "elsewhere")
    history = await r2.history("main")
    assert {m["text"] for m in history} >= {text_for(int(p[1:])) for p in before_backup}


async def test_round_trip_through_the_cli_restores_db_and_folders_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path)
    for key, value in {"NGB_STATE_DIR": str(config.state_dir), "NGB_WEB_PORT": str(config.web_port),
                       "NGB_MOUNT_ALLOWLIST": str(config.mount_allowlist), "NGB_CONFIG": ""}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    store = Store(config.db_path)
    await store.open()
    for i in range(5):
        await store.ingest(InboundMessage(chat="local:main", sender="a", text=f"kept {i}", platform_id=f"k{i}"))
    await store.close()
    state = config.state_dir
    (state / "groups" / "main" / "sub").mkdir(parents=True)
    (state / "groups" / "main" / "CLAUDE.md").write_text("remember the milk")
    (state / "groups" / "main" / "sub" / "notes.txt").write_text("deep")
    (state / "groups" / "main" / ".env").write_text("SECRET=1")
    (state / "groups" / "main" / "api.key").write_text("k")
    os.symlink("CLAUDE.md", state / "groups" / "main" / "link.md")
    (state / "global").mkdir()
    (state / "global" / "CLAUDE.md").write_text("global memory")
    (state / "sessions" / "main").mkdir(parents=True)
    (state / "sessions" / "main" / "s.jsonl").write_text("{}")
    (state / "sessions" / "main" / ".credentials.json").write_text("{}")
    (state / "groups" / "main" / ".aws").mkdir()
    (state / "groups" / "main" / ".aws" / "credentials").write_text("[default]\naws_secret_access_key = x\n")
    (state / "ngb.env").write_text("ANTHROPIC_API_KEY=sk")
    (state / "channels").mkdir()
    (state / "channels" / "dingtalk-conversations.json").write_text('{"version": 1}')

    archive = tmp_path / "b.tar.gz"
    folder = tmp_path / "b-dir"
    assert await trio.to_thread.run_sync(main, ["backup", str(archive)]) == 0
    assert await trio.to_thread.run_sync(main, ["backup", str(folder)]) == 0
    assert "4 left out" in capsys.readouterr().out
    assert archive.stat().st_mode & 0o777 == 0o600 and folder.stat().st_mode & 0o777 == 0o700, "owner only"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"manifest.json", "ngb.db", "groups/main/CLAUDE.md", "groups/main/sub/notes.txt", "global/CLAUDE.md",
            "sessions/main/s.jsonl", "groups/main/link.md", "channels/dingtalk-conversations.json"} <= names
    assert not {n for n in names if n.endswith((".env", ".key", "credentials.json", "/credentials"))}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["schema_version"] == len(MIGRATIONS) and manifest["ngb_version"] and manifest["created_at"]
    assert sorted(manifest["excluded"]) == ["groups/main/.aws/credentials", "groups/main/.env", "groups/main/api.key",
                                            "sessions/main/.credentials.json"]
    assert await trio.to_thread.run_sync(main, ["backup", str(folder)]) == 1, "never overwrites a backup"

    # Change everything, then restore each form.
    store = Store(config.db_path)
    await store.open()
    await store.ingest(InboundMessage(chat="local:main", sender="a", text="after the backup", platform_id="late"))
    await store.close()
    (state / "groups" / "main" / "CLAUDE.md").write_text("changed")
    (state / "global" / "CLAUDE.md").unlink()
    (state / "channels" / "dingtalk-conversations.json").write_text("changed")
    for source in (archive, folder):
        assert await trio.to_thread.run_sync(main, ["restore", str(source)]) == 0
        conn = check_db(config.db_path)
        assert [r[0] for r in conn.execute("SELECT text FROM messages ORDER BY id")] == [f"kept {i}" for i in range(5)]
        conn.close()
        assert (state / "groups" / "main" / "CLAUDE.md").read_text() == "remember the milk"
        assert (state / "groups" / "main" / "sub" / "notes.txt").read_text() == "deep"
        assert os.readlink(state / "groups" / "main" / "link.md") == "CLAUDE.md"
        assert (state / "global" / "CLAUDE.md").read_text() == "global memory"
        assert (state / "sessions" / "main" / "s.jsonl").exists()
        assert (state / "channels" / "dingtalk-conversations.json").read_text() == '{"version": 1}'
        assert not (state / "groups" / "main" / ".env").exists()
        assert (state / "ngb.env").exists(), "files outside the backed-up folders are left alone"
    out = capsys.readouterr().out
    assert "the state it replaced is in" in out
    aside = sorted((state / "backups").glob("pre-restore-*"))
    assert len(aside) == 2
    first = check_db(aside[0] / "ngb.db")  # the state the first restore replaced
    assert "after the backup" in {r[0] for r in first.execute("SELECT text FROM messages")}
    assert (aside[0] / "groups" / "main" / "CLAUDE.md").read_text() == "changed"
    assert (aside[0] / "groups" / "main" / ".env").read_text() == "SECRET=1", "the replaced state is kept whole"
    assert not list(state.glob(".ngb-restore-*")), "no staging left behind"


async def test_restore_refuses_a_damaged_or_foreign_backup(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = Store(config.db_path)
    await store.open()
    await store.close()
    good = tmp_path / "good"
    create_backup(config, good)
    db = good / "ngb.db"
    data = bytearray(db.read_bytes())
    data[5000] ^= 0xFF
    db.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="checksum"):
        restore_backup(config, good)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackupError, match="not an ngb backup"):
        restore_backup(config, tmp_path / "empty")
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        tar.addfile(info)
    with pytest.raises(BackupError, match="unsafe path"):
        restore_backup(config, evil)
    assert not (tmp_path / "escape.txt").exists()
    check_db(config.db_path)  # the live state was never touched


async def test_restore_is_refused_while_the_daemon_runs(run_daemon, tmp_path: Path) -> None:
    d = await run_daemon()
    config = d.daemon.config
    await d.post("main", "hello")
    await d.wait_bot_replies("main", 1)
    target = tmp_path / "live.tar.gz"
    await trio.to_thread.run_sync(create_backup, config, target)
    assert daemon_holding(config.run_dir) == f"pid {os.getpid()}"
    with pytest.raises(BackupError, match="refusing to restore while the daemon runs"):
        await trio.to_thread.run_sync(restore_backup, config, target)
    code = await trio.to_thread.run_sync(main, ["--config", str(_toml(tmp_path, config)), "restore", str(target)])
    assert code == 1
    # Nothing moved: the daemon still answers from its own state.
    await d.post("main", "still mine")
    await d.wait_bot_replies("main", 2)
    assert not (config.state_dir / "backups").exists()


async def test_restore_sees_a_daemon_by_its_web_port_too(run_daemon, tmp_path: Path) -> None:
    d = await run_daemon()
    config = d.daemon.config
    target = tmp_path / "b"
    await trio.to_thread.run_sync(create_backup, config, target)
    d.daemon.state_lock.release()  # e.g. a daemon of an older version, which took no lock
    with pytest.raises(BackupError, match="answers /healthz"):
        await trio.to_thread.run_sync(restore_backup, config, target)


def _toml(tmp_path: Path, config: Any) -> Path:
    path = tmp_path / "ngb.toml"
    path.write_text(f'state_dir = "{config.state_dir}"\nweb_port = {config.web_port}\n'
                    f'mount_allowlist = "{config.mount_allowlist}"\n')
    return path


def test_state_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    first, second = StateLock(tmp_path), StateLock(tmp_path)
    assert daemon_holding(tmp_path) is None
    assert first.acquire()
    assert not second.acquire()
    assert daemon_holding(tmp_path) == f"pid {os.getpid()}"
    first.release()
    assert daemon_holding(tmp_path) is None
    assert second.acquire()
    second.release()


# -- the pre-migration backup --------------------------------------------------------------------
async def _old_database(path: Path, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(schema_module, "MIGRATIONS", MIGRATIONS[:version])
        old = Store(path)
        await old.open()
        assert old.schema_version == version
        await old.close()
    # written as that schema's daemon wrote it (today's ingest names columns an old schema lacks)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO messages (chat, channel, platform_id, sender, text, time, from_bot)"
                     " VALUES ('local:main', 'local', 'o1', 'a', 'from the old days', '2026-01-01T00:00:00.000+00:00', 0)")
        conn.execute("INSERT OR IGNORE INTO chats (chat, channel, last_message_at)"
                     " VALUES ('local:main', 'local', '2026-01-01T00:00:00.000+00:00')")
    conn.close()


@pytest.mark.parametrize("version", range(1, len(MIGRATIONS)))  # every older schema
async def test_upgrading_an_older_schema_backs_the_database_up_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    db = tmp_path / "state" / "ngb.db"
    await _old_database(db, version, monkeypatch)
    store = Store(db)
    await store.open()
    assert store.schema_version == len(MIGRATIONS)
    await store.close()
    backups = list((tmp_path / "state" / "backups").glob("pre-migration-*.db"))
    assert len(backups) == 1 and backups[0].name.startswith(f"pre-migration-v{version}-")
    conn = check_db(backups[0])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == version
    assert [r[0] for r in conn.execute("SELECT text FROM messages")] == ["from the old days"]
    assert not list(backups[0].parent.glob("*-wal")), "the copy is one self-contained file"
    # Opening the now-current database again: nothing pending, no new backup.
    store = Store(db)
    await store.open()
    await store.close()
    assert len(list((tmp_path / "state" / "backups").glob("pre-migration-*.db"))) == 1


async def test_fresh_database_needs_no_backup_and_a_failed_backup_stops_the_migration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = Store(tmp_path / "fresh" / "ngb.db")
    await fresh.open()
    await fresh.close()
    assert not (tmp_path / "fresh" / "backups").exists()

    db = tmp_path / "state" / "ngb.db"
    await _old_database(db, 3, monkeypatch)
    (tmp_path / "state" / "backups").write_text("a file where the backups folder should be")
    store = Store(db)
    with pytest.raises(BackupError, match="cannot back up the database before migrating"):
        await store.open()
    store.close_sync()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3, "no backup, no migration"


def test_pre_migration_backups_keep_only_the_newest(tmp_path: Path) -> None:
    db = tmp_path / "ngb.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    made = []
    for i in range(PRE_MIGRATION_KEEP + 3):
        path = pre_migration_backup(conn, db, 1, 2)
        os.utime(path, (1000 + i, 1000 + i))
        made.append(path)
    kept = sorted((tmp_path / "backups").glob("pre-migration-*.db"))
    assert kept == sorted(made[-PRE_MIGRATION_KEEP:])


async def test_daemon_start_on_an_older_schema_migrates_after_a_copy(
    run_daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _old_database(tmp_path / "state" / "ngb.db", 3, monkeypatch)
    d = await run_daemon(state=tmp_path)
    assert d.daemon.store.schema_version == len(MIGRATIONS)
    copies = list((tmp_path / "state" / "backups").glob("pre-migration-v3-*.db"))
    assert len(copies) == 1
    assert "from the old days" in {m["text"] for m in await d.history("main")}
