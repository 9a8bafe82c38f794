"""The email channel's IMAP connection, on the shared asyncio loop (aioimaplib): every method of
``Mailbox`` runs there, called from trio through ``AsyncioBridge.call``.

One connection does everything: secure it (implicit TLS, or STARTTLS: required, never silently
plain; aioimaplib has no STARTTLS of its own, so the command is sent through its protocol and the
socket upgraded with asyncio's ``start_tls``), log in, select the mailbox, list the unseen messages by UID, fetch
one (``BODY.PEEK[]``, so fetching does not mark it seen), mark it ``\\Seen`` (only after the daemon
stored it), and wait for news: IDLE when the server offers it (ended by the server's first push,
or after ``idle_renew``), else a plain sleep of ``poll_interval`` followed by NOOP. A connection
that drops while waiting raises at once (aioimaplib's connection-lost callback), so the channel
reconnects instead of idling on a dead socket.

A server tells of new mail once, and often at the end of the answer to whatever command was
running (Dovecot says ``* 2 EXISTS`` after a FETCH's or a SEARCH's result); the IDLE that follows
does not tell it again. aioimaplib drops such lines ("ignored untagged response"), so the client
here is aioimaplib's with a protocol that notes them (``_NotingProtocol``; aioimaplib is pinned),
and ``wait`` returns at once when any answer since the last search told of news: else that mail
would wait for the next poll, a minute by default."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from typing import Any

import aioimaplib

from .email_settings import EmailSettings
from .status import AuthError


class ImapError(ConnectionError):
    """The server refused a command, or the connection is gone: the session reconnects."""


class _NotingProtocol(aioimaplib.IMAP4ClientProtocol):
    """aioimaplib's protocol, noting every untagged EXISTS or RECENT the server sends."""

    news = False

    def _untagged_response(self, line: bytes) -> Any:
        if _NEWS.fullmatch(line.strip()):
            self.news = True
        return super()._untagged_response(line)


class _Client(aioimaplib.IMAP4):
    def create_client(self, host: str, port: int, loop: asyncio.AbstractEventLoop | None,
                      conn_lost_cb: Any = None, ssl_context: ssl.SSLContext | None = None) -> None:
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _NotingProtocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context))


_NEWS = re.compile(rb"\* \d+ (EXISTS|RECENT)")


