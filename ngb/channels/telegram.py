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
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import attrs
import trio

from ..aio_bridge import BRIDGE, AsyncioBridge, BridgeClosed
from ..config import ConfigError
from ..records import InboundMessage
from .base import ChannelError, Submit
from .common import (
    CONNECTED,
    OFF,
    STOPPED,
    AuthError,
    ChannelStatus,
    InboundGate,
    Lru,
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
ALLOWED_UPDATES = ["message"]  # what getUpdates and the webhook ask Telegram for
MODES = ("polling", "webhook")
DEFAULT_WEBHOOK_PATH = "/channels/telegram/webhook"
WEBHOOK_SECRET_ENV = "NGB_TELEGRAM_WEBHOOK_SECRET"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
SECRET_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what Telegram accepts as a secret_token
# The daemon's own routes: a webhook path there would shadow them (it is answered before the API guard).
RESERVED_PATHS = ("/api", "/static", "/debug", "/status", "/healthz", "/metrics", "/dashboard", "/channels/wecom")
KEYS = {"token", "token_file", "base_url", "base_file_url", "poll_timeout", "request_timeout", "parse_mode",
        "reconnect_base", "reconnect_cap", "mode", "webhook_url", "webhook_secret", "webhook_secret_file",
        "webhook_check_interval"}


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
    mode: str = "polling"  # "polling" (getUpdates) or "webhook" (Telegram POSTs to webhook_url)
    webhook_url: str | None = None  # the public URL; its path is what the daemon serves
    webhook_secret: str | None = attrs.field(default=None, repr=False)  # None: a random one per start
    webhook_check_interval: float = 60.0  # how often getWebhookInfo is read in webhook mode

    @property
    def webhook_path(self) -> str:
        """The path Telegram POSTs to, as the web server sees it."""
        return unquote(urlsplit(self.webhook_url or DEFAULT_WEBHOOK_PATH).path) or DEFAULT_WEBHOOK_PATH

    @classmethod
    def from_table(cls, table: dict[str, Any], config_file: Path | None = None, *,
                   environ: Mapping[str, str] | None = None) -> TelegramSettings:
        t = ChannelTable(PREFIX, table, config_file, KEYS)
        token = t.secret("token")
        mode = t.choice("mode", "polling", MODES)
        webhook_url = _webhook_url(t) if t.get("webhook_url") not in (None, "") else None
        if mode == "webhook" and webhook_url is None:
            raise t.error("webhook_url", 'is required with mode = "webhook": the public https:// URL Telegram '
                          f"POSTs updates to, e.g. https://bot.example.org{DEFAULT_WEBHOOK_PATH}")
        webhook_secret = t.secret("webhook_secret", env=WEBHOOK_SECRET_ENV, environ=environ)
        if webhook_secret is not None and not SECRET_RE.fullmatch(webhook_secret):
            if t.get("webhook_secret"):
                where = t.key("webhook_secret")
            elif (os.environ if environ is None else environ).get(WEBHOOK_SECRET_ENV, "").strip():
                where = WEBHOOK_SECRET_ENV
            else:
                where = t.key("webhook_secret_file")
            raise ConfigError(where, "Telegram accepts 1-256 characters of A-Z, a-z, 0-9, _ and - as a webhook "
                              "secret (value not shown)")
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
            mode=mode,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            webhook_check_interval=t.duration("webhook_check_interval", 60.0),
        )


