"""Matrix live previews (edits) and reactions, through the real daemon and matrix-nio against a real
Synapse (tests/matrix_server.py); a second nio client plays the person and reads what arrived."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from ngb.aio_bridge import AsyncioBridge
from ngb.channels.common import split_text
from ngb.channels.matrix_preview import PART_LIMIT
from ngb.records import Group
from tests.channel_helpers import StoppableDaemon, stored, wait_until
from tests.conftest import make_config
from tests.fakes.agent import FakeBehaviour
from tests.matrix_person import Person
from tests.matrix_server import MatrixServer, MatrixUser, synapse  # noqa: F401 - the session fixture
from tests.test_channel_matrix import bridge, echo_mentions, matrix_env, person, room_with_bot  # noqa: F401


def bots(bot_id: str, kind: str = "m.room.message") -> Any:
    return lambda source: source.get("sender") == bot_id and source.get("type") == kind


async def bot_in_a_room(nursery: trio.Nursery, tmp_path: Path, synapse: MatrixServer, alice: Person,  # noqa: F811
                        behaviour: FakeBehaviour, *others: str) -> tuple[MatrixUser, Any, str]:
    """A daemon with the Matrix channel as a fresh bot, in a room alice made (with ``others``
    invited): (the bot, the running daemon, the room's chat)."""
    bot = synapse.register("bot")
    d = await StoppableDaemon.start_with(nursery, make_config(tmp_path, **matrix_env(synapse, bot, alice.user.user_id)),
                                         behaviour, "matrix")
    room = await room_with_bot(alice, bot, d.channel, *others)
    return bot, d, f"matrix:{room}"


async def test_a_preview_grows_by_edits_and_the_final_reply_formats_it(tmp_path: Path, bridge: AsyncioBridge,  # noqa: F811
                                                                      synapse: MatrixServer) -> None:  # noqa: F811
    alice = await person(bridge, synapse, "alice")
    async with trio.open_nursery() as nursery:
        bot, d, chat = await bot_in_a_room(nursery, tmp_path, synapse, alice, FakeBehaviour(reply=echo_mentions),
                                           synapse.register("bob").user_id)
        channel, room = d.channel, chat.removeprefix("matrix:")
        root = await alice.say(room, "the plan")
        trigger = await alice.say(room, "what next?", **{"m.relates_to": {"rel_type": "m.thread", "event_id": root}})
        await alice.wait_for(lambda s: s.get("event_id") == trigger)
        preview = await channel.send_preview(chat, "Step **one", reply_to=trigger)
        await channel.edit_preview(chat, preview, "Step **one**, then")
        second_part = "z" * 20_000  # over one message: a second part after the edited preview
        final = f"Step **one**, then two.\n\n{second_part}"
        last = await channel.finish_preview(chat, preview, final, reply_to=trigger)
        assert await channel.finish_preview(chat, preview, final, reply_to=trigger) == last  # again: nothing new

        await alice.wait_for(lambda s: s.get("event_id") == last)
        mine = [s for s in (e.source for e in alice.seen) if bots(bot.user_id)(s)]
        assert [s["event_id"] for s in mine][0] == preview and mine[-1]["event_id"] == last and len(mine) == 4
        first = mine[0]["content"]
        assert first["body"] == "Step **one" and "formatted_body" not in first  # plain while being written
        assert first["m.relates_to"] == {"rel_type": "m.thread", "event_id": root, "is_falling_back": False,
                                         "m.in_reply_to": {"event_id": trigger}}
        edits = [s["content"] for s in mine[1:3]]
        assert all(e["m.relates_to"] == {"rel_type": "m.replace", "event_id": preview} for e in edits)
        assert edits[0]["m.new_content"] == {"msgtype": "m.text", "body": "Step **one**, then"}
        assert edits[0]["body"] == "* Step **one**, then"
        parts = split_text(final, PART_LIMIT)
        assert len(parts) == 2 and parts[0].startswith("Step **one**, then two.")
        assert edits[1]["m.new_content"]["body"] == parts[0]
        assert edits[1]["m.new_content"]["formatted_body"].startswith("Step <b>one</b>, then two.")
        rest = mine[3]["content"]
        assert rest["body"] == parts[1]
        assert rest["m.relates_to"]["rel_type"] == "m.thread" and rest["m.relates_to"]["event_id"] == root
        await d.stop()
        await alice.close()
        nursery.cancel_scope.cancel()


async def test_a_redacted_preview_ends_edits_and_the_reply_goes_as_a_new_message(
        tmp_path: Path, bridge: AsyncioBridge, synapse: MatrixServer) -> None:  # noqa: F811
    from ngb.channels.base import ChannelError

    alice = await person(bridge, synapse, "alice")
    async with trio.open_nursery() as nursery:
        bot, d, chat = await bot_in_a_room(nursery, tmp_path, synapse, alice, FakeBehaviour(reply=echo_mentions))
        channel, room = d.channel, chat.removeprefix("matrix:")
        trigger = await alice.say(room, "hello")
        preview = await channel.send_preview(chat, "Hel", reply_to=trigger)
        await alice.call("room_redact", room, preview, "not now")  # the room's creator may redact it
        await wait_until(lambda: preview in channel.gone)
        try:
            await channel.edit_preview(chat, preview, "Hello")
        except ChannelError as exc:
            assert not exc.retryable and "redacted" in str(exc)
        else:
            raise AssertionError("an edit of a redacted preview was sent")
        last = await channel.finish_preview(chat, preview, "Hello there", reply_to=trigger)
        assert last != preview
        seen = await alice.wait_for(lambda s: s.get("event_id") == last)
        reply = next(s for s in seen if s.get("event_id") == last)["content"]
        assert reply["body"] == "Hello there" and reply["m.relates_to"] == {"m.in_reply_to": {"event_id": trigger}}
        await alice.sync()
        edits = [s for s in (e.source for e in alice.seen) if bots(bot.user_id)(s)
                 and (s["content"].get("m.relates_to") or {}).get("rel_type") == "m.replace"]
        assert edits == []
        await d.stop()
        await alice.close()
        nursery.cancel_scope.cancel()


async def test_the_trigger_wears_the_ack_and_a_persons_reaction_is_context(tmp_path: Path, bridge: AsyncioBridge,  # noqa: F811
                                                                          synapse: MatrixServer) -> None:  # noqa: F811
    alice = await person(bridge, synapse, "alice")
    prompts: list[str] = []

    def reply(prompt: str) -> list[str]:
        prompts.append(prompt)
        return echo_mentions(prompt)

    async with trio.open_nursery() as nursery:
        bot, d, chat = await bot_in_a_room(nursery, tmp_path, synapse, alice, FakeBehaviour(reply=reply),
                                           synapse.register("bob").user_id)
        channel, room = d.channel, chat.removeprefix("matrix:")
        await d.daemon.registry.add(Group(chat=chat, folder="team"))
        trigger = await alice.say(room, "bot: lunch on Friday?", **{"m.mentions": {"user_ids": [bot.user_id]}})
        acks = await alice.wait_for(bots(bot.user_id, "m.reaction"))
        assert [a["content"]["m.relates_to"] for a in acks] == [
            {"rel_type": "m.annotation", "event_id": trigger, "key": "👀"}]
        answer = (await alice.wait_for(bots(bot.user_id)))[0]["event_id"]
        # the turn ended: the acknowledgement is taken off (redacted)
        await alice.wait_for(lambda s: s.get("type") == "m.room.redaction" and s.get("sender") == bot.user_id
                             and (s.get("redacts") or s["content"].get("redacts")) == acks[0]["event_id"])

        thumbs = await alice.call("room_send", room, "m.reaction",
                                  {"m.relates_to": {"rel_type": "m.annotation", "event_id": answer, "key": "👍"}})
        await wait_until(lambda: channel.received >= 2)
        await alice.say(room, "bot: so, settled?", **{"m.mentions": {"user_ids": [bot.user_id]}})
        await wait_until(lambda: d.daemon.outbox.delivered == 2)
        assert len(prompts) == 2  # the reaction woke no turn of its own
        assert ">👍</reaction>" in prompts[1] and 'on="**Echo**: bot: lunch on Friday?"' in prompts[1], prompts[1]
        msgs = await stored(d, chat)
        reaction = next(m for m in msgs if m.reaction_to)
        assert (reaction.reaction_to, reaction.text, reaction.platform_id, reaction.mentions_bot) == (
            answer, "👍", f"react:{thumbs.event_id}", False)
        await d.stop()
        await alice.close()
        nursery.cancel_scope.cancel()


async def test_a_reaction_put_on_before_a_restart_is_taken_off_after_it(tmp_path: Path, bridge: AsyncioBridge,  # noqa: F811
                                                                       synapse: MatrixServer) -> None:  # noqa: F811
    """The daemon restarted mid-turn: its memory of the 👀 is gone, the turn runs again and puts 👀
    on again (the homeserver: M_DUPLICATE_ANNOTATION) and takes it off at the end; the reaction of
    the first run must come off, not stay on the message for good."""
    from ngb.channels.common import Lru

    alice = await person(bridge, synapse, "alice")
    async with trio.open_nursery() as nursery:
        bot, d, chat = await bot_in_a_room(nursery, tmp_path, synapse, alice, FakeBehaviour(reply=echo_mentions))
        channel, room = d.channel, chat.removeprefix("matrix:")
        message = await alice.say(room, "hello")
        await channel.react(chat, message, "👀")
        (first,) = await alice.wait_for(bots(bot.user_id, "m.reaction"))
        channel.reactions = Lru(16)  # what a restart forgets
        await channel.react(chat, message, "👀")  # on already: no error, no second one
        channel.reactions = Lru(16)
        await channel.unreact(chat, message, "👀")
        await alice.wait_for(lambda s: s.get("type") == "m.room.redaction" and s.get("sender") == bot.user_id
                             and (s.get("redacts") or s["content"].get("redacts")) == first["event_id"])
        await alice.sync()
        assert [s["event_id"] for s in (e.source for e in alice.seen) if bots(bot.user_id, "m.reaction")(s)] == [
            first["event_id"]]
        await d.stop()
        await alice.close()
        nursery.cancel_scope.cancel()
