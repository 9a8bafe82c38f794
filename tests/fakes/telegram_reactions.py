"""The reactions of the fake Telegram Bot API (tests/fakes/telegram.py), as the Bot API has them.

setMessageReaction (``chat_id``, ``message_id``, ``reaction``: a JSON list of ReactionType): the
bot's reaction on a message, recorded in ``bot_reactions[(chat_id, message_id)]`` (a list of
emoji; a bot has at most one: more is 400 ``REACTIONS_TOO_MANY``; an empty list takes it off) and
each call in ``reaction_calls``; an emoji outside Telegram's fixed set is 400 ``REACTION_INVALID``;
an unknown (or deleted) message is 400 ``MESSAGE_ID_INVALID``.

``user_reaction(chat_id, message_id, ["👍"], user_id=..., first_name=...)``: a user's reactions on
a message become what they are now; a ``message_reaction`` update is queued with ``old_reaction``
(the user's reactions before) and ``new_reaction``. As Telegram does, such updates reach the bot
only when its ``allowed_updates`` (getUpdates, or setWebhook for the webhook) names
``message_reaction``: Telegram's default (none given yet, or an empty list) leaves them out, and
so does a list without it; those updates are dropped (counted in ``withheld``)."""

from __future__ import annotations

import time
from typing import Any

# Telegram's reaction emoji (ReactionTypeEmoji.emoji must be one of these)
REACTION_EMOJI = frozenset(
    "👍 👎 ❤ 🔥 🥰 👏 😁 🤔 🤯 😱 🤬 😢 🎉 🤩 🤮 💩 🙏 👌 🕊 🤡 🥱 🥴 😍 🐳 ❤️\u200d🔥 🌚 🌭 💯 🤣 ⚡ 🍌 🏆 💔 🤨 "
    "😐 🍓 🍾 💋 🖕 😈 😴 😭 🤓 👻 👨\u200d💻 👀 🎃 🙈 😇 😨 🤝 ✍ 🤗 🫡 🎅 🎄 ☃ 💅 🤪 🗿 🆒 💘 🙉 🦄 😘 💊 "
    "🙊 😎 👾 🤷\u200d♂️ 🤷 🤷\u200d♀️ 😡".split()
)
# update types Telegram sends only when allowed_updates names them
OPT_IN = frozenset({"message_reaction", "message_reaction_count", "chat_member"})


def _bad(description: str) -> tuple[int, dict[str, Any]]:
    return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: {description}"}


def kind_of(update: dict[str, Any]) -> str:
    return next(k for k in update if k != "update_id")


def wanted(update: dict[str, Any], allowed: list[str] | None) -> bool:
    """Whether Telegram hands this update to a bot that asked for ``allowed`` update types."""
    kind = kind_of(update)
    return kind in allowed if allowed else kind not in OPT_IN


class FakeReactions:
    """A mixin of FakeTelegram: it shares the fake's messages, updates and change notification."""

    messages: dict[tuple[int, int], dict[str, Any]]
    updates: list[dict[str, Any]]

    def push_update(self, update: dict[str, Any]) -> int:
        raise NotImplementedError

    def _notify(self) -> None:
        raise NotImplementedError

    def _init_reactions(self) -> None:
        self.bot_reactions: dict[tuple[int, int], list[str]] = {}  # the bot's reaction on a message
        self.reaction_calls: list[dict[str, Any]] = []  # each successful setMessageReaction
        self.allowed_updates: list[str] | None = None  # what getUpdates last asked for (None: never)
        self.withheld = 0  # updates dropped: their type was not asked for
        self._user_reactions: dict[tuple[int, int, int], list[str]] = {}

    def user_reaction(self, chat_id: int, message_id: int, emoji: list[str], *, user_id: int = 1001,
                      first_name: str = "Alice", username: str | None = "alice") -> int:
        """The user's reactions on the message become ``emoji``: a message_reaction update (its id)."""
        old = self._user_reactions.get((chat_id, message_id, user_id), [])
        self._user_reactions[(chat_id, message_id, user_id)] = list(emoji)
        target = self.messages.get((chat_id, message_id))
        chat = dict(target["chat"]) if target else {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        return self.push_update({"message_reaction": {
            "chat": chat, "message_id": message_id, "user": user, "date": int(time.time()),
            "old_reaction": [{"type": "emoji", "emoji": e} for e in old],
            "new_reaction": [{"type": "emoji", "emoji": e} for e in emoji],
        }})

    def drop_unwanted(self, allowed: list[str] | None) -> None:
        """Leave out the queued updates a bot asking for ``allowed`` does not get."""
        kept = [u for u in self.updates if wanted(u, allowed)]
        self.withheld += len(self.updates) - len(kept)
        self.updates[:] = kept

    async def _m_setMessageReaction(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        if (chat_id, message_id) not in self.messages:
            return _bad("MESSAGE_ID_INVALID")
        reaction = params.get("reaction") or []
        if not isinstance(reaction, list):
            return _bad("can't parse reaction types")
        if len(reaction) > 1:
            return _bad("REACTIONS_TOO_MANY")
        emoji = []
        for r in reaction:
            if not isinstance(r, dict) or r.get("type") != "emoji" or r.get("emoji") not in REACTION_EMOJI:
                return _bad("REACTION_INVALID")
            emoji.append(str(r["emoji"]))
        if emoji:
            self.bot_reactions[(chat_id, message_id)] = emoji
        else:
            self.bot_reactions.pop((chat_id, message_id), None)
        self.reaction_calls.append({"chat_id": chat_id, "message_id": message_id, "emoji": emoji})
        self._notify()
        return 200, {"ok": True, "result": True}
