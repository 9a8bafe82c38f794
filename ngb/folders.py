"""Group folder names, and the one safe way to turn a folder name into a path.

A folder name is what a registered group's files live under (``state/groups/<folder>/``), what its
container and sockets are named after, and what the mount allowlist's ``groups`` lists. Rules:

* ``FOLDER_RE``: 1-64 characters from ``A-Z a-z 0-9 _ -``, starting with a letter or a digit, so a
  name is never ``.``/``..``, never holds a ``/``, never starts with ``-`` (no option injection into a
  command line) and is valid in a Docker container name.
* ``global`` is reserved (in any case): it is the shared memory folder ``state/global``.
* Names are unique regardless of case: ``Family`` is refused while ``family`` exists, because on a
  case-insensitive file system (macOS, Windows shares) both would be one folder, and two groups
  sharing a folder would read each other's files. The case of a name is otherwise kept as given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config

__all__ = ["FOLDER_RE", "RESERVED_FOLDERS", "validate_folder", "group_dir"]

FOLDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
RESERVED_FOLDERS = frozenset({"global"})


def validate_folder(name: object, existing: Iterable[str] = ()) -> str:
    """Return ``name`` if it is a usable group folder name, else raise ValueError saying why.

    ``existing``: the folder names already in use; a name equal to one of them ignoring case, but
    spelled differently, is refused (the exact same name is allowed, so re-validating a registered
    group's own folder passes; refusing exact duplicates is the registry's job).
    """
    if not isinstance(name, str):
        raise ValueError(f"a folder name must be a string, got {type(name).__name__}")
    if not name:
        raise ValueError("the folder name is empty")
    # fullmatch, not match: "$" would also match before a trailing newline.
    if not FOLDER_RE.fullmatch(name):
        raise ValueError(
            f"folder name {name!r} is not allowed: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    if name.lower() in RESERVED_FOLDERS:
        raise ValueError(f"folder name {name!r} is reserved (it is the shared global memory folder)")
    for other in existing:
        if other != name and other.lower() == name.lower():
            raise ValueError(
                f"folder name {name!r} differs only by case from the existing folder {other!r}; "
                "on a case-insensitive file system they would be the same folder"
            )
    return name


def group_dir(config: Config, folder: str) -> Path:
    """The resolved path of a group's folder, ``<state_dir>/groups/<folder>``.

    Raises ValueError for a bad name, and when the resolved path is not a direct child of the
    resolved groups folder (for example because ``groups/<folder>`` is a symlink to elsewhere).
    The folder need not exist.
    """
    validate_folder(folder)
    base = Path(config.groups_dir).resolve()
    path = (base / folder).resolve()
    if path.parent != base or path.name != folder:
        raise ValueError(f"group folder {folder!r} resolves to {path}, outside {base}")
    return path
