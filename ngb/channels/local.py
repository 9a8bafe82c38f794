"""The local chat: no account, no network beyond loopback. Messages come in through the web API
(`POST /api/chats/{chat}/messages`) and replies are read back from the stored history, so for this
channel "delivered" and "stored" are one transaction (see Store.deliver)."""

from __future__ import annotations

import trio

from ..records import OutgoingFile
from .base import Submit

PREFIX = "local"


def local_chat(name: str) -> str:
    return f"{PREFIX}:{name}"


class LocalChannel:
    name = PREFIX

    def __init__(self) -> None:
        self.state = "stopped"

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
