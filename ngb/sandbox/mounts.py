"""Extra mounts for group containers: which host folders an agent may see, checked every time a
container starts.

A group asks for extra mounts with `MountRequest` records (stored with the group). `resolve_mounts`
turns them into `Mount` records the container runtime binds at ``/workspace/extra/<name>``, or into
`Refusal` records saying why not. It never raises for a bad request.

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

import difflib
import errno
import fnmatch
import logging
import os
import re
import stat
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import attrs

from ..folders import FOLDER_RE

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

# fnmatch patterns, matched case-insensitively against single path components; a pattern with a
# "/" matches that many consecutive components.
BLOCKED_PATTERNS: tuple[str, ...] = (
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".config/gcloud",
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "*key*",
    "id_rsa*",
    "id_ed25519*",
    "credentials*",
    ".netrc",
    ".npmrc",
    ".pypirc",
    "secrets*",
)
# Patterns not applied when scanning a folder's contents: "*key*" would refuse every JavaScript
# project (node_modules/object-keys) and every keyboard driver; "*.key" still applies.
CONTENT_EXEMPT: frozenset[str] = frozenset({"*key*"})

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


@attrs.frozen
class AllowEntry:
    path: Path  # as written, ~ expanded; resolved at each check (symlinks may change)
    read_write: bool = False
    groups: tuple[str, ...] | None = None  # folder names; None: every group
    description: str = ""

    def applies_to(self, folder: str) -> bool:
        return self.groups is None or folder.lower() in {g.lower() for g in self.groups}


@attrs.frozen
class Allowlist:
    entries: tuple[AllowEntry, ...] = ()
    path: Path | None = None  # the file it came from (its folder is never mountable)
    non_main_read_only: bool = True  # only the main group may get read-write mounts
    blocked: tuple[str, ...] = ()  # extra patterns, added to BLOCKED_PATTERNS


class AllowlistError(ValueError):
    """The allowlist file is malformed; ``str()`` is one line naming the file and the entry."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = str(path)
        self.message = " ".join(message.split())
        super().__init__(f"{self.path}: {self.message}")


# --------------------------------------------------------------------------------------------------
# The allowlist file.

_TOP_KEYS = ("allow", "non_main_read_only", "blocked")
_ENTRY_KEYS = ("path", "read_write", "groups", "description")


