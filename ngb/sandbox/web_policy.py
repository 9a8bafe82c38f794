"""The egress door's rules (docs/web-access.md), with no I/O: which mode and lists a group has, and
whether a host name, a port and then each address the name resolved to may be reached. Every
refusal is a sentence that starts with "web:" and names the rule, because the agent sees it.

The order of the checks: the group's mode (off refuses all), the port, the deny lists, the allow
lists (allowlist mode), and then, after resolving, every address: an address that is not public
(loopback, private, link-local, shared, reserved, multicast...) is refused unless it lies in
``web_allow_networks``; a cloud metadata address is refused always. An address hidden inside an
IPv6 one (IPv4-mapped, NAT64, 6to4) is checked as the address it carries."""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs

from ..host_patterns import HostPatternError, first_match, is_address, normalize_host
from ..records import Group, WebMode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud instance metadata services: refused whatever web_allow_networks says.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS
        "168.63.129.16",  # Azure wire server
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@attrs.frozen
class WebRules:
    """The rules in force for one group: its mode, the daemon's and its own lists, the ports and
    the address ranges opened on purpose."""

    folder: str
    mode: WebMode
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    ports: tuple[int, ...] = (80, 443)
    allow_networks: tuple[IPNetwork, ...] = ()

    def check_target(self, host: str, port: int) -> tuple[str, str | None]:
        """(the normalized host, None) when the door may resolve ``host`` and go on, else
        (host, the refusal). An address literal is checked here as an address too."""
        if self.mode is WebMode.OFF:
            return host, "web: off for this group (an operator can turn it on: ngb groups web)"
        if port not in self.ports:
            shown = ", ".join(str(p) for p in self.ports)
            return host, f"web: port {port} is not allowed (web_ports: {shown})"
        literal = host.strip("[]")
        if is_address(literal):
            address = ipaddress.ip_address(literal)
            if self.mode is WebMode.ALLOWLIST:
                return str(address), f"web: {address} is an address; this group reaches only the host names on its allow list"
            return str(address), self.check_address(address)
        try:
            name = normalize_host(host)
        except HostPatternError as exc:
            return host, f"web: {exc}"
        denied = first_match(self.deny, name)
        if denied is not None:
            return name, f"web: {name} is on the deny list ({denied})"
        if self.mode is WebMode.ALLOWLIST and first_match(self.allow, name) is None:
            return name, f"web: {name} is not on this group's allow list"
        return name, None

    def check_address(self, address: IPAddress) -> str | None:
        """None when the door may connect to ``address``, else why not."""
        inner = embedded_ipv4(address)
        if inner is not None:
            why = self.check_address(inner)
            return None if why is None else f"{why} (inside {shown(address)})"
        if address in METADATA_ADDRESSES:
            return f"web: {address} is a cloud metadata address"
        if any(address in net for net in self.allow_networks):
            return None
        kind = address_kind(address)
        return None if kind is None else f"web: {address} is {kind}"


def shown(address: IPAddress) -> str:
    """An address as a refusal names it: an IPv4-mapped one as ::ffff:10.1.2.3 whatever the Python
    version (3.13 writes it so, 3.11 and 3.12 as ::ffff:a01:203)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, NAT64, 6to4), else None."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_kind(address: IPAddress) -> str | None:
    """What makes ``address`` not a public address ("a private address"...), or None if it is one."""
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "an unspecified address"
    if isinstance(address, ipaddress.IPv4Address) and address in ipaddress.ip_network("100.64.0.0/10"):
        return "a shared (carrier-grade NAT) address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global:
        return "not a public address"
    return None


def effective_mode(group: Group, config: Any) -> WebMode:
    """The web mode in force for ``group``: its own, else web_main (the main group) or web_default."""
    if group.web is not None:
        return group.web
    return WebMode(config.web_main if group.is_main else config.web_default)


def rules_for(group: Group, config: Any) -> WebRules:
    """The rules for ``group`` under the daemon's settings: its effective mode; the daemon's lists
    first, then the group's."""
    return WebRules(
        folder=group.folder,
        mode=effective_mode(group, config),
        allow=_merge(config.web_allow, group.web_allow),
        deny=_merge(config.web_deny, group.web_deny),
        ports=tuple(config.web_ports),
        allow_networks=tuple(ipaddress.ip_network(n, strict=False) for n in config.web_allow_networks),
    )


def _merge(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))
