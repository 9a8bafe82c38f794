"""Live previews (base.LivePreview) on Telegram, Slack, Discord and Lark: each channel alone, its real
SDK against the platform's fake in tests/fakes/, which keeps every edit of a message. A preview is
posted where ``send`` would put the reply, in plain text; edits replace its text; ``finish_preview``
edits it to the reply's first part formatted as ``send`` formats it and posts the other parts after
it, once; a preview a person deleted makes the final reply a new message."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from ngb.channels.base import ChannelError, LivePreview, offers
from ngb.channels.discord import DiscordChannel, DiscordSettings
from ngb.channels.lark import LarkChannel, LarkSettings, sdk
from ngb.channels.slack import SlackChannel, SlackSettings
from ngb.channels.telegram import TelegramChannel, TelegramSettings
from ngb.records import InboundMessage
from tests.channel_helpers import wait_until
from tests.fakes.discord import FakeDiscord
from tests.fakes.lark import FakeLark
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram

HALF = "Here is **the plan"  # a reply cut off mid-Markdown: the preview shows it as it is
FINAL = "Here is **the plan**: `ngb start`."


def long_reply(paragraphs: int, words: int) -> str:
    return "\n\n".join(f"Paragraph {i}. **Point {i}.** " + "word " * words for i in range(paragraphs))


async def run_alone(nursery: trio.Nursery, channel: Any) -> None:
    """The channel alone (no daemon), connected to its fake; what it receives is dropped."""

    async def submit(inbound: InboundMessage) -> None:
        return None

    await nursery.start(channel.run, submit)
    await wait_until(lambda: channel.state == "connected")


# -- Telegram ----------------------------------------------------------------------------------------
TG_TOKEN = "123456:TEST-token"
FORUM = -1001234


@pytest.fixture
async def tg(tmp_path: Path) -> AsyncIterator[tuple[FakeTelegram, TelegramChannel]]:
    async with FakeTelegram.serving(token=TG_TOKEN) as fake, trio.open_nursery() as nursery:
        settings = TelegramSettings.from_table({"token": TG_TOKEN, "base_url": fake.base_url, "poll_timeout": 1,
                                                "reconnect_base": "0.05"})
        channel = TelegramChannel(settings)
        await run_alone(nursery, channel)
        yield fake, channel
        nursery.cancel_scope.cancel()


async def test_telegram_preview_is_plain_text_in_the_triggers_topic_then_edited(
        tg: tuple[FakeTelegram, TelegramChannel]) -> None:
    fake, channel = tg
    assert offers(channel, LivePreview)
    topic = fake.create_topic(FORUM, "Release")
    trigger = fake.user_message(FORUM, "@andy_bot plan?", thread_id=topic)
    chat = f"telegram:{FORUM}"
    pid = await channel.send_preview(chat, HALF, f"{FORUM}/{topic}:{trigger['message_id']}")
    (sent,) = fake.sent
    assert "parse_mode" not in sent["params"] and sent["text"] == HALF  # plain: no HTML, no parse error
    assert (sent["reply_to"], sent["topic"]) == (trigger["message_id"], topic)
    assert pid == f"{FORUM}/{topic}:{sent['message']['message_id']}"
    await channel.edit_preview(chat, pid, HALF + "** is")
    await channel.edit_preview(chat, pid, HALF + "** is")  # Telegram: "message is not modified" -> fine
    await channel.edit_preview(chat, pid, "x" * 5000)  # longer than a message: cut, with "…"
    versions = fake.versions(FORUM, sent["message"]["message_id"])
    assert versions[:2] == [HALF, HALF + "** is"] and len(versions) == 3
    assert versions[2].endswith("…") and len(versions[2]) == 4096
    assert len(fake.sent) == 1 and all("parse_mode" not in e["params"] for e in fake.edits)


async def test_telegram_finish_formats_the_first_part_and_posts_the_rest_once(
        tg: tuple[FakeTelegram, TelegramChannel]) -> None:
    fake, channel = tg
    topic = fake.create_topic(FORUM, "Release")
    trigger = fake.user_message(FORUM, "@andy_bot plan?", thread_id=topic)
    chat, reply_to = f"telegram:{FORUM}", f"{FORUM}/{topic}:{trigger['message_id']}"
    pid = await channel.send_preview(chat, HALF, reply_to)
    preview_id = fake.sent[0]["message"]["message_id"]
    text = FINAL + "\n\n" + long_reply(16, 150)  # four parts or so
    last = await channel.finish_preview(chat, pid, text, reply_to)
    final_edit = fake.edits[-1]
    assert final_edit["message_id"] == preview_id and final_edit["params"]["parse_mode"] == "HTML"
    assert "<b>the plan</b>" in final_edit["params"]["text"] and "<code>ngb start</code>" in final_edit["params"]["text"]
    rest = fake.sent[1:]
    assert len(rest) >= 2 and [s["topic"] for s in rest] == [topic] * len(rest)  # in the preview's topic
    assert [s["reply_to"] for s in rest] == [None] * len(rest)  # only the first part replies
    assert last == f"{FORUM}/{topic}:{rest[-1]['message']['message_id']}"
    shown = "\n".join([fake.messages[(FORUM, preview_id)]["text"]] + [s["text"] for s in rest])
    assert shown.replace("\n", " ").split() == text.replace("**", "").replace("`", "").split()
    edits, sent = len(fake.edits), len(fake.sent)
    assert await channel.finish_preview(chat, pid, text, reply_to) == last  # again: nothing new
    assert (len(fake.edits), len(fake.sent)) == (edits, sent)


async def test_telegram_finish_resumes_after_a_failed_part(tg: tuple[FakeTelegram, TelegramChannel]) -> None:
    fake, channel = tg
    chat = "telegram:4242"
    pid = await channel.send_preview(chat, HALF)
    text = long_reply(16, 150)  # four parts
    fake.fail_next("sendMessage", 502, "Bad Gateway", after=1)  # part 2 goes, part 3 fails
    with pytest.raises(ChannelError):
        await channel.finish_preview(chat, pid, text)
    assert len(fake.sent) == 2  # the preview and part 2
    await channel.finish_preview(chat, pid, text)  # the outbox's retry
    texts = [s["text"] for s in fake.sent[1:]]
    assert len(texts) == 3 and len(set(texts)) == 3  # parts 2, 3 and 4, none twice
    assert len(fake.edits) == 1  # the preview was edited once


async def test_telegram_deleted_preview_ends_edits_and_the_reply_goes_as_a_new_message(
        tg: tuple[FakeTelegram, TelegramChannel]) -> None:
    fake, channel = tg
    trigger = fake.user_message(-100777, "@andy_bot plan?")
    chat, reply_to = "telegram:-100777", f"-100777:{trigger['message_id']}"
    pid = await channel.send_preview(chat, HALF, reply_to)
    fake.delete_message(-100777, fake.sent[0]["message"]["message_id"])
    with pytest.raises(ChannelError, match="deleted"):
        await channel.edit_preview(chat, pid, HALF + "**")
    last = await channel.finish_preview(chat, pid, FINAL, reply_to)
    again = fake.sent[-1]
    assert len(fake.sent) == 2 and again["reply_to"] == trigger["message_id"]  # as send would
    assert again["params"]["parse_mode"] == "HTML" and last == f"-100777:{again['message']['message_id']}"
    assert await channel.finish_preview(chat, pid, FINAL, reply_to) == last and len(fake.sent) == 2



async def test_telegram_preview_that_cannot_be_edited_gets_the_reply_as_a_new_message(
        tg: tuple[FakeTelegram, TelegramChannel]) -> None:
    fake, channel = tg
    trigger = fake.user_message(4242, "plan?")
    uneditable = f"4242:{trigger['message_id']}"  # Telegram: "message can't be edited" (not the bot's)
    last = await channel.finish_preview("telegram:4242", uneditable, FINAL, uneditable)
    (sent,) = fake.sent
    assert sent["reply_to"] == trigger["message_id"] and last == f"4242:{sent['message']['message_id']}"
    assert not fake.edits


# -- Slack -------------------------------------------------------------------------------------------
SLACK_BOT, SLACK_APP, CHAN = "xoxb-1-TEST", "xapp-1-TEST", "C0123"


@pytest.fixture
async def slack() -> AsyncIterator[tuple[FakeSlack, SlackChannel]]:
    async with trio.open_nursery() as nursery:
        fake = await FakeSlack.start(nursery, bot_token=SLACK_BOT, app_token=SLACK_APP)
        settings = SlackSettings.from_table({"bot_token": SLACK_BOT, "app_token": SLACK_APP, "base_url": fake.base_url,
                                             "ping_interval": "0.5", "reconnect_base": "0.05", "connect_timeout": "3"})
        channel = SlackChannel(settings)
        await run_alone(nursery, channel)
        yield fake, channel
        nursery.cancel_scope.cancel()


def in_thread(fake: FakeSlack) -> tuple[str, str]:
    """A thread with a user's question in it: (the thread's ts, the question's platform id)."""
    root = fake.user_message(CHAN, "release thread")
    question = fake.user_message(CHAN, "<@UBOT> plan?", thread_ts=root["ts"])
    return root["ts"], f"{CHAN}:{question['ts']}"


