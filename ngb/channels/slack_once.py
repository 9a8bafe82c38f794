"""A reply posted once even when Slack's answer to the post was lost.

chat.postMessage has no idempotency key: a post that reached Slack but whose answer never came back
(the connection cut, a timeout) would be posted again by the outbox's retry. So every part the bot
posts carries the outbox row's key in its message metadata (``event_type`` "ngb_reply"); when a
post failed, the retry first looks in the conversation since that attempt (conversations.history,
or conversations.replies in a thread, ``include_all_metadata``) for a message of the bot carrying
the key, and takes it instead of posting again. The attempts of this run are remembered in
memory; for one it cannot remember (before a restart, or cut by a crash after Slack took the post)
the outbox says since when the row may have been posted (base.LooksBeforeResend: the row's
creation, for a row tried before or older than the run), and the post looks from then.
slack-sdk's own retry of a request whose connection failed is kept
for everything but the calls that post (``web_retry_handlers``): that retry cannot look first."""

from __future__ import annotations

import logging
import time
from typing import Any

from .base import ChannelError
from .common import Lru

log = logging.getLogger("ngb.channels.slack")

META_TYPE = "ngb_reply"
CLOCK_MARGIN = 120.0  # seconds looked back before a failed attempt (our clock vs Slack's)
LOOK = 200  # messages looked at


NOT_RETRIED_BY_THE_SDK = ("chat.postMessage", "files.completeUploadExternal")


def web_retry_handlers() -> list[Any]:
    """slack-sdk's default retry handlers, without its blind retry of a post whose connection failed."""
    from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler

    class ReadsAgain(AsyncConnectionErrorRetryHandler):
        async def _can_retry_async(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> bool:
            if str(request.url).rstrip("/").endswith(NOT_RETRIED_BY_THE_SDK):
                return False
            return await super()._can_retry_async(state=state, request=request, response=response, error=error)

    return [ReadsAgain()]


def reply_metadata(key: str) -> dict[str, Any]:
    return {"event_type": META_TYPE, "event_payload": {"key": key}}


def carries(message: dict[str, Any], key: str) -> bool:
    meta = message.get("metadata") or {}
    return meta.get("event_type") == META_TYPE and (meta.get("event_payload") or {}).get("key") == key


class SlackSendOnce:
    """The send-once half of SlackChannel (a mixin: it shares the channel's web client)."""

    me: Any

    async def _api(self, method: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def _post(self, channel: str, part: str, thread_ts: str | None, key: str | None = None) -> str:
        raise NotImplementedError

    _failed_posts: Lru

    async def _post_once(self, channel: str, part: str, thread_ts: str | None, key: str | None,
                         maybe_sent_since: float | None = None) -> str:
        """Post ``part`` unless an earlier attempt with the same key did, unseen (one of this run,
        or one since ``maybe_sent_since``); its ts."""
        since = self._failed_posts.get(key) if key is not None else None
        if since is None and maybe_sent_since is not None:
            since = maybe_sent_since - CLOCK_MARGIN
        if key is not None and since is not None:
            found = await self._posted_with(channel, thread_ts, key, since)
            if found is not None:
                log.info("slack: the reply part %s had been posted (%s) by an attempt whose answer was lost; "
                         "not posted again", key, found)
                self._failed_posts.pop(key, None)
                return found
        started = time.time()
        try:
            ts = await self._post(channel, part, thread_ts, key)
        except ChannelError as exc:
            if key is not None and exc.retryable and key not in self._failed_posts:
                self._failed_posts.put(key, started - CLOCK_MARGIN)
            raise
        self._failed_posts.pop(key or "", None)
        return ts

    async def _posted_with(self, channel: str, thread_ts: str | None, key: str, since: float) -> str | None:
        """The ts of the bot's message carrying ``key`` in the conversation since ``since``, if any."""
        where: dict[str, Any] = {"ts": thread_ts} if thread_ts else {}
        method = "conversations_replies" if thread_ts else "conversations_history"
        try:
            answer = await self._api(method, channel=channel, oldest=f"{since:.6f}", include_all_metadata=True,
                                     limit=LOOK, **where)
        except Exception as exc:  # noqa: BLE001 - cannot tell: post (a duplicate is the lesser harm)
            log.warning("slack: could not look for an earlier post of %s (%s); posting", key, exc)
            return None
        bot = (self.me or {}).get("bot_id")
        for message in answer.get("messages") or []:
            if carries(message, key) and (bot is None or message.get("bot_id") in (None, bot)):
                return str(message["ts"])
        return None
