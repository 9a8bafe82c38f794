"""Stored messages of any chat (not only local ones) and full-text search.

    GET /api/messages?chat=<chat>&before=<id>&limit=<n>     a page, oldest first; `next_before`
                                                           pages further back (null: no more)
    GET /api/search?q=<words>&chat=<chat>&limit=&offset=   FTS5 search, newest first, with total
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart_trio import QuartTrio

from . import queries
from .common import MAX_PAGE, ApiError, int_arg, message_json_full, str_arg

if TYPE_CHECKING:
    from .backend import WebBackend


def register(app: QuartTrio, daemon: WebBackend) -> None:
    @app.get("/api/messages")
    async def messages() -> Any:
        chat = str_arg("chat", max_len=300, required=True)
        assert chat is not None
        before = int_arg("before", 0, lo=0) or None
        limit = int_arg("limit", 50, lo=1, hi=MAX_PAGE)
        if not await queries.chat_known(daemon.store, chat):
            raise ApiError(404, f"no chat {chat}")
        page, more = await queries.message_page(daemon.store, chat, before=before, limit=limit)
        return {
            "chat": chat,
            "messages": [message_json_full(m) for m in page],
            "next_before": page[0].id if more and page else None,
        }

    @app.get("/api/search")
    async def search() -> Any:
        q = str_arg("q", max_len=200, required=True)
        assert q is not None
        if not queries.fts_phrase(q):  # blanks only (NUL counts as one): nothing to match
            raise ApiError(400, "'q' must contain a word")
        chat = str_arg("chat", max_len=300)
        limit = int_arg("limit", 20, lo=1, hi=MAX_PAGE)
        offset = int_arg("offset", 0, lo=0, hi=100_000)
        found, total, exact = await queries.search(daemon.store, q, chat=chat, limit=limit, offset=offset)
        more = offset + len(found) < total if exact else len(found) == limit
        return {
            "query": q,
            "chat": chat,
            "total": total,
            "total_exact": exact,
            "offset": offset,
            "messages": [message_json_full(m) for m in found],
            "next_offset": offset + len(found) if more else None,
        }