async def test_slack_preview_is_unconverted_text_in_the_triggers_thread_then_updated(
        slack: tuple[FakeSlack, SlackChannel]) -> None:
    fake, channel = slack
    assert offers(channel, LivePreview)
    thread, reply_to = in_thread(fake)
    chat = f"slack:{CHAN}"
    pid = await channel.send_preview(chat, HALF + " <!channel> & co", reply_to)
    (sent,) = fake.sent
    assert sent["text"] == HALF + " &lt;!channel&gt; &amp; co"  # not mrkdwn; no @channel, no link
    assert sent["thread_ts"] == thread and pid == f"{CHAN}:{sent['ts']}"
    await channel.edit_preview(chat, pid, HALF + "** is")
    await channel.edit_preview(chat, pid, HALF + "** is")  # the same text again: fine
    await channel.edit_preview(chat, pid, "x" * 5000)  # cut to one part, with "…"
    versions = fake.versions(CHAN, sent["ts"])
    assert versions[1:3] == [HALF + "** is"] * 2 and versions[3] == "x" * 3899 + "…"
    assert len(fake.sent) == 1


async def test_slack_finish_formats_the_first_part_and_posts_the_rest_in_the_thread_once(
        slack: tuple[FakeSlack, SlackChannel]) -> None:
    fake, channel = slack
    thread, reply_to = in_thread(fake)
    chat = f"slack:{CHAN}"
    pid = await channel.send_preview(chat, HALF, reply_to)
    text = FINAL + "\n\n" + long_reply(16, 150)
    last = await channel.finish_preview(chat, pid, text, reply_to)
    final = fake.edits[-1]
    assert final["ts"] == fake.sent[0]["ts"] and final["text"].startswith("Here is *the plan*: `ngb start`.")
    rest = fake.sent[1:]
    assert len(rest) >= 2 and [s["thread_ts"] for s in rest] == [thread] * len(rest)
    assert "*Point 15.*" in rest[-1]["text"] and last == f"{CHAN}:{rest[-1]['ts']}"
    edits, sent = len(fake.edits), len(fake.sent)
    assert await channel.finish_preview(chat, pid, text, reply_to) == last  # again: nothing new
    assert (len(fake.edits), len(fake.sent)) == (edits, sent)


