"""Channels: each turns a platform's events into InboundMessage records and sends replies.

`build_channels(config)` makes every channel the configuration enables. A platform channel is
built when it has a ``[channels.NAME]`` table or its token variable is set (config.py puts
``NGB_TELEGRAM_TOKEN`` into ``channels.telegram.token``); one whose token is missing stays in the
list with state ``off`` (one log line), so /status says why it is silent. A bad table raises
ConfigError (the daemon refuses to start with a clear line, like any other bad setting).
A channel named in ``_KEEPS_STATE`` gets the daemon's state dir in its settings (``state_dir``)
for the little it keeps across restarts (under ``<state_dir>/channels/``).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import attrs

from .base import Channel, ChannelMemory
from .local import LocalChannel

log = logging.getLogger(__name__)

# Channels built from a [channels.NAME] table (or their token variable): name, module, classes.
# Imported only when configured, so an unused SDK costs nothing at start.
_ASYNCIO_CHANNELS = (
    ("telegram", "telegram", "TelegramChannel", "TelegramSettings"),
    ("slack", "slack", "SlackChannel", "SlackSettings"),
    ("discord", "discord", "DiscordChannel", "DiscordSettings"),
    ("lark", "lark", "LarkChannel", "LarkSettings"),
    ("dingtalk", "dingtalk", "DingTalkChannel", "DingTalkSettings"),
)
# Those whose settings have a ``state_dir`` field, set to the daemon's (dingtalk: its conversations).
_KEEPS_STATE = frozenset({"dingtalk"})
# Those that keep their newest stored id per chat in the daemon's store (common.NewestStored).
_REMEMBERS = frozenset({"discord", "slack"})


def build_channels(config: Any, memory: ChannelMemory | None = None) -> dict[str, Channel]:
    """Every channel this configuration enables, by chat prefix. The local chat is always on.
    ``memory`` (the daemon's store) is given to the channels that keep catch-up marks in it."""
    channels: dict[str, Channel] = {"local": LocalChannel()}
    tables: dict[str, dict[str, Any]] = dict(getattr(config, "channels", {}) or {})
    trigger = getattr(config, "trigger", "")
    config_file = getattr(config, "config_file", None)
    state_dir = getattr(config, "state_dir", None)

    for name, module, channel_cls, settings_cls in _ASYNCIO_CHANNELS:
        table = tables.get(name)
        if table is None or not _enabled(table):
            continue
        mod = importlib.import_module(f".{module}", __name__)
        settings = getattr(mod, settings_cls).from_table(table, config_file)
        if name in _KEEPS_STATE and state_dir is not None:
            settings = attrs.evolve(settings, state_dir=Path(state_dir))
        if settings.off_reason:
            log.warning("channel %s: off (%s)", name, settings.off_reason)
        extra_kwargs: dict[str, Any] = {"memory": memory} if name in _REMEMBERS else {}
        channels[name] = getattr(mod, channel_cls)(settings, trigger=trigger, **extra_kwargs)

    # Channels that read their own section and environment (each logs one line when it is off).
    from .onebot import from_config as onebot_from_config
    from .wecom import from_config as wecom_from_config
    from .whatsapp import from_config as whatsapp_from_config

    for extra in (onebot_from_config(config, memory=memory), wecom_from_config(config, memory=memory),
                  whatsapp_from_config(config)):
        if extra is not None:
            channels[extra.name] = extra
    return channels


def _enabled(table: dict[str, Any]) -> bool:
    from ..config import parse_bool

    return parse_bool(table.get("enabled", True))
