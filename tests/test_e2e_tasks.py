"""Scheduled tasks end to end: the real agent image and CLI against the fake model, and the real
daemon process killed with SIGKILL around a task run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import timedelta
from pathlib import Path

import docker
import httpx
import pytest
import trio

from ngb.records import ScheduleKind, Task, utcnow
from ngb.store import Store
from tests import test_e2e_docker as e2e
from tests.conftest import free_port
from tests.fakes.anthropic import FakeAnthropic
from tests.test_e2e_docker import Live, _spawn_daemon, _wait_healthy

live = e2e.live  # the fixture: the real daemon in-process, the real container, the fake model

pytestmark = [pytest.mark.docker, pytest.mark.slow]


async def test_agent_schedules_a_once_task_that_fires_and_replies_in_the_chat(live: Live) -> None:
    at = (utcnow() + timedelta(seconds=20)).replace(microsecond=0, tzinfo=None).isoformat()
    args = {"prompt": "say the stand-up is now", "schedule_type": "once", "schedule_value": at, "timezone": "UTC"}
    await live.post("main", f"[[tool:mcp__ngb__schedule_task {json.dumps(args)}]]")
    bot = await live.bot_replies("main", 1)
    assert "Done" in bot[0]["text"]
    (task,) = await live.daemon.store.tasks("main")
    assert task.schedule_kind is ScheduleKind.ONCE
    bot = await live.bot_replies("main", 2, timeout=90)
    assert "say the stand-up is now" in bot[1]["text"]
    with trio.fail_after(30):  # the reply is delivered as it is written; the run is closed at the turn's end
        while [r["outcome"] for r in await live.daemon.store.task_run_rows(task.id)] == ["running"]:
            await trio.sleep(0.05)
    runs = await live.daemon.store.task_run_rows(task.id)
    assert [r["outcome"] for r in runs] == ["ok"]
    assert (await live.daemon.store.task(task.id)).status.value == "completed"
    r = await live.http.get("/api/chats/main/messages", params={"after": 0})
    assert [m["text"] for m in r.json() if m["from_bot"]] == [b["text"] for b in bot]


async def test_pre_scripts_in_the_real_container(live: Live) -> None:
    store = live.daemon.store
    now = utcnow()
    scripts = {
        "quiet": 'echo \'{"wakeAgent": false}\'',
        "broken": "echo nope; exit 3",
        "loud": "echo \"{\\\"wakeAgent\\\": true, \\\"data\\\": \\\"$(id -u):$(pwd)\\\"}\"",
    }
    for name, script in scripts.items():
        await store.add_task(
            Task(id=name, folder="main", chat="local:main", prompt=f"report {name}", schedule_kind=ScheduleKind.ONCE,
                 schedule_value="x", next_run=now, pre_script=script)
        )
    live.daemon.scheduler.poke()
    bot = await live.bot_replies("main", 1, timeout=90)
    assert "report loud" in bot[0]["text"]
    with trio.fail_after(30):
        while True:
            outcomes = {n: [r["outcome"] for r in await store.task_run_rows(n)] for n in scripts}
            if all(o and o[0] not in ("queued", "running") for o in outcomes.values()):
                break
            await trio.sleep(0.2)
    assert outcomes == {"quiet": ["skipped"], "broken": ["error"], "loud": ["ok"]}
    assert "status 3" in (await store.task_run_rows("broken"))[0]["error"]
    prompts = " ".join(r.last_user_text() for r in live.fake.agent_requests)
    assert "report quiet" not in prompts and "report broken" not in prompts
    assert "1000:/workspace/group" in prompts  # the script ran in the sandbox, its data reached the agent


async def test_kill_9_around_task_runs_each_slot_runs_at_most_once(tmp_path: Path, agent_image: str) -> None:
    client = docker.from_env()
    instance = f"tkill{os.getpid()}"
    state = tmp_path / "state"
    log = tmp_path / "daemon.log"
    port = free_port()

    async def add(task: Task) -> None:
        store = Store(state / "ngb.db")
        await store.open()
        try:
            await store.add_task(task)
        finally:
            await store.close()

    async def runs(task_id: str) -> list[dict]:
        store = Store(state / "ngb.db")
        await store.open()
        try:
            return await store.task_run_rows(task_id)
        finally:
            await store.close()

    def task(task_id: str, prompt: str, next_run, value: str = "1d") -> Task:
        return Task(id=task_id, folder="main", chat="local:main", prompt=prompt, schedule_kind=ScheduleKind.INTERVAL,
                    schedule_value=value, next_run=next_run)

    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            proc = _spawn_daemon(state, port, fake.url, instance, log)
            try:
                await _wait_healthy(http, proc, state)
                # 1. A run handed to the agent when the daemon dies is never run again.
                await add(task("slow", "slow task [[sleep:8]]", utcnow()))
                await http.post("/api/tasks/changed", json={})  # 404 until the lead wires the API: fine
                with trio.fail_after(90):
                    await fake.wait_for(lambda r: "slow task" in r.last_user_text())
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                # 2. A task that falls due while the daemon is down: recorded and run once after.
                await add(task("missed", "missed task", utcnow() - timedelta(hours=3), value="1h"))
                proc = _spawn_daemon(state, port, fake.url, instance, log)
                await _wait_healthy(http, proc, state)
                with trio.fail_after(120):
                    while True:
                        msgs = (await http.get("/api/chats/main/messages", params={"after": 0})).json()
                        if any("missed task" in m["text"] for m in msgs if m["from_bot"]):
                            break
                        await trio.sleep(0.2)
                await trio.sleep(4)  # time for a duplicate to show up, if there were one
                msgs = (await http.get("/api/chats/main/messages", params={"after": 0})).json()
                bot = [m["text"] for m in msgs if m["from_bot"]]
                assert sum("missed task" in t for t in bot) == 1, bot
                assert not any("slow task" in t for t in bot), bot
                assert sum("interrupted by a restart (slow)" in t for t in bot) == 1, bot  # told once
                slow_requests = [r for r in fake.agent_requests if "slow task" in r.last_user_text()]
                assert len(slow_requests) == 1, "the interrupted run was sent to the model again"
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                for c in client.containers.list(all=True, filters={"label": f"ngb.instance={instance}"}):
                    c.remove(force=True)
            assert proc.returncode == 0, log.read_text()[-3000:]
        slow = await runs("slow")
        missed = await runs("missed")
        assert [r["outcome"] for r in slow] == ["error"] and "interrupted" in slow[0]["error"]
        assert [r["outcome"] for r in missed] == ["ok"]
        nursery.cancel_scope.cancel()
