"""Where one machine ends: the real daemon (store, router, supervisor, actors, outbox, web) in a
process of its own, with the in-process fake agent in place of Docker, 1,000 registered groups, and
messages posted to the local chat API at stepped rates spread over the groups.

    .venv/bin/python -m bench.bench_scale [--groups 1000] [--steps 10,100,1000,5000,20000] [--seconds 20]
    .venv/bin/python -m bench.bench_scale --short          # the short set's variant (2 steps, 5 s each)

A share of the messages (``--triggers``, 10 %) start with the trigger word and make a turn that the
fake agent answers after ``--think`` seconds (container cap ``--cap``, as a 24 GiB box allows); the
rest are stored and wait as context, as in a busy company channel. For each step it prints:
message -> stored (the API's answer, which comes after the store's commit) and message -> reply
handed to the channel (p50/p99), the daemon's CPU (share of one core: it is one trio thread) and
RSS, the actors (count, memory each), the outbox depth (most seen), the store's write latency
(p50/p99 of its transactions) and which resource saturates first (the knee): the daemon's core,
the store, the container slots, or the load generator itself.

Before the steps, two idle daemons (no groups, then ``--groups``) say what idle groups cost: RSS
and CPU over 5 s, and /status, /metrics and `ngb groups list` with every group registered.

Goals (docs/scaling.md): 1,000 idle groups add < 50 MB RSS and < 2 % of a core; message -> stored
p99 < 20 ms at 5,000 messages/min. Exit status 1 when a goal is missed or a figure not measured.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.goals import MeasurementFailed, Report, expect_status, rss_bytes  # noqa: E402
from tests.channel_helpers import stop_process  # noqa: E402

TOKEN = "bench-scale-token-0123456789abcdef"
TRIGGER = "@Andy"
GOAL_IDLE_MB = 50.0  # what 1,000 idle groups may add
GOAL_IDLE_CPU = 2.0  # % of a core, idle
GOAL_STORED_P99_MS = 20.0  # message -> stored at 5,000/min
TICKS = os.sysconf("SC_CLK_TCK")


# -- the daemon under test (a child process) -----------------------------------------------------
async def child(args: argparse.Namespace) -> None:
    from ngb.daemon import Daemon
    from ngb.groups import GroupRegistry
    from ngb.records import Group
    from ngb.store import Store
    from tests.conftest import make_config
    from tests.fakes.agent import FakeBehaviour, FakeLauncher

    state = Path(args.daemon)
    config = make_config(state.parent, NGB_STATE_DIR=str(state), NGB_WEB_PORT=str(args.port), NGB_API_TOKEN=TOKEN,
                         NGB_MAX_CONTAINERS=str(args.cap), NGB_IDLE_TIMEOUT="5", NGB_PREVIEWS="false",
                         NGB_SENDER_RATE_PER_MINUTE="0", NGB_GROUP_RATE_PER_MINUTE="0", NGB_LOG_LEVEL="WARNING")
    if args.groups and not (state / "ngb.db").exists():  # registered before the start, as after a restart
        store = Store(config.state_dir / "ngb.db")
        await store.open()
        registry = GroupRegistry(store, config.groups_dir, config.state_dir / "global")
        await registry.load()
        for i in range(args.groups):
            await registry.add(Group(chat=f"local:s{i}", folder=f"s{i}", is_main=i == 0))
        await store.close()
    launcher = FakeLauncher(FakeBehaviour(delay=args.think))
    daemon = Daemon(config, launcher_factory=lambda d: launcher)
    trace = open(args.trace, "a", buffering=1 << 16)  # noqa: SIM115, ASYNC230 - the process's life, before it serves

    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        local = daemon.channels["local"]
        send = local.send

        async def traced_send(chat: str, text: str, reply_to: str | None = None) -> Any:
            out = await send(chat, text, reply_to)
            trace.write(f"R\t{chat}\t{time.time():.6f}\n")
            return out

        local.send = traced_send  # type: ignore[method-assign]
        run = daemon.store.run

        async def traced_run(fn: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await run(fn)
            finally:
                trace.write(f"S\t{time.time():.6f}\t{time.perf_counter() - t0:.6f}\t{getattr(fn, '__qualname__', '?')}\n")

        daemon.store.run = traced_run  # type: ignore[method-assign]
        print("ready", flush=True)
        while True:  # the fake launcher keeps every prompt: not the daemon's memory, so dropped
            await trio.sleep(0.5)
            trace.flush()
            for kept in (launcher.prompts, launcher.inputs, launcher.starts, launcher.start_order):
                kept.clear()


# -- the load and the measuring (this process) ---------------------------------------------------
class Daemon:
    def __init__(self, folder: Path, groups: int, args: argparse.Namespace) -> None:
        from tests.conftest import free_port

        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.trace = folder / "trace.tsv"
        self.url = f"http://127.0.0.1:{self.port}"
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_scale", "--daemon", str(folder / "state"), "--port", str(self.port),
             "--groups", str(groups), "--cap", str(args.cap), "--think", str(args.think), "--trace", str(self.trace)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if line.strip() != "ready":
            raise MeasurementFailed(f"the daemon did not start (exit {self.proc.poll()}): {line!r}")
        self.ready_in = time.perf_counter() - self.started

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def rss_mb(self) -> float:
        return rss_bytes(self.proc) / 1e6

    def stop(self) -> None:
        stop_process(self.proc, timeout=15)

    def trace_since(self, since: float) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
        """Replies (chat -> times) and store transaction durations (by what ran) after ``since``."""
        replies: dict[str, list[float]] = defaultdict(list)
        writes: dict[str, list[float]] = defaultdict(list)
        for line in self.trace.read_text().splitlines():
            kind, *rest = line.split("\t")
            if kind == "R" and float(rest[1]) >= since:
                replies[rest[0]].append(float(rest[1]))
            elif kind == "S" and float(rest[0]) >= since:
                writes[rest[2].split(".<locals>")[0]].append(float(rest[1]))
        return replies, writes


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


async def idle_cost(report: Report, args: argparse.Namespace, folder: Path) -> Daemon:
    """What registered groups cost when nothing happens (a daemon without groups beside one with
    them, idle at the same time); the read paths with all of them. Returns the one with them."""
    empty = Daemon(folder / "idle0", 0, args)
    try:
        full = Daemon(folder / "load", args.groups, args)
        await trio.sleep(args.settle)  # settled after the start
        before = [(d.cpu_seconds(), time.perf_counter()) for d in (empty, full)]
        await trio.sleep(args.idle)
        cpu = [(d.cpu_seconds() - c0) / (time.perf_counter() - t0) * 100 for d, (c0, t0) in zip((empty, full), before, strict=True)]
        rss0, rss1 = empty.rss_mb(), full.rss_mb()
    finally:
        empty.stop()
    report.info("daemon ready (no groups / with them)", f"{empty.ready_in:.1f} s / {full.ready_in:.1f} s")
    report.info("idle RSS (no groups / with them)", f"{rss0:.0f} MB / {rss1:.0f} MB")
    report.figure(f"RSS added by {args.groups} idle groups", rss1 - rss0, "MB", GOAL_IDLE_MB * args.groups / 1000)
    report.info("memory per idle group (actor, view, inbox)", f"{(rss1 - rss0) * 1e3 / max(1, args.groups):.0f} KB")
    report.figure(f"idle CPU with {args.groups} groups", cpu[1], "% core", GOAL_IDLE_CPU, fmt=".2f")
    await read_paths(report, full, args.groups)
    return full


async def read_paths(report: Report, d: Daemon, groups: int) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=d.url, headers=headers, timeout=30) as http:
        for path in ("/status", "/metrics", "/api/groups?limit=50"):
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                r = expect_status(await http.get(path))
                times.append(time.perf_counter() - t0)
            report.info(f"GET {path} with {groups} groups", f"{min(times) * 1e3:.0f} ms, {len(r.content) / 1e3:.0f} KB")
    env = {**os.environ, "NGB_STATE_DIR": str(d.trace.parent / "state"), "NGB_WEB_PORT": str(d.port),
           "NGB_API_TOKEN": TOKEN}
    t0 = time.perf_counter()
    listed = await trio.run_process([sys.executable, "-m", "ngb", "groups", "list"], env=env, capture_stdout=True,
                                    capture_stderr=True, check=False)
    took = time.perf_counter() - t0
    if listed.returncode != 0:
        raise MeasurementFailed(f"ngb groups list failed: {listed.stderr.decode()[-300:]}")
    report.info(f"ngb groups list with {groups} groups", f"{took * 1e3:.0f} ms, {listed.stdout.count(b'local:s')} rows")


async def load_step(d: Daemon, rate: int, seconds: float, args: argparse.Namespace) -> dict[str, Any]:
    """Post ``rate`` messages/min for ``seconds``, then wait for the replies; the step's figures."""
    rng = random.Random(rate)
    count = max(1, round(rate * seconds / 60))
    gap = seconds / count
    stored: list[float] = []
    late: list[float] = []  # how far behind its schedule a post went out (the load generator's lag)
    triggers: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    samples: dict[str, float] = {"outbox": 0.0, "actors": 0.0}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=d.url, headers=headers, timeout=30, limits=limits) as http:

        async def post(i: int, at: float) -> None:
            chat = f"s{rng.randrange(args.groups)}"
            triggered = rng.random() < args.triggers
            text = f"{TRIGGER} question {i}" if triggered else f"chatter {i} about the weather"
            late.append(time.perf_counter() - at)
            t0, wall = time.perf_counter(), time.time()
            try:
                r = await http.post(f"/api/chats/{chat}/messages", json={"sender": f"u{i % 50}", "text": text})
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            if r.status_code != 202:
                errors.append(f"HTTP {r.status_code}: {r.text[:100]}")
                return
            stored.append(time.perf_counter() - t0)
            if triggered:
                triggers[f"local:{chat}"].append(wall)

        async def sample(done: trio.Event) -> None:
            while not done.is_set():
                r = await http.get("/metrics")
                samples["outbox"] = max(samples["outbox"], metric(r.text, "ngb_outbox_depth"))
                samples["actors"] = metric(r.text, "ngb_actors")
                await trio.sleep(2.0)  # a scrape every 2 s: Prometheus at 4-8 times its usual rate

        since, cpu0, t0 = time.time(), d.cpu_seconds(), time.perf_counter()
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample, done)
            start = time.perf_counter()
            for i in range(count):
                at = start + i * gap
                await trio.sleep_until(trio.current_time() + max(0.0, at - time.perf_counter()))
                nursery.start_soon(post, i, at)
            busy = time.perf_counter() - t0
            cpu = (d.cpu_seconds() - cpu0) / busy * 100
            rss = d.rss_mb()
            wanted = sum(len(v) for v in triggers.values())
            deadline = time.perf_counter() + args.think * 4 + 30
            while time.perf_counter() < deadline:  # every trigger answered (batched ones by one reply)
                replies, writes = d.trace_since(since)
                if answered(triggers, replies)[1] == 0:
                    break
                await trio.sleep(0.25)
            done.set()
    replies, by_kind = d.trace_since(since)
    latencies, unanswered = answered(triggers, replies)
    writes = [t for times in by_kind.values() for t in times]
    slowest = sorted(by_kind.items(), key=lambda kv: -pct(kv[1], 99))[:3]
    return {"rate": rate, "posted": count, "errors": errors, "stored": stored, "late": late, "cpu": cpu, "rss": rss,
            "reply": latencies, "unanswered": unanswered, "triggers": wanted, "writes": writes, **samples,
            "slowest": ", ".join(f"{name} p99 {pct(v, 99) * 1e3:.1f} ms (n={len(v)})" for name, v in slowest)}