def _unknown(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def load_allowlist(path: Path) -> Allowlist:
    """Read the mount allowlist. A missing file is an empty allowlist (no extra mounts).

    Format::

        non_main_read_only = true      # optional (default true)
        blocked = ["*.sqlite"]         # optional extra blocklist patterns

        [[allow]]
        path = "~/projects"            # required; absolute or ~
        read_write = false             # optional (default false)
        groups = ["main"]              # optional folder names (default: every group)
        description = "my projects"    # optional

    Raises AllowlistError for anything malformed, and for a file writable by group or others
    (anyone who can edit it can mount anything).
    """
    path = Path(path).expanduser()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Allowlist(path=path)
    except OSError as exc:
        raise AllowlistError(path, f"cannot read it: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise AllowlistError(path, "is not a regular file")
    if st.st_mode & 0o022:
        raise AllowlistError(
            path,
            f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); run chmod 644 {path}",
        )
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise AllowlistError(path, f"not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AllowlistError(path, f"cannot read it: {exc}") from None

    for key in data:
        if key not in _TOP_KEYS:
            raise AllowlistError(path, _unknown(key, _TOP_KEYS))
    non_main_read_only = data.get("non_main_read_only", True)
    if not isinstance(non_main_read_only, bool):
        raise AllowlistError(path, "non_main_read_only must be true or false")
    blocked = data.get("blocked", [])
    if not isinstance(blocked, list) or not all(
        isinstance(p, str) and p.strip() and "\x00" not in p for p in blocked
    ):
        raise AllowlistError(path, 'blocked must be a list of patterns, like ["*.sqlite", "private*"]')
    raw_entries = data.get("allow", [])
    if not isinstance(raw_entries, list):
        raise AllowlistError(path, "allow must be a list of [[allow]] tables")

    entries: list[AllowEntry] = []
    for i, raw in enumerate(raw_entries, start=1):
        where = f"[[allow]] entry {i}"
        if not isinstance(raw, dict):
            raise AllowlistError(path, f"{where} must be a table")
        for key in raw:
            if key not in _ENTRY_KEYS:
                raise AllowlistError(path, f"{where}: {_unknown(key, _ENTRY_KEYS)}")
        p = raw.get("path")
        if not isinstance(p, str) or not p.strip() or "\x00" in p:
            raise AllowlistError(path, f"{where}: path must be a non-empty string")
        expanded = Path(os.path.expanduser(p.strip()))
        if not expanded.is_absolute():
            raise AllowlistError(path, f"{where}: path {p!r} must be absolute or start with ~")
        if ".." in expanded.parts:
            raise AllowlistError(path, f"{where}: path {p!r} must not contain '..'")
        rw = raw.get("read_write", False)
        if not isinstance(rw, bool):
            raise AllowlistError(path, f"{where}: read_write must be true or false")
        groups = raw.get("groups")
        if groups is not None:
            if not isinstance(groups, list) or not all(
                isinstance(g, str) and FOLDER_RE.fullmatch(g) for g in groups
            ):
                raise AllowlistError(
                    path, f'{where}: groups must be a list of group folder names, like ["main"]'
                )
            groups = tuple(groups)
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise AllowlistError(path, f"{where}: description must be a string")
        entries.append(AllowEntry(expanded, rw, groups, description))
    return Allowlist(tuple(entries), path, non_main_read_only, tuple(p.strip() for p in blocked))


# --------------------------------------------------------------------------------------------------
# Checks.


def blocked_match(
    parts: Sequence[str], patterns: Iterable[str] = BLOCKED_PATTERNS, *, at_end: bool = False
) -> tuple[str, str] | None:
    """The first (pattern, matching component(s)) among ``parts``, case-insensitively, or None.
    With ``at_end``, only matches that end at the last component count."""
    low = [p.lower() for p in parts]
    for pattern in patterns:
        pat = [x for x in pattern.lower().split("/") if x]
        if not pat or len(pat) > len(low):
            continue
        starts = [len(low) - len(pat)] if at_end else range(len(low) - len(pat) + 1)
        for i in starts:
            if all(fnmatch.fnmatchcase(low[i + j], pat[j]) for j in range(len(pat))):
                return pattern, "/".join(parts[i : i + len(pat)])
    return None


def _homes() -> list[Path]:
    """The daemon user's home folder, as written and resolved."""
    try:
        home = Path.home()
        return list(dict.fromkeys([Path(os.path.normpath(home)), home.resolve()]))
    except (RuntimeError, OSError, KeyError):
        return []


def _checked_parts(path: PurePosixPath | Path, homes: Sequence[Path]) -> tuple[str, ...]:
    """The components the blocklist applies to: all but the root and the home folder's own."""
    for home in homes:
        if home != Path("/") and (path == home or home in path.parents):
            return Path(path).relative_to(home).parts
    return tuple(p for p in path.parts if p != "/")


def _docker_sockets() -> list[Path]:
    socks = [Path("/var/run/docker.sock"), Path("/run/docker.sock"), Path("/run/containerd/containerd.sock")]
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        socks.append(Path(runtime_dir) / "docker.sock")
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        socks.append(Path(host.removeprefix("unix://")))
    for home in _homes():
        socks.append(home / ".docker" / "run" / "docker.sock")
    return socks


def default_forbidden_roots(config: Any) -> list[Path]:
    """What a caller should pass as ``forbidden_roots``: the state folder, the allowlist's folder,
    the config file's folder, the secret files, the folder the ``ngb`` package was loaded from (the
    project checkout or site-packages) and the Python environment: an agent that can edit the
    daemon's code, configuration or interpreter owns the host."""
    roots = [Path(config.state_dir), Path(config.mount_allowlist).expanduser().parent]
    for name in ("config_file", "api_token_file", "anthropic_api_key_file"):
        value = getattr(config, name, None)
        if value is not None:
            roots.append(Path(value).parent if name == "config_file" else Path(value))
    roots.append(Path(__file__).resolve().parents[2])  # the folder holding the ngb package
    roots.append(Path(sys.prefix))
    return roots


def _mount_points() -> list[Path]:
    """Mount points of this process's mount namespace (Linux), [] when unknown."""
    points: list[Path] = []
    try:
        with open("/proc/self/mountinfo", "rb") as fh:
            for line in fh:
                fields = line.split(b" ")
                if len(fields) > 4:  # field 5 is the mount point, with octal escapes (\040 ...)
                    point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4])
                    points.append(Path(os.fsdecode(point)))
    except OSError:
        return []
    return points


class _Refused(Exception):
    pass


