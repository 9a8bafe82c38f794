"""Extra mounts for group containers: which host folders an agent may see, checked every time a
container starts.

A group asks for extra mounts with `MountRequest` records (stored with the group). `resolve_mounts`
turns them into `Mount` records the container runtime binds at ``/workspace/extra/<name>``, or into
`Refusal` records saying why not. It never raises for a bad request. The allowlist file is read by
ngb/sandbox/mount_allowlist.py; the blocked names, forbidden roots, mount points and content scan
live in ngb/sandbox/mount_places.py (their names are re-exported here).

The rules (docs/security.md has the user-facing version):

1. The allowlist file (TOML, `load_allowlist`) names the host folders extra mounts may come from.
   It lives outside the project and outside every mount; a missing file allows no extra mounts.
2. The requested path must be absolute (or start with ``~``), must not contain a ``..`` component,
   must exist, and is resolved to its real path (all symlinks followed). The real path must be at or
   under the real path of an allowlist entry that applies to the group.
3. A built-in blocklist (`BLOCKED_PATTERNS`, plus the allowlist file's ``blocked``) is checked
   against every component of the requested path and of its real path (the components that make up
   the user's home directory itself are skipped, so a home called ``/home/mikey`` does not match
   ``*key*``). The allowlist cannot override it.
4. The folder's contents are scanned (symlinks not followed) to `scan_depth` levels: an entry whose
   name matches the blocklist (except the broad ``*key*``, see `CONTENT_EXEMPT`) refuses the mount,
   so mounting ``~`` or a project with a ``.env`` fails with the offending path named. More than
   `scan_limit` entries refuses the mount too (too large to check).
5. A path that is, contains, or is inside a forbidden root (the caller's: the state folder; always:
   the allowlist file's folder and the Docker/containerd sockets) is refused. Only folders and
   regular files are mounted (never sockets, devices or pipes).
6. Read-only unless the request and a matching allowlist entry both allow read-write, and (unless
   the allowlist says ``non_main_read_only = false``) the group is the main group.
7. A read-only mount whose tree contains another mounted file system is refused: Docker's default
   recursive bind leaves sub-mounts writable (checked on Docker 20.10), unless the runtime binds
   with ``BindOptions.NonRecursive``.

What a symlink inside a mounted folder means (checked with Docker 20.10 / runc 1.1): the kernel
resolves it when a process in the container opens it, inside the container's mount namespace.
An absolute target names a path in the container; a relative one climbing with ``..`` past the
mount point lands in the container's ``/workspace/extra``, not in the host's parent folder. So a
symlink cannot reach a host file outside the bind mount. Hard links can: a hard link inside the
mounted tree to a secret elsewhere on the same file system is the same file, and no name check
sees it. And a symlink the agent creates in a read-write mount is followed by *host* programs that
open it later.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import attrs

from ..folders import FOLDER_RE
from .mount_allowlist import AllowEntry, Allowlist, AllowlistError, load_allowlist
from .mount_places import (
    BLOCKED_PATTERNS,
    CONTENT_EXEMPT,
    MountRefused,
    blocked_match,
    checked_parts,
    default_forbidden_roots,
    docker_sockets,
    home_folders,
    mount_points,
    scan_contents,
)

log = logging.getLogger(__name__)

__all__ = [
    "BLOCKED_PATTERNS",
    "CONTENT_EXEMPT",
    "EXTRA_ROOT",
    "Allowlist",
    "AllowlistError",
    "AllowEntry",
    "Mount",
    "MountRequest",
    "Refusal",
    "blocked_match",
    "default_forbidden_roots",
    "load_allowlist",
    "resolve_mounts",
]

EXTRA_ROOT = "/workspace/extra"

DEFAULT_SCAN_DEPTH = 3
DEFAULT_SCAN_LIMIT = 50_000


# --------------------------------------------------------------------------------------------------
# Records.


@attrs.frozen
class MountRequest:
    """What a group asks for: a host path, optionally a name under /workspace/extra and read-write."""

    host_path: str
    container_name: str | None = None
    read_write: bool = False


@attrs.frozen
class Mount:
    """A checked bind mount: the real host path, where it appears in the container."""

    host_path: Path
    container_path: str
    read_only: bool


@attrs.frozen
class Refusal:
    request: MountRequest
    reason: str


def _submount_reason(where: str) -> str:
    return (
        f"contains another mounted file system at {where!r}, which a read-only bind mount would "
        "leave writable; mount it separately or request read-write"
    )


def _within(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def _resolve_one(
    req: MountRequest,
    allowlist: Allowlist,
    folder: str,
    is_main: bool,
    forbidden: Sequence[tuple[Path, Path, bool]],
    patterns: Sequence[str],
    content_patterns: Sequence[str],
    homes: Sequence[Path],
    taken_names: dict[str, str],
    taken_paths: dict[Path, str],
    scan_depth: int,
    scan_limit: int,
    mount_points: Sequence[Path],
) -> Mount:
    raw = req.host_path
    if not isinstance(raw, str) or not raw.strip():
        raise MountRefused("host_path must be a non-empty string")
    if "\x00" in raw:
        raise MountRefused("host_path contains a NUL character")
    if req.container_name is not None and not isinstance(req.container_name, str):
        raise MountRefused("container_name must be a string")
    if not isinstance(req.read_write, bool):
        raise MountRefused("read_write must be true or false")
    given = raw.strip()
    if ".." in given.split("/"):
        raise MountRefused("the path contains a '..' component")
    expanded = os.path.expanduser(given)
    if not expanded.startswith("/"):
        raise MountRefused("the path must be absolute or start with ~ (the daemon user's home)")
    lexical = PurePosixPath(expanded)
    if ".." in lexical.parts:
        raise MountRefused("the path contains a '..' component")

    hit = blocked_match(checked_parts(lexical, homes), patterns)
    if hit is not None:
        raise MountRefused(f"{hit[1]!r} is blocked (matches {hit[0]!r}); no allowlist entry can allow it")

    try:
        real = Path(expanded).resolve(strict=True)
    except FileNotFoundError:
        raise MountRefused("the path does not exist") from None
    except RuntimeError:  # Python 3.11/3.12 report a loop so
        raise MountRefused("the path is a symlink loop") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # Python 3.13+
            raise MountRefused("the path is a symlink loop") from None
        raise MountRefused(f"the path cannot be resolved ({exc.strerror or exc})") from None

    hit = blocked_match(checked_parts(real, homes), patterns)
    if hit is not None:
        raise MountRefused(f"it resolves to {str(real)!r}, and {hit[1]!r} is blocked (matches {hit[0]!r})")

    st = os.stat(real)
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise MountRefused(
            f"{str(real)!r} is not a folder or a regular file (sockets, devices and pipes are never mounted)"
        )

    for root, shown, refuse_inside in forbidden:
        if real == root:
            raise MountRefused(f"{str(real)!r} is {str(shown)!r}, which is never mounted")
        if refuse_inside and _within(real, root):
            raise MountRefused(f"{str(real)!r} is inside {str(shown)!r}, which is never mounted")
        if _within(root, real):
            raise MountRefused(f"{str(real)!r} contains {str(shown)!r}, which is never mounted")

    matched: list[AllowEntry] = []
    other_groups = False
    for entry in allowlist.entries:
        try:
            entry_real = entry.path.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if _within(real, entry_real):
            if entry.applies_to(folder):
                matched.append(entry)
            else:
                other_groups = True
    if not matched:
        if allowlist.path is None or not allowlist.entries:
            raise MountRefused(
                f"no mount allowlist entries ({allowlist.path or 'no allowlist file'}); extra mounts are off"
            )
        if other_groups:
            raise MountRefused(f"the allowlist allows {str(real)!r} only for other groups, not {folder!r}")
        raise MountRefused(f"{str(real)!r} is not at or under any folder in the mount allowlist")

    read_only = not (
        req.read_write
        and any(e.read_write for e in matched)
        and (is_main or not allowlist.non_main_read_only)
    )

    name = req.container_name if req.container_name is not None else lexical.name
    if not FOLDER_RE.fullmatch(name or ""):
        raise MountRefused(
            f"container name {name!r} is not allowed: use 1-64 letters, digits, '_' or '-' starting with a "
            "letter or digit (set container_name)"
        )
    if name.lower() in taken_names:
        raise MountRefused(f"container name {name!r} is already used by {taken_names[name.lower()]!r}")
    if real in taken_paths:
        raise MountRefused(f"{str(real)!r} is already mounted as {taken_paths[real]!r}")

    if read_only:
        for point in mount_points:
            if point != real and real in point.parents:
                raise MountRefused(_submount_reason(str(point)))
    if stat.S_ISDIR(st.st_mode) and scan_depth > 0:
        scan_contents(real, content_patterns, scan_depth, scan_limit)

    container_path = f"{EXTRA_ROOT}/{name}"
    taken_names[name.lower()] = given
    taken_paths[real] = container_path
    return Mount(host_path=real, container_path=container_path, read_only=read_only)


def _as_request(item: Any) -> MountRequest:
    if isinstance(item, MountRequest):
        return item
    if isinstance(item, Mapping):
        fields = {k: item[k] for k in ("host_path", "container_name", "read_write") if k in item}
        unknown = sorted(set(map(str, item)) - {"host_path", "container_name", "read_write"})
        if "host_path" not in fields or unknown:
            raise MountRefused(
                f"a mount request needs host_path (and optionally container_name, read_write); got keys {sorted(map(str, item))}"
            )
        return MountRequest(**fields)
    raise MountRefused(f"a mount request must be a MountRequest or a table, got {type(item).__name__}")


def resolve_mounts(
    requests: Iterable[MountRequest | Mapping[str, Any]],
    allowlist: Allowlist,
    *,
    folder: str,
    is_main: bool,
    forbidden_roots: Sequence[Path],
    scan_depth: int = DEFAULT_SCAN_DEPTH,
    scan_limit: int = DEFAULT_SCAN_LIMIT,
) -> tuple[list[Mount], list[Refusal]]:
    """Check a group's extra mount requests (see the module doc for the rules).

    Returns the mounts to bind and the refusals, each with a reason fit to show the user.
    Never raises for a bad request. Mounts are named ``/workspace/extra/<container_name or
    basename>``; the first request to use a name (case-insensitively) or a real path wins.
    """
    homes = home_folders()
    forbidden: list[tuple[Path, Path, bool]] = []  # (path to compare, path to show, refuse inside)
    guarded: list[tuple[Path, bool]] = [(Path(r), True) for r in forbidden_roots]
    guarded += [(p, True) for p in docker_sockets()]
    if allowlist.path is not None:
        # Never mount the allowlist's folder or anything containing it (an agent could edit the
        # file); a folder beside or below it is fine, unless the caller forbids it too.
        guarded.append((Path(allowlist.path).expanduser().parent, False))
    for root, inside in guarded:
        try:
            p = root.expanduser()
            p = p if p.is_absolute() else p.absolute()
            forbidden.append((p.resolve(strict=False), p, inside))
            forbidden.append((Path(os.path.normpath(p)), p, inside))
        except (OSError, RuntimeError, ValueError):
            continue
    patterns = (*BLOCKED_PATTERNS, *allowlist.blocked)
    content_patterns = tuple(p for p in patterns if p not in CONTENT_EXEMPT)
    points = mount_points()
    mounts: list[Mount] = []
    refusals: list[Refusal] = []
    taken_names: dict[str, str] = {}
    taken_paths: dict[Path, str] = {}
    for item in requests:
        req = item if isinstance(item, MountRequest) else MountRequest(host_path=repr(item))
        try:
            req = _as_request(item)
            mounts.append(
                _resolve_one(
                    req,
                    allowlist,
                    folder,
                    is_main,
                    forbidden,
                    patterns,
                    content_patterns,
                    homes,
                    taken_names,
                    taken_paths,
                    scan_depth,
                    scan_limit,
                    points,
                )
            )
        except MountRefused as exc:
            refusals.append(Refusal(req, str(exc)))
        except Exception as exc:  # noqa: BLE001 - a bad request is a refusal, never a crash
            log.exception("mounts: unexpected error checking %r", req)
            refusals.append(Refusal(req, f"could not be checked ({type(exc).__name__}: {exc})"))
    return mounts, refusals
