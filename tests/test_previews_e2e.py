"""Live previews end to end: the real daemon, the real agent image and Claude Code CLI, the fake
model streaming slowly; the local chat's event stream shows the reply growing, then the stored
reply once. And a daemon killed with -9 mid-preview answers once, in full, after its restart."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import make_config
from tests.fakes.anthropic import FakeAnthropic, slow_reply
from tests.test_e2e_docker import REAL_KEY, Live, _spawn_daemon, _wait_healthy

pytestmark = [pytest.mark.docker, pytest.mark.slow]

STORY = " ".join(f"Line {i} of a story that takes a while to tell." for i in range(1, 9))


async def read_events(http: httpx.AsyncClient, chat: str, after: int, out: list[tuple[float, str, Any]],
                      opened: trio.Event, until: int = 1) -> None:
    """Collect the chat's server-sent events as (time, event, data) until ``until`` bot messages came."""
    bots = 0
    async with http.stream("GET", f"/api/chats/{chat}/events", params={"after": after},
                           timeout=httpx.Timeout(30, read=60)) as resp:
        assert resp.status_code == 200
        event, data = "message", ""
        async for line in resp.aiter_lines():
            opened.set()
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = line.split(":", 1)[1].strip()
            elif line == "" and data:
                payload = json.loads(data)
                out.append((trio.current_time(), event, payload))
                if event == "message" and payload.get("from_bot"):
                    bots += 1
                    if bots >= until:
                        return
                event, data = "message", ""


@pytest.fixture
async def live_previews(tmp_path: Path, agent_image: str) -> AsyncIterator[Live]:
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        config = make_config(tmp_path, NGB_MODEL_UPSTREAM=fake.url, ANTHROPIC_API_KEY=REAL_KEY, NGB_IDLE_TIMEOUT="3",
                             NGB_INSTANCE=f"pv{os.getpid()}", NGB_PREVIEW_INTERVAL="0.5")
        from ngb.daemon import Daemon

        daemon = Daemon(config)
        await nursery.start(daemon.run)
        live = Live(daemon, fake)
        try:
            yield live
        finally:
            await live.http.aclose()
            nursery.cancel_scope.cancel()


async def _converse(live: Live, text: str) -> tuple[list[tuple[float, str, Any]], dict[str, Any]]:
    events: list[tuple[float, str, Any]] = []
    opened = trio.Event()
    await live.post("main", "hi")  # a first turn (the container is warm): the stream starts after it
    last = (await live.bot_replies("main", 1))[-1]["id"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_events, live.http, "main", last, events, opened)
        await opened.wait()
        await live.post("main", text)
    bot = await live.bot_replies("main", 2)
    return events, bot[-1]


async def test_a_slow_reply_grows_in_the_chat_and_is_stored_once(live_previews: Live) -> None:
    live = live_previews
    live.fake.script(slow_reply(STORY, delay=0.12, chunk=8, match="tell me"))
    events, reply = await _converse(live, "tell me a story")
    previews = [(t, d) for t, e, d in events if e == "preview"]
    bots = [d for _, e, d in events if e == "message" and d["from_bot"]]
    assert reply["text"] == STORY and [b["text"] for b in bots] == [STORY]  # stored once, as the model wrote it
    assert len(previews) >= 4, previews  # it grew: the stream took ~5 s, an edit at most every 0.5 s
    assert len({d["id"] for _, d in previews}) == 1  # one message, edited
    texts = [d["text"] for _, d in previews]
    assert all(STORY.startswith(t.strip()) for t in texts) and texts == sorted(texts, key=len)
    gaps = [b[0] - a[0] for a, b in zip(previews, previews[1:], strict=False)]
    assert min(gaps) > 0.4, gaps  # throttled to preview_interval (0.5 s; the stream may bunch a little)
    assert previews[-1][0] <= [t for t, e, d in events if e == "message" and d["from_bot"]][0]
    assert len(await live.bot_replies("main", 2)) == 2  # the first turn's and this one: no extra


async def test_a_group_with_previews_off_gets_only_the_reply(live_previews: Live) -> None:
    live = live_previews
    r = await live.http.patch("/api/groups/local:main", json={"previews": False})
    assert r.status_code == 200 and r.json()["previews"] is False
    live.fake.script(slow_reply(STORY, delay=0.05, chunk=16, match="tell me"))
    events, reply = await _converse(live, "tell me a story")
    assert reply["text"] == STORY
    assert [e for _, e, _ in events if e == "preview"] == []


