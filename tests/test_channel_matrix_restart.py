"""The homeserver restarted in the middle of a conversation (tests/matrix_server.py restarts the real
Synapse on the same port and database): every message, sent before the stop and after the start,
is answered exactly once; the channel reconnects by itself from its stored sync position."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import trio

from ngb.aio_bridge import AsyncioBridge
from ngb.records import Group
from tests.channel_helpers import StoppableDaemon, wait_until
from tests.conftest import make_config
from tests.fakes.agent import FakeBehaviour
from tests.matrix_server import MatrixServer, synapse  # noqa: F401 - the session fixture
from tests.test_channel_matrix import bridge, echo_mentions, from_bot, matrix_env, person, room_with_bot  # noqa: F401


async def test_synapse_restarted_mid_conversation_answers_each_message_once(
    tmp_path: Path, bridge: AsyncioBridge, synapse: MatrixServer  # noqa: F811
) -> None:
    bot = synapse.register("bot")
    alice = await person(bridge, synapse, "alice")
    carol = synapse.register("carol")  # invited, never joins: a room of three, so only mentions trigger
    async with trio.open_nursery() as nursery:
        d = await StoppableDaemon.start_with(nursery, make_config(tmp_path, **matrix_env(synapse, bot, alice.user.user_id)),
                                             FakeBehaviour(reply=echo_mentions, delay=0.3), "matrix")
        room = await room_with_bot(alice, bot, d.channel, carol.user_id)
        await d.daemon.registry.add(Group(chat=f"matrix:{room}", folder="team"))
        name = bot.user_id.split(":")[0][1:]
        await alice.say(room, f"{name}: one")
        await alice.say(room, f"{name}: two")  # its turn may still be running when the server goes
        await trio.to_thread.run_sync(synapse.restart, 1.0)
        await wait_until(lambda: d.channel.state == "connected", timeout=30)
        await alice.say(room, f"{name}: three")
        await alice.say(room, f"{name}: last")
        await alice.wait_for(lambda e: from_bot(bot)(e) and e["content"]["body"].endswith("last"), timeout=30)
        bodies = Counter(e.source["content"]["body"] for e in alice.seen if from_bot(bot)(e.source))
        assert bodies == Counter({f"**Echo**: {name}: {w}": 1 for w in ("one", "two", "three", "last")}), bodies
        await d.stop()
    await alice.close()
