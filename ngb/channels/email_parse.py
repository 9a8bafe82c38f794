"""One received email -> what the email channel needs of it (``ParsedMail``): who wrote it, the
thread headers, its attached files, and the text for the prompt: the plain part, else the HTML part's text, with the
quoted history ("> ..." lines, "On ... wrote:" and what follows, Outlook's "Original Message"
block) and the signature ("-- " and what follows) trimmed away.

``authenticated`` reads the ``Authentication-Results`` header (RFC 8601) our own receiving server
added: the From address counts as proven only when that server saw DKIM or SPF (or DMARC) pass
for the From's domain. Only the topmost header carrying the configured authserv-id is read: a
sender can write any header, but our server prepends its own above everything the sender wrote
(and a well-configured one also removes look-alikes carrying its id)."""

from __future__ import annotations

import email
import email.policy
import email.utils
import hashlib
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from html.parser import HTMLParser

import attrs

from ..records import utcnow


@attrs.frozen
class MailFile:
    """An attached file of a mail, as the sender described it (the intake checks what it really is)."""

    name: str | None
    mime: str
    data: bytes = attrs.field(repr=False)


@attrs.frozen
class ParsedMail:
    message_id: str  # "<...>" as written (or a digest of the bytes when the mail has none)
    sender: str  # the From address, lower case
    sender_name: str  # the From display name, or the address
    subject: str
    text: str  # what the prompt shows: quoted history and signature trimmed
    in_reply_to: str | None
    references: tuple[str, ...]
    time: datetime
    authenticated: bool | None  # None: no authserv-id configured (From trusted as written)
    automatic: bool = False  # an auto-reply, bounce or list mail (RFC 3834): never answered
    files: tuple[MailFile, ...] = ()  # the attachments (not the text or HTML body)


def parse_mail(raw: bytes, authserv_id: str = "") -> ParsedMail:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    name, address = email.utils.parseaddr(str(msg.get("From", "")))
    address = address.strip().lower()
    message_id = str(msg.get("Message-ID", "")).strip() or f"<sha256.{hashlib.sha256(raw).hexdigest()[:32]}@ngb>"
    in_reply_to = str(msg.get("In-Reply-To", "")).strip() or None
    references = tuple(re.findall(r"<[^<>\s]+>", str(msg.get("References", ""))))
    return ParsedMail(
        message_id=message_id,
        sender=address,
        sender_name=name.strip() or address,
        subject=str(msg.get("Subject", "")).strip(),
        text=trim_quoted(body_text(msg)),
        in_reply_to=in_reply_to,
        references=references,
        time=_date(msg),
        authenticated=authenticated(msg, address, authserv_id) if authserv_id else None,
        automatic=_automatic(msg),
        files=mail_files(msg),
    )


def mail_files(msg: EmailMessage) -> tuple[MailFile, ...]:
    """The mail's attachments: its parts that are not the body (inline images of an HTML body too)."""
    out: list[MailFile] = []
    for part in msg.iter_attachments():
        if part.is_multipart():
            continue  # a forwarded mail's own parts: its text is not the sender's; left out
        data = part.get_payload(decode=True)
        if isinstance(data, bytes) and data:
            out.append(MailFile(part.get_filename(), part.get_content_type(), data))
    return tuple(out)


def _automatic(msg: EmailMessage) -> bool:
    auto = str(msg.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(msg.get("Precedence", "")).strip().lower()
    return (auto not in ("", "no")) or precedence in ("bulk", "list", "junk") or "List-Id" in msg


def _date(msg: EmailMessage) -> datetime:
    try:
        when = email.utils.parsedate_to_datetime(str(msg.get("Date", "")))
    except (TypeError, ValueError):
        return utcnow()
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


# -- the text ---------------------------------------------------------------------------------------
def body_text(msg: EmailMessage) -> str:
    """The plain-text part, else the HTML part as text ("" when there is neither)."""
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset: the bytes as UTF-8, damaged ones replaced
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if not isinstance(content, str):
        return ""
    return html_text(content) if part.get_content_type() == "text/html" else content


class _Text(HTMLParser):
    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"}
    SKIP = {"script", "style", "head", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping = 0
        self.quoted = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag == "blockquote" or (tag == "div" and ("class", "gmail_quote") in attrs):
            self.quoted += 1  # quoted history in HTML: dropped
        if tag in self.BLOCKS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag == "blockquote":
            self.quoted = max(0, self.quoted - 1)
        if tag in self.BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping and not self.quoted:
            self.out.append(data)


def html_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.out).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_WROTE = re.compile(r"^(On .{4,200}wrote:|Am .{4,200}schrieb .{1,200}:|Le .{4,200}a écrit\s?:)\s*$", re.I)
_CUT = re.compile(r"^(-{2,}\s*(Original Message|Forwarded message)\s*-{2,}|_{10,})\s*$", re.I)
_OUTLOOK = re.compile(r"^From:\s.+$", re.I)


def trim_quoted(text: str) -> str:
    """The new text of a reply: without "> " lines, from an attribution line ("On ... wrote:") or an
    "Original Message" rule on, and from the signature separator ("-- ") on."""
    kept: list[str] = []
    lines = text.replace("\r\n", "\n").split("\n")
    for i, line in enumerate(lines):
        stripped = line.strip()
        if line.rstrip("\n") in ("-- ", "--") or _CUT.match(stripped) or _WROTE.match(stripped):
            break
        if _OUTLOOK.match(stripped) and any(n.strip().lower().startswith(("sent:", "date:")) for n in lines[i + 1:i + 3]):
            break
        if stripped.startswith(">"):
            continue
        kept.append(line)
    return "\n".join(kept).strip()


# -- Authentication-Results -------------------------------------------------------------------------
def authenticated(msg: EmailMessage, address: str, authserv_id: str) -> bool:
    """Whether our server (``authserv_id``) saw DKIM, SPF or DMARC pass for the From's domain."""
    domain = address.rpartition("@")[2]
    for header in msg.get_all("Authentication-Results", []):
        results = _results(str(header))
        if results is None or results[0] != authserv_id.lower():
            continue
        for method, result, props in results[1]:
            if result != "pass":
                continue
            if method == "dkim" and _aligned(props.get("header.d") or props.get("header.i", ""), domain):
                return True
            if method == "spf" and _aligned(props.get("smtp.mailfrom", ""), domain):
                return True
            if method == "dmarc" and _aligned(props.get("header.from", ""), domain):
                return True
        return False  # only the topmost header of our server counts
    return False


def _aligned(value: str, domain: str) -> bool:
    return bool(domain) and value.rpartition("@")[2].strip().lower() == domain


def _results(header: str) -> tuple[str, list[tuple[str, str, dict[str, str]]]] | None:
    """``authserv-id; method=result ptype.prop=value ...; ...`` -> (id, [(method, result, props)])."""
    text = re.sub(r"\([^()]*\)", " ", header)  # comments (one level deep is all servers write)
    parts = [p.strip() for p in text.split(";")]
    if not parts or not parts[0]:
        return None
    serv = parts[0].split()[0].lower()
    out = []
    for part in parts[1:]:
        tokens = part.split()
        if not tokens or "=" not in tokens[0]:
            continue
        method, _, result = tokens[0].partition("=")
        props = {}
        for token in tokens[1:]:
            key, eq, value = token.partition("=")
            if eq:
                props[key.lower()] = value.strip('"').lower()
        out.append((method.split("/")[0].lower(), result.lower(), props))
    return serv, out
