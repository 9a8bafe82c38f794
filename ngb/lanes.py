"""Lanes: what one container of a group serves (docs/conversations.md, threads).

A group in ``shared`` thread mode has one lane, the whole chat (``thread`` None): one agent
session, one cursor, as always. A ``per_thread`` group has one lane per thread of its chat (the
chat's own timeline is the thread ""), each with its own cursor and session (ngb/store/threads.py).
Its actor serves one lane per container: the thread whose triggering message has waited longest;
when another thread is waiting, the container ends as soon as it is idle and the next one starts on
that thread. Scheduled tasks run in the chat's own lane (shared: the only one; per_thread: "").
"""

from __future__ import annotations

from typing import Any

import attrs

from .records import Group, Message, ThreadMode
from .triggers import is_triggered


@attrs.frozen
class Lane:
    thread: str | None = None  # None: the whole chat (shared mode)

    @property
    def serves_tasks(self) -> bool:
        return self.thread in (None, "")

    def describe(self) -> str:
        return "the chat" if self.thread is None else (f"thread {self.thread}" if self.thread else "the chat's timeline")


WHOLE_CHAT = Lane()


def per_thread(group: Group, default: ThreadMode) -> bool:
    return (group.threads or default) is ThreadMode.PER_THREAD


class Lanes:
    """A group's lanes as the store keeps them (``store``: ngb.store.Store)."""

    def __init__(self, store: Any, folder: str) -> None:
        self.store = store
        self.folder = folder

    async def next(self, group: Group, trigger: str, default: ThreadMode) -> tuple[Lane, list[Message] | None]:
        """The lane to serve next and its unanswered messages when one of them triggers (else
        None: then the lane is the one scheduled tasks run in)."""
        if not per_thread(group, default):
            pending = await self.pending(WHOLE_CHAT, group.chat)
            return WHOLE_CHAT, pending if any(is_triggered(group, m, trigger) for m in pending) else None
        for thread in await self.store.waiting_threads(self.folder, group.chat):
            lane = Lane(thread)
            pending = await self.pending(lane, group.chat)
            if any(is_triggered(group, m, trigger) for m in pending):
                return lane, pending
        return Lane(""), None

    async def other_waiting(self, lane: Lane, group: Group, trigger: str) -> bool:
        """Another thread of a per_thread group has a triggering message waiting."""
        if lane.thread is None:
            return False
        for thread in await self.store.waiting_threads(self.folder, group.chat):
            if thread != lane.thread:
                pending = await self.pending(Lane(thread), group.chat)
                if any(is_triggered(group, m, trigger) for m in pending):
                    return True
        return False

    async def pending(self, lane: Lane, chat: str, after: int | None = None) -> list[Message]:
        return list(await self.store.pending_input(self.folder, chat, after=after, thread=lane.thread))

    async def cursor(self, lane: Lane) -> int:
        return int(await self.store.cursor(self.folder, lane.thread))

    async def session(self, lane: Lane) -> str | None:
        if lane.thread is None:
            return await self.store.session_id(self.folder)
        return await self.store.thread_session(self.folder, lane.thread)

    async def save_session(self, lane: Lane, session_id: str) -> None:
        if lane.thread is None:
            await self.store.set_session(self.folder, session_id)
        else:
            await self.store.set_thread_session(self.folder, lane.thread, session_id)
