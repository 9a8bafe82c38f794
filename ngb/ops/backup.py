"""Backups and restores of the daemon's state (`ngb backup PATH`, `ngb restore PATH`). The
database copies themselves (and the pre-migration backup the store takes before it changes the
schema) are ngb/store/copy.py; the state lock that tells `ngb restore` a daemon is running is
ngb/ops/state_lock.py.

A backup holds:

* ``ngb.db``: the database, copied with SQLite's online backup API in one step, so it is one
  consistent snapshot even while the daemon writes (WAL: the copy reads, the daemon keeps writing);
  the copy is checked with ``PRAGMA integrity_check`` before the backup is called done;
* ``groups/``, ``global/``, ``sessions/`` (the agents' conversation transcripts, so a restored
  session id can be resumed) and ``channels/`` (what a channel keeps to reach its chats, e.g.
  DingTalk's 1:1 staff ids; never a credential): files as they are at copy time;
* ``manifest.json``: format, ngb version, schema version, time, the database's SHA-256, what was
  left out.

Never in a backup: environment files (``*.env``, ``.env*``), credential files (``credentials`` as in
``~/.aws``, ``.credentials.json`` and the like), the secret files the configuration names
(``api_token_file``, ``*_file`` of channel tables), sockets, ``run/``, ``logs/``, ``backups/``. What
was left out is listed in the manifest.

A backup is a directory, or a ``.tar.gz`` / ``.tgz`` file. Either is written under a temporary name
and renamed into place when complete, so a half-written backup never looks like a backup.

`restore` refuses while a daemon runs on the state directory (its lock is held, or its web port
answers ``/healthz``). It unpacks and checks the backup in a staging directory inside the state
directory, moves the current ``ngb.db`` (with its ``-wal``/``-shm``) and folders aside into
``backups/pre-restore-<time>/``, then renames the staged ones into place (same file system: each
rename is atomic; a failure half-way moves everything back).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..store.copy import (  # noqa: F401 - PRE_MIGRATION_*, pre_migration_backup: re-exported
    PRE_MIGRATION_KEEP,
    PRE_MIGRATION_PREFIX,
    BackupError,
    check_copy,
    copy_database,
    pre_migration_backup,
)
from ..store.copy import fsync_dir as _fsync_dir
from ..store.copy import fsync_file as _fsync
from ..store.copy import stamp as _stamp
from ..store.schema import MIGRATIONS
from .state_lock import LOCK_NAME, StateLock, daemon_holding, daemon_running  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
DB_NAME = "ngb.db"
FOLDERS = ("groups", "global", "sessions", "channels")

# File names never copied into a backup (secrets), matched case-insensitively.
_SECRET_EXACT = {".env", "ngb.env", ".credentials.json", "credentials.json", "credentials", ".netrc", ".pgpass",
                 ".git-credentials"}  # credentials: ~/.aws/credentials and the like
_SECRET_SUFFIXES = (".env", ".pem", ".key", ".p12", ".pfx")
_SECRET_PREFIXES = (".env.", "id_rsa", "id_ed25519", "id_ecdsa")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_secret_name(name: str) -> bool:
    low = name.lower()
    return low in _SECRET_EXACT or low.endswith(_SECRET_SUFFIXES) or low.startswith(_SECRET_PREFIXES)


def secret_paths(config: Any) -> set[Path]:
    """The secret files the configuration names (never copied, wherever they live)."""
    out: set[Path] = set()
    for name in ("api_token_file", "anthropic_api_key_file", "transcribe_api_key_file"):
        value = getattr(config, name, None)
        if value:
            out.add(Path(value).expanduser().resolve())
    for table in (getattr(config, "channels", None) or {}).values():
        if not isinstance(table, dict):
            continue
        for key, value in table.items():
            if str(key).endswith("_file") and isinstance(value, str | Path) and str(value):
                with contextlib.suppress(OSError, RuntimeError):
                    out.add(Path(value).expanduser().resolve())
    return out


# -- the database ------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- backup ------------------------------------------------------------------------------------
def _walk_copy(src: Path, dest: Path, root: Path, skip: set[Path], excluded: list[str]) -> int:
    """Copy a folder tree (symlinks kept as links, never followed; sockets, fifos and secret
    files left out). Returns the number of files copied."""
    count = 0
    dest.mkdir(parents=True, exist_ok=True)
    with os.scandir(src) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    for entry in entries:
        path = Path(entry.path)
        rel = str(path.relative_to(root))
        target = dest / entry.name
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # gone while we copied
        if is_secret_name(entry.name) or (not stat.S_ISLNK(st.st_mode) and path.resolve() in skip):
            excluded.append(rel)
            continue
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(path), target)
        elif stat.S_ISDIR(st.st_mode):
            count += _walk_copy(path, target, root, skip, excluded)
        elif stat.S_ISREG(st.st_mode):
            try:
                shutil.copy2(path, target, follow_symlinks=False)
            except FileNotFoundError:
                continue
            count += 1
        else:
            excluded.append(rel)  # sockets, fifos, devices
    shutil.copystat(src, dest, follow_symlinks=False)  # last: a read-only folder is filled first
    return count


def create_backup(config: Any, target: Path) -> dict[str, Any]:
    """Write a backup of config's state to `target` (a new directory, or a .tar.gz/.tgz file).
    Safe while the daemon runs. Returns the manifest."""
    target = Path(target).expanduser().absolute()
    state = Path(config.state_dir).absolute()
    db_path = Path(config.db_path)
    if not db_path.exists():
        raise BackupError(f"no database at {db_path}: nothing to back up (is the state directory right?)")
    archive = target.name.endswith((".tar.gz", ".tgz"))
    if target.exists() and not (target.is_dir() and not archive and not any(target.iterdir())):
        raise BackupError(f"{target} already exists; give a new path (a directory, or a file ending in .tar.gz)")
    if target.is_relative_to(state) and not target.is_relative_to(state / "backups"):
        raise BackupError(f"{target} is inside the state directory; put backups elsewhere (or under {state / 'backups'})")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ngb-backup-", dir=target.parent))
    try:
        started = _now()
        version = copy_database(db_path, staging / DB_NAME)
        excluded: list[str] = []
        skip = secret_paths(config)
        files = 0
        contents = [DB_NAME]
        for name in FOLDERS:
            src = state / name
            if src.is_dir():
                files += _walk_copy(src, staging / name, state, skip, excluded)
                contents.append(name)
        manifest = {
            "format": FORMAT,
            "ngb_version": __version__,
            "schema_version": version,
            "created_at": started,
            "finished_at": _now(),
            "state_dir": str(state),
            "contents": contents,
            "files": files,
            "db_sha256": _sha256(staging / DB_NAME),
            "db_bytes": (staging / DB_NAME).stat().st_size,
            "excluded": excluded,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if archive:
            part = target.with_name(target.name + ".part")
            part.unlink(missing_ok=True)
            part.touch(mode=0o600)  # the chat history: readable by its owner only
            with tarfile.open(part, "w:gz") as tar:
                for item in sorted(staging.iterdir()):
                    tar.add(item, arcname=item.name)
            _fsync(part)
            os.replace(part, target)
        else:
            if target.exists():
                target.rmdir()
            os.replace(staging, target)
        _fsync_dir(target.parent)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if archive:
            target.with_name(target.name + ".part").unlink(missing_ok=True)


# -- restore -----------------------------------------------------------------------------------
def _safe_members(tar: tarfile.TarFile, dest: Path) -> Iterator[tarfile.TarInfo]:
    """Regular files, folders and links that stay inside the backup; an absolute or `..` path
    refuses the whole archive; a link pointing outside is left out (logged)."""
    root = dest.resolve()
    for member in tar.getmembers():
        name = member.name
        if name.startswith("/") or ".." in Path(name).parts:
            raise BackupError(f"the archive holds an unsafe path {name!r}; not restoring it")
        if not (member.isreg() or member.isdir() or member.issym()):
            continue
        if member.issym():
            link = Path(member.linkname)
            inside = os.path.normpath(root / Path(name).parent / link)
            if link.is_absolute() or not Path(inside).is_relative_to(root):
                log.warning("restore: leaving out the link %s -> %s (it points outside the backup)", name, link)
                continue
        yield member


def read_backup(source: Path, staging: Path) -> dict[str, Any]:
    """Unpack (or copy) a backup into `staging` and check it. Returns its manifest."""
    source = Path(source).expanduser()
    if not source.exists():
        raise BackupError(f"no backup at {source}")
    if source.is_dir():
        for item in source.iterdir():
            if item.name == MANIFEST or item.name == DB_NAME:
                shutil.copy2(item, staging / item.name)
            elif item.name in FOLDERS and item.is_dir():
                shutil.copytree(item, staging / item.name, symlinks=True)
    else:
        try:
            with tarfile.open(source, "r:*") as tar:
                members = list(_safe_members(tar, staging))
                kwargs: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(staging, members=members, **kwargs)  # noqa: S202 - members checked above
        except (tarfile.TarError, OSError) as exc:
            raise BackupError(f"{source} is not a readable backup archive: {exc}") from exc
    try:
        manifest = json.loads((staging / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source} has no readable {MANIFEST}: it is not an ngb backup") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{source}: unknown backup format {manifest.get('format') if isinstance(manifest, dict) else '?'}")
    db = staging / DB_NAME
    if not db.is_file():
        raise BackupError(f"{source} holds no {DB_NAME}")
    if manifest.get("db_sha256") and _sha256(db) != manifest["db_sha256"]:
        raise BackupError(f"{source}: {DB_NAME} does not match the manifest's checksum (damaged backup)")
    try:
        version = check_copy(db)  # its messages name the file: DB_NAME
    except BackupError as exc:
        raise BackupError(f"{source}: {exc}") from exc
    if version > len(MIGRATIONS):
        raise BackupError(
            f"{source} has schema {version}, newer than this ngb ({__version__}, schema {len(MIGRATIONS)}): "
            "upgrade ngb first"
        )
    return manifest


def _moves(state: Path) -> Iterable[str]:
    yield DB_NAME
    yield DB_NAME + "-wal"
    yield DB_NAME + "-shm"
    yield DB_NAME + "-journal"
    yield from FOLDERS


def restore_backup(config: Any, source: Path) -> dict[str, Any]:
    """Replace config's database and folders with the backup's. Refuses while a daemon runs.
    Returns the manifest, plus "previous": where the state that was replaced now is."""
    running = daemon_running(config)
    if running:
        raise BackupError(f"refusing to restore while the daemon runs: {running}; stop it first")
    state = Path(config.state_dir).absolute()
    state.mkdir(parents=True, exist_ok=True)
    lock = StateLock(Path(config.run_dir))
    if not lock.acquire():  # also keeps a daemon from starting half-way through
        raise BackupError(f"refusing to restore: a daemon holds {lock.path}; stop it first")
    try:
        staging = Path(tempfile.mkdtemp(prefix=".ngb-restore-", dir=state))
        try:
            manifest = read_backup(Path(source), staging)
            aside = state / "backups" / f"pre-restore-{_stamp()}"
            aside.mkdir(parents=True)
            moved: list[str] = []
            placed: list[str] = []
            try:
                for name in _moves(state):
                    if (state / name).exists() or (state / name).is_symlink():
                        os.replace(state / name, aside / name)
                        moved.append(name)
                for name in (DB_NAME, *FOLDERS):
                    if (staging / name).exists():
                        os.replace(staging / name, state / name)
                        placed.append(name)
            except OSError as exc:
                for name in reversed(placed):  # put everything back as it was
                    with contextlib.suppress(OSError):
                        os.replace(state / name, staging / name)
                for name in reversed(moved):
                    with contextlib.suppress(OSError):
                        os.replace(aside / name, state / name)
                raise BackupError(f"restore failed half-way and was undone: {exc}") from exc
            for name in FOLDERS:  # the daemon expects these to exist
                (state / name).mkdir(exist_ok=True)
            _fsync_dir(state)
            manifest = {**manifest, "previous": str(aside)}
            log.info("restored %s into %s; the previous state is in %s", source, state, aside)
            return manifest
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        lock.release()


# -- the commands --------------------------------------------------------------------------------
def _command(
    config: Any, args: Any, step: Callable[[Any, Path], dict[str, Any]], failed: str, done: Callable[[dict[str, Any]], str]
) -> int:
    """Run `step` (create or restore) on ``args.path``: the manifest described by `done` on stdout
    (0), or the error after `failed` on stderr (1)."""
    import sys

    try:
        manifest = step(config, Path(args.path))
    except (BackupError, OSError, sqlite3.Error) as exc:
        print(f"ngb: {failed}{exc}", file=sys.stderr)
        return 1
    print(done(manifest))
    return 0


def cmd_backup(config: Any, args: Any) -> int:
    return _command(config, args, create_backup, "backup failed: ", lambda manifest: (
        f"backed up {config.state_dir} to {args.path}: schema {manifest['schema_version']}, "
        f"{manifest['db_bytes']} bytes of database, {manifest['files']} files"
        + (f", {len(manifest['excluded'])} left out (secrets, sockets; see manifest.json)" if manifest["excluded"] else "")
    ))


def cmd_restore(config: Any, args: Any) -> int:
    return _command(config, args, restore_backup, "", lambda manifest: (
        f"restored {args.path} (taken {manifest.get('created_at')}, ngb {manifest.get('ngb_version')}, "
        f"schema {manifest.get('schema_version')}) into {config.state_dir}\n"
        f"the state it replaced is in {manifest['previous']}\n"
        "start the daemon again; it applies any pending migrations (after a backup of its own)"
    ))


def add_arguments(subparsers: Any) -> None:
    b = subparsers.add_parser("backup", help="back up the database and folders (safe while the daemon runs)")
    b.add_argument("path", help="a new directory, or a file ending in .tar.gz")
    b.set_defaults(fn=cmd_backup)
    r = subparsers.add_parser("restore", help="restore a backup (the daemon must be stopped)")
    r.add_argument("path", help="a backup directory or .tar.gz made by `ngb backup`")
    r.set_defaults(fn=cmd_restore)
