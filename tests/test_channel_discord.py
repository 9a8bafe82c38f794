"""Discord through the real daemon (in-process, fake agent) and the real discord.py, against
tests/fakes/discord.py (REST + gateway) on loopback."""

from __future__ import annotations

import json
import logging
import re
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from ngb.channels.discord import DiscordChannel, DiscordSettings
from ngb.config import ConfigError, load_config
from ngb.records import Group
from ngb.store import StoreUnavailable
from tests.channel_helpers import StoppableDaemon, echo_each, stored, wait_until
from tests.conftest import make_config
from tests.fakes.agent import FakeBehaviour
from tests.fakes.discord import BOT_ID, FakeDiscord
from tests.fakes.wsserver import HttpWsServer, WebSocket

TOKEN = "TEST.discord.token"
CHAN = 920000000000000001
DM = 940000000000000001


@pytest.fixture
async def fake_dc() -> AsyncIterator[FakeDiscord]:
    async with trio.open_nursery() as nursery:
        fake = await FakeDiscord.start(nursery, token=TOKEN, heartbeat_ms=300)
        yield fake
        nursery.cancel_scope.cancel()


def dc_env(fake: FakeDiscord, token: str = TOKEN, **table: Any) -> dict[str, str]:
    settings = {"api_base": fake.api_base, "gateway_url": fake.gateway_url, "reconnect_base": "0.05",
                "reconnect_cap": "0.3", "connect_timeout": "10", **table}
    return {"NGB_DISCORD_TOKEN": token, "NGB_CHANNELS": json.dumps({"discord": settings})}


async def stored_count(d: Any, chat: str, count: int, timeout: float = 10) -> list[Any]:
    """Wait until chat has ``count`` stored messages; return them."""
    with trio.fail_after(timeout):
        while len(msgs := await stored(d, chat)) < count:
            await trio.sleep(0.01)
        return msgs


async def mark_kept(daemon: Any, chat: str, platform_id: str, timeout: float = 10) -> None:
    """Wait until the daemon's store holds ``platform_id`` as chat's catch-up mark."""
    with trio.fail_after(timeout):
        while (await daemon.store.channel_marks("discord")).get(chat) != platform_id:
            await trio.sleep(0.01)


async def start(run_daemon: Any, fake: FakeDiscord, behaviour: FakeBehaviour | None = None, **table: Any) -> Any:
    d = await run_daemon(behaviour, **dc_env(fake, **table))
    channel = d.daemon.channels["discord"]
    await wait_until(lambda: channel.state == "connected")
    return d


