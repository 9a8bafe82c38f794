"""The WeCom intelligent robot's live previews (base.LivePreview), mixed into WeComChannel: the
answer to the triggering message is a *stream* that grows in the chat.

WeCom's stream reply: the robot answers a message's callback (``aibot_respond_msg`` with the
callback's ``req_id``) with ``{"msgtype": "stream", "stream": {"id", "finish", "content"}}``, and
may answer it several times with the same stream id, each frame carrying the whole content so far
with ``finish: false``, the last one with ``finish: true``; WeCom shows one message growing.

- ``send_preview``: only while the trigger's callback is fresh (``reply_window``, as ``send``
  decides): a new stream id, its first frame (``finish: false``, the text cut to ``part_bytes``
  UTF-8 bytes with "…"); the stream id is the preview's platform id. No fresh callback: a
  ChannelError (not retryable), the reply goes out the normal way.
- ``edit_preview``: the same stream and callback, ``finish: false``, the whole text so far (cut).
- ``finish_preview``: the reply's first part as the stream's last frame (``finish: true``; the
  Markdown as ``send`` sends it), the other parts pushed with ``aibot_send_msg`` markdown as
  ``send`` pushes them; parts delivered are not delivered again (live_preview.py).

The streams are remembered in memory (bounded): a stream the channel does not know (after a
restart) or whose callback is no longer fresh cannot be continued, which is a ChannelError (not
retryable): previewing ends, or the outbox sends the reply anew with ``send`` (aibot_send_msg once
the callback is stale). The content is Markdown while it grows too (WeCom renders every frame; it
has no plain stream): a half-written ``**`` shows as it is until the next frame."""

from __future__ import annotations

from typing import Any

from .base import ChannelError
from .common import Lru, split_text
from .live_preview import FinishesPreviews, preview_text

STREAMS = 1024  # stream ids remembered (-> the callback they answer)


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


class WeComPreviews(FinishesPreviews):
    """The live-preview half of WeComChannel (a mixin: it shares the channel's connection and callbacks)."""

    settings: Any
    _streams: Lru  # stream id -> (callback req_id, when it was received, chat); STREAMS of them

    # -- the channel's steps (wecom.py) ------------------------------------------------------------------
    def _chatid(self, chat: str) -> str:
        raise NotImplementedError

    def _fresh_callback(self, chat: str, reply_to: str | None) -> tuple[str, float] | None:
        raise NotImplementedError

    def _fresh(self, received: float) -> bool:
        raise NotImplementedError

    def _new_stream_id(self) -> str:
        raise NotImplementedError

    async def _stream(self, req_id: str, stream_id: str, content: str, *, finish: bool) -> None:
        raise NotImplementedError

    async def _push(self, chatid: str, content: str) -> str:
        raise NotImplementedError

    # -- LivePreview --------------------------------------------------------------------------------------
    async def send_preview(self, chat: str, text: str, reply_to: str | None = None) -> str:
        """Start a stream answering the trigger's callback; its stream id."""
        self._chatid(chat)
        callback = self._fresh_callback(chat, reply_to)
        if callback is None:
            raise ChannelError(f"wecom: no fresh callback to stream the answer in {chat} to", retryable=False)
        stream_id = self._new_stream_id()
        await self._stream(callback[0], stream_id, self._cut(text), finish=False)
        self._streams.put(stream_id, (callback[0], callback[1], chat))
        return stream_id

    async def edit_preview(self, chat: str, platform_id: str, text: str) -> None:
        await self._stream(self._callback_of(chat, platform_id), platform_id, self._cut(text), finish=False)

    def _cut(self, text: str) -> str:
        return preview_text(text, self.settings.part_bytes, measure=utf8_len)

    def _callback_of(self, chat: str, stream_id: str) -> str:
        """The req_id of the callback the stream answers; ChannelError when it cannot be continued."""
        stream = self._streams.get(stream_id)
        if stream is None or stream[2] != chat:
            raise ChannelError(f"wecom: the stream {stream_id} in {chat} is unknown (the daemon restarted?)",
                               retryable=False)
        if not self._fresh(stream[1]):
            raise ChannelError(f"wecom: the stream {stream_id} in {chat} answers a callback older than "
                               "reply_window", retryable=False)
        return str(stream[0])

    # -- finish_preview's steps (live_preview.py) --------------------------------------------------------
    def _final_parts(self, text: str) -> list[str]:
        return split_text(text, self.settings.part_bytes, measure=utf8_len)

    async def _edit_final(self, chat: str, platform_id: str, part: str) -> None:
        await self._stream(self._callback_of(chat, platform_id), platform_id, part, finish=True)

    async def _send_first(self, chat: str, part: str, reply_to: str | None) -> str:
        return await self._push(self._chatid(chat), part)

    async def _send_after(self, chat: str, first_id: str, part: str, reply_to: str | None) -> str:
        return await self._push(self._chatid(chat), part)