class Mailbox:
    def __init__(self, settings: EmailSettings, ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self.ssl_context = ssl_context
        self.imap: Any = None
        self.idle = False  # the server offers IDLE
        self.uidvalidity: str | None = None
        self.exists = 0  # messages in the mailbox at the last SELECT
        self._lost: asyncio.Event | None = None

    async def connect(self) -> None:
        """Connect, log in, select the mailbox. AuthError when the login is refused."""
        s = self.settings
        self._lost = asyncio.Event()
        lost = self._lost
        context = self.ssl_context or s.tls_context() if s.imap_security != "none" else None
        self.imap = _Client(host=s.imap_host, port=s.imap_port, timeout=s.connect_timeout,
                            conn_lost_cb=lambda exc: lost.set(),
                            ssl_context=context if s.imap_security == "tls" else None)
        await self.imap.wait_hello_from_server()
        if s.imap_security == "starttls":
            assert context is not None
            await self._starttls(context)
        response = await self.imap.login(s.username, s.password or "")
        if response.result != "OK":
            raise AuthError(f"IMAP login refused: {_said(response)}")
        response = await self.imap.select(s.mailbox)
        if response.result != "OK":
            raise ImapError(f"cannot select {s.mailbox!r}: {_said(response)}")
        for line in response.lines:
            text = _text(line)
            if m := re.search(r"UIDVALIDITY (\d+)", text):
                self.uidvalidity = m.group(1)
            if m := re.fullmatch(r"(\d+) EXISTS", text.strip()):
                self.exists = int(m.group(1))
        self.idle = self.imap.has_capability("IDLE") and s.idle

    async def _starttls(self, context: ssl.SSLContext) -> None:
        """Upgrade the connection before anything else is said (RFC 9051 section 6.2.1); the
        capabilities are asked again over TLS (what was said in plain text may have been forged)."""
        protocol = self.imap.protocol
        await asyncio.wait_for(protocol.capability(), self.settings.connect_timeout)
        if "STARTTLS" not in protocol.capabilities:
            raise ImapError(f"{self.settings.imap_host} does not offer STARTTLS (imap_security = \"starttls\"): "
                            "not logging in over plain text")
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        response = await asyncio.wait_for(protocol.execute(command), self.settings.connect_timeout)
        if response.result != "OK":
            raise ImapError(f"STARTTLS refused: {_said(response)}")
        loop = asyncio.get_running_loop()
        protocol.transport = await asyncio.wait_for(
            loop.start_tls(protocol.transport, protocol, context, server_hostname=self.settings.imap_host),
            self.settings.connect_timeout)
        await asyncio.wait_for(protocol.capability(), self.settings.connect_timeout)

    async def unseen(self) -> list[str]:
        """The UIDs of the unseen messages, oldest first."""
        self.imap.protocol.news = False  # what the search finds is what was told of till now
        response = await self._ok(self.imap.uid_search("UNSEEN", charset=None), "UID SEARCH")
        uids: list[str] = []
        for line in response.lines:
            text = _text(line)
            if text.startswith("SEARCH"):
                uids.extend(text.split()[1:])
            elif text and text[0].isdigit() and not text.startswith("SEARCH completed"):
                uids.extend(t for t in text.split() if t.isdigit())
        return sorted(set(uids), key=int)

    async def fetch(self, uid: str) -> bytes | None:
        """The whole message of ``uid`` without marking it seen (None: it is gone meanwhile)."""
        response = await self._ok(self.imap.uid("fetch", uid, "(BODY.PEEK[])"), "UID FETCH")
        for line in response.lines:
            if isinstance(line, bytearray):  # aioimaplib gives a literal (the message) as a bytearray
                return bytes(line)
        return None

    async def mark_seen(self, uid: str) -> None:
        await self._ok(self.imap.uid("store", uid, "+FLAGS.SILENT", "(\\Seen)"), "UID STORE")

    async def wait(self, timeout: float) -> None:
        """Until the server pushes news (IDLE) or ``timeout`` passes. ImapError when the connection
        drops meanwhile."""
        assert self._lost is not None
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            if self.imap.protocol.news:  # told already, with the answer to another command
                return
            if not self.idle:
                await asyncio.wait({lost}, timeout=timeout)
                self._check(lost)
                await self._ok(self.imap.noop(), "NOOP")
                return
            idle = await self.imap.idle_start(timeout=timeout + self.settings.connect_timeout)
            push = asyncio.ensure_future(self.imap.wait_server_push(timeout))
            try:
                await asyncio.wait({push, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                push.cancel()
                with contextlib.suppress(BaseException):
                    await push
            self._check(lost)
            self.imap.idle_done()
            done, _ = await asyncio.wait({idle, lost}, timeout=self.settings.connect_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            self._check(lost)
            if idle not in done:
                raise ImapError("the server did not end IDLE")
            if idle.result().result != "OK":
                raise ImapError(f"IDLE failed: {_said(idle.result())}")
        finally:
            lost.cancel()

    async def logout(self) -> None:
        if self.imap is not None and not (self._lost and self._lost.is_set()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.imap.logout(), 3)

    def _check(self, lost: asyncio.Future[Any]) -> None:
        if lost.done():
            raise ImapError("the IMAP connection was lost")

    async def _ok(self, call: Any, what: str) -> Any:
        assert self._lost is not None
        if self._lost.is_set():
            call.close()
            raise ImapError("the IMAP connection was lost")
        try:
            response = await call
        except (TimeoutError, aioimaplib.AioImapException) as exc:
            raise ImapError(f"{what}: {type(exc).__name__} {exc}") from exc
        if response.result != "OK":
            raise ImapError(f"{what} refused: {_said(response)}")
        return response


def _text(line: Any) -> str:
    return bytes(line).decode("utf-8", "replace") if isinstance(line, bytes | bytearray) else str(line)


def _said(response: Any) -> str:
    return " ".join(_text(line) for line in response.lines)[:200]
