"""Threads end to end (docs/conversations.md): the real daemon, agent image and Claude Code CLI with
the fake model. In a per_thread group two threads of one chat keep separate agent sessions: the
second thread's model request does not carry the first one's words, and going back to the first
thread resumes its session (its words are there again). In a shared group they are one session."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import make_config
from tests.fakes.anthropic import FakeAnthropic
from tests.test_e2e_docker import REAL_KEY, Live

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
async def start(tmp_path: Path, agent_image: str) -> AsyncIterator[Any]:
    async with trio.open_nursery() as nursery:
        lives: list[Live] = []

        async def go(**env: str) -> Live:
            from ngb.daemon import Daemon

            fake = await FakeAnthropic.start(nursery)
            config = make_config(tmp_path, NGB_MODEL_UPSTREAM=fake.url, ANTHROPIC_API_KEY=REAL_KEY,
                                 NGB_IDLE_TIMEOUT="30", NGB_INSTANCE=f"th{os.getpid()}", **env)
            daemon = Daemon(config)
            await nursery.start(daemon.run)
            live = Live(daemon, fake)
            lives.append(live)
            return live

        try:
            yield go
        finally:
            for live in lives:
                await live.http.aclose()
            nursery.cancel_scope.cancel()


async def post(live: Live, text: str, thread: str) -> None:
    r = await live.http.post("/api/chats/main/messages", json={"sender": "ada", "text": text, "thread": thread})
    assert r.status_code == 202, r.text


def request_text(live: Live, marker: str) -> str:
    """The whole model request (every message the CLI sent) of the turn that answered ``marker``."""
    reqs = [r for r in live.fake.agent_requests if marker in r.last_user_text()]
    assert reqs, f"no model request for {marker!r}"
    return json.dumps(reqs[-1].json)


async def test_per_thread_sessions_do_not_share_words(start: Any) -> None:
    live = await start(NGB_THREADS="per_thread")
    await post(live, "the password is PELICAN-42", "planning")
    await live.bot_replies("main", 1)
    await post(live, "what did I tell you?", "party")
    await live.bot_replies("main", 2)
    assert "PELICAN-42" not in request_text(live, "what did I tell you?")  # another thread, another session
    await post(live, "and the password again?", "planning")
    bot = await live.bot_replies("main", 3)
    assert "PELICAN-42" in request_text(live, "and the password again?")  # its own session, resumed
    assert "what did I tell you?" not in request_text(live, "and the password again?")
    assert [b.get("thread") for b in bot] == ["planning", "party", "planning"]
    actor = (await live.http.get("/debug/actors/main")).json()
    assert set(actor["thread_sessions"]) == {"planning", "party"}


async def test_shared_threads_are_one_session(start: Any) -> None:
    live = await start()
    await post(live, "the password is PELICAN-42", "planning")
    await live.bot_replies("main", 1)
    await post(live, "what did I tell you?", "party")
    await live.bot_replies("main", 2)
    assert "PELICAN-42" in request_text(live, "what did I tell you?")
