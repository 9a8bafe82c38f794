"""kill -9 of the real daemon process while 200 messages arrive over 10 s on a channel, then a
restart on the same state: every message is stored once and every triggered one answered once.
One run per channel, each against its fake on loopback (in this process) with the real agent
container and the fake model; the daemon is `python -m ngb run` (tests/faults/daemon_process.py).

Every message carries its number (``m017``); every 10th mentions the bot and carries ``ask017``.
The fake model answers a turn with every ``ask`` tag of its prompt, so "answered once" is counted
per triggered message in what the platform received. How each platform brings the messages of
the dead time back is the channel's own: Telegram's updates wait for the confirming offset, Slack
loses the events it could not deliver (``lose_events_while_disconnected``: only the history
catch-up finds them), Discord's new session gets nothing of the old one (REST catch-up), QQ's
implementation buffers nothing (history catch-up), WhatsApp's bridge buffers on disk, Matrix's
homeserver (a real Synapse here) keeps everything after the stored sync position.

Figures are printed per channel (run with -s to see them):

    .venv/bin/python -m pytest tests/faults/test_kill9_channels.py -s
    NGB_KILL9_CHANNELS=slack,telegram ...     # some channels only
    NGB_KILL9_AT=120 ...                      # kill after that many messages (default 80)
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests.fakes.anthropic import FakeAnthropic, last_user_text
from tests.faults.daemon_process import DaemonProcess

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TOTAL = 200
SPREAD = 10.0  # seconds over which they arrive
EVERY = 10  # every 10th message mentions the bot
KILL_AT = int(os.environ.get("NGB_KILL9_AT", "80"))
ASK = re.compile(r"ask\d{3}")
TAG = re.compile(r"\bm(\d{3})\b")


class AnsweringModel(FakeAnthropic):
    """The fake model; a turn whose prompt holds triggered messages answers every one of them."""

    def _default(self, body: dict) -> dict:
        tags = sorted(set(ASK.findall(last_user_text(body))))
        if tags:
            return {"kind": "text", "text": "Answered " + " ".join(tags)}
        return super()._default(body)


@attrs.define
class Platform:
    """One channel against its fake: the daemon's settings, how a user posts, what the bot sent."""

    name: str  # the channel's name (chat prefix)
    chat: str  # the group chat the messages go to
    env: dict[str, str]
    post: Callable[[int, str, bool], Any]  # (number, text, mentions the bot) -> awaitable or None
    answers: Callable[[], list[str]]  # texts the bot sent there


async def _maybe(value: Any) -> None:
    if hasattr(value, "__await__"):
        await value


@asynccontextmanager
async def telegram(tmp: Path) -> AsyncIterator[Platform]:
    from tests.fakes.telegram import FakeTelegram

    token, group = "123456:TEST-token", -100123
    async with FakeTelegram.serving(token=token) as fake:
        settings = {"base_url": fake.base_url, "poll_timeout": 2, "reconnect_base": "0.05", "reconnect_cap": "0.3"}

        def post(i: int, text: str, mention: bool) -> None:
            fake.user_message(group, f"@andy_bot {text}" if mention else text)

        yield Platform("telegram", f"telegram:{group}",
                       {"NGB_TELEGRAM_TOKEN": token, "NGB_CHANNELS": json.dumps({"telegram": settings})},
                       # what each message of the bot shows in the end (a live preview is edited into its reply)
                       post, lambda: [fake.versions(group, s["message"]["message_id"])[-1] for s in fake.sent])


