"""Slack's ``[channels.slack]`` table -> SlackSettings (docs/channels/slack.md), and its chat names
(``slack:<conversation id>``)."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import attrs

from .chats import chat_name, platform_id_of
from .settings import ChannelTable

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
    reply_in_thread: str = "auto"  # "auto": in the thread when the trigger was in one; "always"
    ping_interval: float = 5.0  # websocket ping; a socket silent for 4x this is reconnected
    request_timeout: float = 30.0
    connect_timeout: float = 15.0  # websocket connect + Slack's hello
    fetch_missed: bool = True  # conversations.history (+ .replies) after a reconnect
    catch_up_pages: int = 50  # pages per listing (history, each thread) in one catch-up
    catch_up_time: float = 120.0  # seconds one catch-up may take, rate-limit waits included
    reconnect_base: float = 1.0
    reconnect_cap: float = 60.0
    off_reason: str | None = None

    @classmethod
    def from_table(cls, table: dict[str, Any], config_file: Path | None = None) -> SlackSettings:
        t = ChannelTable(PREFIX, table, config_file, KEYS)
        bot, app = t.secret("bot_token"), t.secret("app_token")
        if app and not app.startswith("xapp-"):
            raise t.error("app_token", "must be an app-level token (xapp-...), see docs/channels/slack.md")
        missing = [name for name, value in (("NGB_SLACK_BOT_TOKEN", bot), ("NGB_SLACK_APP_TOKEN", app)) if not value]
        base_url = t.string("base_url", BASE_URL)
        return cls(
            bot_token=bot,
            app_token=app,
            base_url=base_url if base_url.endswith("/") else base_url + "/",
            reply_in_thread=t.choice("reply_in_thread", "auto", ("auto", "always")),
            ping_interval=t.duration("ping_interval", 5.0),
            request_timeout=t.duration("request_timeout", 30.0),
            connect_timeout=t.duration("connect_timeout", 15.0),
            fetch_missed=t.boolean("fetch_missed", True),
            catch_up_pages=t.integer("catch_up_pages", 50, lo=1, hi=10_000),
            catch_up_time=t.duration("catch_up_time", 120.0),
            reconnect_base=t.duration("reconnect_base", 1.0),
            reconnect_cap=t.duration("reconnect_cap", 60.0),
            off_reason=f"no token: set {' and '.join(missing)} (or *_token_file)" if missing else None,
        )


slack_chat = partial(chat_name, PREFIX)  # platform id -> chat


def channel_id_of(chat: str) -> str:
    return platform_id_of(chat, PREFIX, re.compile(r"[A-Z0-9]+").fullmatch,
                          "Slack chat: {chat} (expected slack:<conversation id>, e.g. slack:C0123ABC)")
