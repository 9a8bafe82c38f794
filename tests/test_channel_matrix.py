"""Matrix through the real daemon (in-process, fake agent) and the real matrix-nio, against a real
Synapse (tests/matrix_server.py: one per session); a second nio client plays the person."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from ngb.aio_bridge import BRIDGE, AsyncioBridge
from ngb.channels.matrix_events import markdown_to_matrix_html, mentions, relation_of, strip_reply_fallback
from ngb.channels.matrix_settings import MatrixSettings
from ngb.config import ConfigError
from ngb.records import Group
from tests.channel_helpers import StoppableDaemon, stored, wait_until
from tests.conftest import make_config
from tests.fakes.agent import FakeBehaviour
from tests.matrix_person import Person
from tests.matrix_server import MatrixServer, MatrixUser, synapse  # noqa: F401 - the session fixture


def matrix_env(server: MatrixServer, bot: MatrixUser, *inviters: str, **table: Any) -> dict[str, str]:
    settings = {"homeserver": server.base_url, "invites_from": list(inviters), "sync_timeout": "1",
                "reconnect_base": "0.05", "reconnect_cap": "0.3", **table}
    return {"NGB_MATRIX_ACCESS_TOKEN": bot.access_token, "NGB_CHANNELS": json.dumps({"matrix": settings})}


@pytest.fixture
async def bridge() -> AsyncIterator[AsyncioBridge]:
    """The daemon's own asyncio bridge for the person's client too: nio's encryption store binds
    its (module-level) peewee models to a database for each call, so two clients with stores on two
    threads at once mixed up each other's databases (a FOREIGN KEY failure, now and then). One loop
    thread runs those calls one at a time; a daemon has only one such client."""
    async with BRIDGE.attach():
        yield BRIDGE


async def person(bridge: AsyncioBridge, server: MatrixServer, name: str) -> Person:
    return await Person(bridge, server.base_url, server.register(name)).connect()


def echo_mentions(prompt: str) -> list[str]:
    """One "**Echo**: ..." per message of the batch that names the bot."""
    return [f"**Echo**: {t}" for t in re.findall(r">([^<]*)</message>", prompt) if "bot" in t.lower()]


def from_bot(bot: MatrixUser) -> Any:
    return lambda source: source.get("sender") == bot.user_id and source.get("type") == "m.room.message"


async def room_with_bot(alice: Person, bot: MatrixUser, channel: Any, *others: str) -> str:
    """A room alice creates and invites the bot (and ``others``) into; returns once the bot joined."""
    room = await alice.create_room(bot.user_id, *others)
    with trio.fail_after(15):
        while bot.user_id not in await alice.members(room):
            await trio.sleep(0.05)
    await wait_until(lambda: room in (channel.client.rooms if channel.client else {}))
    return room


async def test_mention_in_a_thread_gets_one_threaded_reply(tmp_path: Path, bridge: AsyncioBridge,
                                                           synapse: MatrixServer) -> None:  # noqa: F811
    bot = synapse.register("bot")
    alice = await person(bridge, synapse, "alice")
    bob = synapse.register("bob")  # invited, never joins: the room has three members
    async with trio.open_nursery() as nursery:
        d = await StoppableDaemon.start_with(nursery, make_config(tmp_path, **matrix_env(synapse, bot, alice.user.user_id)),
                                             FakeBehaviour(reply=echo_mentions), "matrix")
        channel = d.channel
        room = await room_with_bot(alice, bot, channel, bob.user_id)
        chat = f"matrix:{room}"
        await d.daemon.registry.add(Group(chat=chat, folder="team"))
        root = await alice.say(room, "the deploy is at 3pm")
        trigger = await alice.say(room, f"{bot.user_id.split(':')[0][1:]}: should we move it?",
                                  **{"m.mentions": {"user_ids": [bot.user_id]},
                                     "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
        replies = await alice.wait_for(from_bot(bot))
        await wait_until(lambda: d.daemon.outbox.delivered == 1)
        await trio.sleep(1.5)  # a second reply would be here by now
        await alice.sync()
        replies = [e.source for e in alice.seen if from_bot(bot)(e.source)]
        assert len(replies) == 1
        content = replies[0]["content"]
        assert content["m.relates_to"] == {"rel_type": "m.thread", "event_id": root, "is_falling_back": False,
                                           "m.in_reply_to": {"event_id": trigger}}
        assert content["body"].startswith("**Echo**: ") and content["formatted_body"].startswith("<b>Echo</b>: ")
        msgs = await stored(d, chat)
        assert [(m.from_bot, m.platform_id) for m in msgs] == [(False, root), (False, trigger), (True, replies[0]["event_id"])]
        assert msgs[0].text == "the deploy is at 3pm" and not msgs[0].mentions_bot
        assert msgs[1].mentions_bot and msgs[1].sender_id == alice.user.user_id
        await d.stop()
        await alice.close()
        nursery.cancel_scope.cancel()


async def test_a_restart_catches_up_each_message_once(tmp_path: Path, bridge: AsyncioBridge,
                                                       synapse: MatrixServer) -> None:  # noqa: F811
    bot = synapse.register("bot")
    alice = await person(bridge, synapse, "alice")
    bob = synapse.register("bob")
    env = matrix_env(synapse, bot, alice.user.user_id, timeline_limit="3")  # a gap longer than one sync
    behaviour = FakeBehaviour(reply=echo_mentions)
    async with trio.open_nursery() as nursery:
        first = await StoppableDaemon.start_with(nursery, make_config(tmp_path, **env), behaviour, "matrix")
        room = await room_with_bot(alice, bot, first.channel, bob.user_id)
        chat = f"matrix:{room}"
        await first.daemon.registry.add(Group(chat=chat, folder="team"))
        name = bot.user_id[1:].split(":")[0]  # the bot's localpart (and display name): a mention
        await alice.say(room, f"hey {name}, before the restart")
        await alice.wait_for(from_bot(bot))
        await wait_until(lambda: first.daemon.outbox.delivered == 1)
        await first.stop()

        while_down = [f"while down {i}" + (f" {name} answer me" if i % 3 == 0 else "") for i in range(8)]
        for text in while_down:
            await alice.say(room, text)
        second = await StoppableDaemon.start_with(nursery, make_config(tmp_path, **env), behaviour, "matrix")
        wanted = {f"**Echo**: {t}" for t in while_down if name in t}
        await alice.wait_for(lambda s: s.get("content", {}).get("body") == f"**Echo**: while down 6 {name} answer me")
        await wait_until(lambda: second.daemon.outbox.delivered == len(wanted))
        await trio.sleep(1.5)
        await alice.sync()
        bodies = sorted(e.source["content"]["body"] for e in alice.seen if from_bot(bot)(e.source))
        assert bodies == sorted({f"**Echo**: hey {name}, before the restart", *wanted})
        texts = [m.text for m in await stored(second, chat) if not m.from_bot]
        assert texts == [f"hey {name}, before the restart", *while_down]  # each once, oldest first
        assert second.channel.fetched >= 5  # the gap was paged back through /messages
        await second.stop()
        await alice.close()
        nursery.cancel_scope.cancel()


async def test_an_invite_from_a_stranger_is_ignored_with_one_line(tmp_path: Path, bridge: AsyncioBridge,
                                                                  synapse: MatrixServer, caplog: Any) -> None:  # noqa: F811
    caplog.set_level(logging.INFO, "ngb.channels.matrix")
    bot = synapse.register("bot")
    alice = await person(bridge, synapse, "alice")
    eve = await person(bridge, synapse, "eve")
    async with trio.open_nursery() as nursery:
        d = await StoppableDaemon.start_with(nursery, make_config(tmp_path, **matrix_env(synapse, bot, alice.user.user_id)),
                                             FakeBehaviour(), "matrix")
        strange = await eve.create_room(bot.user_id)
        await room_with_bot(alice, bot, d.channel)  # alice's invite, after eve's, is taken
        assert bot.user_id not in await eve.members(strange)
        lines = [r.getMessage() for r in caplog.records if "ignoring the invite" in r.getMessage()]
        assert lines == [f"matrix: ignoring the invite to {strange} from {eve.user.user_id} (not in invites_from)"]
        await d.stop()
        await alice.close()
        await eve.close()
        nursery.cancel_scope.cancel()


def test_events_parsing() -> None:
    me = "@bot:example.org"
    assert relation_of({"m.relates_to": {"rel_type": "m.thread", "event_id": "$root", "is_falling_back": True,
                                         "m.in_reply_to": {"event_id": "$last"}}}).thread == "$root"
    assert relation_of({"m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}}).reply_to == "$x"
    assert strip_reply_fallback("> <@a:b> hi\n> there\n\nmy answer") == "my answer"
    assert mentions({"body": "hi", "m.mentions": {"user_ids": [me]}}, me, ())
    assert mentions({"body": "Andy, look", "formatted_body": ""}, me, ("Andy",))
    assert mentions({"body": "x", "formatted_body": f'<a href="https://matrix.to/#/{me}">B</a>'}, me, ())
    assert not mentions({"body": "candy is sweet"}, me, ("andy",))
    assert markdown_to_matrix_html("**a**\nb\n```\nc\nd```") == "<b>a</b><br>b<br><pre>c\nd</pre>"


def test_settings() -> None:
    s = MatrixSettings.from_table({"homeserver": "https://m.example.org/", "access_token": "syt_x",
                                   "invites_from": ["@alice:example.org", ":corp.example"]})
    assert s.off_reason is None and s.homeserver == "https://m.example.org"
    assert s.may_invite("@alice:example.org") and s.may_invite("@bob:corp.example") and not s.may_invite("@eve:evil.org")
    assert "NGB_MATRIX_ACCESS_TOKEN" in (MatrixSettings.from_table({"homeserver": "https://m.example.org"}).off_reason or "")
    with pytest.raises(ConfigError):
        MatrixSettings.from_table({"homeserver": "h", "invites_from": ["alice"]})
