"""Feishu / Lark's live previews (base.LivePreview), mixed into LarkChannel.

The preview is a message where ``send`` puts a reply's first part (a reply to the trigger, in its
thread when asked or when the trigger is in one), of the message type ``send`` uses: with
``format = "markdown"`` a rich-text ``post`` whose element is plain ``text`` (not ``md``: a
half-written ``**`` stays text), else a ``text`` message; cut to the 4,000 characters ``send`` uses
per part, with a trailing "…". Each edit is ``im.v1.message.update`` (PUT
/open-apis/im/v1/messages/:message_id, which edits text and post messages) with the same message
type, never another. The final reply updates it to its first part as ``send`` formats it (``md``
in a post, or text) and sends the other parts after it, as ``send`` does (common steps:
live_preview.py).

Lark edits a message at most 20 times: the previews of one message stop at 19 edits (the preview
then shows its text of that moment; one log line), keeping the 20th for the final reply. A message
a person withdrew (230011) or that Lark cannot find (231003) makes a preview edit a ChannelError
(previewing ends) and the final reply a new message."""

from __future__ import annotations

import json
import logging

import trio

from .base import ChannelError
from .common import Lru, split_text
from .lark_sdk import ApiError
from .lark_send import PART_LIMIT, REPLY_TARGET_GONE, LarkSending
from .lark_settings import chat_id_of
from .live_preview import FinishesPreviews, PreviewGone, preview_text

log = logging.getLogger("ngb.channels.lark")

EDIT_LIMIT = 20  # Lark: a message can be edited at most 20 times
PREVIEW_EDITS = EDIT_LIMIT - 1  # the last one is the final reply's


class LarkPreviews(FinishesPreviews, LarkSending):
    """The live-preview half of LarkChannel (a mixin: it shares the channel's client and sends)."""

    _preview_edits: Lru  # preview message id -> edits made to it

    async def send_preview(self, chat: str, text: str, reply_to: str | None = None) -> str:
        """Post the preview (plain text) where ``send`` would put the reply; its message id."""
        chat_id = chat_id_of(chat)
        target, _ = self._reply_target(chat, reply_to)
        msg_type, content = self._preview_content(text)
        return await self._deliver(chat_id, msg_type, content, target, None)

    async def edit_preview(self, chat: str, platform_id: str, text: str) -> None:
        """Edit the preview to ``text`` (plain); past its 19th edit nothing (see the module docstring)."""
        edits = int(self._preview_edits.get(platform_id, 0))
        if edits >= PREVIEW_EDITS:
            if edits == PREVIEW_EDITS:
                log.info("lark: the preview %s was edited %d times; the next edit is the final reply's",
                         platform_id, edits)
                self._preview_edits.put(platform_id, edits + 1)
            return
        if not await self._update(platform_id, *self._preview_content(text)):
            raise ChannelError(f"lark: the preview {platform_id} was deleted", retryable=False)
        self._preview_edits.put(platform_id, edits + 1)

    # -- finish_preview's steps (live_preview.py) ----------------------------------------------------
    def _final_parts(self, text: str) -> list[str]:
        return split_text(text, PART_LIMIT)

    async def _edit_final(self, chat: str, platform_id: str, part: str) -> None:
        if not await self._update(platform_id, *self._content(part)):
            raise PreviewGone(platform_id)

    async def _send_first(self, chat: str, part: str, reply_to: str | None) -> str:
        target, _ = self._reply_target(chat, reply_to)
        return await self._send_part(chat_id_of(chat), part, target, None)

    async def _send_after(self, chat: str, first_id: str, part: str, reply_to: str | None) -> str:
        """``part`` after the first: in the thread when ``send`` threads, else a new message."""
        target, threaded = self._reply_target(chat, reply_to)
        return await self._send_part(chat_id_of(chat), part, target if threaded else None, None)

    # -- the message -----------------------------------------------------------------------------------
    def _reply_target(self, chat: str, reply_to: str | None) -> tuple[str | None, bool]:
        """What ``send`` replies to (``reply_to`` or the chat's newest trigger), and whether all its
        parts go to that thread; ChannelError while there is no client."""
        if self.client is None:
            raise ChannelError(f"lark is {self.state}", retryable=True)
        target = reply_to or self._last_trigger.get(chat)
        return target, bool(target) and (self.settings.reply_in_thread or bool(self._threads.get(target or "")))

    def _preview_content(self, text: str) -> tuple[str, str]:
        """(msg_type, content) of a preview: ``send``'s message type, the text plain and cut."""
        shown = preview_text(text, PART_LIMIT)
        if self.settings.format == "markdown":
            return "post", json.dumps({"zh_cn": {"content": [[{"tag": "text", "text": shown}]]}}, ensure_ascii=False)
        return "text", json.dumps({"text": shown}, ensure_ascii=False)

    async def _update(self, message_id: str, msg_type: str, content: str) -> bool:
        """im.v1.message.update of the bot's message to (msg_type, content); False when it is gone.
        Rate limits are waited out twice, like a send; other errors -> ChannelError."""
        from lark_oapi.api.im.v1 import UpdateMessageRequest, UpdateMessageRequestBody

        if self.client is None:
            raise ChannelError(f"lark is {self.state}", retryable=True)
        for attempt in range(3):
            try:
                body = UpdateMessageRequestBody.builder().msg_type(msg_type).content(content).build()
                request = UpdateMessageRequest.builder().message_id(message_id).request_body(body).build()
                await self._api("im.v1.message.update", self.client.im.v1.message.aupdate, request)
                return True
            except ApiError as exc:
                if exc.code in REPLY_TARGET_GONE:
                    return False
                if not self._rate_limited(exc, attempt):
                    raise self._api_error(exc) from None
                await trio.sleep(1.0 + attempt)
            except Exception as exc:  # noqa: BLE001 - mapped to ChannelError, or raised as it is
                error = self._send_error(exc)
                if error is None:
                    raise
                raise error from None
        raise ChannelError("lark: could not edit", retryable=True)
