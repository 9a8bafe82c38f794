"""kill -9 of the real daemon process at random points of a turn, with the real agent container and
the fake model; 20 seeded runs over one daemon state (each restart is the next run's daemon).

Points, one per run (seed % 5), each with a random delay drawn from the seed:
  stored     right after the message is stored (the API answered 202), before or while the actor wakes
  starting   while the agent container starts (the actor took a slot, the model was not asked yet)
  streaming  while the model streams its answer (a slowly streamed reply)
  committed  after the reply is committed to the outbox, before it is delivered (a thread polls the
             database and kills on sight of the pending row; a miss kills right after delivery)
  task       during a scheduled task's run (a `once` task created over the API)

After each restart: every triggered message has exactly one reply (checked again at the end, after a
settle time), no container of a killed daemon remains, no task is run twice (one run row per task,
the model saw its prompt at most once).

    NGB_KILL9_SEEDS=7,12 .venv/bin/python -m pytest tests/faults/test_kill9_random.py -s   # rerun seeds
    NGB_KILL9_RUNS=5 ...                                                                 # fewer runs
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import trio

from ngb.records import utcnow
from tests.fakes.anthropic import FakeAnthropic, text_reply
from tests.faults.daemon_process import DaemonProcess

pytestmark = [pytest.mark.docker, pytest.mark.slow]

POINTS = ("stored", "starting", "streaming", "committed", "task")


def _seeds() -> list[int]:
    chosen = os.environ.get("NGB_KILL9_SEEDS", "").strip()
    if chosen:
        return [int(s) for s in chosen.split(",") if s.strip()]
    return list(range(int(os.environ.get("NGB_KILL9_RUNS", "20"))))


def _kill_on_pending_outbox(db: Path, pid: int, tag: str, timeout: float) -> str:
    """Poll the outbox (read-only, WAL) and kill -9 the daemon the moment the reply to `tag` is
    committed but not yet delivered. Runs in a thread: the loop is tight, no event loop between."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        deadline = time.monotonic() + timeout
        like = f"%{tag}%"
        while time.monotonic() < deadline:
            try:
                row = conn.execute("SELECT state FROM outbox WHERE text LIKE ? ORDER BY id DESC LIMIT 1", (like,)).fetchone()
            except sqlite3.OperationalError:
                row = None
            if row is not None:
                os.kill(pid, signal.SIGKILL)
                return "pending" if row[0] == "pending" else f"missed ({row[0]})"
        os.kill(pid, signal.SIGKILL)
        return "timeout"
    finally:
        conn.close()


