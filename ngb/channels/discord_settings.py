"""Discord's ``[channels.discord]`` table -> DiscordSettings (docs/channels/discord.md), and its chat
names (``discord:<channel id>``)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import attrs

from .chats import chat_name, platform_id_of
from .settings import ChannelTable, setting

PREFIX = "discord"
KEYS = {"token", "token_file", "api_base", "gateway_url", "message_content", "connect_timeout",
        "fetch_missed", "catch_up_pages", "reconnect_base", "reconnect_cap", "enabled"}
API_BASE = "https://discord.com/api/v10"
GATEWAY_URL = "wss://gateway.discord.gg/"


@attrs.frozen
class DiscordSettings:
    token: str | None = attrs.field(default=None, repr=False)
    api_base: str = API_BASE
    gateway_url: str = GATEWAY_URL
    message_content: bool = setting(True, ChannelTable.boolean)  # ask for the privileged Message Content intent
    connect_timeout: float = setting(60.0, ChannelTable.duration)
    fetch_missed: bool = setting(True, ChannelTable.boolean)
    # history pages (of 100) read per chat in one catch-up
    catch_up_pages: int = setting(20, ChannelTable.integer, lo=1, hi=10_000)
    reconnect_base: float = setting(1.0, ChannelTable.duration)
    reconnect_cap: float = setting(60.0, ChannelTable.duration)
    off_reason: str | None = None

    @classmethod
    def from_table(cls, table: dict[str, Any], config_file: Path | None = None) -> DiscordSettings:
        t = ChannelTable(PREFIX, table, config_file, KEYS)
        token = t.secret("token")
        return t.fill(
            cls,
            token=token,
            api_base=t.url("api_base", API_BASE).rstrip("/"),
            gateway_url=t.url("gateway_url", GATEWAY_URL, schemes=("ws", "wss")),
            off_reason=None if token else "no token: set NGB_DISCORD_TOKEN (or token_file)",
        )


discord_chat = partial(chat_name, PREFIX)  # platform id -> chat


def channel_id_of(chat: str) -> int:
    return int(platform_id_of(chat, PREFIX, str.isdigit, "Discord chat: {chat} (expected discord:<channel id>)"))
