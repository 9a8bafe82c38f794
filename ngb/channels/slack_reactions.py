"""Slack's reactions (base.Reactions), mixed into SlackChannel: the bot's own reactions
(reactions.add / reactions.remove) and people's as context (``reaction_added`` events).

Slack names its emoji (``eyes``, ``+1``): a Unicode emoji is mapped by a table of common ones (skin
tones as ``::skin-tone-N``); one not in it is a ChannelError that is not retried ("no Slack name
for ..."), as are Slack's refusals (``invalid_name``, ``message_not_found``, a missing scope...).
``already_reacted`` (add) and ``no_reaction`` (remove) are success: the message already is as
asked. A rate limit or network trouble is retryable (a reaction is best effort: never waited out).

In: a ``reaction_added`` event on a message (``item.type == "message"``) from someone other than
the bot becomes one InboundMessage: its text the emoji (from Slack's name through the same table;
a name not in it as ``:name:``, e.g. a workspace's custom emoji), ``reaction_to`` the message's
platform id ``<conversation>:<ts>``, ``thread`` the thread that message is in, ``platform_id``
``react:<conversation>:<ts>:<user>:<emoji>``. It goes through the inbound gate like a message,
never mentions the bot, is never direct and never moves the catch-up mark (reactions made while
the daemon was away are not caught up). ``reaction_removed`` is not reported."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..aio_bridge import BridgeClosed
from ..records import InboundMessage
from .base import ChannelError
from .slack_catchup import error_code
from .slack_settings import channel_id_of, slack_chat

if TYPE_CHECKING:
    from .base import Submit
    from .common import InboundGate, Lru

log = logging.getLogger("ngb.channels.slack")

# (emoji, Slack's name, other names Slack knows it by)
EMOJI: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("👀", "eyes", ()), ("👍", "+1", ("thumbsup",)), ("👎", "-1", ("thumbsdown",)),
    ("✅", "white_check_mark", ()), ("❤️", "heart", ()), ("🎉", "tada", ()), ("🤔", "thinking_face", ()),
    ("😢", "cry", ()), ("🔥", "fire", ()), ("😂", "joy", ()), ("🙏", "pray", ()), ("👋", "wave", ()),
    ("⚠️", "warning", ()), ("❌", "x", ()), ("😀", "grinning", ()), ("😃", "smiley", ()), ("😄", "smile", ()),
    ("😁", "grin", ()), ("😊", "blush", ()), ("😉", "wink", ()), ("😍", "heart_eyes", ()),
    ("😎", "sunglasses", ()), ("😮", "open_mouth", ()), ("😭", "sob", ()), ("😡", "rage", ()),
    ("😅", "sweat_smile", ()), ("🥳", "partying_face", ()), ("👏", "clap", ()), ("🙌", "raised_hands", ()),
    ("👌", "ok_hand", ()), ("💪", "muscle", ()), ("🤝", "handshake", ()), ("💯", "100", ()),
    ("🚀", "rocket", ()), ("⭐", "star", ()), ("✨", "sparkles", ()), ("💡", "bulb", ()), ("🐛", "bug", ()),
    ("✔️", "heavy_check_mark", ()), ("☑️", "ballot_box_with_check", ()), ("❓", "question", ()),
    ("❗", "exclamation", ("heavy_exclamation_mark",)), ("⏳", "hourglass_flowing_sand", ()),
    ("🙈", "see_no_evil", ()), ("🤷", "shrug", ()), ("📌", "pushpin", ()),
)
TONES = "🏻🏼🏽🏾🏿"  # Slack: skin-tone-2 ... skin-tone-6
_NAMES = {emoji.replace("\ufe0f", ""): name for emoji, name, _ in EMOJI}
_EMOJI = {name: emoji for emoji, first, others in EMOJI for name in (first, *others)}
NOT_RETRIED = {"invalid_name", "message_not_found", "no_item_specified", "bad_timestamp", "too_many_emoji",
               "too_many_reactions", "channel_not_found", "not_in_channel", "is_archived", "missing_scope",
               "not_reactable", "thread_locked", "restricted_action"}


def slack_name(emoji: str) -> str | None:
    """A Unicode emoji -> Slack's name for it (``+1::skin-tone-4`` for 👍🏽), or None."""
    emoji = emoji.strip().replace("\ufe0f", "")
    tone = ""
    if len(emoji) > 1 and emoji[-1] in TONES:
        tone = f"::skin-tone-{TONES.index(emoji[-1]) + 2}"
        emoji = emoji[:-1]
    name = _NAMES.get(emoji)
    return name + tone if name is not None else None


