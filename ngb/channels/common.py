"""What a platform channel does with the messages it moves: the inbound gate every parsed message
passes, multi-part sends that resume instead of repeating, the newest stored id per chat (where a
catch-up starts), and small bounded maps. Re-exports the state/reconnect names (status.py) and the
text helpers (text.py) under their old names."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import MessageDropped, MessageRejected
from ..triggers import starts_with_trigger
from .base import ChannelMemory
from .status import (  # noqa: F401 - re-exported: the adapters and tests import them from here
    CONNECTED,
    CONNECTING,
    DISCONNECTED,
    MIN_REDACTED,
    OFF,
    STOPPED,
    UNAUTHORIZED,
    AuthError,
    ChannelStatus,
    backoff,
    reconnect_forever,
    redact_in_logs,
)
from .text import (  # noqa: F401 - re-exported
    markdown_to_slack_mrkdwn,
    markdown_to_telegram_html,
    split_text,
    utf16_len,
)

log = logging.getLogger(__name__)

# -- multi-part sends ----------------------------------------------------------------------------------
def says_off(settings: Any, name: str, logger: logging.Logger) -> bool:
    """Whether a channel's settings say it is off (``off_reason``); then one log line says why."""
    off_reason = getattr(settings, "off_reason", None)
    if off_reason:
        logger.warning("channel %s: off (%s)", name, off_reason)
    return bool(off_reason)


def log_caught_up(logger: logging.Logger, line: str, cut: str | None, lost: str = "older messages") -> None:
    """One chat's catch-up summary `line`: info, or a warning that says what was `lost` when the
    catch-up was `cut` short (why)."""
    if cut:
        logger.warning("%s; stopped early (%s): %s were not fetched", line, cut, lost)
    else:
        logger.info("%s", line)


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
        return bool(inbound.mentions_bot) or starts_with_trigger(inbound.text, self.trigger)

    async def submit(self, submit: Callable[[Any], Awaitable[Any]], inbound: Any, *, triggered: bool | None = None) -> bool:
        """Pass inbound to the router; False when the router refused it (logged)."""
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
