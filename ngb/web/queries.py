"""The web API's read views, by their old names: each is a Store method now (ngb/store/views.py),
run as one transaction on the store's thread."""

from __future__ import annotations

from typing import Any

from ..records import Message, TaskRun
from ..store import Store
from ..store.views import SEARCH_COUNT_CAP, fts_phrase

__all__ = [
    "SEARCH_COUNT_CAP",
    "chat_known",
    "fts_phrase",
    "message_page",
    "outbox_counts",
    "pending_summary",
    "search",
    "task_run_counts",
    "task_runs_page",
]


async def message_page(
    store: Store, chat: str, *, before: int | None, limit: int
) -> tuple[list[Message], bool]:
    return await store.message_page(chat, before=before, limit=limit)


async def search(
    store: Store, query: str, *, chat: str | None, limit: int, offset: int
) -> tuple[list[Message], int, bool]:
    return await store.search_page(query, chat=chat, limit=limit, offset=offset)


async def chat_known(store: Store, chat: str) -> bool:
    return await store.chat_known(chat)


async def pending_summary(store: Store, chats: dict[str, str]) -> dict[str, dict[str, Any]]:
    return await store.pending_summary(chats)


async def outbox_counts(store: Store) -> dict[str, int]:
    return await store.outbox_counts()


async def task_runs_page(
    store: Store, task_id: str, *, before: int | None, limit: int
) -> tuple[list[TaskRun], bool]:
    return await store.task_runs_page(task_id, before=before, limit=limit)


async def task_run_counts(store: Store) -> dict[str, dict[str, int]]:
    return await store.task_run_counts()
