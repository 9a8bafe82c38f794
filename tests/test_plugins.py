"""Plugins (ngb/plugins.py, docs/plugins.md) in a running daemon with the fake agent: context
reaches the prompt, a veto stops the turn, a raising or hanging plugin is disabled while the
daemon keeps answering (each message once), extra tools over the real requests socket, and an
extra channel end to end. The example plugin is the real file examples/ngb_chat_stats.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import trio

from ngb.plugins import PluginManager, Tool, ToolCall, Veto, validate
from ngb.records import Group, InboundMessage
from ngb.sandbox.tool_socket import serve_requests

EXAMPLE = "examples.ngb_chat_stats"
HERE = __name__  # plugins below are loaded from this very module (the same objects)


def plugin(d: Any, name: str) -> Any:
    return next(p for p in d.daemon.plugins.loaded if p.name == name)


async def eventually(check: Any, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.02)


# -- test plugins ------------------------------------------------------------------------------
class Exploding:
    name = "exploding"

    def __init__(self, host: Any) -> None:
        self.calls = 0

    async def before_turn(self, group: Group, messages: list[Any]) -> str:
        self.calls += 1
        raise RuntimeError("boom in before_turn")


class ThreadExploding:
    name = "thread_exploding"

    def __init__(self, host: Any) -> None:
        self.calls = 0

    def on_message_stored(self, message: Any) -> None:  # a plain function: runs in a worker thread
        self.calls += 1
        raise ValueError("boom in on_message_stored")


class Hanging:
    name = "hanging"

    def __init__(self, host: Any) -> None:
        pass

    async def before_turn(self, group: Group, messages: list[Any]) -> None:
        await trio.sleep_forever()


class Tools:
    name = "tools"

    def __init__(self, host: Any) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.tools = [
            Tool("whoami", "Which group is calling.", {"type": "object", "properties": {}}, self.whoami),
            Tool("admin_only", "Main group only.", {"type": "object", "properties": {}}, self.whoami, main_only=True),
        ]

    async def whoami(self, call: ToolCall) -> dict[str, Any]:
        self.seen.append((call.group.folder, call.args))
        return {"folder": call.group.folder, "chat": call.group.chat}


class Crashing:
    name = "crashing"

    def __init__(self, host: Any) -> None:
        self.tools = [Tool("crash", "Raises.", {"type": "object"}, self.crash)]

    async def crash(self, call: ToolCall) -> None:
        raise KeyError("the handler has a bug")


class MemoChannel:
    """A channel living in memory: inbound through `submit`, outbound recorded."""

    name = "memo"

    def __init__(self) -> None:
        self.state = "stopped"
        self.sent: list[tuple[str, str]] = []
        self.submit: Any = None

    async def run(self, submit: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.submit = submit
        self.state = "connected"
        task_status.started()
        await trio.sleep_forever()

    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        self.sent.append((chat, text))
        return f"memo-{len(self.sent)}"

    callback_path = "/channels/memo/hook"

    async def handle_callback(self, method: str, args: Any, body: bytes, remote: str | None) -> tuple[int, bytes]:
        """A platform callback with the signature from before headers were passed."""
        return 200, b"memo got " + body


class BrokenStatus:
    def describe(self) -> dict[str, Any]:
        raise RuntimeError("boom")


class BrokenChannel:
    name = "broken"
    state = "connecting"

    async def run(self, submit: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise ConnectionError("cannot reach the broken platform")

    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        raise AssertionError("never called while the plugin is disabled")


class Channels:
    name = "memo_channel"

    def __init__(self, host: Any) -> None:
        self.channel = MemoChannel()
        self.channels = [lambda config: self.channel]


class BrokenChannels:
    name = "broken_channel"

    def __init__(self, host: Any) -> None:
        self.channels = [lambda config: BrokenChannel()]


# -- hooks -------------------------------------------------------------------------------------
async def test_example_plugin_context_reaches_the_prompt_and_hooks_see_the_traffic(run_daemon) -> None:
    d = await run_daemon(NGB_PLUGINS=EXAMPLE)
    await d.post("main", "what time is it?")
    bot = await d.wait_bot_replies("main", 1)
    assert bot[0]["text"] == "Echo: what time is it?"
    prompt = d.launcher.prompts[-1][2]
    assert '<plugin_context plugin="chat_stats">' in prompt and "where the user lives" in prompt
    assert prompt.index("<plugin_context") < prompt.index("<messages>")
    stats = plugin(d, "chat_stats").obj
    await eventually(lambda: stats.received["local:main"] == 1 and stats.replies["local:main"] == 1)
    summary = d.daemon.plugins.plugins
    assert [(p["name"], p["state"]) for p in summary] == [("chat_stats", "active")]
    assert summary[0]["hooks"] == ["on_message_stored", "before_turn", "after_reply"]
    assert summary[0]["tools"] == ["chat_stats"]


async def test_veto_stops_the_turn_and_nothing_is_answered(run_daemon, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="ngb.plugins")
    d = await run_daemon(NGB_PLUGINS=EXAMPLE)
    vetoed = await d.post("main", "note to self #noreply")
    await eventually(lambda: any("vetoed" in r.getMessage() for r in caplog.records))
    await trio.sleep(0.3)
    assert d.launcher.started == 0, "a vetoed turn starts no container"
    assert not [m for m in await d.history("main") if m["from_bot"]]
    assert await d.daemon.store.cursor("main") == vetoed, "the vetoed message counts as seen"
    line = next(r.getMessage() for r in caplog.records if "vetoed" in r.getMessage())
    assert "chat_stats" in line and "#noreply" in line
    await d.post("main", "now answer me")
    bot = await d.wait_bot_replies("main", 1)
    assert [b["text"] for b in bot] == ["Echo: now answer me"]
    assert all("#noreply" not in p for _f, _n, p in d.launcher.prompts)


async def test_raising_and_hanging_plugins_are_disabled_and_the_daemon_keeps_answering(run_daemon, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="ngb.plugins")
    d = await run_daemon(
        NGB_PLUGINS=f"{HERE}:Exploding,{HERE}:ThreadExploding,{HERE}:Hanging,{EXAMPLE}", NGB_PLUGIN_TIMEOUT="0.3"
    )
    await d.post("main", "one")
    assert [b["text"] for b in await d.wait_bot_replies("main", 1)] == ["Echo: one"]
    states = {p["name"]: p["state"] for p in d.daemon.plugins.plugins}
    assert states == {"exploding": "disabled", "thread_exploding": "disabled", "hanging": "disabled",
                      "chat_stats": "active"}
    assert "no answer within 0.3s" in plugin(d, "hanging").error
    assert plugin(d, "exploding").error == "before_turn: RuntimeError: boom in before_turn"
    assert plugin(d, "thread_exploding").error == "on_message_stored: ValueError: boom in on_message_stored"
    assert "where the user lives" in d.launcher.prompts[-1][2], "the healthy plugin still adds its context"
    await d.post("main", "two")
    await d.post("main", "three")
    await d.wait_bot_replies("main", 2)
    await trio.sleep(0.5)
    texts = [m["text"] for m in await d.history("main") if m["from_bot"]]
    answered = " ".join(texts)
    assert texts.count("Echo: one") == 1 and "three" in answered, texts
    assert plugin(d, "exploding").obj.calls == 1, "a disabled plugin is not called again"
    assert plugin(d, "thread_exploding").obj.calls == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.getMessage().startswith("plugin exploding:")]
    assert len(errors) == 1 and "disabled" in errors[0].getMessage()
    assert any("Traceback" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


async def test_a_plugin_that_fails_to_load_is_listed_and_skipped(run_daemon) -> None:
    d = await run_daemon(NGB_PLUGINS=f"no_such_module_for_ngb,{EXAMPLE}")
    states = {p["name"]: p["state"] for p in d.daemon.plugins.plugins}
    assert states == {"no_such_module_for_ngb": "failed_to_load", "chat_stats": "active"}
    await d.post("main", "still fine?")
    await d.wait_bot_replies("main", 1)


# -- tools -------------------------------------------------------------------------------------
async def test_extra_tools_over_the_requests_socket(run_daemon, tmp_path: Path) -> None:
    d = await run_daemon(NGB_PLUGINS=f"{EXAMPLE},{HERE}:Tools,{HERE}:Crashing")
    registry = d.daemon.registry
    main = registry.get("local:main")
    beta = await registry.add(Group(chat="local:beta", folder="beta", requires_trigger=False))
    await d.post("main", "hello")
    await d.wait_bot_replies("main", 1)
    tools = {t["name"] for t in d.launcher.starts[-1]["tools"]}
    assert tools == {"chat_stats", "whoami", "admin_only", "crash"}, "the agent is told about the extra tools"

    async def serve(group: Group, sock_name: str) -> Any:
        path = tmp_path / sock_name
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(str(path))
        sock.listen(4)
        await nursery.start(serve_requests, trio.SocketListener(sock), lambda: group, d.daemon.tools)
        stream = await trio.open_unix_socket(str(path))
        buf = b""

        async def call(tool: str, args: dict[str, Any]) -> dict[str, Any]:
            nonlocal buf
            await stream.send_all(json.dumps({"id": "r1", "tool": tool, "args": args}).encode() + b"\n")
            while b"\n" not in buf:
                buf += await stream.receive_some()
            line, buf = buf.split(b"\n", 1)
            return dict(json.loads(line))

        return call

    async with trio.open_nursery() as nursery:
        as_main = await serve(main, "main.sock")
        as_beta = await serve(beta, "beta.sock")

        answer = await as_main("chat_stats", {})
        assert answer["ok"], answer
        assert answer["result"]["chat"] == "local:main" and answer["result"]["received"] >= 1
        # Input validated against the tool's schema before the handler runs.
        answer = await as_main("chat_stats", {"post": "yes"})
        assert answer == {"id": "r1", "ok": False, "error": "invalid arguments for chat_stats: 'post' must be boolean"}
        answer = await as_main("chat_stats", {"chat": "local:beta"})
        assert answer["ok"] is False and "unexpected 'chat'" in answer["error"]
        # The handler's own refusal is an error answer; the plugin stays on.
        answer = await as_beta("chat_stats", {"post": True})
        assert answer == {"id": "r1", "ok": False, "error": "nothing to report yet"}
        assert plugin(d, "chat_stats").state == "active"
        # Posting reaches the calling group's own chat through the outbox.
        answer = await as_main("chat_stats", {"post": True})
        assert answer["ok"], answer
        bot = await d.wait_bot_replies("main", 2)
        assert bot[-1]["text"].startswith("📊 ")
        # The caller is the socket's group, never what the arguments say.
        answer = await as_beta("whoami", {})
        assert answer["result"] == {"folder": "beta", "chat": "local:beta"}
        assert plugin(d, "tools").obj.seen == [("beta", {})]
        answer = await as_beta("admin_only", {})
        assert answer["ok"] is False and "only the main group" in answer["error"]
        assert (await as_main("admin_only", {}))["ok"]
        # A handler that raises disables its plugin only.
        answer = await as_main("crash", {})
        assert answer["ok"] is False and "disabled" in answer["error"]
        assert plugin(d, "crashing").state == "disabled" and "KeyError" in plugin(d, "crashing").error
        answer = await as_main("crash", {})
        assert answer["ok"] is False and "unavailable" in answer["error"]
        assert (await as_main("whoami", {}))["ok"]
        answer = await as_main("no_such_tool", {})
        assert answer == {"id": "r1", "ok": False, "error": "unknown tool 'no_such_tool'"}
        nursery.cancel_scope.cancel()


def test_schema_check() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1, "maximum": 5},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
            "mode": {"enum": ["a", "b"]},
        },
        "required": ["n"],
        "additionalProperties": False,
    }
    assert validate({"n": 3, "tags": ["x"], "mode": "a"}, schema) == []
    assert validate({"n": True}, schema) == ["'n' must be integer"]
    assert validate({"n": 9}, schema) == ["'n' must be at most 5"]
    assert validate({}, schema) == ["missing 'n'"]
    assert validate({"n": 1, "tags": ["long!"]}, schema) == ["'tags[0]' is longer than 3 characters"]
    assert validate({"n": 1, "mode": "c"}, schema) == ["'mode' must be one of 'a', 'b'"]
    assert validate([], schema) == ["the arguments must be object"]


async def test_tool_names_are_checked_at_load() -> None:
    manager = PluginManager(None, timeout=1)

    class Clash:
        name = "clash"
        tools = [Tool("send_message", "taken by a built-in", {"type": "object"}, lambda call: None)]

    class Veto_:
        name = "vetoer"

        async def before_turn(self, group: Group, messages: list[Any]) -> Veto:
            return Veto("no")

    assert manager.add(Clash()).state == "failed_to_load"
    assert "already taken" in (manager.loaded[0].error or "")
    manager.add(Veto_())
    decision = await manager.before_turn(Group(chat="local:x", folder="x"), [])
    assert decision.veto == "no" and decision.vetoed_by == "vetoer"


# -- channels ----------------------------------------------------------------------------------
async def test_extra_channel_end_to_end_and_a_broken_one_stays_inside_its_plugin(run_daemon) -> None:
    d = await run_daemon(NGB_PLUGINS=f"{HERE}:Channels,{HERE}:BrokenChannels")
    channel = plugin(d, "memo_channel").obj.channel
    assert d.daemon.channels["memo"].state == "connected"
    assert d.daemon.channels["broken"].state == "failed"
    assert d.daemon.channels["memo"].sent is channel.sent, "optional attributes reach the plugin's channel"
    assert getattr(d.daemon.channels["broken"], "typing", None) is None
    assert plugin(d, "broken_channel").state == "disabled"
    await d.daemon.registry.add(Group(chat="memo:room", folder="room", requires_trigger=False))
    stored = await channel.submit(InboundMessage(chat="memo:room", sender="bob", text="hi there", platform_id="m1"))
    await eventually(lambda: channel.sent == [("memo:room", "Echo: hi there")])
    history = await d.daemon.store.messages_after("memo:room", 0)
    assert [(m.text, m.from_bot) for m in history] == [("hi there", False), ("Echo: hi there", True)]
    assert history[0].id == stored.id and history[1].platform_id == "memo-1"
    hook = await d.http.post("/channels/memo/hook", content=b"ping")  # served through its plugin
    assert (hook.status_code, hook.text) == (200, "memo got ping")
    # A plugin channel whose status breaks leaves /status answering, with the reason.
    channel.status = BrokenStatus()
    await trio.sleep(0.3)  # past the /status snapshot's quarter second
    status = await d.http.get("/status")
    assert status.status_code == 200
    assert status.json()["channels"]["memo"] == {"last_error": "describe() failed: RuntimeError: boom",
                                                 "state": "connected", "pairing": False}
    # The broken channel's replies wait in the outbox (never lost), and the rest keeps working.
    await d.daemon.registry.add(Group(chat="broken:x", folder="bx", requires_trigger=False))
    await d.daemon.store.queue_message("bx", "broken:x", "for later")
    d.daemon.outbox.wake()
    await d.post("main", "still here")
    await d.wait_bot_replies("main", 1)
    assert await d.daemon.store.outbox_depth() >= 1
