"""Behind a reverse proxy: the client's address and scheme from ``X-Forwarded-For`` and
``X-Forwarded-Proto``, believed only when the connection comes from a proxy the operator named
(``trusted_proxies``; docs/deployment.md, "Behind a reverse proxy").

Why it matters: the wrong-token lockout, rate limits and log lines key on the client's address,
and the login cookie is ``Secure`` on HTTPS. Behind nginx every request comes from nginx's
address over plain HTTP: one guesser would lock every user out, and the cookie would lose
``Secure``. Believing the headers from anyone, though, would let a client name any address it
likes and step out of its own lockout.

The rule: when the peer is a trusted proxy, walk ``X-Forwarded-For`` from the right (the nearest
hop first), skipping trusted proxies; the first address that is not one is the client. Anything a
client wrote further left is never read. ``X-Forwarded-Proto`` is taken from the same trusted hop
(its last value). A request whose peer is not trusted keeps its peer address and scheme, whatever
headers it carries. With no trusted proxies (the default) the headers are ignored altogether.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Asgi = Callable[..., Awaitable[None]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.frozen
class TrustedProxies:
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, ranges: Iterable[str]) -> TrustedProxies:
        return cls(tuple(ipaddress.ip_network(r, strict=False) for r in ranges))

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def client_of(self, peer: str, forwarded_for: list[str]) -> str:
        """The client's address: ``peer`` unless it is trusted, then the nearest untrusted hop."""
        if not self.trusts(peer):
            return peer
        hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return _address(hop) or peer
        return (_address(hops[0]) if hops else None) or peer  # every hop is a proxy of ours


def _address(hop: str) -> str | None:
    """The address in one X-Forwarded-For entry, or None when it is not one (``unknown``, junk)."""
    value = hop.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1:value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.partition(":")[0]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


class ForwardedHeaders:
    """ASGI middleware: rewrites the scope's ``client`` and ``scheme`` for requests from a trusted proxy."""

    def __init__(self, app: Asgi, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if self.trusted.networks and scope.get("type") in ("http", "websocket"):
            scope = self.rewrite(scope)
        await self.app(scope, receive, send)

    def rewrite(self, scope: Scope) -> Scope:
        client = scope.get("client")
        peer = str(client[0]) if client else ""
        if not peer or not self.trusted.trusts(peer):
            return scope
        headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
        forwarded_for = [v.decode("latin-1") for k, v in headers if k.lower() == b"x-forwarded-for"]
        protos = [v.decode("latin-1") for k, v in headers if k.lower() == b"x-forwarded-proto"]
        new = dict(scope)
        new["client"] = (self.trusted.client_of(peer, forwarded_for), 0)
        proto = protos[-1].split(",")[-1].strip().lower() if protos else ""
        if proto in ("http", "https"):
            secure = proto == "https"
            new["scheme"] = ("wss" if secure else "ws") if scope["type"] == "websocket" else proto
        return new
