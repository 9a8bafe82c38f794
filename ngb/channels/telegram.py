"""Telegram: python-telegram-bot (its `Bot`, unchanged) over the shared asyncio bridge, long polling.

The polling loop runs in trio and calls ``bot.get_updates`` through the bridge. An update is
confirmed to Telegram (the next ``offset``) only after the router has stored its message, so a
crash or a dropped connection makes Telegram send it again and the store's key on
(channel, platform id) keeps it exactly once. Messages sent while the daemon was away are fetched
the same way (Telegram keeps them for 24 hours).

Chats are ``telegram:<chat id>`` (groups are negative: ``telegram:-1001234567890``); a message's
platform id is ``<chat id>:<message id>`` (message ids are per chat). Mentions of the bot
(``@username``, a text mention, a reply to one of the bot's messages, ``/command@username``) and
every message of a private chat set ``mentions_bot``. Replies are threaded to the triggering
message. Configuration: docs/channels/telegram.md.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs
import trio

from ..aio_bridge import BRIDGE, AsyncioBridge, BridgeClosed
from ..records import InboundMessage
from .base import ChannelError, Submit
from .common import (
    CONNECTED,
    OFF,
    STOPPED,
    AuthError,
    ChannelStatus,
    InboundGate,
    PartialSends,
    markdown_to_telegram_html,
    reconnect_forever,
    redact_in_logs,
    split_text,
    utf16_len,
)
from .settings import ChannelTable

log = logging.getLogger(__name__)

PREFIX = "telegram"
TEXT_LIMIT = 4096  # characters after entity parsing, counted in UTF-16 code units
PART_LIMIT = 4000  # what we aim for: the Markdown source, which never renders longer
MEDIA_PLACEHOLDERS = (
    ("photo", "[photo]"), ("video", "[video]"), ("voice", "[voice message]"), ("audio", "[audio]"),
    ("document", "[file]"), ("sticker", "[sticker]"), ("animation", "[GIF]"), ("video_note", "[video message]"),
    ("location", "[location]"), ("contact", "[contact]"), ("poll", "[poll]"),
)


@attrs.frozen
class TelegramSettings:
    token: str | None = attrs.field(default=None, repr=False)
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    poll_timeout: float = 30.0  # seconds a getUpdates long poll waits on the server
    request_timeout: float = 20.0  # connect/read/write timeout of other calls
    parse_mode: str = "html"  # "html": Markdown converted to Telegram HTML; "none": plain text
    reconnect_base: float = 1.0
    reconnect_cap: float = 60.0
    off_reason: str | None = None  # why the channel is off (no token...)

    @classmethod
    def from_table(cls, table: dict[str, Any], config_file: Path | None = None) -> TelegramSettings:
        t = ChannelTable(PREFIX, table, config_file, {"token", "token_file", "base_url", "base_file_url", "poll_timeout",
                                                       "request_timeout", "parse_mode", "reconnect_base", "reconnect_cap"})
        token = t.secret("token")
        base_url = t.string("base_url", "https://api.telegram.org/bot").rstrip("/")  # not cls.base_url: a slot descriptor
        if not base_url.endswith("/bot") and "{token}" not in base_url:
            base_url += "/bot"  # "https://tg.example" -> "https://tg.example/bot"
        return cls(
            token=token,
            base_url=base_url,
            base_file_url=str(t.get("base_file_url") or base_url.replace("/bot", "/file/bot")),
            poll_timeout=t.duration("poll_timeout", 30.0),
            request_timeout=t.duration("request_timeout", 20.0),
            parse_mode=t.choice("parse_mode", "html", ("html", "none")),
            reconnect_base=t.duration("reconnect_base", 1.0),
            reconnect_cap=t.duration("reconnect_cap", 60.0),
            off_reason=None if token else "no token: set NGB_TELEGRAM_TOKEN (or token_file)",
        )


def telegram_chat(chat_id: int | str) -> str:
    return f"{PREFIX}:{chat_id}"


class TelegramChannel:
    name = PREFIX

    def __init__(self, settings: TelegramSettings, *, trigger: str = "", bridge: AsyncioBridge = BRIDGE) -> None:
        self.settings = settings
        self.trigger = trigger
        self.bridge = bridge
        self.status = ChannelStatus(PREFIX)
        self.status.secrets = [settings.token or ""]
        redact_in_logs(settings.token or "")
        self.bot: Any = None
        self.me: Any = None
        self._offset: int | None = None
        self._partial = PartialSends()
        self._gate = InboundGate(PREFIX, trigger)
        self._last_trigger = self._gate.last_trigger
        self.duplicates_skipped = 0

    @property
    def state(self) -> str:
        return self.status.state

    # -- inbound -------------------------------------------------------------------------------------
    async def run(self, submit: Submit, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if not self.settings.token:
            self.status.set(OFF, self.settings.off_reason)
            task_status.started()
            await trio.sleep_forever()
        async with self.bridge.attach():
            task_status.started()  # the daemon does not wait for Telegram to answer
            try:
                self.bot = await self.bridge.call_sync(self._make_bot)
                await reconnect_forever(
                    self.status,
                    lambda: self._session(submit),
                    base=self.settings.reconnect_base,
                    cap=self.settings.reconnect_cap,
                    is_auth_error=_is_auth_error,
                )
            finally:
                self.status.set(STOPPED)
                with trio.CancelScope(shield=True), trio.move_on_after(3):
                    bot, self.bot = self.bot, None
                    if bot is not None and self.bridge.running:
                        try:
                            await self.bridge.call(bot.shutdown)
                        except Exception:  # noqa: BLE001 - closing on the way out
                            log.debug("telegram: error while closing the bot", exc_info=True)

    def _make_bot(self) -> Any:  # on the asyncio loop thread
        from telegram import Bot
        from telegram.request import HTTPXRequest

        s = self.settings
        request = HTTPXRequest(
            connection_pool_size=8,
            connect_timeout=s.request_timeout,
            read_timeout=s.request_timeout,
            write_timeout=s.request_timeout,
            pool_timeout=s.request_timeout,
        )
        # getUpdates gets its own connection; PTB adds the long-poll timeout to this read timeout
        polling = HTTPXRequest(connection_pool_size=1, connect_timeout=s.request_timeout, read_timeout=10.0)
        return Bot(s.token or "", base_url=s.base_url, base_file_url=s.base_file_url, request=request,
                   get_updates_request=polling)

    async def _session(self, submit: Submit) -> None:
        from telegram.error import Conflict

        bot = self.bot
        if self.me is None:
            await self.bridge.call(bot.initialize)  # getMe; PTB keeps the answer as bot.bot
            self.me = bot.bot
        else:
            await self.bridge.call(bot.get_me)  # reachable, token still good
        self.status.set(CONNECTED)
        log.info("telegram: connected as @%s (id %s)", self.me.username, self.me.id)
        while True:
            try:
                updates = await self.bridge.call(
                    bot.get_updates, offset=self._offset, timeout=int(self.settings.poll_timeout),
                    allowed_updates=["message"],
                )
            except Conflict as exc:
                if "webhook" not in str(exc).lower():
                    raise  # another process polls with this token
                log.warning("telegram: a webhook is set for this bot; deleting it to use long polling")
                await self.bridge.call(bot.delete_webhook, drop_pending_updates=False)
                continue
            self.status.set(CONNECTED)
            for update in updates:
                inbound = self.to_inbound(update)
                if inbound is not None:
                    await self._submit(submit, inbound)
                self._offset = update.update_id + 1  # confirmed with the next getUpdates

    async def _submit(self, submit: Submit, inbound: InboundMessage) -> None:
        await self._gate.submit(submit, inbound)

    @property
    def received(self) -> int:
        return self._gate.received

    def to_inbound(self, update: Any) -> InboundMessage | None:
        """An Update -> InboundMessage, or None for what is not a user's message."""
        from telegram import MessageEntity

        m = update.message
        if m is None or m.from_user is None:
            return None
        text = m.text or m.caption or ""
        if not text:
            text = next((label for attr, label in MEDIA_PLACEHOLDERS if getattr(m, attr, None)), "")
            if not text:
                return None  # service messages (joins, pins, title changes...)
        me = self.me
        username = (me.username or "").lower() if me is not None else ""
        mentions = m.chat.type == "private"
        entities = m.parse_entities() if m.text else m.parse_caption_entities()
        for entity, value in entities.items():
            if entity.type == MessageEntity.MENTION and username and value[1:].lower() == username:
                mentions = True
            elif entity.type == MessageEntity.TEXT_MENTION and me is not None and entity.user and entity.user.id == me.id:
                mentions = True
            elif entity.type == MessageEntity.BOT_COMMAND and username and value.lower().endswith("@" + username):
                mentions = True
        reply = m.reply_to_message
        if reply is not None and me is not None and reply.from_user is not None and reply.from_user.id == me.id:
            mentions = True
        return InboundMessage(
            chat=telegram_chat(m.chat.id),
            sender=m.from_user.full_name or m.from_user.username or str(m.from_user.id),
            text=text,
            platform_id=f"{m.chat.id}:{m.message_id}",
            time=m.date,
            sender_id=str(m.from_user.id),
            mentions_bot=mentions,
            reply_to=f"{m.chat.id}:{reply.message_id}" if reply is not None else None,
        )

    # -- outbound ------------------------------------------------------------------------------------
    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        chat_id = _chat_id(chat)
        bot = self.bot
        if bot is None or self.me is None:
            raise ChannelError(f"telegram is {self.state}", retryable=True)
        thread_to = reply_to or self._last_trigger.get(chat)
        reply_message_id = _message_id(thread_to, chat_id) if thread_to else None
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(text, PART_LIMIT, measure=utf16_len)
        for index in range(len(ids), len(parts)):
            sent = await self._send_part(bot, chat_id, parts[index], reply_message_id if index == 0 else None)
            ids.append(f"{chat_id}:{sent.message_id}")
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return ids[0] if ids else None

    async def _send_part(self, bot: Any, chat_id: int, part: str, reply_message_id: int | None) -> Any:
        from telegram import ReplyParameters
        from telegram.error import (
            BadRequest,
            ChatMigrated,
            Forbidden,
            InvalidToken,
            RetryAfter,
            TelegramError,
        )

        reply = ReplyParameters(message_id=reply_message_id, allow_sending_without_reply=True) if reply_message_id else None
        html = self.settings.parse_mode == "html"
        for attempt in range(3):
            try:
                if html:
                    return await self.bridge.call(bot.send_message, chat_id, markdown_to_telegram_html(part),
                                                  parse_mode="HTML", reply_parameters=reply)
                return await self.bridge.call(bot.send_message, chat_id, part, reply_parameters=reply)
            except RetryAfter as exc:
                wait = _seconds(exc.retry_after)
                if wait > 10 or attempt == 2:
                    raise ChannelError(f"telegram: flood control, retry in {wait:.0f}s", retryable=True) from None
                await trio.sleep(wait)
            except BadRequest as exc:
                if html and "parse" in str(exc).lower():
                    log.warning("telegram: HTML refused (%s); sending that part as plain text", self.status.redact(str(exc)))
                    html = False
                    continue
                raise ChannelError(self.status.redact(f"telegram: {exc}"), retryable=False) from None
            except ChatMigrated as exc:
                raise ChannelError(
                    f"telegram: the group became a supergroup; its new chat is telegram:{exc.new_chat_id} "
                    f"(re-register it with `ngb groups add telegram:{exc.new_chat_id} ...`)",
                    retryable=False,
                ) from None
            except Forbidden as exc:
                raise ChannelError(self.status.redact(f"telegram: {exc} (the bot was removed or blocked)"), retryable=False) from None
            except InvalidToken as exc:
                raise ChannelError(self.status.redact(f"telegram: token rejected: {exc}"), retryable=True) from None
            except (TelegramError, BridgeClosed) as exc:  # NetworkError, TimedOut, ...
                raise ChannelError(self.status.redact(f"telegram: {type(exc).__name__}: {exc}"), retryable=True) from None
        raise ChannelError("telegram: could not send", retryable=True)

    async def typing(self, chat: str) -> None:
        """Show "typing..." for a few seconds (best effort)."""
        if self.bot is None:
            return
        try:
            await self.bridge.call(self.bot.send_chat_action, _chat_id(chat), "typing")
        except Exception:  # noqa: BLE001 - cosmetic
            log.debug("telegram: typing indicator failed", exc_info=True)

    def describe(self) -> dict[str, Any]:
        out = self.status.describe()
        out["bot"] = f"@{self.me.username}" if self.me is not None else None
        out["received"] = self.received
        return out


def _is_auth_error(exc: BaseException) -> bool:
    from telegram.error import InvalidToken

    return isinstance(exc, InvalidToken | AuthError)


def _chat_id(chat: str) -> int:
    prefix, _, raw = chat.partition(":")
    try:
        if prefix != PREFIX:
            raise ValueError
        return int(raw)
    except ValueError:
        raise ChannelError(f"not a Telegram chat: {chat!r} (expected telegram:<numeric id>)", retryable=False) from None


def _message_id(platform_id: str, chat_id: int) -> int | None:
    chat_part, _, mid = platform_id.rpartition(":")
    if not mid.isdigit() or (chat_part and chat_part != str(chat_id)):
        return None
    return int(mid)


def _seconds(value: Any) -> float:
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)
