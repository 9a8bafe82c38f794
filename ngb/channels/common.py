"""What every platform channel shares: splitting long replies, Markdown conversion, the
reconnect-forever loop with visible state, and multi-part sends that resume instead of repeating."""

from __future__ import annotations

import html
import logging
import random
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..logs import MIN_SECRET, REDACT, add_secret
from ..logs import redact as redact_known
from .base import ChannelMemory

log = logging.getLogger(__name__)

# -- channel states (what /status shows as channels[name].state) -----------------------------------
CONNECTING = "connecting"
CONNECTED = "connected"
DISCONNECTED = "disconnected"  # lost; reconnecting with backoff
UNAUTHORIZED = "unauthorized"  # the platform rejected the token; retried slowly
STOPPED = "stopped"
OFF = "off"  # configured but no token


class AuthError(Exception):
    """The platform rejected the credentials (retrying fast will not help)."""


class ChannelStatus:
    """State plus the details behind it, for /status, /metrics and logs."""

    def __init__(self, name: str, on_change: Callable[[str, str], None] | None = None) -> None:
        self.name = name
        self.state = STOPPED
        self.last_error: str | None = None
        self.connected_since: float | None = None
        self.reconnects = 0
        self._on_change = on_change
        self.secrets: list[str] = []  # redacted from every error text (SDKs quote tokens in errors)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "<redacted>")
        return redact_known(text)

    def set(self, state: str, error: str | None = None) -> None:
        if error is not None:
            error = self.redact(error)
            self.last_error = error
        if state == self.state:
            return
        if state == CONNECTED:
            self.connected_since = time.time()
        elif self.state == CONNECTED:
            self.connected_since = None
        log.info("channel %s: %s%s", self.name, state, f" ({error})" if error else "")
        self.state = state
        if self._on_change is not None:
            try:
                self._on_change(self.name, state)
            except Exception:  # noqa: BLE001 - a listener must not break the channel
                log.exception("channel %s: state listener failed", self.name)

    def describe(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "last_error": self.last_error,
            "connected_since": self.connected_since,
            "reconnects": self.reconnects,
        }


# The daemon's redaction lives in ngb.logs (every formatter redacts its whole output, exception
# text and tracebacks included); channels register their tokens through redact_in_logs.
_REDACT = REDACT
MIN_REDACTED = MIN_SECRET


def redact_in_logs(secret: str, loggers: tuple[str, ...] = ("httpx", "httpcore", "telegram", "ngb")) -> None:
    """Never let ``secret`` reach a log line: the daemon's formatters (text, JSON, journal) redact it
    from every line, exception text and traceback; the filter on these loggers and on the root
    handlers also redacts the record itself, for handlers with formatters of their own.

    Secrets shorter than MIN_REDACTED characters are not redacted: no real token is that short,
    and replacing every "s" or "ab" in every log line would make the logs useless."""
    if len(secret) < MIN_REDACTED:
        return
    add_secret(secret)
    for name in loggers:
        logger = logging.getLogger(name)
        if REDACT not in logger.filters:
            logger.addFilter(REDACT)
    for handler in logging.getLogger().handlers:
        if REDACT not in handler.filters:
            handler.addFilter(REDACT)


