"""Discord's reactions (base.Reactions), mixed into DiscordChannel: the bot's own reactions, and
people's as context.

Out: ``react`` / ``unreact`` put the bot's own reaction on a message and take it off (PUT / DELETE
/channels/{id}/messages/{id}/reactions/{emoji}/@me, through discord.py's ``PartialMessage``), in the
thread the message is in (its platform id says which: discord_threads.py). Discord takes Unicode
emoji as they are; one it does not know is 400 Unknown Emoji (10014), a ChannelError that is not
retried, as are a message that is gone (404) and a missing permission (403: Add Reactions, Read
Message History). Rate limits (discord.py waits them out first), 5xx and network trouble are
retryable. Taking off a reaction the bot does not have is success (Discord answers 204).

In: MESSAGE_REACTION_ADD (``on_raw_reaction_add``; the non-privileged Guild Message Reactions and
Direct Message Reactions intents) from someone other than the bot, or another bot, becomes one
InboundMessage: its text the emoji (a custom emoji as ``:name:``), ``reaction_to`` the message's
platform id (``<thread>:<message>`` in a thread under its parent's chat), ``thread`` as for
messages, ``platform_id`` ``react:<that id>:<user id>:<emoji>``, the sender the member's display
name (in a DM: the name seen on their messages, else GET /users/{id}). It goes through the
inbound gate like a message, in gateway order with them (the same inbox), but never mentions the
bot, is never direct and never moves a catch-up mark (reactions made while the daemon was away
are not caught up). Removals (MESSAGE_REACTION_REMOVE) are not reported."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..aio_bridge import BridgeClosed
from ..records import InboundMessage
from .base import ChannelError
from .common import Lru
from .discord_threads import locate

log = logging.getLogger("ngb.channels.discord")

UNKNOWN_EMOJI = 10014  # Discord's error code for an emoji it does not know


class DiscordReactions:
    """The reactions half of DiscordChannel (a mixin: it shares the channel's client, bridge and
    threads)."""

    client: Any
    bridge: Any
    status: Any
    state: str

    if TYPE_CHECKING:  # discord_threads' (declared only: a method here would shadow it in DiscordChannel)
        async def placed(self, channel: Any, channel_id: int, guild_id: int | None) -> tuple[str, str]: ...

    def _init_reactions(self) -> None:
        self._names = Lru(4096)  # user id -> the display name last seen on their messages

    # -- out -------------------------------------------------------------------------------------------
    async def react(self, chat: str, platform_id: str, emoji: str) -> None:
        await self._put_reaction(chat, platform_id, emoji, add=True)

    async def unreact(self, chat: str, platform_id: str, emoji: str) -> None:
        await self._put_reaction(chat, platform_id, emoji, add=False)

    async def _put_reaction(self, chat: str, platform_id: str, emoji: str, *, add: bool) -> None:
        import aiohttp
        import discord

        channel_id, message_id = locate(chat, platform_id)
        emoji = emoji.strip()
        if message_id is None or not emoji:
            raise ChannelError(f"discord: {platform_id} is not a message of {chat}" if message_id is None
                               else "discord: no emoji", retryable=False)
        client = self.client
        if client is None or client.user is None:
            raise ChannelError(f"discord is {self.state}", retryable=True)

        async def call() -> None:
            message = client.get_partial_messageable(channel_id).get_partial_message(message_id)
            if add:
                await message.add_reaction(emoji)
            else:
                await message.remove_reaction(emoji, client.user)

        try:
            await self.bridge.call(call)
        except discord.HTTPException as exc:  # NotFound, Forbidden, DiscordServerError included
            retryable = exc.status == 429 or exc.status >= 500
            hint = " (an emoji Discord does not have)" if exc.code == UNKNOWN_EMOJI else ""
            raise ChannelError(self.status.redact(f"discord: reaction {emoji}: HTTP {exc.status}: {exc.text}{hint}"),
                               retryable=retryable) from None
        except (TimeoutError, BridgeClosed, OSError, aiohttp.ClientError) as exc:
            raise ChannelError(self.status.redact(f"discord: {type(exc).__name__}: {exc}"), retryable=True) from None

    # -- in --------------------------------------------------------------------------------------------
    async def reaction_in(self, payload: Any) -> InboundMessage | None:
        """A RawReactionActionEvent (REACTION_ADD) -> InboundMessage, or None (the bot's, a bot's, or
        one that could not be read: logged; it must not stall the messages after it)."""
        try:
            return await self._reaction_in(payload)
        except Exception:  # noqa: BLE001
            log.exception("discord: could not read a reaction on message %s; skipped", payload.message_id)
            return None

    async def _reaction_in(self, payload: Any) -> InboundMessage | None:
        me = self.client.user if self.client is not None else None
        member = payload.member
        if (me is not None and payload.user_id == me.id) or (member is not None and member.bot):
            return None
        channel = await self.bridge.call_sync(self.client.get_channel, payload.channel_id)
        chat, thread = await self.placed(channel, payload.channel_id, payload.guild_id)
        target = f"{thread}:{payload.message_id}" if thread else str(payload.message_id)
        emoji = payload.emoji.name if payload.emoji.is_unicode_emoji() else f":{payload.emoji.name}:"
        user = str(payload.user_id)
        sender = member.display_name if member is not None else await self._user_name(payload.user_id)
        return InboundMessage(
            chat=chat,
            sender=sender,
            text=emoji,
            platform_id=f"react:{target}:{user}:{emoji}",
            time=datetime.now(UTC),
            sender_id=user,
            thread=thread,
            reaction_to=target,
        )

    async def _user_name(self, user_id: int) -> str:
        name = self._names.get(str(user_id))
        if name is None:
            try:
                user = await self.bridge.call(self.client.fetch_user, user_id)
                name = user.display_name or user.name
            except Exception as exc:  # noqa: BLE001 - the id will do
                log.debug("discord: could not look up user %s: %s", user_id, exc)
                return str(user_id)
            self._names.put(str(user_id), name)
        return str(name)
