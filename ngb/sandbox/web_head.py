"""The first bytes of a request to the egress door: a proxy request's head, read within limits and
parsed strictly (a CONNECT ``host:port``, or an absolute ``http://`` URL), and the head the door
sends on to a site for a plain-HTTP request (origin-form, no proxy or hop-by-hop headers,
``Connection: close``). No I/O besides reading the head; ngb/sandbox/web_door.py uses it."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import attrs
import trio

MAX_HEAD = 16 * 1024
HEAD_TIMEOUT = 10.0

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOP_BY_HOP = {
    b"connection", b"proxy-connection", b"keep-alive", b"proxy-authorization", b"proxy-authenticate",
    b"te", b"trailer", b"upgrade",
}


class BadHead(Exception):
    """The client's request cannot be a proxy request; ``status`` is the answer's status."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


@attrs.frozen
class ProxyRequest:
    method: str
    host: str  # as written (an IPv6 address without brackets)
    port: int
    path: str = ""  # origin-form target of a plain-HTTP request; "" for CONNECT
    headers: tuple[tuple[bytes, bytes], ...] = ()
    rest: bytes = b""  # bytes the client sent after the head (a body, or the TLS hello of a tunnel)

    @property
    def tunnel(self) -> bool:
        return self.method == "CONNECT"

    def forward_head(self) -> bytes:
        """The head sent to the site for a plain-HTTP request."""
        lines = [f"{self.method} {self.path} HTTP/1.1".encode()]
        names = _connection_tokens(self.headers)
        has_host = False
        for name, value in self.headers:
            low = name.lower()
            if low in _HOP_BY_HOP or low in names:
                continue
            has_host = has_host or low == b"host"
            lines.append(name + b": " + value)
        if not has_host:
            shown = f"[{self.host}]" if ":" in self.host else self.host
            lines.append(b"Host: " + (shown if self.port == 80 else f"{shown}:{self.port}").encode())
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n"


async def read_head(stream: trio.abc.ReceiveStream, *, timeout: float = HEAD_TIMEOUT) -> ProxyRequest | None:
    """The client's proxy request, or None when it closed before sending one. BadHead when it is
    not one the door serves."""
    buf = bytearray()
    with trio.move_on_after(timeout):
        while b"\r\n\r\n" not in buf:
            if len(buf) > MAX_HEAD:
                raise BadHead(431, "web: the request head is too large")
            chunk = await stream.receive_some(4096)
            if not chunk:
                if buf:
                    raise BadHead(400, "web: the request ended before its head did")
                return None
            buf += chunk
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            raise BadHead(431, "web: the request head is too large")
        return parse_head(head, rest)
    raise BadHead(408, "web: the request head did not arrive in time")


def parse_head(head: bytes, rest: bytes = b"") -> ProxyRequest:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadHead(400, "web: not an HTTP/1.1 proxy request")
    method = parts[0].decode("ascii")
    target = parts[1].decode("ascii", "replace")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise BadHead(400, "web: a malformed header line")
        headers.append((name, value.strip()))
    if method == "CONNECT":
        host, port = _authority(target, default=None)
        return ProxyRequest(method, host, port, headers=tuple(headers), rest=rest)
    url = urlsplit(target)
    if url.scheme == "https":
        raise BadHead(400, "web: an https:// URL is reached with CONNECT, not as a plain request")
    if url.scheme != "http" or not url.netloc:
        raise BadHead(400, "web: a proxy request needs an absolute http:// URL (or CONNECT host:port)")
    if "@" in url.netloc:
        raise BadHead(400, "web: credentials in the URL are not forwarded")
    host, port = _authority(url.netloc, default=80)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    return ProxyRequest(method, host, port, path=path, headers=tuple(headers), rest=rest)


def _authority(text: str, *, default: int | None) -> tuple[str, int]:
    if text.startswith("["):
        host, sep, tail = text[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
        if not sep or (tail and not tail.startswith(":")):
            raise BadHead(400, f"web: {text!r} is not host:port")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not port_text:
        if default is None:
            raise BadHead(400, f"web: CONNECT needs host:port, got {text!r}")
        return host, default
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise BadHead(400, f"web: {port_text!r} is not a port")
    if not host:
        raise BadHead(400, f"web: {text!r} names no host")
    return host, int(port_text)


def _connection_tokens(headers: tuple[tuple[bytes, bytes], ...]) -> set[bytes]:
    out: set[bytes] = set()
    for name, value in headers:
        if name.lower() in (b"connection", b"proxy-connection"):
            out.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return out


def answer(status: int, why: str) -> bytes:
    """A refusal: the rule in the reason phrase (clients show it for a refused tunnel) and the body."""
    reason = why.replace("\r", " ").replace("\n", " ")[:200]
    body = (reason + "\n").encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1", "replace")
        + b"Content-Type: text/plain; charset=utf-8\r\n"
        + f"Content-Length: {len(body)}\r\n".encode()
        + b"X-NGB-Web: refused\r\nConnection: close\r\n\r\n"
        + body
    )
