"""The router: every inbound message is stored first, then routed. Event-driven: a channel calls
`handle`, nothing polls."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .events import ChatEvents
from .groups import GroupRegistry
from .logs import log_context
from .records import InboundMessage, Message
from .store import Store
from .triggers import RateLimiter, is_triggered

log = logging.getLogger(__name__)


class MessageRejected(ValueError):
    """The message was refused before it was stored (too large, empty)."""


class Router:
    def __init__(
        self,
        store: Store,
        registry: GroupRegistry,
        events: ChatEvents,
        *,
        wake: Callable[[str, int], bool],
        notify: Callable[[str, str, str], None],
        trigger: str,
        max_message_chars: int,
        sender_rate_per_minute: int,
        group_rate_per_minute: int,
        on_routed: Callable[[Message, str], None] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.events = events
        self._wake = wake
        self._notify = notify
        self.trigger = trigger
        self.max_message_chars = max_message_chars
        self.sender_limit = RateLimiter(sender_rate_per_minute)
        self.group_limit = RateLimiter(group_rate_per_minute)
        self._warned: dict[str, float] = {}
        self._on_routed = on_routed or (lambda m, outcome: None)
        self.accepting = True

    async def handle(self, inbound: InboundMessage) -> Message:
        with log_context(chat=inbound.chat):
            return await self._handle(inbound)

    async def _handle(self, inbound: InboundMessage) -> Message:
        if not inbound.text.strip():
            raise MessageRejected("the message is empty")
        if len(inbound.text) > self.max_message_chars:
            raise MessageRejected(
                f"the message has {len(inbound.text)} characters; the limit is {self.max_message_chars}"
            )
        message, is_new = await self.store.ingest(inbound)
        if not is_new:
            return message  # a redelivery: stored and routed the first time
        self.events.publish(message)
        self._on_routed(message, self._route(message))
        return message

    def _route(self, message: Message) -> str:
        group = self.registry.get(message.chat)
        if group is None:
            return "unregistered"
        if not is_triggered(group, message, self.trigger):
            return "context"  # stays stored; goes to the agent with the next triggered message
        if not self.accepting:
            log.info("router: shutting down; %s message %d will be answered after restart", message.chat, message.id)
            return "deferred"
        sender_key = f"{message.chat}|{message.sender_id or message.sender}"
        if not self.sender_limit.allow(sender_key, group.sender_rate_per_minute):
            self._limited(group.folder, message, sender_key, self.sender_limit.retry_after(sender_key), "you are")
            return "rate_limited"
        if not self.group_limit.allow(message.chat, group.group_rate_per_minute):
            self._limited(group.folder, message, message.chat, self.group_limit.retry_after(message.chat), "this chat is")
            return "rate_limited"
        self._wake(group.folder, message.id)
        return "triggered"

    def _limited(self, folder: str, message: Message, key: str, retry_after: float, who: str) -> None:
        log.warning("router: rate limit hit for %s (message %d stays stored as context)", key, message.id)
        now = time.monotonic()
        if now - self._warned.get(key, -1e9) < 60:
            return  # one notice a minute per key, not one per message
        self._warned[key] = now
        self._notify(
            folder,
            message.chat,
            f"⏳ Slow down: {who} sending messages faster than I answer. I'll read this with your next "
            f"message (try again in {max(1, round(retry_after))}s).",
        )
