"""Channels: each turns a platform's events into InboundMessage records and sends replies."""

from __future__ import annotations

from typing import Any

from .base import Channel
from .local import LocalChannel


def build_channels(config: Any) -> dict[str, Channel]:
    """Every channel this configuration enables, by chat prefix. The local chat is always on."""
    channels: dict[str, Channel] = {"local": LocalChannel()}
    return channels
