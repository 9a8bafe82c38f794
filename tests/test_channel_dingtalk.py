"""DingTalk through the real daemon (in-process, fake agent) and the real dingtalk-stream SDK, in
Stream mode, against tests/fakes/dingtalk.py (open-connection API, websocket gateway, session
webhooks, robot API) on loopback."""

from __future__ import annotations

import json
import logging
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from dingtalk_stream import ChatbotMessage

from ngb.aio_bridge import BRIDGE
from ngb.channels import dingtalk
from ngb.channels.dingtalk import DingTalkChannel, DingTalkSettings
from ngb.config import ConfigError, load_config
from ngb.records import Group
from tests.channel_helpers import StoppableDaemon, echo_each, leave_mid_backlog, stored, wait_until
from tests.conftest import make_config
from tests.fakes.agent import FakeBehaviour
from tests.fakes.dingtalk import FakeDingTalk

CLIENT_ID, SECRET = "dingapp0001", "s3cret-DT-0001"
GROUP, DM = "cidGroupTeam0001==", "cidDirectAlice01=="


@pytest.fixture
async def fake_dt() -> AsyncIterator[FakeDingTalk]:
    async with trio.open_nursery() as nursery:
        fake = await FakeDingTalk.start(nursery, client_id=CLIENT_ID, client_secret=SECRET)
        yield fake
        nursery.cancel_scope.cancel()


def dt_env(fake: FakeDingTalk, secret: str = SECRET, **table: Any) -> dict[str, str]:
    settings = {"gateway_url": fake.gateway_url, "api_base": fake.api_base, "ping_interval": "2",
                "reconnect_base": "0.05", "reconnect_cap": "0.3", "connect_timeout": "3", **table}
    return {"NGB_DINGTALK_CLIENT_ID": CLIENT_ID, "NGB_DINGTALK_CLIENT_SECRET": secret,
            "NGB_CHANNELS": json.dumps({"dingtalk": settings})}


async def start(run_daemon: Any, fake: FakeDingTalk, behaviour: FakeBehaviour | None = None, **table: Any) -> Any:
    d = await run_daemon(behaviour, **dt_env(fake, **table))
    channel = d.daemon.channels["dingtalk"]
    await wait_until(lambda: channel.state == "connected")
    return d


async def settled(d: Any, folder: str, chat: str) -> None:
    """Wait until the group has nothing left to answer and nothing waits in the outbox: no turn can
    follow, so what was sent by now is all that will be sent."""
    with trio.fail_after(10):
        while await d.daemon.store.pending_input(folder, chat) or await d.daemon.store.outbox_depth():
            await trio.sleep(0.02)


async def outbox_row(d: Any, chat: str, index: int, state: str, timeout: float = 15) -> Any:
    """Wait until the chat's outbox row number ``index`` (oldest first) is in ``state``
    ("sent", or "failed": given up); returns it."""
    with trio.fail_after(timeout):
        while True:
            rows = await d.daemon.store.outbox_items(chat)
            if len(rows) > index and rows[index].state == state:
                return rows[index]
            await trio.sleep(0.02)


