"""Reactions (docs/conversations.md): the acknowledgement on the message a turn answers, the agent's
``react`` tool (only on that message), and people's reactions reaching the agent as context."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from ngb.channels.base import ChannelError
from ngb.reactions import AckReactions, ReactionRefused, valid_emoji
from ngb.records import InboundMessage
from tests.conftest import Running


class Reacting:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str, str, str]] = []
        self.fail = fail

    async def react(self, chat: str, platform_id: str, emoji: str) -> None:
        self.calls.append(("+", chat, platform_id, emoji))
        if self.fail:
            raise ChannelError("REACTION_INVALID", retryable=False)

    async def unreact(self, chat: str, platform_id: str, emoji: str) -> None:
        self.calls.append(("-", chat, platform_id, emoji))


class Mute:
    pass


async def run_events(acks: AckReactions, steps: list[tuple[str, str, dict[str, Any]]]) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(acks.run)
        for folder, kind, data in steps:
            acks.event(folder, kind, data)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()


async def test_the_trigger_wears_the_ack_while_its_turn_runs(autojump_clock: trio.testing.MockClock) -> None:
    tg = Reacting()
    chats = {"a": "tg:1", "b": "tg:2", "m": "mute:3"}
    acks = AckReactions({"tg": tg, "mute": Mute()}, chats.get, ack="👀", done="👍", failed="😢")
    await run_events(acks, [
        ("a", "batch_sent", {"batch": 1, "reply_to": "1:10"}),
        ("a", "batch_sent", {"batch": 2, "task": "t1"}),  # a task's turn: no message to mark
        ("m", "batch_sent", {"batch": 1, "reply_to": "x"}),  # a channel without reactions: nothing
        ("b", "batch_sent", {"batch": 1, "reply_to": "2:20"}),
        ("a", "batch_sent", {"batch": 3, "reply_to": "1:11"}),
        ("a", "result", {"batch": 3}),  # covers batches 1 and 3
        ("b", "turn_failed", {"reason": "boom", "try": 2}),
    ])
    assert tg.calls == [
        ("+", "tg:1", "1:10", "👀"), ("+", "tg:2", "2:20", "👀"), ("+", "tg:1", "1:11", "👀"),
        ("-", "tg:1", "1:10", "👀"), ("+", "tg:1", "1:10", "👍"), ("-", "tg:1", "1:11", "👀"), ("+", "tg:1", "1:11", "👍"),
        ("-", "tg:2", "2:20", "👀"), ("+", "tg:2", "2:20", "😢"),
    ]


async def test_empty_emoji_turn_steps_off_and_failures_do_not_stop_the_rest(autojump_clock: trio.testing.MockClock) -> None:
    tg = Reacting(fail=True)
    acks = AckReactions({"tg": tg}, {"a": "tg:1"}.get, ack="👀", done="", failed="")
    await run_events(acks, [
        ("a", "batch_sent", {"batch": 1, "reply_to": "1:10"}),
        ("a", "result", {"batch": 1}),
        ("a", "batch_sent", {"batch": 2, "reply_to": "1:12"}),
    ])
    assert tg.calls == [("+", "tg:1", "1:10", "👀"), ("-", "tg:1", "1:10", "👀"), ("+", "tg:1", "1:12", "👀")]


async def test_the_agent_reacts_only_to_the_message_it_answers() -> None:
    tg = Reacting()
    acks = AckReactions({"tg": tg, "mute": Mute()}, {"a": "tg:1", "m": "mute:2"}.get, ack="")
    for bad in ("thumbsup", ":+1:", "", "👍 and text", "x" * 40):
        assert not valid_emoji(bad)
    assert valid_emoji("👍") and valid_emoji("❤️") and valid_emoji("👍🏽")
    for folder, emoji, why in (("a", "👍", "no message to react to"), ("m", "👍", "has no reactions"),
                               ("a", "ok", "must be an emoji")):
        try:
            await acks.react_current(folder, emoji)
        except ReactionRefused as exc:
            assert why in str(exc)
        else:
            raise AssertionError(f"{folder} {emoji} was not refused")
    acks.event("a", "batch_sent", {"batch": 1, "reply_to": "1:10"})
    assert await acks.react_current("a", " 👍 ") == "1:10"
    assert tg.calls == [("+", "tg:1", "1:10", "👍")]


async def test_a_reaction_is_context_for_the_next_turn_never_a_trigger(run_daemon: Any) -> None:
    r: Running = await run_daemon()
    await r.post("main", "shall we meet on Friday at noon?")
    await r.wait_bot_replies("main", 1)
    stored = await r.daemon.store.messages_after("local:main", 0, 10)
    question = next(m for m in stored if not m.from_bot)
    assert question.platform_id is not None
    await r.daemon.router.handle(InboundMessage(chat="local:main", sender="bob", sender_id="bob", text="👍",
                                                platform_id="react-1", reaction_to=question.platform_id))
    history = await r.history()
    assert history[-1]["reaction_to"] == question.platform_id and history[-1]["text"] == "👍"
    await r.post("main", "so, is it settled?")
    await r.wait_bot_replies("main", 2)
    prompts = [p for _, _, p in r.launcher.prompts]
    assert len(prompts) == 2  # the reaction woke nothing on its own (main answers every message)
    assert '<reaction sender="bob" on="shall we meet on Friday at noon?"' in prompts[1] and ">👍</reaction>" in prompts[1]
