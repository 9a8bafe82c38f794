"""Feishu/Lark through the real daemon (in-process, fake agent) and the real lark-oapi SDK
(transport, models, protobuf frames, event decoder), against tests/fakes/lark.py on loopback."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio

from ngb.channels.lark import LarkChannel, LarkSettings, post_text, sdk
from ngb.config import ConfigError, load_config
from ngb.records import Group
from tests.channel_helpers import leave_mid_backlog
from tests.fakes.agent import FakeBehaviour
from tests.fakes.lark import FakeLark

APP_ID, SECRET = "cli_test", "secret-test"
GROUP = "oc_group1"


@pytest.fixture
async def fake_lark() -> AsyncIterator[FakeLark]:
    # Importing lark_oapi takes seconds of CPU (over ten on a loaded 2-core machine): done here,
    # once per process and in a worker thread as the channel does it, so that no test's wait for
    # the channel to connect (or be refused) includes it.
    await trio.to_thread.run_sync(sdk)
    async with trio.open_nursery() as nursery:
        fake = await FakeLark.start(nursery, app_id=APP_ID, app_secret=SECRET)
        yield fake
        nursery.cancel_scope.cancel()


def lark_env(fake: FakeLark, secret: str = SECRET, **table: Any) -> dict[str, str]:
    settings = {"domain": fake.domain, "reconnect_base": "0.05", "reconnect_cap": "0.3", "connect_timeout": "3",
                **table}
    return {"NGB_LARK_APP_ID": APP_ID, "NGB_LARK_APP_SECRET": secret, "NGB_CHANNELS": json.dumps({"lark": settings})}


async def wait_until(predicate: Callable[[], Any], timeout: float = 10) -> Any:
    with trio.fail_after(timeout):
        while not (value := predicate()):
            await trio.sleep(0.01)
        return value


async def stored(d: Any, chat: str) -> list[Any]:
    return await d.daemon.store.messages_after(chat, 0)


async def start(run_daemon: Any, fake: FakeLark, behaviour: FakeBehaviour | None = None, **table: Any) -> Any:
    d = await run_daemon(behaviour, **lark_env(fake, **table))
    channel = d.daemon.channels["lark"]
    await wait_until(lambda: channel.state == "connected")
    return d


def echo_each(prompt: str) -> list[str]:
    return [f"Echo: {t}" for t in re.findall(r">([^<]*)</message>", prompt)]


def acked(fake: FakeLark, event_frame: str) -> bool:
    return (event_frame, 200) in fake.acks


# -- end to end ----------------------------------------------------------------------------------------
async def test_group_mention_gets_exactly_one_reply_to_the_trigger(run_daemon: Any, fake_lark: FakeLark) -> None:
    d = await start(run_daemon, fake_lark)
    await d.daemon.registry.add(Group(chat=f"lark:{GROUP}", folder="team"))
    fake_lark.user_message(GROUP, "the deploy is at 3pm", sender="ou_bob")  # not addressed to the bot
    trigger = fake_lark.user_message(GROUP, "when is the deploy?", mention_bot=True)
    sent = await wait_until(lambda: fake_lark.sent)
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    await wait_until(lambda: len(fake_lark.reaction_calls) == 2 and not fake_lark.pending)  # 👀 on, then off
    # every event answered with {"code": 200}: the two messages and the bot's own reaction
    assert all(code == 200 for _, code in fake_lark.acks) and len(fake_lark.acks) == 3

    trigger_id = trigger["event"]["message"]["message_id"]
    assert sent[0]["kind"] == "reply" and sent[0]["reply_to"] == trigger_id and not sent[0]["reply_in_thread"]
    assert sent[0]["msg_type"] == "post" and sent[0]["text"] == "Echo: @Andy when is the deploy?"
    assert "the deploy is at 3pm" in d.launcher.prompts[-1][2]  # the untriggered message is context
    msgs = await stored(d, f"lark:{GROUP}")
    assert [(m.text, m.sender, m.sender_id, m.mentions_bot, m.from_bot) for m in msgs] == [
        ("the deploy is at 3pm", "Bob", "ou_bob", False, False),
        ("@Andy when is the deploy?", "Alice", "ou_alice", True, False),
        ("Echo: @Andy when is the deploy?", msgs[2].sender, "", False, True),
    ]
    assert msgs[2].platform_id == sent[0]["message_id"]  # send() returned the platform id
    assert sent[0]["uuid"]  # the outbox row is the idempotency key

    # another group message without the trigger: stored, not answered (the next trigger's one reply
    # proves the agent saw it and answered only the trigger)
    fake_lark.user_message(GROUP, "thanks all", sender="ou_bob")
    fake_lark.user_message(GROUP, "@andy and the rollback?")  # the trigger word typed, no real mention
    await wait_until(lambda: len(fake_lark.sent) == 2)
    await wait_until(lambda: d.daemon.outbox.delivered == 2)
    assert fake_lark.sent[1]["text"] == "Echo: @andy and the rollback?"
    assert [m.text for m in await stored(d, f"lark:{GROUP}") if not m.from_bot][-2:] == ["thanks all", "@andy and the rollback?"]

    await wait_until(lambda: fake_lark.pings >= 2)  # pinged at the server's interval (1s), with its service id
    assert fake_lark.bad_pings == 0 and fake_lark.bad_acks == 0
    status = (await d.http.get("/status")).json()
    assert status["channels"]["lark"]["state"] == "connected"
    channel = d.daemon.channels["lark"]
    assert channel.describe()["bot_open_id"] == "ou_bot" and channel.pongs >= 1


async def test_p2p_chat_needs_no_mention_and_reply_in_thread(run_daemon: Any, fake_lark: FakeLark) -> None:
    d = await start(run_daemon, fake_lark, reply_in_thread=True, format="text")
    await d.daemon.registry.add(Group(chat="lark:oc_p2p1", folder="alice"))
    event = fake_lark.user_message("oc_p2p1", "what's up", chat_type="p2p")
    sent = await wait_until(lambda: fake_lark.sent)
    assert sent[0]["reply_to"] == event["event"]["message"]["message_id"] and sent[0]["reply_in_thread"]
    assert sent[0]["msg_type"] == "text" and sent[0]["text"] == "Echo: what's up"
    assert (await stored(d, "lark:oc_p2p1"))[0].mentions_bot

    fake_lark.tokens.clear()  # the tenant token was revoked / expired early: a new one is fetched
    fake_lark.user_message("oc_p2p1", "still there?", chat_type="p2p")
    await wait_until(lambda: len(fake_lark.sent) == 2)
    assert fake_lark.sent[1]["text"] == "Echo: still there?" and d.daemon.outbox.retries == 0


async def test_chunked_event_and_rich_text(run_daemon: Any, fake_lark: FakeLark) -> None:
    d = await start(run_daemon, fake_lark)
    await d.daemon.registry.add(Group(chat=f"lark:{GROUP}", folder="team"))
    post = {"title": "Plan", "content": [
        [{"tag": "at", "user_id": "@_user_1", "user_name": "Andy"}, {"tag": "text", "text": " please review "},
         {"tag": "a", "text": "the doc", "href": "https://docs.example/x"}],
        [{"tag": "text", "text": "long part " * 300}, {"tag": "img", "image_key": "img_1"}],
    ]}
    event = fake_lark.event(GROUP, post, message_type="post", mentions=[fake_lark.mention(1, "ou_bot", "Andy")])
    frame_id = fake_lark.push(event, chunks=3)  # one event in three frames
    await wait_until(lambda: acked(fake_lark, frame_id))
    assert [a for a in fake_lark.acks if a[0] == frame_id] == [(frame_id, 200)]  # answered once, for the whole
    msgs = await stored(d, f"lark:{GROUP}")
    assert msgs[0].text.startswith("Plan\n@Andy please review the doc (https://docs.example/x)\nlong part ")
    # the embedded image is no file of this message's (the fake holds no img_1): the note in its place
    assert msgs[0].text.endswith("\n[photo: the download failed (code 234003: File not in msg.)]") and msgs[0].mentions_bot
    await wait_until(lambda: fake_lark.sent)


async def test_redelivered_event_is_stored_and_answered_once(run_daemon: Any, fake_lark: FakeLark) -> None:
    d = await start(run_daemon, fake_lark, FakeBehaviour(reply=echo_each))
    channel = d.daemon.channels["lark"]
    await d.daemon.registry.add(Group(chat=f"lark:{GROUP}", folder="team", requires_trigger=False))
    event = fake_lark.user_message(GROUP, "only once")
    await wait_until(lambda: fake_lark.sent)
    again = fake_lark.redeliver(event)  # Lark sends it again: acked, not stored again
    await wait_until(lambda: acked(fake_lark, again))

    # the connection drops before Lark saw the answer: the event comes again on the new connection
    lost = fake_lark.user_message(GROUP, "answer lost")
    await wait_until(lambda: len(fake_lark.sent) == 2)
    fake_lark.pending.append({"id": "frame-lost", "payload": json.dumps(lost).encode(), "chunks": 1, "event": lost})
    connections = fake_lark.connections
    fake_lark.drop()
    await wait_until(lambda: fake_lark.connections > connections and acked(fake_lark, "frame-lost"))
    await wait_until(lambda: channel.state == "connected")
    fake_lark.user_message(GROUP, "after reconnect")
    await wait_until(lambda: len(fake_lark.sent) == 3)
    await wait_until(lambda: d.daemon.outbox.delivered == 3)
    texts = [m.text for m in await stored(d, f"lark:{GROUP}") if not m.from_bot]
    assert texts == ["only once", "answer lost", "after reconnect"]
    assert [s["text"] for s in fake_lark.sent] == ["Echo: only once", "Echo: answer lost", "Echo: after reconnect"]
    assert channel.duplicates == 2 and channel.status.reconnects >= 1


async def test_outage_messages_and_replies_are_delivered_after_reconnect(run_daemon: Any, fake_lark: FakeLark) -> None:
    d = await start(run_daemon, fake_lark, FakeBehaviour(reply=echo_each, delay=0.5))
    channel = d.daemon.channels["lark"]
    await d.daemon.registry.add(Group(chat=f"lark:{GROUP}", folder="team", requires_trigger=False))
    fake_lark.user_message(GROUP, "before")
    await wait_until(lambda: not fake_lark.pending and fake_lark.acks)  # stored and acked; the agent thinks
    fake_lark.down()  # the reply is written while Lark is unreachable
    await wait_until(lambda: channel.state in ("disconnected", "connecting"))
    for i in range(2):
        fake_lark.user_message(GROUP, f"during outage {i}")
    await wait_until(lambda: d.daemon.outbox.retries >= 1)  # the send failed, retryable
    status = (await d.http.get("/status")).json()
    assert status["channels"]["lark"]["state"] in ("disconnected", "connecting")
    fake_lark.up()
    await wait_until(lambda: channel.state == "connected")
    await wait_until(lambda: len(fake_lark.sent) == 3, timeout=15)
    await wait_until(lambda: d.daemon.outbox.delivered == 3)
    texts = [m.text for m in await stored(d, f"lark:{GROUP}") if not m.from_bot]
    assert texts == ["before", "during outage 0", "during outage 1"]
    assert sorted(s["text"] for s in fake_lark.sent) == sorted(f"Echo: {t}" for t in texts)


async def test_long_reply_is_split_in_order(run_daemon: Any, fake_lark: FakeLark) -> None:
    paragraphs = [f"**Part {i}.** " + " ".join(f"Sentence {i}.{j} says a few words." for j in range(12)) for i in range(30)]
    long_text = "\n\n".join(paragraphs)
    d = await start(run_daemon, fake_lark, FakeBehaviour(reply=lambda p: [long_text]))
    await d.daemon.registry.add(Group(chat="lark:oc_p2p1", folder="alice"))
    trigger = fake_lark.user_message("oc_p2p1", "tell me everything", chat_type="p2p")
    await wait_until(lambda: d.daemon.outbox.delivered >= 1)
    parts = fake_lark.sent
    assert len(parts) >= 3 and all(len(p["text"]) <= 4000 for p in parts)
    assert parts[0]["kind"] == "reply" and parts[0]["reply_to"] == trigger["event"]["message"]["message_id"]
    assert all(p["kind"] == "create" and p["chat_id"] == "oc_p2p1" for p in parts[1:])
    assert "\n\n".join(p["text"] for p in parts) == long_text  # Markdown kept for the md element
    assert len({p["uuid"] for p in parts}) == len(parts)


async def test_failed_send_is_retried_once_delivered_and_fatal_one_is_not(run_daemon: Any, fake_lark: FakeLark) -> None:
    d = await start(run_daemon, fake_lark)
    await d.daemon.registry.add(Group(chat="lark:oc_p2p1", folder="alice"))
    fake_lark.fail_next("reply", 500)
    fake_lark.user_message("oc_p2p1", "hello", chat_type="p2p")
    await wait_until(lambda: d.daemon.outbox.delivered == 1, timeout=15)
    assert [s["text"] for s in fake_lark.sent] == ["Echo: hello"] and d.daemon.outbox.retries == 1

    fake_lark.fail_next("reply", 230002)  # the bot is not in the chat: not retried
    fake_lark.user_message("oc_p2p1", "again", chat_type="p2p")
    await wait_until(lambda: d.daemon.outbox.retries == 2)
    fake_lark.user_message("oc_p2p1", "third", chat_type="p2p")
    await wait_until(lambda: len(fake_lark.sent) == 2)
    assert fake_lark.sent[1]["text"].endswith("third") and d.daemon.outbox.retries == 2


async def test_wrong_app_secret_is_unauthorized_and_the_daemon_stays_up(
    run_daemon: Any, fake_lark: FakeLark, caplog: Any
) -> None:
    d = await run_daemon(**lark_env(fake_lark, secret="WRONG-secret"))
    channel = d.daemon.channels["lark"]
    await wait_until(lambda: channel.state == "unauthorized")
    status = (await d.http.get("/status")).json()
    assert status["channels"]["lark"]["state"] == "unauthorized"
    assert "app secret invalid" in status["channels"]["lark"]["last_error"]  # why, without reading logs
    await d.post("main", "still there?")
    replies = await d.wait_bot_replies("main", 1)
    assert replies[0]["text"] == "Echo: still there?"
    assert not any("WRONG-secret" in r.getMessage() for r in caplog.records)
    assert fake_lark.connections == 0


async def test_sdk_log_lines_go_through_the_daemon_logs_not_stdout(
    run_daemon: Any, fake_lark: FakeLark, caplog: Any, capfd: Any
) -> None:
    d = await run_daemon(**lark_env(fake_lark))
    await wait_until(lambda: d.daemon.channels["lark"].state == "connected")
    secret = d.daemon.channels["lark"].settings.app_secret
    logging.getLogger("Lark").warning("sdk says: token %s rejected", secret)
    assert "[Lark]" not in capfd.readouterr().out  # the SDK's own stdout handler is gone
    (record,) = [r for r in caplog.records if r.name == "Lark" and "sdk says" in r.getMessage()]
    assert secret not in record.getMessage()  # and the daemon's redaction applies to it


async def test_handshake_refusals(run_daemon: Any, fake_lark: FakeLark) -> None:
    fake_lark.reject_handshake = (514, "too many connections", 1000040350)
    d = await run_daemon(**lark_env(fake_lark))
    channel = d.daemon.channels["lark"]
    await wait_until(lambda: channel.status.reconnects >= 2)
    assert channel.state != "unauthorized" and "too many connections" in (channel.status.last_error or "")
    fake_lark.reject_handshake = (514, "auth failed", 0)
    await wait_until(lambda: channel.state == "unauthorized")
    assert "514: auth failed" in (channel.status.last_error or "")


async def test_mismatching_verification_token_is_refused(run_daemon: Any, fake_lark: FakeLark, caplog: Any) -> None:
    d = await start(run_daemon, fake_lark, verification_token="vtoken")
    await d.daemon.registry.add(Group(chat=f"lark:{GROUP}", folder="team", requires_trigger=False))
    forged = fake_lark.user_message(GROUP, "forged", token="not-the-token")
    fake_lark.user_message(GROUP, "genuine")
    await wait_until(lambda: fake_lark.sent)
    assert [m.text for m in await stored(d, f"lark:{GROUP}") if not m.from_bot] == ["genuine"]
    assert [s["text"] for s in fake_lark.sent] == ["Echo: genuine"]
    event_id = forged["header"]["event_id"]
    assert any(r.levelno == logging.WARNING and event_id in r.getMessage() and "verification token" in r.getMessage()
               for r in caplog.records)
    assert d.daemon.channels["lark"].refused == 1


async def test_fake_outlives_a_client_that_leaves_mid_delivery(run_daemon: Any, fake_lark: FakeLark) -> None:
    """The fake takes its client leaving at any moment (as every fake must): a connection reset
    while a backlog is being written ends that connection quietly, nothing is raised into the
    test, and the unanswered events go to the next connection."""
    async with httpx.AsyncClient(timeout=5) as http:
        answer = (await http.post(f"{fake_lark.domain}/callback/ws/endpoint",
                                  json={"AppID": APP_ID, "AppSecret": SECRET})).json()
    backlog = [fake_lark.user_message(GROUP, f"backlog {i} " + "x" * 4000) for i in range(300)]  # 1.2 MB
    await leave_mid_backlog(answer["data"]["URL"], lambda: fake_lark.delivered > 0)
    assert fake_lark.delivered < len(backlog)  # it cannot all be in flight: the writer is mid-send
    await wait_until(lambda: not fake_lark.websockets)  # that connection's handler has ended, quietly
    assert fake_lark.connections == 1 and len(fake_lark.pending) == len(backlog) and fake_lark.acks == []

    fake_lark.down()  # until the chat is registered (an unregistered one has a quota)
    d = await run_daemon(**lark_env(fake_lark))
    await d.daemon.registry.add(Group(chat=f"lark:{GROUP}", folder="team"))  # no mention: stored only
    fake_lark.up()
    await wait_until(lambda: not fake_lark.pending, timeout=30)
    texts = [m.text for m in await d.daemon.store.messages_after(f"lark:{GROUP}", 0, limit=1000)]
    assert sorted(texts) == sorted(json.loads(e["event"]["message"]["content"])["text"] for e in backlog)


# -- settings and parsing --------------------------------------------------------------------------------
def test_settings_from_config(tmp_path: Any) -> None:
    cfg = load_config(None, env={"NGB_LARK_APP_ID": "cli_1", "NGB_LARK_APP_SECRET": "s1", "NGB_STATE_DIR": str(tmp_path)})
    assert cfg.channels == {"lark": {"app_id": "cli_1", "app_secret": "s1"}}
    s = LarkSettings.from_table(cfg.channels["lark"])
    assert (s.domain, s.off_reason, s.reply_in_thread, s.format) == ("https://open.feishu.cn", None, False, "markdown")
    assert LarkSettings.from_table({"domain": "lark"}).domain == "https://open.larksuite.com"
    assert LarkSettings.from_table({"domain": "http://127.0.0.1:8080/"}).domain == "http://127.0.0.1:8080"
    for bad in ("ftp://x", "http://open.feishu.cn", "https://open.feishu.cn/open-apis"):
        with pytest.raises(ConfigError, match="channels.lark.domain"):
            LarkSettings.from_table({"domain": bad})
    with pytest.raises(ConfigError, match="channels.lark.reply_in_thraed: unknown key"):
        LarkSettings.from_table({"reply_in_thraed": True})
    assert "NGB_LARK_APP_SECRET" in (LarkSettings.from_table({"app_id": "cli_1"}).off_reason or "")
    secret = tmp_path / "lark.secret"
    secret.write_text("from-file\n")
    os.chmod(secret, 0o600)
    config_file = tmp_path / "ngb.toml"
    s = LarkSettings.from_table({"app_id": "cli_1", "app_secret_file": "lark.secret"}, config_file)
    assert s.app_secret == "from-file" and s.off_reason is None
    assert "from-file" not in repr(s)


def test_to_inbound() -> None:
    from lark_oapi.api.im.v1.model.p2_im_message_receive_v1 import P2ImMessageReceiveV1

    fake = FakeLark()
    channel = LarkChannel(LarkSettings(app_id="cli_1", app_secret="s", bot_open_id="ou_bot"))

    def parse(event: dict[str, Any]) -> Any:
        return channel.to_inbound(P2ImMessageReceiveV1(event))

    bob = fake.mention(2, "ou_bob", "Bob")
    m = parse(fake.event("oc_1", {"text": "@_user_1 ask @_user_2 and @_all"}, mentions=[fake.mention(1, "ou_bot", "Andy"), bob]))
    assert m is not None and m.text == "@Andy ask @Bob and @all" and m.mentions_bot and m.chat == "lark:oc_1"
    assert m.platform_id.startswith("om_") and m.sender_id == "ou_alice"
    m = parse(fake.event("oc_1", {"text": "hi @_user_2"}, mentions=[bob], parent_id="om_parent"))
    assert m is not None and not m.mentions_bot and m.text == "hi @Bob" and m.reply_to == "om_parent"
    assert parse(fake.event("oc_1", {"image_key": "img_v2"}, message_type="image")).text == ""  # the file: lark_media
    assert parse(fake.event("oc_1", {"file_key": "f", "file_name": "report.pdf"}, message_type="file")).text == ""
    assert parse(fake.event("oc_1", {"file_key": "s"}, message_type="sticker")).text == "[sticker]"
    assert parse(fake.event("oc_p", {"text": "dm"}, chat_type="p2p")).mentions_bot
    assert parse(fake.event("oc_p", {"text": "dm"}, chat_type="p2p")).direct
    assert not parse(fake.event("oc_1", {"text": "hi @_user_2"}, mentions=[bob])).direct
    assert parse(fake.event("oc_1", {"text": "mine"}, sender="ou_bot")) is None
    event = fake.event("oc_1", {"text": "from an app"})
    event["event"]["sender"]["sender_type"] = "app"
    assert parse(event) is None
    assert parse(fake.event("oc_1", {"template": "x"}, message_type="system")) is None


def test_post_text() -> None:
    content = {"title": "Release", "content": [
        [{"tag": "text", "text": "ship "}, {"tag": "at", "user_id": "@_user_1"}, {"tag": "emotion", "emoji_type": "SMILE"}],
        [{"tag": "code_block", "language": "PYTHON", "text": "print(1)"}],
        [{"tag": "a", "text": "https://x.example", "href": "https://x.example"}, {"tag": "media", "file_key": "f"}],
    ]}
    assert post_text(content, {"@_user_1": "Bob"}) == "Release\nship @Bob:SMILE:\n```python\nprint(1)\n```\nhttps://x.example[video]"
    assert post_text({"en_us": {"title": "", "content": [[{"tag": "text", "text": "wrapped"}]]}}) == "wrapped"
