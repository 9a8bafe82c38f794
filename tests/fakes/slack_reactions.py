"""The reactions of the fake Slack (tests/fakes/slack.py, a mixin of FakeSlack), as the Web API and
the Events API have them.

reactions.add / reactions.remove (``channel``, ``timestamp``, ``name``): the bot's reaction on a
message of the channel's history, kept on the message as Slack lists it (``reactions``: name, users,
count); ``message_not_found`` for a message that is not there, ``invalid_name`` for a name Slack
does not know (its standard names below, with an optional ``::skin-tone-2`` ... ``-6``),
``already_reacted`` when the bot has that reaction on the message already, ``no_reaction`` when it
has not (remove). Each successful call is in ``reaction_calls``.

Events: every reaction put on or taken off a message (the bot's own included, as Slack sends them
to an app subscribed to ``reaction_added`` / ``reaction_removed``) is a ``reaction_added`` /
``reaction_removed`` event with ``item: {"type": "message", "channel", "ts"}``, ``item_user``
and ``event_ts``. ``user_reaction(channel, ts, name, user=...)`` is a person reacting."""

from __future__ import annotations

from typing import Any

STANDARD_NAMES = frozenset("""
eyes +1 thumbsup -1 thumbsdown white_check_mark heart tada thinking_face cry fire joy pray wave warning x
grinning smiley smile grin blush wink heart_eyes sunglasses open_mouth sob rage sweat_smile partying_face
clap raised_hands ok_hand muscle handshake 100 rocket star sparkles bulb bug heavy_check_mark
ballot_box_with_check question exclamation heavy_exclamation_mark hourglass_flowing_sand see_no_evil shrug
pushpin slightly_smiling_face upside_down_face relieved wave memo zap star2 boom raising_hand point_up
point_right point_left white_circle red_circle large_green_circle no_entry checkered_flag trophy coffee
""".split())
TONES = tuple(f"skin-tone-{n}" for n in range(2, 7))


def known_name(name: str) -> bool:
    base, sep, tone = name.partition("::")
    return base in STANDARD_NAMES and (not sep or tone in TONES)


class FakeSlackReactions:
    bot_user: str
    history: dict[str, list[dict[str, Any]]]

    def next_ts(self) -> str:
        raise NotImplementedError

    def push_event(self, event: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _notify(self) -> None:
        raise NotImplementedError

    def init_reactions(self) -> None:
        self.reaction_calls: list[dict[str, Any]] = []  # method, channel, ts, name

    def _message(self, channel: str, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.history.get(channel, []) if m["ts"] == ts), None)

    def reactions_on(self, channel: str, ts: str, user: str | None = None) -> list[str]:
        """The names of the reactions on a message (of ``user``'s only, when given)."""
        message = self._message(channel, ts) or {}
        return [r["name"] for r in message.get("reactions", []) if user is None or user in r["users"]]

    def user_reaction(self, channel: str, ts: str, name: str, *, user: str = "U1001") -> dict[str, Any]:
        """A person puts ``name`` on the message: kept on it, and a reaction_added event (returned)."""
        message = self._message(channel, ts)
        assert message is not None, f"no message {ts} in {channel}"
        self._change(message, name, user, add=True)
        return self._event("reaction_added", channel, message, name, user)

    def _change(self, message: dict[str, Any], name: str, user: str, *, add: bool) -> None:
        reactions = message.setdefault("reactions", [])
        entry = next((r for r in reactions if r["name"] == name), None)
        if add:
            if entry is None:
                entry = {"name": name, "users": [], "count": 0}
                reactions.append(entry)
            if user not in entry["users"]:
                entry["users"].append(user)
        elif entry is not None and user in entry["users"]:
            entry["users"].remove(user)
            if not entry["users"]:
                reactions.remove(entry)
        if entry is not None:
            entry["count"] = len(entry["users"])
        if not reactions:
            message.pop("reactions")

    def _event(self, kind: str, channel: str, message: dict[str, Any], name: str, user: str) -> dict[str, Any]:
        event = {"type": kind, "user": user, "reaction": name, "item_user": message.get("user"),
                 "item": {"type": "message", "channel": channel, "ts": message["ts"]}, "event_ts": self.next_ts()}
        self.push_event(event)
        return event

    async def _m_reactions_add(self, params: dict[str, Any]) -> tuple[int, Any]:
        return self._react(params, add=True)

    async def _m_reactions_remove(self, params: dict[str, Any]) -> tuple[int, Any]:
        return self._react(params, add=False)

    def _react(self, params: dict[str, Any], *, add: bool) -> tuple[int, Any]:
        channel, ts, name = (str(params.get(k) or "") for k in ("channel", "timestamp", "name"))
        if not channel or not ts or not name:
            return 200, {"ok": False, "error": "no_item_specified"}
        message = self._message(channel, ts)
        if message is None:
            return 200, {"ok": False, "error": "message_not_found"}
        if not known_name(name):
            return 200, {"ok": False, "error": "invalid_name"}
        mine = name in self.reactions_on(channel, ts, self.bot_user)
        if add and mine:
            return 200, {"ok": False, "error": "already_reacted"}
        if not add and not mine:
            return 200, {"ok": False, "error": "no_reaction"}
        self._change(message, name, self.bot_user, add=add)
        self.reaction_calls.append({"method": "reactions.add" if add else "reactions.remove", "channel": channel,
                                    "ts": ts, "name": name})
        self._event("reaction_added" if add else "reaction_removed", channel, message, name, self.bot_user)
        self._notify()
        return 200, {"ok": True}
