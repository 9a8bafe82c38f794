"""The router: every inbound message is stored first, then routed. Event-driven: a channel calls
`handle`, nothing polls."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import attrs

from .errors import MessageDropped, MessageRejected
from .events import ChatEvents
from .groups import GroupRegistry
from .logs import log_context
from .records import InboundMessage, Message
from .store import Store
from .triggers import RateLimiter, is_triggered

log = logging.getLogger(__name__)


@attrs.frozen
class UnregisteredQuota:
    """How much of chats that nobody registered is stored (config: unregistered_*)."""

    per_chat_per_hour: int = 30
    per_hour: int = 600
    keep: int = 5000  # rows of unregistered chats kept in the store, newest first


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
        unregistered: UnregisteredQuota | None = None,
        on_dropped: Callable[[str], None] | None = None,
        on_direct: Callable[[InboundMessage], Awaitable[bool]] | None = None,
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
        self.quota = unregistered or UnregisteredQuota()
        self._unregistered_chat = RateLimiter(self.quota.per_chat_per_hour, window=3600.0)
        self._unregistered_all = RateLimiter(self.quota.per_hour, window=3600.0)
        self._on_dropped = on_dropped or (lambda chat: None)
        # A stored DM from a chat nobody registered (ngb/pairing.py): True when it registered the chat
        self._on_direct = on_direct
        self._stored_since_prune = 0
        self._drop_logged: dict[str, float] = {}

    async def handle(self, inbound: InboundMessage) -> Message:
        with log_context(chat=inbound.chat):
            return await self._handle(inbound)

    async def _handle(self, inbound: InboundMessage) -> Message:
        if not inbound.text.strip() and not inbound.attachments:
            raise MessageRejected("the message is empty")
        if len(inbound.text) > self.max_message_chars:
            raise MessageRejected(
                f"the message has {len(inbound.text)} characters; the limit is {self.max_message_chars}"
            )
        unregistered = self.registry.get(inbound.chat) is None and inbound.channel != "local"
        if unregistered:
            self._admit_unregistered(inbound)
            if inbound.direct and self._on_direct is not None:
                # Before the message is stored, so that a chat registered at once (dm_policy open)
                # has it after its cursor and answers it; a redelivery gets no second code (a day).
                try:
                    unregistered = not await self._on_direct(inbound)
                except Exception:  # noqa: BLE001 - the message is stored all the same
                    log.exception("router: pairing failed for %s", inbound.chat)
        message, is_new = await self.store.ingest(inbound)
        if not is_new:
            return message  # a redelivery: stored and routed the first time
        if unregistered:
            await self._prune_now_and_then()
        self.events.publish(message)
        self._on_routed(message, self._route(message))
        return message

    def _admit_unregistered(self, inbound: InboundMessage) -> None:
        """Anyone can write to the bot from a chat nobody registered; such a chat is stored (so it
        can be registered with its history) only up to the quota. The local chat (behind the API
        token) is exempt."""
        if self._unregistered_chat.allow(inbound.chat) and self._unregistered_all.allow("*"):
            return
        self._on_dropped(inbound.chat)
        now = time.monotonic()
        key = inbound.chat if len(self._drop_logged) < 1000 else "*"
        if now - self._drop_logged.get(key, -1e9) >= 3600:
            self._drop_logged[key] = now
            log.warning(
                "router: unregistered chat %s is past its quota (%d/chat, %d in all per hour); its further "
                "messages this hour are dropped (counted in ngb_unregistered_dropped)",
                inbound.chat if key != "*" else "(many chats)", self.quota.per_chat_per_hour, self.quota.per_hour,
            )
        if len(self._drop_logged) > 2000:
            self._drop_logged = {k: t for k, t in self._drop_logged.items() if now - t < 3600}
        raise MessageDropped(f"chat {inbound.chat} is not registered and past its quota")

    async def _prune_now_and_then(self) -> None:
        """Keep the store's share of unregistered chats bounded: prune after every tenth of the
        kept count stored (one DELETE per few hundred messages, never per message)."""
        self._stored_since_prune += 1
        if self._stored_since_prune < max(1, self.quota.keep // 10):
            return
        self._stored_since_prune = 0
        gone = await self.store.prune_unregistered(self.quota.keep, max(1, self.quota.keep // 10))
        if gone:
            log.info("router: pruned %d old messages of unregistered chats (unregistered_keep=%d)", gone, self.quota.keep)

    def _route(self, message: Message) -> str:
        group = self.registry.get(message.chat)
        if group is None:
            return "unregistered"
        if not is_triggered(group, message, self.trigger):
            return "context"  # stays stored; goes to the agent with the next triggered message
        if not self.accepting:
            log.info("router: shutting down; %s message %d will be answered after restart", message.chat, message.id)
            return "deferred"
        sender_key = f"{message.chat}|{message.sender_id}"  # the id, never the display name
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
