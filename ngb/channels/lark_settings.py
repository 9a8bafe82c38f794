"""Lark's (Feishu's) ``[channels.lark]`` table -> LarkSettings (docs/channels/lark.md), and its chat
names (``lark:<chat_id>``)."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from ..config import ConfigError
from .chats import chat_name, platform_id_of
from .settings import ChannelTable, setting

PREFIX = "lark"
DOMAINS = {"feishu": "https://open.feishu.cn", "lark": "https://open.larksuite.com"}
KEYS = {"app_id", "app_secret", "app_secret_file", "domain", "bot_open_id", "verification_token",
        "verification_token_file", "encrypt_key", "encrypt_key_file", "reply_in_thread", "format",
        "resolve_names", "request_timeout", "connect_timeout", "reconnect_base", "reconnect_cap", "enabled"}


@attrs.frozen
class LarkSettings:
    app_id: str | None = None
    app_secret: str | None = attrs.field(default=None, repr=False)
    domain: str = DOMAINS["feishu"]  # origin of the Open API (and of the websocket endpoint)
    bot_open_id: str | None = None  # None: asked with bot/v3/info at connect
    verification_token: str | None = attrs.field(default=None, repr=False)  # events carrying another are refused
    encrypt_key: str | None = attrs.field(default=None, repr=False)  # for encrypted event payloads
    reply_in_thread: bool = setting(False, ChannelTable.boolean)  # replies open a thread on the triggering message
    # "markdown": rich text (post, md element); "text": plain text
    format: str = setting("markdown", ChannelTable.choice, options=("markdown", "text"))
    # sender names via contact/v3/users (needs contact:user.base:readonly)
    resolve_names: bool = setting(True, ChannelTable.boolean)
    request_timeout: float = setting(20.0, ChannelTable.duration)
    connect_timeout: float = setting(15.0, ChannelTable.duration)
    reconnect_base: float = setting(1.0, ChannelTable.duration)
    reconnect_cap: float = setting(60.0, ChannelTable.duration)
    off_reason: str | None = None

    @classmethod
    def from_table(cls, table: dict[str, Any], config_file: Path | None = None) -> LarkSettings:
        t = ChannelTable(PREFIX, table, config_file, KEYS)
        app_id = t.string("app_id").strip() or None
        app_secret = t.secret("app_secret")
        missing = [n for n, v in (("NGB_LARK_APP_ID", app_id), ("NGB_LARK_APP_SECRET", app_secret)) if not v]
        return t.fill(
            cls,
            app_id=app_id,
            app_secret=app_secret,
            domain=parse_domain(t.get("domain", "feishu")),
            bot_open_id=t.string("bot_open_id").strip() or None,
            verification_token=t.secret("verification_token"),
            encrypt_key=t.secret("encrypt_key"),
            off_reason=f"no credentials: set {' and '.join(missing)} (or app_secret_file)" if missing else None,
        )


def parse_domain(value: Any) -> str:
    """"feishu" | "lark" | an origin URL -> the origin (https, or http on loopback for tests)."""
    text = str(value or "").strip()
    if text.lower() in DOMAINS:
        return DOMAINS[text.lower()]
    parts = urlsplit(text)
    host = (parts.hostname or "").lower()
    problem = None
    if parts.scheme not in ("https", "http") or not host:
        problem = 'must be "feishu", "lark" or a URL like https://open.feishu.cn'
    elif parts.scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
        problem = "must use https (http only for a loopback test server)"
    elif parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        problem = "must be an origin (scheme and host, optionally a port) without a path"
    if problem:
        raise ConfigError("channels.lark.domain", f"{problem}, got {text!r}")
    return f"{parts.scheme}://{parts.netloc}"


lark_chat = partial(chat_name, PREFIX)  # platform id -> chat


def chat_id_of(chat: str) -> str:
    return platform_id_of(chat, PREFIX, re.compile(r"[A-Za-z0-9_-]+").fullmatch,
                          "Lark chat: {chat} (expected lark:<chat_id>, e.g. lark:oc_0123abcd)")
