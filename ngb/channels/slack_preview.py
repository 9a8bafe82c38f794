"""Slack's live previews (base.LivePreview), mixed into SlackChannel.

The preview is a chat.postMessage where ``send`` posts a reply (the trigger's thread, or a new one
with ``reply_in_thread = "always"``) with the agent's text as it is: not converted to mrkdwn (a
half-written ``**`` stays text), only Slack's three control characters escaped, so a ``<!channel>``
or a link in the text stays text. Each edit is a chat.update of that message, cut to the 3,900
characters ``send`` uses per part, with a trailing "…". The final reply updates it to its first
part in mrkdwn, as ``send`` formats it, and posts the other parts in the same thread (common steps:
live_preview.py). Slack answers an update to the same text with success; ``message_not_found``
means a person deleted the preview (``cant_update_message``, ``edit_window_closed``: it can no
longer be edited): a preview edit is then a ChannelError (previewing ends), the final reply goes
out as a new message."""

from __future__ import annotations

from typing import Any

from .base import ChannelError
from .common import markdown_to_slack_mrkdwn, split_text
from .live_preview import FinishesPreviews, PreviewGone, preview_text
from .slack_media import SlackFiles
from .slack_settings import channel_id_of

PART_LIMIT = 3900  # Slack recommends <= 4,000 characters per message (40,000 is the hard cut)
# chat.update of a message that is not there (deleted), or that the workspace no longer lets be edited
GONE = ("message_not_found", "cant_update_message", "edit_window_closed")


def slack_escaped(text: str) -> str:
    """Text Slack shows as it is: ``&``, ``<`` and ``>`` escaped (no links, mentions, @channel)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackPreviews(FinishesPreviews, SlackFiles):
    """The live-preview half of SlackChannel (a mixin: it shares the channel's client and threads)."""

    state: str

    async def _post(self, channel: str, part: str, thread_ts: str | None) -> str:
        raise NotImplementedError

    async def send_preview(self, chat: str, text: str, reply_to: str | None = None) -> str:
        """Post the preview (the text unconverted) where ``send`` would put the reply; its platform id."""
        channel = channel_id_of(chat)
        self._check_connected()
        thread_ts = await self._reply_thread(chat, reply_to)
        kwargs: dict[str, Any] = {"channel": channel, "text": slack_escaped(preview_text(text, PART_LIMIT))}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        answer = await self._sending("chat_postMessage", **kwargs)
        return f"{channel}:{answer['ts']}"

    async def edit_preview(self, chat: str, platform_id: str, text: str) -> None:
        if not await self._update(chat, platform_id, slack_escaped(preview_text(text, PART_LIMIT))):
            raise ChannelError(f"slack: the preview {platform_id} was deleted or cannot be edited", retryable=False)

    # -- finish_preview's steps (live_preview.py) ----------------------------------------------------
    def _final_parts(self, text: str) -> list[str]:
        return split_text(text, PART_LIMIT)

    async def _edit_final(self, chat: str, platform_id: str, part: str) -> None:
        if not await self._update(chat, platform_id, markdown_to_slack_mrkdwn(part)):
            raise PreviewGone(platform_id)

    async def _send_first(self, chat: str, part: str, reply_to: str | None) -> str:
        return await self._send_after(chat, "", part, reply_to)  # every part goes to the same thread

    async def _send_after(self, chat: str, first_id: str, part: str, reply_to: str | None) -> str:
        """``part`` in mrkdwn, in the thread ``send`` would use."""
        channel = channel_id_of(chat)
        self._check_connected()
        ts = await self._post(channel, part, await self._reply_thread(chat, reply_to))
        return f"{channel}:{ts}"

    # -- chat.update -----------------------------------------------------------------------------------
    def _check_connected(self) -> None:
        if self.web is None:
            raise ChannelError(f"slack is {self.state}", retryable=True)

    async def _update(self, chat: str, platform_id: str, text: str) -> bool:
        """chat.update of the bot's message ``platform_id`` to ``text``; False when it is gone."""
        channel = channel_id_of(chat)
        chan, _, ts = platform_id.rpartition(":")
        if chan != channel or not ts:
            raise ChannelError(f"slack: {platform_id} is not a message of {chat}", retryable=False)
        self._check_connected()
        return await self._sending("chat_update", gone=GONE, channel=channel, ts=ts, text=text) is not None
