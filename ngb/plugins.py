"""Plugins: small extensions loaded at start (see docs/plugins.md).

Where they come from: the Python entry points of group ``ngb.plugins`` of every installed
distribution, then the module paths of the ``plugins`` setting (``plugins = ["my_plugin"]``, or
``NGB_PLUGINS=my_plugin,other``). An entry point or module names either

* a module: its ``setup(host)`` is called when it has one (the result is the plugin), else the
  module itself is the plugin (hooks as module-level functions); or
* a class or function: called with the `PluginHost`; the result is the plugin.

A plugin is any object with some of these (all optional; plain functions run in a worker thread,
coroutines on the daemon's loop):

* ``name``: shown in logs and /status (default: the entry point's or module's name);
* ``on_message_stored(message)``: a message arrived and is stored (inbound messages only);
* ``before_turn(group, messages)``: the agent is about to get these messages; return None, a
  string (extra context put before the messages in the agent's prompt), or ``Veto(reason)`` (the
  turn does not happen, the reason is logged, nothing is answered; the messages count as seen);
* ``after_reply(group, message)``: a reply of the agent was delivered (stored in the history);
* ``tools``: a list of `Tool` (name, description, JSON schema, async handler(call)) that the
  agent may call through its request socket, authorized like the built-in tools;
* ``channels``: a list of factories ``factory(config) -> Channel`` (ngb/channels/base.py).

Failure rules: a hook or handler that raises, or does not return within ``plugin_timeout``,
disables its plugin for the rest of the run (one log line naming the plugin; the traceback at
debug level). A disabled plugin's hooks are skipped, its tools answer an error, its channels hold
their messages in the outbox. The daemon carries on; a message is never lost or answered twice
because of a plugin: events are delivered to hooks after the message is committed, a failing
`before_turn` counts as "no opinion", and a tool call is answered exactly once.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import logging
import math
import re
import traceback
from collections.abc import Awaitable, Callable, Iterable
from types import ModuleType
from typing import Any

import attrs
import trio

from .records import Group, Message
from .sandbox.tools import Refused

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ngb.plugins"
HOOKS = ("on_message_stored", "before_turn", "after_reply")
DEFAULT_TIMEOUT = 10.0
TOOL_TIMEOUT = 120.0
QUEUE_SIZE = 10_000
TOOL_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_CONTEXT = 16_000

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


_FAILED = object()


class PluginManager:
    """Loads the plugins and calls them, keeping each failure inside its plugin."""

    def __init__(self, config: Any = None, *, timeout: float | None = None, tool_timeout: float = TOOL_TIMEOUT) -> None:
        self.config = config
        self.timeout = float(timeout if timeout is not None else getattr(config, "plugin_timeout", DEFAULT_TIMEOUT))
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
            self._load_one(path.rsplit(".", 1)[-1].split(":")[-1], f"module {path}", functools.partial(_import, path))

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
            log.info("plugin %s loaded (%s): hooks %s, tools %s", plugin.name, source,
                     ", ".join(plugin.hooks) or "none", ", ".join(plugin.tools) or "none")
        return plugin

    def _add_tool(self, plugin: LoadedPlugin, tool: Any) -> None:
        from .sandbox.tools import ToolService

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

    def disable(self, plugin: LoadedPlugin, what: str, exc: BaseException | None, why: str | None = None) -> None:
        if plugin.state != "active":
            return
        plugin.state = "disabled"
        reason = why or (f"{type(exc).__name__}: {exc}" if exc is not None else "failed")
        plugin.error = f"{what}: {reason}"[:500]
        log.error("plugin %s: %s failed (%s); plugin disabled until restart", plugin.name, what, reason)
        if exc is not None:
            log.debug("plugin %s: traceback:\n%s", plugin.name,
                      "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))

    async def _invoke(self, plugin: LoadedPlugin, what: str, fn: Callable[..., Any], *args: Any,
                      timeout: float | None = None, refusals: bool = False) -> Any:
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
                log.warning("plugin %s vetoed the turn of group %s (messages %d-%d): %s", plugin.name,
                            group.folder, messages[0].id if messages else 0, messages[-1].id if messages else 0, reason)
                return TurnDecision(tuple(context), veto=reason, vetoed_by=plugin.name)
            if isinstance(result, str):
                if result.strip():
                    context.append((plugin.name, result[:MAX_CONTEXT]))
                continue
            self.disable(plugin, "before_turn", None, f"returned a {type(result).__name__}, not None, str or Veto")
        return TurnDecision(tuple(context)) if context else NO_OPINION

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver the queued events to each plugin (one task per plugin, in order)."""
        async with trio.open_nursery() as nursery:
            for plugin in self.loaded:
                if plugin.state == "active" and any(h in plugin.hooks for h in ("on_message_stored", "after_reply")):
                    plugin.queue, plugin.receive = trio.open_memory_channel[tuple[str, tuple[Any, ...]]](QUEUE_SIZE)
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
            out.append({"name": name, "description": tool.description, "input_schema": tool.input_schema,
                        "main_only": tool.main_only})
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
            raise Refused(f"tool {name!r} is unavailable: its plugin {plugin.name} is disabled ({plugin.error})")
        if tool.main_only and not caller.is_main:
            raise Refused(f"only the main group may use {name!r}")
        problems = validate(args, tool.input_schema)
        if problems:
            raise Refused(f"invalid arguments for {name}: {problems[0]}")
        call = ToolCall(group=caller, args=args, plugin=plugin.name, host=self.host)
        result = await self._invoke(plugin, f"tool {name}", tool.handler, call, timeout=self.tool_timeout,
                                    refusals=True)
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


