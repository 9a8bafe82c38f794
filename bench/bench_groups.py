"""Many groups at once: 10 groups triggered together, a cap of 5 containers, real containers and the
fake model. Each figure is printed next to its goal.

    .venv/bin/python -m bench.bench_groups [--groups 10] [--cap 5] [--think 2]

- cap: live agent containers never exceed the cap, sampled every 20 ms from the engine (`docker ps`
  with this instance's label), from the daemon's own view (actors holding a container) and from its
  `ngb_live_containers` gauge;
- all answered: every group gets exactly one reply;
- fairness: container slots go to waiting groups in the order they started waiting (FIFO; the slots
  are a `trio.CapacityLimiter`); max and median slot wait.

The groups are triggered 20 ms apart (g0 first) so that the waiting order is well defined; the model
takes `--think` seconds per answer and containers stop after 1 s idle, so the second half waits for
the first half's slots.

Exit status 1 when a goal is missed or a figure could not be measured (bench/goals.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import goals  # noqa: E402
from bench.goals import Report, expect_status  # noqa: E402
from ngb.daemon import Daemon  # noqa: E402
from ngb.records import Group  # noqa: E402
from ngb.sandbox.image import ensure_image  # noqa: E402
from tests.conftest import api_headers, make_config  # noqa: E402
from tests.fakes.anthropic import FakeAnthropic  # noqa: E402

IMAGE = "nanogridbot-agent:latest"


async def run(groups: int, cap: int, think: float) -> int:
    ensure_image(IMAGE, progress=lambda s: None)
    report = Report()
    tmp = Path(tempfile.mkdtemp(prefix="ngb-bench-groups-"))
    instance = f"benchgroups{os.getpid()}"
    client = docker.from_env()
    engine_samples: list[int] = []
    daemon_samples: list[int] = []
    gauge_samples: list[int] = []  # the daemon's ngb_live_containers gauge (/metrics)
    acquired: list[tuple[str, float, float]] = []  # (folder, acquired at, waited)
    posted: dict[str, float] = {}
    answered: dict[str, float] = {}
    replies: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        config = make_config(tmp, NGB_MODEL_UPSTREAM=fake.url, ANTHROPIC_API_KEY="bench", NGB_IDLE_TIMEOUT="1",
                             NGB_INSTANCE=instance, NGB_MAX_CONTAINERS=str(cap),
                             NGB_SENDER_RATE_PER_MINUTE="1000", NGB_GROUP_RATE_PER_MINUTE="1000")
        daemon = Daemon(config)
        await nursery.start(daemon.run)
        original = daemon._actor_event

        def spy(folder: str, kind: str, data: dict[str, Any]) -> None:
            if kind == "slot_acquired":
                acquired.append((folder, time.perf_counter(), data["wait"]))
            original(folder, kind, data)

        daemon._actor_event = spy  # type: ignore[method-assign]
        names = [f"g{i}" for i in range(groups)]
        for name in names:
            await daemon.registry.add(Group(chat=f"local:{name}", folder=name, requires_trigger=False))
        done = trio.Event()

        async def sample() -> None:
            label = f"ngb.instance={instance}"
            while not done.is_set():
                n = await trio.to_thread.run_sync(lambda: len(client.containers.list(filters={"label": label})))
                engine_samples.append(n)
                await trio.sleep(0.02)

        async def sample_daemon() -> None:
            gauge = daemon.metrics.live_containers
            while not done.is_set():
                daemon_samples.append(sum(1 for h in daemon.supervisor.actors.values() if h.view.container_id))
                gauge_samples.append(int(gauge.collect()[0].samples[0].value))
                await trio.sleep(0.02)

        nursery.start_soon(sample)
        nursery.start_soon(sample_daemon)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{config.web_port}", headers=api_headers(config), timeout=60
        ) as http:
            t0 = time.perf_counter()
            for name in names:
                expect_status(await http.post(f"/api/chats/{name}/messages",
                                              json={"sender": "bench", "text": f"hi {name} [[sleep:{think}]]"}), 202)
                posted[name] = time.perf_counter()
                await trio.sleep(0.02)
            with trio.fail_after(300):
                while len(answered) < groups:
                    for name in names:
                        if name in answered:
                            continue
                        msgs = expect_status(await http.get(f"/api/chats/{name}/messages", params={"after": 0})).json()
                        bot = [m for m in msgs if m["from_bot"]]
                        if bot:
                            answered[name] = time.perf_counter()
                    await trio.sleep(0.05)
            total = time.perf_counter() - t0
            await trio.sleep(2)  # a duplicate would show up by now
            for name in names:
                msgs = expect_status(await http.get(f"/api/chats/{name}/messages", params={"after": 0})).json()
                replies[name] = sum(1 for m in msgs if m["from_bot"])
        done.set()
        nursery.cancel_scope.cancel()
    for c in client.containers.list(all=True, filters={"label": f"ngb.instance={instance}"}):
        c.remove(force=True)
    shutil.rmtree(tmp, ignore_errors=True)

    # Fairness: the order slots were taken vs the order the groups started waiting for one.
    first = {}
    for folder, at, waited in acquired:
        first.setdefault(folder, (at, waited))
    by_acquire = sorted(first, key=lambda f: first[f][0])
    by_wait_start = sorted(first, key=lambda f: first[f][0] - first[f][1])
    waiters = [f for f in by_acquire if first[f][1] > 0.05]
    fifo = by_acquire == by_wait_start
    waits = [first[f][1] for f in first]
    waited = [first[f][1] for f in waiters]
    latencies = [answered[n] - posted[n] for n in names if n in answered]

    print(f"NanoGridBot many-groups benchmark: {groups} groups at once, cap {cap}, model {think:g} s per answer, "
          f"{os.cpu_count()} cores\n")
    worst_engine, worst_daemon = max(engine_samples, default=0), max(daemon_samples, default=0)
    worst_gauge = max(gauge_samples, default=0)
    for name, samples, worst in (("live containers, max (docker ps)", engine_samples, worst_engine),
                                 ("live containers, max (daemon's view)", daemon_samples, worst_daemon),
                                 ("live containers, max (ngb_live_containers)", gauge_samples, worst_gauge)):
        if samples:
            report.figure(name, worst, "", cap, fmt=".0f")
        else:
            report.fail(name, "no samples taken")
    report.info("   (samples: engine / daemon)", f"{len(engine_samples)} / {len(daemon_samples)}")
    answered_once = sum(1 for n in names if replies.get(n) == 1)
    report.check("groups answered exactly once", answered_once == groups, f"{answered_once}/{groups}")
    report.check("slots taken in waiting order (FIFO)", fifo)
    report.info("   order", " ".join(by_acquire))
    report.info("groups that waited for a slot", f"{len(waiters)} (expected >= {max(0, groups - cap)})")
    report.figure("slot wait, median (all groups)", statistics.median(waits) * 1000, "ms", fmt=".0f")
    if waited:
        report.figure("slot wait, median (groups that waited)", statistics.median(waited) * 1000, "ms", fmt=".0f")
    report.figure("slot wait, max", max(waits) * 1000, "ms", fmt=".0f")
    report.figure("message -> reply, median", statistics.median(latencies) * 1000, "ms", fmt=".0f")
    direct = [answered[n] - posted[n] for n in names if n in answered and n not in waiters]
    if direct and waiters:
        report.figure("   groups that got a slot at once, median", statistics.median(direct) * 1000, "ms", fmt=".0f")
        report.figure("   groups that waited, median",
                      statistics.median([answered[n] - posted[n] for n in waiters]) * 1000, "ms", fmt=".0f")
    report.figure("message -> reply, max", max(latencies) * 1000, "ms", fmt=".0f")
    report.figure(f"all {groups} answered after", total * 1000, "ms", fmt=".0f")
    return report.exit_code()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--cap", type=int, default=5)
    parser.add_argument("--think", type=float, default=2.0)
    args = parser.parse_args()
    sys.exit(goals.run(lambda: trio.run(run, args.groups, args.cap, args.think)))
