"""Feishu / Lark's reactions (base.Reactions), mixed into LarkChannel: the bot's own reactions
(im.v1.message.reaction create / delete) and people's as context (``im.message.reaction.created_v1``
events).

Lark names its reactions (``emoji_type``: ``THUMBSUP``, ``DONE``, ``Fire``..., case sensitive; the
list: open.feishu.cn, im-v1/message-reaction/emojis-introduce): a Unicode emoji is mapped by the table
below (👀 is ``GLANCE``, Lark having no eyes); one not in it is a ChannelError that is not retried
("no Lark emoji_type for ..."), as are Lark's refusals (231001 an emoji_type it does not know, 231002
no permission on the message, 231003 / 230011 a message not found or withdrawn, the FATAL_SEND codes
of lark_send: no bot in the chat, missing scopes ``im:message.reactions:write_only``...). Rate
limits and network trouble are retryable (a reaction is best effort: never waited out).

Taking a reaction off needs the ``reaction_id`` Lark gave when it was put on: remembered (a bounded
map); one not remembered (a restart in between) is looked up in the message's reactions of that
emoji_type (im.v1.message.reaction list), the bot's being the one whose operator is this app. No
such reaction: nothing to take off (success).

In: the event (subscribe the app to "Message reaction added", im.message.reaction.created_v1, and
grant ``im:message.reactions:read``) names only the message: its chat and thread are those seen in
this run (messages received, the bot's sends), else asked of im.v1.message get. A reaction by a
user (``operator_type`` "user"; an app's, the bot's own included, is left out) becomes one
InboundMessage: its text the emoji (an emoji_type not in the table as ``:TYPE:``), ``reaction_to``
the message id, ``thread`` the message's thread, ``platform_id``
``react:<message id>:<open_id>:<emoji>``. It goes through the inbound gate like a message, never
mentions the bot and is never direct. Removals (im.message.reaction.deleted_v1) are not reported."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from ..records import InboundMessage
from .base import ChannelError
from .lark_sdk import ApiError
from .lark_send import RATE_LIMITED, LarkSending
from .lark_settings import lark_chat

if TYPE_CHECKING:
    from .base import Submit
    from .common import InboundGate, Lru

log = logging.getLogger("ngb.channels.lark")

# (emoji, Lark's emoji_type, other emoji_types shown as the same emoji)
EMOJI: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("👀", "GLANCE", ()), ("👍", "THUMBSUP", ()), ("👎", "ThumbsDown", ()), ("✅", "DONE", ()),
    ("✔️", "CheckMark", ()), ("❌", "CrossMark", ()), ("❤️", "HEART", ()), ("💔", "HEARTBROKEN", ()),
    ("🥰", "LOVE", ()), ("🎉", "PARTY", ()), ("🤔", "THINKING", ()), ("😢", "CRY", ()), ("😭", "SOB", ()),
    ("🔥", "Fire", ()), ("👏", "APPLAUSE", ("CLAP",)), ("🙏", "THANKS", ()), ("😂", "LOL", ()),
    ("😄", "LAUGH", ()), ("😀", "SMILE", ()), ("😊", "BLUSH", ()), ("😉", "WINK", ()), ("👌", "OK", ()),
    ("💪", "MUSCLE", ()), ("👋", "WAVE", ()), ("🤝", "SHAKE", ()), ("🫡", "SALUTE", ()), ("🤦", "FACEPALM", ()),
    ("😮", "WOW", ()), ("😱", "SHOCKED", ()), ("😠", "ANGRY", ()), ("😴", "SLEEP", ()), ("😓", "SWEAT", ()),
    ("🤮", "PUKE", ()), ("💩", "POOP", ()), ("💀", "SKULL", ()), ("🤗", "HUG", ()), ("🤫", "SHHH", ()),
    ("😘", "KISS", ()), ("🌹", "ROSE", ()), ("🎁", "GIFT", ()), ("🍺", "BEER", ()), ("☕", "Coffee", ()),
    ("🏆", "Trophy", ()), ("📌", "Pin", ()), ("💯", "Hundred", ()), ("👊", "FISTBUMP", ()),
)
_TYPES = {emoji.replace("\ufe0f", ""): kind for emoji, kind, _ in EMOJI}
_EMOJI = {kind: emoji for emoji, first, others in EMOJI for kind in (first, *others)}
REFUSED = {231001, 231002, 231003, 230011}  # bad emoji_type, no permission, no such message, withdrawn


def lark_emoji_type(emoji: str) -> str | None:
    """A Unicode emoji -> Lark's emoji_type for it, or None."""
    return _TYPES.get(emoji.strip().replace("\ufe0f", ""))


def lark_emoji(emoji_type: str) -> str:
    """Lark's emoji_type -> the emoji (``:TYPE:`` for one not in the table)."""
    return _EMOJI.get(emoji_type, f":{emoji_type}:")