async def test_kill9_at_random_points_of_a_turn(tmp_path: Path, agent_image: str) -> None:
    seeds = _seeds()
    instance = f"k9r{os.getpid()}"
    report: list[str] = []
    tags: list[str] = []  # triggered messages: each must have exactly one reply
    task_tags: dict[str, str] = {}  # task id -> its tag
    t_start = time.monotonic()
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        daemon = DaemonProcess(tmp_path, fake.url, instance)
        try:
            await daemon.start()
            for seed in seeds:
                rng = random.Random(seed)
                point = POINTS[seed % len(POINTS)]
                tag = f"k9s{seed}x{rng.randrange(10**6)}"
                t0 = time.monotonic()
                observed = ""
                if point in ("stored", "starting"):
                    await daemon.wait_no_container()  # a cold start, so there is a start to hit
                if point == "stored":
                    delay = rng.uniform(0, 0.05)
                    await daemon.post("main", f"{tag} hello")
                    await trio.sleep(delay)
                    daemon.kill9()
                    observed = f"{delay * 1000:.0f} ms after 202"
                elif point == "starting":
                    delay = rng.uniform(0, 1.0)
                    await daemon.post("main", f"{tag} hello")
                    with trio.fail_after(30):
                        while (await daemon.actor()).get("state") not in ("starting", "running"):
                            await trio.sleep(0.01)
                    await trio.sleep(delay)
                    asked = any(tag in r.last_user_text() for r in fake.agent_requests)
                    daemon.kill9()
                    observed = f"{delay * 1000:.0f} ms after the slot; model asked: {asked}"
                elif point == "streaming":
                    delay = rng.uniform(0, 1.5)
                    fake.script(text_reply(f"Echo: {tag} streamed slowly, chunk by chunk", delay=0.08, chunk=3, match=tag))
                    await daemon.post("main", f"{tag} hello")
                    with trio.fail_after(60):
                        await fake.wait_for(lambda r, tag=tag: tag in r.last_user_text())
                    await trio.sleep(delay)
                    daemon.kill9()
                    observed = f"{delay * 1000:.0f} ms into the stream"
                elif point == "committed":
                    await daemon.post("main", f"{tag} hello")
                    observed = await trio.to_thread.run_sync(
                        _kill_on_pending_outbox, daemon.state / "ngb.db", daemon.pid, tag, 60.0
                    )
                    daemon.proc.wait()  # type: ignore[union-attr]
                    assert observed != "timeout", daemon.tail()
                    observed = f"outbox row {observed} at the kill"
                else:  # task
                    delay = rng.uniform(0.3, 4.5)
                    at = (utcnow() + timedelta(seconds=1)).replace(microsecond=0, tzinfo=None).isoformat()
                    r = await daemon.http.post(
                        "/api/tasks",
                        json={"group": "main", "prompt": f"{tag} task [[sleep:2]]", "schedule_kind": "once",
                              "schedule_value": at, "timezone": "UTC"},
                    )
                    assert r.status_code == 201, r.text
                    task_tags[r.json()["id"]] = tag
                    await trio.sleep(delay)
                    asked = any(tag in r.last_user_text() for r in fake.agent_requests)
                    daemon.kill9()
                    observed = f"{delay * 1000:.0f} ms after creation (due after 1 s); model asked: {asked}"
                left = {c.id for c in daemon.containers()}
                await daemon.start()
                # The restarted daemon serves first, then removes what the killed one left (then
                # starts its actors): gone within seconds, whatever point the kill hit.
                with trio.move_on_after(30):
                    while remaining := {c.id for c in daemon.containers()} & left:
                        await trio.sleep(0.1)
                assert not remaining, f"seed {seed}: containers of the killed daemon remain: {remaining}"
                if point == "task":
                    task_id = next(t for t, g in task_tags.items() if g == tag)
                    with trio.fail_after(60):
                        while True:
                            runs = (await daemon.http.get(f"/api/tasks/{task_id}/runs")).json()
                            runs = runs.get("runs", runs) if isinstance(runs, dict) else runs
                            if runs and all(x["outcome"] not in ("queued", "running") for x in runs):
                                break
                            await trio.sleep(0.1)
                    outcome = ",".join(x["outcome"] for x in runs)
                    observed += f"; run: {outcome}"
                else:
                    tags.append(tag)
                    texts = await daemon.wait_bot(lambda t, tag=tag: tag in t)
                    n = sum(tag in t for t in texts)
                    assert n == 1, f"seed {seed} ({point}): {n} replies to {tag}: {texts}"
                line = f"seed {seed:>3} {point:<10} {observed}; {time.monotonic() - t0:.1f} s"
                print(line, flush=True)
                report.append(line)
            # Settle, then the whole history: one reply per triggered message, no task run twice.
            await trio.sleep(3)
            texts = await daemon.bot_texts()
            counts = {tag: sum(tag in t for t in texts) for tag in tags}
            assert all(n == 1 for n in counts.values()), counts
            prompts = Counter(tag for r in fake.agent_requests for tag in task_tags.values() if tag in r.last_user_text())
            for task_id, tag in task_tags.items():
                runs = (await daemon.http.get(f"/api/tasks/{task_id}/runs")).json()
                runs = runs.get("runs", runs) if isinstance(runs, dict) else runs
                assert len(runs) == 1, (task_id, runs)
                assert prompts[tag] <= 1, f"task {task_id} was sent to the model {prompts[tag]} times"
                assert sum(tag in t for t in texts) <= 1, texts
            assert daemon.stop() == 0, daemon.tail()
            assert not daemon.containers(), "containers left after a clean stop"
        finally:
            await daemon.aclose()
            nursery.cancel_scope.cancel()
    print(f"{len(seeds)} kill -9 runs in {time.monotonic() - t_start:.0f} s")
