"""Real mail servers on loopback for the email channel's tests.

* ``Dovecot``: Debian's dovecot (imapd + lmtpd) run rootless in the foreground as ``nobody``, with
  its own base_dir, a throwaway Maildir per user and a passwd-file of {PLAIN} users (each test adds
  its own users, so tests share one server but never a mailbox). scripts/setup.sh installs the
  package; a missing ``dovecot`` binary FAILS the tests (no skip).
* ``BorderSmtp``: aiosmtpd in this process (its own asyncio thread), the "border MTA": it stamps
  ``Authentication-Results: mx.test; spf=pass|fail smtp.mailfrom=...`` on every message (pass only
  when the SMTP session authenticated as the envelope sender, as a submission server would
  vouch), then delivers into Dovecot over LMTP. Everything it accepted is kept in ``received``.
* ``TcpCut``: a trio TCP relay between the channel and Dovecot whose live connections a test can
  cut (a connection dropped mid-IDLE).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import itertools
import os
import pwd
import re
import shutil
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import attrs
import trio
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.certificates import make_certificate
from tests.channel_helpers import stop_process

AUTHSERV_ID = "mx.test"
DOMAIN = "example.test"
PASSWORD = "pw-secret-1"
USER_NAMES = ("bot", "alice", "mallory", "user")
USERS = 200  # per name: add_user hands out user1, user2...
_users = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CONF = """\
base_dir = {d}/run
state_dir = {d}/state
instance_name = ngbtest-{port}
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
default_internal_user = nobody
default_internal_group = nogroup
default_login_user = nobody
listen = 127.0.0.1
protocols = imap lmtp
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/mail/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
service anvil {{
  chroot =
}}
"""


@attrs.define
class Dovecot:
    folder: Path
    imap_port: int  # plain, STARTTLS offered
    lmtp_port: int
    imaps_port: int = 0  # implicit TLS
    process: subprocess.Popen[bytes] | None = None

    @property
    def cert(self) -> Path:
        """The server's throwaway certificate (self-signed for localhost and 127.0.0.1): the CA to trust."""
        return self.folder / "cert.pem"

    @classmethod
    def start(cls, folder: Path) -> Dovecot:
        binary = shutil.which("dovecot") or (Path("/usr/sbin/dovecot") if Path("/usr/sbin/dovecot").exists() else None)
        if binary is None:
            raise RuntimeError("dovecot is not installed: run scripts/setup.sh (apt-get install dovecot-imapd dovecot-lmtpd)")
        server = cls(folder, free_port(), free_port(), free_port())
        folder.mkdir(parents=True, exist_ok=True)
        make_certificate(folder)
        (folder / "mail").mkdir()
        (folder / "passwd").write_text("".join(
            f"{name}{i}@{DOMAIN}:{{PLAIN}}{PASSWORD}::::::\n" for name in USER_NAMES for i in range(1, USERS + 1)))
        conf = folder / "dovecot.conf"
        conf.write_text(CONF.format(d=folder, port=server.imap_port, lmtp=server.lmtp_port, imaps=server.imaps_port))
        nobody = pwd.getpwnam("nobody")
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        server.process = subprocess.Popen(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(binary), "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        server.wait_ready()
        return server

    def wait_ready(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"dovecot exited ({self.process.returncode}): {err}{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.imap_port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"dovecot did not greet within {timeout}s: {self.log()}")

    def log(self) -> str:
        path = self.folder / "dovecot.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def add_user(self, name: str = "user") -> str:
        """A fresh mailbox (address), password PASSWORD. The users are written before the server
        starts: Dovecot rereads a changed passwd-file only when its mtime (in seconds) moved, so
        users appended within a second of a lookup would be refused."""
        return f"{name}{next(_users)}@{DOMAIN}"

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def message(frm: str, to: str, subject: str, body: str, *, html: str | None = None, **headers: str) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = frm, to, subject
    m["Message-ID"] = email.utils.make_msgid(domain=DOMAIN)
    for key, value in headers.items():
        m[key.replace("_", "-")] = value
    m.set_content(body)
    if html is not None:
        m.add_alternative(html, subtype="html")
    return m


class _Relay:
    def __init__(self, lmtp_port: int) -> None:
        self.lmtp_port = lmtp_port
        self.received: list[email.message.Message] = []
        self.over_tls: list[bool] = []  # per mail received: whether its session was encrypted
        self.lose_answers_from: list[str] = []  # a mail from each: delivered, then its "250" lost

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        sender = envelope.mail_from
        vouched = session.authenticated and getattr(session, "ngb_login", b"") == sender.encode()
        stamp = (f"Authentication-Results: {AUTHSERV_ID}; spf={'pass' if vouched else 'fail'} "
                 f"smtp.mailfrom={sender}\r\n").encode()
        data = stamp + envelope.original_content
        self.received.append(email.message_from_bytes(data, policy=email.policy.default))
        self.over_tls.append(session.ssl is not None)

        def deliver() -> None:
            with smtplib.LMTP("127.0.0.1", self.lmtp_port) as lmtp:
                lmtp.sendmail(sender, envelope.rcpt_tos, data)

        await asyncio.get_running_loop().run_in_executor(None, deliver)
        if sender in self.lose_answers_from:
            self.lose_answers_from.remove(sender)
            server.transport.abort()  # delivered, and the client never hears so
        return "250 OK delivered"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.password == PASSWORD.encode()
    if ok:
        session.ngb_login = auth_data.login
    return AuthResult(success=ok, handled=False)  # handled=False on failure, or the client hangs


@attrs.define
class BorderSmtp:
    port: int
    relay: _Relay
    controller: Controller

    @classmethod
    def start(cls, lmtp_port: int, *, tls: tuple[Path, Path] | None = None) -> BorderSmtp:
        """The MTA; with ``tls`` (certificate, key) a submission server that requires STARTTLS
        before anything else (and a login only over it)."""
        import ssl

        relay = _Relay(lmtp_port)
        port = free_port()
        context = None
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
        controller = Controller(relay, hostname="127.0.0.1", port=port, authenticator=_authenticator,
                                auth_require_tls=tls is not None, auth_required=False, tls_context=context,
                                require_starttls=tls is not None)
        controller.start()
        return cls(port, relay, controller)

    @property
    def received(self) -> list[email.message.Message]:
        return self.relay.received

    def send(self, msg: EmailMessage, *, login: str | None = None, extra_top: str = "") -> None:
        """Submit msg (as the authenticated ``login`` when given: then the stamp says spf=pass for
        it); ``extra_top`` is put above the message's headers, as a forger would write them."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
            if login is not None:
                smtp.login(login, PASSWORD)
            # CRLF line ends, as SMTP wants them (smtplib leaves bytes as they are; a long mail with
            # bare LFs would be one over-long line to the server)
            data = re.sub(rb"\r?\n", b"\r\n", extra_top.encode() + msg.as_bytes())
            sender = email.utils.parseaddr(str(msg["From"]))[1]
            smtp.sendmail(sender, [email.utils.parseaddr(str(msg["To"]))[1]], data)

    def stop(self) -> None:
        self.controller.stop()


class TcpCut:
    """A TCP relay 127.0.0.1:port -> target whose connections ``cut()`` closes (both sides)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.accepted = 0
        self.refusing = False  # True: new connections are closed at once (the server is "down")
        self._scopes: list[trio.CancelScope] = []

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        if self.refusing:
            await client.aclose()
            return
        self.accepted += 1
        with trio.CancelScope() as scope:
            self._scopes.append(scope)
            async with client, await trio.open_tcp_stream("127.0.0.1", self.target) as upstream:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)

    @staticmethod
    async def _pump(a: trio.SocketStream, b: trio.SocketStream, both: trio.CancelScope) -> None:
        try:
            while data := await a.receive_some(65536):
                await b.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        both.cancel()  # one side ended: end the other

    def cut(self) -> None:
        for scope in self._scopes:
            scope.cancel()
        self._scopes.clear()


def mailbox_iter(folder: Path, address: str) -> Iterator[Path]:
    """The files of a user's Maildir (new and cur)."""
    base = folder / "mail" / address / "Maildir"
    for sub in ("new", "cur"):
        if (base / sub).exists():
            yield from (base / sub).iterdir()
