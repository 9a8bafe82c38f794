"""Telegram's webhook mode: setting the webhook, watching it (getWebhookInfo), and answering the
POSTs Telegram makes to ``callback_path``: the secret header checked, a redelivered update answered
from memory, a new one taken the polled update's way and answered 200 only once it is stored (an
album's part: once it is held; the album is stored when complete, and always when the session ends)."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import trio

from .common import CONNECTED, Lru

if TYPE_CHECKING:
    from .base import Submit
    from .telegram_settings import TelegramSettings

log = logging.getLogger("ngb.channels.telegram")

ALLOWED_UPDATES = ["message", "message_reaction"]  # what getUpdates and the webhook ask Telegram for
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class WebhookMode:
    """The webhook half of TelegramChannel (a mixin: it shares the channel's bot, status and gate)."""

    settings: TelegramSettings
    mode: str
    callback_path: str | None
    webhook_secret: str
    bot: Any
    me: Any
    bridge: Any
    status: Any
    submit_to: Submit | None
    _albums: Any  # telegram_media.AlbumHold

    def _init_webhook(self) -> None:
        self._webhook_lock = trio.Lock()  # one webhook update at a time, in arrival order, like polling
        self._seen_updates = Lru(4096)  # update ids stored: a redelivery is answered from here
        self._webhook_error_date: Any = None
        self.webhook_updates = 0  # POSTs with the right secret and a readable update
        self.webhook_duplicates = 0
        self.webhook_malformed = 0
        self.webhook_refused: dict[str, int] = {}
        self.webhook_last_error: str | None = None  # what getWebhookInfo last reported
        self.webhook_pending: int | None = None

    def to_inbound(self, update: Any) -> Any:
        raise NotImplementedError

    async def _take(self, submit: Submit, inbound: Any, update: Any) -> None:
        raise NotImplementedError

    async def _flush(self, submit: Submit, parts: list[Any]) -> None:
        raise NotImplementedError

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

    async def _watch_webhook(self, bot: Any, submit: Submit) -> None:
        """While connected: store albums once complete, and read getWebhookInfo now and then. An
        album still held when the session ends is stored then (its parts were answered 200)."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._release_albums, submit)
                await self._check_webhook(bot)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                async with self._webhook_lock:
                    await self._flush_held(submit)

    async def _release_albums(self, submit: Submit) -> None:
        """An album held is stored once no new part came for ``album_wait`` seconds."""
        albums = self._albums
        while True:
            if not albums.held:
                await albums.added.wait()
                continue
            await trio.sleep_until(albums.deadline)
            async with self._webhook_lock:
                if albums.held and trio.current_time() >= albums.deadline:
                    await self._flush_held(submit)

    async def _flush_held(self, submit: Submit) -> None:
        parts = self._albums.take()
        try:
            await self._flush(submit, parts)
        except Exception:  # noqa: BLE001 - answered 200 already: Telegram will not send these again
            log.exception("telegram: an album of %d parts (updates %s) could not be stored", len(parts),
                          [p.update_id for p in parts])

    async def _check_webhook(self, bot: Any) -> None:
        """Set the webhook again when someone changed or deleted it; log what Telegram reports
        about its deliveries (a wrong proxy answers 404/502...). A failure to ask ends the session
        (disconnected, reconnect)."""
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

        submit, bot = self.submit_to, self.bot
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
            await self._take(submit, inbound, update)
            self._seen_updates.put(key, None)
        return 200, b""

    def status_details(self) -> dict[str, Any]:
        """The mode (and, in webhook mode, what the webhook received) in the status's details."""
        if self.mode != "webhook":
            return {"mode": self.mode}
        return {"mode": self.mode, "webhook_url": self.public_webhook_url, "callback_path": self.callback_path,
                "webhook_updates": self.webhook_updates, "webhook_duplicates": self.webhook_duplicates,
                "webhook_malformed": self.webhook_malformed, "webhook_refused": dict(self.webhook_refused),
                "webhook_pending": self.webhook_pending, "webhook_last_error": self.webhook_last_error}


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A request header's value (case-insensitive), or None."""
    if headers is None:
        return None
    value = headers.get(name)
    if value is None:
        low = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == low), None)
    return None if value is None else str(value)