class PluginChannel:
    """A plugin's channel, kept inside its plugin: if `run` raises, the plugin is disabled and the
    channel goes quiet (state "failed"); while the plugin is disabled, `send` raises a retryable
    ChannelError so replies wait in the outbox instead of being lost."""

    def __init__(self, inner: Any, plugin: LoadedPlugin, manager: PluginManager) -> None:
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

    async def run(self, submit: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
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
        from .channels.base import ChannelError

        if self.state == "failed":
            raise ChannelError(f"channel {self.name} is off: plugin {self.plugin.name} is disabled", retryable=True)
        return await self.inner.send(chat, text, reply_to)  # type: ignore[no-any-return]


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
        return target(host)
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


# -- a small JSON schema check (the subset tools use) ------------------------------------------
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate(value: Any, schema: dict[str, Any], where: str = "") -> list[str]:
    """Problems of `value` against `schema` (type, properties, required, additionalProperties,
    enum, const, minLength, maxLength, pattern, minimum, maximum, items, minItems, maxItems).
    An empty list: valid."""
    at = f"{where!r}" if where else "the arguments"
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_TYPES.get(k, lambda v: True)(value) for k in kinds):
            return [f"{at} must be {' or '.join(kinds)}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{at} must be one of {', '.join(map(repr, schema['enum']))}"]
    if "const" in schema and value != schema["const"]:
        return [f"{at} must be {schema['const']!r}"]
    problems: list[str] = []
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append(f"{at} is shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{at} is longer than {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{at} does not match {schema['pattern']!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{at} must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{at} must be at most {schema['maximum']}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append(f"{at} needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{at} takes at most {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                problems += validate(item, schema["items"], f"{where or 'item'}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key in schema.get("required") or ():
            if key not in value:
                problems.append(f"missing {key!r}")
        for key, item in value.items():
            if key in props:
                problems += validate(item, props[key], f"{where}.{key}" if where else str(key))
            elif schema.get("additionalProperties") is False:
                problems.append(f"unexpected {key!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += validate(item, schema["additionalProperties"], f"{where}.{key}" if where else str(key))
    return problems
