"""Reactions of the fake Feishu/Lark (tests/fakes/lark.py, a mixin of FakeLark), as the Open
Platform has them, and the message lookup.

``POST /open-apis/im/v1/messages/{id}/reactions`` (``{"reaction_type": {"emoji_type"}}``): the app's
reaction on a message; ``data`` is the reaction (``reaction_id``, ``operator`` {operator_id: the
app id, operator_type "app"}, ``action_time``, ``reaction_type``). 231001 for an emoji_type Lark does
not have (``EMOJI_TYPES``, case sensitive), 231003 for a message it does not know. ``DELETE
.../reactions/{reaction_id}`` takes one off (an error when there is no such reaction, or it is not the
app's: 231010 here, a code of the fake's own). ``GET .../reactions?reaction_type=`` lists them (``items``). Each reaction put on or taken
off is kept per message (``reactions_on(message id)``); each one put on is an
``im.message.reaction.created_v1`` event (the app's own too, as Lark sends them to an app subscribed
to the event). ``user_reaction(message id, emoji_type)`` is a person reacting.

``GET /open-apis/im/v1/messages/{id}``: the message (``items[0]``: message_id, chat_id, thread_id...)."""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

from .wsserver import HttpRequest

EMOJI_TYPES = frozenset("""
OK THUMBSUP THANKS MUSCLE FINGERHEART APPLAUSE FISTBUMP JIAYI DONE SMILE BLUSH LAUGH SMIRK LOL FACEPALM LOVE
WINK PROUD WITTY SMART SCOWL THINKING SOB CRY ERROR NOSEPICK HAUGHTY SLAP SPITBLOOD TOASTED GLANCE DULL
INNOCENTSMILE JOYFUL WOW TRICK YEAH ENOUGH TEARS EMBARRASSED KISS SMOOCH DROOL OBSESSED MONEY TEASE SHOWOFF
COMFORT CLAP PRAISE STRIVE XBLUSH SILENT WAVE WHAT FROWN SHY DIZZY LOOKDOWN CHUCKLE WAIL CRAZY WHIMPER HUG
BLUBBER WRONGED HUSKY SHHH SMUG ANGRY HAMMER SHOCKED TERROR PETRIFIED SKULL SWEAT SPEECHLESS SLEEP DROWSY
YAWN SICK PUKE BETRAYED HEADSET HEART HEARTBROKEN PARTY ROSE GIFT BEER CAKE POOP SALUTE SHAKE HIGHFIVE
Yes No Get LGTM Lemon EatingFood Hundred MinusOne ThumbsDown Fire Pin Coffee Alarm Trophy Music Typing
CheckMark CrossMark
""".split())


class FakeLarkReactions:
    app_id: str
    tenant_key: str
    verification_token: str
    messages: dict[str, dict[str, Any]]

    def push(self, event: dict[str, Any], *, chunks: int = 1) -> str:
        raise NotImplementedError

    def _notify(self) -> None:
        raise NotImplementedError

    def init_reactions(self) -> None:
        self.reactions: dict[str, list[dict[str, Any]]] = {}  # message id -> its reactions, in order
        self.reaction_calls: list[tuple[str, str, str]] = []  # (create|delete, message id, emoji_type)
        self._reaction_ids = itertools.count(1)

    def reactions_on(self, message_id: str, operator: str | None = None) -> list[str]:
        """The emoji_types on a message (only those of ``operator``, an open_id or the app id, when given)."""
        return [r["reaction_type"]["emoji_type"] for r in self.reactions.get(message_id, [])
                if operator is None or r["operator"]["operator_id"] == operator]

    def user_reaction(self, message_id: str, emoji_type: str, *, sender: str = "ou_alice") -> dict[str, Any]:
        """A person puts ``emoji_type`` on a message: kept, and the event pushed (returned)."""
        return self._add(message_id, emoji_type, sender, "user")

    def _add(self, message_id: str, emoji_type: str, operator: str, operator_type: str) -> dict[str, Any]:
        now = str(int(time.time() * 1000))
        reaction = {"reaction_id": f"rc_{next(self._reaction_ids):06d}{uuid.uuid4().hex[:6]}",
                    "operator": {"operator_id": operator, "operator_type": operator_type},
                    "action_time": now, "reaction_type": {"emoji_type": emoji_type}}
        self.reactions.setdefault(message_id, []).append(reaction)
        event: dict[str, Any] = {"message_id": message_id, "reaction_type": {"emoji_type": emoji_type},
                                 "operator_type": operator_type, "action_time": now}
        if operator_type == "user":
            event["user_id"] = {"union_id": "on_" + operator[3:], "user_id": operator[3:], "open_id": operator}
        else:
            event["app_id"] = operator
        self.push({"schema": "2.0",
                   "header": {"event_id": uuid.uuid4().hex, "token": self.verification_token,
                              "create_time": now, "event_type": "im.message.reaction.created_v1",
                              "tenant_key": self.tenant_key, "app_id": self.app_id},
                   "event": event})
        return reaction

    def reactions_http(self, request: HttpRequest, body: dict[str, Any]) -> tuple[int, Any] | None:
        """The reaction and message-lookup calls (None: not one of them)."""
        parts = request.path.split("/")  # "", open-apis, im, v1, messages, {id}, reactions, {reaction id}
        if parts[:5] != ["", "open-apis", "im", "v1", "messages"] or len(parts) < 6:
            return None
        message_id = parts[5]
        if len(parts) == 6 and request.method == "GET":
            message = self.messages.get(message_id)
            if message is None:
                return 400, {"code": 230001, "msg": "Your request contains an invalid request parameter, ext=invalid message_id."}
            item = {"message_id": message_id, "chat_id": message["chat_id"], "thread_id": message.get("thread_id") or "",
                    "msg_type": message.get("msg_type", "text"), "deleted": False, "updated": False}
            return 200, {"code": 0, "msg": "success", "data": {"items": [item]}}
        if len(parts) < 7 or parts[6] != "reactions":
            return None
        if message_id not in self.messages:
            return 400, {"code": 231003, "msg": "The message is not found, maybe not exist or deleted."}
        if len(parts) == 7 and request.method == "POST":
            emoji_type = str((body.get("reaction_type") or {}).get("emoji_type") or "")
            if emoji_type not in EMOJI_TYPES:
                return 400, {"code": 231001, "msg": "reaction type is invalid."}
            self.reaction_calls.append(("create", message_id, emoji_type))
            reaction = self._add(message_id, emoji_type, self.app_id, "app")
            self._notify()
            return 200, {"code": 0, "msg": "success", "data": reaction}
        if len(parts) == 7 and request.method == "GET":
            kind = request.query.get("reaction_type")
            items = [r for r in self.reactions.get(message_id, []) if kind in (None, r["reaction_type"]["emoji_type"])]
            return 200, {"code": 0, "msg": "success", "data": {"items": items, "has_more": False, "page_token": ""}}
        if len(parts) == 8 and request.method == "DELETE":
            on = self.reactions.get(message_id, [])
            reaction = next((r for r in on if r["reaction_id"] == parts[7]
                             and r["operator"]["operator_id"] == self.app_id), None)
            if reaction is None:
                return 400, {"code": 231010, "msg": "reaction not found."}
            on.remove(reaction)
            self.reaction_calls.append(("delete", message_id, reaction["reaction_type"]["emoji_type"]))
            self._notify()
            return 200, {"code": 0, "msg": "success", "data": reaction}
        return None
