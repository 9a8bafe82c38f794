"""What a plugin sees: the records it returns or receives (`Veto`, `Tool`, `ToolCall`,
`TurnDecision`), `ToolError`, the `PluginHost` its setup gets, and `LoadedPlugin`, the daemon's
record of one loaded plugin (shown in /status). The contract is in ngb/plugins/__init__.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from ..records import Group, Message
from ..sandbox.tools import Refused

ToolError = Refused  # a handler raises ToolError("why") to answer the agent an error (plugin stays on)


@attrs.frozen
class Veto:
    """Returned by before_turn: do not run this turn."""

    reason: str


@attrs.frozen
class Tool:
    """An extra agent tool. `handler(call)` gets a `ToolCall` and returns anything JSON-able."""

    name: str
    description: str
    input_schema: dict[str, Any]
    handler: Callable[[ToolCall], Awaitable[Any]]
    main_only: bool = False  # only the main group's agent may call it


@attrs.frozen
class ToolCall:
    """One call of a plugin tool. `group` is the calling group (from its socket, never from the
    arguments); `send` and `history` reach that group's own chat only."""

    group: Group
    args: dict[str, Any]
    plugin: str
    _host: PluginHost

    async def send(self, text: str) -> int:
        """Queue a message to the calling group's chat (delivered by the outbox)."""
        return await self._host.send(self.group, text)

    async def history(self, limit: int = 50) -> list[Message]:
        """The latest messages of the calling group's chat, oldest first."""
        return await self._host.history(self.group, limit)


@attrs.frozen
class TurnDecision:
    """What the plugins said before a turn."""

    context: tuple[tuple[str, str], ...] = ()  # (plugin, text)
    veto: str | None = None
    vetoed_by: str | None = None

    def prefix(self) -> str:
        """The context blocks put before the messages in the agent's prompt."""
        import html

        return "".join(
            f'<plugin_context plugin="{html.escape(name, quote=True)}">\n{html.escape(text, quote=False)}\n'
            "</plugin_context>\n"
            for name, text in self.context
        )


NO_OPINION = TurnDecision()


class PluginHost:
    """What a plugin's setup gets: the configuration, and the daemon's services once they exist
    (`store`, `outbox_wake`; None while plugins load)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.store: Any = None
        self.outbox_wake: Callable[[], None] = lambda: None

    async def send(self, group: Group, text: str) -> int:
        if self.store is None:
            raise Refused("the daemon is not ready")
        if not isinstance(text, str) or not text.strip():
            raise Refused("the message is empty")
        item = int(await self.store.queue_message(group.folder, group.chat, text))
        self.outbox_wake()
        return item

    async def history(self, group: Group, limit: int = 50) -> list[Message]:
        if self.store is None:
            raise Refused("the daemon is not ready")
        return list(await self.store.messages_after(group.chat, 0, limit=max(1, min(int(limit), 500))))


@attrs.define
class LoadedPlugin:
    name: str
    source: str  # "entry point NAME = VALUE" | "module PATH" | "object"
    obj: Any = None
    state: str = "active"  # active | disabled | failed_to_load
    error: str | None = None
    hooks: tuple[str, ...] = ()
    tools: dict[str, Tool] = attrs.field(factory=dict)
    channels: list[str] = attrs.field(factory=list)
    calls: int = 0
    queue: Any = None  # trio.MemorySendChannel of (hook, args)
    receive: Any = None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "state": self.state,
            "error": self.error,
            "hooks": list(self.hooks),
            "tools": sorted(self.tools),
            "channels": list(self.channels),
            "calls": self.calls,
        }
