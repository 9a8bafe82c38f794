"""Scheduler bench: 10,000 tasks loaded; firing jitter and idle CPU.

    .venv/bin/python bench/bench_scheduler.py [--tasks 10000] [--spread 20] [--idle 30]

1. Jitter: `--tasks` tasks due over the next `--spread` seconds (real clock, real SQLite store in
   WAL mode), the real Scheduler; jitter = the moment the run is claimed and handed to dispatch
   minus its scheduled time. Goal p99 < 1 s.
2. Idle: the whole daemon (web, supervisor, scheduler; the in-process fake agent) with `--tasks`
   tasks loaded, all due tomorrow, left alone for `--idle` seconds; CPU time used / wall time.
   Goal ~0 (< 1% of a core: no busy loop).

Exit status 1 when a goal is missed or a figure could not be measured (bench/goals.py).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.goals import Report, run  # noqa: E402
from ngb.records import ScheduleKind, Task, utcnow  # noqa: E402
from ngb.scheduler import Scheduler  # noqa: E402
from ngb.store import Store, _task_row  # noqa: E402


def make_tasks(n: int, start, spread: float, folder: str = "main") -> list[Task]:
    rng = random.Random(42)
    return [
        Task(
            id=f"bench-{i:05d}",
            folder=folder,
            chat="local:main",
            prompt=f"bench task {i}",
            schedule_kind=ScheduleKind.INTERVAL,
            schedule_value="86400",
            next_run=start + timedelta(seconds=rng.uniform(0, spread)),
        )
        for i in range(n)
    ]


async def load(store: Store, tasks: list[Task]) -> float:
    t = time.perf_counter()

    def q(c):
        for task in tasks:
            row = {k: getattr(v, "value", v) for k, v in _task_row(task).items()}
            c.execute(f"INSERT INTO tasks ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    await store.run(q)
    return time.perf_counter() - t


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def jitter(report: Report, n: int, spread: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "ngb.db")
        await store.open()
        start = utcnow() + timedelta(seconds=2)
        loaded = await load(store, make_tasks(n, start, spread))
        lateness: list[float] = []
        done = trio.Event()

        def claimed(task: Task, run_id: int, late: float) -> None:
            slot = task_slot[task.id]
            lateness.append((utcnow() - slot).total_seconds())
            if len(lateness) >= n:
                done.set()

        task_slot = {t.id: t.next_run for t in await store.tasks()}
        sched = Scheduler(store, lambda folder: True, on_claimed=claimed)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        async with trio.open_nursery() as nursery:
            await nursery.start(sched.run)
            with trio.fail_after(spread + 60):
                await done.wait()
            nursery.cancel_scope.cancel()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        await store.close()
    p50, p99, worst = pct(lateness, 50), pct(lateness, 99), max(lateness)
    print(f"tasks loaded: {n} in {loaded:.2f}s; {n} runs fired over {spread:g}s ({n / spread:.0f}/s)")
    report.figure("firing jitter p50", p50 * 1000, "ms")
    report.figure("firing jitter p99", p99 * 1000, "ms", 1000.0)
    report.figure("firing jitter max", worst * 1000, "ms")
    report.info("scheduler while firing", f"{sched.wakeups} wake-ups for {n} runs; CPU {cpu:.2f}s over {wall:.1f}s")


async def idle(report: Report, n: int, seconds: float) -> None:
    from ngb.daemon import Daemon
    from tests.conftest import make_config
    from tests.fakes.agent import FakeLauncher

    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp))
        launcher = FakeLauncher()
        daemon = Daemon(config, launcher_factory=lambda d: launcher)
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            await load(daemon.store, make_tasks(n, utcnow() + timedelta(days=1), 3600))
            daemon.scheduler.poke()
            await trio.sleep(1)
            wake0 = daemon.scheduler.wakeups
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await trio.sleep(seconds)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            wakes = daemon.scheduler.wakeups - wake0
            nursery.cancel_scope.cancel()
    share = cpu / wall * 100
    report.info(f"daemon idle, {n} tasks loaded", f"CPU {cpu * 1000:.0f} ms over {wall:.0f} s; {wakes} wake-ups")
    report.figure("daemon idle: CPU share", share, "% core", 1.0, fmt=".3f")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--spread", type=float, default=20.0)
    ap.add_argument("--idle", type=float, default=30.0)
    args = ap.parse_args()
    report = Report()
    with report.measuring("firing jitter"):
        trio.run(jitter, report, args.tasks, args.spread)
    with report.measuring("daemon idle: CPU share"):
        trio.run(idle, report, args.tasks, args.idle)
    return report.exit_code()


if __name__ == "__main__":
    sys.exit(run(main))
