"""An example NanoGridBot plugin (docs/plugins.md): chat statistics, a "do not answer" tag, the
time of day for the agent, and a tool the agent can call.

Use it: put this file on the daemon's Python path and list it in ngb.toml

    plugins = ["ngb_chat_stats"]

(or ``NGB_PLUGINS=ngb_chat_stats``), or ship it in a package with an entry point:

    [project.entry-points."ngb.plugins"]
    chat_stats = "ngb_chat_stats"

What it does:

* ``on_message_stored``: counts the messages each chat received;
* ``before_turn``: messages tagged ``#noreply`` are not answered (a veto, logged); otherwise it
  gives the agent the current time in the configured zone as extra context;
* ``after_reply``: counts the replies per chat;
* the tool ``chat_stats``: the counts for the *calling* group's chat (never another chat's), and
  with ``"post": true`` it also posts them to that chat.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ngb.plugins import PluginHost, Tool, ToolCall, ToolError, Veto

NOREPLY_TAG = "#noreply"


class ChatStats:
    name = "chat_stats"

    def __init__(self, host: PluginHost) -> None:
        self.host = host
        self.zone = ZoneInfo(os.environ.get("NGB_CHAT_STATS_TZ", "UTC"))
        self.received: Counter[str] = Counter()
        self.replies: Counter[str] = Counter()
        self.tools = [
            Tool(
                name="chat_stats",
                description="How many messages this chat received and how many replies you sent since "
                "the daemon started. With post=true the numbers are also posted to the chat.",
                input_schema={
                    "type": "object",
                    "properties": {"post": {"type": "boolean"}},
                    "additionalProperties": False,
                },
                handler=self.chat_stats,
            )
        ]

    async def on_message_stored(self, message: Any) -> None:
        self.received[message.chat] += 1

    async def before_turn(self, group: Any, messages: list[Any]) -> str | Veto | None:
        if messages and all(NOREPLY_TAG in m.text.lower() for m in messages):
            return Veto(f"every message of the batch is tagged {NOREPLY_TAG}")
        now = datetime.now(self.zone)
        return f"It is {now:%A %d %B %Y, %H:%M} ({self.zone.key}) where the user lives."

    async def after_reply(self, group: Any, message: Any) -> None:
        self.replies[message.chat] += 1

    async def chat_stats(self, call: ToolCall) -> dict[str, Any]:
        chat = call.group.chat  # the caller's own chat: the only one this tool reports on
        stats = {"chat": chat, "received": self.received[chat], "replies": self.replies[chat]}
        if call.args.get("post"):
            if stats["received"] == 0:
                raise ToolError("nothing to report yet")  # an error answer; the plugin stays on
            await call.send(f"📊 {stats['received']} messages received, {stats['replies']} replies sent.")
        return stats


def setup(host: PluginHost) -> ChatStats:
    return ChatStats(host)
