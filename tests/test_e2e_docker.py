"""End to end with the real agent image, the real Docker engine and the real Claude Code CLI,
against the local fake of the Anthropic API. These are the spine's acceptance tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ngb.daemon import Daemon
from ngb.records import Group
from tests.conftest import api_headers, free_port, make_config
from tests.fakes.anthropic import FakeAnthropic

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REAL_KEY = "sk-ant-test-REAL-KEY-must-never-leak-0123456789"
ROOT = Path(__file__).resolve().parent.parent


class Live:
    def __init__(self, daemon: Daemon, fake: FakeAnthropic) -> None:
        self.daemon = daemon
        self.fake = fake
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{daemon.config.web_port}", headers=api_headers(daemon.config), timeout=30
        )

    async def post(self, chat: str, text: str, sender: str = "alice") -> int:
        r = await self.http.post(f"/api/chats/{chat}/messages", json={"sender": sender, "text": text})
        assert r.status_code == 202, r.text
        return int(r.json()["id"])

    async def bot_replies(self, chat: str, count: int, timeout: float = 90) -> list[dict[str, Any]]:
        with trio.fail_after(timeout):
            while True:
                r = await self.http.get(f"/api/chats/{chat}/messages", params={"after": 0})
                bot = [m for m in r.json() if m["from_bot"]]
                if len(bot) >= count:
                    return bot
                await trio.sleep(0.1)


@pytest.fixture
async def live(tmp_path: Path, agent_image: str) -> AsyncIterator[Live]:
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        config = make_config(
            tmp_path,
            NGB_MODEL_UPSTREAM=fake.url,
            ANTHROPIC_API_KEY=REAL_KEY,
            NGB_IDLE_TIMEOUT="3",
            NGB_INSTANCE=f"test{os.getpid()}",
            NGB_CONTAINER_MEMORY="768m",
        )
        daemon = Daemon(config)
        await nursery.start(daemon.run)
        live = Live(daemon, fake)
        try:
            yield live
        finally:
            await live.http.aclose()
            nursery.cancel_scope.cancel()


def tool_results(fake: FakeAnthropic) -> list[str]:
    """The text of every tool_result the CLI sent back to the model."""
    out: list[str] = []
    for req in fake.message_requests:
        for message in (req.json or {}).get("messages", []):
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for block in content:
                if block.get("type") == "tool_result":
                    inner = block.get("content")
                    if isinstance(inner, list):
                        out.append(" ".join(str(b.get("text", "")) for b in inner if isinstance(b, dict)))
                    else:
                        out.append(str(inner))
    return out


async def test_message_in_reply_out_through_the_container(live: Live) -> None:
    await live.post("main", "hello from the test")
    bot = await live.bot_replies("main", 1)
    assert bot[0]["text"].startswith("Echo:") and "hello from the test" in bot[0]["text"]
    assert bot[0]["sender"] == "Andy"
    # The real key reached the upstream; the container only ever had a placeholder.
    keys = {r.header("x-api-key") for r in live.fake.message_requests}
    assert keys == {REAL_KEY}


async def test_follow_up_goes_into_the_same_container(live: Live) -> None:
    await live.post("main", "first [[sleep:3]]")
    with trio.fail_after(60):  # the first turn is running in its container
        await live.fake.wait_for(lambda r: "first" in r.last_user_text())
    await live.post("main", "second")
    with trio.fail_after(90):
        while True:
            bot = await live.bot_replies("main", 1)
            if any("second" in b["text"] for b in bot):
                break
            await trio.sleep(0.1)
    metrics = (await live.http.get("/metrics")).text
    assert 'ngb_container_starts_total{group="main"} 1.0' in metrics


async def test_agent_tool_schedules_a_task(live: Live) -> None:
    args = {"prompt": "remind me of the stand-up", "schedule_type": "cron", "schedule_value": "0 9 * * 1-5",
            "timezone": "Europe/Berlin"}
    await live.post("main", f"[[tool:mcp__ngb__schedule_task {json.dumps(args)}]]")
    bot = await live.bot_replies("main", 1)
    assert "Done" in bot[0]["text"]
    tasks = await live.daemon.store.tasks("main")
    assert len(tasks) == 1
    assert tasks[0].schedule_value == "0 9 * * 1-5" and tasks[0].timezone == "Europe/Berlin"
    assert tasks[0].prompt == "remind me of the stand-up"


async def test_agent_cannot_find_the_real_key_anywhere(live: Live) -> None:
    command = (
        "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; "
        "grep -rIl 'REAL-KEY' / --exclude-dir=proc --exclude-dir=sys 2>/dev/null; "
        "ls -la /run/ngb /workspace; echo PROBE-DONE"
    )
    await live.post("main", f"[[tool:Bash {json.dumps({'command': command})}]]")
    await live.bot_replies("main", 1)
    results = tool_results(live.fake)
    probe = [r for r in results if "PROBE-DONE" in r]
    assert probe, f"the Bash tool did not run: {results}"
    assert "ngb-placeholder-" in probe[0], "the probe saw the placeholder key, so it read the environment"
    assert "REAL-KEY" not in probe[0]
    # ... and not in the container's configuration either.
    import docker

    client = docker.from_env()
    for c in client.containers.list(all=True, filters={"label": f"ngb.instance={live.daemon.config.instance}"}):
        assert REAL_KEY not in json.dumps(c.attrs)


async def test_group_cannot_reach_another_groups_chat_or_files(live: Live) -> None:
    registry = live.daemon.registry
    await registry.add(Group(chat="local:alpha", folder="alpha", requires_trigger=False))
    await registry.add(Group(chat="local:beta", folder="beta", requires_trigger=False))
    secret = live.daemon.config.groups_dir / "beta" / "diary.txt"
    secret.write_text("beta-private-diary")
    await live.post("alpha", '[[tool:mcp__ngb__send_message {"text": "hi beta", "chat": "local:beta"}]]')
    await live.bot_replies("alpha", 1)
    results = tool_results(live.fake)
    assert any("only the main group may send to another chat" in r for r in results), results
    command = (
        "cat ../beta/diary.txt /workspace/../beta/diary.txt 2>&1; ls / /workspace 2>&1; "
        f"cat {secret} 2>&1; ln -s {secret} link.txt; cat link.txt 2>&1; echo ESCAPE-DONE"
    )
    await live.post("alpha", f"[[tool:Bash {json.dumps({'command': command})}]]")
    await live.bot_replies("alpha", 2)
    probe = [r for r in tool_results(live.fake) if "ESCAPE-DONE" in r]
    assert probe and "beta-private-diary" not in probe[0]
    r = await live.http.get("/api/chats/beta/messages", params={"after": 0})
    assert not any(m["text"] == "hi beta" for m in r.json())


async def test_killed_container_gives_an_error_and_the_next_message_works(live: Live) -> None:
    await live.post("main", "slow one [[sleep:30]]")
    with trio.fail_after(60):
        while not any(h.view.container_id for h in live.daemon.supervisor.actors.values()):
            await trio.sleep(0.1)
        await live.fake.wait_for(lambda r: "slow one" in r.last_user_text())
    import docker

    client = docker.from_env()
    for _attempt in range(2):  # the first failure is retried once in a fresh container
        with trio.fail_after(60):
            while True:
                running = client.containers.list(filters={"label": f"ngb.instance={live.daemon.config.instance}"})
                if running:
                    break
                await trio.sleep(0.1)
        await trio.sleep(2)
        running[0].kill()
    bot = await live.bot_replies("main", 1)
    assert "could not answer" in bot[0]["text"]
    await live.post("main", "are you back?")
    bot = await live.bot_replies("main", 2)
    assert "are you back?" in bot[1]["text"]


def _spawn_daemon(state: Path, port: int, upstream: str, instance: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        NGB_STATE_DIR=str(state),
        NGB_WEB_PORT=str(port),
        NGB_MODEL_UPSTREAM=upstream,
        ANTHROPIC_API_KEY=REAL_KEY,
        NGB_INSTANCE=instance,
        NGB_IDLE_TIMEOUT="2",
        NGB_MOUNT_ALLOWLIST=str(state.parent / "none.toml"),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "ngb", "run", "--no-build"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def _wait_healthy(http: httpx.AsyncClient, proc: subprocess.Popen[bytes], state: Path | None = None) -> None:
    """Wait for /healthz; with `state`, then sign `http` in with the token the daemon keeps there."""
    with trio.fail_after(30):
        while True:
            assert proc.poll() is None, "the daemon exited"
            try:
                if (await http.get("/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await trio.sleep(0.05)
    if state is not None:
        http.headers.update(api_headers(state))


async def test_kill_9_mid_turn_then_restart_answers_each_message_exactly_once(tmp_path: Path, agent_image: str) -> None:
    import docker

    client = docker.from_env()
    instance = f"kill{os.getpid()}"
    state = tmp_path / "state"
    log = tmp_path / "daemon.log"
    port = free_port()
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            proc = _spawn_daemon(state, port, fake.url, instance, log)
            try:
                await _wait_healthy(http, proc, state)
                ids = []
                for text in ("one [[sleep:4]]", "two"):
                    r = await http.post("/api/chats/main/messages", json={"sender": "a", "text": text})
                    ids.append(r.json()["id"])
                with trio.fail_after(60):
                    await fake.wait_for(lambda r: "one" in r.last_user_text())
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                orphans = client.containers.list(all=True, filters={"label": f"ngb.instance={instance}"})
                assert orphans, "the killed daemon left its container behind (this is what restart must clean)"
                proc = _spawn_daemon(state, port, fake.url, instance, log)
                await _wait_healthy(http, proc, state)
                with trio.fail_after(120):
                    while True:
                        msgs = (await http.get("/api/chats/main/messages", params={"after": 0})).json()
                        if any(m["from_bot"] for m in msgs):
                            break
                        await trio.sleep(0.2)
                await trio.sleep(4)  # time enough for a duplicate to show up, if there were one
                msgs = (await http.get("/api/chats/main/messages", params={"after": 0})).json()
                bot = [m for m in msgs if m["from_bot"]]
                # Both messages were in the one unanswered batch: it was run again, answered once.
                assert len(bot) == 1, f"expected exactly one reply, got {bot}"
                assert bot[0]["id"] > max(ids)
                last_prompt = fake.agent_requests[-1].last_user_text()
                assert "one" in last_prompt and "two" in last_prompt
                names = {c.name for c in client.containers.list(all=True, filters={"label": f"ngb.instance={instance}"})}
                assert not names & {o.name for o in orphans}, "orphans were removed at start"
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                for c in client.containers.list(all=True, filters={"label": f"ngb.instance={instance}"}):
                    c.remove(force=True)
            assert proc.returncode == 0, log.read_text()[-3000:]
        nursery.cancel_scope.cancel()


async def _live_daemon(tmp_path: Path, nursery: trio.Nursery, **env: str) -> Live:
    fake = await FakeAnthropic.start(nursery)
    config = make_config(
        tmp_path, NGB_MODEL_UPSTREAM=fake.url, ANTHROPIC_API_KEY=REAL_KEY, NGB_INSTANCE=f"t{os.getpid()}x", **env
    )
    daemon = Daemon(config)
    await nursery.start(daemon.run)
    return Live(daemon, fake)


async def test_out_of_memory_agent_gets_a_clear_error(tmp_path: Path, agent_image: str) -> None:
    async with trio.open_nursery() as nursery:
        live = await _live_daemon(tmp_path, nursery, NGB_CONTAINER_MEMORY="24m")
        await live.post("main", "hello")
        bot = await live.bot_replies("main", 1)
        assert "could not answer" in bot[0]["text"]
        assert "ran out of memory" in bot[0]["text"]
        failed = await live.daemon.store.failed_turns("main")
        assert len(failed) == 1
        # not retried: a fresh container of the same size would be killed again (and bill again)
        assert live.daemon.metrics.container_starts.labels("main")._value.get() == 1
        await live.http.aclose()
        nursery.cancel_scope.cancel()


async def test_hard_turn_timeout_gives_an_error_and_the_next_message_works(tmp_path: Path, agent_image: str) -> None:
    async with trio.open_nursery() as nursery:
        live = await _live_daemon(tmp_path, nursery, NGB_TURN_TIMEOUT="4", NGB_IDLE_TIMEOUT="2")
        await live.post("main", "hang [[sleep:60]]")
        bot = await live.bot_replies("main", 1, timeout=120)
        assert "took longer than 4s" in bot[0]["text"]
        await live.post("main", "quick one")
        bot = await live.bot_replies("main", 2)
        assert "quick one" in bot[1]["text"]
        await live.http.aclose()
        nursery.cancel_scope.cancel()


async def test_model_overloaded_becomes_a_clear_reply_and_the_next_message_works(live: Live) -> None:
    await live.post("main", "busy? [[status:529]]")
    bot = await live.bot_replies("main", 1, timeout=240)
    assert "could not answer" in bot[0]["text"]
    assert "529" in bot[0]["text"] or "verloaded" in bot[0]["text"]
    await live.post("main", "and now")
    bot = await live.bot_replies("main", 2)
    assert "and now" in bot[1]["text"]


async def test_sigterm_lets_the_running_turn_finish_and_exits_0(tmp_path: Path, agent_image: str) -> None:
    import docker

    instance = f"term{os.getpid()}"
    state = tmp_path / "state"
    log = tmp_path / "daemon.log"
    port = free_port()
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            proc = _spawn_daemon(state, port, fake.url, instance, log)
            await _wait_healthy(http, proc, state)
            await http.post("/api/chats/main/messages", json={"sender": "a", "text": "finish me [[sleep:3]]"})
            with trio.fail_after(60):
                await fake.wait_for(lambda r: "finish me" in r.last_user_text())
            started = trio.current_time()
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(40):
                while proc.poll() is None:
                    await trio.sleep(0.1)
            assert proc.returncode == 0, log.read_text()[-3000:]
            assert trio.current_time() - started < 30
        nursery.cancel_scope.cancel()
    from ngb.store import Store

    store = Store(state / "ngb.db")
    store.open_sync()
    replies = store.run_sync(lambda c: [r[0] for r in c.execute("SELECT text FROM messages WHERE from_bot = 1")])
    store.close_sync()
    assert len(replies) == 1 and "finish me" in replies[0], replies
    client = docker.from_env()
    assert not client.containers.list(all=True, filters={"label": f"ngb.instance={instance}"}), "containers stopped"