def answered(triggers: dict[str, list[float]], replies: dict[str, list[float]]) -> tuple[list[float], int]:
    """Each trigger's wait for the first reply in its chat after it; and how many have none yet."""
    waits, missing = [], 0
    for chat, times in triggers.items():
        got = sorted(replies.get(chat, []))
        for t in times:
            after = [r for r in got if r >= t]
            if after:
                waits.append(after[0] - t)
            else:
                missing += 1
    return waits, missing


def knee(step: dict[str, Any], args: argparse.Namespace) -> str | None:
    """What saturated in this step (None: nothing). A step is past the knee when messages wait to be
    stored (p99 over 4x the goal), posts cannot go out on time, replies wait for more than the
    agent's time, or anything is lost; the resource named is the one at its limit."""
    stored, late = pct(step["stored"], 99), pct(step["late"], 99)
    reply = pct(step["reply"], 99) if step["reply"] else 0.0
    if not (stored > GOAL_STORED_P99_MS * 4 / 1e3 or late > 0.1 or reply > args.think * 2 + 0.5
            or step["unanswered"] or step["errors"]):
        return None
    if step["cpu"] > 65:  # its threads share one GIL: past ~2/3 of a core, messages queue for it
        return (f"the daemon's core: {step['cpu']:.0f} % of one (a trio thread and the store's, one GIL); "
                f"messages wait {stored * 1e3:.0f} ms to be stored (p99)")
    if late > 0.25:
        return (f"the box's 2 cores: the load generator cannot post on time ({late * 1e3:.0f} ms late) beside "
                f"the daemon at {step['cpu']:.0f} % of a core, whose store writes take {pct(step['writes'], 99) * 1e3:.0f} ms (p99)")
    if pct(step["writes"], 99) > 0.03:
        return f"the store (its writes p99 {pct(step['writes'], 99) * 1e3:.0f} ms)"
    if reply > args.think * 2 + 0.5:
        return "the container slots (replies wait for a slot)"
    if step["unanswered"] or step["errors"]:
        return "answers lost or refused"
    return f"messages queue in the daemon (stored p99 {stored * 1e3:.0f} ms) with no one resource at its limit"


