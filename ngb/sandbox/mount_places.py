"""What no extra mount may name, reach or contain: the blocked names (`BLOCKED_PATTERNS`,
`blocked_match`), the roots no agent may mount (`default_forbidden_roots`: the daemon's state,
configuration, secrets, code and interpreter; always the Docker and containerd sockets), the host's
mount points (sub-mounts a read-only bind would leave writable) and the scan of a folder's
contents (`scan_contents`). ngb/sandbox/mounts.py applies them to each request."""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ..config.environment import docker_host, user_runtime_dir
from ..paths import package_parent

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


def home_folders() -> list[Path]:
    """The daemon user's home folder, as written and resolved."""
    try:
        home = Path.home()
        return list(dict.fromkeys([Path(os.path.normpath(home)), home.resolve()]))
    except (RuntimeError, OSError, KeyError):
        return []


def checked_parts(path: PurePosixPath | Path, homes: Sequence[Path]) -> tuple[str, ...]:
    """The components the blocklist applies to: all but the root and the home folder's own."""
    for home in homes:
        if home != Path("/") and (path == home or home in path.parents):
            return Path(path).relative_to(home).parts
    return tuple(p for p in path.parts if p != "/")


def docker_sockets() -> list[Path]:
    socks = [Path("/var/run/docker.sock"), Path("/run/docker.sock"), Path("/run/containerd/containerd.sock")]
    runtime_dir = user_runtime_dir()
    if runtime_dir:
        socks.append(runtime_dir / "docker.sock")
    host = docker_host()
    if host.startswith("unix://"):
        socks.append(Path(host.removeprefix("unix://")))
    for home in home_folders():
        socks.append(home / ".docker" / "run" / "docker.sock")
    return socks


def default_forbidden_roots(config: Any) -> list[Path]:
    """What a caller should pass as ``forbidden_roots``: the state folder, the allowlist's folder,
    the config file's folder, the secret files, the folder the ``ngb`` package was loaded from (the
    project checkout or site-packages) and the Python environment: an agent that can edit the
    daemon's code, configuration or interpreter owns the host."""
    roots = [Path(config.state_dir), Path(config.mount_allowlist).expanduser().parent]
    for name in ("config_file", "api_token_file", "anthropic_api_key_file", "transcribe_api_key_file"):
        value = getattr(config, name, None)
        if value is not None:
            roots.append(Path(value).parent if name == "config_file" else Path(value))
    roots.append(package_parent())  # the folder holding the ngb package
    roots.append(Path(sys.prefix))
    return roots


def mount_points() -> list[Path]:
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


class MountRefused(Exception):
    """A mount request is refused; the text says why, fit to show the user."""


def scan_contents(root: Path, patterns: Sequence[str], depth: int, limit: int) -> None:
    """Walk root's contents (symlinks not followed) to ``depth`` levels; raise MountRefused on a blocked
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
            raise MountRefused(
                f"contains {where!r}, which cannot be checked ({exc.strerror}); mount a narrower folder"
            ) from None
        for entry in entries:
            seen += 1
            if seen > limit:
                raise MountRefused(
                    f"has more than {limit} entries within {depth} levels, too many to check for "
                    "secrets; mount a narrower folder"
                )
            parts = (*rel, entry.name)
            # The entry's name, and it with its parent (for ".config/gcloud"; at the top level the
            # parent is the mounted folder itself).
            hit = blocked_match(((rel[-1] if rel else root.name), entry.name), patterns, at_end=True)
            if hit is not None:
                raise MountRefused(
                    f"contains {'/'.join(parts)!r}, which is blocked (matches {hit[0]!r}); move it out or "
                    "mount a folder that does not contain it"
                )
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir and len(parts) < depth:
                stack.append((Path(entry.path), parts))