def slack_emoji(name: str) -> str:
    """Slack's name of an emoji -> the emoji (``:name:`` for one not in the table)."""
    base, _, tone = name.partition("::")
    emoji = _EMOJI.get(base)
    if emoji is None:
        return f":{name}:"
    if tone.startswith("skin-tone-") and tone[10:].isdigit() and 2 <= int(tone[10:]) <= 6:
        emoji += TONES[int(tone[10:]) - 2]
    return emoji


class SlackReactions:
    """The reactions half of SlackChannel (a mixin: it shares the channel's client, threads and gate)."""

    bridge: Any
    web: Any
    status: Any
    state: str
    me: dict[str, Any] | None
    _threads: Lru
    _users: Lru
    _gate: InboundGate

    async def _api(self, method: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def _user_name(self, user: str) -> str:
        raise NotImplementedError

    # -- out -------------------------------------------------------------------------------------------
    async def react(self, chat: str, platform_id: str, emoji: str) -> None:
        await self._reaction("reactions_add", chat, platform_id, emoji, done="already_reacted")

    async def unreact(self, chat: str, platform_id: str, emoji: str) -> None:
        await self._reaction("reactions_remove", chat, platform_id, emoji, done="no_reaction")

    async def _reaction(self, method: str, chat: str, platform_id: str, emoji: str, *, done: str) -> None:
        from slack_sdk.errors import SlackApiError

        channel = channel_id_of(chat)
        chan, _, ts = platform_id.rpartition(":")
        if chan != channel or not ts:
            raise ChannelError(f"slack: {platform_id} is not a message of {chat}", retryable=False)
        name = slack_name(emoji)
        if name is None:
            raise ChannelError(f"slack: no Slack name for {emoji} (not among the emoji the channel maps)",
                               retryable=False)
        if self.web is None:
            raise ChannelError(f"slack is {self.state}", retryable=True)
        call = method.replace("_", ".")
        try:
            await self.bridge.call(getattr(self.web, method), channel=channel, timestamp=ts, name=name)
        except SlackApiError as exc:
            error = error_code(exc)
            if error == done:
                return
            raise ChannelError(self.status.redact(f"slack: {call} {name}: {error}"),
                               retryable=error not in NOT_RETRIED) from None
        except (TimeoutError, BridgeClosed, OSError) as exc:
            raise ChannelError(self.status.redact(f"slack: {type(exc).__name__}: {exc}"), retryable=True) from None
        except Exception as exc:  # noqa: BLE001 - aiohttp.ClientError and friends: network trouble
            if type(exc).__module__.startswith("aiohttp"):
                raise ChannelError(self.status.redact(f"slack: {type(exc).__name__}: {exc}"), retryable=True) from None
            raise

    # -- in --------------------------------------------------------------------------------------------
    async def take_reaction(self, submit: Submit, event: dict[str, Any]) -> None:
        """A ``reaction_added`` event -> the router (stored when this returns), or nothing."""
        item = event.get("item") or {}
        user, name = event.get("user"), event.get("reaction")
        channel, ts = item.get("channel"), item.get("ts")
        if item.get("type") != "message" or not (user and name and channel and ts):
            return
        if user == (self.me or {}).get("user_id"):
            return  # the bot's own reaction (the acknowledgement, the agent's react)
        if user not in self._users:
            self._users.put(user, await self._user_name(user))
        target, emoji = f"{channel}:{ts}", slack_emoji(str(name))
        when = event.get("event_ts")
        inbound = InboundMessage(
            chat=slack_chat(channel),
            sender=self._users[user],
            text=emoji,
            platform_id=f"react:{target}:{user}:{emoji}",
            time=datetime.fromtimestamp(float(when), UTC) if when else datetime.now(UTC),
            sender_id=user,
            thread=await self._thread_ts(channel, ts),
            reaction_to=target,
        )
        await self._gate.submit(submit, inbound, triggered=False)

    async def _thread_ts(self, channel: str, ts: str) -> str:
        """The thread the message ``ts`` is in ("" for the conversation itself): as seen in this
        run, else as conversations.replies says (remembered)."""
        platform_id = f"{channel}:{ts}"
        thread = self._threads.get(platform_id)
        if thread is None:  # not seen in this run (a restart): ask Slack
            thread = ""
            try:
                answer = await self._api("conversations_replies", channel=channel, ts=ts, limit=1)
                msgs = answer.get("messages") or []
                if msgs and msgs[0].get("thread_ts") and msgs[0]["thread_ts"] != ts:
                    thread = msgs[0]["thread_ts"]
            except Exception as exc:  # noqa: BLE001 - then the conversation itself
                log.debug("slack: conversations.replies failed: %s", exc)
            self._threads.put(platform_id, thread)
        return str(thread)