def _scan(root: Path, patterns: Sequence[str], depth: int, limit: int) -> None:
    """Walk root's contents (symlinks not followed) to ``depth`` levels; raise _Refused on a blocked
    name, an unreadable folder, or more than ``limit`` entries."""
    seen = 0
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        folder, rel = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            where = "/".join(rel) or "."
            raise _Refused(
                f"contains {where!r}, which cannot be checked ({exc.strerror}); mount a narrower folder"
            ) from None
        for entry in entries:
            seen += 1
            if seen > limit:
                raise _Refused(
                    f"has more than {limit} entries within {depth} levels, too many to check for "
                    "secrets; mount a narrower folder"
                )
            parts = (*rel, entry.name)
            # The entry's name, and it with its parent (for ".config/gcloud"; at the top level the
            # parent is the mounted folder itself).
            hit = blocked_match(((rel[-1] if rel else root.name), entry.name), patterns, at_end=True)
            if hit is not None:
                raise _Refused(
                    f"contains {'/'.join(parts)!r}, which is blocked (matches {hit[0]!r}); move it out or "
                    "mount a folder that does not contain it"
                )
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir and len(parts) < depth:
                stack.append((Path(entry.path), parts))


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
        raise _Refused("host_path must be a non-empty string")
    if "\x00" in raw:
        raise _Refused("host_path contains a NUL character")
    if req.container_name is not None and not isinstance(req.container_name, str):
        raise _Refused("container_name must be a string")
    if not isinstance(req.read_write, bool):
        raise _Refused("read_write must be true or false")
    given = raw.strip()
    if ".." in given.split("/"):
        raise _Refused("the path contains a '..' component")
    expanded = os.path.expanduser(given)
    if not expanded.startswith("/"):
        raise _Refused("the path must be absolute or start with ~ (the daemon user's home)")
    lexical = PurePosixPath(expanded)
    if ".." in lexical.parts:
        raise _Refused("the path contains a '..' component")

    hit = blocked_match(_checked_parts(lexical, homes), patterns)
    if hit is not None:
        raise _Refused(f"{hit[1]!r} is blocked (matches {hit[0]!r}); no allowlist entry can allow it")

    try:
        real = Path(expanded).resolve(strict=True)
    except FileNotFoundError:
        raise _Refused("the path does not exist") from None
    except RuntimeError:  # Python 3.11/3.12 report a loop so
        raise _Refused("the path is a symlink loop") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # Python 3.13+
            raise _Refused("the path is a symlink loop") from None
        raise _Refused(f"the path cannot be resolved ({exc.strerror or exc})") from None

    hit = blocked_match(_checked_parts(real, homes), patterns)
    if hit is not None:
        raise _Refused(f"it resolves to {str(real)!r}, and {hit[1]!r} is blocked (matches {hit[0]!r})")

    st = os.stat(real)
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise _Refused(
            f"{str(real)!r} is not a folder or a regular file (sockets, devices and pipes are never mounted)"
        )

    for root, shown, refuse_inside in forbidden:
        if real == root:
            raise _Refused(f"{str(real)!r} is {str(shown)!r}, which is never mounted")
        if refuse_inside and _within(real, root):
            raise _Refused(f"{str(real)!r} is inside {str(shown)!r}, which is never mounted")
        if _within(root, real):
            raise _Refused(f"{str(real)!r} contains {str(shown)!r}, which is never mounted")

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
            raise _Refused(
                f"no mount allowlist entries ({allowlist.path or 'no allowlist file'}); extra mounts are off"
            )
        if other_groups:
            raise _Refused(f"the allowlist allows {str(real)!r} only for other groups, not {folder!r}")
        raise _Refused(f"{str(real)!r} is not at or under any folder in the mount allowlist")

    read_only = not (
        req.read_write
        and any(e.read_write for e in matched)
        and (is_main or not allowlist.non_main_read_only)
    )

    name = req.container_name if req.container_name is not None else lexical.name
    if not FOLDER_RE.fullmatch(name or ""):
        raise _Refused(
            f"container name {name!r} is not allowed: use 1-64 letters, digits, '_' or '-' starting with a "
            "letter or digit (set container_name)"
        )
    if name.lower() in taken_names:
        raise _Refused(f"container name {name!r} is already used by {taken_names[name.lower()]!r}")
    if real in taken_paths:
        raise _Refused(f"{str(real)!r} is already mounted as {taken_paths[real]!r}")

    if read_only:
        for point in mount_points:
            if point != real and real in point.parents:
                raise _Refused(_submount_reason(str(point)))
    if stat.S_ISDIR(st.st_mode) and scan_depth > 0:
        _scan(real, content_patterns, scan_depth, scan_limit)

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
            raise _Refused(
                f"a mount request needs host_path (and optionally container_name, read_write); got keys {sorted(map(str, item))}"
            )
        return MountRequest(**fields)
    raise _Refused(f"a mount request must be a MountRequest or a table, got {type(item).__name__}")


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
    homes = _homes()
    forbidden: list[tuple[Path, Path, bool]] = []  # (path to compare, path to show, refuse inside)
    guarded: list[tuple[Path, bool]] = [(Path(r), True) for r in forbidden_roots]
    guarded += [(p, True) for p in _docker_sockets()]
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
    mount_points = _mount_points()
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
                    mount_points,
                )
            )
        except _Refused as exc:
            refusals.append(Refusal(req, str(exc)))
        except Exception as exc:  # noqa: BLE001 - a bad request is a refusal, never a crash
            log.exception("mounts: unexpected error checking %r", req)
            refusals.append(Refusal(req, f"could not be checked ({type(exc).__name__}: {exc})"))
    return mounts, refusals
