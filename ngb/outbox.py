"""The sender task: delivers outbox rows to their channels, marks each sent only after the channel
acknowledged it, and retries with backoff until it is. Replies to one chat go in order: a row
waiting for its retry holds back the later ones. A ChannelError says whether to retry (a platform
that is down is retried for as long as it takes); anything else a channel raises is a bug, tried
``BUG_ATTEMPTS`` times and then given up (the row kept as failed, with its error), so one broken
row cannot hold a chat's replies back for ever."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import trio

from .backoff import backoff_delay
from .channels.base import (
    Channel,
    ChannelError,
    FileSend,
    IdempotentSend,
    LivePreview,
    LooksBeforeResend,
    offers,
)
from .logs import log_context
from .media.files import MediaFiles
from .media.limits import megabytes
from .records import Message, OutboxItem, OutgoingFile, channel_of
from .store import Store, StoreUnavailable

log = logging.getLogger(__name__)

BUG_ATTEMPTS = 5  # tries of a row whose channel raises something other than ChannelError


class OutboxSender:
    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        *,
        assistant_name: str,
        on_delivered: Callable[[Message], None] | None = None,
        retry_base: float = 1.0,
        retry_cap: float = 300.0,
        files: MediaFiles | None = None,
    ) -> None:
        self.store = store
        self.files = files  # the media store: where an outbox row's file is read from
        self.channels = channels
        self.assistant_name = assistant_name
        self._on_delivered = on_delivered or (lambda m: None)
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._wake = trio.Event()
        self._idle = trio.Event()  # set while a pass found nothing to deliver now (wait_idle)
        self._not_before: dict[str, float] = {}  # chat -> monotonic time of its next try
        self.retries = 0
        self.delivered = 0
        self._started = time.time()  # rows older than this may have been sent by an earlier run

    def wake(self) -> None:
        self._wake.set()
        if self._idle.is_set():
            self._idle = trio.Event()

    async def wait_idle(self) -> None:
        """Return once a pass found nothing it could deliver now (all sent, or waiting on a retry
        or a channel): what shutdown waits for, briefly, before it cancels the sender."""
        await self._idle.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self._wake = trio.Event()
            try:
                next_try = await self.flush()
            except StoreUnavailable as exc:
                log.error("outbox: store unavailable, will retry: %s", exc)
                next_try = trio.current_time() + 2.0
            if next_try is None:
                if not self._wake.is_set():  # nothing came in while it flushed
                    self._idle.set()
                await self._wake.wait()
            else:
                with trio.move_on_at(next_try):
                    await self._wake.wait()

    async def flush(self) -> float | None:
        """Deliver what is pending. Returns when the next retry is due (None: nothing waits)."""
        blocked: set[str] = set()
        next_try: float | None = None
        for item in await self.store.pending_outbox():
            now = trio.current_time()
            due = self._not_before.get(item.chat, 0.0)
            if item.chat in blocked or due > now:
                if due > now:
                    next_try = due if next_try is None else min(next_try, due)
                blocked.add(item.chat)  # keep per-chat order: nothing overtakes a waiting reply
                continue
            if not await self._deliver(item):
                blocked.add(item.chat)
                retry_at = self._not_before.get(item.chat)
                if retry_at is not None:
                    next_try = retry_at if next_try is None else min(next_try, retry_at)
        return next_try

    async def _deliver(self, item: OutboxItem) -> bool:
        with log_context(chat=item.chat):
            return await self._deliver_one(item)

    async def _deliver_one(self, item: OutboxItem) -> bool:
        channel = self.channels.get(channel_of(item.chat))
        if channel is None:
            log.error("outbox: no channel %r for chat %s; message %d kept pending", channel_of(item.chat), item.chat, item.id)
            await self._failed(item, f"channel {channel_of(item.chat)!r} is not configured", retryable=True)
            return False
        try:
            if item.attachments:
                platform_id = await self._send_file(channel, item)
            elif item.preview_id is not None and offers(channel, LivePreview):
                platform_id = await self._finish_preview(channel, item)
            else:
                platform_id = await self._send_text(channel, item)
        except ChannelError as exc:
            await self._failed(item, str(exc), retryable=exc.retryable)
            return False
        except Exception as exc:  # noqa: BLE001 - a channel bug must not stop deliveries elsewhere
            # not a ChannelError: a bug, which retrying seldom cures; after a few tries the row is
            # given up (kept, as failed), or it would hold back every later reply to its chat
            retryable = item.attempts + 1 < BUG_ATTEMPTS
            log.exception("outbox: channel %s raised on send (attempt %d of %d)", channel_of(item.chat),
                          item.attempts + 1, BUG_ATTEMPTS)
            await self._failed(item, f"{type(exc).__name__}: {exc}", retryable=retryable)
            return False
        message = await self.store.deliver(item, self.assistant_name, platform_id)
        self._not_before.pop(item.chat, None)
        self.delivered += 1
        self._on_delivered(message)
        return True

    async def _send_text(self, channel: Channel, item: OutboxItem) -> str | None:
        key = f"ngb{item.id}"
        if offers(channel, LooksBeforeResend) and channel.looks_before_resend:
            # no key on the platform (Slack): a row tried before, or older than this run (whose
            # attempt a crash may have cut after the platform took it), is looked for first
            created = item.created_at.timestamp()
            since = created if item.attempts or created < self._started else None
            return await channel.send(item.chat, item.text, item.reply_to, idempotency_key=key, maybe_sent_since=since)
        if offers(channel, IdempotentSend) and channel.takes_idempotency_key:
            # Platforms that deduplicate on a key (Discord's nonce) drop a resend after a crash.
            return await channel.send(item.chat, item.text, item.reply_to, idempotency_key=key)
        return await channel.send(item.chat, item.text, item.reply_to)

    async def _finish_preview(self, channel: Any, item: OutboxItem) -> str | None:
        """The chat shows this reply half-written (ngb/previews.py): that message becomes the reply.
        Where it can no longer (the platform refuses the edit for good), the reply goes anew."""
        assert item.preview_id is not None
        try:
            return await channel.finish_preview(item.chat, item.preview_id, item.text, item.reply_to)
        except ChannelError as exc:
            if exc.retryable:
                raise
            log.warning("outbox: the preview in %s cannot become reply %d (%s); it is sent as a new message",
                        item.chat, item.id, exc)
            return await self._send_text(channel, item)

    async def _send_file(self, channel: Channel, item: OutboxItem) -> str | None:
        """One file (an outbox row carries one), as a file where the channel sends files, else as
        a line saying what it was; a file retention removed before it went is given up."""
        att = item.attachments[0]
        if att.gone or self.files is None or not self.files.has(att.sha256):
            raise ChannelError(f"the file {att.name!r} is no longer stored", retryable=False)
        file = OutgoingFile(path=self.files.path(att.sha256), name=att.name, mime=att.mime, kind=att.kind,
                            size=att.size, caption=item.text)
        if offers(channel, FileSend):
            if getattr(channel, "takes_idempotency_key", False):
                # (Discord's nonce: a resend after a crash is dropped there, not posted twice)
                keyed: Any = channel.send_file
                return await keyed(item.chat, file, item.reply_to, idempotency_key=f"ngb{item.id}")
            return await channel.send_file(item.chat, file, item.reply_to)
        line = f"[{att.kind}: {att.name}, {megabytes(att.size)}: this chat cannot receive files]"
        text = f"{item.text}\n{line}" if item.text.strip() else line
        return await channel.send(item.chat, text, item.reply_to)

    async def _failed(self, item: OutboxItem, error: str, *, retryable: bool) -> None:
        self.retries += 1
        give_up = not retryable
        await self.store.outbox_attempt_failed(item.id, error, give_up=give_up)
        if give_up:
            log.error("outbox: giving up on message %d to %s: %s", item.id, item.chat, error)
            return
        delay = backoff_delay(item.attempts + 1, base=self._retry_base, cap=self._retry_cap)
        self._not_before[item.chat] = trio.current_time() + delay
        log.warning("outbox: send to %s failed (%s); retry in %.1fs", item.chat, error, delay)
