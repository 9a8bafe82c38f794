"""Fan-out of stored messages (and the local chat's live previews) to live listeners (the chat
page's event stream, `ngb chat`)."""

from __future__ import annotations

import logging

import trio

from .records import ChatPreview, Message

ChatEvent = Message | ChatPreview

log = logging.getLogger(__name__)


class ChatEvents:
    """Publish each stored message to the subscribers of its chat. Slow subscribers are dropped
    (their stream ends; clients reconnect with ?after=ID and lose nothing)."""

    def __init__(self, buffer: int = 256) -> None:
        self._buffer = buffer
        self._subs: dict[str, set[trio.MemorySendChannel[ChatEvent]]] = {}

    def subscribe(self, chat: str) -> trio.MemoryReceiveChannel[ChatEvent]:
        send, receive = trio.open_memory_channel[ChatEvent](self._buffer)
        self._subs.setdefault(chat, set()).add(send)
        return receive

    def publish(self, message: ChatEvent) -> None:
        subs = self._subs.get(message.chat)
        if not subs:
            return
        for send in list(subs):
            try:
                send.send_nowait(message)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                subs.discard(send)
                send.close()
        if not subs:
            self._subs.pop(message.chat, None)