async def test_slack_deleted_preview_ends_edits_and_the_reply_goes_as_a_new_message(
        slack: tuple[FakeSlack, SlackChannel]) -> None:
    fake, channel = slack
    thread, reply_to = in_thread(fake)
    chat = f"slack:{CHAN}"
    pid = await channel.send_preview(chat, HALF, reply_to)
    fake.delete_message(CHAN, fake.sent[0]["ts"])
    with pytest.raises(ChannelError, match="deleted"):
        await channel.edit_preview(chat, pid, HALF + "**")
    last = await channel.finish_preview(chat, pid, FINAL, reply_to)
    again = fake.sent[-1]
    assert len(fake.sent) == 2 and again["thread_ts"] == thread and again["text"].startswith("Here is *the plan*")
    assert last == f"{CHAN}:{again['ts']}" and not fake.edits


# -- Discord -----------------------------------------------------------------------------------------
DC_TOKEN, DC_CHAN = "TEST.discord.token", 920000000000000001


@pytest.fixture
async def dc() -> AsyncIterator[tuple[FakeDiscord, DiscordChannel]]:
    async with trio.open_nursery() as nursery:
        fake = await FakeDiscord.start(nursery, token=DC_TOKEN, heartbeat_ms=300)
        settings = DiscordSettings(token=DC_TOKEN, api_base=fake.api_base, gateway_url=fake.gateway_url,
                                   reconnect_base=0.05, reconnect_cap=0.3, connect_timeout=10)
        channel = DiscordChannel(settings)
        await run_alone(nursery, channel)
        yield fake, channel
        nursery.cancel_scope.cancel()


