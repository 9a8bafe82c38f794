"""The plugin manager: loads the plugins (entry points, then the ``plugins`` setting), calls their
hooks (events on bounded queues, ``before_turn`` awaited), answers their tools, builds their
channels, and keeps every failure inside its plugin (bounded by ``plugin_timeout``, then disabled).
The contract plugins follow is in ngb/plugins/__init__.py."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import logging
import re
import traceback
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import trio

from ..records import Group, Message
from ..sandbox.tools import Refused
from .api import NO_OPINION, LoadedPlugin, PluginHost, Tool, ToolCall, TurnDecision, Veto
from .channel import PluginChannel
from .schema import validate

log = logging.getLogger("ngb.plugins")

ENTRY_POINT_GROUP = "ngb.plugins"
HOOKS = ("on_message_stored", "before_turn", "after_reply")
DEFAULT_TIMEOUT = 10.0
TOOL_TIMEOUT = 120.0
QUEUE_SIZE = 10_000
TOOL_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_CONTEXT = 16_000


_FAILED = object()


class PluginManager:
    """Loads the plugins and calls them, keeping each failure inside its plugin."""

    def __init__(
        self, config: Any = None, *, timeout: float | None = None, tool_timeout: float = TOOL_TIMEOUT
    ) -> None:
        self.config = config
        self.timeout = float(
            timeout if timeout is not None else getattr(config, "plugin_timeout", DEFAULT_TIMEOUT)
        )
        self.tool_timeout = tool_timeout
        self.host = PluginHost(config)
        self.loaded: list[LoadedPlugin] = []
        self._tools: dict[str, tuple[LoadedPlugin, Tool]] = {}

    # -- loading ---------------------------------------------------------------------------
    def load(self, *, entry_points: bool = True, modules: Iterable[str] | None = None) -> None:
        """Load every plugin: entry points of group ngb.plugins, then `modules` (default: the
        `plugins` setting). A plugin that fails to load is listed as failed_to_load."""
        if entry_points:
            try:
                found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
            except Exception as exc:  # noqa: BLE001 - a broken installed distribution
                log.error("plugins: cannot read the %s entry points: %s", ENTRY_POINT_GROUP, exc)
                found = []  # type: ignore[assignment]
            for ep in found:
                self._load_one(ep.name, f"entry point {ep.name} = {ep.value}", ep.load)
        for path in modules if modules is not None else (getattr(self.config, "plugins", ()) or ()):
            self._load_one(
                path.rsplit(".", 1)[-1].split(":")[-1], f"module {path}", functools.partial(_import, path)
            )

    def add(self, obj: Any, name: str | None = None, source: str = "object") -> LoadedPlugin:
        """Register an object (or module, class, factory) as a plugin."""
        return self._load_one(name or _name_of(obj), source, lambda: obj)

    def _load_one(self, default_name: str, source: str, get: Callable[[], Any]) -> LoadedPlugin:
        plugin = LoadedPlugin(name=default_name, source=source)
        try:
            target = get()
            obj = _instantiate(target, self.host)
            plugin.obj = obj
            plugin.name = str(getattr(obj, "name", None) or default_name)
            plugin.hooks = tuple(h for h in HOOKS if callable(getattr(obj, h, None)))
            for tool in _listed(obj, "tools"):
                self._add_tool(plugin, tool)
        except Exception as exc:  # noqa: BLE001 - a bad plugin never stops the daemon
            plugin.state = "failed_to_load"
            plugin.error = f"{type(exc).__name__}: {exc}"
            log.error("plugin %s (%s): failed to load, not used: %s", plugin.name, source, plugin.error)
            log.debug("plugin %s: traceback:\n%s", plugin.name, traceback.format_exc())
        if any(p.name == plugin.name for p in self.loaded):
            plugin.name = f"{plugin.name}#{len(self.loaded) + 1}"
        self.loaded.append(plugin)
        if plugin.state == "active":
            log.info(
                "plugin %s loaded (%s): hooks %s, tools %s",
                plugin.name,
                source,
                ", ".join(plugin.hooks) or "none",
                ", ".join(plugin.tools) or "none",
            )
        return plugin

    def _add_tool(self, plugin: LoadedPlugin, tool: Any) -> None:
        from ..sandbox.tools import ToolService

        if not isinstance(tool, Tool):
            raise TypeError(f"tools must be ngb.plugins.Tool instances, got {type(tool).__name__}")
        if not TOOL_NAME_RE.fullmatch(tool.name):
            raise ValueError(f"tool name {tool.name!r} must match {TOOL_NAME_RE.pattern}")
        if hasattr(ToolService, f"_tool_{tool.name}") or tool.name in self._tools:
            raise ValueError(f"tool name {tool.name!r} is already taken")
        if not isinstance(tool.input_schema, dict) or tool.input_schema.get("type", "object") != "object":
            raise ValueError(f"tool {tool.name}: input_schema must be a JSON schema of type object")
        if not inspect.iscoroutinefunction(tool.handler) and not callable(tool.handler):
            raise TypeError(f"tool {tool.name}: handler must be an async function")
        plugin.tools[tool.name] = tool
        self._tools[tool.name] = (plugin, tool)

    # -- state -----------------------------------------------------------------------------
    @property
    def plugins(self) -> list[dict[str, Any]]:
        """For /status: every plugin with its state (active, disabled, failed_to_load)."""
        return [p.summary() for p in self.loaded]

    def active(self) -> list[LoadedPlugin]:
        return [p for p in self.loaded if p.state == "active"]

    def disable(
        self, plugin: LoadedPlugin, what: str, exc: BaseException | None, why: str | None = None
    ) -> None:
        if plugin.state != "active":
            return
        plugin.state = "disabled"
        reason = why or (f"{type(exc).__name__}: {exc}" if exc is not None else "failed")
        plugin.error = f"{what}: {reason}"[:500]
        log.error("plugin %s: %s failed (%s); plugin disabled until restart", plugin.name, what, reason)
        if exc is not None:
            log.debug(
                "plugin %s: traceback:\n%s",
                plugin.name,
                "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            )

    async def _invoke(
        self,
        plugin: LoadedPlugin,
        what: str,
        fn: Callable[..., Any],
        *args: Any,
        timeout: float | None = None,
        refusals: bool = False,
    ) -> Any:
        """Call fn(*args) (sync in a thread, async on the loop) bounded by the timeout; on failure
        disable the plugin and return _FAILED. With `refusals`, a Refused (ToolError) passes
        through: a tool's own "no" to the agent, not a failure."""
        if plugin.state != "active":
            return _FAILED
        limit = self.timeout if timeout is None else timeout
        plugin.calls += 1
        try:
            with trio.fail_after(limit):
                if _is_async(fn):
                    return await fn(*args)
                result = await trio.to_thread.run_sync(functools.partial(fn, *args), abandon_on_cancel=True)
                if inspect.isawaitable(result):
                    return await result
                return result
        except trio.TooSlowError:
            self.disable(plugin, what, None, f"no answer within {limit:g}s")
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the plugin's problem, not the daemon's
            if refusals and isinstance(exc, Refused):
                raise
            self.disable(plugin, what, exc)
        return _FAILED

    # -- hooks -----------------------------------------------------------------------------
    def _emit(self, hook: str, *args: Any) -> None:
        for plugin in self.active():
            if hook not in plugin.hooks or plugin.queue is None:
                continue
            try:
                plugin.queue.send_nowait((hook, args))
            except trio.WouldBlock:
                log.warning("plugin %s: %d events waiting; dropped a %s event", plugin.name, QUEUE_SIZE, hook)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def message_stored(self, message: Message) -> None:
        """An inbound message was committed (called by the daemon; never blocks)."""
        self._emit("on_message_stored", message)

    def reply_delivered(self, group: Group | None, message: Message) -> None:
        """A reply was delivered (called by the daemon; never blocks)."""
        if group is not None:
            self._emit("after_reply", group, message)

    async def before_turn(self, group: Group, messages: list[Message]) -> TurnDecision:
        """Ask every active plugin with before_turn, in load order. The first veto wins."""
        context: list[tuple[str, str]] = []
        for plugin in self.active():
            if "before_turn" not in plugin.hooks:
                continue
            result = await self._invoke(plugin, "before_turn", plugin.obj.before_turn, group, list(messages))
            if result is _FAILED or result is None:
                continue
            if isinstance(result, Veto):
                reason = str(result.reason or "no reason given")[:500]
                log.warning(
                    "plugin %s vetoed the turn of group %s (messages %d-%d): %s",
                    plugin.name,
                    group.folder,
                    messages[0].id if messages else 0,
                    messages[-1].id if messages else 0,
                    reason,
                )
                return TurnDecision(tuple(context), veto=reason, vetoed_by=plugin.name)
            if isinstance(result, str):
                if result.strip():
                    context.append((plugin.name, result[:MAX_CONTEXT]))
                continue
            self.disable(
                plugin, "before_turn", None, f"returned a {type(result).__name__}, not None, str or Veto"
            )
        return TurnDecision(tuple(context)) if context else NO_OPINION

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver the queued events to each plugin (one task per plugin, in order)."""
        async with trio.open_nursery() as nursery:
            for plugin in self.loaded:
                if plugin.state == "active" and any(
                    h in plugin.hooks for h in ("on_message_stored", "after_reply")
                ):
                    plugin.queue, plugin.receive = trio.open_memory_channel[tuple[str, tuple[Any, ...]]](
                        QUEUE_SIZE
                    )
                    nursery.start_soon(self._deliver, plugin)
            task_status.started()
            await trio.sleep_forever()

    async def _deliver(self, plugin: LoadedPlugin) -> None:
        async for hook, args in plugin.receive:
            if plugin.state != "active":
                return
            await self._invoke(plugin, hook, getattr(plugin.obj, hook), *args)

    # -- tools -----------------------------------------------------------------------------
    def tool_specs(self, group: Group | None = None) -> list[dict[str, Any]]:
        """The extra tools the agent of `group` may call (for the runner's tool list)."""
        out = []
        for name, (plugin, tool) in sorted(self._tools.items()):
            if plugin.state != "active" or (tool.main_only and group is not None and not group.is_main):
                continue
            out.append(
                {
                    "name": name,
                    "description": tool.description,
                    "input_schema": tool.input_schema,
                    "main_only": tool.main_only,
                }
            )
        return out

    def has_tool(self, name: str) -> bool:
        return name in self._tools

    async def call_tool(self, caller: Group, name: str, args: dict[str, Any]) -> Any:
        """Run a plugin tool for `caller` (the group whose socket the request came in on).
        Raises Refused for an unknown, unavailable or not-allowed tool and for invalid arguments."""
        found = self._tools.get(name)
        if found is None:
            raise Refused(f"unknown tool {name[:200]!r}")
        plugin, tool = found
        if plugin.state != "active":
            raise Refused(
                f"tool {name!r} is unavailable: its plugin {plugin.name} is disabled ({plugin.error})"
            )
        if tool.main_only and not caller.is_main:
            raise Refused(f"only the main group may use {name!r}")
        problems = validate(args, tool.input_schema)
        if problems:
            raise Refused(f"invalid arguments for {name}: {problems[0]}")
        call = ToolCall(group=caller, args=args, plugin=plugin.name, host=self.host)
        result = await self._invoke(
            plugin, f"tool {name}", tool.handler, call, timeout=self.tool_timeout, refusals=True
        )
        if result is _FAILED:
            raise Refused(f"tool {name!r} failed; its plugin {plugin.name} is disabled")
        return result

    # -- channels --------------------------------------------------------------------------
    def build_channels(self, config: Any, taken: Iterable[str] = ()) -> dict[str, Any]:
        """Build the plugins' channels (wrapped, so a failing one stays inside its plugin)."""
        out: dict[str, Any] = {}
        names = set(taken)
        for plugin in self.active():
            for factory in _listed(plugin.obj, "channels"):
                try:
                    channel = factory(config)
                    name = str(channel.name)
                    if name in names:
                        raise ValueError(f"a channel named {name!r} exists already")
                    for attr in ("run", "send"):
                        if not callable(getattr(channel, attr, None)):
                            raise TypeError(f"channel {name!r} has no {attr}()")
                except Exception as exc:  # noqa: BLE001
                    self.disable(plugin, "channel factory", exc)
                    break
                names.add(name)
                plugin.channels.append(name)
                out[name] = PluginChannel(channel, plugin, self)
        return out


# -- helpers -----------------------------------------------------------------------------------
def _import(path: str) -> Any:
    """'pkg.mod' -> the module; 'pkg.mod:attr' -> that attribute."""
    module, _, attr = path.partition(":")
    mod = importlib.import_module(module)
    return functools.reduce(getattr, attr.split("."), mod) if attr else mod


def _instantiate(target: Any, host: PluginHost) -> Any:
    if isinstance(target, ModuleType):
        setup = getattr(target, "setup", None)
        return setup(host) if callable(setup) else target
    if inspect.isclass(target) or inspect.isfunction(target):
        factory: Callable[..., Any] = target
        return factory(host)
    return target


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__dict__.get("__call__"))


def _name_of(obj: Any) -> str:
    name = getattr(obj, "name", None) or getattr(obj, "__name__", None) or type(obj).__name__
    return str(name).rsplit(".", 1)[-1]


def _listed(obj: Any, attr: str) -> list[Any]:
    value = getattr(obj, attr, None)
    if value is None:
        return []
    if callable(value) and not isinstance(value, list | tuple):
        value = value()
    return list(value or [])
