"""Live previews: while the agent writes a reply, the chat shows it growing in one message.

The runner sends ``preview`` frames (the text of the block being written, so far); the actor hands
them to ``Previews.show``, which returns at once. One task per group posts the preview message
through the channel (``LivePreview.send_preview``) and then edits it with the newest text, at most
once per ``interval`` per chat (the platforms' edit limits: about one a second on Telegram and
Discord). When the block's ``output`` arrives, the actor calls ``Previews.finish``: previewing stops
and the preview message's platform id goes into the reply's outbox row, in the same transaction as
the reply, so the outbox edits that message to the final text instead of posting a new one
(ngb/outbox.py). The final text is thus stored once and delivered once; a crash before the outbox
edited it leaves the partial preview, and the outbox's retry after the restart completes it.

A channel that cannot edit, a failed post or a failed edit, all end previewing for that reply (one
log line) and its final text goes out as a normal message; a preview never delays an answer by
more than ``FINISH_WAIT`` seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import attrs
import trio

from .channels.base import Channel, ChannelError, LivePreview, offers
from .logs import log_context
from .records import channel_of

log = logging.getLogger(__name__)

FINISH_WAIT = 5.0  # seconds an answer waits for a preview post in flight (its id is the edit's target)


@attrs.define(eq=False)
class _Draft:
    """One reply being previewed in one chat."""

    chat: str
    reply_to: str | None
    text: str = ""  # the newest text the agent sent
    shown: str = ""  # the text the chat shows
    platform_id: str | None = None  # the preview message, once posted
    broken: bool = False  # a post or an edit failed: no more previews for this reply
    done: bool = False  # finish() or drop() was called
    changed: trio.Event = attrs.Factory(trio.Event)
    ended: trio.Event = attrs.Factory(trio.Event)  # its task returned


class Previews:
    """The live previews of every group (one draft per group at a time: a group's agent writes one
    block at a time). ``run`` must be running for previews to be shown."""

    def __init__(self, channels: Mapping[str, Channel], *, interval: float = 1.0,
                 on_edit: Callable[[str], None] = lambda channel: None) -> None:
        self.channels = channels
        self.interval = interval
        self._on_edit = on_edit  # each post or edit that reached a platform (metrics)
        self._drafts: dict[str, _Draft] = {}  # folder -> its draft
        self._last_edit: dict[str, float] = {}  # chat -> when it was last posted to or edited
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def can_preview(self, chat: str) -> bool:
        """The chat's channel can show previews (and the service is running)."""
        channel = self.channels.get(channel_of(chat))
        return self._nursery is not None and channel is not None and offers(channel, LivePreview)

    def show(self, folder: str, chat: str, reply_to: str | None, text: str) -> None:
        """The agent's reply for ``chat`` so far (the whole text, not a delta). Never blocks."""
        if not text.strip() or not self.can_preview(chat):
            return
        draft = self._drafts.get(folder)
        if draft is None or draft.done:
            draft = _Draft(chat=chat, reply_to=reply_to)
            self._drafts[folder] = draft
            assert self._nursery is not None
            self._nursery.start_soon(self._preview, folder, draft)
        if draft.broken or draft.chat != chat:
            return
        draft.text = text
        draft.changed.set()

    async def finish(self, folder: str) -> str | None:
        """The reply being previewed is done: stop previewing and return the preview message's id
        (the outbox edits it to the final text), or None when there is none to edit (no preview,
        or it failed: the final text goes out as a new message)."""
        draft = self._drafts.pop(folder, None)
        if draft is None:
            return None
        draft.done = True
        draft.changed.set()
        with trio.move_on_after(FINISH_WAIT):
            await draft.ended.wait()
        if not draft.ended.is_set():
            log.warning("previews: the preview in %s did not answer within %.0fs; the reply goes as a new message",
                        draft.chat, FINISH_WAIT)
            return None
        return None if draft.broken else draft.platform_id

    def drop(self, folder: str) -> None:
        """The turn ended without the reply (the container died, the turn failed): stop previewing;
        what the chat shows stays as it is."""
        draft = self._drafts.pop(folder, None)
        if draft is not None:
            draft.done = True
            draft.changed.set()

    async def _preview(self, folder: str, draft: _Draft) -> None:
        with log_context(group=folder, chat=draft.chat):
            try:
                while not draft.done:
                    await draft.changed.wait()
                    draft.changed = trio.Event()
                    await self._wait_turn(draft)
                    if draft.done or draft.text == draft.shown:
                        continue
                    await self._show(draft)
                    if draft.broken:
                        return
            finally:
                draft.ended.set()

    async def _wait_turn(self, draft: _Draft) -> None:
        """Until this chat may be edited again (woken early by finish: then nothing more is sent)."""
        due = self._last_edit.get(draft.chat, float("-inf")) + self.interval
        if trio.current_time() >= due:
            return
        with trio.move_on_at(due):
            while not draft.done:
                await draft.changed.wait()
                draft.changed = trio.Event()

    async def _show(self, draft: _Draft) -> None:
        channel = self.channels.get(channel_of(draft.chat))
        if channel is None or not offers(channel, LivePreview):
            draft.broken = True
            return
        text = draft.text
        self._last_edit[draft.chat] = trio.current_time()
        try:
            if draft.platform_id is None:
                draft.platform_id = await channel.send_preview(draft.chat, text, draft.reply_to)
            else:
                await channel.edit_preview(draft.chat, draft.platform_id, text)
        except ChannelError as exc:
            draft.broken = True
            log.warning("previews: %s in %s failed (%s); the reply goes as a new message",
                        "the edit" if draft.platform_id else "the preview", draft.chat, exc)
            return
        except Exception:  # noqa: BLE001 - a channel bug ends the preview, never the daemon
            draft.broken = True
            log.exception("previews: channel %s raised on a preview", channel_of(draft.chat))
            return
        draft.shown = text
        self._on_edit(channel_of(draft.chat))
