""""typing..." in the chat while the agent works on an answer.

The actor says when a turn for a chat's messages starts (``batch_sent``) and when its first reply
is out (``first_reply``) or the turn ended without one (``result``, ``turn_failed``). While at least
one such turn is open for a chat, its channel's ``typing(chat)`` is called at once and then every
``interval`` seconds (platforms show the indicator for ~5-10 s per call), for at most
``max_duration`` (a turn that runs for an hour does not type for an hour).

Best effort and never in the way: a channel without ``typing`` is skipped, each call is bounded
by ``call_timeout``, a failure is a debug line, and nothing here can delay a reply. Scheduled task
turns do not type (nobody is waiting on them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import trio

from .channels.base import Typing, offers
from .records import channel_of

log = logging.getLogger(__name__)


class TypingIndicator:
    def __init__(
        self,
        channels: Mapping[str, Any],
        chat_of: Callable[[str], str | None],
        *,
        interval: float = 4.0,
        max_duration: float = 300.0,
        call_timeout: float = 5.0,
    ) -> None:
        self.channels = channels
        self.chat_of = chat_of  # group folder -> its chat
        self.interval = interval
        self.max_duration = max_duration
        self.call_timeout = call_timeout
        self._open: dict[tuple[str, int], tuple[str, float]] = {}  # (folder, batch) -> (chat, since)
        self._changed = trio.Event()
        self.calls = 0

    def event(self, folder: str, kind: str, data: Mapping[str, Any]) -> None:
        """Feed one actor event (the daemon passes every one; the rest are ignored)."""
        batch = data.get("batch")
        if not isinstance(batch, int):
            return
        if kind == "batch_sent" and "task" not in data:
            chat = self.chat_of(folder)
            if chat is not None and offers(self.channels.get(channel_of(chat)), Typing):
                self._open[(folder, batch)] = (chat, trio.current_time())
                self._changed.set()
        elif kind in ("first_reply", "result", "turn_failed"):
            self._open.pop((folder, batch), None)

    def typing_chats(self) -> set[str]:
        now = trio.current_time()
        for key, (_chat, since) in list(self._open.items()):
            if now - since > self.max_duration:
                del self._open[key]
        return {chat for chat, _since in self._open.values()}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            shown: dict[str, float] = {}  # chat -> when typing() was last called
            while True:
                now = trio.current_time()
                chats = self.typing_chats()
                for chat in chats:
                    if now - shown.get(chat, -1e9) >= self.interval:
                        shown[chat] = now
                        nursery.start_soon(self._type, chat)
                for chat in list(shown):
                    if chat not in chats:
                        del shown[chat]
                self._changed = trio.Event()
                with trio.move_on_after(self.interval if chats else 3600):
                    await self._changed.wait()

    async def _type(self, chat: str) -> None:
        channel = self.channels.get(channel_of(chat))
        if not offers(channel, Typing):
            return
        typing = channel.typing
        self.calls += 1
        try:
            with trio.move_on_after(self.call_timeout):
                await typing(chat)
        except Exception:  # noqa: BLE001 - cosmetic: never let it touch a turn
            log.debug("typing indicator for %s failed", chat, exc_info=True)
