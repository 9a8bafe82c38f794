"""File modes and owners that keep the host's other users out (docs/security.md).

The daemon runs with umask 077, so everything it creates is its own: the state folder 0700, the
database and every other file 0600. Only what an agent container must reach is opened to the
agent's uid (``agent_uid``, default 1000), and to nobody else:

* a daemon running as **root** hands such folders to the agent (owner ``agent_uid``), and its
  socket folder ``run/<folder>/`` is ``agent_uid:root 0700`` with sockets ``agent_uid:root
  0600`` (root gets in anyway). The container runs as ``agent_uid:agent_uid``.
* a daemon running as **another user** cannot give files away. The container then runs as
  ``agent_uid:<the daemon's gid>`` and what it needs is opened through that group: folders 0770
  (socket folder 0750), sockets 0660. Keep the service user's group private (the usual
  ``useradd --system nanogridbot`` one is).

No function here follows a symlink at the path it is given: an agent can replace anything inside
its folders.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
DEFAULT_AGENT_UID = 1000

__all__ = [
    "PRIVATE_UMASK",
    "agent_gid",
    "allowed_peer",
    "container_user",
    "share_dir",
    "share_dir_fd",
    "share_file",
    "share_socket",
    "socket_dir",
    "tighten_state",
]


def _root() -> bool:
    return os.geteuid() == 0


def agent_gid(agent_uid: int) -> int:
    """The container's gid: the agent's own as root, else the daemon's (see the module doc)."""
    return agent_uid if _root() else os.getegid()


def container_user(agent_uid: int) -> str:
    """The ``--user`` of every agent container."""
    return f"{agent_uid}:{agent_gid(agent_uid)}"


def allowed_peer(uid: int | None, agent_uid: int) -> bool:
    """May a process of this uid talk on a group's sockets? The agent, the daemon's own user
    (its tools and tests) and root. ``None`` (no credentials: not a unix socket) is refused."""
    return uid is not None and uid in (agent_uid, os.geteuid(), 0)


def _open_nofollow(path: Path, directory: bool) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    if directory:
        flags |= os.O_DIRECTORY
    return os.open(path, flags)


def _apply(path: Path, *, directory: bool, agent_uid: int, root_mode: int, group_mode: int,
           give_owner: bool) -> None:
    """Owner/group/mode through an fd opened without following a symlink."""
    fd = _open_nofollow(path, directory)
    try:
        if _root():
            if give_owner:
                os.fchown(fd, agent_uid, agent_uid)
            else:
                os.fchown(fd, agent_uid, 0)
            os.fchmod(fd, root_mode)
        else:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                return  # not ours (the agent made it, or an operator): leave it
            if st.st_gid != os.getegid():
                os.fchown(fd, -1, os.getegid())
            os.fchmod(fd, group_mode)
    finally:
        os.close(fd)


def share_dir(path: Path, agent_uid: int) -> None:
    """A folder the agent writes (its group folder, its session, the global folder)."""
    try:
        _apply(path, directory=True, agent_uid=agent_uid, root_mode=0o700, group_mode=0o2770, give_owner=True)
    except OSError as exc:
        log.warning("perms: cannot open %s to the agent (uid %d): %s", path, agent_uid, exc)


def share_dir_fd(fd: int, agent_uid: int) -> None:
    """A folder the daemon made inside a shared folder, by its open descriptor (ngb/media/folder.py)."""
    _share_fd(fd, agent_uid, root_mode=0o700, group_mode=0o2770, what="a folder")


def share_file(fd: int, agent_uid: int) -> None:
    """A file the daemon creates inside a shared folder (e.g. a new group's CLAUDE.md)."""
    _share_fd(fd, agent_uid, root_mode=0o600, group_mode=0o660, what="a file")


def _share_fd(fd: int, agent_uid: int, *, root_mode: int, group_mode: int, what: str) -> None:
    """As root: the agent owns it, ``root_mode``; else: shared through the group, ``group_mode``."""
    try:
        if _root():
            os.fchown(fd, agent_uid, agent_uid)
            os.fchmod(fd, root_mode)
        else:
            os.fchmod(fd, group_mode)
    except OSError as exc:
        log.warning("perms: cannot open %s to the agent (uid %d): %s", what, agent_uid, exc)


def socket_dir(path: Path, agent_uid: int) -> None:
    """A group's socket folder ``run/<folder>/``: reachable by the daemon and the agent only.
    Raises OSError: without it the sockets would be open to whoever can reach the folder."""
    path.mkdir(parents=True, exist_ok=True)
    _apply(path, directory=True, agent_uid=agent_uid, root_mode=0o700, group_mode=0o750, give_owner=False)


def share_socket(path: Path, agent_uid: int) -> None:
    """A socket in a group's socket folder: connectable by the daemon and the agent only."""
    st = path.lstat()
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{path} is not a socket")
    if _root():
        os.chown(path, agent_uid, 0, follow_symlinks=False)
        os.chmod(path, 0o600)
    else:
        os.chmod(path, 0o660)


def _tighten(path: Path) -> str | None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return None
    old = stat.S_IMODE(st.st_mode)
    if old & 0o077 == 0:
        return None
    os.chmod(path, old & 0o700)
    return f"{path} {old:04o} -> {old & 0o700:04o}"


def tighten_state(state_dir: Path, files: list[Path]) -> list[str]:
    """An older install made the state folder 0755 and the database 0644: take group and other
    rights away from the folder and the given files (each is ``path old -> new``; one log line)."""
    changed: list[str] = []
    for path in [state_dir, *files]:
        try:
            change = _tighten(path)
        except OSError as exc:
            log.warning("perms: cannot tighten %s: %s", path, exc)
            continue
        if change:
            changed.append(change)
    if changed:
        log.warning("perms: closed to the host's other users: %s", "; ".join(changed))
    return changed
