"""The daemon core with an in-process agent: routing, triggers, context, cursor, slots, restarts."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import trio

from ngb.agent_link import ExitInfo
from ngb.records import Group, InboundMessage
from ngb.store import Store
from ngb.triggers import RateLimiter, starts_with_trigger
from tests.fakes.agent import FakeBehaviour, last_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@Andy hello", True),
        ("@andy hello", True),
        ("  @ANDY, what's up", True),
        ("@Andy", True),
        ("@Andy: hi", True),
        ("@Andyx hello", False),
        ("hello @Andy", False),
        ("Andy hello", False),
        ("", False),
    ],
)
def test_trigger_word_at_start_case_insensitive_on_word_boundary(text: str, expected: bool) -> None:
    assert starts_with_trigger(text, "@Andy") is expected


def test_rate_limiter_sliding_window() -> None:
    now = [0.0]
    limiter = RateLimiter(3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")
    now[0] = 61
    assert limiter.allow("a")


async def test_main_chat_answers_without_setup(run_daemon) -> None:
    d = await run_daemon()
    await d.post("main", "hello there")
    bot = await d.wait_bot_replies("main", 1)
    assert bot[0]["text"] == "Echo: hello there"
    assert bot[0]["sender"] == "Andy"
    history = await d.history("main")
    assert [m["from_bot"] for m in history] == [False, True]
    assert set(history[0]) == {"id", "sender", "text", "time", "from_bot", "attachments"}
    assert history[0]["attachments"] == []


async def test_group_needs_trigger_and_gets_context_since_last_answer(run_daemon) -> None:
    d = await run_daemon()
    await d.daemon.registry.add(Group(chat="local:family", folder="family"))
    await d.post("family", "first, no trigger", sender="bob")
    await d.post("family", "second, no trigger", sender="carol")
    await trio.sleep(0.3)
    assert d.launcher.started == 0, "untriggered messages must not start the agent"
    await d.post("family", "@Andy summarize please", sender="bob")
    await d.wait_bot_replies("family", 1)
    prompt = d.launcher.prompts[-1][2]
    assert "first, no trigger" in prompt and "second, no trigger" in prompt and "summarize please" in prompt
    assert 'sender="carol"' in prompt
    # The next turn sees only what came after the answer.
    await d.post("family", "@Andy and now?", sender="bob")
    await d.wait_bot_replies("family", 2)
    prompt = d.launcher.prompts[-1][2]
    assert "first, no trigger" not in prompt and "and now?" in prompt


async def test_unregistered_chat_is_stored_not_answered(run_daemon) -> None:
    d = await run_daemon()
    await d.post("stranger", "@Andy anyone?")
    # A message to a registered chat, posted after it, is answered: by then the stranger's message
    # was routed long ago (the API stores and routes before its 202).
    await d.post("main", "and here?")
    await d.wait_bot_replies("main", 1)
    history = await d.history("stranger")
    assert [m["text"] for m in history] == ["@Andy anyone?"]
    assert d.launcher.started == 1 and all("anyone?" not in p[2] for p in d.launcher.prompts)


async def test_follow_up_goes_into_the_running_container(run_daemon) -> None:
    d = await run_daemon(FakeBehaviour(delay=0.3), NGB_IDLE_TIMEOUT="2")
    await d.post("main", "one")
    await trio.sleep(0.1)
    await d.post("main", "two")
    bot = await d.wait_bot_replies("main", 2)
    assert d.launcher.started == 1
    assert [b["text"] for b in bot] == ["Echo: one", "Echo: two"]


async def test_idle_container_stops_and_session_resumes(run_daemon) -> None:
    d = await run_daemon(NGB_IDLE_TIMEOUT="0.2")
    await d.post("main", "one")
    await d.wait_bot_replies("main", 1)
    with trio.fail_after(5):
        while d.launcher.live:
            await trio.sleep(0.02)
    assert await d.daemon.store.session_id("main") == "sess-main-1"
    await d.post("main", "two")
    await d.wait_bot_replies("main", 2)
    assert d.launcher.started == 2
    assert await d.daemon.store.session_id("main") == "sess-main-1", "the second container resumed the session"


async def test_slot_cap_never_exceeded_and_no_group_starves(run_daemon) -> None:
    d = await run_daemon(FakeBehaviour(delay=0.15), NGB_MAX_CONTAINERS="5", NGB_IDLE_TIMEOUT="0.05")
    for i in range(10):
        await d.daemon.registry.add(Group(chat=f"local:g{i}", folder=f"g{i}", requires_trigger=False))
    for i in range(10):
        await d.post(f"g{i}", f"hi {i}")
    for i in range(10):
        bot = await d.wait_bot_replies(f"g{i}", 1, timeout=15)
        assert bot[0]["text"] == f"Echo: hi {i}"
    assert d.launcher.max_live <= 5
    assert d.launcher.max_live == 5, "the cap is used, not serialised"
    # Served in arrival order: the first five to ask are the first five to start.
    assert set(d.launcher.start_order[:5]) == {f"g{i}" for i in range(5)}


async def test_an_idle_container_gives_its_slot_to_a_waiting_turn(run_daemon) -> None:
    """Every slot taken, one container idle (its 5-minute idle timeout far off): a turn of another
    group waits no longer than it takes to end that container. And a busy container whose turn
    ends while another group waits ends at once instead of idling on its slot."""
    d = await run_daemon(FakeBehaviour(delay=0.3), NGB_MAX_CONTAINERS="1", NGB_IDLE_TIMEOUT="300")
    for name in ("a", "b", "c"):
        await d.daemon.registry.add(Group(chat=f"local:{name}", folder=name, requires_trigger=False))
    await d.post("a", "first")
    await d.wait_bot_replies("a", 1)
    assert d.launcher.live == 1  # a's container idles on the only slot
    with trio.fail_after(3):  # not 300 s: the idle container made room
        await d.post("b", "second")
        await d.wait_bot_replies("b", 1)
        await d.post("c", "third")  # b's container is idle now, c waits for its slot
        await d.wait_bot_replies("c", 1)
    assert d.launcher.start_order == ["a", "b", "c"] and d.launcher.max_live == 1
    # busy when the next one comes: it ends right after its answer, not after the idle timeout
    with trio.fail_after(3):
        await d.post("a", "fourth")  # c's idle container makes room; a is busy for 0.3 s
        await trio.sleep(0.1)
        await d.post("b", "fifth")  # waits while a works
        await d.wait_bot_replies("b", 2)
    assert d.launcher.start_order == ["a", "b", "c", "a", "b"] and d.launcher.max_live == 1


async def test_crashed_turn_is_retried_once_then_reported(run_daemon) -> None:
    attempts: list[str] = []

    def crash(prompt: str) -> bool:
        attempts.append(prompt)
        return "boom" in last_text(prompt)

    d = await run_daemon(FakeBehaviour(crash_on=crash))
    await d.post("main", "boom")
    bot = await d.wait_bot_replies("main", 1)
    assert "could not answer" in bot[0]["text"] and "exited with status 1" in bot[0]["text"]
    assert len(attempts) == 2, "retried once in a fresh container"
    assert d.launcher.started == 2
    # The group keeps working.
    await d.post("main", "fine now")
    bot = await d.wait_bot_replies("main", 2)
    assert bot[1]["text"] == "Echo: fine now"
    failed = await d.daemon.store.failed_turns("main")
    assert len(failed) == 1 and "exited with status 1" in failed[0]["reason"]


async def test_out_of_memory_turn_is_reported_without_a_retry(run_daemon) -> None:
    oom = ExitInfo(exit_code=137, oom_killed=True)
    d = await run_daemon(FakeBehaviour(crash_on=lambda prompt: "big" in last_text(prompt), crash_exit=oom))
    await d.post("main", "something big")
    bot = await d.wait_bot_replies("main", 1)
    assert bot[0]["text"] == "⚠️ Sorry, I could not answer: the agent ran out of memory."
    assert d.launcher.started == 1  # the same limit would kill a second container too
    await d.post("main", "small")
    bot = await d.wait_bot_replies("main", 2)
    assert bot[1]["text"] == "Echo: small"


async def test_supervisor_restarts_a_crashed_actor_and_keeps_its_messages(run_daemon) -> None:
    d = await run_daemon()
    calls = {"n": 0}
    original = d.launcher.session

    def flaky(group):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("bug in the launcher")
        return original(group)

    d.launcher.session = flaky  # type: ignore[method-assign]
    d.daemon.supervisor._backoff_base = 0.01
    await d.post("main", "survive this")
    bot = await d.wait_bot_replies("main", 1)
    assert bot[0]["text"] == "Echo: survive this"
    view = d.daemon.supervisor.actors["main"].view
    assert view.crash_count == 1 and "bug in the launcher" in (view.last_crash or "")
    r = await d.http.get("/debug/actors/main")
    assert r.json()["crash_count"] == 1


async def test_reply_committed_before_crash_is_delivered_once_and_not_rerun(run_daemon, tmp_path: Path) -> None:
    # Simulate a kill -9 after the reply and cursor were committed but before delivery.
    d = await run_daemon()
    await d.daemon.registry.add(Group(chat="local:ops", folder="ops", requires_trigger=False))
    store = d.daemon.store
    inbound = InboundMessage(chat="local:ops", sender="x", text="q", platform_id="p1")

    def store_and_commit(c):  # one transaction, as the actor would leave it just before a crash
        msg, _ = Store._ingest(c, inbound)
        c.execute(
            "INSERT INTO outbox (folder, chat, text, created_at) VALUES ('ops', 'local:ops', 'the answer', '2026-01-01')"
        )
        Store._advance(c, "ops", msg.id)
        return msg

    msg = await store.run(store_and_commit)
    assert await store.cursor("ops") == msg.id
    d.daemon.outbox.wake()
    bot = await d.wait_bot_replies("ops", 1)
    assert [b["text"] for b in bot] == ["the answer"]
    # The next message gets a turn of its own, and that turn sees only the new message.
    await d.post("ops", "next")
    bot = await d.wait_bot_replies("ops", 2)
    assert [b["text"] for b in bot] == ["the answer", "Echo: next"]
    assert d.launcher.started == 1, "a turn whose cursor moved is not run again"
    assert "next" in d.launcher.prompts[0][2] and ">q<" not in d.launcher.prompts[0][2]


async def test_restart_answers_what_was_left(tmp_path: Path, run_daemon) -> None:
    # First daemon stores a triggered message but dies before any turn (no agent available).
    d1 = await run_daemon(FakeBehaviour(fail_start=True), state=tmp_path)
    d1.daemon.supervisor.draining = True  # stop it from retrying
    d1.daemon.router.accepting = True
    await d1.daemon.router.handle(InboundMessage(chat="local:main", sender="a", text="still there?", platform_id="x1"))
    await d1.http.aclose()
    # Second daemon on the same state (new port) answers it exactly once. (The first "dies": its
    # store closes and its state lock goes, as the kernel drops a dead process's lock.)
    await d1.daemon.store.close()
    d1.daemon.state_lock.release()
    d2 = await run_daemon(state=tmp_path)
    bot = await d2.wait_bot_replies("main", 1)
    assert bot[0]["text"] == "Echo: still there?"
    await d2.post("main", "and now?")  # answered after the first: a second answer would be before it
    bot = await d2.wait_bot_replies("main", 2)
    assert [b["text"] for b in bot] == ["Echo: still there?", "Echo: and now?"]


async def test_a_second_daemon_on_the_same_state_is_refused(tmp_path: Path, run_daemon) -> None:
    """Two daemons on one state would each run an actor per group and answer everything twice."""
    from ngb.daemon import Daemon, StateDirBusy
    from tests.conftest import make_config

    d1 = await run_daemon(state=tmp_path)
    second = Daemon(make_config(tmp_path))
    with pytest.raises(StateDirBusy, match=f"pid {os.getpid()}.* already runs on"):
        await second.run()
    await d1.post("main", "still one daemon")
    bot = await d1.wait_bot_replies("main", 1)
    assert [b["text"] for b in bot] == ["Echo: still one daemon"]


async def test_redelivered_platform_message_is_stored_and_answered_once(run_daemon) -> None:
    d = await run_daemon()
    msg = InboundMessage(chat="local:main", sender="a", text="once", platform_id="dup-1")
    first = await d.daemon.router.handle(msg)
    second = await d.daemon.router.handle(msg)
    assert first.id == second.id
    await d.wait_bot_replies("main", 1)
    await d.post("main", "after")  # its answer comes after any second answer to "once" would have
    await d.wait_bot_replies("main", 2)
    history = await d.history("main")
    assert [(m["text"], m["from_bot"]) for m in history] == [
        ("once", False), ("Echo: once", True), ("after", False), ("Echo: after", True)]


async def test_rate_limit_answers_once_and_keeps_the_messages(run_daemon) -> None:
    d = await run_daemon(NGB_SENDER_RATE_PER_MINUTE="2", NGB_IDLE_TIMEOUT="5")
    for i in range(5):
        await d.post("main", f"m{i}")
    await trio.sleep(0.5)
    texts = [m["text"] for m in await d.history("main")]
    assert sum(1 for t in texts if t.startswith("⏳ Slow down")) == 1
    assert all(f"m{i}" in texts for i in range(5)), "nothing stored is lost"


async def test_api_bad_input(run_daemon) -> None:
    d = await run_daemon()
    r = await d.http.post("/api/chats/main/messages", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    r = await d.http.post("/api/chats/main/messages", json={"sender": "a"})
    assert r.status_code == 400
    r = await d.http.post("/api/chats/main/messages", json={"sender": "a", "text": "x" * 70000})
    assert r.status_code == 413
    r = await d.http.post("/api/chats/main/messages", json={"sender": "a", "text": "y" * 20000})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = await d.http.post("/api/chats/..%2Fetc/messages", json={"sender": "a", "text": "x"})
    assert r.status_code in (400, 404)
    r = await d.http.get("/api/chats/never-seen/messages")
    assert r.status_code == 404
    r = await d.http.get("/api/chats/main/messages", params={"after": "-1"})
    assert r.status_code == 400
    assert [m for m in await d.history("main")] == [], "nothing stored half-way"


async def test_api_token_required_when_set(run_daemon) -> None:
    d = await run_daemon(NGB_API_TOKEN="s3cret-token-0123456")
    r = await d.http.get("/api/chats/main/messages")
    assert r.status_code == 401
    r = await d.http.get("/status")
    assert r.status_code == 401
    assert (await d.http.get("/healthz")).status_code == 200
    d.http.headers["Authorization"] = "Bearer s3cret-token-0123456"
    assert (await d.http.get("/api/chats/main/messages")).status_code == 200
    del d.http.headers["Authorization"]
    r = await d.http.post("/api/login", json={"token": "wrong"})
    assert r.status_code == 401
    r = await d.http.post("/api/login", json={"token": "s3cret-token-0123456"})
    assert r.status_code == 200 and "httponly" in r.headers["set-cookie"].lower()
    assert (await d.http.get("/api/chats/main/messages")).status_code == 200


async def test_status_metrics_and_actors(run_daemon) -> None:
    d = await run_daemon()
    await d.post("main", "hi")
    await d.wait_bot_replies("main", 1)
    status = (await d.http.get("/status")).json()
    assert status["containers"]["cap"] == 5 and status["channels"]["local"]["state"] == "connected"
    metrics = (await d.http.get("/metrics")).text
    assert re.search(r'ngb_messages_in_total\{channel="local"\} 1\.0', metrics)
    assert re.search(r'ngb_messages_out_total\{channel="local"\} 1\.0', metrics)
    actors = (await d.http.get("/debug/actors")).json()
    assert actors[0]["folder"] == "main" and "task_tree" in actors[0]


async def test_event_stream_pushes_replies(run_daemon) -> None:
    d = await run_daemon()
    got: list[str] = []
    async with trio.open_nursery() as nursery:

        async def listen() -> None:
            async with d.http.stream("GET", "/api/chats/main/events", params={"after": 0}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        got.append(line)
                        if len(got) == 2:
                            nursery.cancel_scope.cancel()

        nursery.start_soon(listen)
        await trio.sleep(0.2)
        await d.post("main", "stream me")
        with trio.fail_after(5):
            await trio.sleep_forever()
    assert '"from_bot": true' in got[1] and "Echo: stream me" in got[1]


async def test_terminal_client_talks_to_the_real_daemon(run_daemon) -> None:
    import io

    from ngb.chat_client import send_and_wait

    d = await run_daemon()
    out, err = io.StringIO(), io.StringIO()
    code = await send_and_wait(
        str(d.http.base_url).rstrip("/"), "main", "hi from the terminal", sender="me", token=d.token, wait=10, settle=0,
        stdout=out, stderr=err,
    )
    assert code == 0, err.getvalue()
    assert "Echo: hi from the terminal" in out.getvalue()


async def test_locked_database_is_waited_out_and_nothing_is_lost(run_daemon) -> None:
    import sqlite3
    import threading

    d = await run_daemon()
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        conn = sqlite3.connect(d.daemon.config.db_path, timeout=1)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(10)
        conn.rollback()
        conn.close()

    thread = threading.Thread(target=hold_lock)
    thread.start()
    await trio.to_thread.run_sync(locked.wait)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(d.post, "main", "written while locked")
        await trio.sleep(1.5)
        release.set()
    thread.join()
    bot = await d.wait_bot_replies("main", 1)
    assert bot[0]["text"] == "Echo: written while locked"


async def test_per_group_rate_limit_overrides_the_default(run_daemon) -> None:
    d = await run_daemon(NGB_SENDER_RATE_PER_MINUTE="100", NGB_IDLE_TIMEOUT="5")
    r = await d.http.post("/api/groups", json={"chat": "local:strict", "folder": "strict", "requires_trigger": False})
    assert r.status_code == 201, r.text
    r = await d.http.patch("/api/groups/local:strict", json={"sender_rate_per_minute": 1})
    assert r.status_code == 200, r.text
    assert r.json()["sender_rate_per_minute"] == 1
    r = await d.http.patch("/api/groups/local:strict", json={"sender_rate_per_minute": -3})
    assert r.status_code == 400
    for i in range(3):
        await d.post("strict", f"s{i}")
    await trio.sleep(0.5)
    texts = [m["text"] for m in await d.history("strict")]
    assert sum(1 for t in texts if t.startswith("⏳ Slow down")) == 1
    # The main chat keeps the daemon's default (100/min): no notice there.
    for i in range(3):
        await d.post("main", f"m{i}")
    await trio.sleep(0.5)
    assert not any(m["text"].startswith("⏳") for m in await d.history("main"))
    # The setting survives a reload from the store.
    stored = await d.daemon.store.group("local:strict")
    assert stored is not None and stored.sender_rate_per_minute == 1
