"""WeCom intelligent robot (long connection) through the real daemon (in-process, fake agent) and
the real channel code, against tests/fakes/wecom.py speaking the JSON-over-websocket protocol."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

import ngb.daemon as daemon_module
from ngb.channels import wecom
from ngb.channels.wecom import WeComChannel
from ngb.config import ConfigError, load_config
from ngb.daemon import Daemon
from ngb.records import Group
from tests.channel_helpers import echo_each, wait_until
from tests.conftest import make_config
from tests.fakes.agent import FakeBehaviour, FakeLauncher
from tests.fakes.wecom import FakeWeCom

BOT, SECRET = "aibWeComTestBot", "wecom-secret-1"
GROUP = "wrGroupChat01"


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    async with trio.open_nursery() as nursery:
        gw = await FakeWeCom.start(nursery, bot_id=BOT, secret=SECRET)
        yield gw
        nursery.cancel_scope.cancel()


async def start(run_daemon: Any, monkeypatch: pytest.MonkeyPatch, fake: FakeWeCom,
                behaviour: FakeBehaviour | None = None, *, secret: str = SECRET, wait: str = "connected",
                **table: Any) -> Any:
    table = {"url": fake.url, "bot_id": BOT, "heartbeat_interval": "0.3", "reconnect_base": "0.05",
             "reconnect_cap": "0.3", "request_timeout": "3", **table}
    original = daemon_module.build_channels

    def build(config: Any, memory: Any = None, media: Any = None, **kw: Any) -> dict[str, Any]:
        channels = original(config, memory=memory, media=media, **kw)
        channel = wecom.from_config(config, env={"NGB_WECOM_SECRET": secret}, memory=memory)
        assert channel is not None
        channels[channel.name] = channel
        return channels

    monkeypatch.setattr(daemon_module, "build_channels", build)
    d = await run_daemon(behaviour, NGB_CHANNELS=json.dumps({"wecom": table}))
    await wait_until(lambda: d.daemon.channels["wecom"].state == wait)
    return d


async def test_group_mention_gets_one_answer_to_its_callback(run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, fake)
    await d.daemon.registry.add(Group(chat=f"wecom:{GROUP}", folder="team"))
    frame = await fake.user_message("@Andy what's the plan?", chatid=GROUP, user="lisi")
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    assert len(fake.sent) == 1
    answer = fake.sent[0]
    assert answer["cmd"] == "aibot_respond_msg" and answer["headers"]["req_id"] == frame["headers"]["req_id"]
    assert answer["body"]["stream"]["finish"] is True
    assert fake.texts() == ["Echo: @Andy what's the plan?"]
    msgs = await d.daemon.store.messages_after(f"wecom:{GROUP}", 0)
    assert [(m.sender_id, m.mentions_bot, m.from_bot) for m in msgs] == [("lisi", True, False), ("", False, True)]
    status = (await d.http.get("/status")).json()
    assert status["channels"]["wecom"]["state"] == "connected"


async def test_single_chat_and_long_reply_split_by_bytes(run_daemon, monkeypatch, fake) -> None:
    paragraphs = [f"第{i}段。" + "".join(f"这是第{i}.{j}句话，说了一些内容。" for j in range(20)) for i in range(30)]
    long_text = "\n\n".join(paragraphs)
    assert len(long_text) > 10_000
    d = await start(run_daemon, monkeypatch, fake, FakeBehaviour(reply=lambda p: [long_text]))
    await d.daemon.registry.add(Group(chat="wecom:zhangsan", folder="zs"))
    await fake.user_message("everything please", user="zhangsan")
    await wait_until(lambda: d.daemon.outbox.delivered >= 1)
    texts = fake.texts()
    assert len(texts) >= 7 and all(len(t.encode()) <= 4000 for t in texts)
    assert [f["cmd"] for f in fake.sent] == ["aibot_respond_msg"] + ["aibot_send_msg"] * (len(texts) - 1)
    assert all(f["body"]["chatid"] == "zhangsan" for f in fake.pushes)
    assert "\n\n".join(texts) == long_text
    assert all(t.endswith("。") for t in texts)


async def test_reconnect_and_redelivered_callback_answered_once(run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, fake, FakeBehaviour(reply=echo_each))
    channel: WeComChannel = d.daemon.channels["wecom"]
    await d.daemon.registry.add(Group(chat=f"wecom:{GROUP}", folder="team"))
    first = await fake.user_message("@Andy one", chatid=GROUP)
    await wait_until(lambda: d.daemon.outbox.delivered == 1)  # acked: not sent again after the drop
    fake.drop()
    await wait_until(lambda: channel.sessions == 2 and channel.state == "connected")
    again = {**first, "headers": {"req_id": "cb-retry"}}  # the same msgid pushed again
    await fake.push(again)
    await fake.user_message("@Andy two", chatid=GROUP)
    await wait_until(lambda: "Echo: @Andy two" in fake.texts())  # a stored duplicate is answered before
    assert fake.texts() == ["Echo: @Andy one", "Echo: @Andy two"]


async def test_bad_secret_is_unauthorized_and_local_works(run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, fake, secret="wrong", wait="unauthorized")
    assert fake.auth_failures >= 1 and fake.subscriptions == 0
    assert "wrong" not in json.dumps(d.daemon.channels["wecom"].describe()["last_error"])
    await d.post("main", "still here")
    assert (await d.wait_bot_replies("main", 1))[0]["text"] == "Echo: still here"


async def test_malformed_frames_and_heartbeat(run_daemon, monkeypatch, fake, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="ngb.channels.wecom")
    d = await start(run_daemon, monkeypatch, fake)
    channel: WeComChannel = d.daemon.channels["wecom"]
    await d.daemon.registry.add(Group(chat="wecom:zhangsan", folder="zs"))
    await fake.send_raw("{not json")
    await fake.send_raw(json.dumps({"cmd": "aibot_msg_callback", "headers": {"req_id": "x"}, "body": {}}))
    await fake.send_raw(json.dumps({"surprise": True}))
    await fake.user_message("alive?", user="zhangsan")
    await wait_until(lambda: fake.sent)
    assert channel.describe()["malformed"] == 3 and channel.sessions == 1
    await wait_until(lambda: fake.pings >= 2)  # application heartbeat acked: still one session
    assert channel.sessions == 1 and channel.state == "connected"


async def test_disconnected_event_reconnects(run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, fake)
    channel: WeComChannel = d.daemon.channels["wecom"]
    await fake.push({"cmd": "aibot_event_callback", "headers": {"req_id": "ev1"},
                     "body": {"msgid": "ev1", "aibotid": BOT, "msgtype": "event",
                              "event": {"eventtype": "disconnected_event"}}})
    await wait_until(lambda: channel.kicked == 1 and channel.sessions == 2 and channel.state == "connected")


async def test_callback_pushed_again_after_a_restart_is_stored_and_answered_once(tmp_path, monkeypatch,
                                                                                 fake) -> None:
    """The long connection has no history to catch up and no ack of a callback; what it has is the
    msgid: a message pushed again, even to the next run of the daemon, is stored and answered once
    (the store's key, not memory)."""
    monkeypatch.setenv(wecom.SECRET_ENV, SECRET)
    table = {"url": fake.url, "bot_id": BOT, "heartbeat_interval": "0.3", "reconnect_base": "0.05",
             "reconnect_cap": "0.3", "request_timeout": "3"}
    chat = f"wecom:{GROUP}"

    async def run(nursery: trio.Nursery, scope: trio.CancelScope, stopped: trio.Event) -> Daemon:
        daemon = Daemon(make_config(tmp_path, NGB_CHANNELS=json.dumps({"wecom": table})),
                        launcher_factory=lambda d: FakeLauncher(FakeBehaviour(reply=echo_each)))

        async def main(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await daemon.run(task_status=task_status)
            finally:
                stopped.set()

        await nursery.start(main)
        await wait_until(lambda: daemon.channels["wecom"].state == "connected")
        return daemon

    async with trio.open_nursery() as nursery:
        first_scope, first_stopped = trio.CancelScope(), trio.Event()
        first = await run(nursery, first_scope, first_stopped)
        await first.registry.add(Group(chat=chat, folder="team"))
        frame = await fake.user_message("@Andy one", chatid=GROUP)
        await wait_until(lambda: first.outbox.delivered == 1)
        first_scope.cancel()
        with trio.fail_after(10):
            await first_stopped.wait()

        second = await run(nursery, trio.CancelScope(), trio.Event())
        await fake.push({**frame, "headers": {"req_id": "cb-after-restart"}})  # the same msgid again
        await fake.user_message("@Andy two", chatid=GROUP)
        await wait_until(lambda: "Echo: @Andy two" in fake.texts())  # a stored duplicate is answered before
        assert fake.texts() == ["Echo: @Andy one", "Echo: @Andy two"]
        msgs = await second.store.messages_after(chat, 0)
        assert [m.text for m in msgs if not m.from_bot] == ["@Andy one", "@Andy two"]
        assert [m.platform_id for m in msgs if not m.from_bot][0] == frame["body"]["msgid"]
        nursery.cancel_scope.cancel()


def test_from_config(tmp_path, caplog) -> None:
    def config(table: dict[str, Any] | None) -> Any:
        env = {"NGB_STATE_DIR": str(tmp_path)}
        if table is not None:
            env["NGB_CHANNELS"] = json.dumps({"wecom": table})
        return load_config(None, env=env)

    assert wecom.from_config(config(None), env={}) is None
    with caplog.at_level(logging.WARNING):
        assert wecom.from_config(config({"bot_id": "b"}), env={}) is None
    assert any("channel wecom: off" in r.getMessage() for r in caplog.records)
    ch = wecom.from_config(config({"bot_id": "b"}), env={"NGB_WECOM_SECRET": "unit-secret-xyz"})
    assert ch is not None and ch.settings.url == "wss://openws.work.weixin.qq.com" and "unit-secret-xyz" not in repr(ch.settings)
    for bad in ({"bot_id": "b", "url": "https://x"}, {"bot_id": "b", "colour": 1}, {"bot_id": "b", "part_bytes": 5}):
        with pytest.raises(ConfigError):
            wecom.from_config(config(bad), env={"NGB_WECOM_SECRET": "unit-secret-xyz"})
