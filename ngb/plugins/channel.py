"""A plugin's channel, kept inside its plugin (`PluginChannel`): a failing channel disables its
plugin instead of the daemon, and replies wait in the outbox while the plugin is off."""

from __future__ import annotations

import functools
from typing import Any, Protocol

import trio

from .api import LoadedPlugin


class Keeper(Protocol):
    """What a plugin channel needs from the plugin manager."""

    timeout: float

    def disable(
        self, plugin: LoadedPlugin, what: str, exc: BaseException | None, why: str | None = None
    ) -> None: ...


class PluginChannel:
    """A plugin's channel, kept inside its plugin: if `run` raises, the plugin is disabled and the
    channel goes quiet (state "failed"); while the plugin is disabled, `send` raises a retryable
    ChannelError so replies wait in the outbox instead of being lost."""

    def __init__(self, inner: Any, plugin: LoadedPlugin, manager: Keeper) -> None:
        self.inner = inner
        self.plugin = plugin
        self.manager = manager
        self.name = str(inner.name)
        self._failed = False

    def __getattr__(self, name: str) -> Any:
        """The inner channel's optional capabilities (typing, status, qr, callback_path, ...),
        while its plugin is active."""
        plugin = self.__dict__.get("plugin")
        if name.startswith("_") or plugin is None or plugin.state != "active" or self.__dict__.get("_failed"):
            raise AttributeError(name)
        return getattr(self.__dict__["inner"], name)

    @property
    def state(self) -> str:
        if self._failed or self.plugin.state != "active":
            return "failed"
        return str(getattr(self.inner, "state", "connected"))

    async def run(
        self, submit: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        started = False
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(max(self.manager.timeout, 1.0)):
                    await nursery.start(functools.partial(self.inner.run, submit))
                task_status.started()
                started = True
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the plugin's channel, not the daemon
            self._failed = True
            self.manager.disable(self.plugin, f"channel {self.name}", exc)
        if not started:
            task_status.started()
        await trio.sleep_forever()

    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        from ..channels.base import ChannelError

        if self.state == "failed":
            raise ChannelError(
                f"channel {self.name} is off: plugin {self.plugin.name} is disabled", retryable=True
            )
        return await self.inner.send(chat, text, reply_to)