def _webhook_url(t: ChannelTable) -> str:
    """The checked webhook_url: https:// (http:// only to a loopback address, for tests), with a path
    the daemon can serve (the default path when it has none)."""
    raw = t.string("webhook_url").strip()
    parts = urlsplit(raw)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise t.error("webhook_url", f"must be an https:// URL, got {raw!r}")
    if parts.scheme == "http" and not _is_loopback(host):
        raise t.error("webhook_url", f"must be an https:// URL (Telegram delivers webhooks over HTTPS only); "
                      f"http:// is accepted for a loopback address only, got {raw!r}")
    if parts.fragment:
        raise t.error("webhook_url", f"must not have a #fragment, got {raw!r}")
    path = parts.path
    if path in ("", "/"):
        path = DEFAULT_WEBHOOK_PATH
    elif any(path == p or path.startswith(p + "/") for p in RESERVED_PATHS):
        raise t.error("webhook_url", f"its path {path!r} is one of the daemon's own routes; use e.g. "
                      f"{DEFAULT_WEBHOOK_PATH} (the reverse proxy must pass the path unchanged)")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _TelegramStatus(ChannelStatus):
    """The channel's status, with its mode (and webhook URL) in every description of it."""

    def __init__(self, name: str, extra: Any) -> None:
        super().__init__(name)
        self._extra = extra

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(self._extra())
        return out


def telegram_chat(chat_id: int | str) -> str:
    return f"{PREFIX}:{chat_id}"


