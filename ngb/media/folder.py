"""Files inside a group's folder, touched by the daemon without trusting the folder.

The agent owns its folder and may have put a symlink anywhere in it (``attachments -> /etc``).
So every path here is walked one component at a time from the folder's own descriptor, each opened
with ``O_NOFOLLOW``: a symlink, a ``..`` or an absolute part is refused, never followed, whether the
daemon writes a file in (an attachment for the agent) or reads one out (a file the agent sends)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ..hostperms import share_dir_fd, share_file

CONTAINER_ROOT = PurePosixPath("/workspace/group")  # where the group folder is in its container
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FolderPathError(Exception):
    """A path that is not a plain file inside the group's folder (the reason is for the agent)."""


def relative_parts(path: str) -> list[str]:
    """The parts of ``path`` below the group folder: relative, or absolute under /workspace/group."""
    p = PurePosixPath(path.strip())
    if p.is_absolute():
        try:
            p = p.relative_to(CONTAINER_ROOT)
        except ValueError:
            raise FolderPathError(f"{path!r} is not inside your group folder ({CONTAINER_ROOT})") from None
    parts = [part for part in p.parts if part not in ("", ".")]
    if not parts:
        raise FolderPathError("no file named")
    if ".." in parts:
        raise FolderPathError(f"{path!r} leaves your group folder ('..')")
    return parts


def _open_dirs(root: Path, parts: list[str], *, create: bool, agent_uid: int | None = None) -> int:
    fd = os.open(root, _DIR)
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=fd)
                    if agent_uid is not None:
                        sub = os.open(part, _DIR, dir_fd=fd)
                        try:
                            share_dir_fd(sub, agent_uid)
                        finally:
                            os.close(sub)
            try:
                nxt = os.open(part, _DIR, dir_fd=fd)
            except OSError as exc:
                raise FolderPathError(f"{part!r} is not a folder of yours (or is a link)") from exc
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_for_reading(root: Path, path: str) -> tuple[int, str]:
    """An fd of the regular file ``path`` names inside ``root`` (no link followed anywhere) and
    its base name. FolderPathError says what is wrong."""
    parts = relative_parts(path)
    dir_fd = _open_dirs(root, parts[:-1], create=False)
    try:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            raise FolderPathError(f"no file {path!r} in your group folder") from None
        except OSError as exc:
            raise FolderPathError(f"{path!r} cannot be opened (a link, or not a plain file)") from exc
    finally:
        os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FolderPathError(f"{path!r} is not a plain file")
    os.set_blocking(fd, True)
    return fd, parts[-1]


def _write_new(root: Path, folder_parts: list[str], name: str, fill: Callable[[int], None], *, agent_uid: int) -> bool:
    """Create ``root/<folder_parts>/<name>`` for the agent (folders made if missing, no link
    followed) and ``fill`` its descriptor. False when a file of that name is there already (it is
    left alone)."""
    dir_fd = _open_dirs(root, folder_parts, create=True, agent_uid=agent_uid)
    try:
        try:
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                          dir_fd=dir_fd)
        except FileExistsError:
            return False
        try:
            fill(out)
            share_file(out, agent_uid)
        finally:
            os.close(out)
        return True
    finally:
        os.close(dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_copy(root: Path, folder_parts: list[str], name: str, source: Path, *, agent_uid: int) -> bool:
    """Copy ``source`` (a file of the media store) into the group's folder."""

    def fill(fd: int) -> None:
        with open(source, "rb") as src:
            while chunk := src.read(1 << 20):
                _write_all(fd, chunk)

    return _write_new(root, folder_parts, name, fill, agent_uid=agent_uid)


def write_bytes(root: Path, folder_parts: list[str], name: str, data: bytes, *, agent_uid: int) -> bool:
    return _write_new(root, folder_parts, name, lambda fd: _write_all(fd, data), agent_uid=agent_uid)
