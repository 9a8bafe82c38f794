"""Discord's threads (docs/conversations.md): which chat and thread a message is in, and where
whatever answers it goes.

A message in a thread (a public or private thread channel, a forum post) is in the chat of the
thread itself, ``discord:<thread id>``, when that chat is registered as a group (as before: its own
chat, ``thread`` ""); otherwise it is in the chat of the thread's parent channel,
``discord:<parent id>``, with ``thread`` the thread's id, so a thread started in a registered
channel reaches that channel's group. Registrations are asked of the daemon's store
(``ChannelMemory.chat_registered``) for each such message, so registering or removing a thread takes
effect at once.

A message placed under its parent's chat has the platform id ``<thread id>:<message id>``: whatever
answers it (the reply and its later parts, files, the live preview and its edits, typing, the
bot's reactions) is addressed by that id, and so goes into the thread, after a restart too. A
message in a channel's own timeline, a DM or a thread registered on its own keeps its bare
snowflake. The bot's own messages in such a thread get the same form (``platform_id_in``).

A thread's parent comes from discord.py's cached ``Thread`` (GUILD_CREATE's active threads,
THREAD_CREATE...), else from GET /channels/{id}; what was learned is kept in a bounded map."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs

from .common import Lru
from .discord_settings import channel_id_of, discord_chat

if TYPE_CHECKING:
    from ..records import InboundMessage
    from .base import ChannelMemory
    from .common import LastTrigger

log = logging.getLogger("ngb.channels.discord")


def locate(chat: str, platform_id: str | None) -> tuple[int, int | None]:
    """The Discord channel a platform id of ``chat`` is in (its thread, or the chat's channel), and
    the message's snowflake (None when ``platform_id`` is none or not a message's)."""
    home = channel_id_of(chat)
    if not platform_id:
        return home, None
    thread, sep, message = platform_id.partition(":")
    if sep and thread.isdigit() and message.isdigit():
        return int(thread), int(message)
    return home, int(platform_id) if platform_id.isdigit() else None


def platform_id_in(chat: str, channel_id: int, message_id: int | str) -> str:
    """The platform id of message ``message_id`` of Discord channel ``channel_id``, as ``chat`` names
    it: bare in the chat's own channel, ``<thread id>:<message id>`` in a thread under it."""
    return str(message_id) if channel_id == channel_id_of(chat) else f"{channel_id}:{message_id}"


class DiscordThreads:
    """The threads half of DiscordChannel (a mixin: it shares the channel's client and memory)."""

    client: Any
    bridge: Any
    memory: ChannelMemory | None
    _last_trigger: LastTrigger

    def _init_threads(self) -> None:
        self._parents = Lru(8192)  # channel id -> its parent channel's id ("" when it is no thread)

    async def placed(self, channel: Any, channel_id: int, guild_id: int | None) -> tuple[str, str]:
        """(chat, thread) of what is posted in Discord channel ``channel_id`` (``channel``: discord.py's
        object for it, when it has one)."""
        own = discord_chat(channel_id)
        parent = await self._parent_of(channel, channel_id, guild_id)
        if not parent or await self._registered(own):
            return own, ""
        return discord_chat(int(parent)), str(channel_id)

    async def in_thread(self, inbound: InboundMessage, message: Any) -> InboundMessage:
        """``inbound`` (as ``to_inbound`` made it, in its own channel's chat) placed by the rule above."""
        channel = message.channel
        guild_id = getattr(message.guild, "id", None) or getattr(channel, "guild_id", None)
        chat, thread = await self.placed(channel, channel.id, guild_id)
        if not thread:
            return inbound
        ref = message.reference
        reply_to = inbound.reply_to
        if reply_to and ref is not None and ref.channel_id == channel.id:  # a reply within the thread
            reply_to = f"{thread}:{reply_to}"
        return attrs.evolve(inbound, chat=chat, thread=thread, platform_id=f"{thread}:{inbound.platform_id}",
                            reply_to=reply_to)

    async def typing(self, chat: str) -> None:
        """Show "typing..." for ~10 seconds (best effort), in the thread of the chat's newest trigger."""
        if self.client is None or self.client.user is None:
            return
        try:
            channel_id = locate(chat, self._last_trigger.get(chat))[0]

            async def trigger() -> None:
                await self.client.http.send_typing(channel_id)

            await self.bridge.call(trigger)
        except Exception:  # noqa: BLE001 - cosmetic
            log.debug("discord: typing indicator failed", exc_info=True)

    async def _registered(self, chat: str) -> bool:
        ask = getattr(self.memory, "chat_registered", None)
        return bool(await ask(chat)) if ask is not None else False

    async def _parent_of(self, channel: Any, channel_id: int, guild_id: int | None) -> str:
        import discord

        known = self._parents.get(str(channel_id))
        if known is not None:
            return str(known)
        if isinstance(channel, discord.Thread):
            parent = str(channel.parent_id)
        elif guild_id is None or not (channel is None or isinstance(channel, discord.PartialMessageable)):
            parent = ""  # a DM, or a guild channel discord.py knows (and so knows is no thread)
        else:  # a channel discord.py has not cached: ask Discord what it is
            try:
                fetched = await self.bridge.call(self.client.fetch_channel, channel_id)
            except Exception as exc:  # noqa: BLE001 - then it counts as no thread, for now (not remembered)
                log.info("discord: could not look up channel %s (%s); taken as no thread", channel_id, exc)
                return ""
            parent = str(fetched.parent_id) if isinstance(fetched, discord.Thread) else ""
        self._parents.put(str(channel_id), parent)
        return parent
