"""DingTalk's ``[channels.dingtalk]`` table -> DingTalkSettings (docs/channels/dingtalk.md), and its
chat names (``dingtalk:<conversationId>``)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import attrs

from .chats import chat_name, platform_id_of
from .settings import ChannelTable, setting

PREFIX = "dingtalk"
GATEWAY_URL = "https://api.dingtalk.com/v1.0/gateway/connections/open"
API_BASE = "https://api.dingtalk.com"
OAPI_BASE = "https://oapi.dingtalk.com"  # the older API: media upload
KEYS = {"client_id", "client_secret", "client_secret_file", "robot_code", "chatbot_user_id", "gateway_url",
        "api_base", "oapi_base", "message_type", "connect_timeout", "request_timeout", "ping_interval", "webhook_margin",
        "reconnect_base", "reconnect_cap"}


@attrs.frozen
class DingTalkSettings:
    client_id: str | None = None  # the app's ClientID (AppKey)
    client_secret: str | None = attrs.field(default=None, repr=False)  # ClientSecret (AppSecret)
    robot_code: str | None = None  # the robot's code; for an app's own robot, its ClientID
    chatbot_user_id: str | None = None  # when set, callbacks for another chatbotUserId are refused
    gateway_url: str = GATEWAY_URL  # the open-connection API
    api_base: str = API_BASE  # the robot API and /v1.0/oauth2/accessToken
    oapi_base: str = OAPI_BASE  # media/upload (files out)
    message_type: str = setting("markdown", ChannelTable.choice, options=("markdown", "text"))
    connect_timeout: float = setting(15.0, ChannelTable.duration)  # open connection + websocket handshake
    request_timeout: float = setting(20.0, ChannelTable.duration)  # each HTTP call
    # websocket ping; no pong within as long again -> reconnect
    ping_interval: float = setting(20.0, ChannelTable.duration)
    # a session webhook this close to its expiry is not used
    webhook_margin: float = setting(30.0, ChannelTable.duration, allow_zero=True)
    reconnect_base: float = setting(1.0, ChannelTable.duration)
    reconnect_cap: float = setting(60.0, ChannelTable.duration)
    off_reason: str | None = None
    state_dir: Path | None = None  # the daemon's (build_channels sets it); None: conversations kept in memory only

    @classmethod
    def from_table(cls, table: dict[str, Any], config_file: Path | None = None) -> DingTalkSettings:
        t = ChannelTable(PREFIX, table, config_file, KEYS)
        client_id = t.string("client_id", "").strip() or None
        secret = t.secret("client_secret")
        missing = [name for name, value in (("NGB_DINGTALK_CLIENT_ID", client_id),
                                            ("NGB_DINGTALK_CLIENT_SECRET", secret)) if not value]
        return t.fill(
            cls,
            client_id=client_id,
            client_secret=secret,
            robot_code=t.string("robot_code", "").strip() or client_id,
            chatbot_user_id=t.string("chatbot_user_id", "").strip() or None,
            gateway_url=t.url("gateway_url", GATEWAY_URL).rstrip("/"),
            api_base=t.url("api_base", API_BASE).rstrip("/"),
            oapi_base=t.url("oapi_base", OAPI_BASE).rstrip("/"),
            off_reason=f"no credentials: set {' and '.join(missing)} (or client_secret_file)" if missing else None,
        )


dingtalk_chat = partial(chat_name, PREFIX)  # platform id -> chat


def conversation_id_of(chat: str) -> str:
    return platform_id_of(chat, PREFIX, lambda raw: bool(raw) and not any(c.isspace() for c in raw),
                          "DingTalk chat: {chat} (expected dingtalk:<conversationId>)")
