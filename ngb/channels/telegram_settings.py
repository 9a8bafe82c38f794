"""Telegram's ``[channels.telegram]`` table -> TelegramSettings: the token, polling or webhook
mode, and the checks a webhook URL and secret must pass (docs/channels/telegram.md)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import attrs

from ..config import ConfigError
from .settings import ChannelTable, setting

PREFIX = "telegram"
MODES = ("polling", "webhook")
DEFAULT_WEBHOOK_PATH = "/channels/telegram/webhook"
WEBHOOK_SECRET_ENV = "NGB_TELEGRAM_WEBHOOK_SECRET"
SECRET_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what Telegram accepts as a secret_token
# The daemon's own routes: a webhook path there would shadow them (it is answered before the API guard).
RESERVED_PATHS = ("/api", "/static", "/debug", "/status", "/healthz", "/metrics", "/dashboard", "/channels/wecom")
KEYS = {"token", "token_file", "base_url", "base_file_url", "poll_timeout", "request_timeout", "parse_mode",
        "reconnect_base", "reconnect_cap", "mode", "webhook_url", "webhook_secret", "webhook_secret_file",
        "webhook_check_interval", "album_wait"}


@attrs.frozen
class TelegramSettings:
    token: str | None = attrs.field(default=None, repr=False)
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    # seconds a getUpdates long poll waits on the server
    poll_timeout: float = setting(30.0, ChannelTable.duration)
    request_timeout: float = setting(20.0, ChannelTable.duration)  # connect/read/write timeout of other calls
    # "html": Markdown converted to Telegram HTML; "none": plain text
    parse_mode: str = setting("html", ChannelTable.choice, options=("html", "none"))
    reconnect_base: float = setting(1.0, ChannelTable.duration)
    reconnect_cap: float = setting(60.0, ChannelTable.duration)
    off_reason: str | None = None  # why the channel is off (no token...)
    mode: str = "polling"  # "polling" (getUpdates) or "webhook" (Telegram POSTs to webhook_url)
    webhook_url: str | None = None  # the public URL; its path is what the daemon serves
    webhook_secret: str | None = attrs.field(default=None, repr=False)  # None: a random one per start
    # how often getWebhookInfo is read in webhook mode
    webhook_check_interval: float = setting(60.0, ChannelTable.duration)
    # an album's parts are held until this long passed without a new part (then one message)
    album_wait: float = setting(1.0, ChannelTable.duration)

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
        return t.fill(
            cls,
            token=token,
            base_url=base_url,
            base_file_url=str(t.get("base_file_url") or base_url.replace("/bot", "/file/bot")),
            off_reason=None if token else "no token: set NGB_TELEGRAM_TOKEN (or token_file)",
            mode=mode,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
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
