"""Slack's catch-up: after every connect (the first after a restart too), each conversation with a
mark has its history, and the replies of the threads the bot is in, read since the mark (bounded
in pages and time) and stored; a conversation's mark waits while its catch-up is under way."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from .common import AuthError, Lru, log_caught_up
from .slack_settings import channel_id_of

if TYPE_CHECKING:
    from ..records import InboundMessage
    from .base import Submit
    from .common import NewestStored

log = logging.getLogger("ngb.channels.slack")

PAGE_SIZE = 200  # what a catch-up asks per page (Slack may answer fewer: 15 for some apps since 2025)
CATCH_UP_THREADS = 100  # threads per conversation whose replies one catch-up fetches, newest first


class SlackCatchUp:
    """The catch-up half of SlackChannel (a mixin: it shares the channel's web client and marks)."""

    settings: Any
    status: Any
    marks: NewestStored
    _held: dict[str, str | None]
    _bot_threads: Lru
    fetched: int
    catch_ups: int

    async def _api(self, method: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def to_inbound(self, event: dict[str, Any]) -> InboundMessage | None:
        raise NotImplementedError

    async def _submit(self, submit: Submit, inbound: InboundMessage, event: dict[str, Any], *,
                      catching_up: bool = False) -> None:
        raise NotImplementedError

    async def _fetch_missed(self, submit: Submit) -> None:
        """Messages posted while we were away (a reconnect, or a restart), in every conversation
        with a mark, most recently active first (bounded)."""
        deadline = trio.current_time() + self.settings.catch_up_time
        try:
            for chat, oldest in sorted(self.marks.items(), key=lambda item: float(item[1]), reverse=True):
                caught_up = False
                try:
                    if trio.current_time() >= deadline:
                        log.warning("slack: catch-up out of time (%.0fs): %s not caught up",
                                    self.settings.catch_up_time, chat)
                        continue
                    await self._catch_up(submit, channel_id_of(chat), oldest, deadline)
                    caught_up = True
                except AuthError:
                    raise
                except Exception as exc:  # noqa: BLE001 - best effort: Slack also redelivers unacked events
                    log.warning("slack: could not fetch missed messages of %s: %s", chat,
                                self.status.redact(str(exc)))
                finally:
                    await self._release(chat, caught_up)
        finally:
            for chat in list(self._held):  # cancelled (connection lost): the next catch-up starts at the mark
                await self._release(chat, False)
            self.catch_ups += 1

    def _hold(self, chats: Any) -> None:
        for chat in chats:
            self._held.setdefault(chat, None)

    async def _release(self, chat: str, caught_up: bool) -> None:
        """The catch-up of chat is over: when it got everything, what the live events stored
        meanwhile moves the mark; when not, the mark stays where the catch-up got to."""
        if chat not in self._held:
            return
        held = self._held.pop(chat)
        if caught_up and held is not None:
            with trio.CancelScope(shield=True):
                await self.marks.advance(chat, held)

    async def _catch_up(self, submit: Submit, channel: str, oldest: str, deadline: float) -> None:
        started = trio.current_time()
        found: dict[str, dict[str, Any]] = {}  # ts -> message
        history, pages, cut = await self._listing("conversations_history", deadline, channel=channel, oldest=oldest)
        for message in history:
            found[message["ts"]] = message
        # Thread replies are not in the history: the threads the bot is in, and those started meanwhile.
        roots = {m["ts"] for m in history if m.get("reply_count") and m.get("thread_ts") == m["ts"]}
        roots.update(key.partition(":")[2] for key in self._bot_threads if key.partition(":")[0] == channel)
        threads = sorted(roots, key=float, reverse=True)[:CATCH_UP_THREADS]
        for root in threads:
            if trio.current_time() >= deadline:
                cut = cut or f"out of time ({self.settings.catch_up_time:.0f}s) before thread {root}"
                break
            replies, more, thread_cut = await self._listing("conversations_replies", deadline, channel=channel,
                                                            ts=root, oldest=oldest)
            pages += more
            cut = cut or (f"thread {root}: {thread_cut}" if thread_cut else None)
            for message in replies:
                if float(message["ts"]) > float(oldest):  # every page starts with the parent
                    found.setdefault(message["ts"], message)
        fetched = 0
        for message in sorted(found.values(), key=lambda m: float(m["ts"])):
            event = {**message, "channel": channel, "channel_type": "im" if channel.startswith("D") else "channel"}
            inbound = self.to_inbound(event)
            if inbound is not None:
                fetched += 1
                await self._submit(submit, inbound, event, catching_up=True)
        self.fetched += fetched
        log_caught_up(log, f"slack: caught up {channel} since {oldest}: {fetched} message(s) in {pages} page(s), "
                      f"{len(threads)} thread(s) read, {trio.current_time() - started:.1f}s",
                      cut, "older messages of that listing")

    async def _listing(self, method: str, deadline: float, **kwargs: Any) -> tuple[list[dict[str, Any]], int, str | None]:
        """Every page of conversations.history/.replies after ``oldest`` (exclusive), within
        catch_up_pages pages and the deadline: (messages, pages read, why it stopped early or None)."""
        from slack_sdk.errors import SlackApiError

        messages: list[dict[str, Any]] = []
        cursor: str | None = None
        pages = 0
        while True:
            if pages >= self.settings.catch_up_pages:
                return messages, pages, f"page limit ({pages} pages)"
            answer = None
            with trio.move_on_at(deadline):
                try:
                    answer = await self._api(method, inclusive=False, limit=PAGE_SIZE, cursor=cursor, **kwargs)
                except SlackApiError as exc:
                    if error_code(exc) != "ratelimited":
                        raise
                    wait = float(header_of(exc, "retry-after") or 1)
                    if trio.current_time() + wait >= deadline:
                        return messages, pages, f"rate limited for {wait:.0f}s"
                    log.info("slack: %s rate limited; waiting %.0fs", method.replace("_", "."), wait)
                    await trio.sleep(wait)
                    continue
            if answer is None:
                return messages, pages, f"out of time ({self.settings.catch_up_time:.0f}s)"
            pages += 1
            messages.extend(answer.get("messages") or [])
            cursor = ((answer.get("response_metadata") or {}).get("next_cursor") or None) if answer.get("has_more") else None
            if not cursor:
                return messages, pages, None


def error_code(exc: Any) -> str:
    try:
        return str(exc.response.get("error") or "")
    except Exception:  # noqa: BLE001
        return ""


def header_of(exc: Any, name: str) -> str | None:
    try:
        headers = exc.response.headers or {}
        return next((v for k, v in headers.items() if k.lower() == name), None)
    except Exception:  # noqa: BLE001
        return None