@asynccontextmanager
async def slack(tmp: Path) -> AsyncIterator[Platform]:
    from tests.fakes.slack import FakeSlack

    bot, app, chan = "xoxb-1-TEST", "xapp-1-TEST", "C0123"
    async with trio.open_nursery() as nursery:
        fake = await FakeSlack.start(nursery, bot_token=bot, app_token=app)
        fake.lose_events_while_disconnected = True  # Slack gives up on an app it cannot reach
        fake.max_page = 15  # the 2025 limit for apps outside the Marketplace: the catch-up pages
        settings = {"base_url": fake.base_url, "ping_interval": "0.5", "reconnect_base": "0.05",
                    "reconnect_cap": "0.3", "connect_timeout": "5"}

        def post(i: int, text: str, mention: bool) -> None:
            fake.user_message(chan, f"<@UBOT> {text}" if mention else text)

        yield Platform("slack", f"slack:{chan}",
                       {"NGB_SLACK_BOT_TOKEN": bot, "NGB_SLACK_APP_TOKEN": app,
                        "NGB_CHANNELS": json.dumps({"slack": settings})},
                       post, lambda: [fake.versions(s["channel"], s["ts"])[-1] for s in fake.sent])
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def discord(tmp: Path) -> AsyncIterator[Platform]:
    from tests.fakes.discord import BOT_ID, FakeDiscord

    token, chan = "TEST.discord.token", 920000000000000001
    async with trio.open_nursery() as nursery:
        fake = await FakeDiscord.start(nursery, token=token, heartbeat_ms=300)
        settings = {"api_base": fake.api_base, "gateway_url": fake.gateway_url, "reconnect_base": "0.05",
                    "reconnect_cap": "0.3", "connect_timeout": "10"}

        def post(i: int, text: str, mention: bool) -> None:
            fake.user_message(chan, f"<@{BOT_ID}> {text}" if mention else text)

        yield Platform("discord", f"discord:{chan}",
                       {"NGB_DISCORD_TOKEN": token, "NGB_CHANNELS": json.dumps({"discord": settings})},
                       post, lambda: [fake.versions(s["channel_id"], int(s["message"]["id"]))[-1] for s in fake.sent])
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def qq(tmp: Path) -> AsyncIterator[Platform]:
    from tests.fakes.onebot import FakeOneBot, at, text

    token, self_id, group = "onebot-secret-token-1", 10000, 123456
    async with trio.open_nursery() as nursery:
        fake = await FakeOneBot.start(nursery, access_token=token, self_id=self_id, nickname="Andy",
                                      heartbeat_interval=0.2)
        settings = {"url": fake.url, "ping_interval": "1", "reconnect_base": "0.05", "reconnect_cap": "0.3",
                    "api_timeout": "3"}

        async def post(i: int, body: str, mention: bool) -> None:
            await fake.group_message(group, [at(self_id), text(" " + body)] if mention else [text(body)])

        yield Platform("qq", f"qq:group:{group}",
                       {"NGB_ONEBOT_ACCESS_TOKEN": token, "NGB_CHANNELS": json.dumps({"qq": settings})},
                       post, lambda: fake.texts_sent())
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def whatsapp(tmp: Path) -> AsyncIterator[Platform]:
    from tests.test_channel_whatsapp import BOT, GROUP, FakeWhatsApp

    fake = FakeWhatsApp(tmp / "fake-wa")
    env = {"NGB_WA_FAKE": "1", "NGB_WA_FAKE_DIR": str(fake.folder), "NGB_WA_FAKE_ME": f"{BOT}:7@s.whatsapp.net",
           "NGB_CHANNELS": json.dumps({"whatsapp": {"restart_base": "0.05", "restart_cap": "0.3",
                                                    "send_timeout": "5"}})}

    def post(i: int, text: str, mention: bool) -> None:
        fake.say(GROUP, text, mention_bot=mention)

    yield Platform("whatsapp", f"whatsapp:{GROUP}", env, post, lambda: [s["text"] for s in fake.sent])


