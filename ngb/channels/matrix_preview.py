"""Matrix's live previews (base.LivePreview), mixed into MatrixChannel.

The preview is an ``m.text`` message where ``send`` puts a reply's first part (a reply to the
trigger, in its thread), its body the agent's text as it is (no ``formatted_body``: a half-written
``**`` stays text). Each edit is an ``m.replace`` event (the spec's message edits): ``m.new_content``
holds the growing text, the body a "* " fallback for clients without edits, and every edit points at
the preview itself (an edit of an edit is not one). The final reply edits the preview to its first
part with the HTML ``send`` sends beside it, and the other parts follow in the trigger's thread
(common steps: live_preview.py). In an encrypted room the edits are encrypted like any message.

Matrix keeps a redacted event and refuses nothing: an edit of a preview that a person redacted
would be accepted and never shown. So the channel notes redactions of its own messages as they come
in the sync (``gone``): a preview edit is then a ChannelError (previewing ends), and the final reply
goes out as a new message."""

from __future__ import annotations

from typing import Any

from .base import ChannelError
from .common import Lru, split_text
from .live_preview import FinishesPreviews, PreviewGone, preview_text
from .matrix_events import reply_relation, text_content
from .matrix_settings import room_id_of

PART_LIMIT = 16_000  # characters of one message (an event is at most 64 KiB, the HTML included)


def edit_content(original: str, new: dict[str, Any]) -> dict[str, Any]:
    """The content of an ``m.replace`` edit of the event ``original`` to the message ``new``: the
    new message in ``m.new_content``, and the same with a "* " before the body (and HTML) for
    clients that do not apply edits."""
    content = {**new, "body": f"* {new['body']}", "m.new_content": new,
               "m.relates_to": {"rel_type": "m.replace", "event_id": original}}
    if "formatted_body" in new:
        content["formatted_body"] = f"* {new['formatted_body']}"
    return content


class MatrixPreviews(FinishesPreviews):
    """The live-preview half of MatrixChannel (a mixin: it shares the channel's client and sends)."""

    gone: Lru  # event ids of the bot's messages that were redacted

    async def _send_event(self, room_id: str, content: dict[str, Any], tx_id: str | None,
                          event_type: str = "m.room.message") -> str:
        raise NotImplementedError

    async def _reply_place(self, chat: str, reply_to: str | None) -> tuple[str | None, str]:
        raise NotImplementedError

    async def send_preview(self, chat: str, text: str, reply_to: str | None = None) -> str:
        """Post the preview (plain text) where ``send`` would put the reply; its event id."""
        content = {"msgtype": "m.text", "body": preview_text(text, PART_LIMIT)}
        return await self._send_first(chat, "", reply_to, content=content)

    async def edit_preview(self, chat: str, platform_id: str, text: str) -> None:
        if platform_id in self.gone:
            raise ChannelError(f"matrix: the preview {platform_id} was redacted", retryable=False)
        new = {"msgtype": "m.text", "body": preview_text(text, PART_LIMIT)}
        await self._send_event(room_id_of(chat), edit_content(platform_id, new), None)

    # -- finish_preview's steps (live_preview.py) ----------------------------------------------------
    def _final_parts(self, text: str) -> list[str]:
        return split_text(text, PART_LIMIT)

    async def _edit_final(self, chat: str, platform_id: str, part: str) -> None:
        if platform_id in self.gone:
            raise PreviewGone(platform_id)
        await self._send_event(room_id_of(chat), edit_content(platform_id, text_content(part)), None)

    async def _send_first(self, chat: str, part: str, reply_to: str | None, *,
                          content: dict[str, Any] | None = None) -> str:
        """``part`` (or ``content``) as ``send``'s first part: a reply to the trigger, in its thread."""
        trigger, thread = await self._reply_place(chat, reply_to)
        content = dict(content or text_content(part))
        relates = reply_relation(trigger, thread)
        if relates is not None:
            content["m.relates_to"] = relates
        return await self._send_event(room_id_of(chat), content, None)

    async def _send_after(self, chat: str, first_id: str, part: str, reply_to: str | None) -> str:
        """``part`` as ``send``'s later parts: in the trigger's thread, replying to nothing."""
        _, thread = await self._reply_place(chat, reply_to)
        content = text_content(part)
        relates = reply_relation(None, thread)
        if relates is not None:
            content["m.relates_to"] = relates
        return await self._send_event(room_id_of(chat), content, None)