class TelegramChannel:
    name = PREFIX

    def __init__(self, settings: TelegramSettings, *, trigger: str = "", bridge: AsyncioBridge = BRIDGE) -> None:
        self.settings = settings
        self.trigger = trigger
        self.bridge = bridge
        self.mode = settings.mode
        webhook = settings.mode == "webhook"
        # Served by the web server only in webhook mode, and only when the channel can run at all.
        self.callback_path: str | None = settings.webhook_path if webhook and settings.token else None
        self.webhook_secret = (settings.webhook_secret or secrets.token_urlsafe(48)) if webhook else ""
        self.status = _TelegramStatus(PREFIX, self._mode_info)
        self.status.secrets = [settings.token or "", self.webhook_secret]
        redact_in_logs(settings.token or "")
        redact_in_logs(self.webhook_secret)
        self.bot: Any = None
        self.me: Any = None
        self._offset: int | None = None
        self._partial = PartialSends()
        self._gate = InboundGate(PREFIX, trigger)
        self._last_trigger = self._gate.last_trigger
        self.duplicates_skipped = 0
        self._router_submit: Submit | None = None  # the router, while running (webhook updates go there)
        self._webhook_lock = trio.Lock()  # one webhook update at a time, in arrival order, like polling
        self._seen_updates = Lru(4096)  # update ids stored: a redelivery is answered from here
        self._webhook_error_date: Any = None
        self.webhook_updates = 0  # POSTs with the right secret and a readable update
        self.webhook_duplicates = 0
        self.webhook_malformed = 0
        self.webhook_refused: dict[str, int] = {}
        self.webhook_last_error: str | None = None  # what getWebhookInfo last reported
        self.webhook_pending: int | None = None

    @property
    def state(self) -> str:
        return self.status.state

    # -- inbound -------------------------------------------------------------------------------------
    async def run(self, submit: Submit, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._router_submit = submit
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
                self._router_submit = None
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
            await self._watch_webhook(bot)
        else:
            self.status.set(CONNECTED)
            log.info("telegram: connected as @%s (id %s)", self.me.username, self.me.id)
            await self._poll(bot, submit)

    async def _poll(self, bot: Any, submit: Submit) -> None:
        from telegram.error import Conflict

        while True:
            try:
                updates = await self.bridge.call(
                    bot.get_updates, offset=self._offset, timeout=int(self.settings.poll_timeout),
                    allowed_updates=ALLOWED_UPDATES,
                )
            except Conflict as exc:
                if "webhook" not in str(exc).lower():
                    raise  # another process polls with this token
                log.warning("telegram: a webhook is set for this bot; deleting it to use long polling")
                await self.bridge.call(bot.delete_webhook, drop_pending_updates=False)
                continue
            self.status.set(CONNECTED)
            for update in updates:
                await self._take(submit, self.to_inbound(update))
                self._offset = update.update_id + 1  # confirmed with the next getUpdates

    async def _take(self, submit: Submit, inbound: InboundMessage | None) -> None:
        """One update's message -> the router (stored when this returns). Polled and webhook alike."""
        if inbound is not None:
            await self._submit(submit, inbound)

    async def _submit(self, submit: Submit, inbound: InboundMessage) -> None:
        await self._gate.submit(submit, inbound)

    # -- webhook mode --------------------------------------------------------------------------------
    @property
    def public_webhook_url(self) -> str | None:
        """webhook_url as shown in /status and logs: no query (nothing secret-looking), no secret."""
        url = self.settings.webhook_url
        if not url:
            return None
        parts = urlsplit(url)
        return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))

    async def _set_webhook(self, bot: Any) -> None:
        await self.bridge.call(bot.set_webhook, self.settings.webhook_url, secret_token=self.webhook_secret,
                               allowed_updates=ALLOWED_UPDATES, drop_pending_updates=False)
        log.info("telegram: webhook set to %s", self.public_webhook_url)

    async def _watch_webhook(self, bot: Any) -> None:
        """While connected: read getWebhookInfo now and then. Set the webhook again when someone
        changed or deleted it; log what Telegram reports about its deliveries (a wrong proxy
        answers 404/502...). A failure to ask ends the session (disconnected, reconnect)."""
        while True:
            await trio.sleep(self.settings.webhook_check_interval)
            info = await self.bridge.call(bot.get_webhook_info)
            self.webhook_pending = info.pending_update_count
            if info.url != self.settings.webhook_url:
                log.warning("telegram: the bot's webhook is %s, not ours (changed by another program?); setting it again",
                            repr(info.url) if info.url else "not set")
                await self._set_webhook(bot)
                continue
            self.status.set(CONNECTED)
            date = info.last_error_date
            if info.last_error_message and date is not None and date != self._webhook_error_date:
                self._webhook_error_date = date
                self.webhook_last_error = f"{info.last_error_message} (at {date.isoformat()})"
                log.warning("telegram: Telegram could not deliver updates to %s: %s; %s waiting (it retries). "
                            "Check the reverse proxy and docs/channels/telegram.md", self.public_webhook_url,
                            self.status.redact(info.last_error_message), info.pending_update_count)

    async def handle_callback(self, method: str, args: Mapping[str, str], body: bytes, remote: str | None = None,
                              headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """One HTTP request to the webhook path -> (status, body). Never raises. 200 only once the
        update's message is stored (or it is one to ignore); Telegram delivers it again otherwise."""
        try:
            if method != "POST":
                return 405, b"method not allowed"
            given = _header(headers, SECRET_HEADER)
            if given is None:
                return self._refuse(401, "no secret token header", remote, headers)
            if not hmac.compare_digest(given.encode("utf-8", "replace"), self.webhook_secret.encode("utf-8")):
                return self._refuse(403, "wrong secret token", remote, headers)
            return await self._webhook_update(body, remote)
        except Exception:  # noqa: BLE001 - e.g. the store is down: Telegram retries what is not a 2xx
            log.exception("telegram: webhook update failed; Telegram will deliver it again")
            return 500, b""

    def _refuse(self, status: int, reason: str, remote: str | None, headers: Mapping[str, str] | None) -> tuple[int, bytes]:
        self.webhook_refused[reason] = self.webhook_refused.get(reason, 0) + 1
        forwarded = _header(headers, "X-Forwarded-For")
        log.warning("telegram: webhook POST refused from %s%s: %s (%d so far); nothing stored", remote or "?",
                    f" (forwarded for {forwarded[:100]!r})" if forwarded else "", reason, self.webhook_refused[reason])
        return status, b""

    async def _webhook_update(self, body: bytes, remote: str | None) -> tuple[int, bytes]:
        from telegram import Update

        submit, bot = self._router_submit, self.bot
        if submit is None or bot is None or self.me is None:
            return 503, b"not ready"  # before getMe answered: Telegram delivers it again
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or type(data.get("update_id")) is not int:
                raise ValueError("not a JSON object with an update_id")
            update = Update.de_json(data, bot)
            inbound = self.to_inbound(update)
        except Exception as exc:  # noqa: BLE001 - whatever the body is, it is answered, never raised
            self.webhook_malformed += 1
            log.warning("telegram: webhook POST from %s is not a Telegram update (%s: %.200s); answered 400",
                        remote or "?", type(exc).__name__, exc)
            return 400, b"not a Telegram update"
        key = str(update.update_id)
        async with self._webhook_lock:
            self.webhook_updates += 1
            if key in self._seen_updates:
                self.webhook_duplicates += 1
                log.info("telegram: update %s delivered again (a webhook retry); already stored", key)
                return 200, b""
            await self._take(submit, inbound)
            self._seen_updates.put(key, None)
        return 200, b""

    def _mode_info(self) -> dict[str, Any]:
        if self.mode != "webhook":
            return {"mode": self.mode}
        return {"mode": self.mode, "webhook_url": self.public_webhook_url, "callback_path": self.callback_path,
                "webhook_updates": self.webhook_updates, "webhook_duplicates": self.webhook_duplicates,
                "webhook_malformed": self.webhook_malformed, "webhook_refused": dict(self.webhook_refused),
                "webhook_pending": self.webhook_pending, "webhook_last_error": self.webhook_last_error}

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
        topic = m.message_thread_id if m.is_topic_message else None  # (in other supergroups: a reply chain)
        if reply is not None and topic is not None and reply.message_id == topic:
            reply = None  # the topic's creation message: every message of a topic "replies" to it
        if reply is not None and me is not None and reply.from_user is not None and reply.from_user.id == me.id:
            mentions = True
        return InboundMessage(
            chat=telegram_chat(m.chat.id),
            sender=m.from_user.full_name or m.from_user.username or str(m.from_user.id),
            text=text,
            platform_id=_platform_id(m.chat.id, m.message_id, topic),
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
        reply_message_id, topic = _target(thread_to, chat_id) if thread_to else (None, None)
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(text, PART_LIMIT, measure=utf16_len)
        for index in range(len(ids), len(parts)):
            sent = await self._send_part(bot, chat_id, parts[index], reply_message_id if index == 0 else None, topic)
            if topic is not None and sent.message_thread_id != topic:
                topic = None  # the topic was gone: the other parts follow the first one to General
            ids.append(_platform_id(chat_id, sent.message_id, topic))
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return ids[0] if ids else None

    async def _send_part(self, bot: Any, chat_id: int, part: str, reply_message_id: int | None,
                         topic: int | None = None) -> Any:
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
                                                  parse_mode="HTML", reply_parameters=reply, message_thread_id=topic)
                return await self.bridge.call(bot.send_message, chat_id, part, reply_parameters=reply,
                                              message_thread_id=topic)
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
            chat_id = _chat_id(chat)
            trigger = self._last_trigger.get(chat)
            topic = _target(trigger, chat_id)[1] if trigger else None
            await self.bridge.call(self.bot.send_chat_action, chat_id, "typing", message_thread_id=topic)
        except Exception:  # noqa: BLE001 - cosmetic
            log.debug("telegram: typing indicator failed", exc_info=True)

    def describe(self) -> dict[str, Any]:
        out = self.status.describe()
        out["bot"] = f"@{self.me.username}" if self.me is not None else None
        out["received"] = self.received
        return out


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A request header's value (case-insensitive), or None."""
    if headers is None:
        return None
    value = headers.get(name)
    if value is None:
        low = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == low), None)
    return None if value is None else str(value)


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


def _platform_id(chat_id: int, message_id: int, topic: int | None) -> str:
    """``<chat id>:<message id>``, or ``<chat id>/<topic id>:<message id>`` in a forum topic."""
    return f"{chat_id}:{message_id}" if topic is None else f"{chat_id}/{topic}:{message_id}"


def _target(platform_id: str, chat_id: int) -> tuple[int | None, int | None]:
    """A platform id of this chat -> (message id, forum topic id); None for what is not there."""
    head, _, mid = platform_id.rpartition(":")
    chat_part, _, topic = head.partition("/")
    if chat_part and chat_part != str(chat_id):
        return None, None
    return (int(mid) if mid.isdigit() else None), (int(topic) if topic.isdigit() else None)


def _topic_gone(exc: Exception) -> bool:
    text = str(exc).lower()
    return "thread not found" in text or "topic_deleted" in text


def _seconds(value: Any) -> float:
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)
