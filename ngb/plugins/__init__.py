"""Plugins: small extensions loaded at start (see docs/plugins.md). This package: `api` (what a
plugin sees), `manager` (loading and calling them), `channel` (a plugin's channel, kept inside it),
`schema` (the tool argument check). Plugins import from ``ngb.plugins``.

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

from .api import NO_OPINION, LoadedPlugin, PluginHost, Tool, ToolCall, ToolError, TurnDecision, Veto
from .channel import PluginChannel
from .manager import DEFAULT_TIMEOUT, ENTRY_POINT_GROUP, HOOKS, MAX_CONTEXT, TOOL_TIMEOUT, PluginManager
from .schema import validate

__all__ = [
    "DEFAULT_TIMEOUT",
    "ENTRY_POINT_GROUP",
    "HOOKS",
    "MAX_CONTEXT",
    "NO_OPINION",
    "TOOL_TIMEOUT",
    "LoadedPlugin",
    "PluginChannel",
    "PluginHost",
    "PluginManager",
    "Tool",
    "ToolCall",
    "ToolError",
    "TurnDecision",
    "Veto",
    "validate",
]
