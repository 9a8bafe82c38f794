"""The bot's reactions on chat messages (docs/conversations.md): the acknowledgement on the message
that started a turn, and the agent's ``react`` tool.

The acknowledgement: when a group's actor hands a batch to the agent, the message it answers (its
last trigger) gets ``ack_reaction`` (default 👀) where the chat's channel can react; when the turn
ends it is taken off, and ``done_reaction`` put on instead when one is set; a failed turn gets
``failed_reaction`` instead (default none: the failure is said in the chat anyway). An empty emoji turns that step off. The calls go through one
worker, in order, each bounded in time; a failure is one log line and never holds up a reply.

The tool: the agent may react to the message it is answering (the host decides which one: the
trigger of the group's current batch), nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from .channels.base import ChannelError, Reactions, offers
from .records import channel_of

log = logging.getLogger(__name__)

CALL_TIMEOUT = 5.0
MAX_QUEUED = 1000


class ReactionRefused(ValueError):
    """The agent's reaction cannot be made; the text goes back to it."""


@attrs.frozen
class _Job:
    chat: str
    platform_id: str
    emoji: str
    add: bool


def valid_emoji(emoji: str) -> bool:
    """An emoji (or a short sequence of them), not text: no letters or digits, no spaces."""
    emoji = emoji.strip()
    return 0 < len(emoji) <= 16 and not any(
        c.isspace() or (c.isascii() and (c.isalnum() or not c.isprintable())) for c in emoji
    )


class AckReactions:
    def __init__(self, channels: Mapping[str, Any], chat_of: Callable[[str], str | None], *, ack: str = "👀",
                 done: str = "", failed: str = "") -> None:
        self.channels = channels
        self.chat_of = chat_of  # group folder -> its chat
        self.ack, self.done, self.failed = ack.strip(), done.strip(), failed.strip()
        self._open: dict[tuple[str, int], tuple[str, str]] = {}  # (folder, batch) -> (chat, trigger id)
        self._current: dict[str, tuple[str, str]] = {}  # folder -> (chat, trigger) of its newest batch
        self._send, self._receive = trio.open_memory_channel[_Job](MAX_QUEUED)

    def can_react(self, chat: str) -> bool:
        return offers(self.channels.get(channel_of(chat)), Reactions)

    def event(self, folder: str, kind: str, data: Mapping[str, Any]) -> None:
        """Feed one actor event (the daemon passes every one; the rest are ignored)."""
        batch = data.get("batch")
        if kind == "batch_sent" and isinstance(batch, int) and "task" not in data:
            chat, trigger = self.chat_of(folder), data.get("reply_to")
            if chat is None or not isinstance(trigger, str) or not self.can_react(chat):
                return
            self._current[folder] = (chat, trigger)
            self._open[(folder, batch)] = (chat, trigger)
            self._queue(chat, trigger, self.ack, add=True)
        elif kind == "result" and isinstance(batch, int):
            # a result covers every open batch up to its own (ngb/conversation.py)
            for key in [k for k in self._open if k[0] == folder and k[1] <= batch]:
                self._end(*self._open.pop(key), self.done)
        elif kind == "turn_failed":
            for key in [k for k in self._open if k[0] == folder]:
                self._end(*self._open.pop(key), self.failed)

    def _end(self, chat: str, trigger: str, then: str) -> None:
        self._queue(chat, trigger, self.ack, add=False)
        self._queue(chat, trigger, then, add=True)

    def _queue(self, chat: str, trigger: str, emoji: str, *, add: bool) -> None:
        if not emoji:
            return
        try:
            self._send.send_nowait(_Job(chat, trigger, emoji, add))
        except trio.WouldBlock:
            log.warning("reactions: %d calls queued already; %s on a message in %s left out", MAX_QUEUED, emoji, chat)

    async def react_current(self, folder: str, emoji: str) -> str:
        """The agent's ``react``: ``emoji`` on the message its group is answering. Returns that
        message's platform id; raises ReactionRefused with the reason."""
        if not valid_emoji(emoji):
            raise ReactionRefused("'emoji' must be an emoji such as 👍 (no letters, digits or spaces)")
        target = self._current.get(folder)
        if target is None:
            chat = self.chat_of(folder)
            if chat is not None and not self.can_react(chat):
                raise ReactionRefused(f"this chat's platform ({channel_of(chat)}) has no reactions")
            raise ReactionRefused("there is no message to react to (reactions go on the message being answered)")
        chat, trigger = target
        channel = self.channels.get(channel_of(chat))
        if not offers(channel, Reactions):
            raise ReactionRefused(f"this chat's platform ({channel_of(chat)}) has no reactions")
        try:
            with trio.fail_after(CALL_TIMEOUT):
                await channel.react(chat, trigger, emoji.strip())
        except ChannelError as exc:
            raise ReactionRefused(f"the platform refused the reaction: {exc}") from None
        except trio.TooSlowError:
            raise ReactionRefused("the platform did not answer in time") from None
        return trigger

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for job in self._receive:
            await self._do(job)

    async def _do(self, job: _Job) -> None:
        channel = self.channels.get(channel_of(job.chat))
        if not offers(channel, Reactions):
            return
        try:
            with trio.fail_after(CALL_TIMEOUT):
                if job.add:
                    await channel.react(job.chat, job.platform_id, job.emoji)
                else:
                    await channel.unreact(job.chat, job.platform_id, job.emoji)
        except (ChannelError, trio.TooSlowError) as exc:
            log.info("reactions: %s %s on %s in %s failed: %s", "adding" if job.add else "removing", job.emoji,
                     job.platform_id, job.chat, exc or "timed out")
        except Exception:  # noqa: BLE001 - a channel bug must not stop the reactions of other chats
            log.exception("reactions: channel %s raised", channel_of(job.chat))
