"""The one small interface every channel implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from ..records import InboundMessage, Message

Submit = Callable[[InboundMessage], Awaitable[Message]]


class ChannelMemory(Protocol):
    """What a channel may keep in, and ask of, the daemon's store (ngb.store.Store is one)."""

    async def channel_marks(self, channel: str) -> dict[str, str]:
        """chat -> the newest platform message id the channel stored there."""
        ...

    async def set_channel_mark(self, channel: str, chat: str, mark: str) -> None: ...

    async def sent_by_bot(self, channel: str, platform_id: str) -> bool:
        """Whether this platform message is one the bot sent (stored when the outbox delivered it)."""
        ...


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
