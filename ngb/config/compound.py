"""The parsers of compound settings: tables ([channels.NAME]), lists (plugin modules, host
patterns, ports, networks) and choices (web modes, DM policies, per channel). Each takes a raw value
and returns the typed one, or raises ValueError whose text is the message part of a ConfigError,
like the parsers of values.py."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from ..host_patterns import parse_host_patterns
from ..records import DmPolicy, WebMode
from .values import CHANNEL_NAME_RE, got


def channels(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a table of [channels.NAME] tables, got {got(value)}")
    out: dict[str, dict[str, Any]] = {}
    for name, table in value.items():
        if not isinstance(name, str) or not CHANNEL_NAME_RE.fullmatch(name):
            raise ValueError(f"channel names must match [a-z][a-z0-9_-]*, got {got(name)}")
        if not isinstance(table, Mapping):
            raise ValueError(f"channels.{name} must be a table, got {got(table)}")
        out[name] = dict(table)
    return out


_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_.]*)?")


def module_list(value: Any) -> tuple[str, ...]:
    """Plugin module paths: a list (TOML) or a comma-separated string (environment)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f"must be a list of module paths, got {got(value)}")
    out = []
    for item in items:
        if isinstance(value, str) and not item.strip():
            continue  # "a,,b" and a trailing comma
        if not isinstance(item, str) or not _MODULE_RE.fullmatch(item.strip()):
            raise ValueError(
                f'must be a list of module paths like "my_plugin" or "pkg.mod:attr", got {got(item)}'
            )
        out.append(item.strip())
    return tuple(out)


def web_mode(value: Any) -> WebMode:
    """off, allowlist or open (ngb.records.WebMode)."""
    if isinstance(value, WebMode):
        return value
    try:
        return WebMode(value.strip().lower() if isinstance(value, str) else "")
    except ValueError:
        raise ValueError(f"must be one of off, allowlist, open; got {got(value)}") from None


def dm_policy(value: Any) -> DmPolicy:
    """pairing, open or closed (ngb.records.DmPolicy)."""
    if isinstance(value, DmPolicy):
        return value
    try:
        return DmPolicy(value.strip().lower() if isinstance(value, str) else "")
    except ValueError:
        raise ValueError(f"must be one of pairing, open, closed; got {got(value)}") from None


def dm_policies(value: Any) -> dict[str, DmPolicy]:
    """Per channel: a table (TOML) or "telegram=open,slack=closed" (environment)."""
    if isinstance(value, str):
        items: list[tuple[Any, Any]] = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            name, sep, policy = part.partition("=")
            if not sep:
                raise ValueError(f'must be channel=policy pairs like "telegram=open,slack=closed"; got {got(part)}')
            items.append((name.strip(), policy))
    elif isinstance(value, dict):
        items = list(value.items())
    else:
        raise ValueError(f'must be a table of channel = policy, or "telegram=open,slack=closed"; got {got(value)}')
    out: dict[str, DmPolicy] = {}
    for name, policy in items:
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
            raise ValueError(f"{got(name)} is not a channel name")
        try:
            out[name] = dm_policy(policy)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return out


def host_patterns(value: Any) -> tuple[str, ...]:
    """Host patterns (example.com, *.example.com): a list (TOML) or a comma-separated string."""
    return parse_host_patterns(value)


def port_list(value: Any) -> tuple[int, ...]:
    """TCP ports: a list (TOML) or a comma-separated string (environment)."""
    items = [p for p in re.split(r"[,\s]+", value) if p] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ValueError(f"must be a non-empty list of ports, got {got(value)}")
    out: list[int] = []
    for item in items:
        try:
            port = int(item)
        except (TypeError, ValueError):
            raise ValueError(f"must be a list of ports 1-65535, got {got(item)}") from None
        if isinstance(item, bool) or not 1 <= port <= 65535:
            raise ValueError(f"must be a list of ports 1-65535, got {got(item)}")
        if port not in out:
            out.append(port)
    return tuple(out)


def network_list(value: Any) -> tuple[str, ...]:
    """Address ranges in CIDR form (10.0.0.0/8, fd00::/8; a bare address is one host)."""
    items = [p for p in re.split(r"[,\s]+", value) if p] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f"must be a list of address ranges like 192.168.1.0/24, got {got(value)}")
    out: list[str] = []
    for item in items:
        try:
            net = ipaddress.ip_network(str(item).strip(), strict=False)
        except ValueError:
            raise ValueError(f"must be a list of address ranges like 192.168.1.0/24, got {got(item)}") from None
        if str(net) not in out:
            out.append(str(net))
    return tuple(out)