async def test_kill_9_during_a_preview_then_restart_answers_once_in_full(tmp_path: Path, agent_image: str) -> None:
    import docker

    client = docker.from_env()
    instance = f"pvk{os.getpid()}"
    state, log = tmp_path / "state", tmp_path / "daemon.log"
    from tests.conftest import free_port

    port = free_port()
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        fake.script(slow_reply(STORY, delay=0.3, chunk=6, match="tell me"))  # ~12 s: killed half-way
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            proc = _spawn_daemon(state, port, fake.url, instance, log)
            try:
                await _wait_healthy(http, proc, state)
                events: list[tuple[float, str, Any]] = []
                opened = trio.Event()
                async with trio.open_nursery() as watch:
                    watch.start_soon(read_events, http, "main", 0, events, opened)
                    await opened.wait()
                    await http.post("/api/chats/main/messages", json={"sender": "a", "text": "tell me a story"})
                    with trio.fail_after(90):
                        while sum(1 for _, e, _ in events if e == "preview") < 2:
                            await trio.sleep(0.05)
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    watch.cancel_scope.cancel()
                partial = [d["text"] for _, e, d in events if e == "preview"][-1]
                assert len(partial) < len(STORY)  # it was killed mid-answer
                proc = _spawn_daemon(state, port, fake.url, instance, log)
                http.headers.clear()
                await _wait_healthy(http, proc, state)
                # the retried turn: answered by the default echo this time (the script was used up)
                with trio.fail_after(120):
                    while True:
                        msgs = (await http.get("/api/chats/main/messages", params={"after": 0})).json()
                        if any(m["from_bot"] for m in msgs):
                            break
                        await trio.sleep(0.2)
                await trio.sleep(4)  # time enough for a duplicate to show up, if there were one
                msgs = (await http.get("/api/chats/main/messages", params={"after": 0})).json()
                bot = [m for m in msgs if m["from_bot"]]
                assert len(bot) == 1, bot  # one complete answer; the partial preview was never stored
                assert "tell me a story" in bot[0]["text"]
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except Exception:  # noqa: BLE001
                    proc.kill()
                for c in client.containers.list(all=True, filters={"label": f"ngb.instance={instance}"}):
                    c.remove(force=True)
        nursery.cancel_scope.cancel()


async def test_a_telegram_reply_grows_by_throttled_edits_of_one_message(tmp_path: Path, agent_image: str) -> None:
    from ngb.daemon import Daemon
    from ngb.records import Group
    from tests.fakes.telegram import FakeTelegram

    token, group = "123456:TEST-token", -100778
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        tg = await FakeTelegram.start(nursery, token=token)
        config = make_config(tmp_path, NGB_MODEL_UPSTREAM=fake.url, ANTHROPIC_API_KEY=REAL_KEY, NGB_IDLE_TIMEOUT="3",
                             NGB_INSTANCE=f"pvt{os.getpid()}", NGB_PREVIEW_INTERVAL="1.0", NGB_TELEGRAM_TOKEN=token,
                             NGB_CHANNELS=json.dumps({"telegram": {"base_url": tg.base_url, "poll_timeout": 2}}))
        daemon = Daemon(config)
        await nursery.start(daemon.run)
        await daemon.registry.add(Group(chat=f"telegram:{group}", folder="tgprev"))
        fake.script(slow_reply(STORY, delay=0.1, chunk=6, match="tell me"))  # ~6 s of writing
        trigger = tg.user_message(group, "@andy_bot tell me a story")
        seen: list[tuple[float, int]] = []  # (when, number of edits so far)
        with trio.fail_after(120):
            while daemon.outbox.delivered < 1:
                if not seen or seen[-1][1] != len(tg.edits):
                    seen.append((trio.current_time(), len(tg.edits)))
                await trio.sleep(0.02)
        ours = [s for s in tg.sent if s["message"]["chat"]["id"] == group]
        assert len(ours) == 1, ours  # one message: posted once, then edited, never a second answer
        message_id = ours[0]["message"]["message_id"]
        assert ours[0]["reply_to"] == trigger["message_id"]
        versions = tg.versions(group, message_id)
        assert len(versions) >= 4, versions  # it grew
        assert all(STORY.startswith(v.rstrip("…").strip()) for v in versions[:-1])
        stored = [m for m in await daemon.store.messages_after(f"telegram:{group}", 0, 50) if m.from_bot]
        assert [m.text for m in stored] == [STORY] and versions[-1] == STORY  # the final edit is the stored reply
        assert stored[0].platform_id is not None and stored[0].platform_id.endswith(f":{message_id}")
        preview_edits = [t for t, n in seen if n > 0][:-1]  # the growing edits (the last one: the final)
        gaps = [b - a for a, b in zip(preview_edits, preview_edits[1:], strict=False)]
        assert gaps and min(gaps) > 0.9, gaps  # at most one edit a second (preview_interval)
        nursery.cancel_scope.cancel()
