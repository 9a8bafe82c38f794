"""Channels: each turns a platform's events into InboundMessage records and sends replies.

`build_channels(config)` makes every channel the configuration asks for: the local chat, always,
and the platform channels of the registry (registry.py: name -> settings + class), all built the
same way. A platform channel is asked for when it has a ``[channels.NAME]`` table or its token
variable is set (config.py puts ``NGB_TELEGRAM_TOKEN`` into ``channels.telegram.token``); one
whose token is missing stays in the list with state ``off`` (one log line), so /status says why it
is silent. A bad table raises ConfigError (the daemon refuses to start with a clear line, like
any other bad setting). The skeleton every platform channel shares is skeleton.py; the
capabilities a channel may declare (typing, callbacks...) are the protocols of base.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..records import ChatPreview
from .base import Channel, ChannelMemory
from .local import LocalChannel
from .registry import REGISTRY, build_platform_channels

__all__ = ["REGISTRY", "build_channels"]


def build_channels(config: Any, memory: ChannelMemory | None = None, media: Any = None,
                   local_previews: Callable[[ChatPreview], None] | None = None) -> dict[str, Channel]:
    """Every channel this configuration enables, by chat prefix. The local chat is always on.
    ``memory`` (the daemon's store) is given to every channel: those that keep catch-up marks or
    look up the bot's own messages use it; ``media`` (ngb.media.intake.MediaIntake) takes their files;
    ``local_previews`` publishes the local chat's live previews (ngb/events.py)."""
    channels: dict[str, Channel] = {"local": LocalChannel(local_previews)}
    channels.update(build_platform_channels(config, memory, media))
    return channels
