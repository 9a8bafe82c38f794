"""Telegram end to end with the real daemon, the real agent container and the real Claude Code CLI,
against the fake Bot API and the fake Anthropic API."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio

from ngb.daemon import Daemon
from ngb.records import Group
from tests.conftest import make_config
from tests.fakes.anthropic import FakeAnthropic, text_reply
from tests.fakes.telegram import FakeTelegram

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TOKEN = "123456:TEST-token"
GROUP = -100777


async def test_telegram_group_through_the_real_container(tmp_path: Path, agent_image: str) -> None:
    async with trio.open_nursery() as nursery:
        anthropic = await FakeAnthropic.start(nursery)
        tg = await FakeTelegram.start(nursery, token=TOKEN)
        config = make_config(
            tmp_path,
            NGB_MODEL_UPSTREAM=anthropic.url,
            ANTHROPIC_API_KEY="sk-ant-test-key-0123456789",
            NGB_IDLE_TIMEOUT="3",
            NGB_INSTANCE=f"tg{os.getpid()}",
            NGB_CONTAINER_MEMORY="768m",
            NGB_TELEGRAM_TOKEN=TOKEN,
            NGB_CHANNELS=json.dumps({"telegram": {"base_url": tg.base_url, "poll_timeout": 2}}),
        )
        daemon = Daemon(config)
        await nursery.start(daemon.run)
        await daemon.registry.add(Group(chat=f"telegram:{GROUP}", folder="tgfamily"))

        def final(sent: dict) -> str:
            """What a message of the bot shows in the end (a preview is edited into the reply)."""
            return tg.versions(GROUP, sent["message"]["message_id"])[-1]

        # untriggered: stored, no reply; then a mention: exactly one threaded reply, with context
        tg.user_message(GROUP, "my favourite colour is teal")
        trigger = tg.user_message(GROUP, "@andy_bot hello there")
        with trio.fail_after(120):
            while daemon.outbox.delivered < 1:
                await trio.sleep(0.05)
        await trio.sleep(1)
        assert len(tg.sent) == 1  # (a live preview, edited into the reply: one message)
        assert tg.sent[0]["reply_to"] == trigger["message_id"]
        assert final(tg.sent[0]).startswith("Echo:") and "hello there" in final(tg.sent[0])
        prompts = [r.last_user_text() for r in anthropic.message_requests]
        assert any("my favourite colour is teal" in str(r.json) for r in anthropic.message_requests), prompts

        # a 10,000-character reply arrives split, in order
        long_text = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum dolor sit amet. " * 12 for i in range(30))
        assert len(long_text) > 10_000
        anthropic.script(text_reply(long_text, chunk=512))
        tg.user_message(GROUP, "@andy_bot write a lot")
        with trio.fail_after(120):
            while daemon.outbox.delivered < 2:
                await trio.sleep(0.1)
        texts = [final(p) for p in tg.sent[1:]]
        assert len(texts) >= 3 and all(len(t) <= 4096 for t in texts)
        assert " ".join(texts).split() == long_text.split()
        nursery.cancel_scope.cancel()
