"""Telegram's live previews (base.LivePreview), mixed into TelegramChannel.

The preview is a sendMessage in plain text (no ``parse_mode``: a half-written reply's unclosed
``**`` stays text), placed where ``send`` places a reply's first part: a reply to the trigger, in
its forum topic. Each edit is an editMessageText with the growing text, cut to Telegram's 4,096
characters with a trailing "…". The final reply edits the preview to its first part formatted as
``send`` formats it (Telegram HTML; the part in plain text when Telegram refuses the HTML), and the
other parts follow as new messages in the preview's topic (common steps: live_preview.py).

Telegram's answers: "message is not modified" (the same text again) is success; "message to edit
not found" means a person deleted the preview ("message can't be edited": it can no longer be
edited): a preview edit is then a ChannelError (previewing ends), the final reply goes out as a new
message. Flood control on a preview edit is a retryable
ChannelError at once (a late preview is no use); the final edit waits it out as ``send`` does."""

from __future__ import annotations

import logging
from typing import Any

import trio

from ..aio_bridge import BridgeClosed
from .base import ChannelError
from .common import LastTrigger, markdown_to_telegram_html, split_text, utf16_len
from .live_preview import FinishesPreviews, PreviewGone, preview_text
from .telegram_ids import split_platform_id, to_chat_id, to_platform_id

log = logging.getLogger("ngb.channels.telegram")

# Telegram's limit is 4096 characters after entity parsing, counted in UTF-16 code units.
PART_LIMIT = 4000  # what send cuts a reply into: the Markdown source, which never renders longer
TEXT_LIMIT = 4096  # a preview is plain text: it may use all of it
MAX_WAIT = 10.0  # seconds of flood control the final edit waits out (as send does)
# editMessageText's answers for a message that is not there (deleted), or that can no longer be edited
GONE = ("message to edit not found", "message_id_invalid", "message can't be edited")


class TelegramPreviews(FinishesPreviews):
    """The live-preview half of TelegramChannel (a mixin: it shares the channel's bot and sends)."""

    bot: Any
    me: Any
    bridge: Any
    settings: Any
    status: Any
    state: str
    _last_trigger: LastTrigger

    async def _send_part(self, bot: Any, chat_id: int, part: str, reply_message_id: int | None,
                         topic: int | None = None, file: Any = None, *, plain: bool = False) -> Any:
        raise NotImplementedError

    async def send_preview(self, chat: str, text: str, reply_to: str | None = None) -> str:
        """Post the preview (plain text) where ``send`` would put the reply; its platform id."""
        return await self._send_first(chat, preview_text(text, TEXT_LIMIT, measure=utf16_len), reply_to, plain=True)

    async def edit_preview(self, chat: str, platform_id: str, text: str) -> None:
        try:
            await self._edit(chat, platform_id, preview_text(text, TEXT_LIMIT, measure=utf16_len), html=False)
        except PreviewGone:
            raise ChannelError(f"telegram: the preview {platform_id} was deleted or cannot be edited",
                               retryable=False) from None

    # -- finish_preview's steps (live_preview.py) ----------------------------------------------------
    def _final_parts(self, text: str) -> list[str]:
        return split_text(text, PART_LIMIT, measure=utf16_len)

    async def _edit_final(self, chat: str, platform_id: str, part: str) -> None:
        await self._edit(chat, platform_id, part, html=self.settings.parse_mode == "html", patient=True)

    async def _send_first(self, chat: str, part: str, reply_to: str | None, *, plain: bool = False) -> str:
        """``part`` as ``send``'s first part: a reply to ``reply_to`` (or the chat's newest trigger),
        in its forum topic (the chat's General topic when that topic is gone)."""
        chat_id = to_chat_id(chat)
        thread_to = reply_to or self._last_trigger.get(chat)
        reply_message_id, topic = split_platform_id(thread_to, chat_id) if thread_to else (None, None)
        sent = await self._send_part(self._ready_bot(), chat_id, part, reply_message_id, topic, plain=plain)
        return to_platform_id(chat_id, sent.message_id, topic if sent.message_thread_id == topic else None)

    async def _send_after(self, chat: str, first_id: str, part: str, reply_to: str | None) -> str:
        """``part`` after the first one: no reply, in the first part's forum topic."""
        chat_id = to_chat_id(chat)
        topic = split_platform_id(first_id, chat_id)[1]
        sent = await self._send_part(self._ready_bot(), chat_id, part, None, topic)
        return to_platform_id(chat_id, sent.message_id, topic if sent.message_thread_id == topic else None)

    # -- editMessageText -------------------------------------------------------------------------------
    def _ready_bot(self) -> Any:
        if self.bot is None or self.me is None:
            raise ChannelError(f"telegram is {self.state}", retryable=True)
        return self.bot

    async def _edit(self, chat: str, platform_id: str, text: str, *, html: bool, patient: bool = False) -> None:
        """editMessageText of the bot's message ``platform_id`` (``html``: ``text`` is Markdown, sent
        as Telegram HTML); PreviewGone when the message is not there; other errors -> ChannelError."""
        from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError

        chat_id = to_chat_id(chat)
        message_id = split_platform_id(platform_id, chat_id)[0]
        if message_id is None:
            raise ChannelError(f"telegram: {platform_id} is not a message of {chat}", retryable=False)
        bot = self._ready_bot()
        for attempt in range(3):
            try:
                if html:
                    await self.bridge.call(bot.edit_message_text, markdown_to_telegram_html(text), chat_id=chat_id,
                                           message_id=message_id, parse_mode="HTML")
                else:
                    await self.bridge.call(bot.edit_message_text, text, chat_id=chat_id, message_id=message_id)
                return
            except RetryAfter as exc:
                wait = seconds_of(exc.retry_after)
                if not patient or wait > MAX_WAIT or attempt == 2:
                    raise ChannelError(f"telegram: flood control, retry in {wait:.0f}s", retryable=True) from None
                await trio.sleep(wait)
            except BadRequest as exc:
                error = str(exc).lower()
                if "not modified" in error:
                    return  # the message shows this text already
                if any(gone in error for gone in GONE):
                    raise PreviewGone(platform_id) from None
                if html and "parse" in error:
                    log.warning("telegram: HTML refused (%s); editing to that part as plain text",
                                self.status.redact(str(exc)))
                    html = False
                    continue
                raise ChannelError(self.status.redact(f"telegram: {exc}"), retryable=False) from None
            except Forbidden as exc:
                raise ChannelError(self.status.redact(f"telegram: {exc} (the bot was removed or blocked)"),
                                   retryable=False) from None
            except InvalidToken as exc:
                raise ChannelError(self.status.redact(f"telegram: token rejected: {exc}"), retryable=True) from None
            except (TelegramError, BridgeClosed) as exc:  # NetworkError, TimedOut, ...
                raise ChannelError(self.status.redact(f"telegram: {type(exc).__name__}: {exc}"), retryable=True) from None
        raise ChannelError("telegram: could not edit", retryable=True)


def seconds_of(value: Any) -> float:
    """Telegram's retry_after (seconds, or a timedelta in newer python-telegram-bot) in seconds."""
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)