async def main(args: argparse.Namespace) -> int:
    report = Report(margin=args.margin)
    report_steps(report, await measure(report, args), args)
    return report.exit_code()


async def measure(report: Report, args: argparse.Namespace) -> list[dict[str, Any]]:
    folder = Path(tempfile.mkdtemp(prefix="ngb-bench-scale-"))
    try:
        d = await idle_cost(report, args, folder)
        try:
            return [await load_step(d, rate, args.seconds, args) for rate in args.steps]
        finally:
            d.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report_steps(report: Report, steps: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\n{args.groups} groups, {args.triggers:.0%} of messages trigger a turn, the agent answers in "
          f"{args.think:g} s, {args.cap} container slots, {args.seconds:g} s per step")
    head = ("msgs/min", "stored p50", "p99 ms", "reply p50", "p99 s", "CPU %", "RSS MB", "actors", "KB/actor",
            "outbox", "write p50", "p99 ms")
    print(("{:>9}" * len(head)).format(*head))
    first_knee = None
    for s in steps:
        per_actor = s["rss"] * 1e3 / s["actors"] if s["actors"] else float("nan")
        print(("{:>9}" * len(head)).format(
            s["rate"], f"{pct(s['stored'], 50) * 1e3:.1f}", f"{pct(s['stored'], 99) * 1e3:.1f}",
            f"{pct(s['reply'], 50):.2f}", f"{pct(s['reply'], 99):.2f}", f"{s['cpu']:.0f}", f"{s['rss']:.0f}",
            f"{s['actors']:.0f}", f"{per_actor:.0f}", f"{s['outbox']:.0f}", f"{pct(s['writes'], 50) * 1e3:.2f}",
            f"{pct(s['writes'], 99) * 1e3:.1f}"))
        if first_knee is None and (why := knee(s, args)):
            first_knee = (s["rate"], why)
    print(f"\nslowest store transactions at {steps[-1]['rate']}/min: {steps[-1]['slowest']}")
    print(f"posts late on their schedule (p99, the load generator): {pct(steps[-1]['late'], 99) * 1e3:.1f} ms")
    report.info("the knee", f"at {first_knee[0]}/min: {first_knee[1]}" if first_knee else "not reached")
    for s in steps:
        report.figure(f"{s['rate']}/min: posts refused or failed", len(s["errors"]), "", 0, fmt=".0f")
        report.figure(f"{s['rate']}/min: triggers never answered", s["unanswered"], "", 0, fmt=".0f")
    for s in steps:
        goal = GOAL_STORED_P99_MS if s["rate"] == 5000 else None  # the goal is set at 5,000/min
        if goal is not None or s is steps[-1]:
            report.figure(f"message -> stored p99 at {s['rate']}/min", pct(s["stored"], 99) * 1e3, "ms", goal,
                          fmt=".1f")