def backoff(attempt: int, *, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None) -> float:
    """Exponential backoff with 'equal jitter': between half and all of min(cap, base * 2**(attempt-1))."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + (rng or random).random() * ceiling / 2


async def reconnect_forever(
    status: ChannelStatus,
    session: Callable[[], Awaitable[None]],
    *,
    base: float = 1.0,
    cap: float = 60.0,
    auth_cap: float = 600.0,
    stable_after: float = 30.0,
    is_auth_error: Callable[[BaseException], bool] = lambda e: isinstance(e, AuthError),
) -> None:
    """Run ``session()`` forever: whenever it fails (or returns), mark the channel disconnected (or
    unauthorized), wait with backoff and jitter, and run it again. ``session`` sets CONNECTED itself
    once it really is. A session that stayed up ``stable_after`` seconds resets the backoff.
    Only cancellation ends this."""
    attempt = 0
    while True:
        status.set(CONNECTING)
        started = trio.current_time()
        try:
            await session()
            error: str = "the connection ended"
            auth = False
        except Exception as exc:  # noqa: BLE001 - every failure means: reconnect later
            auth = is_auth_error(exc)
            error = status.redact(f"{type(exc).__name__}: {exc}")
        if trio.current_time() - started >= stable_after:
            attempt = 0
        attempt += 1
        status.reconnects += 1
        if auth:
            status.set(UNAUTHORIZED, "the platform rejected the token: " + error)
            delay = backoff(attempt, base=max(base, 30.0), cap=auth_cap)
            log.error("channel %s: token rejected (%s); retrying in %.0fs", status.name, error, delay)
        else:
            status.set(DISCONNECTED, error)
            delay = backoff(attempt, base=base, cap=cap)
            log.warning("channel %s: disconnected (%s); reconnecting in %.1fs", status.name, error, delay)
        await trio.sleep(delay)


# -- splitting ---------------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"[.!?。！？…](?:[\"')\]»]*)\s+")


def split_text(text: str, limit: int, *, measure: Callable[[str], int] = len) -> list[str]:
    """Cut ``text`` into parts of at most ``limit`` (by ``measure``), preferring, in order: a blank
    line, a line end, a sentence end, a space; a hard cut only when a single word is longer than the
    limit. A code fence cut in two is closed at the end of one part and reopened in the next. Parts
    keep their order and, joined back, hold all of the text (whitespace at the cuts aside)."""
    if limit < 16:
        raise ValueError("limit too small")
    text = text.strip("\n")
    parts: list[str] = []
    reopen = ""
    while text:
        room = limit - measure(reopen) - 4  # room for a closing "\n```"
        if measure(reopen + text) <= limit:
            parts.append(reopen + text)
            break
        cut = _best_cut(text, _fit(text, room, measure))
        head, text = text[:cut].rstrip(), text[cut:].lstrip("\n ")
        if not head.strip():  # pathological: nothing fits before the first break
            head, text = text[:cut], text[cut:]
        chunk = reopen + head
        fence = _open_fence(chunk)
        if fence is not None:
            chunk += "\n```"
            reopen = fence + "\n"
        else:
            reopen = ""
        parts.append(chunk)
    return [p for p in parts if p.strip()]


def _fit(text: str, room: int, measure: Callable[[str], int]) -> int:
    """The largest prefix length whose measure is within room (measure is monotone)."""
    if measure is len:
        return min(len(text), room)
    lo, hi = 1, min(len(text), room)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if measure(text[:mid]) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _best_cut(text: str, end: int) -> int:
    window = text[:end]
    floor = end // 3  # never make a tiny part just to hit a nice boundary
    for finder in (
        lambda: window.rfind("\n\n"),
        lambda: window.rfind("\n"),
        lambda: max((m.end() for m in _SENTENCE_END.finditer(window)), default=-1),
        lambda: window.rfind(" "),
    ):
        pos = finder()
        if pos > floor:
            return pos
    return end


def _open_fence(chunk: str) -> str | None:
    """The opening fence line (e.g. "```python") when chunk ends inside a code block."""
    fence = None
    for line in chunk.split("\n"):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped
    return fence


def utf16_len(text: str) -> int:
    """Telegram counts message length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


# -- Markdown conversion -----------------------------------------------------------------------------
_FENCE = re.compile(r"```([\w+-]*)\n?(.*?)```", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__", re.DOTALL)
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])|(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.MULTILINE)


def _protect(text: str, store: list[str], pattern: re.Pattern[str], render: Callable[[re.Match[str]], str]) -> str:
    def sub(m: re.Match[str]) -> str:
        store.append(render(m))
        return f"\x00{len(store) - 1}\x00"

    return pattern.sub(sub, text)


def _restore(text: str, store: list[str]) -> str:
    return re.sub(r"\x00(\d+)\x00", lambda m: store[int(m.group(1))], text)


