"""Chat names: every chat is ``<channel>:<the platform's id>`` ("telegram:-100123", "slack:C0123ABC");
a channel takes its platform id back out of one here, refusing (for good) a chat that is not its."""

from __future__ import annotations

from collections.abc import Callable

from .base import ChannelError


def chat_name(prefix: str, platform_id: object) -> str:
    """The chat of a platform id: ``chat_name("slack", "C0123ABC") == "slack:C0123ABC"``."""
    return f"{prefix}:{platform_id}"


def platform_id_of(chat: str, prefix: str, valid: Callable[[str], object], refusal: str) -> str:
    """The id after ``prefix:`` when ``valid`` accepts it; else ChannelError (not retryable):
    "not a {refusal}"."""
    got, _, raw = chat.partition(":")
    if got != prefix or not valid(raw):
        raise ChannelError(f"not a {refusal.format(chat=repr(chat))}", retryable=False)
    return raw


def is_int(raw: str) -> bool:
    try:
        int(raw)
    except ValueError:
        return False
    return True
