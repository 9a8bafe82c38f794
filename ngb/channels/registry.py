"""One registry of the platform channels: name -> how its settings are read from the configuration,
and which class runs it. Every channel is built the same way, ``cls(settings, trigger=...,
memory=...)``; one whose settings say why it is off (no token...) is built all the same and stays
in the list with state ``off``, so /status and ``ngb doctor`` show why it is silent. A channel the
configuration does not ask for (no table, no token variable, ``enabled = false``) is not built.

Modules are imported only for the channels configured, so an unused SDK costs nothing at start.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from .base import Channel, ChannelMemory

log = logging.getLogger("ngb.channels")


@attrs.frozen
class Registered:
    name: str  # the key of /status's channels (the table is [channels.NAME])
    settings: str  # "module:function": config -> settings, or None when not asked for
    channels: dict[str, str]  # the settings' class name -> "module:ChannelClass"

    def read(self, config: Any) -> Any | None:
        return _load(self.settings)(config)

    def channel_class(self, settings: Any) -> Callable[..., Channel]:
        return _load(self.channels[type(settings).__name__])


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(f".{module}", __package__), attr)


REGISTRY: tuple[Registered, ...] = (
    Registered("telegram", "registry:telegram_settings", {"TelegramSettings": "telegram:TelegramChannel"}),
    Registered("slack", "registry:slack_settings", {"SlackSettings": "slack:SlackChannel"}),
    Registered("discord", "registry:discord_settings", {"DiscordSettings": "discord:DiscordChannel"}),
    Registered("lark", "registry:lark_settings", {"LarkSettings": "lark:LarkChannel"}),
    Registered("dingtalk", "registry:dingtalk_settings", {"DingTalkSettings": "dingtalk:DingTalkChannel"}),
    Registered("qq", "onebot_settings:settings_from_config", {"OneBotSettings": "onebot:OneBotChannel"}),
    Registered("wecom", "wecom_settings:settings_from_config",
               {"WeComSettings": "wecom:WeComChannel", "WeComCallbackSettings": "wecom_callback:WeComCallbackChannel"}),
    Registered("matrix", "registry:matrix_settings", {"MatrixSettings": "matrix:MatrixChannel"}),
    Registered("whatsapp", "whatsapp_settings:settings_from_config", {"WhatsAppSettings": "whatsapp:WhatsAppChannel"}),
    Registered("email", "registry:email_settings", {"EmailSettings": "email:EmailChannel"}),
)


def build_platform_channels(config: Any, memory: ChannelMemory | None = None,
                            media: Any = None) -> dict[str, Channel]:
    """Every platform channel this configuration asks for, by name (off ones included); ``media``
    (ngb.media.intake.MediaIntake) takes the files their messages carry."""
    channels: dict[str, Channel] = {}
    trigger = getattr(config, "trigger", "")
    for entry in REGISTRY:
        settings = entry.read(config)
        if settings is None:
            continue
        off_reason = getattr(settings, "off_reason", None)
        if off_reason:
            log.warning("channel %s: off (%s)", entry.name, off_reason)
        channels[entry.name] = entry.channel_class(settings)(settings, trigger=trigger, memory=memory, media=media)
    return channels


# -- the channels read from their [channels.NAME] table alone (config.py puts their token variables
# into the table) ---------------------------------------------------------------------------------
def _table(config: Any, name: str) -> dict[str, Any] | None:
    """The channel's table, or None when there is none or it says ``enabled = false``."""
    from ..config import parse_bool

    table = (getattr(config, "channels", {}) or {}).get(name)
    if table is None or not parse_bool(table.get("enabled", True)):
        return None
    return dict(table)


def _from_table(name: str, module: str, cls: str) -> Callable[[Any], Any | None]:
    def read(config: Any) -> Any | None:
        table = _table(config, name)
        if table is None:
            return None
        return _load(f"{module}:{cls}").from_table(table, getattr(config, "config_file", None))

    return read


telegram_settings = _from_table("telegram", "telegram_settings", "TelegramSettings")
slack_settings = _from_table("slack", "slack_settings", "SlackSettings")
discord_settings = _from_table("discord", "discord_settings", "DiscordSettings")
lark_settings = _from_table("lark", "lark_settings", "LarkSettings")
_matrix_table = _from_table("matrix", "matrix_settings", "MatrixSettings")
email_settings = _from_table("email", "email_settings", "EmailSettings")
_dingtalk_table = _from_table("dingtalk", "dingtalk_settings", "DingTalkSettings")


def matrix_settings(config: Any) -> Any | None:
    """Matrix keeps its end-to-end encryption store under the daemon's state dir."""
    settings = _matrix_table(config)
    state_dir = getattr(config, "state_dir", None)
    if settings is not None and state_dir is not None:
        settings = attrs.evolve(settings, state_dir=Path(state_dir))
    return settings


def dingtalk_settings(config: Any) -> Any | None:
    """DingTalk keeps its conversations under the daemon's state dir."""
    settings = _dingtalk_table(config)
    state_dir = getattr(config, "state_dir", None)
    if settings is not None and state_dir is not None:
        settings = attrs.evolve(settings, state_dir=Path(state_dir))
    return settings
