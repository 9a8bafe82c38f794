"""Matrix end-to-end encryption against the real Synapse: the person runs matrix-nio with its own
Olm/Megolm store, as Element would; the daemon's channel has its store under the state dir's
secrets (ngb/channels/matrix_crypto.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import trio

from ngb.aio_bridge import AsyncioBridge
from ngb.channels.matrix_crypto import send_encrypted
from ngb.records import Group
from tests.channel_helpers import StoppableDaemon, stored, wait_until
from tests.conftest import api_headers, make_config
from tests.fakes.agent import FakeBehaviour
from tests.matrix_person import Person
from tests.matrix_server import MatrixServer, synapse  # noqa: F401 - the session fixture
from tests.test_channel_matrix import bridge, from_bot, matrix_env  # noqa: F401 - the fixture


async def test_an_encrypted_dm_is_answered_encrypted(tmp_path: Path, bridge: AsyncioBridge,  # noqa: F811
                                                     synapse: MatrixServer) -> None:  # noqa: F811
    bot = synapse.register("bot")
    alice = await Person(bridge, synapse.base_url, synapse.register("alice"), store=tmp_path / "alice-keys").connect()
    config = make_config(tmp_path, **matrix_env(synapse, bot, alice.user.user_id))
    async with trio.open_nursery() as nursery:
        d = await StoppableDaemon.start_with(nursery, config, FakeBehaviour(), "matrix")
        channel = d.channel
        room = await alice.create_room(bot.user_id, encrypted=True)
        with trio.fail_after(15):
            while bot.user_id not in await alice.members(room):
                await trio.sleep(0.05)
        await wait_until(lambda: room in (channel.client.rooms if channel.client else {}))
        chat = f"matrix:{room}"
        await d.daemon.registry.add(Group(chat=chat, folder="alice", requires_trigger=False))
        await alice.sync()  # the bot's device keys, as a client learns them
        asked = await alice.say(room, "is this secret?")
        assert (await alice.raw_event(room, asked))["type"] == "m.room.encrypted"  # encrypted on the wire
        replies = await alice.wait_for(from_bot(bot))
        assert [r["content"]["body"] for r in replies] == ["Echo: is this secret?"]  # decrypted by alice
        raw = await alice.raw_event(room, replies[0]["event_id"])
        assert raw["type"] == "m.room.encrypted" and "body" not in raw["content"], raw  # the server saw ciphertext
        msgs = await stored(d, chat)
        assert [(m.from_bot, m.text) for m in msgs] == [(False, "is this secret?"), (True, "Echo: is this secret?")]
        keys = config.state_dir / "secrets" / "matrix"
        assert stat.S_IMODE(keys.stat().st_mode) == 0o700
        assert stat.S_IMODE((keys / "pickle-key").stat().st_mode) == 0o600
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.web_port}", headers=api_headers(config)) as web:
            assert (await web.get("/status")).json()["channels"]["matrix"]["encryption"] is True
        await d.stop()
        # a restart reads the same store: same device, same keys, the room's session goes on
        d = await StoppableDaemon.start_with(nursery, config, FakeBehaviour(), "matrix")
        await alice.say(room, "still secret after a restart?")
        again = await alice.wait_for(lambda e: from_bot(bot)(e) and "restart" in e["content"].get("body", ""))
        assert [r["content"]["body"] for r in again] == ["Echo: still secret after a restart?"]
        # reactions and preview edits go encrypted like messages, and people's are read
        acks = await alice.wait_for(lambda e: e.get("sender") == bot.user_id and e.get("type") == "m.reaction")
        assert acks[0]["content"]["m.relates_to"]["key"] == "👀"
        assert (await alice.raw_event(room, acks[0]["event_id"]))["type"] == "m.room.encrypted"
        answer = again[0]["event_id"]
        thumbs = await bridge.call(send_encrypted, alice.client, room, "m.reaction",  # as Element sends it
                                   {"m.relates_to": {"rel_type": "m.annotation", "event_id": answer, "key": "👍"}})
        assert (await alice.raw_event(room, thumbs))["type"] == "m.room.encrypted"
        with trio.fail_after(15):
            while not [m for m in await stored(d, chat) if m.reaction_to == answer and m.text == "👍"]:
                await trio.sleep(0.05)
        preview = await d.channel.send_preview(chat, "a draft")
        await d.channel.edit_preview(chat, preview, "a draft, longer")
        edits = await alice.wait_for(lambda e: (e.get("content", {}).get("m.relates_to") or {}).get("rel_type") == "m.replace")
        assert edits[0]["content"]["m.new_content"]["body"] == "a draft, longer"
        assert edits[0]["content"]["m.relates_to"]["event_id"] == preview
        assert (await alice.raw_event(room, edits[0]["event_id"]))["type"] == "m.room.encrypted"
        assert d.channel.undecryptable == 0
        await d.stop()
    await alice.close()


def test_doctor_checks_the_token_and_the_encryption(tmp_path: Path, synapse: MatrixServer) -> None:  # noqa: F811
    from ngb.ops.channel_checks import check_channels

    bot = synapse.register("bot")
    [ok] = check_channels(make_config(tmp_path, **matrix_env(synapse, bot)))
    assert ok.status == "ok" and ok.detail == f"token accepted: {bot.user_id} (device {bot.device_id}); " \
                                              "end-to-end encryption on", ok
    env = matrix_env(synapse, bot)
    env["NGB_MATRIX_ACCESS_TOKEN"] = "syt_not_a_token_1234567890"
    [bad] = check_channels(make_config(tmp_path, **env))
    assert bad.status == "fail" and "refused the access token" in bad.detail and "syt_not" not in bad.detail, bad
