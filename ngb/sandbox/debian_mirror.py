"""The host's Debian mirror, read from its apt sources (the one-line ``sources.list`` format and
the deb822 ``*.sources`` format), for making a local base image with debootstrap when no registry
answers. ``NGB_DEBIAN_MIRROR`` overrides it (ngb/config/environment.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..config.environment import debian_mirror_override

_DEBIAN_SUITES = {
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
}  # fmt: skip


@dataclass
class AptSource:
    types: list[str]
    uris: list[str]
    suites: list[str]
    components: list[str] = field(default_factory=list)
    enabled: bool = True


def parse_sources_list(text: str) -> list[AptSource]:
    """Parse the one-line format (``/etc/apt/sources.list``, ``*.list``)."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)  # options: [arch=amd64 signed-by=...]
        parts = line.split()
        if len(parts) < 3 or parts[0] not in ("deb", "deb-src"):
            continue
        out.append(AptSource(types=[parts[0]], uris=[parts[1]], suites=[parts[2]], components=parts[3:]))
    return out


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Parse the deb822 format (``*.sources``): stanzas separated by blank lines."""
    out: list[AptSource] = []
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key: str | None = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
            continue
        if raw[0] in " \t":
            if key is not None:  # continuation line
                current[key] += " " + raw.strip()
            continue
        if ":" not in raw:
            continue
        name, value = raw.split(":", 1)
        key = name.strip().lower()
        current[key] = value.strip()
    if current:
        stanzas.append(current)
    for st in stanzas:
        enabled = st.get("enabled", "yes").strip().lower() not in ("no", "false", "0")
        out.append(
            AptSource(
                types=st.get("types", "").split(),
                uris=st.get("uris", "").split(),
                suites=st.get("suites", "").split(),
                components=st.get("components", "").split(),
                enabled=enabled,
            )
        )
    return out


def find_debian_mirror(sources: Iterable[AptSource]) -> str | None:
    """The first enabled ``deb`` source for a main Debian suite (not -security/-updates...)."""
    for src in sources:
        if not src.enabled or "deb" not in src.types:
            continue
        if not any(s.rstrip("/") in _DEBIAN_SUITES for s in src.suites):
            continue
        for uri in src.uris:
            if re.match(r"^(https?|ftp|file)://", uri):
                return uri.rstrip("/")
    return None


def host_debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str | None:
    """The Debian mirror the host's apt uses (``NGB_DEBIAN_MIRROR`` overrides), or None."""
    override = debian_mirror_override()
    if override:
        return override.rstrip("/")
    sources: list[AptSource] = []
    candidates = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        candidates += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    for path in candidates:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        sources += parse_deb822_sources(text) if path.suffix == ".sources" else parse_sources_list(text)
    return find_debian_mirror(sources)
