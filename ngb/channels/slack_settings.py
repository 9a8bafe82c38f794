"""Slack's ``[channels.slack]`` table -> SlackSettings (docs/channels/slack.md), and its chat names
(``slack:<conversation id>``)."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import attrs

from .chats import chat_name, platform_id_of
from .settings import ChannelTable, setting

PREFIX = "slack"
BASE_URL = "https://slack.com/api/"
KEYS = {"bot_token", "app_token", "bot_token_file", "app_token_file", "base_url", "reply_in_thread",
        "ping_interval", "request_timeout", "connect_timeout", "fetch_missed", "reconnect_base",
        "reconnect_cap", "enabled", "catch_up_pages", "catch_up_time"}


@attrs.frozen
class SlackSettings:
    bot_token: str | None = attrs.field(default=None, repr=False)  # xoxb-...
    app_token: str | None = attrs.field(default=None, repr=False)  # xapp-... (connections:write)
    base_url: str = BASE_URL
    # "auto": in the thread when the trigger was in one; "always"
    reply_in_thread: str = setting("auto", ChannelTable.choice, options=("auto", "always"))
    # websocket ping; a socket silent for 4x this is reconnected
    ping_interval: float = setting(5.0, ChannelTable.duration)
    request_timeout: float = setting(30.0, ChannelTable.duration)
    connect_timeout: float = setting(15.0, ChannelTable.duration)  # websocket connect + Slack's hello
    # conversations.history (+ .replies) after a reconnect
    fetch_missed: bool = setting(True, ChannelTable.boolean)
    # pages per listing (history, each thread) in one catch-up
    catch_up_pages: int = setting(50, ChannelTable.integer, lo=1, hi=10_000)
    # seconds one catch-up may take, rate-limit waits included
    catch_up_time: float = setting(120.0, ChannelTable.duration)
    reconnect_base: float = setting(1.0, ChannelTable.duration)
    reconnect_cap: float = setting(60.0, ChannelTable.duration)
    off_reason: str | None = None

    @classmethod
    def from_table(cls, table: dict[str, Any], config_file: Path | None = None) -> SlackSettings:
        t = ChannelTable(PREFIX, table, config_file, KEYS)
        bot, app = t.secret("bot_token"), t.secret("app_token")
        if app and not app.startswith("xapp-"):
            raise t.error("app_token", "must be an app-level token (xapp-...), see docs/channels/slack.md")
        missing = [name for name, value in (("NGB_SLACK_BOT_TOKEN", bot), ("NGB_SLACK_APP_TOKEN", app)) if not value]
        base_url = t.string("base_url", BASE_URL)
        return t.fill(
            cls,
            bot_token=bot,
            app_token=app,
            base_url=base_url if base_url.endswith("/") else base_url + "/",
            off_reason=f"no token: set {' and '.join(missing)} (or *_token_file)" if missing else None,
        )


slack_chat = partial(chat_name, PREFIX)  # platform id -> chat


def channel_id_of(chat: str) -> str:
    return platform_id_of(chat, PREFIX, re.compile(r"[A-Z0-9]+").fullmatch,
                          "Slack chat: {chat} (expected slack:<conversation id>, e.g. slack:C0123ABC)")
