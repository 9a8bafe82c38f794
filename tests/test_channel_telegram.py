"""Telegram through the real daemon (in-process, fake agent) and the real python-telegram-bot,
against tests/fakes/telegram.py on loopback."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from ngb.channels.telegram import TelegramChannel, TelegramSettings
from ngb.config import ConfigError, load_config
from ngb.records import Group
from tests.channel_helpers import stored, wait_until
from tests.fakes.agent import FakeBehaviour, last_text
from tests.fakes.telegram import FakeTelegram

TOKEN = "123456:TEST-token"
GROUP = -100123
FORUM = -100777


@pytest.fixture
async def fake_tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram.serving(token=TOKEN) as fake:
        yield fake


def tg_env(fake: FakeTelegram, token: str = TOKEN, **table: Any) -> dict[str, str]:
    settings = {"base_url": fake.base_url, "poll_timeout": 2, "reconnect_base": "0.05", "reconnect_cap": "0.3", **table}
    return {"NGB_TELEGRAM_TOKEN": token, "NGB_CHANNELS": json.dumps({"telegram": settings})}


async def settled(d: Any, folder: str, chat: str) -> None:
    """Wait until the group has nothing left to answer and nothing waits in the outbox: no turn can
    follow, so what was sent by now is all that will be sent."""
    with trio.fail_after(10):
        while await d.daemon.store.pending_input(folder, chat) or await d.daemon.store.outbox_depth():
            await trio.sleep(0.02)


async def start(run_daemon: Any, fake: FakeTelegram, behaviour: FakeBehaviour | None = None, **env: str) -> Any:
    d = await run_daemon(behaviour, **{**tg_env(fake), **env})
    channel = d.daemon.channels["telegram"]
    await wait_until(lambda: channel.state == "connected")
    return d


async def test_group_trigger_context_and_one_threaded_reply(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d = await start(run_daemon, fake_tg)
    await d.daemon.registry.add(Group(chat=f"telegram:{GROUP}", folder="family"))

    fake_tg.user_message(GROUP, "the meeting moved to 3pm", first_name="Bob", user_id=7)
    await wait_until(lambda: fake_tg.poll_count >= 3)
    msgs = await stored(d, f"telegram:{GROUP}")
    assert [(m.text, m.sender, m.sender_id, m.mentions_bot) for m in msgs] == [
        ("the meeting moved to 3pm", "Bob", "7", False)
    ]
    trigger = fake_tg.user_message(GROUP, "@andy_bot when is the meeting?")
    sent = await wait_until(lambda: fake_tg.sent)
    await settled(d, "family", f"telegram:{GROUP}")
    assert len(fake_tg.sent) == 1  # exactly one reply
    assert sent[0]["reply_to"] == trigger["message_id"]  # threaded to the triggering message
    assert sent[0]["text"] == "Echo: @andy_bot when is the meeting?"
    prompt = d.launcher.prompts[-1][2]
    assert "the meeting moved to 3pm" in prompt  # the untriggered message went as context
    await wait_until(lambda: d.daemon.outbox.delivered == 1)  # the reply is stored before this counts
    msgs = await stored(d, f"telegram:{GROUP}")
    assert [m.from_bot for m in msgs] == [False, False, True]
    assert msgs[1].mentions_bot and msgs[2].platform_id == f"{GROUP}:{sent[0]['message']['message_id']}"

    status = (await d.http.get("/status")).json()
    assert status["channels"]["telegram"]["state"] == "connected"


async def test_trigger_word_and_reply_to_bot_thread_too(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d = await start(run_daemon, fake_tg)
    await d.daemon.registry.add(Group(chat=f"telegram:{GROUP}", folder="family"))
    first = fake_tg.user_message(GROUP, "@Andy hi")  # the daemon's trigger word
    await wait_until(lambda: len(fake_tg.sent) == 1)
    assert fake_tg.sent[0]["reply_to"] == first["message_id"]
    bot_message = fake_tg.sent[0]["message"]
    second = fake_tg.user_message(GROUP, "and tomorrow?", reply_to=bot_message)  # a reply to the bot
    await wait_until(lambda: len(fake_tg.sent) == 2)
    assert fake_tg.sent[1]["reply_to"] == second["message_id"]
    # a bot message is stored when its send returns, just after the fake has recorded it
    with trio.fail_after(5):
        while len(msgs := await stored(d, f"telegram:{GROUP}")) < 4:
            await trio.sleep(0.01)
    # the user's reply may be stored before or after the bot's first answer: find it by text
    (reply_to_bot,) = [m for m in msgs if m.text == "and tomorrow?"]
    assert reply_to_bot.mentions_bot and not reply_to_bot.from_bot
    assert sorted(m.text for m in msgs if m.from_bot) == ["Echo: @Andy hi", "Echo: and tomorrow?"]


async def test_private_chat_needs_no_trigger(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d = await start(run_daemon, fake_tg)
    await d.daemon.registry.add(Group(chat="telegram:4242", folder="alice"))
    fake_tg.user_message(4242, "what's up", user_id=4242)
    await wait_until(lambda: fake_tg.sent)
    assert fake_tg.sent[0]["params"]["chat_id"] == 4242
    assert fake_tg.sent[0]["text"] == "Echo: what's up"


async def test_unregistered_chat_is_stored_only(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d = await start(run_daemon, fake_tg)
    fake_tg.user_message(-999, "@andy_bot anyone?")
    await wait_until(lambda: not fake_tg.updates)  # confirmed to Telegram: stored
    assert [m.text for m in await stored(d, "telegram:-999")] == ["@andy_bot anyone?"]
    # no group, so no turn: nothing was queued for that chat, and nothing can be
    assert await d.daemon.store.outbox_items("telegram:-999") == [] and fake_tg.sent == []


async def test_long_reply_is_split_in_order_with_markdown(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    paragraphs = [f"**Part {i}.** " + " ".join(f"Sentence {i}.{j} says a few words." for j in range(12)) for i in range(30)]
    long_text = "\n\n".join(paragraphs)
    assert len(long_text) > 10_000
    d = await start(run_daemon, fake_tg, FakeBehaviour(reply=lambda p: [long_text]))
    await d.daemon.registry.add(Group(chat="telegram:4242", folder="alice"))
    trigger = fake_tg.user_message(4242, "tell me everything")
    await wait_until(lambda: d.daemon.outbox.delivered >= 1)
    parts = fake_tg.sent
    assert len(parts) >= 3, [len(p["text"]) for p in parts]
    assert all(len(p["text"]) <= 4096 for p in parts)
    assert parts[0]["reply_to"] == trigger["message_id"] and parts[1]["reply_to"] is None
    assert all(p["params"]["parse_mode"] == "HTML" for p in parts)
    assert "<b>Part 0.</b>" in parts[0]["params"]["text"]
    # in order, nothing lost: the visible text is the Markdown without its markers
    visible = "\n\n".join(p["text"] for p in parts)
    assert visible == long_text.replace("**", "")
    assert parts[-1]["text"].endswith("Sentence 29.11 says a few words.")


def echo_each(prompt: str) -> list[str]:
    """One reply per message of the batch, so 'answered once' is countable per message."""
    return [f"Echo: {t}" for t in re.findall(r">([^<]*)</message>", prompt)]


async def test_outage_then_reconnect_answers_each_message_once(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d = await start(run_daemon, fake_tg, FakeBehaviour(reply=echo_each))
    channel = d.daemon.channels["telegram"]
    await d.daemon.registry.add(Group(chat=f"telegram:{GROUP}", folder="family", requires_trigger=False))
    fake_tg.user_message(GROUP, "before")
    await wait_until(lambda: d.daemon.outbox.delivered == 1)  # acknowledged, not only received

    fake_tg.down()  # the long poll in flight dies; new connections are refused
    await wait_until(lambda: channel.state == "disconnected")
    for i in range(3):
        fake_tg.user_message(GROUP, f"during outage {i}")
    await wait_until(lambda: channel.status.reconnects >= 1)
    status = (await d.http.get("/status")).json()
    assert status["channels"]["telegram"]["state"] in ("disconnected", "connecting")
    fake_tg.up()
    await wait_until(lambda: channel.state == "connected")
    await wait_until(lambda: sum("during outage" in s["text"] for s in fake_tg.sent) == 3, timeout=15)
    # A drop that cuts only the long poll (no reply in flight: a reply whose answer is cut off is
    # the Bot API's unavoidable duplicate window, see docs/channels/telegram.md).
    await wait_until(lambda: d.daemon.outbox.delivered >= 4)
    await wait_until(lambda: fake_tg.requests[-1][0] == "getUpdates")
    fake_tg.drop()
    fake_tg.user_message(GROUP, "after")
    await wait_until(lambda: any(s["text"] == "Echo: after" for s in fake_tg.sent), timeout=15)
    await settled(d, "family", f"telegram:{GROUP}")
    texts = [m.text for m in await stored(d, f"telegram:{GROUP}") if not m.from_bot]
    assert texts == ["before", "during outage 0", "during outage 1", "during outage 2", "after"]
    replies = [s["text"] for s in fake_tg.sent]
    assert len(replies) == len(set(replies)), replies  # nothing answered twice
    assert sorted(replies) == sorted(f"Echo: {t}" for t in texts)  # each answered exactly once


async def test_redelivered_update_is_stored_once(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d = await start(run_daemon, fake_tg)
    message = fake_tg.user_message(-5, "only once")
    fake_tg.push_update({"message": message})  # Telegram sends the same message again
    await wait_until(lambda: not fake_tg.updates)  # both confirmed, each only after the store took it
    assert [m.text for m in await stored(d, "telegram:-5")] == ["only once"]


async def test_failed_send_is_retried_and_delivered_once(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d = await start(run_daemon, fake_tg)
    await d.daemon.registry.add(Group(chat="telegram:4242", folder="alice"))
    fake_tg.fail_next("sendMessage", 502, "Bad Gateway")
    fake_tg.user_message(4242, "hello")
    await wait_until(lambda: d.daemon.outbox.delivered == 1, timeout=15)
    (row,) = await d.daemon.store.outbox_items("telegram:4242")
    assert (row.state, row.attempts) == ("sent", 2)  # failed once, then sent: nothing left to send
    assert [s["text"] for s in fake_tg.sent] == ["Echo: hello"]
    assert d.daemon.outbox.retries == 1


async def test_split_reply_failing_midway_resumes_without_repeating(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    long_text = "\n\n".join(f"Paragraph {i}. " + "word " * 150 for i in range(12))
    d = await start(run_daemon, fake_tg, FakeBehaviour(reply=lambda p: [long_text]))
    await d.daemon.registry.add(Group(chat="telegram:4242", folder="alice"))
    fake_tg.fail_next("sendMessage", 502, "Bad Gateway", after=1)  # part 2 fails once
    fake_tg.user_message(4242, "go")
    await wait_until(lambda: d.daemon.outbox.delivered >= 1, timeout=15)
    visible = "\n\n".join(s["text"] for s in fake_tg.sent)
    assert len(fake_tg.sent) >= 3
    assert visible.split() == long_text.split()  # every part once, in order: part 1 was not sent again
    assert d.daemon.outbox.retries == 1


async def test_html_refused_falls_back_to_plain_text(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d = await start(run_daemon, fake_tg, FakeBehaviour(reply=lambda p: ["**hi** " + last_text(p)]))
    await d.daemon.registry.add(Group(chat="telegram:4242", folder="alice"))
    fake_tg.fail_next("sendMessage", 400, "Bad Request: can't parse entities: unexpected end tag")
    fake_tg.user_message(4242, "x")
    await wait_until(lambda: fake_tg.sent)
    assert fake_tg.sent[0]["text"] == "**hi** x" and "parse_mode" not in fake_tg.sent[0]["params"]


async def test_rejected_token_is_reported_and_local_chat_keeps_working(
    run_daemon: Any, fake_tg: FakeTelegram, caplog: Any
) -> None:
    d = await run_daemon(**tg_env(fake_tg, token="123456:WRONG"))
    channel = d.daemon.channels["telegram"]
    await wait_until(lambda: channel.state == "unauthorized")
    status = (await d.http.get("/status")).json()
    assert status["channels"]["telegram"]["state"] == "unauthorized"
    assert "rejected" in (channel.status.last_error or "")
    assert "WRONG" not in (channel.status.last_error or "")  # PTB quotes the token; we redact it
    await d.post("main", "still there?")
    replies = await d.wait_bot_replies("main", 1)
    assert replies[0]["text"] == "Echo: still there?"
    assert not any("WRONG" in r.getMessage() for r in caplog.records)


async def test_missing_token_means_off(run_daemon: Any, fake_tg: FakeTelegram, caplog: Any) -> None:
    d = await run_daemon(NGB_CHANNELS=json.dumps({"telegram": {"base_url": fake_tg.base_url}}))
    assert d.daemon.channels["telegram"].state == "off"
    assert sum("channel telegram: off" in r.getMessage() for r in caplog.records) == 1
    assert fake_tg.requests == []


async def test_no_table_no_token_no_channel(run_daemon: Any) -> None:
    d = await run_daemon()
    assert set(d.daemon.channels) == {"local"}


def test_settings_from_config(tmp_path: Any) -> None:
    cfg = load_config(None, env={"NGB_TELEGRAM_TOKEN": "1:abc", "NGB_STATE_DIR": str(tmp_path)})
    assert cfg.channels == {"telegram": {"token": "1:abc"}}
    assert cfg.describe()["channels"]["telegram"]["token"] == "<redacted>"
    s = TelegramSettings.from_table({"token": "1:abc", "base_url": "http://127.0.0.1:9/", "poll_timeout": "10s"})
    assert (s.base_url, s.base_file_url, s.poll_timeout) == ("http://127.0.0.1:9/bot", "http://127.0.0.1:9/file/bot", 10.0)
    secret = tmp_path / "tg"
    secret.write_text("1:fromfile\n")
    secret.chmod(0o600)
    assert TelegramSettings.from_table({"token_file": str(secret)}).token == "1:fromfile"
    with pytest.raises(ConfigError, match="channels.telegram.pol_timeout: unknown key"):
        TelegramSettings.from_table({"pol_timeout": 3})


def test_to_inbound_mentions() -> None:
    from telegram import Update, User

    channel = TelegramChannel(TelegramSettings(token="1:a"))
    channel.me = User(id=1, is_bot=True, first_name="Andy", username="Andy_Bot")

    def update(text: str, chat_id: int = -1, entities: list[dict] | None = None) -> Any:
        msg = {"message_id": 5, "date": 0, "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
               "from": {"id": 9, "is_bot": False, "first_name": "Zoë", "last_name": "Q"}, "text": text}
        if entities:
            msg["entities"] = entities
        return Update.de_json({"update_id": 1, "message": msg}, None)

    m = channel.to_inbound(update("😀 @andy_bot hi", entities=[{"type": "mention", "offset": 3, "length": 9}]))
    assert m is not None and m.mentions_bot and m.sender == "Zoë Q" and m.platform_id == "-1:5" and m.chat == "telegram:-1"
    m = channel.to_inbound(update("@someone hi", entities=[{"type": "mention", "offset": 0, "length": 8}]))
    assert m is not None and not m.mentions_bot
    m = channel.to_inbound(update("/help@andy_bot", entities=[{"type": "bot_command", "offset": 0, "length": 14}]))
    assert m is not None and m.mentions_bot
    m = channel.to_inbound(update("hi", chat_id=77))
    assert m is not None and m.mentions_bot and m.direct  # private chat
    assert not channel.to_inbound(update("/help@andy_bot", entities=[{"type": "bot_command", "offset": 0, "length": 14}])).direct
    # In a forum topic the bot opened, every message "replies" to the topic's creation message: that
    # is no reply to the bot. The topic is kept in the platform id.
    created = {"message_id": 3, "date": 0, "chat": {"id": -1, "type": "supergroup", "is_forum": True},
               "from": {"id": 1, "is_bot": True, "first_name": "Andy"}, "message_thread_id": 3,
               "is_topic_message": True, "forum_topic_created": {"name": "Bot news", "icon_color": 0}}
    topic_msg = {"message_id": 5, "date": 0, "chat": created["chat"], "text": "hello all",
                 "from": {"id": 9, "is_bot": False, "first_name": "Zoë"}, "message_thread_id": 3,
                 "is_topic_message": True, "reply_to_message": created}
    m = channel.to_inbound(Update.de_json({"update_id": 2, "message": topic_msg}, None))
    assert m is not None and not m.mentions_bot and m.platform_id == "-1/3:5" and m.reply_to is None
    # a reply chain in a supergroup that is no forum has a message_thread_id too: not a topic
    chain = {**topic_msg, "is_topic_message": False, "reply_to_message": {**created, "message_id": 4}}
    m = channel.to_inbound(Update.de_json({"update_id": 3, "message": chain}, None))
    assert m is not None and m.mentions_bot and m.platform_id == "-1:5"  # a real reply to the bot


async def test_typing_shown_while_the_agent_works_and_stops_with_the_reply(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d = await start(run_daemon, fake_tg, FakeBehaviour(delay=1.5))
    d.daemon.typing.interval = 0.4  # Telegram shows one "typing" for ~5 s; refreshed every 4 s normally
    await d.daemon.registry.add(Group(chat="telegram:4242", folder="alice"))
    fake_tg.user_message(4242, "think hard", user_id=4242)
    await wait_until(lambda: fake_tg.sent, timeout=15)
    before_reply = [a for a in fake_tg.actions if a["sent_before"] == 0]
    assert len(before_reply) >= 2, fake_tg.actions  # shown at once, then refreshed while it works
    assert all(a["chat_id"] == 4242 and a["action"] == "typing" for a in before_reply)
    typing = d.daemon.typing
    await wait_until(lambda: not typing.typing_chats() and typing.calls == len(fake_tg.actions))
    count = len(fake_tg.actions)
    # Another chat's turn keeps the indicator's loop going for a while: it types there, never here.
    await d.daemon.registry.add(Group(chat="telegram:4343", folder="bob"))
    fake_tg.user_message(4343, "and me?", user_id=4343)
    await wait_until(lambda: len(fake_tg.sent) == 2, timeout=15)
    later = fake_tg.actions[count:]
    assert len(later) >= 2 and all(a["chat_id"] == 4343 for a in later)  # the reply is out: no more "typing..."


async def test_forum_topic_gets_typing_and_every_part_even_when_the_trigger_was_deleted(
    run_daemon: Any, fake_tg: FakeTelegram
) -> None:
    long_text = "\n\n".join(f"Paragraph {i}. " + "word " * 150 for i in range(8))  # two parts
    trigger: dict[str, Any] = {}

    def answer(prompt: str) -> list[str]:
        fake_tg.delete_message(FORUM, trigger["message_id"])  # deleted while the agent worked
        return [long_text]

    d = await start(run_daemon, fake_tg, FakeBehaviour(reply=answer, delay=0.5))
    d.daemon.typing.interval = 0.2
    chat = f"telegram:{FORUM}"
    await d.daemon.registry.add(Group(chat=chat, folder="forum"))
    topic = fake_tg.create_topic(FORUM, "Release")
    fake_tg.user_message(FORUM, "in General: the release is Friday")
    trigger.update(fake_tg.user_message(FORUM, "@andy_bot is it still on?", thread_id=topic))
    await wait_until(lambda: d.daemon.outbox.delivered == 1, timeout=15)

    parts = fake_tg.sent
    assert len(parts) >= 2 and [p["topic"] for p in parts] == [topic] * len(parts)  # none in General
    assert parts[0]["reply_to"] is None  # the trigger is gone: no reply to it, still in its topic
    assert d.daemon.outbox.retries == 0  # and no "message to be replied not found" on the way
    typing = await wait_until(lambda: [a for a in fake_tg.actions if a["chat_id"] == FORUM])
    assert [a["topic"] for a in typing] == [topic] * len(typing)
    msgs = await stored(d, chat)
    assert [(m.text, m.platform_id, m.mentions_bot) for m in msgs if not m.from_bot] == [
        ("in General: the release is Friday", f"{FORUM}:{trigger['message_id'] - 1}", False),
        ("@andy_bot is it still on?", f"{FORUM}/{topic}:{trigger['message_id']}", True),
    ]
    assert [m.platform_id for m in msgs if m.from_bot] == [f"{FORUM}/{topic}:{parts[0]['message']['message_id']}"]


async def test_reply_queued_before_a_restart_goes_to_the_deleted_triggers_topic(
    run_daemon: Any, fake_tg: FakeTelegram
) -> None:
    d = await start(run_daemon, fake_tg)
    chat = f"telegram:{FORUM}"
    await d.daemon.registry.add(Group(chat=chat, folder="forum"))
    topic = fake_tg.create_topic(FORUM, "Ops")
    note = fake_tg.user_message(FORUM, "the disk is full again", thread_id=topic)  # no trigger: nothing in memory
    await wait_until(lambda: not fake_tg.updates)
    (message,) = await stored(d, chat)
    fake_tg.delete_message(FORUM, note["message_id"])
    # What the outbox holds after a restart: a reply to the stored message, and the channel has seen
    # no trigger in this chat; the topic comes from the stored platform id alone.
    await d.daemon.store.commit_reply("forum", chat, "On it.", message.id, reply_to=message.platform_id)
    d.daemon.outbox.wake()
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    (sent,) = fake_tg.sent
    assert (sent["text"], sent["topic"], sent["reply_to"]) == ("On it.", topic, None)


async def test_a_topic_that_is_gone_gets_the_reply_in_general(run_daemon: Any, fake_tg: FakeTelegram,
                                                               caplog: Any) -> None:
    d = await start(run_daemon, fake_tg)
    chat = f"telegram:{FORUM}"
    await d.daemon.registry.add(Group(chat=chat, folder="forum"))
    topic = fake_tg.create_topic(FORUM, "Old")
    fake_tg.user_message(FORUM, "@andy_bot hello", thread_id=topic)
    del fake_tg.topics[FORUM][topic]  # an admin deletes the topic (and its messages) meanwhile
    fake_tg.messages = {k: v for k, v in fake_tg.messages.items() if v.get("message_thread_id") != topic}
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    (sent,) = fake_tg.sent
    assert sent["topic"] is None and sent["text"] == "Echo: @andy_bot hello"
    assert any(f"topic {topic} of chat {FORUM} is gone" in r.getMessage() for r in caplog.records)


async def test_a_photo_in_and_a_document_out_through_the_daemon(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    """Media end to end (details in tests/test_media_telegram.py): the photo's bytes in the media
    store with the stored message; a file the outbox holds goes out by sendDocument."""
    from ngb.records import Attachment, AttachmentKind

    d = await start(run_daemon, fake_tg)
    await d.daemon.registry.add(Group(chat="telegram:4242", folder="alice"))
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 8
    fake_tg.user_media(4242, "photo", jpeg, caption="what is this?")
    await wait_until(lambda: not fake_tg.updates)  # confirmed: stored
    ((m, a),) = [(m, a) for m in await stored(d, "telegram:4242") for a in m.attachments]
    assert m.text == "what is this?" and a.kind == "image"
    assert d.daemon.media_files.path(a.sha256).read_bytes() == jpeg
    pdf = b"%PDF-1.4\n% a report\n%%EOF\n"
    kept = await d.daemon.media_files.write_bytes(pdf)
    report = Attachment(kind=AttachmentKind.DOCUMENT, mime="application/pdf", size=len(pdf), name="report.pdf",
                        sha256=kept.sha256)
    await d.daemon.store.queue_file("alice", "telegram:4242", report, caption="the report")
    d.daemon.outbox.wake()
    (upload,) = await wait_until(lambda: fake_tg.uploads)
    assert (upload["method"], upload["bytes"], upload["filename"], upload["caption"]) == (
        "sendDocument", pdf, "report.pdf", "the report")
