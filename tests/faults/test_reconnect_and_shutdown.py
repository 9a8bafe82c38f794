"""A local chat client that disconnects and reconnects (SSE with ?after=ID): messages sent meanwhile
are delivered once, in order, none missed. SIGTERM's path (Daemon.shutdown) during 5 running turns
with the in-process fake agent: they finish within the grace period, or, when longer than the grace,
are handed back and answered exactly once after a restart."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio

from ngb.records import Group
from tests.fakes.agent import FakeBehaviour


async def read_events(http: httpx.AsyncClient, chat: str, after: int, want: int, seen: list[int],
                      texts: dict[int, str]) -> None:
    """Read the chat's event stream until `want` more messages have arrived, then hang up."""
    got = 0
    async with http.stream("GET", f"/api/chats/{chat}/events", params={"after": after}, timeout=None) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                m = json.loads(line[6:])
                seen.append(m["id"])
                texts[m["id"]] = m["text"]
                got += 1
                if got >= want:
                    return


@pytest.mark.slow
async def test_sse_client_reconnects_with_after_and_misses_nothing(run_daemon) -> None:
    d = await run_daemon(NGB_SENDER_RATE_PER_MINUTE="1000", NGB_GROUP_RATE_PER_MINUTE="1000")
    await d.daemon.registry.add(Group(chat="local:room", folder="room", requires_trigger=False))
    after = await d.post("main", "so that the room's ids do not start at 1")
    seen: list[int] = []
    texts: dict[int, str] = {}
    posted = 0
    for rnd in range(5):
        # 1. while disconnected: 3 messages, each answered by the agent
        for i in range(3):
            await d.post("room", f"round {rnd} offline {i}")
            posted += 1
        with trio.fail_after(10):  # answered (the agent may answer several messages at once)
            while not any(m["text"] == f"Echo: round {rnd} offline 2" for m in await d.history("room")):
                await trio.sleep(0.01)
        backlog = [m["id"] for m in await d.history("room", after=after)]
        # 2. reconnect with ?after=<last id seen>; stay connected while 2 more arrive live, then hang up
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_events, d.http, "room", after, len(backlog) + 2, seen, texts)
                await trio.sleep(0.1)
                await d.post("room", f"round {rnd} live")
                posted += 1
        after = seen[-1]
    all_ids = [m["id"] for m in await d.history("room", after=0)]
    assert seen == all_ids, "every stored message exactly once, in order"
    assert sum(1 for t in texts.values() if not t.startswith("Echo:")) == posted


async def _start_turns(d, n: int) -> list[str]:
    chats = []
    for i in range(n):
        await d.daemon.registry.add(Group(chat=f"local:t{i}", folder=f"t{i}", requires_trigger=False))
        chats.append(f"t{i}")
    for c in chats:
        await d.post(c, f"question for {c}")
    with trio.fail_after(10):
        while len(d.launcher.prompts) < n:  # all five turns are running in their containers
            await trio.sleep(0.01)
    return chats


@pytest.mark.slow
async def test_shutdown_during_five_turns_lets_them_finish(run_daemon) -> None:
    d = await run_daemon(FakeBehaviour(delay=1.5), NGB_SHUTDOWN_GRACE="5", NGB_MAX_CONTAINERS="5")
    chats = await _start_turns(d, 5)
    assert d.launcher.live == 5
    t0 = trio.current_time()
    root = d.daemon._root
    assert root is not None
    r_ok = await d.http.post("/api/chats/t0/messages", json={"sender": "a", "text": "before"})
    assert r_ok.status_code == 202
    async with trio.open_nursery() as nursery:
        nursery.start_soon(d.daemon.shutdown, root)
        await trio.sleep(0.05)
        # intake is stopped at once
        r = await d.http.post("/api/chats/t0/messages", json={"sender": "a", "text": "late"})
        assert r.status_code == 503
        with trio.fail_after(5 + 3):
            await d.daemon.stopped.wait()
    took = trio.current_time() - t0
    assert took < 5, f"shutdown took {took:.1f}s with a 5s grace"
    assert d.launcher.live == 0, "every container stopped"
    # the five turns finished: their replies are in the store (the daemon's store is closed; read the file)
    import sqlite3

    conn = sqlite3.connect(d.daemon.config.db_path)
    for c in chats:
        replies = conn.execute(
            "SELECT text FROM messages WHERE chat = ? AND from_bot = 1", (f"local:{c}",)
        ).fetchall()
        assert [r[0] for r in replies][:1] == [f"Echo: question for {c}"], (c, replies)
    conn.close()


@pytest.mark.slow
async def test_shutdown_past_the_grace_hands_turns_back(run_daemon, tmp_path: Path) -> None:
    d = await run_daemon(FakeBehaviour(delay=30), NGB_SHUTDOWN_GRACE="1", NGB_MAX_CONTAINERS="5")
    chats = await _start_turns(d, 5)
    t0 = trio.current_time()
    root = d.daemon._root
    async with trio.open_nursery() as nursery:
        nursery.start_soon(d.daemon.shutdown, root)
        with trio.fail_after(1 + 5):
            await d.daemon.stopped.wait()  # ended, and let go of the state dir
    took = trio.current_time() - t0
    assert took < 1 + 3, f"shutdown took {took:.1f}s with a 1s grace"
    assert d.launcher.live == 0
    # restart on the same state with a quick agent: each handed-back turn is answered exactly once
    d2 = await run_daemon(FakeBehaviour(), state=tmp_path)
    for c in chats:
        bot = await d2.wait_bot_replies(c, 1, timeout=10)
        assert [b["text"] for b in bot] == [f"Echo: question for {c}"]
    await trio.sleep(0.5)
    for c in chats:
        assert len([m for m in await d2.history(c) if m["from_bot"]]) == 1
