"""Host names and the patterns the web settings take (docs/web-access.md): parsed once, matched by
the egress door (ngb/sandbox/web_door.py) and checked by the settings, the CLI and the API.

A pattern is a host name, lower-cased and without a trailing dot: ``example.com`` matches that host
only; ``*.example.com`` matches every name below it (``a.example.com``, ``a.b.example.com``), not
``example.com`` itself. No scheme, port, path or address: the door decides on addresses by itself,
after resolving, so a pattern can never open the host or the LAN."""

from __future__ import annotations

import ipaddress
import re

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*")
MAX_HOST = 253


class HostPatternError(ValueError):
    pass


def normalize_host(host: str) -> str:
    """A host name as the door compares it: lower case, IDNA (punycode) for non-ASCII names, no
    trailing dot. Raises HostPatternError for something that is not a host name."""
    text = host.strip().rstrip(".").lower()
    if not text:
        raise HostPatternError("an empty host name")
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise HostPatternError(f"{host!r} is not a valid host name") from None
    if len(text) > MAX_HOST or not _HOST_RE.fullmatch(text):
        raise HostPatternError(f"{host!r} is not a valid host name")
    return text


def is_address(host: str) -> bool:
    """Is ``host`` an IP address literal (v4 or v6, brackets allowed)?"""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def parse_host_pattern(text: str) -> str:
    """``text`` as a normalized pattern, or HostPatternError saying what is wrong with it."""
    if not isinstance(text, str):
        raise HostPatternError(f"a host pattern must be text, got {type(text).__name__}")
    raw = text.strip()
    if "://" in raw or "/" in raw:
        raise HostPatternError(f"{text!r}: give a host name (like example.com or *.example.com), not a URL")
    if is_address(raw) or _looks_like_network(raw):
        raise HostPatternError(
            f"{text!r}: addresses are not host patterns (the door checks every resolved address itself; "
            "web_allow_networks opens an address range)"
        )
    if ":" in raw:
        raise HostPatternError(f"{text!r}: no port in a host pattern (web_ports says which ports are allowed)")
    wildcard = raw.startswith("*.")
    body = raw[2:] if wildcard else raw
    if "*" in body:
        raise HostPatternError(f"{text!r}: a wildcard is only allowed as a leading '*.'")
    name = normalize_host(body)
    if wildcard and "." not in name:
        raise HostPatternError(f"{text!r}: '*.' needs a domain with a dot under it (like *.example.com)")
    return ("*." if wildcard else "") + name


def parse_host_patterns(items: object) -> tuple[str, ...]:
    """A list (TOML, JSON) or a comma/space separated string (environment) of patterns, de-duplicated
    in order."""
    if isinstance(items, str):
        parts: list[object] = [p for p in re.split(r"[,\s]+", items) if p]
    elif isinstance(items, list | tuple):
        parts = list(items)
    else:
        raise HostPatternError(f"must be a list of host patterns, got {type(items).__name__}")
    out: list[str] = []
    for part in parts:
        pattern = parse_host_pattern(part)  # type: ignore[arg-type]
        if pattern not in out:
            out.append(pattern)
    return tuple(out)


def host_matches(pattern: str, host: str) -> bool:
    """Does the normalized ``host`` match the normalized ``pattern``?"""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def first_match(patterns: tuple[str, ...], host: str) -> str | None:
    for pattern in patterns:
        if host_matches(pattern, host):
            return pattern
    return None


def _looks_like_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True
