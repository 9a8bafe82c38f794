"""Lark's sending: a reply split into parts, each a reply to the trigger (in its thread when asked or
when the trigger is in one) or a new message, as rich text or plain text, with the outbox's
idempotency key as each part's ``uuid``; the Open API's answers turned into ChannelError."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import trio

from ..aio_bridge import BridgeClosed
from .base import ChannelError
from .common import AuthError, split_text
from .lark_sdk import ApiError, LarkParts
from .lark_settings import chat_id_of

if TYPE_CHECKING:
    from .common import LastTrigger, Lru, PartialSends

log = logging.getLogger("ngb.channels.lark")

PART_LIMIT = 4000  # characters per message (rich text requests are limited to 30 KB)
UUID_MAX = 50  # im.v1.message uuid (idempotency key) length limit
RATE_LIMITED = {99991400, 230020}
REPLY_TARGET_GONE = {230011, 231003}  # the message to reply to was withdrawn / not found: post in the chat
# uploads: 234001 bad parameter, 234006 over the size limit, 234007 no bot, 234010 empty, 234011 not an image
FATAL_SEND = {230001, 230002, 230006, 230013, 230025, 230027, 99991672, 99991679,
              234001, 234006, 234007, 234010, 234011}
SCOPES_HINT = " (grant the im:message and im:resource scopes and publish a new app version)"
FATAL_HINTS = {230002: " (add the bot to the chat)", 230006: " (enable the app's bot capability)",
               234007: " (enable the app's bot capability)", 99991672: SCOPES_HINT, 99991679: SCOPES_HINT}


class LarkSending(LarkParts):
    """The outbound half of LarkChannel (a mixin: it shares the channel's client and caches)."""

    _partial: PartialSends
    _last_trigger: LastTrigger
    _chats: Lru  # message id -> its chat id
    state: str

    async def send(self, chat: str, text: str, reply_to: str | None = None, *,
                   idempotency_key: str | None = None) -> str | None:
        """Send ``text`` (split under 4,000 characters): a reply to ``reply_to`` (or the chat's newest
        trigger), else a new message. ``idempotency_key`` becomes each part's ``uuid``: Lark sends a
        repeated uuid only once (within an hour)."""
        chat_id = chat_id_of(chat)
        if self.client is None:
            raise ChannelError(f"lark is {self.state}", retryable=True)
        target = reply_to or self._last_trigger.get(chat)
        threaded = bool(target) and (self.settings.reply_in_thread or bool(self._threads.get(target or "")))
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(text, PART_LIMIT)
        for index in range(len(ids), len(parts)):
            uuid = f"{idempotency_key}.{index}"[-UUID_MAX:] if idempotency_key else None
            to = target if (index == 0 or threaded) else None
            ids.append(await self._send_part(chat_id, parts[index], to, uuid))
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return ids[0] if ids else None

    def _content(self, part: str) -> tuple[str, str]:
        if self.settings.format == "markdown":
            return "post", json.dumps({"zh_cn": {"content": [[{"tag": "md", "text": part}]]}}, ensure_ascii=False)
        return "text", json.dumps({"text": part}, ensure_ascii=False)

    async def _send_part(self, chat_id: str, part: str, reply_to: str | None, uuid: str | None) -> str:
        msg_type, content = self._content(part)
        return await self._deliver(chat_id, msg_type, content, reply_to, uuid)

    async def _deliver(self, chat_id: str, msg_type: str, content: str, reply_to: str | None,
                       uuid: str | None) -> str:
        """One message (``msg_type`` with its ``content`` JSON): a reply to ``reply_to`` (in its
        thread per ``reply_in_thread``), else into the chat; its message id. Rate limits are waited
        out twice; a reply target that is gone falls back to the chat; the rest is ChannelError."""
        from lark_oapi.api.im.v1 import (
            CreateMessageRequest,
            CreateMessageRequestBody,
            ReplyMessageRequest,
            ReplyMessageRequestBody,
        )

        for attempt in range(3):
            try:
                if reply_to:
                    body = ReplyMessageRequestBody.builder().msg_type(msg_type).content(content) \
                        .reply_in_thread(self.settings.reply_in_thread)
                    request = ReplyMessageRequest.builder().message_id(reply_to) \
                        .request_body((body.uuid(uuid) if uuid else body).build()).build()
                    response = await self._api("im.v1.message.reply", self.client.im.v1.message.areply, request)
                else:
                    body = CreateMessageRequestBody.builder().receive_id(chat_id).msg_type(msg_type).content(content)
                    request = CreateMessageRequest.builder().receive_id_type("chat_id") \
                        .request_body((body.uuid(uuid) if uuid else body).build()).build()
                    response = await self._api("im.v1.message.create", self.client.im.v1.message.acreate, request)
                data = response.data
                self._threads.put(str(data.message_id), getattr(data, "thread_id", None) or "")
                if getattr(data, "chat_id", None):
                    self._chats.put(str(data.message_id), str(data.chat_id))
                return str(data.message_id)
            except ApiError as exc:
                if reply_to and exc.code in REPLY_TARGET_GONE:
                    log.info("lark: the message to reply to is gone (%s); posting in the chat", exc)
                    reply_to = None
                    continue
                if not self._rate_limited(exc, attempt):
                    raise self._api_error(exc) from None
                await trio.sleep(1.0 + attempt)
            except Exception as exc:  # noqa: BLE001 - mapped to ChannelError, or raised as it is
                error = self._send_error(exc)
                if error is None:
                    raise
                raise error from None
        raise ChannelError("lark: could not send", retryable=True)

    @staticmethod
    def _rate_limited(exc: ApiError, attempt: int) -> bool:
        """True: wait and try again; the third time it is a retryable ChannelError."""
        if exc.code in RATE_LIMITED or exc.status == 429:
            if attempt == 2:
                raise ChannelError(f"lark: rate limited ({exc})", retryable=True) from None
            return True
        return False

    def _api_error(self, exc: ApiError) -> ChannelError:
        if exc.code in FATAL_SEND:
            return ChannelError(f"lark: {exc}{FATAL_HINTS.get(exc.code, '')}", retryable=False)
        return ChannelError(self.status.redact(f"lark: {exc}"), retryable=True)

    def _send_error(self, exc: Exception) -> ChannelError | None:
        """A failed Open API call as the outbox takes it (None: not ours to map, raise it)."""
        if isinstance(exc, ApiError):
            return self._api_error(exc)
        if isinstance(exc, AuthError):
            return ChannelError(self.status.redact(f"lark: credentials refused: {exc}"), retryable=True)
        if isinstance(exc, BridgeClosed | OSError | TimeoutError | ConnectionError | ValueError) \
                or type(exc).__module__.startswith(("httpx", "httpcore")):  # network trouble
            return ChannelError(self.status.redact(f"lark: {type(exc).__name__}: {exc}"), retryable=True)
        return None
