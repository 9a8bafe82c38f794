"""`ngb doctor`'s check of the email channel: the IMAP login works and the mailbox can be selected
(read-only: EXAMINE), and the SMTP server takes the login, with the daemon's own settings. Plain
stdlib clients (imaplib, smtplib): a doctor check is one short synchronous exchange. No secret is
printed: the passwords are redacted from every detail text."""

from __future__ import annotations

import imaplib
import smtplib
from typing import Any

from .check import Check

NAME = "channel email"


def probe_email(config: Any, settings: Any, http: Any = None) -> Check:
    s = settings
    secrets = [p for p in (s.password, s.smtp_password) if p]
    fix = f"check [channels.email] and NGB_EMAIL_PASSWORD; see docs/channels/email.md ({config.config_file or 'ngb.toml'})"
    imap_at = f"imap {s.imap_host}:{s.imap_port} ({s.imap_security})"
    try:
        with _imap(s) as imap:
            try:
                imap.login(s.username, s.password or "")
            except imaplib.IMAP4.error as exc:
                return Check(NAME, "fail", _redact(f"{imap_at} refused the login of {s.username}: {exc}", secrets), fix)
            status, data = imap.select(_quoted(s.mailbox), readonly=True)
            if status != "OK":
                return Check(NAME, "fail", f"{imap_at}: cannot open the mailbox {s.mailbox!r}: {data!r}"[:300], fix)
            count = (data[0] or b"0").decode()
            idle = "IDLE" in imap.capabilities and s.idle
    except (OSError, imaplib.IMAP4.error) as exc:
        return Check(NAME, "fail", _redact(f"cannot reach {imap_at}: {type(exc).__name__}: {exc}"[:300], secrets), fix)
    smtp_at = f"smtp {s.smtp_host}:{s.smtp_port} ({s.smtp_security})"
    try:
        with _smtp(s) as smtp:
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password or "")
    except smtplib.SMTPAuthenticationError as exc:
        return Check(NAME, "fail", _redact(f"{smtp_at} refused the login of {s.smtp_username}: {exc}", secrets), fix)
    except (OSError, smtplib.SMTPException) as exc:
        return Check(NAME, "fail", _redact(f"cannot use {smtp_at}: {type(exc).__name__}: {exc}"[:300], secrets), fix)
    mode = "IDLE" if idle else f"no IDLE: polled every {s.poll_interval:g}s"
    return Check(NAME, "ok", f"{s.username}: {s.mailbox} has {count} messages ({mode}); SMTP login accepted")


def _imap(s: Any) -> imaplib.IMAP4:
    if s.imap_security == "tls":
        return imaplib.IMAP4_SSL(s.imap_host, s.imap_port, ssl_context=s.tls_context(), timeout=s.connect_timeout)
    imap = imaplib.IMAP4(s.imap_host, s.imap_port, timeout=s.connect_timeout)
    if s.imap_security == "starttls":
        imap.starttls(ssl_context=s.tls_context())  # refuses (imaplib.IMAP4.error) without STARTTLS
    return imap


def _smtp(s: Any) -> smtplib.SMTP:
    if s.smtp_security == "tls":
        return smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.connect_timeout, context=s.tls_context())
    smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.connect_timeout)
    if s.smtp_security == "starttls":
        smtp.starttls(context=s.tls_context())
    return smtp


def _quoted(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
