"""Discord's catch-up: after every READY/RESUMED (the first after a restart too), each chat that
has a mark has its history read since it, oldest first, in pages, and stored; the mark of a chat
waits while its catch-up is under way, so live messages stored meanwhile never skip a gap. Messages
of a thread placed under its parent's chat (discord_threads.py) and reactions move no mark: the
parent's history does not hold them, and only what a RESUME replays of them is had after an outage."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from .base import ChannelError
from .common import backoff
from .discord_settings import channel_id_of

if TYPE_CHECKING:
    from ..records import InboundMessage
    from .base import Submit
    from .common import InboundGate, NewestStored

log = logging.getLogger("ngb.channels.discord")

PAGE = 100  # messages per history request (Discord's maximum)


class _Unreadable(Exception):
    """A chat's history could not be read: for good (no access, no such channel) or for now."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class DiscordCatchUp:
    """The catch-up half of DiscordChannel (a mixin: it shares the channel's client and marks)."""

    settings: Any
    client: Any
    bridge: Any
    status: Any
    marks: NewestStored
    _gate: InboundGate
    _held: dict[str, int | None]
    fetched: int
    catch_ups: int

    async def _parse(self, message: Any) -> InboundMessage | None:
        raise NotImplementedError

    async def _catch_up_all(self, submit: Submit) -> None:
        """Every held chat (those with a mark when the session began), most recently active first;
        a chat whose history could not be read for now is tried again with backoff while the
        connection lasts (and anyway at the next reconnect or restart: it stays held)."""
        chats = sorted(self._held, key=lambda chat: int(self.marks.get(chat) or 0), reverse=True)
        attempt = 0
        while chats:
            again = []
            for chat in chats:
                outcome = await self._catch_up(submit, chat)
                if outcome in ("done", "gone"):  # (gone: there is nothing to catch up; live ones move it)
                    held = self._held.pop(chat, None)
                    if held is not None:
                        await self._advance(chat, str(held))  # what the live messages stored meanwhile
                elif outcome == "retry":
                    again.append(chat)
            chats = again
            if chats:
                attempt += 1
                await trio.sleep(backoff(attempt, base=self.settings.reconnect_base, cap=self.settings.reconnect_cap))
        self.catch_ups += 1

    async def _catch_up(self, submit: Submit, chat: str) -> str:
        """Read chat's history since its mark, oldest first, and store it: "done" (a short page came),
        "cut" (``catch_up_pages`` pages read; the rest at the next catch-up), "retry" (a transient
        error) or "gone" (no such chat, or no access to it: logged)."""
        import discord

        mark = self.marks.get(chat)
        try:
            channel_id = channel_id_of(chat)
        except ChannelError:
            return "gone"
        if mark is None:
            return "done"
        client = self.client

        async def messageable() -> Any:  # the real channel: its guild tells a guild message from a DM
            return client.get_channel(channel_id) or await client.fetch_channel(channel_id)

        async def page(channel: Any, after: int) -> list[Any]:
            return [m async for m in channel.history(limit=PAGE, after=discord.Object(id=after), oldest_first=True)]

        async def read(fn: Any, *args: Any) -> Any:
            try:
                return await self.bridge.call(fn, *args)
            except (discord.Forbidden, discord.NotFound, discord.InvalidData) as exc:
                raise _Unreadable(f"{type(exc).__name__}: {exc}", permanent=True) from None
            except Exception as exc:  # noqa: BLE001 - network, 5xx, the bridge: try again later
                raise _Unreadable(f"{type(exc).__name__}: {exc}", permanent=False) from None

        after, fetched, pages = int(mark), 0, 0
        try:
            channel = await read(messageable)
            while pages < self.settings.catch_up_pages:
                messages = await read(page, channel, after)
                pages += 1
                for message in messages:  # (a store failure raises out of here: the session ends)
                    after = max(after, int(message.id))
                    inbound = await self._parse(message)
                    if inbound is not None:
                        fetched += 1
                        self.fetched += 1
                        await self._submit(submit, inbound, catching_up=True)
                if len(messages) < PAGE:
                    if fetched:
                        log.info("discord: caught up %s: %d message(s) since %s in %d page(s)", chat, fetched, mark, pages)
                    return "done"
        except _Unreadable as exc:
            why = self.status.redact(str(exc))
            if exc.permanent:
                log.warning("discord: cannot read the history of %s (%s); not caught up", chat, why)
                return "gone"
            log.warning("discord: could not read the history of %s (%s); trying again", chat, why)
            return "retry"
        log.warning("discord: catch-up of %s stopped after %d pages (%d messages since %s; catch_up_pages); "
                    "the rest is read at the next reconnect or restart", chat, pages, fetched, mark)
        return "cut"

    async def _submit(self, submit: Submit, inbound: InboundMessage, *, catching_up: bool = False) -> None:
        if inbound.reaction_to is not None:  # a reaction: never a trigger, never a mark
            await self._gate.submit(submit, inbound, triggered=False)
            return
        await self._gate.submit(submit, inbound)  # raises when the store failed: the mark stays
        if not inbound.platform_id.isdigit():
            return  # in a thread under its parent's chat: the parent's history does not hold it
        chat, newest = inbound.chat, int(inbound.platform_id)
        if chat in self._held and not catching_up:  # its catch-up is under way (or failed): the mark waits
            held = self._held[chat]
            self._held[chat] = newest if held is None else max(held, newest)
            return
        await self._advance(chat, inbound.platform_id)

    async def _advance(self, chat: str, mark: str) -> None:
        """Keep chat's mark (the message is stored): the write is not given up halfway when the
        connection drops or the daemon stops right then (bounded: the store answers in ms)."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + 5
            await self.marks.advance(chat, mark)
