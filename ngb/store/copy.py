"""Consistent copies of the SQLite database: the online-backup copy that `ngb backup` uses, the
copy the store makes of itself before it applies a migration (so the store, low in the layers,
needs nothing from ops/), and the check of a copied database before it is restored.
ngb/ops/backup.py builds whole-state backups on top of these."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("ngb.ops.backup")

PRE_MIGRATION_PREFIX = "pre-migration-"
PRE_MIGRATION_KEEP = 5


class BackupError(RuntimeError):
    """A backup or restore could not be done; the text says why (one line)."""


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")  # sorts by time


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


def copy_database(source: sqlite3.Connection | Path, dest: Path) -> int:
    """Copy a database with the online backup API (one step: one consistent snapshot, while
    other connections keep writing). The copy is a single file (journal mode DELETE), fsynced,
    and checked. Returns its schema version."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    tmp.unlink(missing_ok=True)
    own = not isinstance(source, sqlite3.Connection)
    src = source if isinstance(source, sqlite3.Connection) else connect(source)
    try:
        out = sqlite3.connect(tmp, isolation_level=None)
        try:
            src.backup(out)  # pages=-1: every page in one step, under one read transaction
            out.execute("PRAGMA journal_mode=DELETE")
            check = out.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"the copied database fails integrity_check: {check}")
            version = int(out.execute("PRAGMA user_version").fetchone()[0])
        finally:
            out.close()
    finally:
        if own:
            src.close()
    fsync_file(tmp)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
    return version


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fsync_file(path)


def pre_migration_backup(conn: sqlite3.Connection, db_path: Path, current: int, target: int) -> Path:
    """Called by the store before it applies migrations current+1..target to an existing
    database: copy it to ``<state>/backups/pre-migration-v<current>-<time>.db`` and keep only the
    newest few such copies. Raises (the migration does not run) when the copy fails."""
    folder = db_path.parent / "backups"
    dest = folder / f"{PRE_MIGRATION_PREFIX}v{current}-{stamp()}.db"
    log.info("store: schema %d -> %d: backing up the database to %s first", current, target, dest)
    try:
        copy_database(conn, dest)
    except (OSError, sqlite3.Error, BackupError) as exc:
        raise BackupError(
            f"cannot back up the database before migrating it (schema {current} -> {target}): {exc}; "
            f"nothing was changed: free some space or fix the permissions of {folder}, then start again"
        ) from exc
    old = sorted(folder.glob(f"{PRE_MIGRATION_PREFIX}*.db"), key=lambda p: p.stat().st_mtime)
    for stale in old[:-PRE_MIGRATION_KEEP]:
        with contextlib.suppress(OSError):
            stale.unlink()
    return dest


def check_copy(path: Path) -> int:
    """Check a copied database (a backup's, before it is restored): it opens and passes
    integrity_check. Returns its schema version; raises BackupError saying what is wrong."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise BackupError(f"{path.name} is not a usable database: {exc}") from exc
    finally:
        conn.close()
    if check != "ok":
        raise BackupError(f"{path.name} fails integrity_check: {check}")
    return version
