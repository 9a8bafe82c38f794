"""The mount allowlist file (TOML): which host folders extra mounts may come from, for which
groups, read-only or read-write, and the extra blocked names. `load_allowlist` reads and checks it;
a missing file allows no extra mounts. docs/security.md#extra-mounts has the format."""

from __future__ import annotations

import difflib
import os
import stat
import tomllib
from collections.abc import Sequence
from pathlib import Path

import attrs

from ..folders import FOLDER_RE


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
