"""Telegram's reactions (base.Reactions), mixed into TelegramChannel: the bot's own reaction on a
message (setMessageReaction), and people's reactions as context (``message_reaction`` updates).

Out: ``react`` sets the bot's reaction on a message (a bot has one reaction per message: a new one
replaces the old); ``unreact`` clears it (setMessageReaction with an empty list), unless the bot's
reaction there is known to be another emoji by now (the agent's 👍 put on while 👀 was on stays).
Telegram takes only its own set of reaction emoji: another one is 400 ``REACTION_INVALID``, a
ChannelError that is not retried (so is a message that is gone); an emoji with a variation selector
(❤️) is sent as Telegram spells it (❤). Flood control and network trouble are retryable.

In: Telegram sends ``message_reaction`` updates only when getUpdates / setWebhook ask for them
(``ALLOWED_UPDATES``), and in groups only to a bot that is an administrator there. Each emoji a
user newly put on a message (``new_reaction`` minus ``old_reaction``) becomes one InboundMessage:
its text the emoji, ``reaction_to`` the message's platform id (with its forum topic, when the
message was seen in this run: the update does not say the topic), ``platform_id``
``react:<that id>:<user id>:<emoji>``. Removed reactions, custom and paid ones are not reported;
a reaction never mentions the bot and is never direct (ngb/triggers.py: never a trigger)."""

from __future__ import annotations

import logging
from typing import Any

from ..aio_bridge import BridgeClosed
from ..records import InboundMessage
from .base import ChannelError
from .chats import chat_name
from .common import Lru
from .telegram_ids import split_platform_id, to_chat_id, to_platform_id
from .telegram_preview import seconds_of
from .telegram_settings import PREFIX

log = logging.getLogger("ngb.channels.telegram")


def telegram_emoji(emoji: str) -> str:
    """``emoji`` as Telegram's reaction list spells it (❤️ -> ❤), or as it is (Telegram decides)."""
    from telegram.constants import ReactionEmoji

    known = {e.value for e in ReactionEmoji}
    emoji = emoji.strip()
    if emoji in known:
        return emoji
    bare = emoji.replace("\ufe0f", "")
    return bare if bare in known else emoji


class TelegramReactions:
    """The reactions half of TelegramChannel (a mixin: it shares the channel's bot and bridge)."""

    bot: Any
    me: Any
    bridge: Any
    status: Any
    state: str

    def _init_reactions(self) -> None:
        self._topics = Lru(8192)  # "<chat id>:<message id>" -> forum topic (None: none) of messages seen
        self._bot_reactions = Lru(4096)  # platform id -> the emoji the bot put on it (as Telegram took it)

    def note_topic(self, chat_id: int, message_id: int, topic: int | None) -> None:
        """Remember a message's forum topic (inbound or sent): a reaction on it is placed there."""
        self._topics.put(f"{chat_id}:{message_id}", topic)

    def noted(self, chat_id: int, sent: Any) -> Any:
        """A message the bot sent: its topic remembered; returns it."""
        self.note_topic(chat_id, sent.message_id, sent.message_thread_id if sent.is_topic_message else None)
        return sent

    # -- out -------------------------------------------------------------------------------------------
    async def react(self, chat: str, platform_id: str, emoji: str) -> None:
        emoji = telegram_emoji(emoji)
        await self._set_reaction(chat, platform_id, emoji)
        self._bot_reactions.put(platform_id, emoji)

    async def unreact(self, chat: str, platform_id: str, emoji: str) -> None:
        current = self._bot_reactions.get(platform_id)
        if current is not None and current != telegram_emoji(emoji):
            return  # replaced by another reaction meanwhile: that one stays
        await self._set_reaction(chat, platform_id, None)
        self._bot_reactions.pop(platform_id, None)

    async def _set_reaction(self, chat: str, platform_id: str, emoji: str | None) -> None:
        """setMessageReaction: the bot's reaction on the message is ``emoji`` (None: none)."""
        from telegram import ReactionTypeEmoji
        from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError

        chat_id = to_chat_id(chat)
        message_id = split_platform_id(platform_id, chat_id)[0]
        if message_id is None:
            raise ChannelError(f"telegram: {platform_id} is not a message of {chat}", retryable=False)
        if self.bot is None or self.me is None:
            raise ChannelError(f"telegram is {self.state}", retryable=True)
        reaction = [ReactionTypeEmoji(emoji)] if emoji else []
        try:
            await self.bridge.call(self.bot.set_message_reaction, chat_id, message_id, reaction)
        except RetryAfter as exc:
            raise ChannelError(f"telegram: flood control, retry in {seconds_of(exc.retry_after):.0f}s",
                               retryable=True) from None
        except BadRequest as exc:
            hint = " (not one of Telegram's reaction emoji)" if "reaction_invalid" in str(exc).lower() else ""
            raise ChannelError(self.status.redact(f"telegram: {exc}{hint}"), retryable=False) from None
        except Forbidden as exc:
            raise ChannelError(self.status.redact(f"telegram: {exc}"), retryable=False) from None
        except (TelegramError, BridgeClosed) as exc:  # NetworkError, TimedOut, ...
            raise ChannelError(self.status.redact(f"telegram: {type(exc).__name__}: {exc}"), retryable=True) from None

    # -- in --------------------------------------------------------------------------------------------
    def reactions_in(self, update: Any) -> list[InboundMessage]:
        """A MessageReactionUpdated -> one InboundMessage per emoji newly put on the message."""
        added = [r.emoji for r in update.new_reaction
                 if r.type == "emoji" and r.emoji not in {o.emoji for o in update.old_reaction if o.type == "emoji"}]
        who = update.user
        if who is not None:
            if self.me is not None and who.id == self.me.id:
                return []  # the bot's own reaction
            sender, sender_id = who.full_name or who.username or str(who.id), str(who.id)
        elif update.actor_chat is not None:  # an anonymous admin, or a channel: the chat reacts
            sender, sender_id = update.actor_chat.title or str(update.actor_chat.id), str(update.actor_chat.id)
        else:
            return []
        chat_id = update.chat.id
        topic = self._topics.get(f"{chat_id}:{update.message_id}")
        target = to_platform_id(chat_id, update.message_id, topic)
        return [InboundMessage(
            chat=chat_name(PREFIX, chat_id),
            sender=sender,
            text=emoji,
            platform_id=f"react:{target}:{sender_id}:{emoji}",
            time=update.date,
            sender_id=sender_id,
            thread=str(topic) if topic is not None else "",
            reaction_to=target,
        ) for emoji in dict.fromkeys(added)]
