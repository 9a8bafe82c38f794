"""Slack through the real daemon (in-process, fake agent) and the real slack-sdk (AsyncWebClient +
aiohttp SocketModeClient), against tests/fakes/slack.py (Web API + Socket Mode) on loopback."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from ngb.channels.slack import SlackChannel, SlackSettings
from ngb.config import ConfigError, load_config
from ngb.records import Group
from tests.channel_helpers import StoppableDaemon, echo_each, stored, wait_until
from tests.conftest import make_config
from tests.fakes.agent import FakeBehaviour
from tests.fakes.slack import FakeSlack

BOT, APP = "xoxb-1-TEST", "xapp-1-TEST"
CHAN = "C0123"


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    async with trio.open_nursery() as nursery:
        fake = await FakeSlack.start(nursery, bot_token=BOT, app_token=APP)
        yield fake
        nursery.cancel_scope.cancel()


def slack_env(fake: FakeSlack, bot: str = BOT, app: str = APP, **table: Any) -> dict[str, str]:
    settings = {"base_url": fake.base_url, "ping_interval": "0.5", "reconnect_base": "0.05", "reconnect_cap": "0.3",
                "connect_timeout": "3", **table}
    return {"NGB_SLACK_BOT_TOKEN": bot, "NGB_SLACK_APP_TOKEN": app, "NGB_CHANNELS": json.dumps({"slack": settings})}


async def settled(d: Any, folder: str, chat: str) -> None:
    """Wait until the group has nothing left to answer and nothing waits in the outbox: no turn can
    follow, so what was sent by now is all that will be sent."""
    with trio.fail_after(10):
        while await d.daemon.store.pending_input(folder, chat) or await d.daemon.store.outbox_depth():
            await trio.sleep(0.02)


async def start(run_daemon: Any, fake: FakeSlack, behaviour: FakeBehaviour | None = None, **table: Any) -> Any:
    d = await run_daemon(behaviour, **slack_env(fake, **table))
    channel = d.daemon.channels["slack"]
    await wait_until(lambda: channel.state == "connected")
    return d


async def test_channel_trigger_context_and_one_reply(run_daemon: Any, fake_slack: FakeSlack) -> None:
    d = await start(run_daemon, fake_slack)
    await d.daemon.registry.add(Group(chat=f"slack:{CHAN}", folder="team"))
    fake_slack.add_user("U7", "Bob")
    fake_slack.user_message(CHAN, "the deploy is at 3pm", user="U7")
    await wait_until(lambda: not fake_slack.pending)  # stored, then acked
    msgs = await stored(d, f"slack:{CHAN}")
    assert [(m.text, m.sender, m.sender_id, m.mentions_bot) for m in msgs] == [("the deploy is at 3pm", "Bob", "U7", False)]

    fake_slack.user_message(CHAN, "<@UBOT> when is the deploy?")  # message + app_mention events
    sent = await wait_until(lambda: fake_slack.sent)
    await wait_until(lambda: not fake_slack.pending)  # both events (message, app_mention) stored and acked
    await settled(d, "team", f"slack:{CHAN}")
    assert len(fake_slack.sent) == 1  # the two events of one message: answered once
    assert sent[0]["channel"] == CHAN and sent[0]["thread_ts"] is None  # trigger not in a thread
    assert sent[0]["text"] == "Echo: @andy when is the deploy?"
    assert "the deploy is at 3pm" in d.launcher.prompts[-1][2]  # context
    await wait_until(lambda: d.daemon.outbox.delivered == 1)  # the reply is stored before this counts
    msgs = await stored(d, f"slack:{CHAN}")
    assert [m.from_bot for m in msgs] == [False, False, True]
    assert msgs[1].mentions_bot and msgs[2].platform_id == f"{CHAN}:{sent[0]['ts']}"
    await wait_until(lambda: len(fake_slack.reaction_calls) == 2 and not fake_slack.pending)  # 👀 on, then off
    assert len(fake_slack.acked) == 5  # every envelope acked: 3 of the messages, 2 of the bot's reaction
    status = (await d.http.get("/status")).json()
    assert status["channels"]["slack"]["state"] == "connected"


async def test_reply_goes_into_the_thread_of_the_trigger(run_daemon: Any, fake_slack: FakeSlack) -> None:
    d = await start(run_daemon, fake_slack)
    await d.daemon.registry.add(Group(chat=f"slack:{CHAN}", folder="team"))
    parent = fake_slack.user_message(CHAN, "a question for later")
    fake_slack.user_message(CHAN, "<@UBOT> what do you think?", thread_ts=parent["ts"])
    await wait_until(lambda: fake_slack.sent)
    assert fake_slack.sent[0]["thread_ts"] == parent["ts"]
    fake_slack.user_message(CHAN, "@Andy and top level?")  # the trigger word, not in a thread
    await wait_until(lambda: len(fake_slack.sent) == 2)
    assert fake_slack.sent[1]["thread_ts"] is None


async def test_reply_in_thread_always(run_daemon: Any, fake_slack: FakeSlack) -> None:
    d = await start(run_daemon, fake_slack, reply_in_thread="always")
    await d.daemon.registry.add(Group(chat=f"slack:{CHAN}", folder="team"))
    trigger = fake_slack.user_message(CHAN, "<@UBOT> hi")
    await wait_until(lambda: fake_slack.sent)
    assert fake_slack.sent[0]["thread_ts"] == trigger["ts"]


async def test_dm_needs_no_mention(run_daemon: Any, fake_slack: FakeSlack) -> None:
    d = await start(run_daemon, fake_slack)
    await d.daemon.registry.add(Group(chat="slack:D42", folder="alice"))
    fake_slack.user_message("D42", "what's up")
    await wait_until(lambda: fake_slack.sent)
    assert fake_slack.sent[0]["channel"] == "D42" and fake_slack.sent[0]["text"] == "Echo: what's up"


async def test_long_reply_is_split_in_order_with_mrkdwn(run_daemon: Any, fake_slack: FakeSlack) -> None:
    paragraphs = [f"**Part {i}.** " + " ".join(f"Sentence {i}.{j} says a few words." for j in range(12)) for i in range(30)]
    long_text = "\n\n".join(paragraphs)
    assert len(long_text) > 10_000
    d = await start(run_daemon, fake_slack, FakeBehaviour(reply=lambda p: [long_text]))
    await d.daemon.registry.add(Group(chat="slack:D42", folder="alice"))
    fake_slack.user_message("D42", "tell me everything")
    await wait_until(lambda: d.daemon.outbox.delivered >= 1)
    parts = fake_slack.sent
    assert len(parts) >= 3 and all(len(p["text"]) <= 4000 for p in parts)
    assert parts[0]["text"].startswith("*Part 0.*")  # Markdown bold -> mrkdwn bold
    assert "\n\n".join(p["text"] for p in parts).replace("*", "") == long_text.replace("**", "")
    assert parts[-1]["text"].endswith("Sentence 29.11 says a few words.")


async def test_redelivered_envelope_is_stored_and_answered_once(run_daemon: Any, fake_slack: FakeSlack) -> None:
    d = await start(run_daemon, fake_slack, FakeBehaviour(reply=echo_each))
    await d.daemon.registry.add(Group(chat=f"slack:{CHAN}", folder="team", requires_trigger=False))
    fake_slack.user_message(CHAN, "only once")
    await wait_until(lambda: fake_slack.sent)
    envelope = {"envelope_id": "again-1", "payload": {"event": {**fake_slack.history[CHAN][0], "channel": CHAN,
                "channel_type": "channel"}}, "type": "events_api", "accepts_response_payload": False,
                "retry_attempt": 0, "retry_reason": ""}
    fake_slack.redeliver(envelope)  # Slack sends the same event again (retry_attempt 1)
    await wait_until(lambda: "again-1" in fake_slack.acked)  # acked only after the store took it
    assert [m.text for m in await stored(d, f"slack:{CHAN}") if not m.from_bot] == ["only once"]
    await settled(d, "team", f"slack:{CHAN}")
    assert [s["text"] for s in fake_slack.sent] == ["Echo: only once"]


async def test_outage_then_reconnect_answers_each_message_once(run_daemon: Any, fake_slack: FakeSlack) -> None:
    d = await start(run_daemon, fake_slack, FakeBehaviour(reply=echo_each))
    channel = d.daemon.channels["slack"]
    await d.daemon.registry.add(Group(chat=f"slack:{CHAN}", folder="team", requires_trigger=False))
    fake_slack.user_message(CHAN, "before")
    await wait_until(lambda: d.daemon.outbox.delivered == 1)

    fake_slack.down()  # the websocket dies; new connections refused
    await wait_until(lambda: channel.state in ("disconnected", "connecting"))
    for i in range(3):
        fake_slack.user_message(CHAN, f"during outage {i}")
    await wait_until(lambda: channel.status.reconnects >= 1)
    status = (await d.http.get("/status")).json()
    assert status["channels"]["slack"]["state"] in ("disconnected", "connecting")
    fake_slack.up()
    await wait_until(lambda: channel.state == "connected")
    await wait_until(lambda: sum("during outage" in s["text"] for s in fake_slack.sent) == 3, timeout=15)
    # the events were both redelivered on the new socket and fetched with conversations.history
    assert any(m == "conversations.history" for m, _ in fake_slack.requests)

    # Slack asks for a refresh ("disconnect" message): the SDK moves to a new socket, nothing lost
    hellos = fake_slack.hellos
    await fake_slack.disconnect()
    await wait_until(lambda: fake_slack.hellos > hellos)
    fake_slack.user_message(CHAN, "after refresh")
    # and an abrupt drop
    await wait_until(lambda: any(s["text"] == "Echo: after refresh" for s in fake_slack.sent), timeout=15)
    fake_slack.drop()
    fake_slack.user_message(CHAN, "after drop")
    await wait_until(lambda: any(s["text"] == "Echo: after drop" for s in fake_slack.sent), timeout=15)
    await wait_until(lambda: channel.catch_ups == channel.sessions - 1)  # every catch-up has run
    await settled(d, "team", f"slack:{CHAN}")
    texts = [m.text for m in await stored(d, f"slack:{CHAN}") if not m.from_bot]
    assert texts == ["before", "during outage 0", "during outage 1", "during outage 2", "after refresh", "after drop"]
    replies = [s["text"] for s in fake_slack.sent]
    assert sorted(replies) == sorted(f"Echo: {t}" for t in texts)  # each answered exactly once


async def test_a_post_whose_answer_was_lost_is_not_posted_again(run_daemon: Any, fake_slack: FakeSlack) -> None:
    """Slack took the reply but the connection was cut before its answer: the retry finds the post
    by the key in its metadata instead of posting the reply a second time."""
    d = await start(run_daemon, fake_slack, FakeBehaviour(reply=echo_each))
    await d.daemon.registry.add(Group(chat=f"slack:{CHAN}", folder="team", requires_trigger=False))
    fake_slack.lose_next_answer("chat.postMessage")
    fake_slack.user_message(CHAN, "are you there?")
    await wait_until(lambda: d.daemon.outbox.delivered == 1, timeout=20)
    bots = [m for m in fake_slack.history[CHAN] if m.get("bot_id")]
    assert [m["text"] for m in bots] == ["Echo: are you there?"]  # posted once, though its answer was lost
    assert len(fake_slack.sent) == 1 and d.daemon.outbox.retries >= 1
    (reply,) = [m for m in await stored(d, f"slack:{CHAN}") if m.from_bot]
    assert reply.platform_id == f"{CHAN}:{bots[0]['ts']}"
    looked = [p for m, p in fake_slack.requests if m == "conversations.history" and p.get("include_all_metadata")]
    assert looked, "the retry looked for the earlier post"


async def test_a_file_from_the_outbox_is_shared_once_though_its_answer_was_lost(run_daemon: Any,
                                                                                 fake_slack: FakeSlack) -> None:
    """A file the agent sends goes through the outbox (which passes the row's key); Slack shared it
    but the answer was lost: the retry finds the share (files.info) instead of sharing it again."""
    from ngb.records import Attachment, AttachmentKind

    d = await start(run_daemon, fake_slack)
    chat = f"slack:{CHAN}"
    await d.daemon.registry.add(Group(chat=chat, folder="team"))
    pdf = b"%PDF-1.4\n% a report\n%%EOF\n"
    kept = await d.daemon.media_files.write_bytes(pdf)
    report = Attachment(kind=AttachmentKind.DOCUMENT, mime="application/pdf", size=len(pdf), name="report.pdf",
                        sha256=kept.sha256)
    fake_slack.lose_next_answer("files.completeUploadExternal")
    await d.daemon.store.queue_file("team", chat, report, caption="the report")
    d.daemon.outbox.wake()
    await wait_until(lambda: d.daemon.outbox.delivered == 1, timeout=20)
    assert [(u["bytes"], u["initial_comment"]) for u in fake_slack.uploads] == [(pdf, "the report")]  # shared once
    assert d.daemon.outbox.retries >= 1
    shares = [m for m in fake_slack.history[CHAN] if m.get("subtype") == "file_share"]
    assert len(shares) == 1
    (row,) = [m for m in await stored(d, chat) if m.from_bot]
    assert row.platform_id == f"{CHAN}:{shares[0]['ts']}"


async def test_failed_send_is_retried_and_delivered_once(run_daemon: Any, fake_slack: FakeSlack) -> None:
    d = await start(run_daemon, fake_slack)
    await d.daemon.registry.add(Group(chat="slack:D42", folder="alice"))
    fake_slack.fail_next("chat.postMessage", "500")
    fake_slack.user_message("D42", "hello")
    await wait_until(lambda: d.daemon.outbox.delivered == 1, timeout=15)
    (row,) = await d.daemon.store.outbox_items("slack:D42")
    assert (row.state, row.attempts) == ("sent", 2)  # failed once, then sent: nothing left to send
    assert [s["text"] for s in fake_slack.sent] == ["Echo: hello"]
    assert d.daemon.outbox.retries == 1


async def test_not_in_channel_is_not_retried(run_daemon: Any, fake_slack: FakeSlack) -> None:
    d = await start(run_daemon, fake_slack)
    await d.daemon.registry.add(Group(chat="slack:D42", folder="alice"))
    fake_slack.fail_next("chat.postMessage", "not_in_channel")
    fake_slack.user_message("D42", "hello")

    async def settled_rows() -> list[Any]:
        with trio.fail_after(10):
            while not (rows := await d.daemon.store.outbox_items("slack:D42")) or any(r.state == "pending" for r in rows):
                await trio.sleep(0.02)
            return rows

    (row,) = await settled_rows()
    assert row.state == "failed"  # the outbox gave the reply up in the store: it is never tried again
    assert row.attempts == 1 and "not_in_channel" in (row.last_error or "") and "/invite" in (row.last_error or "")
    assert await d.daemon.store.outbox_depth() == 0
    assert fake_slack.sent == [] and d.daemon.outbox.retries == 1


def texts_of(msgs: list[Any]) -> list[str]:
    return [m.text for m in msgs if not m.from_bot]


async def test_catch_up_pages_until_caught_up_and_reads_the_bots_threads(
    run_daemon: Any, fake_slack: FakeSlack, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="ngb.channels.slack")
    d = await start(run_daemon, fake_slack)
    channel = d.daemon.channels["slack"]
    chat = f"slack:{CHAN}"
    await d.daemon.registry.add(Group(chat=chat, folder="team"))
    fake_slack.max_page = 15  # Slack's limit for apps outside the Marketplace since 2025
    topic = fake_slack.user_message(CHAN, "a thread about the release")
    fake_slack.user_message(CHAN, "<@UBOT> what do you think?", thread_ts=topic["ts"])
    await wait_until(lambda: fake_slack.sent)
    assert fake_slack.sent[0]["thread_ts"] == topic["ts"]  # the bot is in that thread now
    await settled(d, "team", chat)
    before = texts_of(await stored(d, chat))

    # Slack cannot reach the app and gives up on the events: only the Web API knows these messages.
    fake_slack.lose_events_while_disconnected = True
    fake_slack.down()
    await wait_until(lambda: channel.state in ("disconnected", "connecting"))
    missed = [f"missed {i}" for i in range(40)]  # 3 pages of 15
    for i, text in enumerate(missed):
        posted = fake_slack.user_message(CHAN, text)
        if i == 5:
            new_thread = posted  # a thread started while away
    replies = [f"in the bot's thread {i}" for i in range(20)] + ["<@UBOT> and what now?"]
    for text in replies:
        fake_slack.user_message(CHAN, text, thread_ts=topic["ts"])
    for text in ("new thread reply 0", "new thread reply 1"):
        fake_slack.user_message(CHAN, text, thread_ts=new_thread["ts"])
    assert fake_slack.events_lost == len(missed) + len(replies) + 2
    fake_slack.up()
    await wait_until(lambda: channel.catch_ups == 1, timeout=15)

    # every message once, oldest first (thread replies are newer than the top-level ones here)
    msgs = await stored(d, chat)
    expected = before + missed + replies[:-1] + ["@andy and what now?", "new thread reply 0", "new thread reply 1"]
    assert texts_of(msgs) == expected
    assert channel.fetched == len(expected) - len(before)
    # the mention in the bot's thread is answered there
    sent = await wait_until(lambda: fake_slack.sent[1:])
    assert sent[0]["thread_ts"] == topic["ts"]
    history_pages = [p for m, p in fake_slack.requests if m == "conversations.history"]
    assert len(history_pages) == 3 and "cursor" not in history_pages[0] and history_pages[1]["cursor"]
    (line,) = [r.getMessage() for r in caplog.records if "caught up" in r.getMessage()]
    assert line.startswith(f"slack: caught up {CHAN} since ") and f"{len(expected) - len(before)} message(s)" in line
    assert "2 thread(s) read" in line and "stopped early" not in line


async def test_catch_up_is_bounded_and_waits_out_a_rate_limit(
    run_daemon: Any, fake_slack: FakeSlack, caplog: Any
) -> None:
    d = await start(run_daemon, fake_slack, catch_up_pages="2")
    channel = d.daemon.channels["slack"]
    chat = f"slack:{CHAN}"
    await d.daemon.registry.add(Group(chat=chat, folder="team"))
    fake_slack.max_page = 5
    fake_slack.user_message(CHAN, "seen live")
    await wait_until(lambda: not fake_slack.pending)
    fake_slack.lose_events_while_disconnected = True
    fake_slack.down()
    await wait_until(lambda: channel.state in ("disconnected", "connecting"))
    missed = [f"missed {i}" for i in range(20)]
    for text in missed:
        fake_slack.user_message(CHAN, text)
    fake_slack.fail_next("conversations.history", "ratelimited")  # Retry-After: 1
    fake_slack.up()
    await wait_until(lambda: channel.catch_ups == 1, timeout=15)
    # two pages of five, newest first: the ten newest are stored (oldest first), and the log says so
    assert texts_of(await stored(d, chat)) == ["seen live"] + missed[10:]
    assert sum(m == "conversations.history" for m, _ in fake_slack.requests) == 3  # 1 refused, 2 pages
    (line,) = [r.getMessage() for r in caplog.records if "caught up" in r.getMessage()]
    assert "10 message(s) in 2 page(s)" in line and "stopped early (page limit (2 pages))" in line


@pytest.mark.parametrize("which", ["bot", "app"])
async def test_rejected_token_is_reported_and_local_chat_keeps_working(
    run_daemon: Any, fake_slack: FakeSlack, caplog: Any, which: str
) -> None:
    env = slack_env(fake_slack, bot="xoxb-WRONG") if which == "bot" else slack_env(fake_slack, app="xapp-WRONG")
    d = await run_daemon(**env)
    channel = d.daemon.channels["slack"]
    await wait_until(lambda: channel.state == "unauthorized")
    status = (await d.http.get("/status")).json()
    assert status["channels"]["slack"]["state"] == "unauthorized"
    assert "invalid_auth" in (channel.status.last_error or "")
    assert ("app token" in channel.status.last_error) == (which == "app")
    await d.post("main", "still there?")
    replies = await d.wait_bot_replies("main", 1)
    assert replies[0]["text"] == "Echo: still there?"
    assert not any("WRONG" in r.getMessage() for r in caplog.records)


async def test_missing_app_token_means_off(run_daemon: Any, fake_slack: FakeSlack, caplog: Any) -> None:
    d = await run_daemon(NGB_SLACK_BOT_TOKEN=BOT, NGB_CHANNELS=json.dumps({"slack": {"base_url": fake_slack.base_url}}))
    assert d.daemon.channels["slack"].state == "off"
    assert sum("channel slack: off" in r.getMessage() and "NGB_SLACK_APP_TOKEN" in r.getMessage()
               for r in caplog.records) == 1
    assert fake_slack.requests == []


def test_settings_from_config(tmp_path: Any) -> None:
    cfg = load_config(None, env={"NGB_SLACK_BOT_TOKEN": "xoxb-1", "NGB_SLACK_APP_TOKEN": "xapp-1",
                                 "NGB_STATE_DIR": str(tmp_path)})
    assert cfg.channels == {"slack": {"bot_token": "xoxb-1", "app_token": "xapp-1"}}
    s = SlackSettings.from_table({"bot_token": "xoxb-1", "app_token": "xapp-1", "base_url": "http://127.0.0.1:9/api"})
    assert (s.base_url, s.off_reason, s.reply_in_thread) == ("http://127.0.0.1:9/api/", None, "auto")
    assert SlackSettings.from_table({"bot_token": "xoxb-1", "app_token": "xapp-1"}).base_url == "https://slack.com/api/"
    with pytest.raises(ConfigError, match="channels.slack.app_token"):
        SlackSettings.from_table({"bot_token": "xoxb-1", "app_token": "xoxb-2"})
    with pytest.raises(ConfigError, match="channels.slack.reply_in_thraed: unknown key"):
        SlackSettings.from_table({"reply_in_thraed": "always"})


def test_to_inbound() -> None:
    channel = SlackChannel(SlackSettings(bot_token="xoxb-1", app_token="xapp-1"))
    channel.me = {"user_id": "UBOT", "user": "andy"}
    base = {"type": "message", "channel": "C1", "user": "U9", "ts": "1700000000.000100"}
    m = channel.to_inbound({**base, "text": "hey <@UBOT> see <https://x.org|this> &amp; <#C2|general>"})
    assert m is not None and m.mentions_bot and m.platform_id == "C1:1700000000.000100" and m.chat == "slack:C1"
    assert not m.direct  # a channel
    assert m.text == "hey @andy see this (https://x.org) & #general"
    assert channel.to_inbound({**base, "text": "hi", "bot_id": "B1"}) is None
    assert channel.to_inbound({**base, "text": "hi", "subtype": "message_changed"}) is None
    assert channel.to_inbound({**base, "user": "UBOT", "text": "mine"}) is None
    m = channel.to_inbound({**base, "text": "in thread", "thread_ts": "1699999999.000001"})
    assert m is not None and m.reply_to == "C1:1699999999.000001" and not m.mentions_bot
    m = channel.to_inbound({**base, "channel": "D1", "channel_type": "im", "text": "dm"})
    assert m is not None and m.mentions_bot and m.direct  # a DM: a pairing code when unregistered
    # a file without text is a message (its files become attachments or notes: tests/test_media_slack.py)
    m = channel.to_inbound({**base, "text": "", "subtype": "file_share", "files": [{"id": "F1", "name": "a.png"}]})
    assert m is not None and m.text == "" and channel.to_inbound({**base, "text": ""}) is None


class Stoppable(StoppableDaemon):
    """A daemon in the test's nursery that can be stopped (as by systemctl stop) and started again
    on the same state dir."""

    @classmethod
    async def start(cls, nursery: trio.Nursery, tmp: Path, fake: FakeSlack, behaviour: FakeBehaviour) -> Stoppable:
        return await cls.start_with(nursery, make_config(tmp, **slack_env(fake)), behaviour, "slack")


def echo_mentions(prompt: str) -> list[str]:
    """One "Echo: ..." per message of the batch that mentions the bot."""
    return [f"Echo: {t}" for t in re.findall(r">([^<]*)</message>", prompt) if "@andy" in t]


async def test_a_post_whose_answer_was_lost_before_a_restart_is_not_posted_again(
    tmp_path: Path, fake_slack: FakeSlack
) -> None:
    """Slack took the reply, its answer was lost, and the daemon stopped before the retry: the next
    run remembers no attempt, but the outbox row is older than the run, so the post is looked for
    (by the key in its metadata) before the reply would go a second time."""
    chat = f"slack:{CHAN}"
    behaviour = FakeBehaviour(reply=echo_each)
    async with trio.open_nursery() as nursery:
        first = await Stoppable.start(nursery, tmp_path, fake_slack, behaviour)
        await first.daemon.registry.add(Group(chat=chat, folder="team", requires_trigger=False))
        fake_slack.lose_next_answer("chat.postMessage")
        fake_slack.user_message(CHAN, "are you there?")
        await wait_until(lambda: first.daemon.outbox.retries >= 1)  # failed; its retry is a second away
        await first.stop()
        assert len(fake_slack.sent) == 1 and first.daemon.outbox.delivered == 0

        second = await Stoppable.start(nursery, tmp_path, fake_slack, behaviour)
        await wait_until(lambda: second.daemon.outbox.delivered == 1, timeout=15)
        bots = [m for m in fake_slack.history[CHAN] if m.get("bot_id")]
        assert [m["text"] for m in bots] == ["Echo: are you there?"]  # posted once over the two runs
        assert len(fake_slack.sent) == 1
        (reply,) = [m for m in await stored(second, chat) if m.from_bot]
        assert reply.platform_id == f"{CHAN}:{bots[0]['ts']}"
        await second.stop()
        nursery.cancel_scope.cancel()


async def test_messages_posted_while_the_daemon_was_down_are_caught_up_after_a_restart(
    tmp_path: Path, fake_slack: FakeSlack
) -> None:
    chat = f"slack:{CHAN}"
    behaviour = FakeBehaviour(reply=echo_mentions)
    async with trio.open_nursery() as nursery:
        first = await Stoppable.start(nursery, tmp_path, fake_slack, behaviour)
        await first.daemon.registry.add(Group(chat=chat, folder="team"))
        fake_slack.user_message(CHAN, "before the restart")
        await wait_until(lambda: not fake_slack.pending)  # stored, then acked
        first_mark = (await first.daemon.store.channel_marks("slack"))[chat]  # moved before the ack
        await first.stop()

        # Slack gives up on events it cannot deliver: only the history knows what came meanwhile.
        fake_slack.lose_events_while_disconnected = True
        fake_slack.max_page = 4
        while_down = [f"while down {i}" + (" <@UBOT> answer me" if i % 3 == 0 else "") for i in range(10)]
        posted = [fake_slack.user_message(CHAN, text) for text in while_down]
        newest = fake_slack.user_message(CHAN, "a reply in a new thread", thread_ts=posted[4]["ts"])
        assert fake_slack.events_lost == 11

        second = await Stoppable.start(nursery, tmp_path, fake_slack, behaviour)
        channel = second.daemon.channels["slack"]
        await wait_until(lambda: channel.catch_ups == 1, timeout=15)
        msgs = await second.daemon.store.messages_after(chat, 0)
        expected = ["before the restart"] + [t.replace("<@UBOT>", "@andy") for t in while_down]
        expected += ["a reply in a new thread"]
        assert texts_of(msgs) == expected  # each once, oldest first
        assert (await second.daemon.store.channel_marks("slack"))[chat] == newest["ts"]  # the newest stored
        triggered = [t for t in expected if "@andy" in t]
        # a last trigger, live: once it is answered, every earlier one has had its turn
        fake_slack.lose_events_while_disconnected = False
        last = fake_slack.user_message(CHAN, "<@UBOT> the last one")
        await wait_until(lambda: any(s["text"] == "Echo: @andy the last one" for s in fake_slack.sent), timeout=15)
        await wait_until(lambda: not fake_slack.pending)
        assert sorted(s["text"] for s in fake_slack.sent) == sorted(f"Echo: {t}" for t in [*triggered, "@andy the last one"])
        # the mark is the newest message stored: the catch-up of the next restart starts there
        assert first_mark == fake_slack.history[CHAN][0]["ts"]
        assert (await second.daemon.store.channel_marks("slack"))[chat] == last["ts"]
        await second.stop()
        nursery.cancel_scope.cancel()


async def test_a_catch_up_cut_off_by_a_stop_resumes_where_it_got_to(tmp_path: Path, fake_slack: FakeSlack) -> None:
    """What the live events store while a catch-up runs does not move the mark past the messages the
    catch-up has yet to fetch: a daemon stopped (or killed) meanwhile finds them at its next start."""
    chat = f"slack:{CHAN}"
    behaviour = FakeBehaviour(reply=echo_mentions)
    async with trio.open_nursery() as nursery:
        first = await Stoppable.start(nursery, tmp_path, fake_slack, behaviour)
        await first.daemon.registry.add(Group(chat=chat, folder="team"))
        fake_slack.user_message(CHAN, "seen live")
        await wait_until(lambda: not fake_slack.pending)
        await first.stop()

        fake_slack.lose_events_while_disconnected = True
        for i in range(3):
            fake_slack.user_message(CHAN, f"missed {i}")
        fake_slack.fail_next("conversations.history", "ratelimited", times=1000)  # the catch-up waits
        second = await Stoppable.start(nursery, tmp_path, fake_slack, behaviour)
        await wait_until(lambda: any(m == "conversations.history" for m, _ in fake_slack.requests))
        fake_slack.user_message(CHAN, "live during the catch-up")
        await wait_until(lambda: not fake_slack.pending)  # stored and acked
        assert texts_of(await second.daemon.store.messages_after(chat, 0)) == ["seen live", "live during the catch-up"]
        mark = (await second.daemon.store.channel_marks("slack"))[chat]
        assert mark == fake_slack.history[CHAN][0]["ts"]  # still at "seen live": the missed ones come first
        await second.stop()
        assert second.daemon.channels["slack"].catch_ups == 1 and second.daemon.channels["slack"].fetched == 0

        fake_slack.clear_failures()
        third = await Stoppable.start(nursery, tmp_path, fake_slack, behaviour)
        await wait_until(lambda: third.daemon.channels["slack"].catch_ups == 1, timeout=15)
        msgs = await third.daemon.store.messages_after(chat, 0)
        assert sorted(texts_of(msgs)) == sorted(["seen live", "missed 0", "missed 1", "missed 2", "live during the catch-up"])
        assert (await third.daemon.store.channel_marks("slack"))[chat] == fake_slack.history[CHAN][-1]["ts"]
        await third.stop()
        nursery.cancel_scope.cancel()
