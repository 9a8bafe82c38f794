"""The daemon's log output: one line (or one journal entry) per event, with the group and the chat
it concerns as fields.

Where a log line comes from is known without every call site saying it: the group actor sets
``GROUP`` for its whole task tree (trio tasks inherit the context they were started in), the router
sets ``CHAT`` while it handles a message, the outbox while it delivers one. ``with log_context(...)``
sets them anywhere else. An explicit ``extra={"group": ..., "chat": ...}`` wins.

Formats (``log_format``, ``NGB_LOG_FORMAT``):

- ``journal``: native entries to systemd-journald (``/run/systemd/journal/socket``): ``MESSAGE``,
  ``PRIORITY``, ``SYSLOG_IDENTIFIER``, ``LOGGER``, ``NGB_GROUP``, ``NGB_CHAT``, ``CODE_FILE``...
  so ``journalctl -u nanogridbot NGB_GROUP=family`` shows one group's events. A traceback stays in
  the entry's ``MESSAGE`` (one entry, not one line per frame).
- ``json``: one JSON object per line on stderr: ``time``, ``level``, ``logger``, ``message``,
  ``group``, ``chat`` (and ``exception``).
- ``text``: ``12:00:01 INFO    ngb.actor: [family local:family] message`` on stderr.
- ``auto`` (the default): ``journal`` when stderr is connected to the journal (systemd sets
  ``JOURNAL_STREAM`` to its device:inode), else ``text``.

Secrets never reach a log line in any format: every formatter passes its whole output (message,
exception text, traceback with its source lines, chained causes, ``stack_info``) through
``redact``, which replaces each registered secret (``add_secret``: the channels' tokens, the
Anthropic key, the API token; ``setup_logging`` also registers the secret-looking ``NGB_*``
variables and ``ANTHROPIC_API_KEY`` from the environment) and the shapes of well-known tokens
(Anthropic keys, Telegram bot tokens, Slack tokens, ``Bearer``/``Bot`` header values) with
``<redacted>``. ``RedactSecrets`` does the same to the record itself, for handlers that format
with their own formatter.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import os
import re
import socket
import struct
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .config.environment import secret_env_values

GROUP: contextvars.ContextVar[str | None] = contextvars.ContextVar("ngb_group", default=None)
CHAT: contextvars.ContextVar[str | None] = contextvars.ContextVar("ngb_chat", default=None)

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
NOISY = ("httpx", "httpcore", "docker", "urllib3", "hypercorn.access")
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}

# -- redaction -----------------------------------------------------------------------------------------
REDACTED = "<redacted>"
MIN_SECRET = 6  # shorter values are not redacted: no real token is that short, and replacing every
# "s" of every line would make the logs useless
SECRETS: set[str] = set()  # the registered secrets (add_secret / remove_secret)

# Tokens recognisable by their shape, redacted even when nobody registered them (a key the daemon
# never loaded, a token quoted by an SDK in another form). The group keeps the harmless prefix.
_TOKEN_SHAPES = re.compile(
    r"(sk-ant-)[A-Za-z0-9_\-]{8,}"  # Anthropic API keys
    r"|(?<![0-9])(\d{5,}:)[A-Za-z0-9_\-]{30,}"  # Telegram bot tokens (bot id : secret), as in API URLs
    r"|\b(xox[a-z]-|xapp-)[A-Za-z0-9\-]{8,}"  # Slack bot/user/app tokens
    r"|\b((?:[Bb]earer|BEARER|Bot) +)[A-Za-z0-9][A-Za-z0-9._~+/=\-]{19,}"  # Authorization: Bearer/Bot <token>
)


def add_secret(value: str | None) -> None:
    """Never write ``value`` to a log line (nor its URL-encoded form)."""
    if value and len(value) >= MIN_SECRET:
        SECRETS.add(value)


def remove_secret(value: str | None) -> None:
    """Stop redacting ``value`` (a short-lived access token that was replaced)."""
    SECRETS.discard(value or "")


@functools.lru_cache(maxsize=256)
def _forms(secret: str) -> tuple[str, ...]:
    encoded = quote(secret, safe="")
    return (secret, encoded) if encoded != secret else (secret,)


def _keep_prefix(match: re.Match[str]) -> str:
    prefix = next((g for g in match.groups() if g), "")
    return prefix + REDACTED


def redact(text: str) -> str:
    """``text`` with every registered secret and every well-known token shape replaced."""
    for secret in sorted(SECRETS, key=len, reverse=True):  # a longer secret that holds a shorter one first
        for form in _forms(secret):
            if form in text:
                text = text.replace(form, REDACTED)
    return _TOKEN_SHAPES.sub(_keep_prefix, text)


def secrets_in_env(env: Mapping[str, str] | None = None) -> list[str]:
    """The values of ``ANTHROPIC_API_KEY`` and of every ``NGB_*`` variable whose name looks like it
    holds a secret (``NGB_API_TOKEN``, ``NGB_TELEGRAM_TOKEN``, ``NGB_LARK_APP_SECRET``...; not the
    ``*_FILE`` names, which hold paths)."""
    return [value for value in secret_env_values(env) if len(value) >= MIN_SECRET]


def _exception_text(record: logging.LogRecord, formatter: logging.Formatter) -> str:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or ""


class RedactSecrets(logging.Filter):
    """Redacts a record in place (its message, exception text and stack), for every handler that
    sees it afterwards, whatever formatter that handler uses."""

    _formatter = logging.Formatter()

    @property
    def secrets(self) -> set[str]:
        return SECRETS

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = redact(text)
        if clean != text:
            record.msg, record.args = clean, None
        if record.exc_info or record.exc_text:
            record.exc_text = redact(_exception_text(record, self._formatter))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


REDACT = RedactSecrets()


@contextlib.contextmanager
def log_context(*, group: str | None = None, chat: str | None = None) -> Iterator[None]:
    """Log lines written inside carry this group and/or chat."""
    tokens = []
    if group is not None:
        tokens.append((GROUP, GROUP.set(group)))
    if chat is not None:
        tokens.append((CHAT, CHAT.set(chat)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFields(logging.Filter):
    """Puts the current group and chat on every record (``record.group``, ``record.chat``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "group", None) is None:
            record.group = GROUP.get()
        if getattr(record, "chat", None) is None:
            record.chat = CHAT.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(where)s%(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        parts = [p for p in (getattr(record, "group", None), getattr(record, "chat", None)) if p]
        record.where = f"[{' '.join(parts)}] " if parts else ""
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for field in ("group", "chat"):
            value = getattr(record, field, None)
            if value:
                out[field] = redact(str(value))
        if record.exc_info or record.exc_text:
            out["exception"] = redact(_exception_text(record, self))
        if record.stack_info:
            out["stack"] = redact(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


def journal_fields(record: logging.LogRecord, identifier: str, formatter: logging.Formatter) -> list[tuple[str, str]]:
    message = record.getMessage()
    if record.exc_info or record.exc_text:
        message += "\n" + _exception_text(record, formatter)
    if record.stack_info:
        message += "\n" + record.stack_info
    fields = [
        ("MESSAGE", redact(message)),
        ("PRIORITY", str(_PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3))),
        ("SYSLOG_IDENTIFIER", identifier),
        ("LOGGER", record.name),
        ("CODE_FILE", str(record.pathname)),
        ("CODE_LINE", str(record.lineno)),
        ("CODE_FUNC", str(record.funcName or "")),
    ]
    for field in ("group", "chat"):
        value = getattr(record, field, None)
        if value:
            fields.append((f"NGB_{field.upper()}", redact(str(value))))
    return fields


def encode_journal(fields: list[tuple[str, str]]) -> bytes:
    """systemd's native journal protocol: ``KEY=value\\n``, or for a value with a newline
    ``KEY\\n`` + its length (64-bit little endian) + the value + ``\\n``."""
    out = bytearray()
    for key, value in fields:
        if value is None:
            continue
        data = str(value).encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Sends each record to journald as one native entry (a datagram). When the journal refuses or
    is gone, the line goes to stderr instead: a log line is never lost to a logging error."""

    def __init__(self, path: Path = JOURNAL_SOCKET, identifier: str = "nanogridbot") -> None:
        super().__init__()
        self.path = str(path)
        self.identifier = identifier
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._fallback = TextFormatter()
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sock.sendto(encode_journal(journal_fields(record, self.identifier, self._formatter)), self.path)
        except OSError:
            try:
                sys.stderr.write(self._fallback.format(record) + "\n")
            except Exception:  # noqa: BLE001 - nowhere left to say it
                self.handleError(record)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
        super().close()


def stderr_is_journal(env: dict[str, str] | None = None) -> bool:
    """systemd sets JOURNAL_STREAM=<device>:<inode> when stderr is connected to the journal."""
    # systemd's protocol variable, not a setting: read here, where the journal is spoken.
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(x) for x in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def resolve_format(fmt: str, *, journal_socket: Path = JOURNAL_SOCKET) -> str:
    if fmt != "auto":
        return fmt
    return "journal" if stderr_is_journal() and journal_socket.exists() else "text"


_HANDLER_NAME = "ngb"  # marks the handler setup_logging installed, so a second call replaces it


def setup_logging(
    level: str = "info",
    fmt: str = "auto",
    *,
    journal_socket: Path = JOURNAL_SOCKET,
    secrets: Iterable[str | None] = (),
) -> logging.Handler:
    """Configure the root logger once for the daemon; returns the handler it installed. ``secrets``
    (and those in the environment, see ``secrets_in_env``) are redacted from every line."""
    for secret in [*secrets, *secrets_in_env()]:
        add_secret(secret)
    chosen = resolve_format(fmt, journal_socket=journal_socket)
    handler: logging.Handler
    if chosen == "journal":
        handler = JournalHandler(journal_socket)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    handler.addFilter(ContextFields())
    handler.addFilter(REDACT)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    handler.set_name(_HANDLER_NAME)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