# -- end to end --------------------------------------------------------------------------------------
async def test_group_mention_gets_one_reply_through_the_session_webhook(
    run_daemon: Any, fake_dt: FakeDingTalk, caplog: Any
) -> None:
    caplog.set_level(logging.INFO)
    d = await start(run_daemon, fake_dt)
    await d.daemon.registry.add(Group(chat=f"dingtalk:{GROUP}", folder="team"))
    data = fake_dt.group_message(GROUP, "when is the deploy?", nick="Bob", staff_id="bob01")
    sent = await wait_until(lambda: fake_dt.sent)
    await settled(d, "team", f"dingtalk:{GROUP}")
    assert len(fake_dt.sent) == 1  # exactly one reply
    assert sent[0]["via"] == "webhook" and sent[0]["chat"] == GROUP
    assert sent[0]["msgtype"] == "markdown" and sent[0]["text"] == "Echo: when is the deploy?"
    assert sent[0]["title"] == "Echo: when is the deploy?"
    assert fake_dt.api_calls == [] and fake_dt.token_requests == 0  # the webhook needs no token
    await wait_until(lambda: d.daemon.outbox.delivered == 1)  # the reply is stored before this counts
    msgs = await stored(d, f"dingtalk:{GROUP}")
    assert [(m.text, m.sender, m.sender_id, m.mentions_bot, m.from_bot) for m in msgs[:1]] == [
        ("when is the deploy?", "Bob", "bob01", True, False)]
    assert msgs[0].platform_id == data["msgId"] and [m.from_bot for m in msgs] == [False, True]
    assert not fake_dt.pending  # acked after it was stored
    assert [(a["code"], a["msgId"]) for a in fake_dt.acks] == [(200, data["msgId"])]
    assert fake_dt.open_requests[0]["subscriptions"] == [{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]
    assert fake_dt.open_requests[0]["clientId"] == CLIENT_ID
    status = (await d.http.get("/status")).json()
    assert status["channels"]["dingtalk"]["state"] == "connected"
    session = data["sessionWebhook"].rpartition("session=")[2]
    assert any("sendBySession?session=<redacted>" in r.getMessage() for r in caplog.records)
    assert not any(session in r.getMessage() for r in caplog.records)  # it lets anyone post to the chat


async def test_group_message_not_addressed_to_the_bot_is_context(run_daemon: Any, fake_dt: FakeDingTalk) -> None:
    d = await start(run_daemon, fake_dt)
    await d.daemon.registry.add(Group(chat=f"dingtalk:{GROUP}", folder="team"))
    fake_dt.group_message(GROUP, "the deploy is at 3pm", in_at_list=False, at_users=[{"dingtalkId": "$:other"}])
    await wait_until(lambda: not fake_dt.pending)  # stored, then acked
    fake_dt.group_message(GROUP, "when is the deploy?")
    await wait_until(lambda: fake_dt.sent)
    await settled(d, "team", f"dingtalk:{GROUP}")
    # one turn, for the trigger: a turn for the first message would have been answered before it
    assert [s["text"] for s in fake_dt.sent] == ["Echo: when is the deploy?"] and len(d.launcher.prompts) == 1
    assert "the deploy is at 3pm" in d.launcher.prompts[-1][2]  # the earlier one went along as context


async def test_direct_message_triggers_and_falls_back_to_batch_send(run_daemon: Any, fake_dt: FakeDingTalk) -> None:
    d = await start(run_daemon, fake_dt)
    await d.daemon.registry.add(Group(chat=f"dingtalk:{DM}", folder="alice"))  # requires a trigger: 1:1 is one
    fake_dt.direct_message(DM, "what's up", staff_id="alice01")
    await wait_until(lambda: fake_dt.sent)
    assert fake_dt.sent[0] == {"via": "webhook", "chat": DM, "msgtype": "markdown", "text": "Echo: what's up",
                               "title": "Echo: what's up"}
    msgs = await stored(d, f"dingtalk:{DM}")
    assert msgs[0].mentions_bot and msgs[0].sender_id == "alice01"

    fake_dt.direct_message(DM, "and later?", staff_id="alice01", webhook_ttl=0)  # its webhook has expired
    await wait_until(lambda: len(fake_dt.sent) == 2)
    assert fake_dt.sent[1]["via"] == "batch" and fake_dt.sent[1]["user"] == "alice01"
    call = fake_dt.api_calls[-1]
    assert call["path"] == "/v1.0/robot/oToMessages/batchSend"
    assert call["body"]["robotCode"] == CLIENT_ID and call["body"]["userIds"] == ["alice01"]
    assert call["body"]["msgKey"] == "sampleMarkdown"
    assert json.loads(call["body"]["msgParam"]) == {"title": "Echo: and later?", "text": "Echo: and later?"}
    await wait_until(lambda: d.daemon.outbox.delivered == 2)
    bot = [m for m in await stored(d, f"dingtalk:{DM}") if m.from_bot]
    assert bot[1].platform_id == fake_dt.sent[1]["processQueryKey"]  # the robot API's id (a webhook has none)
    assert len(fake_dt.webhook_posts) == 1  # the expired webhook was not tried


async def test_expired_group_webhook_uses_the_robot_api(run_daemon: Any, fake_dt: FakeDingTalk) -> None:
    d = await start(run_daemon, fake_dt, FakeBehaviour(reply=echo_each))
    await d.daemon.registry.add(Group(chat=f"dingtalk:{GROUP}", folder="team"))
    fake_dt.group_message(GROUP, "first", webhook_ttl=0)
    await wait_until(lambda: fake_dt.sent)
    assert fake_dt.sent[0]["via"] == "group" and fake_dt.sent[0]["chat"] == GROUP
    assert fake_dt.api_calls[0]["path"] == "/v1.0/robot/groupMessages/send"
    assert fake_dt.api_calls[0]["body"]["openConversationId"] == GROUP
    assert fake_dt.webhook_posts == []

    # a webhook DingTalk has dropped before its time: "session 不存在" -> the robot API, same token
    fake_dt.group_message(GROUP, "second")
    fake_dt._sessions.clear()
    await wait_until(lambda: len(fake_dt.sent) == 2)
    assert [w["errcode"] for w in fake_dt.webhook_posts] == [300001]
    assert fake_dt.sent[1]["via"] == "group" and fake_dt.sent[1]["text"] == "Echo: second"
    assert fake_dt.token_requests == 1

    # an access token DingTalk no longer takes: a new one, then the send goes through
    fake_dt.revoke_tokens()
    fake_dt.group_message(GROUP, "third", webhook_ttl=0)
    await wait_until(lambda: len(fake_dt.sent) == 3)
    assert fake_dt.token_requests == 2 and d.daemon.outbox.retries == 0


async def test_redelivered_message_is_stored_and_answered_once(run_daemon: Any, fake_dt: FakeDingTalk) -> None:
    d = await start(run_daemon, fake_dt, FakeBehaviour(reply=echo_each))
    channel = d.daemon.channels["dingtalk"]
    await d.daemon.registry.add(Group(chat=f"dingtalk:{GROUP}", folder="team"))
    # the client stores and acks it, but the ack is lost with the connection: DingTalk pushes it
    # again on the next one (a new frame messageId, the same msgId)
    fake_dt.lose_ack_of.add("msgLOST1")
    fake_dt.group_message(GROUP, "only once", msg_id="msgLOST1")
    await wait_until(lambda: fake_dt.connections == 2 and not fake_dt.pending)
    await wait_until(lambda: channel.state == "connected")
    assert len(fake_dt.open_requests) == 2  # a fresh ticket for the new connection
    assert fake_dt.deliveries == 2 and channel.duplicates == 1
    # and a push repeated on a live connection
    data = fake_dt.group_message(GROUP, "also once")
    await wait_until(lambda: not fake_dt.pending)
    fake_dt.redeliver(data)
    await wait_until(lambda: not fake_dt.pending and len(fake_dt.acks) == 3)
    await wait_until(lambda: len(fake_dt.sent) >= 2)
    await settled(d, "team", f"dingtalk:{GROUP}")
    assert [m.text for m in await stored(d, f"dingtalk:{GROUP}") if not m.from_bot] == ["only once", "also once"]
    assert sorted(s["text"] for s in fake_dt.sent) == ["Echo: also once", "Echo: only once"]
    assert channel.duplicates == 2 and all(a["code"] == 200 for a in fake_dt.acks)


async def test_message_that_could_not_be_stored_is_not_acked(fake_dt: FakeDingTalk) -> None:
    calls: list[Any] = []

    async def submit(inbound: Any) -> None:
        calls.append(inbound)
        if len(calls) == 1:
            raise OSError("disk full")

    settings = DingTalkSettings.from_table({"client_id": CLIENT_ID, "client_secret": SECRET,
                                            "gateway_url": fake_dt.gateway_url, "api_base": fake_dt.api_base,
                                            "reconnect_base": "0.05", "reconnect_cap": "0.3"})
    channel = DingTalkChannel(settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run, submit)
        await wait_until(lambda: channel.state == "connected")
        data = fake_dt.group_message(GROUP, "keep me")
        await wait_until(lambda: calls)
        # frames are handled one at a time, in order: once the next message is acked, the first
        # one's answer (if any) is out too
        later = fake_dt.group_message(GROUP, "and me")
        await wait_until(lambda: any(a["msgId"] == later["msgId"] for a in fake_dt.acks))
        assert [a["msgId"] for a in fake_dt.acks] == [later["msgId"]]  # not stored -> not acked
        assert [p["data"]["msgId"] for p in fake_dt.pending] == [data["msgId"]]  # -> DingTalk keeps it
        fake_dt.drop_websockets()
        await wait_until(lambda: len(calls) == 3 and not fake_dt.pending)
        assert calls[2].platform_id == data["msgId"] and fake_dt.acks[-1]["msgId"] == data["msgId"]
        assert all(a["code"] == 200 for a in fake_dt.acks)
        nursery.cancel_scope.cancel()
    assert channel.state == "stopped"


async def test_outage_sends_are_delivered_and_missed_messages_arrive(run_daemon: Any, fake_dt: FakeDingTalk) -> None:
    d = await start(run_daemon, fake_dt, FakeBehaviour(reply=echo_each, delay=0.8))
    channel = d.daemon.channels["dingtalk"]
    await d.daemon.registry.add(Group(chat=f"dingtalk:{GROUP}", folder="team", requires_trigger=False))
    fake_dt.group_message(GROUP, "before")
    await wait_until(lambda: not fake_dt.pending)  # stored and acked; the agent is still thinking
    fake_dt.gateway_down()  # the stream is gone (the webhook and the robot API still answer)
    await wait_until(lambda: channel.state in ("disconnected", "connecting"))
    fake_dt.group_message(GROUP, "during the outage")
    await wait_until(lambda: fake_dt.sent, timeout=10)
    assert channel.state != "connected"  # the reply went out while the stream was down
    assert fake_dt.sent[0]["text"] == "Echo: before" and fake_dt.sent[0]["via"] == "webhook"
    status = (await d.http.get("/status")).json()
    assert status["channels"]["dingtalk"]["state"] in ("disconnected", "connecting")
    assert channel.status.reconnects >= 1
    fake_dt.gateway_up()
    await wait_until(lambda: channel.state == "connected")
    await wait_until(lambda: len(fake_dt.sent) == 2, timeout=10)
    assert fake_dt.sent[1]["text"] == "Echo: during the outage"
    assert [m.text for m in await stored(d, f"dingtalk:{GROUP}") if not m.from_bot] == ["before", "during the outage"]


async def test_wrong_secret_is_unauthorized_and_the_daemon_keeps_working(
    run_daemon: Any, fake_dt: FakeDingTalk, caplog: Any
) -> None:
    d = await run_daemon(**dt_env(fake_dt, secret="WRONG-secret-42"))
    channel = d.daemon.channels["dingtalk"]
    await wait_until(lambda: channel.state == "unauthorized")
    status = (await d.http.get("/status")).json()
    assert status["channels"]["dingtalk"]["state"] == "unauthorized"
    assert "authFailed" in (channel.status.last_error or "")
    await d.post("main", "still there?")
    replies = await d.wait_bot_replies("main", 1)
    assert replies[0]["text"] == "Echo: still there?"
    # retried slowly, not hammered: the wait it chose is logged before it starts
    line = await wait_until(lambda: next((r.getMessage() for r in caplog.records
                                          if "token rejected" in r.getMessage()), None))
    delay = float(re.search(r"retrying in (\d+(?:\.\d+)?)s", line).group(1))  # type: ignore[union-attr]
    assert delay >= 15, line
    assert len(fake_dt.open_requests) == 1
    assert not any("WRONG-secret-42" in r.getMessage() for r in caplog.records)


async def test_missing_secret_means_off(run_daemon: Any, fake_dt: FakeDingTalk, caplog: Any) -> None:
    d = await run_daemon(NGB_DINGTALK_CLIENT_ID=CLIENT_ID,
                         NGB_CHANNELS=json.dumps({"dingtalk": {"gateway_url": fake_dt.gateway_url}}))
    assert d.daemon.channels["dingtalk"].state == "off"
    assert sum("channel dingtalk: off" in r.getMessage() and "NGB_DINGTALK_CLIENT_SECRET" in r.getMessage()
               for r in caplog.records) == 1
    assert fake_dt.open_requests == []


async def test_forged_or_reused_ticket_is_refused(run_daemon: Any, fake_dt: FakeDingTalk, caplog: Any) -> None:
    from trio_websocket import ConnectionRejected, open_websocket_url

    d = await start(run_daemon, fake_dt)
    channel = d.daemon.channels["dingtalk"]
    # someone without our secret: a made-up ticket
    with pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(f"{fake_dt.ws_base}/connect?ticket=forged-0001"):
            pass
    assert rejected.value.status_code == 401
    # a ticket is good for one connection only: ours was used by the channel, a copy is refused
    async with httpx.AsyncClient(timeout=5) as http:
        answer = (await http.post(fake_dt.gateway_url, json={"clientId": CLIENT_ID, "clientSecret": SECRET,
                                                              "subscriptions": []})).json()
    url = f"{answer['endpoint']}?ticket={answer['ticket']}"
    async with open_websocket_url(url):
        pass
    with pytest.raises(ConnectionRejected):
        async with open_websocket_url(url):
            pass
    assert fake_dt.refused == ["unknown or already used ticket"] * 2
    assert sum("refused a websocket" in r.getMessage() for r in caplog.records) == 2
    await wait_until(lambda: channel.state == "connected")  # the refused ones took nothing from us
    fake_dt.group_message(GROUP, "still mine")
    await wait_until(lambda: not fake_dt.pending)

    # when the gateway refuses the channel's own ticket (expired), it logs and gets a new one
    fake_dt.ticket_ttl = -1
    fake_dt.drop_websockets()
    await wait_until(lambda: "expired ticket" in fake_dt.refused)
    assert channel.state != "connected"
    fake_dt.ticket_ttl = 90
    await wait_until(lambda: channel.state == "connected")
    assert any("HTTP 401" in r.getMessage() and "dingtalk" in r.getMessage() for r in caplog.records)


async def test_callback_for_another_robot_is_refused(run_daemon: Any, fake_dt: FakeDingTalk, caplog: Any) -> None:
    d = await start(run_daemon, fake_dt)
    channel = d.daemon.channels["dingtalk"]
    await d.daemon.registry.add(Group(chat=f"dingtalk:{GROUP}", folder="team"))
    fake_dt.group_message(GROUP, "for someone else", robot_code="dingOTHERapp")
    await wait_until(lambda: not fake_dt.pending)  # acked, so it is not pushed again...
    assert await stored(d, f"dingtalk:{GROUP}") == []  # ...but not taken (a callback is acked after its store)
    assert channel.refused == 1
    fake_dt.group_message(GROUP, "for us")  # our robot's next message: its turn is the only one
    await wait_until(lambda: fake_dt.sent)
    await settled(d, "team", f"dingtalk:{GROUP}")
    assert [m.text for m in await stored(d, f"dingtalk:{GROUP}") if not m.from_bot] == ["for us"]
    assert [s["text"] for s in fake_dt.sent] == ["Echo: for us"] and channel.refused == 1
    assert any("refused a robot callback" in r.getMessage() and "dingOTHERapp" in r.getMessage()
               for r in caplog.records)


async def test_pinned_chatbot_user_id(run_daemon: Any, fake_dt: FakeDingTalk, caplog: Any) -> None:
    d = await start(run_daemon, fake_dt, chatbot_user_id=fake_dt.chatbot_user_id)
    channel = d.daemon.channels["dingtalk"]
    await d.daemon.registry.add(Group(chat=f"dingtalk:{GROUP}", folder="team"))
    fake_dt.group_message(GROUP, "not for this robot", chatbot_user_id="$:LWCP_v1:$impostor")
    fake_dt.group_message(GROUP, "for this robot")
    await wait_until(lambda: fake_dt.sent)
    assert [m.text for m in await stored(d, f"dingtalk:{GROUP}") if not m.from_bot] == ["for this robot"]
    assert channel.refused == 1 and not fake_dt.pending
    assert any("refused a robot callback" in r.getMessage() and "impostor" in r.getMessage() for r in caplog.records)


async def test_ping_is_answered_and_disconnect_reconnects(run_daemon: Any, fake_dt: FakeDingTalk, caplog: Any) -> None:
    d = await start(run_daemon, fake_dt, FakeBehaviour(reply=echo_each))
    channel = d.daemon.channels["dingtalk"]
    await d.daemon.registry.add(Group(chat=f"dingtalk:{GROUP}", folder="team"))
    mid = await fake_dt.ping()
    pong = (await wait_until(lambda: fake_dt.pongs))[0]
    assert pong["code"] == 200 and pong["headers"]["messageId"] == mid
    assert json.loads(pong["data"]) == {"opaque": mid}  # the ping's data, echoed
    assert not any("unknown message topic" in r.getMessage() for r in caplog.records)

    await fake_dt.system_disconnect()  # "please reconnect": the client closes and opens a new one
    await wait_until(lambda: fake_dt.connections == 2 and channel.state == "connected")
    assert len(fake_dt.open_requests) == 2
    fake_dt.group_message(GROUP, "after the reconnect")
    await wait_until(lambda: fake_dt.sent)
    assert fake_dt.sent[0]["text"] == "Echo: after the reconnect"


async def test_long_reply_is_split_in_order(run_daemon: Any, fake_dt: FakeDingTalk) -> None:
    paragraphs = [f"**第{i}部分** " + "".join(f"这是第{i}.{j}句话，说了几个字。" for j in range(40)) for i in range(16)]
    long_text = "\n\n".join(paragraphs)
    assert len(long_text.encode()) > 20_000
    d = await start(run_daemon, fake_dt, FakeBehaviour(reply=lambda p: [long_text]))
    await d.daemon.registry.add(Group(chat=f"dingtalk:{DM}", folder="alice"))
    fake_dt.direct_message(DM, "tell me everything")
    await wait_until(lambda: d.daemon.outbox.delivered >= 1)
    parts = fake_dt.sent
    assert len(parts) >= 4 and all(len(p["text"].encode()) <= 6000 for p in parts)
    assert all(p["via"] == "webhook" for p in parts)
    assert "\n\n".join(p["text"] for p in parts) == long_text
    assert parts[0]["title"].startswith("第0部分 这是") and len(parts[0]["title"]) == 30  # first line, plain


async def test_text_message_type(run_daemon: Any, fake_dt: FakeDingTalk) -> None:
    d = await start(run_daemon, fake_dt, message_type="text")
    await d.daemon.registry.add(Group(chat=f"dingtalk:{GROUP}", folder="team"))
    fake_dt.group_message(GROUP, "plain please")
    await wait_until(lambda: fake_dt.sent)
    fake_dt.group_message(GROUP, "and by the API", webhook_ttl=0)
    await wait_until(lambda: len(fake_dt.sent) == 2)
    assert [(s["via"], s["msgtype"]) for s in fake_dt.sent] == [("webhook", "text"), ("group", "text")]
    assert fake_dt.api_calls[0]["body"]["msgKey"] == "sampleText"


async def test_forbidden_send_is_not_retried_and_server_error_is(run_daemon: Any, fake_dt: FakeDingTalk) -> None:
    d = await start(run_daemon, fake_dt)
    await d.daemon.registry.add(Group(chat=f"dingtalk:{GROUP}", folder="team"))
    fake_dt.fail_next("/v1.0/robot/groupMessages/send", 403, "Forbidden.AccessDenied.AccessTokenPermissionDenied")
    fake_dt.group_message(GROUP, "hello", webhook_ttl=0)
    row = await outbox_row(d, f"dingtalk:{GROUP}", 0, "failed")  # given up: a permission is missing
    assert row.attempts == 1 and "AccessTokenPermissionDenied" in (row.last_error or "")
    assert fake_dt.sent == [] and d.daemon.outbox.retries == 1

    fake_dt.fail_next("/v1.0/robot/groupMessages/send", 500)
    fake_dt.group_message(GROUP, "again", webhook_ttl=0)
    row = await outbox_row(d, f"dingtalk:{GROUP}", 1, "sent")  # retried, then sent
    await settled(d, "team", f"dingtalk:{GROUP}")
    assert row.attempts == 2 and [s["text"] for s in fake_dt.sent] == ["Echo: again"]
    assert d.daemon.outbox.retries == 2


async def test_opening_a_connection_does_not_block_the_shared_loop(run_daemon: Any, fake_dt: FakeDingTalk) -> None:
    import asyncio

    fake_dt.open_delay = 1.5  # a slow open-connection API
    d = await run_daemon(**dt_env(fake_dt))
    channel = d.daemon.channels["dingtalk"]
    await wait_until(lambda: fake_dt.open_requests)
    # the POST is in flight on the shared asyncio loop; other channels' calls still run at once
    for _ in range(5):
        t0 = trio.current_time()
        await BRIDGE.call(asyncio.sleep, 0)
        assert trio.current_time() - t0 < 0.3
        await trio.sleep(0.1)
    assert channel.state == "connecting"
    await wait_until(lambda: channel.state == "connected")


async def test_fake_outlives_a_client_that_leaves_mid_delivery(run_daemon: Any, fake_dt: FakeDingTalk) -> None:
    """The fake takes its client leaving at any moment (as every fake must): a connection reset
    while a backlog is being written ends that connection quietly, nothing is raised into the
    test, and the unacked messages go to the next connection."""
    async with httpx.AsyncClient(timeout=5) as http:
        answer = (await http.post(fake_dt.gateway_url, json={"clientId": CLIENT_ID, "clientSecret": SECRET,
                                                              "subscriptions": []})).json()
    backlog = [fake_dt.group_message(GROUP, f"backlog {i} " + "x" * 4000, in_at_list=False, at_users=[])
               for i in range(300)]  # 1.2 MB, not for the robot: stored only
    await leave_mid_backlog(f"{answer['endpoint']}?ticket={answer['ticket']}", lambda: fake_dt.deliveries > 0)
    assert fake_dt.deliveries < len(backlog)  # it cannot all be in flight: the writer is mid-send
    await wait_until(lambda: not fake_dt.websockets)  # that connection's handler has ended, quietly
    assert fake_dt.connections == 1 and len(fake_dt.pending) == len(backlog) and fake_dt.acks == []

    fake_dt.gateway_down()  # until the chat is registered (an unregistered one has a quota)
    d = await run_daemon(**dt_env(fake_dt))
    await d.daemon.registry.add(Group(chat=f"dingtalk:{GROUP}", folder="team"))
    fake_dt.gateway_up()
    await wait_until(lambda: not fake_dt.pending, timeout=30)
    texts = [m.text for m in await d.daemon.store.messages_after(f"dingtalk:{GROUP}", 0, limit=1000)]
    assert sorted(texts) == sorted(data["text"]["content"].strip() for data in backlog) and fake_dt.sent == []


# -- conversations kept across restarts ------------------------------------------------------------
BATCH = "/v1.0/robot/oToMessages/batchSend"


def conversations_file(state_dir: Path) -> Path:
    return state_dir / "channels" / "dingtalk-conversations.json"


class Stoppable(StoppableDaemon):
    """A daemon in the test's nursery that can be stopped (as by systemctl stop) and started again."""

    @classmethod
    async def start(cls, nursery: trio.Nursery, state: Path, fake: FakeDingTalk) -> Stoppable:
        return await cls.start_with(nursery, make_config(state, **dt_env(fake)), None, "dingtalk")


async def test_reply_pending_across_a_restart_reaches_the_1to1_chat_without_a_new_message(
    tmp_path: Path, fake_dt: FakeDingTalk
) -> None:
    chat = f"dingtalk:{DM}"
    async with trio.open_nursery() as nursery:
        first = await Stoppable.start(nursery, tmp_path, fake_dt)
        await first.daemon.registry.add(Group(chat=chat, folder="alice"))
        fake_dt.direct_message(DM, "hello", staff_id="alice01")
        await wait_until(lambda: first.daemon.outbox.delivered == 1)
        assert fake_dt.sent[0]["via"] == "webhook"
        # Alice's next message comes with an expired webhook while the robot API is down: its reply
        # stays in the outbox, and the daemon is stopped before it goes out
        fake_dt.fail_next(BATCH, 503, "ServiceUnavailable", times=1000)
        fake_dt.direct_message(DM, "are you there?", staff_id="alice01", webhook_ttl=0)
        await wait_until(lambda: first.daemon.outbox.retries >= 1)
        assert await first.daemon.store.outbox_depth() == 1
        await first.stop()
        assert [s["text"] for s in fake_dt.sent] == ["Echo: hello"]
        fake_dt.expire_webhooks()  # every session webhook is gone too
        fake_dt.clear_failures()  # and the robot API is back
        delivered = fake_dt.deliveries

        second = await Stoppable.start(nursery, tmp_path, fake_dt)
        await wait_until(lambda: len(fake_dt.sent) == 2, timeout=20)
        assert {k: fake_dt.sent[1][k] for k in ("via", "user", "text")} == {
            "via": "batch", "user": "alice01", "text": "Echo: are you there?"}
        # a message produced after the restart (a scheduled task's, a tool's) goes the same way
        await second.daemon.store.queue_message("alice", chat, "standup in 5 minutes")
        second.daemon.outbox.wake()
        await wait_until(lambda: len(fake_dt.sent) == 3)
        assert {k: fake_dt.sent[2][k] for k in ("via", "user", "text")} == {
            "via": "batch", "user": "alice01", "text": "standup in 5 minutes"}
        assert fake_dt.deliveries == delivered  # Alice did not write again
        assert {c["path"] for c in fake_dt.api_calls} == {BATCH}  # never tried as a group
        assert all(c["body"]["userIds"] == ["alice01"] for c in fake_dt.api_calls)
        await wait_until(lambda: second.daemon.outbox.delivered == 2)
        assert await second.daemon.store.outbox_depth() == 0
        nursery.cancel_scope.cancel()


async def test_conversations_file_is_private_holds_no_webhook_and_is_written_on_change(
    run_daemon: Any, fake_dt: FakeDingTalk
) -> None:
    d = await start(run_daemon, fake_dt)
    channel = d.daemon.channels["dingtalk"]
    path = conversations_file(d.daemon.config.state_dir)
    assert channel.settings.state_dir == d.daemon.config.state_dir  # from build_channels
    assert not path.exists()  # nothing to keep yet
    pushed = [fake_dt.group_message(GROUP, "hi all", staff_id="bob01"),
              fake_dt.direct_message(DM, "hi", staff_id="alice01")]
    await wait_until(lambda: len(fake_dt.acks) == 2 and not fake_dt.pending)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind
    raw = path.read_text()
    assert json.loads(raw) == {"version": 1, "conversations": {
        f"dingtalk:{GROUP}": {"kind": "2"}, f"dingtalk:{DM}": {"kind": "1", "staff_id": "alice01"}}}
    for data in pushed:  # a session webhook lets anyone post to the chat: never on disk
        assert data["sessionWebhook"] not in raw and data["sessionWebhook"].rpartition("session=")[2] not in raw
    assert "session" not in raw.lower() and "http" not in raw

    # the same chats again (new webhooks, same facts): nothing is written; nor for someone from
    # outside the organization (no staff id: the robot API cannot reach them anyway)
    writes, before = channel._conv_file.writes, path.stat()
    assert writes == 2
    fake_dt.direct_message(DM, "again", staff_id="alice01")
    fake_dt.group_message(GROUP, "again", staff_id="carol01")
    fake_dt.direct_message("cidDirectGuest1==", "hello?", staff_id="")
    await wait_until(lambda: len(fake_dt.acks) == 5 and not fake_dt.pending)
    after = path.stat()
    assert channel._conv_file.writes == 2 and (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # a new chat is
    fake_dt.direct_message("cidDirectCarol1==", "hi", staff_id="carol01")
    await wait_until(lambda: len(fake_dt.acks) == 6 and not fake_dt.pending)
    assert channel._conv_file.writes == 3
    assert json.loads(path.read_text())["conversations"] == {
        f"dingtalk:{GROUP}": {"kind": "2"}, f"dingtalk:{DM}": {"kind": "1", "staff_id": "alice01"},
        "dingtalk:cidDirectCarol1==": {"kind": "1", "staff_id": "carol01"}}


def direct_settings(fake: FakeDingTalk, state_dir: Path | None) -> DingTalkSettings:
    settings = DingTalkSettings.from_table({"client_id": CLIENT_ID, "client_secret": SECRET,
                                            "gateway_url": fake.gateway_url, "api_base": fake.api_base,
                                            "reconnect_base": "0.05", "reconnect_cap": "0.3"})
    return attrs.evolve(settings, state_dir=state_dir)


async def ignore(inbound: Any) -> None:
    pass


@pytest.mark.parametrize("content", [
    b'{"version": 1, "conversations": {"dingtalk:cidDirectAlice01==": {"kind": "1", "staff_',  # cut short
    b"\xff\xfe\x00 not text",
    b'["dingtalk:cidDirectAlice01=="]',
    b'{"version": 1, "conversations": {"dingtalk:cidDirectAlice01==": {"kind": "9", "staff_id": "alice01"}}}',
    b'{"version": 7, "conversations": {}}',
], ids=["cut-short", "not-utf8", "not-an-object", "bad-kind", "other-version"])
async def test_corrupt_conversations_file_is_logged_once_and_ignored(
    tmp_path: Path, fake_dt: FakeDingTalk, caplog: Any, content: bytes
) -> None:
    path = conversations_file(tmp_path)
    path.parent.mkdir()
    path.write_bytes(content)
    channel = DingTalkChannel(direct_settings(fake_dt, tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run, ignore)
        await wait_until(lambda: channel.state == "connected")
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and str(path) in r.getMessage()]
        assert len(warnings) == 1 and "ignored" in warnings[0].getMessage()
        assert len(channel._convs) == 0  # started empty
        fake_dt.direct_message(DM, "hi", staff_id="alice01")
        await wait_until(lambda: fake_dt.acks and not fake_dt.pending)
        assert json.loads(path.read_bytes())["conversations"] == {f"dingtalk:{DM}": {"kind": "1", "staff_id": "alice01"}}
        nursery.cancel_scope.cancel()
    assert sum(str(path) in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING) == 1


async def test_conversations_are_bounded_oldest_out(
    tmp_path: Path, fake_dt: FakeDingTalk, monkeypatch: Any
) -> None:
    monkeypatch.setattr(dingtalk, "MAX_CONVERSATIONS", 3)
    path = conversations_file(tmp_path)
    path.parent.mkdir(mode=0o700)
    old = {f"dingtalk:cidOld{i}==": {"kind": "1", "staff_id": f"old{i}"} for i in range(5)}  # oldest first
    path.write_text(json.dumps({"version": 1, "conversations": old}))
    channel = DingTalkChannel(direct_settings(fake_dt, tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run, ignore)
        await wait_until(lambda: channel.state == "connected")
        assert list(channel._convs) == ["dingtalk:cidOld2==", "dingtalk:cidOld3==", "dingtalk:cidOld4=="]
        assert channel._conv_file.writes == 0  # loading writes nothing
        fake_dt.direct_message(DM, "hi", staff_id="alice01")
        await wait_until(lambda: fake_dt.acks and not fake_dt.pending)
        saved = json.loads(path.read_text())["conversations"]
        assert list(saved) == ["dingtalk:cidOld3==", "dingtalk:cidOld4==", f"dingtalk:{DM}"]
        nursery.cancel_scope.cancel()


async def test_without_a_state_dir_conversations_stay_in_memory(tmp_path: Path, fake_dt: FakeDingTalk) -> None:
    channel = DingTalkChannel(direct_settings(fake_dt, None))
    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run, ignore)
        await wait_until(lambda: channel.state == "connected")
        fake_dt.direct_message(DM, "hi", staff_id="alice01")
        await wait_until(lambda: fake_dt.acks and not fake_dt.pending)
        assert f"dingtalk:{DM}" in channel._convs and channel._conv_file is None
        nursery.cancel_scope.cancel()
    assert list(tmp_path.iterdir()) == []


async def test_unwritable_conversations_file_is_logged_once_and_replies_still_work(
    tmp_path: Path, fake_dt: FakeDingTalk, caplog: Any
) -> None:
    (tmp_path / "channels").write_text("")  # where the directory should be
    channel = DingTalkChannel(direct_settings(fake_dt, tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run, ignore)
        await wait_until(lambda: channel.state == "connected")
        fake_dt.direct_message(DM, "hi", staff_id="alice01", webhook_ttl=0)
        fake_dt.direct_message("cidDirectCarol1==", "hi", staff_id="carol01")
        await wait_until(lambda: len(fake_dt.acks) == 2 and not fake_dt.pending)  # stored and acked all the same
        await channel.send(f"dingtalk:{DM}", "hello Alice")
        assert fake_dt.sent[0]["via"] == "batch" and fake_dt.sent[0]["user"] == "alice01"
        nursery.cancel_scope.cancel()
    assert sum("cannot write" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING) == 1


# -- settings and parsing --------------------------------------------------------------------------
def test_settings_from_config(tmp_path: Any) -> None:
    cfg = load_config(None, env={"NGB_DINGTALK_CLIENT_ID": "dingA", "NGB_DINGTALK_CLIENT_SECRET": "sec",
                                 "NGB_STATE_DIR": str(tmp_path)})
    assert cfg.channels == {"dingtalk": {"client_id": "dingA", "client_secret": "sec"}}
    s = DingTalkSettings.from_table(cfg.channels["dingtalk"])
    assert (s.client_id, s.client_secret, s.robot_code, s.off_reason) == ("dingA", "sec", "dingA", None)
    assert s.gateway_url.endswith("/v1.0/gateway/connections/open") and s.gateway_url.startswith("https://")
    assert s.message_type == "markdown" and "sec" not in repr(s)
    secret = tmp_path / "dt.secret"
    secret.write_text("from-file\n")
    secret.chmod(0o600)
    (tmp_path / "ngb.toml").write_text("")
    s = DingTalkSettings.from_table({"client_id": "dingA", "client_secret_file": "dt.secret", "robot_code": "rc1",
                                     "api_base": "http://127.0.0.1:9/", "message_type": "TEXT"},
                                    tmp_path / "ngb.toml")
    assert (s.client_secret, s.robot_code, s.api_base, s.message_type) == ("from-file", "rc1", "http://127.0.0.1:9", "text")
    assert "NGB_DINGTALK_CLIENT_SECRET" in (DingTalkSettings.from_table({"client_id": "dingA"}).off_reason or "")
    with pytest.raises(ConfigError, match="channels.dingtalk.clientid: unknown key"):
        DingTalkSettings.from_table({"clientid": "x"})
    with pytest.raises(ConfigError, match="channels.dingtalk.message_type"):
        DingTalkSettings.from_table({"message_type": "card"})
    with pytest.raises(ConfigError, match="channels.dingtalk.gateway_url"):
        DingTalkSettings.from_table({"gateway_url": "ftp://x"})


def parse(data: dict[str, Any]) -> Any:
    channel = DingTalkChannel(DingTalkSettings(client_id="dingA", client_secret="s", robot_code="dingA"))
    return channel.to_inbound(ChatbotMessage.from_dict(data))


BASE = {"conversationId": "cidG1", "chatbotUserId": "$:bot", "msgId": "m1", "senderNick": "Bob",
        "senderStaffId": "bob01", "senderId": "$:bob", "createAt": 1700000000000, "robotCode": "dingA"}


def test_parse_text_and_mentions() -> None:
    m = parse({**BASE, "conversationType": "2", "isInAtList": True, "atUsers": [{"dingtalkId": "$:bot"}],
               "msgtype": "text", "text": {"content": " hello there "}})
    assert (m.chat, m.text, m.sender, m.sender_id, m.platform_id) == ("dingtalk:cidG1", "hello there", "Bob", "bob01", "m1")
    assert m.mentions_bot and m.time.year == 2023
    # a group message DingTalk says did not @ the robot (a robot that receives every message)
    m = parse({**BASE, "conversationType": "2", "isInAtList": False, "atUsers": [{"dingtalkId": "$:carol"}],
               "msgtype": "text", "text": {"content": "@Carol lunch?"}})
    assert not m.mentions_bot and m.text == "@Carol lunch?"
    m = parse({**BASE, "conversationType": "2", "isInAtList": False, "atUsers": [{"dingtalkId": "$:bot"}],
               "msgtype": "text", "text": {"content": "hi"}})
    assert m.mentions_bot  # the robot is in atUsers
    assert not m.direct
    m = parse({**BASE, "conversationType": "1", "msgtype": "text", "text": {"content": "dm"}})
    assert m.direct
    assert m.mentions_bot  # 1:1: every message addresses the robot
    m = parse({**BASE, "conversationType": "1", "senderStaffId": None, "msgtype": "text", "text": {"content": "x"}})
    assert m.sender_id == "$:bob"  # an external user has no staff id
    assert parse({**BASE, "conversationType": "1", "msgtype": "text", "text": {"content": "  "}}) is None


def test_parse_rich_text_and_media() -> None:
    rich = {"richText": [{"text": "look at this"}, {"type": "picture", "downloadCode": "dc1", "pictureDownloadCode": "p1"},
                         {"text": "and tell me"}]}
    m = parse({**BASE, "conversationType": "2", "isInAtList": True, "msgtype": "richText", "content": rich})
    assert m.text == "look at this\nand tell me" and m.mentions_bot  # its picture: an attachment (test_media_dingtalk)
    m = parse({**BASE, "conversationType": "1", "msgtype": "picture", "content": {"downloadCode": "dc"}})
    assert m is not None and m.text == ""  # the picture is its attachment
    m = parse({**BASE, "conversationType": "1", "msgtype": "audio", "content": {"recognition": "你好", "duration": 2}})
    assert m.text == "[voice message] 你好"  # no download code: the recognition is all there is
    m = parse({**BASE, "conversationType": "1", "msgtype": "file", "content": {"fileName": "a.pdf"}})
    assert m.text == "[file: a.pdf]"
    m = parse({**BASE, "conversationType": "1", "msgtype": "somethingNew", "content": {}})
    assert m.text == "[somethingNew message]"

