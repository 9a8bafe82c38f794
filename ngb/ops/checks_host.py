"""Doctor's checks of the host: the state folder is writable, the agents' uid is nobody's
(ngb/hostperms.py), disk space (state folder, Docker's data root), and the database (integrity
check, migrations current)."""

import os
import pwd
import shlex
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..config import Config
from .check import Check
from .fix_lines import existing_parent, restart_command, user_name

GIB = 1024**3
MIN_FREE = 1 * GIB  # below this: fail (SQLite and Docker start failing in odd ways)
LOW_FREE = 5 * GIB  # below this: warn


# -- state folder ---------------------------------------------------------------------------------
def check_state_dir(config: Config) -> Check:
    state = config.state_dir
    q = shlex.quote(str(state))
    own = f"sudo install -d -o {user_name()} {q}"
    if state.exists() and not state.is_dir():
        return Check("state dir", "fail", f"{state} exists but is not a folder", f"move it away, then: {own}")
    if not state.exists():
        parent = existing_parent(state.parent)
        if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            return Check("state dir", "ok", f"{state} does not exist yet; the daemon creates it at start")
        return Check("state dir", "fail", f"{state} does not exist and {parent} is not writable", own)
    try:
        with tempfile.NamedTemporaryFile(dir=state, prefix=".ngb-doctor-") as fh:
            fh.write(b"x")
            fh.flush()
            os.fsync(fh.fileno())
        for sub in (config.groups_dir, config.run_dir, config.global_dir):
            if sub.exists() and not os.access(sub, os.W_OK | os.X_OK):
                raise PermissionError(f"{sub} is not writable")
    except OSError as exc:
        return Check(
            "state dir", "fail", f"cannot write in {state}: {exc}", f"sudo chown -R {user_name()}: {q}"
        )
    mode = stat.S_IMODE(state.stat().st_mode)
    if mode & 0o002:
        return Check(
            "state dir", "warn", f"{state} is writable by everyone (mode {mode:04o})", f"chmod o-w {q}"
        )
    if mode & 0o077:
        return Check(
            "state dir",
            "warn",
            f"{state} is open to the host's other users (mode {mode:04o}): they can read "
            "the chat history (the daemon closes it at its next start)",
            f"chmod 700 {q}",
        )
    return Check("state dir", "ok", f"{state} is writable")


# -- the agents' uid ----------------------------------------------------------------------------------
def _free_uid(taken: Callable[[int], bool], start: int = 2000) -> int:
    uid = start
    while taken(uid) and uid < start + 100_000:
        uid += 1
    return uid


def check_agent_uid(
    config: Config,
    getpwuid: Callable[[int], Any] = pwd.getpwuid,
    getgrgid: Callable[[int], Any] | None = None,
    euid: int | None = None,
    egid: int | None = None,
) -> Check:
    """A host account with the agents' uid is, to the kernel, every group's agent: it can connect
    to each group's sockets and write each group's folder. A daemon not running as root opens
    those to its own group instead: members of that group are in the same position."""
    import grp

    getgrgid = getgrgid or grp.getgrgid
    euid = os.geteuid() if euid is None else euid
    egid = os.getegid() if egid is None else egid
    uid = config.agent_uid

    def taken(n: int) -> bool:
        for lookup in (getpwuid, getgrgid):
            try:
                lookup(n)
                return True
            except KeyError:
                pass
        return False

    fix = f"set NGB_AGENT_UID={_free_uid(taken)} (or agent_uid in the config file; any uid no account uses), then restart the daemon"
    try:
        account = getpwuid(uid).pw_name
    except KeyError:
        account = None
    if account is not None:
        who = "the daemon's own account" if uid == euid else "host account"
        return Check(
            "agent uid",
            "warn",
            f"{who} {account!r} has uid {uid}, the uid agent containers run as: "
            "it can reach every group's sockets and folders",
            fix,
        )
    if euid != 0:
        try:
            group = getgrgid(egid)
        except KeyError:
            group = None
        members = sorted(set(group.gr_mem) - {user_name()}) if group is not None else []
        if group is not None and members:
            return Check(
                "agent uid",
                "warn",
                f"the daemon's group {group.gr_name!r} (gid {egid}) also has "
                f"{', '.join(members)}: agent containers run with this group, so they can reach "
                "every group's sockets",
                "run the daemon as a user with a group of its own (useradd --system nanogridbot)",
            )
    return Check("agent uid", "ok", f"no host account has uid {uid} (the agents' uid)")


# -- disk --------------------------------------------------------------------------------------------
def _disk_check(name: str, path: Path, fix: str, min_free: int, low_free: int) -> Check:
    where = existing_parent(path)
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        return Check(name, "skip", f"cannot stat {where}: {exc}")
    free = f"{usage.free / GIB:.1f} GiB free of {usage.total / GIB:.1f} GiB on {where}"
    if usage.free < min_free:
        return Check(name, "fail", f"only {free}", fix)
    if usage.free < low_free:
        return Check(name, "warn", f"{free} (low)", fix)
    return Check(name, "ok", free)


def check_disk(
    config: Config, docker_root: str | None = None, *, min_free: int = MIN_FREE, low_free: int = LOW_FREE
) -> list[Check]:
    state = shlex.quote(str(config.state_dir))
    out = [
        _disk_check(
            "disk (state)",
            config.state_dir,
            f"free space on that disk (largest first: du -xh {state} | sort -h | tail), or move state_dir",
            min_free,
            low_free,
        )
    ]
    if docker_root and Path(docker_root).exists():
        out.append(
            _disk_check(
                "disk (docker)",
                Path(docker_root),
                "docker system prune   (removes stopped containers, unused networks and dangling images)",
                min_free,
                low_free,
            )
        )
    return out


# -- database ---------------------------------------------------------------------------------------
def check_database(config: Config) -> Check:
    from ..store import MIGRATIONS

    db = config.db_path
    if not db.exists():
        return Check("database", "ok", f"{db} not created yet (the daemon creates it at first start)")
    q = shlex.quote(str(db))
    recover = (
        f"stop the daemon, then: mv {q} {q}.corrupt && sqlite3 {q}.corrupt .recover | sqlite3 {q}"
        "   (sqlite3 is the Debian package sqlite3)"
    )
    try:
        conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        return Check(
            "database",
            "fail",
            f"cannot open {db}: {exc}",
            f"sudo chown -R {user_name()}: {shlex.quote(str(config.state_dir))}",
        )
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check(20)").fetchall()]
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        return Check("database", "fail", f"{db} is damaged: {exc}", recover)
    finally:
        conn.close()
    if rows != ["ok"]:
        shown = "; ".join(rows[:3]) + (f" (+{len(rows) - 3} more)" if len(rows) > 3 else "")
        return Check("database", "fail", f"integrity check failed: {shown}", recover)
    latest = len(MIGRATIONS)
    if version > latest:
        return Check(
            "database",
            "fail",
            f"schema version {version} is newer than this ngb knows ({latest}): it was used by a newer version",
            "upgrade ngb to the version that wrote it (or restore a backup taken before the downgrade)",
        )
    if version < latest:
        return Check(
            "database",
            "fail",
            f"schema version {version}, this ngb expects {latest}: {latest - version} migration(s) not applied yet "
            "(a daemon still running the old version?)",
            f"restart the daemon, it applies them at start: {restart_command(config)}",
        )
    size = db.stat().st_size / 1024**2
    return Check("database", "ok", f"{db}: integrity ok, schema {version}/{latest} ({size:.1f} MiB)")
