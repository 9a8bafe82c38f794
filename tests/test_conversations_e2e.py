"""Conversations end to end (docs/conversations.md): the real daemon, the real agent container and
Claude Code CLI, the fake model writing slowly, the fake Telegram and Slack. A question in a
Telegram forum topic and one in a Slack thread each get their reply in place: in the topic /
thread, shown growing by edits of one message, whose last version is the stored reply; the
question wears 👀 while its turn runs and not after."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio

from ngb.daemon import Daemon
from ngb.records import Group
from tests.conftest import make_config
from tests.fakes.anthropic import FakeAnthropic, slow_reply
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.test_e2e_docker import REAL_KEY

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TG_TOKEN, FORUM = "123456:TEST-token", -100779
BOT, APP, CHAN = "xoxb-1-TEST", "xapp-1-TEST", "C0777"
ANSWER = " ".join(f"Step {i}: check the release notes and the changelog." for i in range(1, 8))


async def test_a_topic_and_a_thread_get_their_reply_in_place_growing(tmp_path: Path, agent_image: str) -> None:
    async with trio.open_nursery() as nursery:
        model = await FakeAnthropic.start(nursery)
        tg = await FakeTelegram.start(nursery, token=TG_TOKEN)
        slack = await FakeSlack.start(nursery, bot_token=BOT, app_token=APP)
        channels = {"telegram": {"base_url": tg.base_url, "poll_timeout": 2},
                    "slack": {"base_url": slack.base_url, "ping_interval": "0.5", "connect_timeout": "3"}}
        config = make_config(tmp_path, NGB_MODEL_UPSTREAM=model.url, ANTHROPIC_API_KEY=REAL_KEY, NGB_IDLE_TIMEOUT="5",
                             NGB_INSTANCE=f"conv{os.getpid()}", NGB_PREVIEW_INTERVAL="0.7",
                             NGB_TELEGRAM_TOKEN=TG_TOKEN, NGB_SLACK_BOT_TOKEN=BOT, NGB_SLACK_APP_TOKEN=APP,
                             NGB_CHANNELS=json.dumps(channels))
        daemon = Daemon(config)
        await nursery.start(daemon.run)
        await daemon.registry.add(Group(chat=f"telegram:{FORUM}", folder="forum"))
        await daemon.registry.add(Group(chat=f"slack:{CHAN}", folder="team"))
        with trio.fail_after(30):
            while any(daemon.channels[c].state != "connected" for c in ("telegram", "slack")):
                await trio.sleep(0.05)
        model.script(slow_reply(ANSWER, delay=0.1, chunk=8, match="release"),
                     slow_reply(ANSWER, delay=0.1, chunk=8, match="deploy"))

        # Telegram: a question in a forum topic
        topic = tg.create_topic(FORUM, "Release")
        question = tg.user_message(FORUM, "@andy_bot is the release ready?", thread_id=topic)
        acked = False
        with trio.fail_after(120):
            while daemon.outbox.delivered < 1:
                acked = acked or tg.bot_reactions.get((FORUM, question["message_id"])) == ["👀"]
                await trio.sleep(0.02)
        (sent,) = [s for s in tg.sent if s["message"]["chat"]["id"] == FORUM]
        assert (sent["topic"], sent["reply_to"]) == (topic, question["message_id"])  # in the topic, to the question
        versions = tg.versions(FORUM, sent["message"]["message_id"])
        assert len(versions) >= 3 and versions[-1] == ANSWER, versions  # it grew, then became the reply
        stored = [m for m in await daemon.store.messages_after(f"telegram:{FORUM}", 0, 50) if m.from_bot]
        assert [(m.text, m.thread) for m in stored] == [(ANSWER, str(topic))]
        assert acked  # 👀 while the turn ran
        with trio.fail_after(10):
            while (FORUM, question["message_id"]) in tg.bot_reactions:  # ... and off once answered
                await trio.sleep(0.02)

        # Slack: a question in a thread
        parent = slack.user_message(CHAN, "the deploy plan for Friday")
        slack.user_message(CHAN, "<@UBOT> is the deploy still on?", thread_ts=parent["ts"])
        with trio.fail_after(120):
            while daemon.outbox.delivered < 2:
                await trio.sleep(0.02)
        (posted,) = slack.sent
        assert posted["thread_ts"] == parent["ts"]  # in the thread
        versions = slack.versions(CHAN, posted["ts"])
        assert len(versions) >= 3 and versions[-1] == ANSWER, versions
        stored = [m for m in await daemon.store.messages_after(f"slack:{CHAN}", 0, 50) if m.from_bot]
        assert [(m.text, m.thread) for m in stored] == [(ANSWER, parent["ts"])]
        nursery.cancel_scope.cancel()
