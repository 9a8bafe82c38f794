"""TurnGate: whether a batch of a group gets a turn of the agent. A group over its spend cap gets
none (its chat was told once, by the budgets, and no container is started for nothing); then the
plugins' before_turn is asked, once per batch, and may veto the turn or put a prefix on its prompt."""

from __future__ import annotations

import logging
from typing import Any

from .records import Group, Message

log = logging.getLogger(__name__)


class TurnGate:
    def __init__(self, plugins: Any = None, budgets: Any = None) -> None:
        self._plugins = plugins  # ngb.plugins.PluginManager: before_turn, extra tools
        self._budgets = budgets  # ngb.budgets.Budgets: a group over its spend cap gets no turn
        self._decided: tuple[tuple[int, int], Any] | None = None  # the last before_turn answer

    async def veto(self, group: Group, pending: list[Message]) -> str | None:
        """Why this batch gets no turn, or None."""
        if self._budgets is not None and self._budgets.admit(group.folder) is not None:
            log.info(
                "group %s: spend cap reached; messages up to %d seen, not answered",
                group.folder,
                pending[-1].id,
            )
            return "spend cap reached"
        if self._plugins is None:
            return None
        key = (pending[0].id, pending[-1].id)
        if self._decided is None or self._decided[0] != key:
            self._decided = (key, await self._plugins.before_turn(group, pending))
        return self._decided[1].veto

    def prefix(self) -> str:
        """What the plugins put before the prompt of the batch last admitted."""
        return self._decided[1].prefix() if self._plugins is not None and self._decided else ""

    def tools(self, group: Group) -> list[Any]:
        """The plugins' extra tools for the group's agent."""
        return list(self._plugins.tool_specs(group) or []) if self._plugins is not None else []

    def over_budget(self, folder: str) -> bool:
        """The proxy refused this turn's model call for the spend cap: the budget notice already
        told the chat, so no second "could not answer" message."""
        return self._budgets is not None and self._budgets.blocked(folder) is not None
