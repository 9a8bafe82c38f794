"""Telegram's chats and messages as the channel names them: a chat is ``telegram:<chat id>`` (groups
are negative), a message ``<chat id>:<message id>`` (message ids are per chat), or ``<chat
id>/<topic id>:<message id>`` for a message in a forum topic."""

from __future__ import annotations

from .chats import is_int, platform_id_of
from .telegram_settings import PREFIX


def to_chat_id(chat: str) -> int:
    return int(platform_id_of(chat, PREFIX, is_int, "Telegram chat: {chat} (expected telegram:<numeric id>)"))


def to_platform_id(chat_id: int, message_id: int, topic: int | None) -> str:
    """``<chat id>:<message id>``, or ``<chat id>/<topic id>:<message id>`` in a forum topic."""
    return f"{chat_id}:{message_id}" if topic is None else f"{chat_id}/{topic}:{message_id}"


def split_platform_id(platform_id: str, chat_id: int) -> tuple[int | None, int | None]:
    """A platform id of this chat -> (message id, forum topic id); None for what is not there."""
    head, _, mid = platform_id.rpartition(":")
    chat_part, _, topic = head.partition("/")
    if chat_part and chat_part != str(chat_id):
        return None, None
    return (int(mid) if mid.isdigit() else None), (int(topic) if topic.isdigit() else None)
