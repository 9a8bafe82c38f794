"""Doctor's check of the agents' web (docs/web-access.md): what the egress door lets through by
default, and the settings that open more than an operator may think: a container network (a way
past the door), address ranges that include this host's own services or a whole LAN, and an extra
CA file the containers cannot use."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from ..config import Config
from ..sandbox.web_policy import METADATA_ADDRESSES
from .check import Check

_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
WIDE_RANGE = 1 << 16  # more addresses than this in one opened range: a whole LAN (or more)


def check_web(config: Config) -> Check:
    ports = ", ".join(str(p) for p in config.web_ports)
    detail = f"main group: {config.web_main}, other groups: {config.web_default} (unless set: ngb groups web); ports {ports}"
    warnings: list[str] = []
    fixes: list[str] = []
    if config.container_network != "none":
        warnings.append(f"container_network is {config.container_network}: the agents reach the network directly, "
                        "past the egress door's rules, limits and log")
        fixes.append("set container_network = \"none\" (the door gives the agents the web)")
    for text in config.web_allow_networks:
        net = ipaddress.ip_network(text, strict=False)
        if any(net.version == lo.version and net.overlaps(lo) for lo in _LOOPBACK):
            warnings.append(f"web_allow_networks {net} includes this host's loopback: the agents reach its local services")
        elif net.num_addresses > WIDE_RANGE:
            warnings.append(f"web_allow_networks {net} opens {net.num_addresses:,} addresses, not one service")
        if any(a in net for a in METADATA_ADDRESSES):
            detail += f"; {net} holds a cloud metadata address, which stays refused"
    if warnings and not fixes:
        fixes.append("open single hosts (192.168.1.20/32) in web_allow_networks")
    ca = config.web_extra_ca_file
    if ca is not None:
        try:
            data = Path(ca).expanduser().read_bytes()
        except OSError as exc:
            warnings.append(f"web_extra_ca_file {ca} cannot be read ({exc.strerror or exc})")
            fixes.append(f"chmod 644 {ca}, or unset web_extra_ca_file")
        else:
            if b"-----BEGIN CERTIFICATE-----" not in data or b"PRIVATE KEY" in data:
                warnings.append(f"web_extra_ca_file {ca} is not a PEM file of certificates only (not used)")
                fixes.append("point web_extra_ca_file at the CA's certificate (PEM), never a key")
    if warnings:
        return Check("web", "warn", "; ".join(warnings) + f" ({detail})", "; ".join(fixes))
    return Check("web", "ok", detail)