@asynccontextmanager
async def matrix(tmp: Path) -> AsyncIterator[Platform]:
    """Not a fake: a Synapse of its own (tests/matrix_server.py), the person a matrix-nio client."""
    from ngb.aio_bridge import AsyncioBridge
    from tests.matrix_person import Person
    from tests.matrix_server import start_synapse

    server = await trio.to_thread.run_sync(start_synapse, tmp / "synapse")
    bridge = AsyncioBridge(name="matrix-person")
    try:
        async with bridge.attach(), trio.open_nursery() as nursery:
            bot = server.register("bot")
            alice = await Person(bridge, server.base_url, server.register("alice")).connect()
            room = await alice.create_room(bot.user_id, server.register("carol").user_id)  # three: mentions trigger
            name = bot.user_id.split(":")[0][1:]
            settings = {"homeserver": server.base_url, "invites_from": [alice.user.user_id], "sync_timeout": "1",
                        "timeline_limit": 5,  # the dead time's messages come back by paging /messages
                        "reconnect_base": "0.05", "reconnect_cap": "0.3"}

            async def post(i: int, text: str, mention: bool) -> None:
                while bot.user_id not in await alice.members(room):  # the bot joins at its first sync
                    await trio.sleep(0.05)
                extra = {"m.mentions": {"user_ids": [bot.user_id]}} if mention else {}
                await alice.say(room, f"{name}: {text}" if mention else text, **extra)

            async def follow() -> None:
                while True:
                    await alice.sync(timeout_ms=500)

            nursery.start_soon(follow)
            yield Platform("matrix", f"matrix:{room}",
                           {"NGB_MATRIX_ACCESS_TOKEN": bot.access_token, "NGB_CHANNELS": json.dumps({"matrix": settings})},
                           post, lambda: matrix_texts(alice.seen, bot.user_id))
            nursery.cancel_scope.cancel()
    finally:
        server.stop()


def matrix_texts(seen: list[Any], sender: str) -> list[str]:
    """The sender's messages as a person's client shows them: a live preview's m.replace edits are
    folded into the message they edit, not counted as messages of their own."""
    texts: dict[str, str] = {}
    for event in seen:
        source = event.source
        if source.get("sender") != sender or source.get("type") != "m.room.message":
            continue
        content = source.get("content") or {}
        relation = content.get("m.relates_to") or {}
        if relation.get("rel_type") == "m.replace":
            texts[str(relation.get("event_id"))] = str((content.get("m.new_content") or {}).get("body", ""))
        else:
            texts.setdefault(str(source.get("event_id")), str(content.get("body", "")))
    return list(texts.values())


PLATFORMS = {"telegram": telegram, "slack": slack, "discord": discord, "qq": qq, "whatsapp": whatsapp,
             "matrix": matrix}


def _chosen() -> list[str]:
    names = [n.strip() for n in os.environ.get("NGB_KILL9_CHANNELS", "").split(",") if n.strip()]
    return names or list(PLATFORMS)


