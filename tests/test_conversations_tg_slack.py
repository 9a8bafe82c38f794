"""Threads and reactions (docs/conversations.md) on Telegram and Slack: the real daemon (in-process,
fake agent) and the real SDKs against tests/fakes/telegram.py and tests/fakes/slack.py on loopback.

A message's thread (a forum topic, a Slack thread) is stored with it and its reply goes back there;
with ``threads = per_thread`` two threads of one chat never share the agent's context. The bot's
reactions land on the platform's message (👀 while a turn runs, gone after); people's reactions are
stored as reactions and reach the agent with its next turn."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from ngb.channels.base import ChannelError, Reactions, offers
from ngb.records import Group
from tests.channel_helpers import stored, wait_until
from tests.fakes.agent import FakeBehaviour
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram

TOKEN = "123456:TEST-token"
GROUP, FORUM = -100123, -100777
BOT, APP = "xoxb-1-TEST", "xapp-1-TEST"
CHAN = "C0123"


@pytest.fixture
async def fake_tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram.serving(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    async with trio.open_nursery() as nursery:
        fake = await FakeSlack.start(nursery, bot_token=BOT, app_token=APP)
        yield fake
        nursery.cancel_scope.cancel()


async def start_tg(run_daemon: Any, fake: FakeTelegram, behaviour: FakeBehaviour | None = None, **env: str) -> Any:
    settings = {"base_url": fake.base_url, "poll_timeout": 2, "reconnect_base": "0.05", "reconnect_cap": "0.3"}
    d = await run_daemon(behaviour, NGB_TELEGRAM_TOKEN=TOKEN, NGB_CHANNELS=json.dumps({"telegram": settings}), **env)
    await wait_until(lambda: d.daemon.channels["telegram"].state == "connected")
    return d


async def start_slack(run_daemon: Any, fake: FakeSlack, behaviour: FakeBehaviour | None = None, **env: str) -> Any:
    settings = {"base_url": fake.base_url, "ping_interval": "0.5", "reconnect_base": "0.05", "reconnect_cap": "0.3",
                "connect_timeout": "3"}
    d = await run_daemon(behaviour, NGB_SLACK_BOT_TOKEN=BOT, NGB_SLACK_APP_TOKEN=APP,
                         NGB_CHANNELS=json.dumps({"slack": settings}), **env)
    await wait_until(lambda: d.daemon.channels["slack"].state == "connected")
    return d


async def stored_when(d: Any, chat: str, predicate: Any) -> list[Any]:
    """The chat's stored messages once ``predicate`` holds for them."""
    with trio.fail_after(10):
        while not predicate(msgs := await stored(d, chat)):
            await trio.sleep(0.01)
    return msgs


def prompts(d: Any) -> list[str]:
    return [p for _, _, p in d.launcher.prompts]


