"""Discord through the real daemon (in-process, fake agent) and the real discord.py, against
tests/fakes/discord.py (REST + gateway) on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from ngb.channels.discord import DiscordChannel, DiscordSettings
from ngb.config import ConfigError, load_config
from ngb.records import Group
from tests.channel_helpers import echo_each, stored, wait_until
from tests.fakes.agent import FakeBehaviour
from tests.fakes.discord import BOT_ID, FakeDiscord

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
    await wait_until(lambda: d.daemon.channels["discord"].received >= 1)
    await trio.sleep(0.1)
    msgs = await stored(d, f"discord:{CHAN}")
    assert [(m.text, m.sender, m.sender_id, m.mentions_bot) for m in msgs] == [("the raid starts at 9", "Bob", "931", False)]

    trigger = fake_dc.user_message(CHAN, f"<@{BOT_ID}> when is the raid?")
    sent = await wait_until(lambda: fake_dc.sent)
    await trio.sleep(0.3)
    assert len(fake_dc.sent) == 1
    assert sent[0]["reply_to"] == int(trigger["id"])  # references the trigger
    assert sent[0]["content"] == "Echo: @Andy when is the raid?"
    assert "the raid starts at 9" in d.launcher.prompts[-1][2]
    await wait_until(lambda: d.daemon.outbox.delivered == 1)  # the reply is stored before this counts
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
    await wait_until(lambda: fake_dc.sent)
    await trio.sleep(0.3)
    assert [m.text for m in await stored(d, f"discord:{CHAN}") if not m.from_bot] == ["only once"]
    assert [s["content"] for s in fake_dc.sent] == ["Echo: only once"]


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
    await trio.sleep(0.5)
    texts = [m.text for m in await stored(d, f"discord:{CHAN}") if not m.from_bot]
    assert texts == ["before", "during outage 0", "during outage 1", "during outage 2", "while the session died", "after"]
    replies = [s["content"] for s in fake_dc.sent]
    assert sorted(replies) == sorted(f"Echo: {t}" for t in texts)  # each answered exactly once


async def test_failed_send_is_retried_and_delivered_once(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    d = await start(run_daemon, fake_dc)
    await d.daemon.registry.add(Group(chat=f"discord:{DM}", folder="alice"))
    fake_dc.fail_next("POST /channels/messages", 503)  # (502/504 discord.py retries itself, then gives up)
    fake_dc.user_message(DM, "hello")
    await wait_until(lambda: fake_dc.sent, timeout=20)
    await trio.sleep(0.3)
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
