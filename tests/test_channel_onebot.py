"""QQ over OneBot v11 through the real daemon (in-process, fake agent) and the real channel code,
against tests/fakes/onebot.py (a OneBot v11 implementation speaking the wire protocol on loopback),
in forward mode (the daemon connects) and reverse mode (the implementation connects)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

import ngb.daemon as daemon_module
from ngb.channels import onebot
from ngb.channels.onebot import (
    OneBotChannel,
    chat_order,
    event_mark,
    mark_order,
    markdown_to_plain,
    parse_cq,
    render,
    to_segments,
)
from ngb.config import ConfigError, load_config
from ngb.records import Group
from tests.channel_helpers import StoppableDaemon, echo_each, stored, wait_until
from tests.conftest import free_port, make_config
from tests.fakes.agent import FakeBehaviour
from tests.fakes.onebot import FakeOneBot, at, reply, text

TOKEN = "onebot-secret-token-1"
SELF = 10000
GROUP = 123456
USER = 777


@pytest.fixture
async def fake() -> AsyncIterator[FakeOneBot]:
    async with trio.open_nursery() as nursery:
        bot = await FakeOneBot.start(nursery, access_token=TOKEN, self_id=SELF, nickname="Andy", heartbeat_interval=0.2)
        yield bot
        nursery.cancel_scope.cancel()


async def start(run_daemon: Any, monkeypatch: pytest.MonkeyPatch, table: dict[str, Any],
                behaviour: FakeBehaviour | None = None, *, token: str = TOKEN, wait: str | None = "connected") -> Any:
    """A daemon whose channels include QQ, built by onebot.from_config from [channels.qq] + env."""
    table = {"ping_interval": "1", "reconnect_base": "0.05", "reconnect_cap": "0.3", "api_timeout": "3", **table}
    original = daemon_module.build_channels

    def build(config: Any, memory: Any = None, media: Any = None, **kw: Any) -> dict[str, Any]:
        channels = original(config, memory=memory, media=media, **kw)
        channel = onebot.from_config(config, env={"NGB_ONEBOT_ACCESS_TOKEN": token}, memory=memory)
        assert channel is not None
        channels[channel.name] = channel
        return channels

    monkeypatch.setattr(daemon_module, "build_channels", build)
    d = await run_daemon(behaviour, NGB_CHANNELS=json.dumps({"qq": table}))
    if wait:
        await wait_until(lambda: d.daemon.channels["qq"].state == wait)
    return d


# -- end to end, forward websocket ------------------------------------------------------------------------
async def test_triggered_group_message_gets_one_threaded_reply_with_context(run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, {"url": fake.url})
    await d.daemon.registry.add(Group(chat=f"qq:group:{GROUP}", folder="qqgroup"))
    await fake.group_message(GROUP, [text("the build is red since 9am")], user_id=501, nickname="bob", card="Bob B.")
    await wait_until(lambda: d.daemon.channels["qq"].received == 1)

    trigger = await fake.group_message(GROUP, [at(SELF), text(" why is the build red?")], user_id=502)
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    # untriggered: stored, not answered; it rode along with the trigger as context (one turn)
    assert len(fake.sent) == 1 and d.launcher.started == 1
    sent = fake.sent[0]
    assert sent["kind"] == "group" and sent["target"] == GROUP
    assert sent["message"][0] == {"type": "reply", "data": {"id": str(trigger["message_id"])}}
    assert fake.texts_sent() == ["Echo: @Andy why is the build red?"]
    assert "the build is red since 9am" in d.launcher.prompts[-1][2]  # context
    await wait_until(lambda: d.daemon.outbox.delivered == 1)  # the reply is stored before this counts
    msgs = await stored(d, f"qq:group:{GROUP}")
    assert [(m.sender, m.sender_id, m.mentions_bot, m.from_bot) for m in msgs] == [
        ("Bob B.", "501", False, False), ("bob", "502", True, False), ("Andy", "", False, True)]
    assert msgs[1].platform_id == f"group:{GROUP}:{trigger['message_id']}"
    assert msgs[2].platform_id == f"group:{GROUP}:{sent['message_id']}"
    status = (await d.http.get("/status")).json()
    assert status["channels"]["qq"]["state"] == "connected"
    assert fake.actions[0][0] == "get_login_info"


async def test_cq_string_mention_and_reply_to_the_bot_trigger(run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, {"url": fake.url})
    await d.daemon.registry.add(Group(chat=f"qq:group:{GROUP}", folder="qqgroup"))
    await fake.group_message(GROUP, "[CQ:at,qq=99] not for the bot &#91;x&#93;")
    await fake.group_message(GROUP, f"[CQ:at,qq={SELF}] hi &#91;all&#93;")
    await wait_until(lambda: fake.sent)
    assert fake.texts_sent() == ["Echo: @Andy hi [all]"]
    msgs = await stored(d, f"qq:group:{GROUP}")
    assert msgs[0].text == "@99 not for the bot [x]" and not msgs[0].mentions_bot
    # Quoting the bot's own message (no @) addresses it too.
    await fake.group_message(GROUP, [reply(fake.sent[0]["message_id"]), text("and what else?")])
    await wait_until(lambda: len(fake.sent) == 2)
    assert fake.texts_sent()[1] == "Echo: and what else?"
    # The trigger word works as everywhere else.
    await fake.group_message(GROUP, "@Andy third")
    await wait_until(lambda: len(fake.sent) == 3)


async def test_private_message_needs_no_trigger(run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, {"url": fake.url})
    await d.daemon.registry.add(Group(chat=f"qq:private:{USER}", folder="carol"))
    event = await fake.private_message(USER, [text("what's on today?")], nickname="carol")
    await wait_until(lambda: fake.sent)
    assert fake.sent[0]["kind"] == "private" and fake.sent[0]["target"] == USER
    assert fake.sent[0]["message"] == [reply(event["message_id"]), text("Echo: what's on today?")]
    msgs = await stored(d, f"qq:private:{USER}")
    assert msgs[0].sender == "carol" and msgs[0].mentions_bot


async def test_long_reply_is_split_in_order_under_the_limit(run_daemon, monkeypatch, fake) -> None:
    paragraphs = [f"**Part {i}.** " + " ".join(f"Sentence {i}.{j} says a few words." for j in range(12))
                  for i in range(30)]
    long_text = "\n\n".join(paragraphs)
    assert len(long_text) > 10_000
    d = await start(run_daemon, monkeypatch, {"url": fake.url}, FakeBehaviour(reply=lambda p: [long_text]))
    await d.daemon.registry.add(Group(chat=f"qq:private:{USER}", folder="carol"))
    await fake.private_message(USER, "tell me everything")
    await wait_until(lambda: d.daemon.outbox.delivered >= 1)
    parts = fake.texts_sent()
    assert len(parts) >= 4 and all(len(p) <= 3000 for p in parts)
    assert [s["message"][0]["type"] for s in fake.sent] == ["reply"] + ["text"] * (len(parts) - 1)  # quote once
    assert parts[0].startswith("Part 0. Sentence 0.0")  # Markdown flattened
    assert all(p.endswith("words.") for p in parts)  # cut at paragraph/sentence ends
    assert "\n\n".join(parts) == long_text.replace("**", "")
    stored_bot = [m for m in await stored(d, f"qq:private:{USER}") if m.from_bot]
    assert len(stored_bot) == 1 and stored_bot[0].platform_id == f"private:{USER}:{fake.sent[0]['message_id']}"


async def test_disconnect_reconnect_delivers_missed_once_and_redelivery_is_not_answered_twice(
        run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, {"url": fake.url}, FakeBehaviour(reply=echo_each))
    channel: OneBotChannel = d.daemon.channels["qq"]
    await d.daemon.registry.add(Group(chat=f"qq:group:{GROUP}", folder="qqgroup", requires_trigger=False))
    first = await fake.group_message(GROUP, "before the outage")
    await wait_until(lambda: d.daemon.outbox.delivered == 1)  # its answer reached the daemon: no resend

    fake.down()
    await wait_until(lambda: channel.state in ("disconnected", "connecting"))
    missed = await fake.group_message(GROUP, "said while the daemon was away")  # no client: history only
    assert fake.clients == []
    fake.up()
    await wait_until(lambda: len(fake.sent) == 2)
    assert channel.state == "connected" and channel.sessions == 2 and channel.fetched >= 1
    await fake.push(missed)  # the implementation redelivers an event we already have
    await fake.push(first)
    await fake.group_message(GROUP, "after")  # answered after anything the redeliveries could start
    await wait_until(lambda: "Echo: after" in fake.texts_sent())
    assert fake.texts_sent() == ["Echo: before the outage", "Echo: said while the daemon was away", "Echo: after"]
    texts = [m.text for m in await stored(d, f"qq:group:{GROUP}") if not m.from_bot]
    assert texts == ["before the outage", "said while the daemon was away", "after"]
    status = (await d.http.get("/status")).json()
    assert status["channels"]["qq"]["state"] == "connected"


async def test_reply_made_while_disconnected_waits_and_arrives_once(run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, {"url": fake.url}, FakeBehaviour(delay=1.0))
    channel: OneBotChannel = d.daemon.channels["qq"]
    await d.daemon.registry.add(Group(chat=f"qq:private:{USER}", folder="carol"))
    await fake.private_message(USER, "answer me later")
    await wait_until(lambda: d.launcher.started == 1)  # stored, and the agent is thinking (1 s)
    fake.down()
    await wait_until(lambda: d.daemon.outbox.retries >= 1)  # "qq is disconnected": kept, retried
    assert fake.sent == []
    fake.up()
    await wait_until(lambda: d.daemon.outbox.delivered == 1, timeout=15)
    assert fake.texts_sent() == ["Echo: answer me later"] and channel.state == "connected"


async def test_without_history_api_reconnect_still_works(run_daemon, monkeypatch) -> None:
    async with trio.open_nursery() as nursery:
        fake = await FakeOneBot.start(nursery, access_token=TOKEN, self_id=SELF, history=False)
        d = await start(run_daemon, monkeypatch, {"url": fake.url})
        channel: OneBotChannel = d.daemon.channels["qq"]
        await d.daemon.registry.add(Group(chat=f"qq:group:{GROUP}", folder="qqgroup", requires_trigger=False))
        await fake.group_message(GROUP, "one")
        await wait_until(lambda: d.daemon.outbox.delivered == 1)  # its answer reached the daemon: no resend
        fake.drop()
        await wait_until(lambda: channel.sessions == 2 and channel.state == "connected")
        # the catch-up is asked right after "connected" is shown: wait for the ask (answered 1404)
        await wait_until(lambda: ("get_group_msg_history", {"group_id": GROUP, "count": 50}) in fake.actions)
        await fake.group_message(GROUP, "two")
        await wait_until(lambda: len(fake.sent) == 2)
        assert fake.texts_sent() == ["Echo: one", "Echo: two"]
        nursery.cancel_scope.cancel()


async def test_refused_send_is_retried_and_arrives_once(run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, {"url": fake.url})
    await d.daemon.registry.add(Group(chat=f"qq:private:{USER}", folder="carol"))
    fake.fail_sends = 1  # the implementation refuses the first send (retcode 100): retried by the outbox
    await fake.private_message(USER, "hello?")
    await wait_until(lambda: d.daemon.outbox.retries >= 1)
    await wait_until(lambda: d.daemon.outbox.delivered == 1, timeout=15)
    assert fake.texts_sent() == ["Echo: hello?"]


async def test_bad_token_is_unauthorized_and_other_channels_work(run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, {"url": fake.url}, token="wrong-token-000", wait="unauthorized")
    assert 403 in fake.rejected and fake.connections == 0
    status = (await d.http.get("/status")).json()
    assert status["channels"]["qq"]["state"] == "unauthorized"
    assert "wrong-token-000" not in json.dumps(d.daemon.channels["qq"].describe())
    await d.post("main", "local still works")
    bot = await d.wait_bot_replies("main", 1)
    assert bot[0]["text"] == "Echo: local still works"


async def test_token_in_query_string_is_accepted_by_the_fake(fake) -> None:
    from trio_websocket import open_websocket_url

    async with open_websocket_url(fake.url + f"?access_token={TOKEN}") as ws:
        assert json.loads(await ws.get_message())["meta_event_type"] == "lifecycle"


async def test_malformed_frames_are_logged_not_fatal(run_daemon, monkeypatch, fake, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="ngb.channels.onebot")
    d = await start(run_daemon, monkeypatch, {"url": fake.url})
    channel: OneBotChannel = d.daemon.channels["qq"]
    await d.daemon.registry.add(Group(chat=f"qq:group:{GROUP}", folder="qqgroup"))
    await fake.send_raw("this is not json")
    await fake.send_raw("[1, 2, 3]")
    await fake.send_raw(json.dumps({"hello": "world"}))
    await fake.send_raw(json.dumps({"post_type": "message", "message_type": "group", "self_id": SELF}))
    await fake.send_raw(json.dumps({"post_type": "message", "message_type": "group", "self_id": SELF,
                                    "group_id": GROUP, "user_id": 5, "message_id": 1, "message": 42}))
    await fake.group_message(GROUP, [at(SELF), text(" still alive?")])
    await wait_until(lambda: fake.sent)
    assert fake.texts_sent() == ["Echo: @Andy still alive?"]
    assert channel.state == "connected" and channel.sessions == 1
    assert channel.describe()["malformed"] == 5
    assert sum("malformed" in r.getMessage() or "neither an event" in r.getMessage() for r in caplog.records) >= 5


# -- restarts: the newest stored message per chat is kept in the store --------------------------------------
class Stoppable(StoppableDaemon):
    """A daemon in the test's nursery that can be stopped (as by systemctl stop) and started again
    on the same state dir; the QQ channel is built by the daemon itself (token in the environment)."""

    @classmethod
    async def start(cls, nursery: trio.Nursery, tmp: Path, fake: FakeOneBot, behaviour: FakeBehaviour) -> Stoppable:
        table = {"url": fake.url, "ping_interval": "1", "reconnect_base": "0.05", "reconnect_cap": "0.3",
                 "api_timeout": "3"}
        return await cls.start_with(nursery, make_config(tmp, NGB_CHANNELS=json.dumps({"qq": table})), behaviour, "qq")


def echo_asks(prompt: str) -> list[str]:
    """One "Echo: ..." per message of the batch that asks for an answer."""
    return [f"Echo: {t}" for t in re.findall(r">([^<]*)</message>", prompt) if "answer me" in t]


def user_texts(msgs: list[Any]) -> list[str]:
    return [m.text for m in msgs if not m.from_bot]


async def test_restart_catches_up_every_chat_with_a_mark(tmp_path, monkeypatch, fake) -> None:
    """Messages said while the daemon was stopped are fetched from the history after the restart,
    paged back to where the last run got to: each stored once, each trigger answered once."""
    monkeypatch.setenv(onebot.TOKEN_ENV, TOKEN)
    fake.page_cap = 3  # short pages (go-cqhttp answers 20 whatever is asked): the catch-up pages back
    group, private = f"qq:group:{GROUP}", f"qq:private:{USER}"
    start = int(time.time()) - 600
    async with trio.open_nursery() as nursery:
        first = await Stoppable.start(nursery, tmp_path, fake, FakeBehaviour(reply=echo_asks))
        await first.daemon.registry.add(Group(chat=group, folder="qqgroup"))
        await first.daemon.registry.add(Group(chat=private, folder="carol"))
        fake.now = start - 5
        older = await fake.group_message(GROUP, "before the restart")  # stored, not a trigger
        fake.now = start
        await fake.group_message(GROUP, [at(SELF), text(" before: answer me")])
        await fake.private_message(USER, "private before: answer me")
        await wait_until(lambda: first.daemon.outbox.delivered == 2)
        marks = await first.daemon.store.channel_marks("qq")
        assert set(marks) == {group, private}
        await first.stop()

        # said while no daemon runs: the implementation keeps them only in its history
        said: list[dict[str, Any]] = []
        for i in range(8):
            fake.now = start + 10 + i
            message = [at(SELF), text(f" down {i}: answer me")] if i % 3 == 0 else f"down {i}"
            said.append(await fake.group_message(GROUP, message))
        fake.now = start + 20
        said_private = [await fake.private_message(USER, f"private down {i}: answer me") for i in range(2)]
        assert fake.clients == []

        second = await Stoppable.start(nursery, tmp_path, fake, FakeBehaviour(reply=echo_asks))
        await wait_until(lambda: second.channel.catch_ups == 1, timeout=15)
        assert user_texts(await second.daemon.store.messages_after(group, 0)) == [
            "before the restart", "@Andy before: answer me"] + [
            f"@Andy down {i}: answer me" if i % 3 == 0 else f"down {i}" for i in range(8)]  # each once, in order
        assert user_texts(await second.daemon.store.messages_after(private, 0)) == [
            "private before: answer me", "private down 0: answer me", "private down 1: answer me"]
        marks = await second.daemon.store.channel_marks("qq")
        assert marks[group] == event_mark(said[-1])  # the newest stored (time, then id within a second)
        assert marks[private] == max((event_mark(e) or "" for e in said_private), key=mark_order)
        history_asks = [params for action, params in fake.actions if action == "get_group_msg_history"]
        assert any("message_seq" in params for params in history_asks)  # paged back...
        assert fake.history[("group", GROUP)][0] is older  # ...but not to the start: the mark bounds it
        assert not any(params.get("message_seq") == older["message_seq"] for params in history_asks)

        # a last trigger, live: once it is answered, every earlier one has had its turn
        fake.now = None
        await fake.group_message(GROUP, [at(SELF), text(" the last one: answer me")])
        await wait_until(lambda: "Echo: @Andy the last one: answer me" in fake.texts_sent(), timeout=15)
        await wait_until(lambda: "Echo: private down 1: answer me" in fake.texts_sent(), timeout=15)
        expected = ["@Andy before: answer me", "private before: answer me"]
        expected += [f"@Andy down {i}: answer me" for i in range(0, 8, 3)]
        expected += ["private down 0: answer me", "private down 1: answer me", "@Andy the last one: answer me"]
        assert sorted(fake.texts_sent()) == sorted(f"Echo: {t}" for t in expected)  # each answered once
        await second.stop()
        nursery.cancel_scope.cancel()


async def test_reply_to_the_bot_counts_after_a_restart(tmp_path, monkeypatch, fake) -> None:
    """Quoting a message the bot sent before a restart addresses the bot (the store knows it)."""
    monkeypatch.setenv(onebot.TOKEN_ENV, TOKEN)
    group = f"qq:group:{GROUP}"
    async with trio.open_nursery() as nursery:
        first = await Stoppable.start(nursery, tmp_path, fake, FakeBehaviour())
        await first.daemon.registry.add(Group(chat=group, folder="qqgroup"))
        await fake.group_message(GROUP, [at(SELF), text(" first question")])
        await wait_until(lambda: first.daemon.outbox.delivered == 1)  # the reply is stored with its id
        bot_message = fake.sent[0]["message_id"]
        await first.stop()

        second = await Stoppable.start(nursery, tmp_path, fake, FakeBehaviour())
        quoting = await fake.group_message(GROUP, [reply(bot_message), text("and then?")])  # no @-mention
        await wait_until(lambda: len(fake.sent) == 2, timeout=15)
        assert fake.texts_sent() == ["Echo: @Andy first question", "Echo: and then?"]
        assert fake.sent[1]["message"][0] == reply(quoting["message_id"])
        msgs = await second.daemon.store.messages_after(group, 0)
        assert [(m.text, m.mentions_bot) for m in msgs if not m.from_bot][-1] == ("and then?", True)
        await second.stop()
        nursery.cancel_scope.cancel()


async def test_history_unsupported_after_a_restart_is_one_log_line(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv(onebot.TOKEN_ENV, TOKEN)
    caplog.set_level(logging.INFO, logger="ngb.channels.onebot")
    group = f"qq:group:{GROUP}"
    async with trio.open_nursery() as nursery:
        fake = await FakeOneBot.start(nursery, access_token=TOKEN, self_id=SELF, history=False)
        first = await Stoppable.start(nursery, tmp_path, fake, FakeBehaviour())
        await first.daemon.registry.add(Group(chat=group, folder="qqgroup", requires_trigger=False))
        await fake.group_message(GROUP, "one")
        await wait_until(lambda: first.daemon.outbox.delivered == 1)
        await first.stop()

        await fake.group_message(GROUP, "said while stopped: lost, there is no history to ask")
        second = await Stoppable.start(nursery, tmp_path, fake, FakeBehaviour())
        await wait_until(lambda: ("get_group_msg_history", {"group_id": GROUP, "count": 50}) in fake.actions)
        await wait_until(lambda: second.channel.catch_ups == 1)
        fake.drop()  # a reconnect: not asked (nor logged) again
        await wait_until(lambda: second.channel.sessions == 2 and second.channel.catch_ups == 2)
        await fake.group_message(GROUP, "two")
        await wait_until(lambda: len(fake.sent) == 2)
        assert fake.texts_sent() == ["Echo: one", "Echo: two"]
        asks = [a for a, _ in fake.actions if a == "get_group_msg_history"]
        assert len(asks) == 1
        lines = [r.getMessage() for r in caplog.records if "has no get_group_msg_history" in r.getMessage()]
        assert len(lines) == 1 and "not fetched" in lines[0]
        assert second.channel.state == "connected"
        await second.stop()
        nursery.cancel_scope.cancel()


async def test_a_message_the_store_failed_on_is_fetched_again(run_daemon, monkeypatch, fake) -> None:
    """No ack on QQ: when storing a message fails, the connection is dropped and the catch-up after
    the reconnect fetches it from the history (the mark had not moved)."""
    d = await start(run_daemon, monkeypatch, {"url": fake.url}, FakeBehaviour(reply=echo_each))
    channel: OneBotChannel = d.daemon.channels["qq"]
    await d.daemon.registry.add(Group(chat=f"qq:group:{GROUP}", folder="qqgroup", requires_trigger=False))
    await fake.group_message(GROUP, "one")
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    ingest = d.daemon.store.ingest
    failed: list[str] = []

    async def flaky(msg: Any) -> Any:
        if msg.text == "two" and not failed:
            failed.append(msg.platform_id)
            raise OSError("disk I/O error")
        return await ingest(msg)

    monkeypatch.setattr(d.daemon.store, "ingest", flaky)
    await fake.group_message(GROUP, "two")
    await wait_until(lambda: len(fake.sent) == 2, timeout=15)
    assert failed and channel.sessions == 2 and channel.fetched >= 1
    assert fake.texts_sent() == ["Echo: one", "Echo: two"]
    assert [m.text for m in await stored(d, f"qq:group:{GROUP}") if not m.from_bot] == ["one", "two"]


def test_history_is_put_in_chat_order() -> None:
    napcat = [{"time": 5, "message_id": 900, "message_seq": 900, "real_seq": "12"},
              {"time": 5, "message_id": 100, "message_seq": 100, "real_seq": "11"},
              {"time": 4, "message_id": 500, "message_seq": 500, "real_seq": "10"}]
    assert [m["real_seq"] for m in chat_order(napcat)] == ["10", "11", "12"]
    gocq = [{"time": 5, "message_id": -7, "message_seq": 31}, {"time": 5, "message_id": 3, "message_seq": 30}]
    assert [m["message_seq"] for m in chat_order(gocq)] == [30, 31]
    unknown = [{"time": 5, "message_id": 9}, {"time": 5, "message_id": 1}, {"time": 4, "message_id": 5}]
    assert [m["message_id"] for m in chat_order(unknown)] == [5, 9, 1]  # within a second: as answered


def test_catch_up_marks_order_by_time_then_id() -> None:
    assert event_mark({"time": 1700000000, "message_id": -5}) == "1700000000:-5"
    assert event_mark({"time": 1700000000.9, "message_id": "42"}) == "1700000000:42"
    assert event_mark({"message_id": 42}) is None and event_mark({"time": True, "message_id": 1}) is None
    assert event_mark({"time": 1, "message_id": "abc"}) is None
    # a hash id of a later second is newer, whatever its value
    assert mark_order("1700000001:5") > mark_order("1700000000:2147483000")
    with pytest.raises(ValueError):
        mark_order("12345")


# -- reverse websocket ----------------------------------------------------------------------------------
async def test_reverse_websocket_checks_the_token_then_works(run_daemon, monkeypatch, fake) -> None:
    port = free_port()
    d = await start(run_daemon, monkeypatch, {"listen": f"127.0.0.1:{port}", "path": "/onebot/v11/ws"},
                    wait="connecting")
    channel: OneBotChannel = d.daemon.channels["qq"]
    url = f"ws://127.0.0.1:{port}/onebot/v11/ws"
    await wait_until(lambda: channel.listening_port == port)

    forger = FakeOneBot(access_token="", self_id=SELF)
    forger._nursery = fake._nursery
    forger.connect_reverse(url, token="forged")
    await wait_until(lambda: forger.rejected)
    assert forger.rejected[0] == 403 and channel.state == "unauthorized" and channel.rejected >= 1
    forger.down()

    fake.connect_reverse(url)
    await wait_until(lambda: channel.state == "connected")
    await d.daemon.registry.add(Group(chat=f"qq:group:{GROUP}", folder="qqgroup"))
    trigger = await fake.group_message(GROUP, [at(SELF), text(" reverse hello")])
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    assert fake.sent[0]["message"][0] == reply(trigger["message_id"])

    connections = fake.connections
    fake.drop()  # the implementation goes away and comes back by itself
    await wait_until(lambda: fake.connections > connections and channel.state == "connected")
    await fake.group_message(GROUP, [at(SELF), text(" again")])
    await wait_until(lambda: len(fake.sent) == 2)
    assert fake.texts_sent() == ["Echo: @Andy reverse hello", "Echo: @Andy again"]


# -- units ---------------------------------------------------------------------------------------------
def test_cq_codes_parse_and_unescape() -> None:
    segs = parse_cq("[CQ:reply,id=55][CQ:at,qq=10000] a&#44;b &#91;1&#93; [CQ:image,file=x.jpg,url=http://h/a&#44;b]")
    assert [s["type"] for s in segs] == ["reply", "at", "text", "image"]
    assert segs[2]["data"]["text"] == " a&#44;b [1] "  # &#44; is only an escape inside CQ parameters
    assert segs[3]["data"] == {"file": "x.jpg", "url": "http://h/a,b"}
    rendered = render(segs, "10000", "Andy")
    assert rendered == onebot.Rendered("@Andy a&#44;b [1] [image]", True, "55")
    assert not render(to_segments([at("all"), text(" hi")]), "10000", "Andy").mentions_self
    with pytest.raises(ValueError):
        to_segments([{"no": "type"}])


def test_markdown_is_flattened_for_qq() -> None:
    md = "# Title\n\n**bold** and *it* and `co*de*`\n- item\n\n[site](https://x.org)\n\n```py\nx = 1 ** 2\n```"
    assert markdown_to_plain(md) == "Title\n\nbold and it and co*de*\n• item\n\nsite (https://x.org)\n\nx = 1 ** 2"


def test_from_config(tmp_path, caplog) -> None:
    def config(table: dict[str, Any] | None) -> Any:
        env = {"NGB_STATE_DIR": str(tmp_path)}
        if table is not None:
            env["NGB_CHANNELS"] = json.dumps({"qq": table})
        return load_config(None, env=env)

    assert onebot.from_config(config(None), env={}) is None  # not configured: silent
    with caplog.at_level(logging.WARNING):
        assert onebot.from_config(config({"url": "ws://127.0.0.1:1/"}), env={}) is None
        assert onebot.from_config(config({}), env={"NGB_ONEBOT_ACCESS_TOKEN": "unit-token-xyz"}) is None
    assert [r.getMessage() for r in caplog.records if "qq" in r.getMessage()] == [
        "channel qq: off (no access token: set NGB_ONEBOT_ACCESS_TOKEN or channels.qq.access_token_file)",
        "channel qq: off (set channels.qq.url for a forward websocket or channels.qq.listen for reverse)"]
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    secret.chmod(0o600)
    ch = onebot.from_config(config({"listen": "0.0.0.0:6700", "access_token_file": str(secret)}), env={})
    assert ch is not None and ch.settings.mode == "reverse" and ch.settings.access_token == "from-file"
    assert ch.settings.host == "0.0.0.0" and ch.settings.port == 6700 and "from-file" not in repr(ch.settings)
    assert onebot.from_config(config({"url": "ws://h/", "enabled": False}), env={"NGB_ONEBOT_ACCESS_TOKEN": "unit-token-xyz"}) is None
    ch = onebot.from_config(config({"url": "ws://h/"}), env={"NGB_ONEBOT_ACCESS_TOKEN": "unit-token-xyz"})
    assert ch is not None and ch.settings.media_dir is None and ch.settings.media_dir_remote is None  # files: off
    ch = onebot.from_config(config({"url": "ws://h/", "media_dir": str(tmp_path / "qq"), "media_dir_onebot": "/app/share/",
                                    "image_max_mb": 5}), env={"NGB_ONEBOT_ACCESS_TOKEN": "unit-token-xyz"})
    assert ch is not None and ch.settings.media_dir == tmp_path / "qq" and ch.settings.media_dir_remote == "/app/share"
    assert ch.settings.image_max_bytes == 5 * 1024 * 1024
    for bad in ({"url": "http://h/"}, {"url": "ws://h/", "listen": "h:1"}, {"url": "ws://h/", "colour": 1},
                {"listen": "nope"}, {"url": "ws://h/", "media_dir_onebot": "share"}, {"url": "ws://h/", "image_max_mb": 99}):
        with pytest.raises(ConfigError):
            onebot.from_config(config(bad), env={"NGB_ONEBOT_ACCESS_TOKEN": "unit-token-xyz"})
