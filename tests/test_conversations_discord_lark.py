"""Threads and reactions (docs/conversations.md) on Discord and Feishu/Lark, through the real daemon
(in-process, fake agent) and the real SDKs (discord.py, lark-oapi) against the fakes of the
platforms (tests/fakes/discord*.py, tests/fakes/lark*.py) on loopback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trio

from ngb.channels.base import ChannelError, Reactions, offers
from ngb.channels.discord import DiscordChannel
from ngb.channels.lark import LarkChannel
from ngb.records import AttachmentKind, Group, OutgoingFile
from tests.channel_helpers import stored, wait_until
from tests.fakes.agent import FakeBehaviour
from tests.fakes.discord import BOT_ID, FakeDiscord
from tests.fakes.lark import FakeLark
from tests.test_channel_discord import CHAN, DM, fake_dc, stored_count
from tests.test_channel_discord import start as dc_start
from tests.test_channel_lark import GROUP, fake_lark
from tests.test_channel_lark import start as lark_start

__all__ = ["fake_dc", "fake_lark"]  # the fixtures, used by name

CHAT = f"discord:{CHAN}"


def test_both_channels_offer_reactions() -> None:
    assert offers(DiscordChannel, Reactions) and offers(LarkChannel, Reactions)


async def prompt_with(d: Any, needle: str) -> str:
    """The newest prompt the fake agent got, once one holds ``needle``."""
    return str(await wait_until(lambda: next((p[2] for p in reversed(d.launcher.prompts) if needle in p[2]), None)))


# -- Discord: threads ------------------------------------------------------------------------------------
async def test_discord_a_thread_of_a_registered_channel_reaches_its_group_and_is_answered_in_the_thread(
        run_daemon: Any, fake_dc: FakeDiscord) -> None:
    d = await dc_start(run_daemon, fake_dc)
    await d.daemon.registry.add(Group(chat=CHAT, folder="guild"))
    thread = fake_dc.thread(CHAN, "the raid")
    fake_dc.user_message(thread, "context in the thread", author=fake_dc.user(931, "bob"))
    trigger = fake_dc.user_message(thread, f"<@{BOT_ID}> when is it?")
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    (sent,) = fake_dc.sent
    assert sent["channel_id"] == thread and sent["reply_to"] == int(trigger["id"])  # in the thread, to the trigger
    assert ("POST", f"/channels/{thread}/typing", None) in fake_dc.requests
    assert not any(path == f"/channels/{CHAN}/typing" for _, path, _ in fake_dc.requests)
    msgs = await stored(d, CHAT)
    context = fake_dc.messages[thread][0]
    assert [(m.text, m.thread, m.platform_id) for m in msgs] == [
        ("context in the thread", str(thread), f"{thread}:{context['id']}"),
        ("@Andy when is it?", str(thread), f"{thread}:{trigger['id']}"),
        ("Echo: @Andy when is it?", str(thread), f"{thread}:{sent['message']['id']}"),
    ]
    prompt = d.launcher.prompts[-1][2]
    assert f'<message sender="Bob" thread="{thread}"' in prompt and "context in the thread" in prompt
    # 👀 went on the trigger in the thread, and off again
    await wait_until(lambda: [c[0] for c in fake_dc.reaction_calls] == ["PUT", "DELETE"])
    assert {(c[1], c[2]) for c in fake_dc.reaction_calls} == {(thread, trigger["id"])}

    # a thread discord.py was not told of (no THREAD_CREATE): its parent asked of the REST API
    quiet = fake_dc.thread(CHAN, "quiet", announce=False)
    second = fake_dc.user_message(quiet, f"<@{BOT_ID}> and here?")
    await wait_until(lambda: len(fake_dc.sent) == 2)
    assert fake_dc.sent[1]["channel_id"] == quiet and fake_dc.sent[1]["reply_to"] == int(second["id"])
    assert ("GET", f"/channels/{quiet}", None) in fake_dc.requests
    assert (await stored(d, CHAT))[3].platform_id == f"{quiet}:{second['id']}"


async def test_discord_a_thread_registered_on_its_own_keeps_its_own_group(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    d = await dc_start(run_daemon, fake_dc)
    thread = fake_dc.thread(CHAN)
    await d.daemon.registry.add(Group(chat=CHAT, folder="guild"))
    await d.daemon.registry.add(Group(chat=f"discord:{thread}", folder="topic"))
    trigger = fake_dc.user_message(thread, f"<@{BOT_ID}> hi")
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    assert fake_dc.sent[0]["channel_id"] == thread and fake_dc.sent[0]["reply_to"] == int(trigger["id"])
    msgs = await stored(d, f"discord:{thread}")
    assert [(m.thread, m.platform_id) for m in msgs[:1]] == [("", trigger["id"])]
    assert msgs[1].from_bot and msgs[1].platform_id == fake_dc.sent[0]["message"]["id"]
    assert await stored(d, CHAT) == []
    assert d.launcher.prompts[-1][0] == "topic"


async def test_discord_previews_long_replies_and_files_go_into_the_thread(
        run_daemon: Any, fake_dc: FakeDiscord, tmp_path: Path) -> None:
    d = await dc_start(run_daemon, fake_dc)
    channel = d.daemon.channels["discord"]
    thread = fake_dc.thread(CHAN)
    trigger = fake_dc.user_message(thread, "question")
    await stored_count(d, CHAT, 1)
    reply_to = f"{thread}:{trigger['id']}"
    pid = await channel.send_preview(CHAT, "Here is", reply_to)
    assert pid == f"{thread}:{fake_dc.sent[0]['message']['id']}" and fake_dc.sent[0]["reply_to"] == int(trigger["id"])
    await channel.edit_preview(CHAT, pid, "Here is more")
    long_text = "\n\n".join(f"Paragraph {i}. " + "words " * 60 for i in range(12))  # > 2,000 characters
    last = await channel.finish_preview(CHAT, pid, long_text, reply_to)
    assert len(fake_dc.sent) >= 2 and last == f"{thread}:{fake_dc.sent[-1]['message']['id']}"
    assert {s["channel_id"] for s in fake_dc.sent} == {thread} and {e["channel_id"] for e in fake_dc.edits} == {thread}
    note = tmp_path / "note.txt"
    note.write_text("hello")
    file = OutgoingFile(path=note, name="note.txt", mime="text/plain", kind=AttachmentKind.DOCUMENT, size=5)
    sent = await channel.send_file(CHAT, file, reply_to)
    assert sent == f"{thread}:{fake_dc.sent[-1]['message']['id']}" and fake_dc.sent[-1]["channel_id"] == thread


# -- Discord: reactions --------------------------------------------------------------------------------
async def test_discord_react_unreact_and_an_unknown_emoji(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    d = await dc_start(run_daemon, fake_dc)
    channel = d.daemon.channels["discord"]
    message = fake_dc.user_message(CHAN, "nice work")
    thread = fake_dc.thread(CHAN)
    in_thread = fake_dc.user_message(thread, "in a thread")
    direct = fake_dc.user_message(DM, "and a DM")
    await stored_count(d, f"discord:{CHAN}", 2)  # (the thread's message is in its parent's chat)
    await stored_count(d, f"discord:{DM}", 1)

    await channel.react(CHAT, message["id"], "👍")
    await channel.react(CHAT, f"{thread}:{in_thread['id']}", "❤️")
    assert fake_dc.reactions_on(CHAN, message["id"], BOT_ID) == ["👍"]
    assert fake_dc.reactions_on(thread, in_thread["id"], BOT_ID) == ["❤️"]
    await channel.unreact(CHAT, message["id"], "👍")
    await channel.unreact(CHAT, f"{thread}:{in_thread['id']}", "❤️")
    assert fake_dc.reactions_on(CHAN, message["id"], BOT_ID) == []
    assert fake_dc.reactions_on(thread, in_thread["id"], BOT_ID) == []
    await channel.react(f"discord:{DM}", direct["id"], "👀")
    assert fake_dc.reactions_on(DM, direct["id"], BOT_ID) == ["👀"]
    with pytest.raises(ChannelError, match="Unknown Emoji") as refused:
        await channel.react(CHAT, message["id"], "🦜🦜")
    assert not refused.value.retryable
    with pytest.raises(ChannelError) as gone:
        await channel.react(CHAT, "123", "👍")  # no such message
    assert not gone.value.retryable
    await trio.sleep(0.3)  # the bot's own reactions came back through the gateway: none is stored
    assert [m.text for m in await stored(d, CHAT)] == ["nice work", "in a thread"]
    assert [m.text for m in await stored(d, f"discord:{DM}") if m.reaction_to is not None] == []


async def test_discord_a_reaction_is_stored_and_reaches_the_next_turn(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    d = await dc_start(run_daemon, fake_dc)
    await d.daemon.registry.add(Group(chat=CHAT, folder="guild"))
    bob, carol = fake_dc.user(931, "bob"), fake_dc.user(932, "carol")
    question = fake_dc.user_message(CHAN, "shall we meet on Friday?", author=bob)
    thread = fake_dc.thread(CHAN)
    in_thread = fake_dc.user_message(thread, "the agenda", author=bob)
    await stored_count(d, CHAT, 2)
    fake_dc.user_reaction(CHAN, question["id"], "👍", author=carol)
    fake_dc.user_reaction(thread, in_thread["id"], "🎉", author=carol)
    msgs = await stored_count(d, CHAT, 4)
    assert [(m.text, m.sender, m.sender_id, m.reaction_to, m.thread, m.platform_id, m.mentions_bot)
            for m in msgs[2:]] == [
        ("👍", "Carol", "932", question["id"], "", f"react:{question['id']}:932:👍", False),
        ("🎉", "Carol", "932", f"{thread}:{in_thread['id']}", str(thread),
         f"react:{thread}:{in_thread['id']}:932:🎉", False),
    ]
    await trio.sleep(0.3)
    assert d.launcher.prompts == []  # a reaction never wakes the agent

    fake_dc.user_message(CHAN, f"<@{BOT_ID}> so, Friday?")
    prompt = await prompt_with(d, "so, Friday?")
    assert re.search(r'<reaction sender="Carol" on="shall we meet on Friday\?" time="[^"]+">👍</reaction>', prompt)
    assert re.search(rf'<reaction sender="Carol" thread="{thread}" on="the agenda" time="[^"]+">🎉</reaction>', prompt)


async def test_discord_a_dm_reaction_is_named_by_its_sender(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    d = await dc_start(run_daemon, fake_dc)
    message = fake_dc.user_message(DM, "hello there")
    await stored_count(d, f"discord:{DM}", 1)
    fake_dc.user_reaction(DM, message["id"], "😂")  # in a DM Discord sends no member: the name is looked up
    with trio.fail_after(10):
        while not (found := [m for m in await stored(d, f"discord:{DM}") if m.reaction_to is not None]):
            await trio.sleep(0.01)
    assert [(m.text, m.sender, m.reaction_to, m.mentions_bot) for m in found] == [("😂", "Alice", message["id"], False)]


async def test_discord_the_trigger_wears_eyes_while_its_turn_runs(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    d = await dc_start(run_daemon, fake_dc, FakeBehaviour(delay=1.0))
    await d.daemon.registry.add(Group(chat=CHAT, folder="guild"))
    trigger = fake_dc.user_message(CHAN, f"<@{BOT_ID}> think hard")
    await wait_until(lambda: fake_dc.reactions_on(CHAN, trigger["id"], BOT_ID) == ["👀"])
    assert fake_dc.sent == []  # the agent is still at it
    await wait_until(lambda: fake_dc.sent)
    await wait_until(lambda: fake_dc.reactions_on(CHAN, trigger["id"], BOT_ID) == [])
    await trio.sleep(0.3)
    assert fake_dc.reactions_on(CHAN, trigger["id"], BOT_ID) == []


# -- Lark ----------------------------------------------------------------------------------------------
async def test_lark_a_message_in_a_thread_is_stored_with_it_and_answered_in_it(
        run_daemon: Any, fake_lark: FakeLark) -> None:
    d = await lark_start(run_daemon, fake_lark)
    await d.daemon.registry.add(Group(chat=f"lark:{GROUP}", folder="team"))
    fake_lark.user_message(GROUP, "first, in the thread", sender="ou_bob", thread_id="omt_topic1")
    trigger = fake_lark.user_message(GROUP, "and now?", mention_bot=True, thread_id="omt_topic1")
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    (sent,) = fake_lark.sent
    trigger_id = trigger["event"]["message"]["message_id"]
    assert sent["kind"] == "reply" and sent["reply_to"] == trigger_id
    assert fake_lark.messages[sent["message_id"]]["thread_id"] == "omt_topic1"  # the reply stayed in the thread
    msgs = await stored(d, f"lark:{GROUP}")
    assert [(m.text, m.thread) for m in msgs[:2]] == [("first, in the thread", "omt_topic1"),
                                                      ("@Andy and now?", "omt_topic1")]
    assert 'thread="omt_topic1"' in d.launcher.prompts[-1][2]


async def test_lark_react_unreact_and_an_unknown_emoji(run_daemon: Any, fake_lark: FakeLark) -> None:
    d = await lark_start(run_daemon, fake_lark)
    channel = d.daemon.channels["lark"]
    event = fake_lark.user_message(GROUP, "nice work")
    message_id = event["event"]["message"]["message_id"]
    await wait_until(lambda: not fake_lark.pending)
    chat = f"lark:{GROUP}"

    await channel.react(chat, message_id, "✅")
    await channel.react(chat, message_id, "👍")
    assert fake_lark.reactions_on(message_id, fake_lark.app_id) == ["DONE", "THUMBSUP"]
    await channel.unreact(chat, message_id, "✅")
    assert fake_lark.reactions_on(message_id, fake_lark.app_id) == ["THUMBSUP"]
    channel._reactions.clear()  # as after a restart: the reaction_id is looked up in the message's reactions
    await channel.unreact(chat, message_id, "👍")
    assert fake_lark.reactions_on(message_id, fake_lark.app_id) == []
    await channel.unreact(chat, message_id, "👍")  # not there (any more): nothing to do
    with pytest.raises(ChannelError, match="no Lark emoji_type") as unmapped:
        await channel.react(chat, message_id, "🦜")
    assert not unmapped.value.retryable
    with pytest.raises(ChannelError) as gone:
        await channel.react(chat, "om_nosuchmessage", "👍")
    assert not gone.value.retryable
    await wait_until(lambda: not fake_lark.pending)  # the bot's own reaction events came: none is stored
    assert [m.text for m in await stored(d, chat)] == ["nice work"]


async def test_lark_a_reaction_is_stored_and_reaches_the_next_turn(run_daemon: Any, fake_lark: FakeLark) -> None:
    d = await lark_start(run_daemon, fake_lark)
    chat = f"lark:{GROUP}"
    await d.daemon.registry.add(Group(chat=chat, folder="team"))
    question = fake_lark.user_message(GROUP, "shall we meet on Friday?", sender="ou_bob")
    in_thread = fake_lark.user_message(GROUP, "the agenda", sender="ou_bob", thread_id="omt_t1")
    await wait_until(lambda: not fake_lark.pending)
    question_id = question["event"]["message"]["message_id"]
    in_thread_id = in_thread["event"]["message"]["message_id"]
    fake_lark.user_reaction(question_id, "THUMBSUP")
    fake_lark.user_reaction(in_thread_id, "PARTY")
    await wait_until(lambda: not fake_lark.pending)
    msgs = await stored(d, chat)
    assert [(m.text, m.sender, m.sender_id, m.reaction_to, m.thread, m.platform_id, m.mentions_bot)
            for m in msgs[2:]] == [
        ("👍", "Alice", "ou_alice", question_id, "", f"react:{question_id}:ou_alice:👍", False),
        ("🎉", "Alice", "ou_alice", in_thread_id, "omt_t1", f"react:{in_thread_id}:ou_alice:🎉", False),
    ]
    assert not [p for m, p in fake_lark.requests if m == "GET" and p.startswith("/open-apis/im/v1/messages/")]
    await trio.sleep(0.3)
    assert d.launcher.prompts == []  # a reaction never wakes the agent

    fake_lark.user_message(GROUP, "so, Friday?", mention_bot=True)
    prompt = await prompt_with(d, "so, Friday?")
    assert re.search(r'<reaction sender="Alice" on="shall we meet on Friday\?" time="[^"]+">👍</reaction>', prompt)
    assert re.search(r'<reaction sender="Alice" thread="omt_t1" on="the agenda" time="[^"]+">🎉</reaction>', prompt)


async def test_lark_a_reaction_on_a_message_not_seen_in_this_run_is_placed_by_asking_lark(
        run_daemon: Any, fake_lark: FakeLark) -> None:
    d = await lark_start(run_daemon, fake_lark)
    chat = f"lark:{GROUP}"
    old = fake_lark.event(GROUP, {"text": "from before the restart"}, thread_id="omt_old")  # never delivered
    old_id = old["event"]["message"]["message_id"]
    fake_lark.user_reaction(old_id, "Fire", sender="ou_bob")
    fake_lark.user_reaction(old_id, "JIAYI", sender="ou_bob")  # an emoji_type the channel does not map
    await wait_until(lambda: not fake_lark.pending)
    msgs = await stored(d, chat)
    assert [(m.text, m.sender, m.thread, m.reaction_to) for m in msgs] == [
        ("🔥", "Bob", "omt_old", old_id), (":JIAYI:", "Bob", "omt_old", old_id)]
    assert ("GET", f"/open-apis/im/v1/messages/{old_id}") in fake_lark.requests


async def test_lark_the_trigger_wears_eyes_while_its_turn_runs(run_daemon: Any, fake_lark: FakeLark) -> None:
    d = await lark_start(run_daemon, fake_lark, FakeBehaviour(delay=1.0))
    await d.daemon.registry.add(Group(chat=f"lark:{GROUP}", folder="team"))
    trigger = fake_lark.user_message(GROUP, "think hard", mention_bot=True)
    trigger_id = trigger["event"]["message"]["message_id"]
    await wait_until(lambda: fake_lark.reactions_on(trigger_id, fake_lark.app_id) == ["GLANCE"])
    assert fake_lark.sent == []  # the agent is still at it
    await wait_until(lambda: fake_lark.sent)
    await wait_until(lambda: fake_lark.reactions_on(trigger_id, fake_lark.app_id) == [])
    await trio.sleep(0.3)
    assert fake_lark.reactions_on(trigger_id, fake_lark.app_id) == []
