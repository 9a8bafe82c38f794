"""QQ's catch-up: the mark that orders a chat's messages (time, then id: OneBot ids are not ordered),
and after every connect the history of each chat with a mark read back to it, paged, and stored,
where the implementation has the history actions (NapCat, go-cqhttp)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio

from .base import ChannelError
from .common import log_caught_up
from .onebot_actions import ActionFailed
from .onebot_messages import parse_chat

if TYPE_CHECKING:
    from .base import Submit
    from .common import NewestStored

log = logging.getLogger("ngb.channels.onebot")

# retcodes that will not change on a retry (bad request, unsupported action)
FATAL_RETCODES = {1400, 1404}
HISTORY_COUNT = 50  # messages asked per history page (go-cqhttp answers 20 whatever is asked)


# -- catch-up marks -------------------------------------------------------------------------------------
# Where a catch-up starts: per chat, the newest message stored, as "<time>:<message id>".
#
# Why not the message id alone: OneBot ids are not ordered. go-cqhttp's message_id is a CRC32 of the
# group and the message's sequence number, NapCat's an MD5-derived "short id"; only some
# implementations count up. ``message_seq`` is no way out either: go-cqhttp puts QQ's real
# per-chat sequence there, NapCat the same short id as message_id (its real sequence is
# ``real_seq``), and private chats of go-cqhttp carry none. What every implementation gives, live
# and in its history answers alike, is ``time``: QQ's server time of the message, in seconds. So
# the mark orders by time, with the id only to make the order total (NewestStored moves a mark
# forward only). Because one second holds several messages whose ids say nothing about their
# order, a catch-up takes every message of the mark's second and later (not strictly newer): the
# ones already stored are dropped by the store's key on the platform id.
def event_mark(event: Mapping[str, Any]) -> str | None:
    """A message event's catch-up mark, or None when it has no usable time or id."""
    stamp, message_id = event.get("time"), event.get("message_id")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or message_id is None:
        return None
    message_id = str(message_id)
    if not message_id.lstrip("-").isdigit():
        return None
    return f"{int(stamp)}:{message_id}"


def mark_order(mark: str) -> tuple[int, int]:
    """"1700000000:-12345" -> (1700000000, -12345); ValueError for anything else."""
    stamp, sep, message_id = mark.partition(":")
    if not sep:
        raise ValueError(f"not a QQ catch-up mark: {mark!r}")
    return int(stamp), int(message_id)


def event_time(event: Mapping[str, Any]) -> float:
    stamp = event.get("time")
    return float(stamp) if isinstance(stamp, int | float) and not isinstance(stamp, bool) else float("inf")


def _sequence(event: Mapping[str, Any]) -> int | None:
    """QQ's per-chat sequence number of a history message where the implementation gives it:
    NapCat's ``real_seq``; go-cqhttp's ``message_seq`` (NapCat's is its message id: no order)."""
    real = event.get("real_seq")
    if real is None and str(event.get("message_seq")) != str(event.get("message_id")):
        real = event.get("message_seq")
    real = str(real) if real is not None else ""
    return int(real) if real.isdigit() else None


def chat_order(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History messages (given in chat order, oldest first, as far as the answers tell) sorted
    oldest first: by time, within one second by QQ's sequence number when every message has one,
    else as given (ids are no order)."""
    if messages and all(_sequence(m) is not None for m in messages):
        return sorted(messages, key=lambda m: (event_time(m), _sequence(m)))
    return sorted(messages, key=event_time)  # stable: ties keep the answer's order


class OneBotCatchUp:
    """The catch-up half of OneBotChannel (a mixin: it shares the channel's connection and marks)."""

    settings: Any
    marks: NewestStored
    _history_unsupported: set[str]
    catch_ups: int

    async def _event(self, event: dict[str, Any], submit: Submit, *, fetched: bool = False) -> None:
        raise NotImplementedError

    async def _fetch_missed(self, conn: Any, submit: Submit) -> None:
        """After a connect (a reconnect, or the first one after a restart): what was said since the
        mark of every chat that has one, where the implementation has the history actions."""
        try:
            for chat, mark in sorted(self.marks.items(), key=lambda item: mark_order(item[1]), reverse=True):
                try:
                    kind, target = parse_chat(chat)
                except ChannelError:
                    log.warning("qq: ignoring the catch-up mark of %r (not a QQ chat)", chat)
                    continue
                action, key = (("get_group_msg_history", "group_id") if kind == "group"
                               else ("get_friend_msg_history", "user_id"))
                if action in self._history_unsupported:
                    continue
                started = trio.current_time()
                try:
                    found, pages, cut = await self._history(conn, action, {key: target}, mark_order(mark)[0])
                except ActionFailed as exc:
                    if exc.retcode in FATAL_RETCODES:
                        self._history_unsupported.add(action)
                        log.warning("qq: the OneBot implementation has no %s (%s); messages sent while the daemon "
                                    "was away are not fetched", action, exc)
                    else:
                        log.warning("qq: could not fetch missed messages of %s: %s", chat, exc)
                    continue
                except (TimeoutError, trio.TooSlowError) as exc:
                    log.warning("qq: could not fetch missed messages of %s: %s", chat, type(exc).__name__)
                    continue
                for event in found:
                    event.setdefault("post_type", "message")
                    event.setdefault("message_type", kind)
                    if kind == "group":
                        event.setdefault("group_id", target)
                    await self._event(event, submit, fetched=True)
                log_caught_up(log, f"qq: caught up {chat} since {mark}: {len(found)} message(s) in {pages} page(s), "
                              f"{trio.current_time() - started:.1f}s", cut)
        finally:
            self.catch_ups += 1

    async def _history(self, conn: Any, action: str, peer: dict[str, Any],
                       since: int) -> tuple[list[dict[str, Any]], int, str | None]:
        """The history of one chat back to second ``since`` (inclusive), oldest first, paging back
        with ``message_seq`` (NapCat: a message id; go-cqhttp: QQ's sequence number; each gives its
        own in the ``message_seq`` of the messages it answers). Returns (messages, pages, why it
        stopped early or None). ActionFailed from the first page is raised; from a later one, the
        pages so far are kept."""
        found: list[dict[str, Any]] = []  # in chat order: each page is older than the ones before
        seen: set[str] = set()
        params: dict[str, Any] = {**peer, "count": HISTORY_COUNT}
        pages = 0

        def since_mark() -> list[dict[str, Any]]:
            return chat_order([m for m in found if event_time(m) >= since])

        while True:
            if pages >= self.settings.catch_up_pages:
                return since_mark(), pages, f"page limit ({pages} pages)"
            try:
                data = await conn.call(action, params, self.settings.api_timeout) or {}
            except ActionFailed as exc:
                if pages == 0:
                    raise
                return since_mark(), pages, f"page {pages + 1}: {exc}"
            pages += 1
            messages = data.get("messages") if isinstance(data, dict) else None
            new = [m for m in messages or [] if isinstance(m, dict) and m.get("message_id") is not None
                   and str(m["message_id"]) not in seen]
            seen.update(str(m["message_id"]) for m in new)
            found[:0] = new
            if not new:  # the start of the history, or an implementation that does not page
                return since_mark(), pages, None
            oldest = chat_order(new)[0]
            if event_time(oldest) < since:
                return since_mark(), pages, None  # reached the mark
            start = oldest.get("message_seq", oldest.get("message_id"))
            params = {**peer, "message_seq": start, "count": HISTORY_COUNT}