# -- Telegram ------------------------------------------------------------------------------------------
async def test_telegram_topic_is_the_thread_and_the_reply_stays_in_it(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d = await start_tg(run_daemon, fake_tg)
    chat = f"telegram:{FORUM}"
    assert offers(d.daemon.channels["telegram"], Reactions)
    await d.daemon.registry.add(Group(chat=chat, folder="forum"))
    topic = fake_tg.create_topic(FORUM, "Release")
    fake_tg.user_message(FORUM, "in General: hello")
    trigger = fake_tg.user_message(FORUM, "@andy_bot is the release on?", thread_id=topic)
    (sent,) = await wait_until(lambda: fake_tg.sent)
    assert (sent["topic"], sent["reply_to"]) == (topic, trigger["message_id"])
    msgs = await stored_when(d, chat, lambda ms: any(m.from_bot for m in ms))
    assert [(m.text, m.thread) for m in msgs if not m.from_bot] == [
        ("in General: hello", ""), ("@andy_bot is the release on?", str(topic))]
    (bot,) = [m for m in msgs if m.from_bot]  # the bot's own message: its reply, in the topic
    assert bot.platform_id == f"{FORUM}/{topic}:{sent['message']['message_id']}" and bot.thread == str(topic)
    assert f'thread="{topic}"' in prompts(d)[0]


async def test_telegram_react_unreact_and_an_emoji_telegram_has_not(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d = await start_tg(run_daemon, fake_tg)
    channel, chat = d.daemon.channels["telegram"], f"telegram:{GROUP}"  # unregistered: no turn, no ack
    message = fake_tg.user_message(GROUP, "a message to react to")
    (m,) = await stored_when(d, chat, len)
    key = (GROUP, message["message_id"])
    await channel.react(chat, m.platform_id, "👍")
    assert fake_tg.bot_reactions[key] == ["👍"]
    await channel.unreact(chat, m.platform_id, "👍")
    assert key not in fake_tg.bot_reactions
    await channel.react(chat, m.platform_id, "❤️")  # sent as Telegram spells it
    assert fake_tg.bot_reactions[key] == ["❤"]
    await channel.react(chat, m.platform_id, "👀")
    await channel.react(chat, m.platform_id, "🔥")  # one reaction per message: it replaces 👀
    await channel.unreact(chat, m.platform_id, "👀")  # 👀 is gone already: 🔥 stays
    assert fake_tg.bot_reactions[key] == ["🔥"]
    await channel.unreact(chat, m.platform_id, "🔥")
    assert key not in fake_tg.bot_reactions
    with pytest.raises(ChannelError, match="(?i)reaction_invalid") as refused:
        await channel.react(chat, m.platform_id, "✅")  # not among Telegram's reaction emoji
    assert refused.value.retryable is False and key not in fake_tg.bot_reactions
    with pytest.raises(ChannelError) as gone:
        await channel.react(chat, f"{GROUP}:999", "👍")
    assert gone.value.retryable is False


async def test_telegram_reaction_is_stored_and_shown_with_the_next_turn(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d = await start_tg(run_daemon, fake_tg)
    chat = f"telegram:{GROUP}"
    await d.daemon.registry.add(Group(chat=chat, folder="family"))
    question = fake_tg.user_message(GROUP, "shall we meet on Friday?", first_name="Bob", user_id=7)
    fake_tg.user_reaction(GROUP, question["message_id"], ["👍"], user_id=1001, first_name="Alice")
    fake_tg.user_reaction(GROUP, question["message_id"], ["👍", "🔥"], user_id=1001, first_name="Alice")  # +🔥
    fake_tg.user_reaction(GROUP, question["message_id"], [], user_id=1001, first_name="Alice")  # both off: not reported
    await wait_until(lambda: not fake_tg.updates)  # all confirmed: stored (or nothing to store)
    assert fake_tg.allowed_updates == ["message", "message_reaction"] and fake_tg.withheld == 0
    target = f"{GROUP}:{question['message_id']}"
    reactions = [m for m in await stored(d, chat) if m.reaction_to is not None]
    assert [(m.text, m.sender, m.sender_id, m.reaction_to, m.platform_id, m.thread) for m in reactions] == [
        ("👍", "Alice", "1001", target, f"react:{target}:1001:👍", ""),
        ("🔥", "Alice", "1001", target, f"react:{target}:1001:🔥", ""),
    ]
    assert not any(m.mentions_bot for m in reactions) and d.launcher.prompts == []  # no trigger: no turn
    fake_tg.user_message(GROUP, "@andy_bot so is it settled?")
    await wait_until(lambda: fake_tg.sent)
    (prompt,) = prompts(d)
    assert '<reaction sender="Alice" on="shall we meet on Friday?"' in prompt and ">👍</reaction>" in prompt
    assert ">🔥</reaction>" in prompt


async def test_telegram_reaction_in_a_topic_and_on_the_bots_reply(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d = await start_tg(run_daemon, fake_tg)
    chat = f"telegram:{FORUM}"
    await d.daemon.registry.add(Group(chat=chat, folder="forum"))
    topic = fake_tg.create_topic(FORUM, "Ops")
    fake_tg.user_message(FORUM, "@andy_bot restart the server", thread_id=topic)
    (sent,) = await wait_until(lambda: fake_tg.sent)
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    fake_tg.user_reaction(FORUM, sent["message"]["message_id"], ["🎉"])  # on the bot's reply
    (reaction,) = [m for m in await stored_when(d, chat, lambda ms: any(m.reaction_to for m in ms)) if m.reaction_to]
    reply_id = f"{FORUM}/{topic}:{sent['message']['message_id']}"
    assert (reaction.text, reaction.reaction_to, reaction.thread) == ("🎉", reply_id, str(topic))


async def test_telegram_ack_reaction_while_the_turn_runs(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d = await start_tg(run_daemon, fake_tg, FakeBehaviour(delay=1.0))
    await d.daemon.registry.add(Group(chat="telegram:4242", folder="alice"))
    message = fake_tg.user_message(4242, "think about it", user_id=4242)
    key = (4242, message["message_id"])
    await wait_until(lambda: fake_tg.bot_reactions.get(key) == ["👀"])
    assert fake_tg.sent == []  # while the agent works
    await wait_until(lambda: fake_tg.sent)
    await wait_until(lambda: key not in fake_tg.bot_reactions)
    assert [c["emoji"] for c in fake_tg.reaction_calls] == [["👀"], []]


async def test_telegram_per_thread_topics_keep_their_words(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d = await start_tg(run_daemon, fake_tg, NGB_THREADS="per_thread")
    chat = f"telegram:{FORUM}"
    await d.daemon.registry.add(Group(chat=chat, folder="forum"))
    plans, party = fake_tg.create_topic(FORUM, "Plans"), fake_tg.create_topic(FORUM, "Party")
    fake_tg.user_message(FORUM, "@andy_bot the password is PELICAN-42", thread_id=plans)
    await wait_until(lambda: len(fake_tg.sent) == 1)
    fake_tg.user_message(FORUM, "@andy_bot what did I tell you?", thread_id=party)
    await wait_until(lambda: len(fake_tg.sent) == 2)
    (second,) = [p for p in prompts(d) if "what did I tell you?" in p]
    assert "PELICAN-42" not in second
    assert [(s["text"], s["topic"]) for s in fake_tg.sent] == [
        ("Echo: @andy_bot the password is PELICAN-42", plans), ("Echo: @andy_bot what did I tell you?", party)]


# -- Slack ---------------------------------------------------------------------------------------------
async def test_slack_thread_ts_is_the_thread_and_the_reply_stays_in_it(run_daemon: Any, fake_slack: FakeSlack) -> None:
    d = await start_slack(run_daemon, fake_slack)
    chat = f"slack:{CHAN}"
    assert offers(d.daemon.channels["slack"], Reactions)
    await d.daemon.registry.add(Group(chat=chat, folder="team"))
    parent = fake_slack.user_message(CHAN, "the deploy plan")
    reply = fake_slack.user_message(CHAN, "<@UBOT> is it on?", thread_ts=parent["ts"])
    (sent,) = await wait_until(lambda: fake_slack.sent)
    assert sent["thread_ts"] == parent["ts"]
    msgs = await stored_when(d, chat, lambda ms: any(m.from_bot for m in ms))
    assert [(m.text, m.thread) for m in msgs if not m.from_bot] == [
        ("the deploy plan", ""), ("@andy is it on?", parent["ts"])]  # a thread's parent: the channel's own
    (bot,) = [m for m in msgs if m.from_bot]
    assert bot.platform_id == f"{CHAN}:{sent['ts']}" and bot.thread == parent["ts"]
    assert reply["ts"] != parent["ts"] and f'thread="{parent["ts"]}"' in prompts(d)[0]
    fake_slack.user_reaction(CHAN, sent["ts"], "tada")  # on the bot's reply: in its thread
    msgs = await stored_when(d, chat, lambda ms: any(m.reaction_to for m in ms))
    assert [(m.text, m.reaction_to, m.thread) for m in msgs if m.reaction_to] == [
        ("🎉", f"{CHAN}:{sent['ts']}", parent["ts"])]
    assert "conversations.replies" not in [method for method, _ in fake_slack.requests]  # known: not asked


async def test_slack_react_unreact_and_an_emoji_without_a_name(run_daemon: Any, fake_slack: FakeSlack) -> None:
    d = await start_slack(run_daemon, fake_slack)
    channel, chat = d.daemon.channels["slack"], f"slack:{CHAN}"  # unregistered: no turn, no ack
    message = fake_slack.user_message(CHAN, "a message to react to")
    (m,) = await stored_when(d, chat, len)
    await channel.react(chat, m.platform_id, "👍")
    assert fake_slack.reactions_on(CHAN, message["ts"], "UBOT") == ["+1"]
    await channel.react(chat, m.platform_id, "👍")  # already_reacted: success
    await channel.react(chat, m.platform_id, "❤️")
    await channel.unreact(chat, m.platform_id, "👍")
    await channel.unreact(chat, m.platform_id, "👍")  # no_reaction: success
    assert fake_slack.reactions_on(CHAN, message["ts"], "UBOT") == ["heart"]
    await channel.unreact(chat, m.platform_id, "❤")
    assert fake_slack.reactions_on(CHAN, message["ts"]) == []
    with pytest.raises(ChannelError, match="no Slack name for 🦄") as unnamed:
        await channel.react(chat, m.platform_id, "🦄")
    assert unnamed.value.retryable is False
    with pytest.raises(ChannelError, match="message_not_found") as gone:
        await channel.react(chat, f"{CHAN}:1.000001", "👍")
    assert gone.value.retryable is False
    await wait_until(lambda: not fake_slack.pending)  # the bot's own reaction events: acked, not stored
    assert [x.text for x in await stored(d, chat)] == ["a message to react to"]


async def test_slack_reaction_is_stored_and_shown_with_the_next_turn(run_daemon: Any, fake_slack: FakeSlack) -> None:
    d = await start_slack(run_daemon, fake_slack)
    chat = f"slack:{CHAN}"
    await d.daemon.registry.add(Group(chat=chat, folder="team"))
    fake_slack.add_user("U7", "Bob")
    question = fake_slack.user_message(CHAN, "shall we meet on Friday?")
    fake_slack.user_reaction(CHAN, question["ts"], "thumbsup", user="U7")
    fake_slack.user_reaction(CHAN, question["ts"], "partyparrot", user="U7")  # a workspace's own emoji
    side = fake_slack.user_message(CHAN, "in a thread", thread_ts=question["ts"])
    fake_slack.user_reaction(CHAN, side["ts"], "+1::skin-tone-3", user="U7")
    await wait_until(lambda: not fake_slack.pending)
    target = f"{CHAN}:{question['ts']}"
    reactions = [m for m in await stored(d, chat) if m.reaction_to is not None]
    assert [(m.text, m.sender, m.sender_id, m.reaction_to, m.thread) for m in reactions] == [
        ("👍", "Bob", "U7", target, ""), (":partyparrot:", "Bob", "U7", target, ""),
        ("👍🏼", "Bob", "U7", f"{CHAN}:{side['ts']}", question["ts"]),
    ]
    assert reactions[0].platform_id == f"react:{target}:U7:👍"
    assert not any(m.mentions_bot for m in reactions) and d.launcher.prompts == []  # no trigger: no turn
    fake_slack.user_message(CHAN, "<@UBOT> so is it settled?")
    await wait_until(lambda: fake_slack.sent)
    (prompt,) = prompts(d)
    assert '<reaction sender="Bob" on="shall we meet on Friday?"' in prompt and ">👍</reaction>" in prompt
    assert f'<reaction sender="Bob" thread="{question["ts"]}" on="in a thread"' in prompt


async def test_slack_ack_reaction_while_the_turn_runs(run_daemon: Any, fake_slack: FakeSlack) -> None:
    d = await start_slack(run_daemon, fake_slack, FakeBehaviour(delay=1.0))
    await d.daemon.registry.add(Group(chat=f"slack:{CHAN}", folder="team"))
    message = fake_slack.user_message(CHAN, "<@UBOT> think about it")
    await wait_until(lambda: fake_slack.reactions_on(CHAN, message["ts"], "UBOT") == ["eyes"])
    assert fake_slack.sent == []  # while the agent works
    await wait_until(lambda: fake_slack.sent)
    await wait_until(lambda: fake_slack.reactions_on(CHAN, message["ts"]) == [])
    assert [(c["method"], c["name"]) for c in fake_slack.reaction_calls] == [
        ("reactions.add", "eyes"), ("reactions.remove", "eyes")]
    await wait_until(lambda: not fake_slack.pending)
    assert not any(m.reaction_to for m in await stored(d, f"slack:{CHAN}"))  # the bot's own: not stored


async def test_slack_per_thread_threads_keep_their_words(run_daemon: Any, fake_slack: FakeSlack) -> None:
    d = await start_slack(run_daemon, fake_slack, NGB_THREADS="per_thread")
    await d.daemon.registry.add(Group(chat=f"slack:{CHAN}", folder="team"))
    plans, party = fake_slack.user_message(CHAN, "plans"), fake_slack.user_message(CHAN, "party")
    fake_slack.user_message(CHAN, "<@UBOT> the password is PELICAN-42", thread_ts=plans["ts"])
    await wait_until(lambda: len(fake_slack.sent) == 1)
    fake_slack.user_message(CHAN, "<@UBOT> what did I tell you?", thread_ts=party["ts"])
    await wait_until(lambda: len(fake_slack.sent) == 2)
    (second,) = [p for p in prompts(d) if "what did I tell you?" in p]
    assert "PELICAN-42" not in second
    assert [(s["text"], s["thread_ts"]) for s in fake_slack.sent] == [
        ("Echo: @andy the password is PELICAN-42", plans["ts"]), ("Echo: @andy what did I tell you?", party["ts"])]
