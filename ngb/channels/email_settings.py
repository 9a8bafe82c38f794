"""Email's ``[channels.email]`` table -> EmailSettings (docs/channels/email.md), and its chat names
(``email:<the correspondent's address>``, lower case).

The password comes from ``NGB_EMAIL_PASSWORD`` (put into the table by config.py) or
``password_file``; without it, or without ``address`` and ``imap_host``, the channel is off."""

from __future__ import annotations

import re
import ssl
from functools import partial
from pathlib import Path
from typing import Any

import attrs

from .chats import chat_name, platform_id_of
from .settings import ChannelTable, setting

PREFIX = "email"
IMAP_PORTS = {"tls": 993, "starttls": 143, "none": 143}
SMTP_PORTS = {"tls": 465, "starttls": 587, "none": 25}
KEYS = {"address", "username", "password", "password_file", "imap_host", "imap_port", "imap_security",
        "smtp_host", "smtp_port", "smtp_security", "smtp_username", "smtp_password", "smtp_password_file",
        "mailbox", "allowed_senders", "authserv_id", "idle_renew", "poll_interval", "connect_timeout",
        "reconnect_base", "reconnect_cap", "enabled", "ca_file", "idle"}
ADDRESS = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")


@attrs.frozen
class EmailSettings:
    address: str = ""  # the bot's own address: the From of its replies
    username: str = ""  # the IMAP login (default: address)
    password: str | None = attrs.field(default=None, repr=False)
    imap_host: str = ""
    imap_port: int = 993
    imap_security: str = "tls"
    smtp_host: str = ""  # default: imap_host
    smtp_port: int = 465
    smtp_security: str = "tls"
    smtp_username: str = ""  # default: username
    smtp_password: str | None = attrs.field(default=None, repr=False)  # default: password
    mailbox: str = setting("INBOX", ChannelTable.string)
    # who may write to the bot: addresses, or "@domain" for a whole domain; nobody when empty
    allowed_senders: tuple[str, ...] = ()
    # the authserv-id of our receiving server's Authentication-Results header ("" = From is trusted
    # as written; see "Forged senders" in docs/channels/email.md)
    authserv_id: str = setting("", ChannelTable.string)
    # an IDLE is ended and begun again after this long (servers drop it after 30 minutes)
    idle_renew: float = setting(300.0, ChannelTable.duration)
    # without IDLE (or between IDLEs cut short) the mailbox is searched this often
    poll_interval: float = setting(60.0, ChannelTable.duration)
    connect_timeout: float = setting(30.0, ChannelTable.duration)
    reconnect_base: float = setting(1.0, ChannelTable.duration)
    reconnect_cap: float = setting(120.0, ChannelTable.duration)
    # False: search every poll_interval even where the server offers IDLE (for a server whose IDLE
    # misbehaves)
    idle: bool = setting(True, ChannelTable.boolean)
    # the certificate authorities (PEM) the servers' certificates must chain to; default: the system's
    ca_file: Path | None = None
    off_reason: str | None = None

    def tls_context(self) -> ssl.SSLContext:
        """What IMAP and SMTP verify the servers' certificates with (and their host names)."""
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    @classmethod
    def from_table(cls, table: dict[str, Any], config_file: Path | None = None) -> EmailSettings:
        t = ChannelTable(PREFIX, table, config_file, KEYS)
        address = t.string("address").strip().lower()
        if address and not ADDRESS.fullmatch(address):
            raise t.error("address", f"must be an email address, got {address!r}")
        password = t.secret("password")
        imap_host = t.string("imap_host").strip()
        imap_security = t.choice("imap_security", "tls", tuple(IMAP_PORTS))
        smtp_security = t.choice("smtp_security", "tls", tuple(SMTP_PORTS))
        username = t.string("username", address).strip()
        missing = [what for what, value in (("address", address), ("imap_host", imap_host),
                                            ("NGB_EMAIL_PASSWORD (or password_file)", password)) if not value]
        return t.fill(
            cls,
            address=address,
            username=username,
            password=password,
            imap_host=imap_host,
            imap_port=t.integer("imap_port", IMAP_PORTS[imap_security], lo=1, hi=65535),
            imap_security=imap_security,
            smtp_host=t.string("smtp_host", imap_host).strip(),
            smtp_port=t.integer("smtp_port", SMTP_PORTS[smtp_security], lo=1, hi=65535),
            smtp_security=smtp_security,
            smtp_username=t.string("smtp_username", username).strip(),
            smtp_password=t.secret("smtp_password") or password,
            allowed_senders=_senders(t),
            ca_file=_ca_file(t),
            off_reason=f"not configured: set {', '.join(missing)}" if missing else None,
        )


def _ca_file(t: ChannelTable) -> Path | None:
    path = t.path("ca_file")
    if path is not None and not path.is_file():
        raise t.error("ca_file", f"{path} is not a file (PEM certificates of the authorities to trust)")
    return path


def _senders(t: ChannelTable) -> tuple[str, ...]:
    raw = t.get("allowed_senders", [])
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple):
        raise t.error("allowed_senders", "must be a list of addresses or @domains")
    out = []
    for item in items:
        entry = str(item).strip().lower()
        if not entry:
            continue
        if not (ADDRESS.fullmatch(entry) or (entry.startswith("@") and "." in entry and "@" not in entry[1:])):
            raise t.error("allowed_senders", f"{entry!r} is neither an address nor an @domain")
        out.append(entry)
    return tuple(out)


def sender_allowed(settings: EmailSettings, address: str) -> bool:
    """Whether ``address`` (lower case) is on the channel's allow-list (an address or its @domain)."""
    domain = "@" + address.rpartition("@")[2]
    return address in settings.allowed_senders or domain in settings.allowed_senders


email_chat = partial(chat_name, PREFIX)  # address -> chat


def address_of(chat: str) -> str:
    return platform_id_of(chat, PREFIX, ADDRESS.fullmatch,
                          "email chat: {chat} (expected email:<address>, e.g. email:alice@example.com)")
