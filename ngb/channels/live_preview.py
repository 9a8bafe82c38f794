"""What the platform channels' live previews share (base.LivePreview): the preview's text cut to one
message, and the final reply delivered through the preview.

``finish_preview`` edits the preview to the reply's first part (formatted as ``send`` formats it)
and sends the other parts after it, as ``send`` would. It records each part delivered in the
channel's ``PartialSends`` under a key of its own (the preview's id and the text), so a retry after
a failed part resumes at that part, and a call repeated after a complete delivery (the outbox's
retry after a crash of its own bookkeeping) returns the same id and posts nothing; the record stays
until the bounded memory drops it. When the preview is gone (a person deleted it) or can no longer
be edited, the first part goes out as a new message, where ``send`` would put it, and the other
parts follow it.

A channel mixes ``FinishesPreviews`` in and supplies the platform's steps: how a reply is split
(``_final_parts``), the edit of the preview to a final part (``_edit_final``, raising
``PreviewGone`` when the message is not there any more), and the sending of the first part and of
the parts after it (``_send_first`` / ``_send_after``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .text import fit_prefix

if TYPE_CHECKING:
    from .common import PartialSends

log = logging.getLogger(__name__)

ELLIPSIS = "…"


class PreviewGone(Exception):
    """The preview message is not on the platform any more (deleted), or can no longer be edited
    (the platform's edit window closed): the final reply goes out as a new message, not lost."""


def preview_text(text: str, limit: int, *, measure: Callable[[str], int] = len) -> str:
    """``text`` as one preview message of at most ``limit`` (by ``measure``): the beginning of it,
    ending in "…" when it had to be cut; "…" alone for a blank text (platforms refuse empty ones)."""
    text = text.strip()
    if not text:
        return ELLIPSIS
    if measure(text) <= limit:
        return text
    return text[:fit_prefix(text, limit - measure(ELLIPSIS), measure)].rstrip() + ELLIPSIS


class FinishesPreviews:
    """``finish_preview`` (base.LivePreview) over the channel's steps; see the module docstring."""

    _partial: PartialSends

    async def finish_preview(self, chat: str, platform_id: str, text: str, reply_to: str | None = None) -> str | None:
        """The final reply through the preview ``platform_id``: the id of its last part."""
        parts = self._final_parts(text)
        if not parts:
            return platform_id  # nothing to say: the preview stays as it is
        key = self._partial.key(chat, f"\0preview {platform_id}\0{text}", reply_to)
        ids = list(self._partial.done(key))
        for index in range(len(ids), len(parts)):
            if index == 0:
                ids.append(await self._finish_first(chat, platform_id, parts[0], reply_to))
            else:
                ids.append(await self._send_after(chat, ids[0], parts[index], reply_to))
            self._partial.record(key, ids[-1])
        return ids[-1]

    async def _finish_first(self, chat: str, platform_id: str, part: str, reply_to: str | None) -> str:
        try:
            await self._edit_final(chat, platform_id, part)
        except PreviewGone:
            log.info("the preview %s in %s is gone or cannot be edited; the reply goes out as a new message",
                     platform_id, chat)
            return await self._send_first(chat, part, reply_to)
        return platform_id

    # -- the platform's steps ------------------------------------------------------------------------
    def _final_parts(self, text: str) -> list[str]:
        """The parts ``send`` would cut ``text`` into."""
        raise NotImplementedError

    async def _edit_final(self, chat: str, platform_id: str, part: str) -> None:
        """Edit the preview to ``part``, formatted as ``send`` formats; PreviewGone when it is gone."""
        raise NotImplementedError

    async def _send_first(self, chat: str, part: str, reply_to: str | None) -> str:
        """Send ``part`` as ``send`` sends its first part (the preview being gone); its id."""
        raise NotImplementedError

    async def _send_after(self, chat: str, first_id: str, part: str, reply_to: str | None) -> str:
        """Send ``part`` as ``send`` sends the parts after the first (``first_id``: where it went)."""
        raise NotImplementedError