def cli() -> int:
    from bench.goals import run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--steps", default="10,100,1000,5000,20000", help="messages per minute, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each step")
    parser.add_argument("--triggers", type=float, default=0.1, help="share of messages that make a turn")
    parser.add_argument("--think", type=float, default=1.0, help="the fake agent's time per answer (s)")
    parser.add_argument("--cap", type=int, default=32, help="container slots")
    parser.add_argument("--short", action="store_true", help="2 steps (1,000 and 5,000/min), 5 s each")
    parser.add_argument("--daemon", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--trace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.daemon:
        trio.run(child, args)
        return 0
    args.steps = [int(s) for s in ("1000,5000" if args.short else args.steps).split(",")]
    args.settle, args.idle, args.margin = (2.0, 3.0, 0.25) if args.short else (3.0, 5.0, 0.0)
    if args.short:
        args.seconds = 5.0
    return run(lambda: trio.run(main, args))


def short_args() -> argparse.Namespace:
    """The short benchmark's run (bench/short.py)."""
    return argparse.Namespace(groups=1000, steps=[1000, 5000], seconds=5.0, triggers=0.1, think=1.0, cap=32,
                              settle=2.0, idle=3.0, margin=0.25)


async def measure_short(report: Report) -> None:
    args = short_args()
    report_steps(report, await measure(report, args), args)


if __name__ == "__main__":
    sys.exit(cli())
