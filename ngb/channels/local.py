"""The local chat: no account, no network beyond loopback. Messages come in through the web API
(`POST /api/chats/{chat}/messages`) and replies are read back from the stored history, so for this
channel "delivered" and "stored" are one transaction (see Store.deliver). Live previews go to the
chat page's event stream as ``preview`` events (``on_preview``: the daemon's ChatEvents.publish);
the stored reply replaces them there."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import trio

from ..records import ChatPreview, OutgoingFile
from .base import Submit

PREFIX = "local"


def local_chat(name: str) -> str:
    return f"{PREFIX}:{name}"


class LocalChannel:
    name = PREFIX

    def __init__(self, on_preview: Callable[[ChatPreview], None] | None = None) -> None:
        self.state = "stopped"
        self._on_preview = on_preview or (lambda preview: None)
        self._ids = itertools.count(1)

    async def run(self, submit: Submit, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.state = "connected"
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.state = "stopped"

    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        return None  # the history is the delivery

    async def send_file(self, chat: str, file: OutgoingFile, reply_to: str | None = None) -> str | None:
        return None  # the history is the delivery: the stored message carries the attachment

    async def send_preview(self, chat: str, text: str, reply_to: str | None = None) -> str:
        preview = ChatPreview(chat=chat, id=f"preview-{next(self._ids)}", text=text)
        self._on_preview(preview)
        return preview.id

    async def edit_preview(self, chat: str, platform_id: str, text: str) -> None:
        self._on_preview(ChatPreview(chat=chat, id=platform_id, text=text))

    async def finish_preview(self, chat: str, platform_id: str, text: str, reply_to: str | None = None) -> str | None:
        return None  # the history is the delivery: the stored reply replaces the preview on the page