def stored_tags(db: Path, chat: str) -> Counter[str]:
    """How many stored user messages of chat carry each message tag (read-only, beside the daemon)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT text FROM messages WHERE chat = ? AND from_bot = 0", (chat,)).fetchall()
    except sqlite3.OperationalError:
        rows = []
    finally:
        conn.close()
    return Counter(m.group(0) for (text,) in rows if (m := TAG.search(text)))


def answered(texts: list[str]) -> Counter[str]:
    return Counter(tag for t in texts for tag in ASK.findall(t))


async def channel_state(daemon: DaemonProcess, name: str) -> str:
    try:
        status = (await daemon.http.get("/status")).json()
    except Exception:  # noqa: BLE001 - restarting
        return ""
    return str((status.get("channels") or {}).get(name, {}).get("state", ""))


async def wait_connected(daemon: DaemonProcess, name: str, timeout: float = 60) -> None:
    with trio.fail_after(timeout):
        while await channel_state(daemon, name) != "connected":
            await trio.sleep(0.05)


@pytest.mark.parametrize("name", _chosen())
async def test_kill9_while_messages_arrive_stores_each_once_and_answers_each_trigger_once(
    tmp_path: Path, agent_image: str, name: str
) -> None:
    instance = f"k9c{name}{os.getpid()}"
    triggered = [f"ask{i:03d}" for i in range(TOTAL) if i % EVERY == EVERY - 1]
    async with trio.open_nursery() as nursery, PLATFORMS[name](tmp_path) as platform:
        model = await AnsweringModel.start(nursery)
        daemon = DaemonProcess(tmp_path, model.url, instance, NGB_IDLE_TIMEOUT="30", **platform.env)
        db = daemon.state / "ngb.db"
        try:
            await daemon.start()
            await wait_connected(daemon, name)
            r = await daemon.http.post("/api/groups", json={
                "chat": platform.chat, "folder": "flood", "sender_rate_per_minute": 0, "group_rate_per_minute": 0})
            assert r.status_code == 201, r.text

            killed = trio.Event()
            restarted_at: list[float] = []

            async def kill_and_restart() -> None:
                await killed.wait()
                daemon.kill9()
                killed_at = trio.current_time()
                await daemon.start()
                restarted_at.extend([killed_at, trio.current_time()])

            nursery.start_soon(kill_and_restart)
            t0 = trio.current_time()
            for i in range(TOTAL):
                await trio.sleep_until(t0 + SPREAD * i / TOTAL)
                mention = i % EVERY == EVERY - 1
                await _maybe(platform.post(i, f"m{i:03d} hello" + (f" ask{i:03d} what now?" if mention else ""), mention))
                if i + 1 == KILL_AT:
                    killed.set()
            sent_in = trio.current_time() - t0
            with trio.fail_after(60):
                while not restarted_at:
                    await trio.sleep(0.05)
            await wait_connected(daemon, name)

            # every message stored, every trigger answered (or the time is up: the figures say what is short)
            stored_at = answered_at = None
            with trio.move_on_after(60):
                while True:
                    tags = stored_tags(db, platform.chat)
                    if stored_at is None and len(tags) >= TOTAL:
                        stored_at = trio.current_time()
                    if answered_at is None and set(answered(platform.answers())) >= set(triggered):
                        answered_at = trio.current_time()
                    if stored_at and answered_at:
                        break
                    await trio.sleep(0.1)
            if stored_at and answered_at:
                # one more trigger, live: once it is answered, every earlier turn is done and delivered
                await _maybe(platform.post(TOTAL, "m999 hello ask999 last one", True))
                with trio.move_on_after(60):
                    while "ask999" not in answered(platform.answers()):
                        await trio.sleep(0.1)
            tags = stored_tags(db, platform.chat)
            answers = answered(platform.answers())
            tags.pop("m999", None)
            answers.pop("ask999", None)
            killed_at, restart = restarted_at
            last = t0 + sent_in
            figures = {
                "channel": name,
                "sent": TOTAL,
                "stored": len(tags),
                "duplicates": sum(n - 1 for n in tags.values()),
                "triggered": len(triggered),
                "answered": len(set(answers) & set(triggered)),
                "duplicate answers": sum(n - 1 for n in answers.values()),
                "arrival (s)": round(sent_in, 1),
                "killed after message": KILL_AT,
                "down (s)": round(restart - killed_at, 1),
                "all stored, s after the last message": round(stored_at - last, 1) if stored_at else None,
                "all answered, s after the last message": round(answered_at - last, 1) if answered_at else None,
            }
            print("\nkill -9 " + ", ".join(f"{k}: {v}" for k, v in figures.items()), flush=True)
            missing = sorted(f"m{i:03d}" for i in range(TOTAL) if f"m{i:03d}" not in tags)
            assert not missing, f"{name}: {len(missing)} message(s) never stored: {missing[:20]}"
            assert figures["duplicates"] == 0, {t: n for t, n in tags.items() if n > 1}
            assert set(answers) == set(triggered), f"{name}: unanswered: {sorted(set(triggered) - set(answers))}"
            assert figures["duplicate answers"] == 0, {t: n for t, n in answers.items() if n > 1}
        finally:
            await daemon.aclose()
            nursery.cancel_scope.cancel()
