"""What the actor sees of live previews (ngb/previews.py, which sits above the channels and so
above the actor): a protocol, and the sink that shows nothing."""

from __future__ import annotations

from typing import Protocol


class PreviewSink(Protocol):
    def can_preview(self, chat: str) -> bool:
        """The chat's channel can show a reply growing."""
        ...

    def show(self, folder: str, chat: str, reply_to: str | None, text: str) -> None:
        """The reply the group's agent is writing, so far; never blocks."""
        ...

    async def finish(self, folder: str) -> str | None:
        """The reply is done: the platform id of its preview message (None: there is none)."""
        ...

    def drop(self, folder: str) -> None:
        """The turn ended without that reply: stop previewing it."""
        ...


class NoPreviews:
    def can_preview(self, chat: str) -> bool:
        return False

    def show(self, folder: str, chat: str, reply_to: str | None, text: str) -> None:
        return None

    async def finish(self, folder: str) -> str | None:
        return None

    def drop(self, folder: str) -> None:
        return None