def markdown_to_telegram_html(text: str) -> str:
    """Common Markdown (what the agent writes) -> the HTML subset Telegram renders
    (parse_mode="HTML"): b, i, s, code, pre, a. Everything else is escaped text."""
    held: list[str] = []
    esc = html.escape
    text = _protect(
        text,
        held,
        _FENCE,
        lambda m: (
            f'<pre><code class="language-{esc(m.group(1))}">{esc(m.group(2).rstrip(chr(10)))}</code></pre>'
            if m.group(1)
            else f"<pre>{esc(m.group(2).rstrip(chr(10)))}</pre>"
        ),
    )
    text = _protect(text, held, _INLINE_CODE, lambda m: f"<code>{esc(m.group(1))}</code>")
    text = _protect(text, held, _LINK, lambda m: f'<a href="{esc(m.group(2), quote=True)}">{esc(m.group(1))}</a>')
    text = esc(text, quote=False)
    text = _HEADING.sub(lambda m: f"<b>{m.group(1)}</b>", text)
    text = _BULLET.sub(lambda m: f"{m.group(1)}• ", text)
    text = _BOLD.sub(lambda m: f"<b>{m.group(1) or m.group(2)}</b>", text)
    text = _ITALIC.sub(lambda m: f"<i>{m.group(1) or m.group(2)}</i>", text)
    text = _STRIKE.sub(lambda m: f"<s>{m.group(1)}</s>", text)
    return _restore(text, held)


def markdown_to_slack_mrkdwn(text: str) -> str:
    """Common Markdown -> Slack mrkdwn (*bold*, _italic_, ~strike~, <url|text>, ```code```)."""
    held: list[str] = []

    def esc(s: str) -> str:
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    text = _protect(text, held, _FENCE, lambda m: f"```{esc(m.group(2).rstrip(chr(10)))}```")
    text = _protect(text, held, _INLINE_CODE, lambda m: f"`{esc(m.group(1))}`")
    text = _protect(text, held, _LINK, lambda m: f"<{m.group(2)}|{esc(m.group(1))}>")
    text = esc(text)
    text = _HEADING.sub(lambda m: f"\x01{m.group(1)}\x01", text)
    text = _BULLET.sub(lambda m: f"{m.group(1)}• ", text)
    text = _ITALIC.sub(lambda m: f"_{m.group(1) or m.group(2)}_", text)
    text = _BOLD.sub(lambda m: f"\x01{m.group(1) or m.group(2)}\x01", text)
    text = _STRIKE.sub(lambda m: f"~{m.group(1)}~", text)
    return _restore(text.replace("\x01", "*"), held)


# -- multi-part sends ----------------------------------------------------------------------------------
class PartialSends:
    """Remembers which parts of a split reply already reached the platform, so the outbox's retry
    of the whole reply resumes at the part that failed instead of repeating the ones before it."""

    def __init__(self, max_entries: int = 256) -> None:
        self._sent: OrderedDict[tuple[str, str | None, int], list[str]] = OrderedDict()
        self._max = max_entries

    def key(self, chat: str, text: str, reply_to: str | None) -> tuple[str, str | None, int]:
        return (chat, reply_to, hash(text))

    def done(self, key: tuple[str, str | None, int]) -> list[str]:
        return self._sent.get(key, [])

    def record(self, key: tuple[str, str | None, int], platform_id: str) -> None:
        self._sent.setdefault(key, []).append(platform_id)
        self._sent.move_to_end(key)
        while len(self._sent) > self._max:
            self._sent.popitem(last=False)

    def finish(self, key: tuple[str, str | None, int]) -> None:
        self._sent.pop(key, None)


class LastTrigger:
    """Per chat, the platform id of the newest inbound message that addressed the bot: replies are
    threaded to it when the outbox gives no reply_to. Bounded."""

    def __init__(self, max_chats: int = 4096) -> None:
        self._ids: OrderedDict[str, str] = OrderedDict()
        self._max = max_chats

    def note(self, chat: str, platform_id: str) -> None:
        self._ids[chat] = platform_id
        self._ids.move_to_end(chat)
        while len(self._ids) > self._max:
            self._ids.popitem(last=False)

    def get(self, chat: str) -> str | None:
        return self._ids.get(chat)


