"""Threads (docs/conversations.md): a message's thread is stored and shown to the agent; in a
per_thread group each thread keeps its own agent session and cursor, in a shared one the chat has
one. The real daemon, store and router, with the fake launcher (tests/fakes/agent.py)."""

from __future__ import annotations

from typing import Any

import trio

from tests.conftest import Running


async def post(r: Running, text: str, thread: str = "") -> int:
    body: dict[str, Any] = {"sender": "alice", "text": text}
    if thread:
        body["thread"] = thread
    resp = await r.http.post("/api/chats/main/messages", json=body)
    assert resp.status_code == 202, resp.text
    return int(resp.json()["id"])


def prompts_with(r: Running, word: str) -> list[str]:
    return [p for _, _, p in r.launcher.prompts if word in p]


async def test_per_thread_keeps_one_session_per_thread(run_daemon: Any) -> None:
    r = await run_daemon(NGB_THREADS="per_thread")
    await post(r, "apple is the secret", "t1")
    await r.wait_bot_replies("main", 1)
    await post(r, "what is the secret?", "t2")
    await r.wait_bot_replies("main", 2)
    await post(r, "say the secret again", "t1")
    bot = await r.wait_bot_replies("main", 3)
    starts = r.launcher.starts
    assert len(starts) == 3  # a container per switch of thread
    first_session = "sess-main-1"
    assert starts[0]["session_id"] is None and starts[1]["session_id"] is None  # t2: a fresh session
    assert starts[2]["session_id"] == first_session  # back in t1: its own session resumed
    (t2_prompt,) = prompts_with(r, "what is the secret")
    assert "apple" not in t2_prompt and 'thread="t2"' in t2_prompt
    (t1_again,) = prompts_with(r, "say the secret again")
    assert "what is the secret" not in t1_again  # t2's message never reaches t1's session
    assert [b.get("thread") for b in bot] == ["t1", "t2", "t1"]  # each reply kept in its thread
    sessions = await r.daemon.store.thread_sessions("main")
    assert sessions == {"t1": first_session, "t2": "sess-main-2"}


async def test_shared_is_one_session_for_the_chat_and_replies_keep_their_thread(run_daemon: Any) -> None:
    r = await run_daemon()  # threads = shared (the default)
    await post(r, "apple is the secret", "t1")
    await r.wait_bot_replies("main", 1)
    await post(r, "what is the secret?", "t2")
    bot = await r.wait_bot_replies("main", 2)
    assert len(r.launcher.starts) == 1  # the follow-up went into the live session
    assert 'thread="t2"' in prompts_with(r, "what is the secret")[0]
    assert [b.get("thread") for b in bot] == ["t1", "t2"]
    assert await r.daemon.store.thread_sessions("main") == {}


async def test_threads_waiting_together_are_served_each_alone_and_all_answered(run_daemon: Any) -> None:
    r = await run_daemon(NGB_THREADS="per_thread")
    for text, thread in (("first in a", "a"), ("first in b", "b"), ("second in a", "a"), ("first in c", "c")):
        await post(r, text, thread)
    with trio.fail_after(10):
        while await r.daemon.store.waiting_threads("main", "local:main"):
            await trio.sleep(0.02)
    prompts = [p for _, _, p in r.launcher.prompts]
    for p in prompts:  # a prompt holds one thread's messages only
        assert len({t for t in ("a", "b", "c") if f'thread="{t}"' in p}) == 1, p
    assert sorted(m for p in prompts for m in ("first in a", "first in b", "second in a", "first in c") if m in p) == \
        sorted(["first in a", "first in b", "second in a", "first in c"])  # each handed over once
    replies = await r.wait_bot_replies("main", 3)
    assert {b.get("thread") for b in replies} == {"a", "b", "c"}


async def test_a_shared_group_turned_per_thread_does_not_answer_old_messages_again(run_daemon: Any) -> None:
    r = await run_daemon(NGB_IDLE_TIMEOUT="0.2")
    await post(r, "old one", "t1")
    await r.wait_bot_replies("main", 1)
    resp = await r.http.patch("/api/groups/local:main", json={"threads": "per_thread"})
    assert resp.status_code == 200 and resp.json()["threads"] == "per_thread"
    assert (await r.http.patch("/api/groups/local:main", json={"threads": "sideways"})).status_code == 400
    with trio.fail_after(5):  # the shared container ends (idle): the next one serves a thread
        while r.launcher.live:
            await trio.sleep(0.02)
    await post(r, "new one", "t1")
    await r.wait_bot_replies("main", 2)
    assert len(r.launcher.starts) == 2
    assert len(prompts_with(r, "old one")) == 1  # the new thread cursor starts at the group's
    assert r.launcher.starts[1]["session_id"] is None  # t1's own session, not the chat's


def test_groups_set_changes_threads_and_previews_offline(tmp_path: Any) -> None:
    from tests.test_cli import ngb

    assert ngb(tmp_path, "groups", "add", "local:team", "--folder", "team", "--threads", "per_thread").returncode == 0
    assert "threads=per_thread" in ngb(tmp_path, "groups", "list").stdout
    r = ngb(tmp_path, "groups", "set", "local:team", "--threads", "default", "--previews", "off")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "local:team: threads default, previews off (from the group's next container)"
    listed = ngb(tmp_path, "groups", "list").stdout
    assert "threads=" not in listed and "previews=off" in listed
    r = ngb(tmp_path, "groups", "set", "local:nobody", "--previews", "on")
    assert r.returncode == 1 and "no group for chat local:nobody" in r.stderr
    assert ngb(tmp_path, "groups", "set", "local:team").returncode == 2
