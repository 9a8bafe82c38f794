"""Telegram: python-telegram-bot (its `Bot`, unchanged) over the shared asyncio bridge, long polling
(the default) or a webhook.

Polling: the loop runs in trio and calls ``bot.get_updates`` through the bridge. An update is
confirmed to Telegram (the next ``offset``) only after the router has stored its message, so a
crash or a dropped connection makes Telegram send it again and the store's key on
(channel, platform id) keeps it exactly once. Messages sent while the daemon was away are fetched
the same way (Telegram keeps them for 24 hours).

Webhook (``mode = "webhook"``): on connect ``bot.set_webhook(webhook_url, secret_token=...)``; then
Telegram POSTs each update to ``webhook_url``, whose path (``callback_path``) ngb/web/app.py routes
to ``handle_callback`` before its API guard. A POST must carry the secret in
``X-Telegram-Bot-Api-Secret-Token`` (else 401/403, a log line, nothing stored); its update takes
the polled update's path (to_inbound, the inbound gate, the router) and is answered 200 only once
the message is stored, so Telegram's redelivery of anything not answered 2xx never loses one; an
update id already stored is answered 200 at once. Every ``webhook_check_interval`` the channel
reads getWebhookInfo: the webhook set again if someone changed it, Telegram's delivery errors
logged. Switching back to polling deletes the webhook (getUpdates answers 409 while one is set).

Chats are ``telegram:<chat id>`` (groups are negative: ``telegram:-1001234567890``); a message's
platform id is ``<chat id>:<message id>`` (message ids are per chat), and ``<chat id>/<topic
id>:<message id>`` for a message in a forum topic. Mentions of the bot (``@username``, a text
mention, a reply to one of the bot's messages, ``/command@username``) and every message of a
private chat set ``mentions_bot``. Replies are threaded to the triggering message.

Forum topics: a whole forum is one chat (one group); the topic a trigger came from travels in its
platform id, which the router stores and the outbox hands back as ``reply_to``, so every part of
the reply and the "typing..." go to that topic (``message_thread_id``), after a restart too, and
also when the trigger was deleted meanwhile (``allow_sending_without_reply``: the reply is then no
reply, but still in the topic). A topic that is gone ("message thread not found") gets the reply
in the chat's General topic instead, with a log line. Configuration: docs/channels/telegram.md.

Files: each file of a message (getFile, then its download) goes through ``self.media`` before the
message is submitted; an album's parts are held (unconfirmed) and become one message; ``send_file``
uploads by sendPhoto / sendVoice / sendDocument (ngb/channels/telegram_media.py).

Live previews (a reply growing in one message, edited by editMessageText; the final text edited
into it): ngb/channels/telegram_preview.py. A message's ``thread`` is its forum topic ("" outside
one). Reactions (the bot's by setMessageReaction; people's, from ``message_reaction`` updates, as
context): ngb/channels/telegram_reactions.py.
"""

from __future__ import annotations

import logging
import secrets
from functools import partial
from typing import Any

import attrs
import trio

from ..aio_bridge import BRIDGE, AsyncioBridge, BridgeClosed
from ..media.intake import MediaIntake, with_notes
from ..records import InboundMessage, OutgoingFile
from .base import ChannelError, ChannelMemory, Submit
from .chats import chat_name
from .common import CONNECTED, AuthError, markdown_to_telegram_html, split_text, utf16_len
from .skeleton import PlatformChannel
from .telegram_ids import split_platform_id, to_chat_id, to_platform_id
from .telegram_media import (
    DOWNLOAD_LIMIT,
    AlbumHold,
    Part,
    caption_fits,
    fetcher,
    merge,
    part_of,
    upload,
    upload_method,
)
from .telegram_preview import PART_LIMIT, TelegramPreviews, seconds_of
from .telegram_reactions import TelegramReactions
from .telegram_settings import (  # noqa: F401 - re-exported: tests and the doctor import them from here
    DEFAULT_WEBHOOK_PATH,
    KEYS,
    PREFIX,
    WEBHOOK_SECRET_ENV,
    TelegramSettings,
)
from .telegram_webhook import ALLOWED_UPDATES, WebhookMode