class Lru(OrderedDict[str, Any]):
    """A dict that keeps its ``size`` most recently put keys (message ids seen, names, threads...)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class InboundGate:
    """The steps every channel takes with a message it has parsed, before the router: count it; the
    first time a chat is seen, log how to register it; remember a triggering message (replies are
    threaded to it); hand it to the router. A refusal (rate limit, oversize...) is a log line, never
    an exception that would stall the platform's event stream: such a message is stored nowhere by
    design, and redelivering it would not help."""

    def __init__(self, name: str, trigger: str = "", *, max_chats: int = 10_000) -> None:
        self.name = name
        self.trigger = trigger
        self.received = 0
        self.last_trigger = LastTrigger()
        self._seen_chats: set[str] = set()
        self._max_chats = max_chats

    def is_trigger(self, inbound: Any) -> bool:
        from ..triggers import starts_with_trigger

        return bool(inbound.mentions_bot) or starts_with_trigger(inbound.text, self.trigger)

    async def submit(self, submit: Callable[[Any], Awaitable[Any]], inbound: Any, *, triggered: bool | None = None) -> bool:
        """Pass inbound to the router; False when the router refused it (logged)."""
        from ..router import MessageDropped, MessageRejected

        self.received += 1
        if inbound.chat not in self._seen_chats and len(self._seen_chats) < self._max_chats:
            self._seen_chats.add(inbound.chat)
            log.info("%s: message from chat %s (register it with `ngb groups add %s --folder NAME`)",
                     self.name, inbound.chat, inbound.chat)
        if self.is_trigger(inbound) if triggered is None else triggered:
            self.last_trigger.note(inbound.chat, inbound.platform_id)
        try:
            await submit(inbound)
        except MessageDropped:
            return False  # an unregistered chat past its quota: counted and logged by the router
        except MessageRejected as exc:
            log.warning("%s: message %s in %s refused: %s", self.name, inbound.platform_id, inbound.chat, exc)
            return False
        return True


class NewestStored:
    """Per chat, the newest platform message id the channel has *stored*: where a catch-up after a
    reconnect or a restart starts. Kept in the daemon's store (``ChannelMemory``) when the channel
    was given one, in memory otherwise. Moved only after ``submit`` returned, i.e. after the
    message is in the store: a message taken off a socket that dies before the store is fetched
    again, and the store's key on (channel, platform id) makes a refetch harmless.

    ``order`` maps an id to something comparable (Discord snowflakes and QQ numbers: ``int``;
    Slack ``ts``: ``float``); a mark only moves forward. A failing write of the mark is logged, not
    raised: the message is stored, and the next catch-up merely starts a little earlier."""

    def __init__(self, channel: str, memory: ChannelMemory | None = None, *, order: Callable[[str], Any] = int) -> None:
        self.channel = channel
        self.memory = memory
        self.order = order
        self._marks: dict[str, str] = {}
        self.loaded = False

    async def load(self) -> None:
        """Read the marks the last run left (once; a later call does nothing)."""
        if self.loaded:
            return
        if self.memory is not None:
            try:
                stored = await self.memory.channel_marks(self.channel)
            except Exception as exc:  # noqa: BLE001 - no marks: this run catches up only what it saw
                log.warning("channel %s: could not read the stored catch-up marks (%s)", self.channel, exc)
                stored = {}
            for chat, mark in stored.items():
                if self._valid(mark):
                    self._marks[chat] = mark
        self.loaded = True

    def _valid(self, mark: str) -> bool:
        try:
            self.order(mark)
        except (TypeError, ValueError):
            log.warning("channel %s: ignoring a malformed catch-up mark %r", self.channel, mark)
            return False
        return True

    def get(self, chat: str) -> str | None:
        return self._marks.get(chat)

    def items(self) -> list[tuple[str, str]]:
        return list(self._marks.items())

    async def advance(self, chat: str, mark: str) -> bool:
        """Move the chat's mark to ``mark`` when it is newer (call after the message was stored)."""
        if not self._valid(mark):
            return False
        current = self._marks.get(chat)
        if current is not None and self.order(mark) <= self.order(current):
            return False
        self._marks[chat] = mark
        if self.memory is not None:
            try:
                await self.memory.set_channel_mark(self.channel, chat, mark)
            except Exception as exc:  # noqa: BLE001 - see the class docstring
                log.warning("channel %s: could not keep the catch-up mark of %s (%s)", self.channel, chat, exc)
        return True
