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

from ngb.daemon import Daemon  # noqa: E402
from ngb.records import Group  # noqa: E402
from ngb.sandbox.image import ensure_image  # noqa: E402
from tests.conftest import make_config  # noqa: E402
from tests.fakes.anthropic import FakeAnthropic  # noqa: E402

IMAGE = "nanogridbot-agent:latest"


def line(name: str, value: str, goal: str = "", verdict: str = "") -> None:
    print(f"{name:<44} {value:>14}   {goal:<22} {verdict}")


async def run(groups: int, cap: int, think: float) -> int:
    ensure_image(IMAGE, progress=lambda s: None)
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
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.web_port}", timeout=60) as http:
            t0 = time.perf_counter()
            for name in names:
                r = await http.post(f"/api/chats/{name}/messages", json={"sender": "bench", "text": f"hi {name} [[sleep:{think}]]"})
                assert r.status_code == 202, r.text
                posted[name] = time.perf_counter()
                await trio.sleep(0.02)
            with trio.fail_after(300):
                while len(answered) < groups:
                    for name in names:
                        if name in answered:
                            continue
                        msgs = (await http.get(f"/api/chats/{name}/messages", params={"after": 0})).json()
                        bot = [m for m in msgs if m["from_bot"]]
                        if bot:
                            answered[name] = time.perf_counter()
                    await trio.sleep(0.05)
            total = time.perf_counter() - t0
            await trio.sleep(2)  # a duplicate would show up by now
            for name in names:
                msgs = (await http.get(f"/api/chats/{name}/messages", params={"after": 0})).json()
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
    ok_cap = worst_engine <= cap and worst_daemon <= cap and worst_gauge <= cap
    line("live containers, max (docker ps)", f"{worst_engine}", f"<= {cap}", "OK" if worst_engine <= cap else "MISS")
    line("live containers, max (daemon's view)", f"{worst_daemon}", f"<= {cap}", "OK" if worst_daemon <= cap else "MISS")
    line("live containers, max (ngb_live_containers)", f"{worst_gauge}", f"<= {cap}", "OK" if worst_gauge <= cap else "MISS")
    line("   (samples: engine / daemon)", f"{len(engine_samples)} / {len(daemon_samples)}")
    all_once = all(replies.get(n) == 1 for n in names)
    line("groups answered exactly once", f"{sum(1 for n in names if replies.get(n) == 1)}/{groups}", f"{groups}/{groups}",
         "OK" if all_once else "MISS")
    line("slots taken in waiting order (FIFO)", "yes" if fifo else "no", "yes", "OK" if fifo else "MISS")
    line("   order", " ".join(by_acquire))
    line("groups that waited for a slot", f"{len(waiters)}", f">= {max(0, groups - cap)}")
    line("slot wait, median (all groups)", f"{statistics.median(waits) * 1000:.0f} ms")
    line("slot wait, median (groups that waited)", f"{statistics.median(waited) * 1000:.0f} ms" if waited else "-")
    line("slot wait, max", f"{max(waits) * 1000:.0f} ms")
    line("message -> reply, median", f"{statistics.median(latencies) * 1000:.0f} ms")
    direct = [answered[n] - posted[n] for n in names if n in answered and n not in waiters]
    if direct and waiters:
        line("   groups that got a slot at once, median", f"{statistics.median(direct) * 1000:.0f} ms")
        line("   groups that waited, median", f"{statistics.median([answered[n] - posted[n] for n in waiters]) * 1000:.0f} ms")
    line("message -> reply, max", f"{max(latencies) * 1000:.0f} ms")
    line(f"all {groups} answered after", f"{total * 1000:.0f} ms")
    return 0 if ok_cap and all_once and fifo else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--cap", type=int, default=5)
    parser.add_argument("--think", type=float, default=2.0)
    args = parser.parse_args()
    sys.exit(trio.run(run, args.groups, args.cap, args.think))
