"""The browser's own proxy in front of the egress door: it answers Chromium's background requests
(its component updater still asks update.googleapis.com at start, whatever the flags say) with a
local 403, so they never leave the container nor fill the door's log, and hands every other
connection, byte for byte, to the runner's web forwarder (127.0.0.1:NGB_WEB_PORT), where the
door decides as for any program."""

from __future__ import annotations

import asyncio
import contextlib

from .host import relay

# Hosts only Chromium itself talks to (updates, variations, safe browsing, crash reports): never a
# page the agent opened.
BACKGROUND_HOSTS = (
    "update.googleapis.com",
    "clients2.google.com",
    "clients2.googleusercontent.com",
    "redirector.gvt1.com",
    "edgedl.me.gvt1.com",
    "safebrowsing.googleapis.com",
    "content-autofill.googleapis.com",
    "optimizationguide-pa.googleapis.com",
    "clientservices.googleapis.com",
    "accounts.google.com",
)
MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 30.0
BLOCKED = b"HTTP/1.1 403 browser background traffic stays in the container\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def target_host(head: bytes) -> str:
    """The host a proxy request's first line names (CONNECT host:port, or an absolute URL)."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) < 2:
        return ""
    target = parts[1]
    if parts[0].upper() != "CONNECT":
        target = target.split("://", 1)[-1].split("/", 1)[0]
    host = target.rsplit(":", 1)[0] if not target.endswith("]") else target
    return host.strip("[]").lower().rstrip(".")


def is_background(host: str) -> bool:
    return any(host == h or host.endswith("." + h) for h in BACKGROUND_HOSTS)


class BrowserProxy:
    """127.0.0.1:<any port> -> 127.0.0.1:web_port, minus Chromium's background hosts."""

    def __init__(self, web_port: int) -> None:
        self.web_port = web_port
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.blocked: list[str] = []  # hosts answered locally (the newest 50)
        self.refusals: dict[str, str] = {}  # CONNECT target -> the door's rule, the last answer seen

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(creader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            cwriter.close()
            return
        host = target_host(head)
        if is_background(host):
            self.blocked.append(host)
            del self.blocked[:-50]
            with contextlib.suppress(OSError):
                cwriter.write(BLOCKED)
                await cwriter.drain()
            cwriter.close()
            return
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.web_port)
        except OSError:
            cwriter.close()
            return
        uwriter.write(head)
        try:
            first = await asyncio.wait_for(ureader.read(65536), HEAD_TIMEOUT)
        except (OSError, TimeoutError):
            first = b""
        self.note_answer(head, first)
        try:
            cwriter.write(first)
            await cwriter.drain()
        except OSError:
            uwriter.close()
            cwriter.close()
            return
        await relay(creader, cwriter, ureader, uwriter)

    def note_answer(self, head: bytes, answer: bytes) -> None:
        """Keep the door's rule for a refused tunnel: Chromium reports only
        net::ERR_TUNNEL_CONNECTION_FAILED, the browser tool then names the rule (browser.py)."""
        line = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(line) < 2 or line[0].upper() != "CONNECT":
            return
        target = line[1].lower()
        rule = door_refusal(answer)
        if rule is None:
            self.refusals.pop(target, None)
        else:
            self.refusals[target] = rule
            if len(self.refusals) > 50:
                self.refusals.pop(next(iter(self.refusals)))


def door_refusal(answer: bytes) -> str | None:
    """The rule of the egress door's refusal ("web: ..."), from the head of its answer."""
    status, _, rest = answer.partition(b"\r\n")
    fields = rest.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
    if not status.startswith(b"HTTP/1.") or b"x-ngb-web: refused" not in fields:
        return None
    parts = status.decode("utf-8", "replace").split(" ", 2)
    return parts[2].strip()[:300] if len(parts) == 3 and parts[2].startswith("web:") else None
