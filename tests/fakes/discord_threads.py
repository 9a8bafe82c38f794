"""Threads and reactions of the fake Discord (tests/fakes/discord.py, a mixin of FakeDiscord), as
Discord has them.

Threads: ``thread(parent)`` opens a public thread (type 11; ``forum=True``: a forum post, type 11
under a forum channel, as Discord has them too) in a guild channel: a channel of its own, with its
``parent_id``, listed in GUILD_CREATE's ``threads`` and announced by THREAD_CREATE to the sessions
connected then (``announce=False``: not announced, so a client knows it only by GET
/channels/{id}). Messages are posted in it like in any channel (``user_message(thread_id, ...)``).

Reactions: PUT / DELETE /channels/{id}/messages/{id}/reactions/{emoji}/@me put the bot's reaction on
a message and take it off (204 both; a DELETE of one it has not is 204 too); 404 Unknown Message
(10008) for a message not in that channel, 400 Unknown Emoji (10014) for an emoji not in
``KNOWN_EMOJI``. Each change is kept per message (``reactions_on(channel, message id)``) and
dispatched as MESSAGE_REACTION_ADD / MESSAGE_REACTION_REMOVE (with ``member`` in a guild) to the
sessions that asked for the Guild Message Reactions (1 << 10) or Direct Message Reactions (1 << 13)
intent; the bot's own reactions are dispatched too, as Discord does. ``user_reaction(channel,
message id, emoji)`` is a person reacting. GET /users/{id} answers a user."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

INTENT_GUILD_REACTIONS = 1 << 10
INTENT_DM_REACTIONS = 1 << 13
UNKNOWN_MESSAGE, UNKNOWN_EMOJI = 10008, 10014
KNOWN_EMOJI = frozenset("""
👀 👍 👎 ✅ ❤️ ❤ 🎉 🤔 😢 😭 🔥 😂 🙏 👋 ⚠️ ❌ 😀 😃 😄 😁 😊 😉 😍 😎 😮 😡 😅 🥳 👏 🙌 👌 💪 🤝 💯 🚀 ⭐ ✨
💡 🐛 ✔️ ☑️ ❓ ❗ ⏳ 🙈 🤷 📌 🫡 🤦 👊 🌹 🎁 ☕ 🏆 🍺 💩 💔 😴 🤮 😱 😘 🥰 🤗 🤫 💀 😓
""".split())


class FakeDiscordThreads:
    guild_id: int
    guild_channels: list[int]
    bot: dict[str, Any]
    messages: dict[int, list[dict[str, Any]]]

    def dispatch(self, event: str, data: dict[str, Any], *, intent: int = 0) -> None:
        raise NotImplementedError

    def next_id(self) -> int:
        raise NotImplementedError

    def user(self, user_id: int = 930000000000000001, name: str = "alice") -> dict[str, Any]:
        raise NotImplementedError

    def init_threads(self) -> None:
        self.threads: dict[int, dict[str, Any]] = {}  # thread id -> its channel object
        self.reactions: dict[tuple[int, str], dict[str, list[str]]] = {}  # (channel, message) -> emoji -> user ids
        self.reaction_calls: list[tuple[str, int, str, str]] = []  # (PUT|DELETE, channel, message id, emoji)

    def in_guild(self, channel_id: int) -> bool:
        return channel_id in self.guild_channels or channel_id in self.threads

    def thread(self, parent_id: int, name: str = "a topic", *, announce: bool = True, private: bool = False) -> int:
        """A person opens a thread in guild channel ``parent_id``; its id."""
        thread_id = self.next_id()
        now = datetime.now(UTC).isoformat()
        self.threads[thread_id] = {
            "id": str(thread_id), "guild_id": str(self.guild_id), "parent_id": str(parent_id),
            "owner_id": self.user()["id"], "name": name, "type": 12 if private else 11, "last_message_id": None,
            "message_count": 0, "member_count": 1, "rate_limit_per_user": 0, "flags": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "archive_timestamp": now,
                                "locked": False, "create_timestamp": now},
        }
        if announce:
            self.dispatch("THREAD_CREATE", {**self.threads[thread_id], "newly_created": True})
        return thread_id

    # -- reactions ---------------------------------------------------------------------------------
    def reactions_on(self, channel_id: int, message_id: int | str, user: int | str | None = None) -> list[str]:
        """The emoji on a message (of ``user``'s reactions only, when given)."""
        on = self.reactions.get((channel_id, str(message_id)), {})
        return [e for e, users in on.items() if users and (user is None or str(user) in users)]

    def user_reaction(self, channel_id: int, message_id: int | str, emoji: str, *,
                      author: dict[str, Any] | None = None) -> None:
        """A person puts ``emoji`` on a message: kept, and MESSAGE_REACTION_ADD dispatched."""
        self._react(channel_id, str(message_id), emoji, author or self.user(), add=True)

    def _react(self, channel_id: int, message_id: str, emoji: str, user: dict[str, Any], *, add: bool) -> None:
        message = next(m for m in self.messages.get(channel_id, []) if m["id"] == message_id)
        users = self.reactions.setdefault((channel_id, message_id), {}).setdefault(emoji, [])
        if add and user["id"] not in users:
            users.append(user["id"])
        elif not add and user["id"] in users:
            users.remove(user["id"])
        else:
            return  # no change: no event
        data: dict[str, Any] = {"user_id": user["id"], "channel_id": str(channel_id), "message_id": message_id,
                                "emoji": {"id": None, "name": emoji}, "burst": False, "type": 0}
        if add:
            data.update(message_author_id=message["author"]["id"], burst_colors=[])
        guild = self.in_guild(channel_id)
        if guild:
            data["guild_id"] = str(self.guild_id)
            if add:
                data["member"] = {"user": user, "roles": [], "joined_at": message["timestamp"], "deaf": False,
                                  "mute": False, "flags": 0}
        self.dispatch("MESSAGE_REACTION_ADD" if add else "MESSAGE_REACTION_REMOVE", data,
                      intent=INTENT_GUILD_REACTIONS if guild else INTENT_DM_REACTIONS)

    def reaction_http(self, method: str, channel_id: int, message_id: str, emoji: str) -> tuple[int, Any]:
        """PUT / DELETE of the bot's own reaction (``emoji`` URL-decoded)."""
        if not any(m["id"] == message_id for m in self.messages.get(channel_id, [])):
            return 404, {"message": "Unknown Message", "code": UNKNOWN_MESSAGE}
        if emoji not in KNOWN_EMOJI:
            return 400, {"message": "Unknown Emoji", "code": UNKNOWN_EMOJI}
        self.reaction_calls.append((method, channel_id, message_id, emoji))
        self._react(channel_id, message_id, emoji, self.bot, add=method == "PUT")
        return 204, b""