async def test_discord_preview_is_the_text_as_it_is_as_a_reply_then_edited(dc: tuple[FakeDiscord, DiscordChannel]) -> None:
    fake, channel = dc
    assert offers(channel, LivePreview)
    trigger = fake.user_message(DC_CHAN, "plan? @everyone")
    chat = f"discord:{DC_CHAN}"
    pid = await channel.send_preview(chat, HALF + " @everyone", trigger["id"])
    (sent,) = fake.sent
    assert sent["content"] == HALF + " @everyone" and sent["reply_to"] == int(trigger["id"])
    assert sent["pinged"] == {f"user:{trigger['author']['id']}"} and pid == sent["message"]["id"]  # the asker only
    await channel.edit_preview(chat, pid, HALF + "** is")
    await channel.edit_preview(chat, pid, HALF + "** is")  # the same text again: fine
    await channel.edit_preview(chat, pid, "x" * 2500)  # cut to one message, with "…"
    versions = fake.versions(DC_CHAN, int(pid))
    assert versions[1:3] == [HALF + "** is"] * 2 and versions[3] == "x" * 1999 + "…"
    assert all(e["body"]["allowed_mentions"]["parse"] == [] for e in fake.edits)  # an edit pings no one
    assert len(fake.sent) == 1


async def test_discord_finish_edits_the_first_part_and_posts_the_rest_once(dc: tuple[FakeDiscord, DiscordChannel]) -> None:
    fake, channel = dc
    trigger = fake.user_message(DC_CHAN, "plan?")
    chat = f"discord:{DC_CHAN}"
    pid = await channel.send_preview(chat, HALF, trigger["id"])
    text = FINAL + "\n\n" + long_reply(5, 150)  # three parts or so
    last = await channel.finish_preview(chat, pid, text, trigger["id"])
    final = fake.edits[-1]
    assert final["message_id"] == int(pid) and final["content"].startswith(FINAL)  # Markdown, as send sends
    rest = fake.sent[1:]
    assert len(rest) >= 2 and [s["reply_to"] for s in rest] == [None] * len(rest)
    assert last == rest[-1]["message"]["id"] and all(not s["pinged"] for s in rest)
    edits, sent = len(fake.edits), len(fake.sent)
    assert await channel.finish_preview(chat, pid, text, trigger["id"]) == last  # again: nothing new
    assert (len(fake.edits), len(fake.sent)) == (edits, sent)


async def test_discord_deleted_preview_ends_edits_and_the_reply_goes_as_a_new_message(
        dc: tuple[FakeDiscord, DiscordChannel]) -> None:
    fake, channel = dc
    trigger = fake.user_message(DC_CHAN, "plan?")
    chat = f"discord:{DC_CHAN}"
    pid = await channel.send_preview(chat, HALF, trigger["id"])
    fake.delete_message(DC_CHAN, int(pid))
    with pytest.raises(ChannelError, match="deleted"):
        await channel.edit_preview(chat, pid, HALF + "**")
    last = await channel.finish_preview(chat, pid, FINAL, trigger["id"])
    again = fake.sent[-1]
    assert len(fake.sent) == 2 and again["reply_to"] == int(trigger["id"]) and again["content"] == FINAL
    assert last == again["message"]["id"] and not fake.edits


# -- Lark --------------------------------------------------------------------------------------------
LARK_ID, LARK_SECRET, GROUP = "cli_test", "secret-test", "oc_group1"


@pytest.fixture
async def lark(request: Any) -> AsyncIterator[tuple[FakeLark, LarkChannel]]:
    await trio.to_thread.run_sync(sdk)  # the SDK's import (seconds of CPU) outside any test's wait
    table = getattr(request, "param", {})
    async with trio.open_nursery() as nursery:
        fake = await FakeLark.start(nursery, app_id=LARK_ID, app_secret=LARK_SECRET)
        settings = LarkSettings(app_id=LARK_ID, app_secret=LARK_SECRET, domain=fake.domain, resolve_names=False,
                                reconnect_base=0.05, reconnect_cap=0.3, connect_timeout=5, **table)
        channel = LarkChannel(settings)
        await run_alone(nursery, channel)
        yield fake, channel
        nursery.cancel_scope.cancel()


