"""The email channel's replies: built as answers in the correspondent's thread (``In-Reply-To``
the message answered, ``References`` its references plus it, ``Subject`` "Re: " its subject once)
and sent by SMTP (aiosmtplib on the shared asyncio loop): implicit TLS (465), STARTTLS (587,
required, never silently plain) or plain (loopback and tests only)."""

from __future__ import annotations

import email.utils
import re
import ssl
from email.message import EmailMessage

import aiosmtplib
import attrs

from .base import ChannelError
from .email_settings import EmailSettings
from .text import markdown_to_html


@attrs.frozen
class ThreadHead:
    """What a reply needs of the message it answers."""

    message_id: str
    subject: str
    references: tuple[str, ...] = ()


def row_message_id(settings: EmailSettings, key: str, salt: str) -> str:
    """The Message-ID of the mail an outbox row (``key``) becomes, the same at every attempt: a
    resend after a lost SMTP answer is the same message, which mail clients that recognise a
    Message-ID show once. ``salt`` (kept per installation) keeps it unique across installations."""
    return f"<{key}.{salt}@{settings.address.rpartition('@')[2]}>"


def reply_subject(subject: str) -> str:
    """``Re: <subject>``, without stacking "Re: Re:" (nor "RE:", "Aw:", "Fwd:" kept as is)."""
    subject = subject.strip()
    if re.match(r"(re|aw|sv)\s*:", subject, re.I):
        return subject
    return f"Re: {subject}" if subject else "Re: your message"


def build_reply(settings: EmailSettings, to: str, text: str, head: ThreadHead | None,
                message_id: str | None = None) -> EmailMessage:
    """The reply mail; ``message_id`` (else a new one) names it: a resend of one outbox row keeps it."""
    msg = EmailMessage()
    msg["From"] = settings.address
    msg["To"] = to
    msg["Subject"] = reply_subject(head.subject if head else "")
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = message_id or email.utils.make_msgid(domain=settings.address.rpartition("@")[2])
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834: a well-behaved auto-responder does not answer it
    if head is not None:
        msg["In-Reply-To"] = head.message_id
        refs = [r for r in head.references if r != head.message_id][-20:]  # bounded, as clients do
        msg["References"] = " ".join([*refs, head.message_id])
    msg.set_content(text)  # the agent's Markdown as written, for plain-text readers
    msg.add_alternative(f"<!doctype html><html><body>{markdown_to_html(text)}</body></html>", subtype="html")
    return msg


async def smtp_send(settings: EmailSettings, msg: EmailMessage, ssl_context: ssl.SSLContext | None = None) -> None:
    """Send on the asyncio loop. ChannelError: retryable unless the server refused for good (5xx)."""
    security = settings.smtp_security
    context = ssl_context or (settings.tls_context() if security != "none" else None)
    try:
        await aiosmtplib.send(
            msg, hostname=settings.smtp_host, port=settings.smtp_port,
            username=settings.smtp_username or None, password=settings.smtp_password or None,
            use_tls=security == "tls", start_tls=security == "starttls", tls_context=context,
            timeout=settings.connect_timeout,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        raise ChannelError(f"SMTP: recipient refused: {exc}", retryable=False) from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise ChannelError(f"SMTP {exc.code}: {exc.message}", retryable=not 500 <= exc.code < 600) from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise ChannelError(f"SMTP: {type(exc).__name__}: {exc}") from exc