log = logging.getLogger(__name__)

MEDIA_PLACEHOLDERS = (
    ("photo", "[photo]"), ("video", "[video]"), ("voice", "[voice message]"), ("audio", "[audio]"),
    ("document", "[file]"), ("sticker", "[sticker]"), ("animation", "[GIF]"), ("video_note", "[video message]"),
    ("location", "[location]"), ("contact", "[contact]"), ("poll", "[poll]"),
)


telegram_chat = partial(chat_name, PREFIX)  # platform id -> chat


class TelegramChannel(TelegramReactions, TelegramPreviews, WebhookMode, PlatformChannel):
    name = PREFIX
    uses_asyncio = True
    token_field = "token"

    def __init__(self, settings: TelegramSettings, *, trigger: str = "", bridge: AsyncioBridge = BRIDGE,
                 memory: ChannelMemory | None = None,
                 media: MediaIntake | None = None) -> None:
        super().__init__(settings, trigger=trigger, bridge=bridge, memory=memory, media=media)
        self.mode = settings.mode
        webhook = settings.mode == "webhook"
        # Served by the web server only in webhook mode, and only when the channel can run at all.
        self.callback_path: str | None = settings.webhook_path if webhook and settings.token else None
        self.webhook_secret = (settings.webhook_secret or secrets.token_urlsafe(48)) if webhook else ""
        self.keep_secret(settings.token or "", self.webhook_secret,
                         loggers=("httpx", "httpcore", "telegram", "ngb"))
        self.bot: Any = None
        self.me: Any = None
        self._offset: int | None = None  # what the next getUpdates confirms: never past an album part held
        self._next_offset: int | None = None  # past the newest update taken in this session
        self._albums = AlbumHold(settings.album_wait)
        self._init_webhook()
        self._init_reactions()

    # -- inbound -------------------------------------------------------------------------------------
    async def prepare(self) -> None:
        self.bot = await self.bridge.call_sync(self._make_bot)

    async def close(self) -> None:
        bot, self.bot = self.bot, None
        await self.close_on_loop(bot and bot.shutdown, "the bot")

    def is_auth_error(self, exc: BaseException) -> bool:
        return _is_auth_error(exc)

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

    async def session(self, submit: Submit) -> None:
        bot = self.bot
        if self.me is None:
            await self.bridge.call(bot.initialize)  # getMe; PTB keeps the answer as bot.bot
            self.me = bot.bot
        else:
            await self.bridge.call(bot.get_me)  # reachable, token still good
        if self.mode == "webhook":
            await self._set_webhook(bot)
            self.status.set(CONNECTED)
            log.info("telegram: connected as @%s (id %s); webhook mode: Telegram POSTs to %s (served at %s)",
                     self.me.username, self.me.id, self.public_webhook_url, self.callback_path)
            await self._watch_webhook(bot, submit)
        else:
            self.status.set(CONNECTED)
            log.info("telegram: connected as @%s (id %s)", self.me.username, self.me.id)
            await self._poll(bot, submit)

    async def _poll(self, bot: Any, submit: Submit) -> None:
        from telegram.error import Conflict

        self._albums.take()  # album parts held when a session ended were not confirmed: they come again
        self._next_offset = None
        while True:
            held = self._albums.held
            if held:
                await trio.sleep_until(self._albums.deadline)  # the album's next part, or quiet
            try:
                updates = await self.bridge.call(
                    bot.get_updates, offset=self._offset, timeout=0 if held else int(self.settings.poll_timeout),
                    allowed_updates=ALLOWED_UPDATES,
                )
            except Conflict as exc:
                if "webhook" not in str(exc).lower():
                    raise  # another process polls with this token
                log.warning("telegram: a webhook is set for this bot; deleting it to use long polling")
                await self.bridge.call(bot.delete_webhook, drop_pending_updates=False)
                continue
            self.status.set(CONNECTED)
            fresh = [u for u in updates if self._next_offset is None or u.update_id >= self._next_offset]
            if held and not fresh:
                await self._flush(submit, self._albums.take())  # no new part came: the album is complete
            for update in fresh:
                await self._take(submit, self.to_inbound(update), update)
                self._next_offset = update.update_id + 1
            first_held = self._albums.first_id  # held parts stay unconfirmed until their album is stored
            self._offset = first_held if first_held is not None else (self._next_offset or self._offset)

    async def _take(self, submit: Submit, inbound: InboundMessage | None, update: Any) -> None:
        """One update's message -> its files taken, then the router (stored when this returns); a
        part of an album is held until the album is complete; a reaction update -> each emoji
        added, to the router (never a trigger). Polled and webhook alike."""
        if update.message_reaction is not None:
            for reaction in self.reactions_in(update.message_reaction):
                await self._gate.submit(submit, reaction, triggered=False)
            return
        if inbound is None:
            return
        limit = min(self.media.limits.max_file_bytes, DOWNLOAD_LIMIT)
        for parts in self._albums.add(part_of(update.update_id, inbound, update.message, limit)):
            await self._flush(submit, parts)

    async def _flush(self, submit: Submit, parts: list[Part]) -> None:
        """One message (an album's parts: one message) -> its files into the media store (each a
        stored Attachment or a note in the text), then the router."""
        if not parts:
            return
        inbound, text, files = merge(parts)
        if files:
            taken = await self.media.take_all(inbound.chat, [(f.incoming, fetcher(self, f.file_id)) for f in files])
            inbound = attrs.evolve(inbound, text=with_notes(text, taken.notes), attachments=taken.attachments)
        await self._gate.submit(submit, inbound)

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
        topic = m.message_thread_id if m.is_topic_message else None  # (in other supergroups: a reply chain)
        if reply is not None and topic is not None and reply.message_id == topic:
            reply = None  # the topic's creation message: every message of a topic "replies" to it
        if reply is not None and me is not None and reply.from_user is not None and reply.from_user.id == me.id:
            mentions = True
        self.note_topic(m.chat.id, m.message_id, topic)
        return InboundMessage(
            chat=telegram_chat(m.chat.id),
            sender=m.from_user.full_name or m.from_user.username or str(m.from_user.id),
            text=text,
            platform_id=to_platform_id(m.chat.id, m.message_id, topic),
            time=m.date,
            sender_id=str(m.from_user.id),
            mentions_bot=mentions,
            reply_to=f"{m.chat.id}:{reply.message_id}" if reply is not None else None,
            direct=m.chat.type == "private",
            thread=str(topic) if topic is not None else "",
        )

    # -- outbound ------------------------------------------------------------------------------------
    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        chat_id = to_chat_id(chat)
        bot = self.bot
        if bot is None or self.me is None:
            raise ChannelError(f"telegram is {self.state}", retryable=True)
        thread_to = reply_to or self._last_trigger.get(chat)
        reply_message_id, topic = split_platform_id(thread_to, chat_id) if thread_to else (None, None)
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(text, PART_LIMIT, measure=utf16_len)
        for index in range(len(ids), len(parts)):
            sent = await self._send_part(bot, chat_id, parts[index], reply_message_id if index == 0 else None, topic)
            if topic is not None and sent.message_thread_id != topic:
                topic = None  # the topic was gone: the other parts follow the first one to General
            ids.append(to_platform_id(chat_id, sent.message_id, topic))
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return ids[0] if ids else None

    async def send_file(self, chat: str, file: OutgoingFile, reply_to: str | None = None) -> str | None:
        """A file as a photo (an image up to 10 MB), a voice note (OGG/Opus) or a document, threaded
        like ``send``; a caption over Telegram's 1024 characters follows as a text message."""
        chat_id = to_chat_id(chat)
        bot = self.bot
        if bot is None or self.me is None:
            raise ChannelError(f"telegram is {self.state}", retryable=True)
        thread_to = reply_to or self._last_trigger.get(chat)
        reply_message_id, topic = split_platform_id(thread_to, chat_id) if thread_to else (None, None)
        caption = file.caption.strip()
        inline = caption if caption_fits(caption) else ""
        key = self._partial.key(chat, f"\0file {file.path}\0{caption}", reply_to)
        ids = list(self._partial.done(key))  # the file went, its long caption did not: resume there
        if not ids:
            sent = await self._send_part(bot, chat_id, inline, reply_message_id, topic, file=file)
            ids.append(to_platform_id(chat_id, sent.message_id, topic if sent.message_thread_id == topic else None))
            self._partial.record(key, ids[0])
        if caption and not inline:
            await self.send(chat, caption, reply_to)
        self._partial.finish(key)
        return ids[0]

    async def _send_part(self, bot: Any, chat_id: int, part: str, reply_message_id: int | None,
                         topic: int | None = None, file: OutgoingFile | None = None, *, plain: bool = False) -> Any:
        """One text part (sendMessage; ``plain``: no HTML), or a file with ``part`` as its caption;
        errors -> ChannelError."""
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
        html = self.settings.parse_mode == "html" and not plain
        method, field = upload_method(file) if file is not None else ("send_message", "text")
        for attempt in range(3):
            try:
                if file is not None:
                    caption = markdown_to_telegram_html(part) if html and part else part
                    return self.noted(chat_id, await self.bridge.call(
                        upload, bot, method, field, file, chat_id, caption=caption or None,
                        parse_mode="HTML" if html and part else None, reply_parameters=reply, message_thread_id=topic))
                if html:
                    return self.noted(chat_id, await self.bridge.call(
                        bot.send_message, chat_id, markdown_to_telegram_html(part), parse_mode="HTML",
                        reply_parameters=reply, message_thread_id=topic))
                return self.noted(chat_id, await self.bridge.call(bot.send_message, chat_id, part, reply_parameters=reply,
                                                                  message_thread_id=topic))
            except RetryAfter as exc:
                wait = seconds_of(exc.retry_after)
                if wait > 10 or attempt == 2:
                    raise ChannelError(f"telegram: flood control, retry in {wait:.0f}s", retryable=True) from None
                await trio.sleep(wait)
            except BadRequest as exc:
                if html and "parse" in str(exc).lower():
                    log.warning("telegram: HTML refused (%s); sending that part as plain text", self.status.redact(str(exc)))
                    html = False
                    continue
                if method == "send_photo" and any(w in str(exc).lower() for w in ("photo", "image")):
                    log.warning("telegram: photo refused (%s); sending it as a document", self.status.redact(str(exc)))
                    method, field = "send_document", "document"
                    continue
                if topic is not None and _topic_gone(exc):
                    log.warning("telegram: topic %s of chat %s is gone (%s); sending to the chat's General topic",
                                topic, chat_id, self.status.redact(str(exc)))
                    topic = None
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
        """Show "typing..." for a few seconds (best effort), in the forum topic of the chat's newest
        trigger (as seen in this run: after a restart, until a new trigger, in the chat itself)."""
        if self.bot is None:
            return
        try:
            chat_id = to_chat_id(chat)
            trigger = self._last_trigger.get(chat)
            topic = split_platform_id(trigger, chat_id)[1] if trigger else None
            await self.bridge.call(self.bot.send_chat_action, chat_id, "typing", message_thread_id=topic)
        except Exception:  # noqa: BLE001 - cosmetic
            log.debug("telegram: typing indicator failed", exc_info=True)

    def details(self) -> dict[str, Any]:
        return {"bot": f"@{self.me.username}" if self.me is not None else None, "received": self.received}


def _is_auth_error(exc: BaseException) -> bool:
    from telegram.error import InvalidToken

    return isinstance(exc, InvalidToken | AuthError)


def _topic_gone(exc: Exception) -> bool:
    text = str(exc).lower()
    return "thread not found" in text or "topic_deleted" in text