def lark_trigger(fake: FakeLark) -> str:
    event = fake.user_message(GROUP, "plan?", mention_bot=True)
    return str(event["event"]["message"]["message_id"])


async def test_lark_preview_is_plain_rich_text_replying_to_the_trigger_then_edited(
        lark: tuple[FakeLark, LarkChannel]) -> None:
    fake, channel = lark
    assert offers(channel, LivePreview)
    trigger = lark_trigger(fake)
    chat = f"lark:{GROUP}"
    pid = await channel.send_preview(chat, HALF, trigger)
    (sent,) = fake.sent
    assert (sent["kind"], sent["reply_to"], sent["msg_type"]) == ("reply", trigger, "post")  # as send would
    assert sent["content"] == {"zh_cn": {"content": [[{"tag": "text", "text": HALF}]]}}  # text, not md
    assert pid == sent["message_id"]
    await channel.edit_preview(chat, pid, HALF + "** is")
    await channel.edit_preview(chat, pid, "x" * 5000)  # cut to one part, with "…"
    assert fake.versions(pid) == [HALF, HALF + "** is", "x" * 3999 + "…"]
    assert [e["msg_type"] for e in fake.edits] == ["post", "post"] and len(fake.sent) == 1


async def test_lark_finish_formats_the_first_part_and_posts_the_rest_once(lark: tuple[FakeLark, LarkChannel]) -> None:
    fake, channel = lark
    trigger = lark_trigger(fake)
    chat = f"lark:{GROUP}"
    pid = await channel.send_preview(chat, HALF, trigger)
    text = FINAL + "\n\n" + long_reply(12, 150)  # three parts or so
    last = await channel.finish_preview(chat, pid, text, trigger)
    final = fake.edits[-1]
    assert final["message_id"] == pid and final["content"]["zh_cn"]["content"][0][0]["tag"] == "md"
    assert final["text"].startswith(FINAL)  # the Markdown, for Lark's md element to render
    rest = fake.sent[1:]
    assert len(rest) >= 2 and [(s["kind"], s["reply_to"]) for s in rest] == [("create", None)] * len(rest)
    assert last == rest[-1]["message_id"]
    edits, sent = len(fake.edits), len(fake.sent)
    assert await channel.finish_preview(chat, pid, text, trigger) == last  # again: nothing new
    assert (len(fake.edits), len(fake.sent)) == (edits, sent)


@pytest.mark.parametrize("lark", [{"format": "text", "reply_in_thread": True}], indirect=True)
async def test_lark_text_previews_stop_at_the_edit_limit_and_the_rest_goes_to_the_thread(
        lark: tuple[FakeLark, LarkChannel]) -> None:
    fake, channel = lark
    trigger = lark_trigger(fake)
    chat = f"lark:{GROUP}"
    pid = await channel.send_preview(chat, "a", trigger)
    for n in range(30):
        await channel.edit_preview(chat, pid, "a" * (n + 2))
    text = long_reply(12, 150)
    await channel.finish_preview(chat, pid, text, trigger)
    assert len(fake.edits) == 20 and fake.edits[18]["text"] == "a" * 20  # 19 previews, then the final
    assert {e["msg_type"] for e in fake.edits} == {"text"} and fake.edits[-1]["text"] == text[:len(fake.edits[-1]["text"])]
    rest = fake.sent[1:]
    assert len(rest) >= 2 and [(s["reply_to"], s["reply_in_thread"]) for s in rest] == [(trigger, True)] * len(rest)


async def test_lark_recalled_preview_ends_edits_and_the_reply_goes_as_a_new_message(
        lark: tuple[FakeLark, LarkChannel]) -> None:
    fake, channel = lark
    trigger = lark_trigger(fake)
    chat = f"lark:{GROUP}"
    pid = await channel.send_preview(chat, HALF, trigger)
    fake.recall(pid)
    with pytest.raises(ChannelError, match="deleted"):
        await channel.edit_preview(chat, pid, HALF + "**")
    last = await channel.finish_preview(chat, pid, FINAL, trigger)
    again = fake.sent[-1]
    assert len(fake.sent) == 2 and (again["kind"], again["reply_to"]) == ("reply", trigger)
    assert json.dumps(again["content"]).count('"md"') == 1 and last == again["message_id"] and not fake.edits