class LarkReactions(LarkSending):
    """The reactions half of LarkChannel (a mixin: it shares the channel's client, caches and gate)."""

    bot_open_id: str | None
    duplicates: int
    _seen: Lru
    _chats: Lru  # message id -> its chat id
    _reactions: Lru  # "<message id>:<emoji_type>" -> the reaction_id of the bot's reaction
    _gate: InboundGate

    if TYPE_CHECKING:  # lark_events' (declared only: a method here would shadow it in LarkChannel)
        async def _name(self, open_id: str) -> str: ...

    def note_message(self, message_id: str, chat_id: str | None, thread_id: str | None) -> None:
        """Remember where a message is (received or sent): a reaction on it is placed there."""
        if chat_id:
            self._chats.put(message_id, chat_id)
        self._threads.put(message_id, thread_id or "")

    # -- out -------------------------------------------------------------------------------------------
    async def react(self, chat: str, platform_id: str, emoji: str) -> None:
        from lark_oapi.api.im.v1 import CreateMessageReactionRequest, CreateMessageReactionRequestBody, Emoji

        kind = self._emoji_type(emoji)
        body = CreateMessageReactionRequestBody.builder().reaction_type(Emoji.builder().emoji_type(kind).build()).build()
        request = CreateMessageReactionRequest.builder().message_id(platform_id).request_body(body).build()
        response = await self._reaction_call("create", self.client.im.v1.message_reaction.acreate, request)
        self._reactions.put(f"{platform_id}:{kind}", str(response.data.reaction_id))

    async def unreact(self, chat: str, platform_id: str, emoji: str) -> None:
        from lark_oapi.api.im.v1 import DeleteMessageReactionRequest

        kind = self._emoji_type(emoji)
        key = f"{platform_id}:{kind}"
        reaction_id = self._reactions.get(key) or await self._own_reaction(platform_id, kind)
        if reaction_id is None:
            return  # the bot has no such reaction there
        request = DeleteMessageReactionRequest.builder().message_id(platform_id).reaction_id(str(reaction_id)).build()
        await self._reaction_call("delete", self.client.im.v1.message_reaction.adelete, request)
        self._reactions.pop(key, None)

    def _emoji_type(self, emoji: str) -> str:
        kind = lark_emoji_type(emoji)
        if kind is None:
            raise ChannelError(f"lark: no Lark emoji_type for {emoji} (not among the emoji the channel maps)",
                               retryable=False)
        if self.client is None:
            raise ChannelError(f"lark is {self.state}", retryable=True)
        return kind

    async def _own_reaction(self, message_id: str, kind: str) -> str | None:
        """The reaction_id of the bot's ``kind`` reaction on the message, as Lark lists them."""
        from lark_oapi.api.im.v1 import ListMessageReactionRequest

        request = ListMessageReactionRequest.builder().message_id(message_id).reaction_type(kind).page_size(50).build()
        response = await self._reaction_call("list", self.client.im.v1.message_reaction.alist, request)
        for item in getattr(response.data, "items", None) or []:
            operator = item.operator
            if operator is not None and operator.operator_type == "app" and operator.operator_id == self.settings.app_id:
                return str(item.reaction_id)
        return None

    async def _reaction_call(self, what: str, call: Any, request: Any) -> Any:
        try:
            return await self._api(f"im.v1.message.reaction.{what}", call, request)
        except ApiError as exc:
            if exc.code in REFUSED:
                raise ChannelError(self.status.redact(f"lark: {exc}"), retryable=False) from None
            if exc.code in RATE_LIMITED or exc.status == 429:
                raise ChannelError(f"lark: rate limited ({exc})", retryable=True) from None
            raise self._api_error(exc) from None
        except Exception as exc:  # noqa: BLE001 - mapped to ChannelError, or raised as it is
            error = self._send_error(exc)
            if error is None:
                raise
            raise error from None

    # -- in --------------------------------------------------------------------------------------------
    async def take_reaction(self, submit: Submit, event: dict[str, Any]) -> None:
        """An im.message.reaction.created_v1 event's ``event`` -> the router (stored when this
        returns), or nothing."""
        user = (event.get("user_id") or {}).get("open_id")
        message_id, kind = event.get("message_id"), (event.get("reaction_type") or {}).get("emoji_type")
        if event.get("operator_type") != "user" or not (user and message_id and kind) or user == self.bot_open_id:
            return  # an app's (the bot's own included), or not a reaction we can read
        emoji = lark_emoji(str(kind))
        platform_id = f"react:{message_id}:{user}:{emoji}"
        if platform_id in self._seen:
            self.duplicates += 1
            return
        where = await self._where(str(message_id))
        if where is None:
            return
        try:
            when = datetime.fromtimestamp(int(event.get("action_time") or 0) / 1000, UTC)
        except (TypeError, ValueError):
            when = datetime.now(UTC)
        inbound = InboundMessage(
            chat=lark_chat(where[0]),
            sender=await self._name(user) if self.settings.resolve_names else user,
            text=emoji,
            platform_id=platform_id,
            time=when if when.year > 1970 else datetime.now(UTC),
            sender_id=user,
            thread=where[1],
            reaction_to=str(message_id),
        )
        await self._gate.submit(submit, inbound, triggered=False)
        self._seen.put(platform_id, True)

    async def _where(self, message_id: str) -> tuple[str, str] | None:
        """(chat id, thread id) of a message: as seen in this run, else as im.v1.message get says."""
        from lark_oapi.api.im.v1 import GetMessageRequest

        chat_id = self._chats.get(message_id)
        if chat_id is None:
            try:
                with trio.fail_after(3):  # the event is acknowledged after this
                    response = await self._api("im.v1.message.get", self.client.im.v1.message.aget,
                                               GetMessageRequest.builder().message_id(message_id).build())
                item = (getattr(response.data, "items", None) or [None])[0]
                self.note_message(message_id, getattr(item, "chat_id", None), getattr(item, "thread_id", None))
                chat_id = self._chats.get(message_id)
            except Exception as exc:  # noqa: BLE001 - the reaction is left out (context only)
                log.warning("lark: a reaction on %s left out: its chat is unknown (%s)", message_id,
                            self.status.redact(str(exc)))
                return None
            if chat_id is None:
                return None
        return str(chat_id), str(self._threads.get(message_id) or "")

