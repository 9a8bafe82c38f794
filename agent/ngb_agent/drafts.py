"""Live previews on the runner's side: the text block the agent is writing, so far, as ``preview``
frames (sent only when ``start.previews``; the daemon edits one chat message with them).

The SDK hands the model's raw stream events over as StreamEvent messages when the options ask for
partial messages. Drafts follows the top-level text block being written (a tool call's input or a
thinking block is never previewed), and sends its whole text so far at most once per ``interval``:
the daemon throttles its edits to the platform's limits anyway, this only keeps the control stream
light. The block's ``output`` (its finished text) follows on the same ordered stream, and
``finished()`` forgets the draft so no stale preview is sent after it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from .protocol import Preview

PREVIEW_INTERVAL = 0.25  # seconds between two preview frames of one block


class Drafts:
    def __init__(self, send: Callable[[Preview], Awaitable[None]], *, interval: float = PREVIEW_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self._interval = interval
        self._clock = clock
        self._text: str | None = None  # None: no text block is being written
        self._sent_at = float("-inf")
        self._sent_text = ""

    async def event(self, batch: int, event: Any) -> None:
        """One raw stream event of a top-level assistant message."""
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "content_block_start":
            block = event.get("content_block")
            is_text = isinstance(block, dict) and block.get("type") == "text"
            self._text = str(block.get("text") or "") if isinstance(block, dict) and is_text else None
            self._sent_text = ""
        elif kind == "content_block_delta" and self._text is not None:
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                self._text += str(delta.get("text") or "")
                await self._maybe_send(batch)
        elif kind in ("content_block_stop", "message_stop"):
            self._text = None

    async def _maybe_send(self, batch: int) -> None:
        text = self._text
        if text is None or not text.strip() or text == self._sent_text:
            return
        now = self._clock()
        if now - self._sent_at < self._interval:
            return
        self._sent_at = now
        self._sent_text = text
        await self._send(Preview(batch=batch, text=text))

    def finished(self) -> None:
        """The block's output is being sent: nothing of it is previewed any more."""
        self._text = None
        self._sent_text = ""