async def test_guild_trigger_context_and_one_threaded_reply(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    d = await start(run_daemon, fake_dc)
    await d.daemon.registry.add(Group(chat=f"discord:{CHAN}", folder="guild"))
    bob = fake_dc.user(931, "bob")
    fake_dc.user_message(CHAN, "the raid starts at 9", author=bob)
    msgs = await stored_count(d, f"discord:{CHAN}", 1)
    assert [(m.text, m.sender, m.sender_id, m.mentions_bot) for m in msgs] == [("the raid starts at 9", "Bob", "931", False)]

    trigger = fake_dc.user_message(CHAN, f"<@{BOT_ID}> when is the raid?")
    sent = await wait_until(lambda: fake_dc.sent)
    await wait_until(lambda: d.daemon.outbox.delivered == 1)  # the reply is stored before this counts
    assert len(fake_dc.sent) == 1
    assert sent[0]["reply_to"] == int(trigger["id"])  # references the trigger
    assert sent[0]["content"] == "Echo: @Andy when is the raid?"
    assert "the raid starts at 9" in d.launcher.prompts[-1][2]
    msgs = await stored(d, f"discord:{CHAN}")
    assert [m.from_bot for m in msgs] == [False, False, True]
    assert msgs[1].mentions_bot and msgs[2].platform_id == sent[0]["message"]["id"]
    assert fake_dc.heartbeats >= 1  # heartbeats answered with ACKs, connection kept
    status = (await d.http.get("/status")).json()
    assert status["channels"]["discord"]["state"] == "connected"


async def test_reply_to_bot_and_trigger_word(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    d = await start(run_daemon, fake_dc)
    await d.daemon.registry.add(Group(chat=f"discord:{CHAN}", folder="guild"))
    fake_dc.user_message(CHAN, "@Andy hi")
    await wait_until(lambda: len(fake_dc.sent) == 1)
    second = fake_dc.user_message(CHAN, "and tomorrow?", reply_to=fake_dc.sent[0]["message"])
    await wait_until(lambda: len(fake_dc.sent) == 2)
    assert fake_dc.sent[1]["reply_to"] == int(second["id"])


async def test_dm_needs_no_mention(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    d = await start(run_daemon, fake_dc)
    await d.daemon.registry.add(Group(chat=f"discord:{DM}", folder="alice"))
    fake_dc.user_message(DM, "what's up")
    await wait_until(lambda: fake_dc.sent)
    assert fake_dc.sent[0]["channel_id"] == DM and fake_dc.sent[0]["content"] == "Echo: what's up"


async def test_a_reply_pings_no_crowd(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    """The agent repeating (or steered into) @everyone, @here, a role and a user mention: the text goes
    out as written, and Discord notifies only the person who asked; a message the agent sends on its
    own (no reply_to) notifies no one."""
    loud = "@everyone @here <@&950000000000000001> and <@931> look!"
    d = await start(run_daemon, fake_dc, FakeBehaviour(reply=lambda p: [loud]))
    await d.daemon.registry.add(Group(chat=f"discord:{CHAN}", folder="guild"))
    asker = fake_dc.user(932, "carol")
    trigger = fake_dc.user_message(CHAN, f"<@{BOT_ID}> say it", author=asker)
    (sent,) = await wait_until(lambda: fake_dc.sent)
    assert sent["content"] == loud and sent["reply_to"] == int(trigger["id"])
    assert sent["pinged"] == {"user:932"}  # the asker; not everyone, not the role, not user 931
    assert sent["body"]["allowed_mentions"] == {"parse": [], "replied_user": True}

    await d.daemon.store.queue_message("guild", f"discord:{CHAN}", loud)  # as the send_message tool does
    d.daemon.outbox.wake()
    await wait_until(lambda: len(fake_dc.sent) == 2)
    assert fake_dc.sent[1]["content"] == loud and fake_dc.sent[1]["pinged"] == set()


async def test_long_reply_is_split_in_order(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    paragraphs = [f"**Part {i}.** " + " ".join(f"Sentence {i}.{j} says a few words." for j in range(12)) for i in range(30)]
    long_text = "\n\n".join(paragraphs)
    assert len(long_text) > 10_000
    d = await start(run_daemon, fake_dc, FakeBehaviour(reply=lambda p: [long_text]))
    await d.daemon.registry.add(Group(chat=f"discord:{DM}", folder="alice"))
    trigger = fake_dc.user_message(DM, "tell me everything")
    await wait_until(lambda: d.daemon.outbox.delivered >= 1)
    parts = fake_dc.sent
    assert len(parts) >= 6 and all(len(p["content"]) <= 2000 for p in parts)
    assert parts[0]["reply_to"] == int(trigger["id"]) and parts[1]["reply_to"] is None
    assert "\n\n".join(p["content"] for p in parts) == long_text  # Discord renders Markdown as is


async def test_nonce_makes_a_resend_harmless(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    d = await start(run_daemon, fake_dc)
    channel: DiscordChannel = d.daemon.channels["discord"]
    first = await channel.send(f"discord:{CHAN}", "hello once", idempotency_key="ngb-outbox-17")
    again = await channel.send(f"discord:{CHAN}", "hello once", idempotency_key="ngb-outbox-17")
    assert first == again and len(fake_dc.sent) == 1
    body = fake_dc.sent[0]["body"]
    assert body["nonce"] == "ngb-outbox-17.0" and body["enforce_nonce"] is True


async def test_redelivered_message_is_stored_once(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    d = await start(run_daemon, fake_dc, FakeBehaviour(reply=echo_each))
    await d.daemon.registry.add(Group(chat=f"discord:{CHAN}", folder="guild", requires_trigger=False))
    message = fake_dc.user_message(CHAN, "only once")
    fake_dc.dispatch("MESSAGE_CREATE", message)  # the same event again
    fake_dc.user_message(CHAN, "then this")  # its answer comes after any second answer to the first
    await wait_until(lambda: any(s["content"] == "Echo: then this" for s in fake_dc.sent))
    assert [m.text for m in await stored(d, f"discord:{CHAN}") if not m.from_bot] == ["only once", "then this"]
    assert [s["content"] for s in fake_dc.sent] == ["Echo: only once", "Echo: then this"]


async def test_outage_resume_and_invalid_session(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    d = await start(run_daemon, fake_dc, FakeBehaviour(reply=echo_each))
    channel = d.daemon.channels["discord"]
    await d.daemon.registry.add(Group(chat=f"discord:{CHAN}", folder="guild", requires_trigger=False))
    fake_dc.user_message(CHAN, "before")
    await wait_until(lambda: d.daemon.outbox.delivered == 1)

    # 1. the connection dies; messages arrive meanwhile; RESUME replays them
    fake_dc.down()
    await wait_until(lambda: channel.state in ("disconnected", "connecting"))
    for i in range(3):
        fake_dc.user_message(CHAN, f"during outage {i}")
    await trio.sleep(0.3)
    assert (await d.http.get("/status")).json()["channels"]["discord"]["state"] in ("disconnected", "connecting")
    fake_dc.up()
    await wait_until(lambda: sum("during outage" in s["content"] for s in fake_dc.sent) == 3, timeout=15)
    assert fake_dc.resumes >= 1 and fake_dc.identifies == 1

    # 2. the session is gone too: INVALID_SESSION, fresh IDENTIFY, missed messages fetched by REST
    fake_dc.down()
    await wait_until(lambda: channel.state in ("disconnected", "connecting"))
    fake_dc.invalidate_sessions()
    fake_dc.user_message(CHAN, "while the session died")  # no session buffers it: only REST has it
    fake_dc.up()
    await wait_until(lambda: any(s["content"] == "Echo: while the session died" for s in fake_dc.sent), timeout=15)
    assert fake_dc.identifies == 2 and channel.fetched >= 1

    await wait_until(lambda: channel.state == "connected")
    fake_dc.user_message(CHAN, "after")
    await wait_until(lambda: any(s["content"] == "Echo: after" for s in fake_dc.sent), timeout=15)
    await wait_until(lambda: d.daemon.outbox.delivered == 6)
    texts = [m.text for m in await stored(d, f"discord:{CHAN}") if not m.from_bot]
    assert texts == ["before", "during outage 0", "during outage 1", "during outage 2", "while the session died", "after"]
    replies = [s["content"] for s in fake_dc.sent]
    assert sorted(replies) == sorted(f"Echo: {t}" for t in texts)  # each answered exactly once


async def test_failed_send_is_retried_and_delivered_once(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    d = await start(run_daemon, fake_dc)
    await d.daemon.registry.add(Group(chat=f"discord:{DM}", folder="alice"))
    fake_dc.fail_next("POST /channels/messages", 503)  # (502/504 discord.py retries itself, then gives up)
    fake_dc.user_message(DM, "hello")
    await wait_until(lambda: d.daemon.outbox.delivered == 1, timeout=20)  # sent, and marked so
    assert [s["content"] for s in fake_dc.sent] == ["Echo: hello"]
    assert d.daemon.outbox.retries == 1


async def test_rejected_token_is_reported_and_local_chat_keeps_working(
    run_daemon: Any, fake_dc: FakeDiscord, caplog: Any
) -> None:
    d = await run_daemon(**dc_env(fake_dc, token="WRONG.token"))
    channel = d.daemon.channels["discord"]
    await wait_until(lambda: channel.state == "unauthorized")
    assert (await d.http.get("/status")).json()["channels"]["discord"]["state"] == "unauthorized"
    await d.post("main", "still there?")
    replies = await d.wait_bot_replies("main", 1)
    assert replies[0]["text"] == "Echo: still there?"
    assert not any("WRONG.token" in r.getMessage() for r in caplog.records)


async def test_message_content_intent_refused(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    fake_dc.privileged_intents_allowed = False
    d = await run_daemon(**dc_env(fake_dc))
    channel = d.daemon.channels["discord"]
    await wait_until(lambda: channel.state == "unauthorized")
    assert "Message Content intent" in (channel.status.last_error or "")


async def test_missing_token_means_off(run_daemon: Any, fake_dc: FakeDiscord, caplog: Any) -> None:
    d = await run_daemon(NGB_CHANNELS=json.dumps({"discord": {"api_base": fake_dc.api_base}}))
    assert d.daemon.channels["discord"].state == "off"
    assert sum("channel discord: off" in r.getMessage() for r in caplog.records) == 1
    assert fake_dc.requests == []


def test_settings_from_config(tmp_path: Any) -> None:
    cfg = load_config(None, env={"NGB_DISCORD_TOKEN": "abc", "NGB_STATE_DIR": str(tmp_path)})
    assert cfg.channels == {"discord": {"token": "abc"}}
    s = DiscordSettings.from_table({"token": "abc", "api_base": "http://127.0.0.1:9/api/v10/"})
    assert (s.api_base, s.gateway_url, s.message_content) == ("http://127.0.0.1:9/api/v10", "wss://gateway.discord.gg/", True)
    assert DiscordSettings.from_table({"token": "abc"}).api_base == "https://discord.com/api/v10"
    with pytest.raises(ConfigError, match="channels.discord.gateway_url"):
        DiscordSettings.from_table({"token": "abc", "gateway_url": "http://x"})
    with pytest.raises(ConfigError, match="channels.discord.tokn: unknown key"):
        DiscordSettings.from_table({"tokn": "abc"})


def texts_of(messages: list[Any]) -> list[str]:
    return [m.text for m in messages if not m.from_bot]


def echo_mentions(prompt: str) -> list[str]:
    """One "Echo: ..." per message of the batch that mentions the bot (the rest is context)."""
    return [f"Echo: {t}" for t in re.findall(r">([^<]*)</message>", prompt) if "@Andy" in t]


async def test_a_message_taken_when_the_gateway_drops_is_stored_after_the_reconnect(
    run_daemon: Any, fake_dc: FakeDiscord
) -> None:
    """The gateway delivered it and the connection died while it was being stored: RESUME does not
    replay it (its sequence was acknowledged), yet it is stored and answered once after the reconnect."""
    d = await start(run_daemon, fake_dc, FakeBehaviour(reply=echo_each))
    channel = d.daemon.channels["discord"]
    chat = f"discord:{CHAN}"
    await d.daemon.registry.add(Group(chat=chat, folder="guild", requires_trigger=False))
    fake_dc.user_message(CHAN, "before")
    await wait_until(lambda: d.daemon.outbox.delivered == 1)

    store = d.daemon.store
    real_ingest = store.ingest
    storing = trio.Event()

    async def stalls_once(inbound: Any) -> Any:
        if inbound.text == "unlucky" and not storing.is_set():
            storing.set()
            await trio.sleep_forever()  # the store is slow; the connection dies meanwhile
        return await real_ingest(inbound)

    store.ingest = stalls_once  # type: ignore[method-assign]
    fake_dc.user_message(CHAN, "unlucky")
    await storing.wait()
    fake_dc.drop()
    after = fake_dc.user_message(CHAN, "after the drop")
    await wait_until(lambda: {"Echo: unlucky", "Echo: after the drop"} <= {s["content"] for s in fake_dc.sent}, timeout=15)
    assert fake_dc.resumes >= 1 and fake_dc.identifies == 1  # resumed: no replay of "unlucky"
    await wait_until(lambda: d.daemon.outbox.delivered == 3)
    assert texts_of(await stored(d, chat)) == ["before", "unlucky", "after the drop"]
    assert sorted(s["content"] for s in fake_dc.sent) == ["Echo: after the drop", "Echo: before", "Echo: unlucky"]
    await wait_until(lambda: channel.catch_ups >= 2)  # (the mark of a chat being caught up waits for it)
    assert (await store.channel_marks("discord"))[chat] == after["id"]  # the newest stored


async def test_a_failed_store_is_retried_and_the_mark_waits_for_it(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    """The store refuses a message (disk full, locked): the mark does not pass it, the session ends
    and the next one stores it; nothing after it is lost or answered twice."""
    d = await start(run_daemon, fake_dc, FakeBehaviour(reply=echo_each))
    chat = f"discord:{CHAN}"
    await d.daemon.registry.add(Group(chat=chat, folder="guild", requires_trigger=False))
    store = d.daemon.store
    real_ingest = store.ingest
    failed: list[tuple[str, str | None]] = []  # (its id, the chat's mark when it failed)

    async def fails_once(inbound: Any) -> Any:
        if inbound.text == "unlucky" and not failed:
            failed.append((inbound.platform_id, (await store.channel_marks("discord")).get(chat)))
            raise StoreUnavailable("database or disk is full")
        return await real_ingest(inbound)

    store.ingest = fails_once  # type: ignore[method-assign]
    for text in ("first", "unlucky", "last"):
        fake_dc.user_message(CHAN, text)
    await wait_until(lambda: d.daemon.outbox.delivered == 3, timeout=15)
    assert failed and failed[0][1] != failed[0][0]  # the mark had not moved to it
    assert texts_of(await stored(d, chat)) == ["first", "unlucky", "last"]
    assert sorted(s["content"] for s in fake_dc.sent) == ["Echo: first", "Echo: last", "Echo: unlucky"]


async def test_messages_a_resume_does_not_replay_are_read_from_the_history(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    d = await start(run_daemon, fake_dc, FakeBehaviour(reply=echo_each))
    channel = d.daemon.channels["discord"]
    chat = f"discord:{CHAN}"
    await d.daemon.registry.add(Group(chat=chat, folder="guild", requires_trigger=False))
    fake_dc.user_message(CHAN, "before")
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    catch_ups = channel.catch_ups

    fake_dc.replay_on_resume = False  # the gateway resumes, but what came meanwhile is not replayed
    fake_dc.down()
    await wait_until(lambda: channel.state in ("disconnected", "connecting"))
    fake_dc.user_message(CHAN, "while away")
    fake_dc.up()
    await wait_until(lambda: channel.catch_ups > catch_ups and d.daemon.outbox.delivered == 2, timeout=15)
    assert fake_dc.resumes >= 1 and fake_dc.identifies == 1 and channel.fetched >= 1
    assert texts_of(await stored(d, chat)) == ["before", "while away"]
    assert sorted(s["content"] for s in fake_dc.sent) == ["Echo: before", "Echo: while away"]


class Stoppable(StoppableDaemon):
    """A daemon in the test's nursery that can be stopped (as by systemctl stop) and started again
    on the same state dir."""

    @classmethod
    async def start(cls, nursery: trio.Nursery, tmp: Path, fake: FakeDiscord, behaviour: FakeBehaviour,
                    **table: Any) -> Stoppable:
        return await cls.start_with(nursery, make_config(tmp, **dc_env(fake, **table)), behaviour, "discord")


async def test_messages_posted_while_the_daemon_was_down_are_caught_up_after_a_restart(
    tmp_path: Path, fake_dc: FakeDiscord
) -> None:
    chat, dm_chat = f"discord:{CHAN}", f"discord:{DM}"
    behaviour = FakeBehaviour(reply=echo_mentions)
    async with trio.open_nursery() as nursery:
        first = await Stoppable.start(nursery, tmp_path, fake_dc, behaviour)
        await first.daemon.registry.add(Group(chat=chat, folder="guild"))
        await first.daemon.registry.add(Group(chat=dm_chat, folder="alice", requires_trigger=False))
        before = fake_dc.user_message(CHAN, f"<@{BOT_ID}> before the restart")
        hi = fake_dc.user_message(DM, "hi @Andy, before")
        await wait_until(lambda: first.daemon.outbox.delivered == 2)
        await mark_kept(first.daemon, chat, before["id"])
        await mark_kept(first.daemon, dm_chat, hi["id"])
        await first.stop()

        # 130 messages in the guild channel (two pages of history), every 10th addressed to the bot,
        # and one in the DM: no gateway session will ever replay them.
        while_down = [(f"<@{BOT_ID}> " if i % 10 == 0 else "") + f"while down {i}" for i in range(130)]
        posted = [fake_dc.user_message(CHAN, text) for text in while_down]
        dm = fake_dc.user_message(DM, "@Andy did you miss me?")
        fake_dc.history_queries.clear()

        second = await Stoppable.start(nursery, tmp_path, fake_dc, behaviour)
        assert fake_dc.identifies == 2 and fake_dc.resumes == 0  # a new run: a new session
        channel = second.channel
        await wait_until(lambda: channel.catch_ups == 1, timeout=20)
        expected = ["@Andy before the restart"] + [t.replace(f"<@{BOT_ID}>", "@Andy") for t in while_down]
        assert texts_of(await second.daemon.store.messages_after(chat, 0)) == expected  # each once, in order
        assert texts_of(await second.daemon.store.messages_after(dm_chat, 0)) == ["hi @Andy, before", "@Andy did you miss me?"]
        guild_pages = [q for cid, q in fake_dc.history_queries if cid == CHAN]
        assert [q["limit"] for q in guild_pages] == ["100", "100"]  # paged, 100 at a time
        since = [m["id"] for m in fake_dc.messages[CHAN] if int(m["id"]) > int(before["id"])]  # (the bot's reply too)
        assert [q["after"] for q in guild_pages] == [before["id"], since[99]]
        marks = await second.daemon.store.channel_marks("discord")
        assert marks == {chat: posted[-1]["id"], dm_chat: dm["id"]}  # the newest stored

        # a last trigger, live: once it is answered, every earlier one has had its turn
        fake_dc.user_message(CHAN, f"<@{BOT_ID}> the last one")
        await wait_until(lambda: any(s["content"] == "Echo: @Andy the last one" for s in fake_dc.sent), timeout=15)
        triggered = [t for t in expected if "@Andy" in t] + ["@Andy the last one"]  # 1 + 13 + 1
        await wait_until(lambda: sum(s["channel_id"] == CHAN for s in fake_dc.sent) >= len(triggered))
        assert sorted(s["content"] for s in fake_dc.sent if s["channel_id"] == CHAN) == sorted(f"Echo: {t}" for t in triggered)
        assert [s["content"] for s in fake_dc.sent if s["channel_id"] == DM] == [
            "Echo: hi @Andy, before", "Echo: @Andy did you miss me?"]
        await second.stop()
        nursery.cancel_scope.cancel()


async def test_a_catch_up_cut_by_its_page_bound_goes_on_at_the_next_reconnect(
    tmp_path: Path, fake_dc: FakeDiscord, caplog: Any
) -> None:
    chat = f"discord:{CHAN}"
    behaviour = FakeBehaviour(reply=echo_mentions)
    caplog.set_level(logging.WARNING, logger="ngb.channels.discord")
    async with trio.open_nursery() as nursery:
        first = await Stoppable.start(nursery, tmp_path, fake_dc, behaviour, catch_up_pages=1)
        await first.daemon.registry.add(Group(chat=chat, folder="guild"))
        before = fake_dc.user_message(CHAN, "before the restart")
        await mark_kept(first.daemon, chat, before["id"])
        await first.stop()
        posted = [fake_dc.user_message(CHAN, f"while down {i}") for i in range(150)]

        second = await Stoppable.start(nursery, tmp_path, fake_dc, behaviour, catch_up_pages=1)
        channel = second.channel
        await wait_until(lambda: channel.catch_ups == 1, timeout=20)
        assert channel.fetched == 100
        assert any("stopped after 1 pages" in r.getMessage() for r in caplog.records)
        marks = await second.daemon.store.channel_marks("discord")
        assert marks[chat] == posted[99]["id"]  # as far as the catch-up got
        live = fake_dc.user_message(CHAN, f"<@{BOT_ID}> live")  # stored, but the mark waits: a gap is behind it
        await wait_until(lambda: any(s["content"] == "Echo: @Andy live" for s in fake_dc.sent), timeout=15)
        assert (await second.daemon.store.channel_marks("discord"))[chat] == posted[99]["id"]

        fake_dc.drop()  # the next connection's catch-up goes on where this one stopped
        await wait_until(lambda: channel.catch_ups == 2, timeout=20)
        texts = texts_of(await second.daemon.store.messages_after(chat, 0))
        assert sorted(texts) == sorted(["before the restart", *(f"while down {i}" for i in range(150)), "@Andy live"])
        assert len(texts) == len(set(texts))
        assert (await second.daemon.store.channel_marks("discord"))[chat] == live["id"]
        assert [s["content"] for s in fake_dc.sent] == ["Echo: @Andy live"]
        await second.stop()
        nursery.cancel_scope.cancel()


# -- the fakes' server (tests/fakes/wsserver.py, shared with Slack, Lark, DingTalk, WeCom) ---------------
class _LateWriter(HttpWsServer):
    """A fake whose writer goes on writing after its client left (as a gateway's writer task does
    until its connection handler notices)."""

    def __init__(self) -> None:
        super().__init__()
        self.finished: list[int] = []  # per connection: the sends dropped

    async def websocket(self, ws: WebSocket) -> None:
        if ws.query.get("wait") == "close":
            while await ws.receive() is not None:  # until the client's close frame
                pass
        else:
            await ws.receive()  # the client's only message, then it vanishes (RST)
        for i in range(2000):  # to a reset socket the kernel soon refuses writes
            await ws.send_json({"n": i, "pad": "x" * 512})
        self.finished.append(ws.dropped)


async def _ws_client(port: int, target: str) -> tuple[trio.SocketStream, WSConnection]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(conn.send(Request(host="127.0.0.1", target=target)))
    while not any(isinstance(e, AcceptConnection) for e in conn.events()):
        conn.receive_data(await stream.receive_some(65536))
    return stream, conn


async def test_the_fake_server_takes_a_client_that_leaves_quietly() -> None:
    """A fake writing to a client that closed, or reset the connection, drops what it writes:
    nothing is raised into the test's nursery, and the server goes on serving."""
    async with trio.open_nursery() as nursery:
        server = _LateWriter()
        await nursery.start(server.serve)

        stream, conn = await _ws_client(server.port, "/ws?wait=close")  # a clean close
        await stream.send_all(conn.send(CloseConnection(code=1000)))
        await wait_until(lambda: len(server.finished) == 1)

        stream2, conn2 = await _ws_client(server.port, "/ws")  # a reset in the middle
        await stream2.send_all(conn2.send(TextMessage(data="bye")))
        stream2.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream2.aclose()
        await wait_until(lambda: len(server.finished) == 2)
        assert server.finished[0] == 2000 and server.finished[1] >= 1  # dropped, not raised

        stream3, conn3 = await _ws_client(server.port, "/ws?wait=close")  # still serving
        await stream3.send_all(conn3.send(CloseConnection(code=1000)))
        await wait_until(lambda: len(server.finished) == 3)
        await stream.aclose()
        await stream3.aclose()
        nursery.cancel_scope.cancel()
