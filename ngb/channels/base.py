"""The one small interface every channel implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from ..records import InboundMessage, Message

Submit = Callable[[InboundMessage], Awaitable[Message]]


class ChannelError(Exception):
    """A send failed; `retryable` says whether the outbox should try again later."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Channel(Protocol):
    name: str  # the prefix of its chats: "local", "telegram", ...
    state: str  # "connected" | "connecting" | "disconnected" | "stopped"

    async def run(self, submit: Submit, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and turn platform events into submit(InboundMessage) calls, until cancelled."""
        ...

    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        """Deliver text to chat; return the platform's message id (None when it has none).
        Raise ChannelError when it could not be delivered."""
        ...
