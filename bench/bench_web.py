"""Web benchmark: /status and /metrics latency under 50 concurrent clients while 10 groups run
turns with the in-process fake agent, and how much that load slows the message path.

    .venv/bin/python -m bench.bench_web [--seconds 8] [--clients 50] [--think 0.1]

Phases (each --seconds long, same daemon):
  1. baseline: 10 groups, each sending a message and waiting for the reply, back to back;
  2. loaded:   the same, while --clients HTTP clients (in a separate process, so the load
               generator does not share the daemon's CPU time slice) alternate GET /status and
               GET /metrics, pausing --think seconds between requests (default 1 s: fifty open
               dashboards, which poll once a second, or fifty scrapers);
  3. saturated (information only): the same clients with no pause (closed loop).

Goals: p99 of /status and /metrics < 50 ms under load; message-path mean slowed by <= 5 %. Every
answer must be 200: a latency taken over error answers (or refused connections) is a failed
measurement. Exit status 1 when a goal is missed or a figure was not measured (bench/goals.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

_COUNTER = itertools.count(1)
GOAL_P99_MS = 50.0
GOAL_SLOWDOWN = 0.05


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# -- the load generator (child process) ---------------------------------------------------------
async def client_main(url: str, clients: int, seconds: float, think: float) -> None:
    import httpx

    lat: dict[str, list[float]] = {"/status": [], "/metrics": []}
    errors = 0
    first_error = ""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {os.environ['NGB_BENCH_TOKEN']}"}  # set by run_load
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=10) as http:
        deadline = trio.current_time() + seconds

        async def one(i: int) -> None:
            nonlocal errors, first_error
            path = "/status" if i % 2 == 0 else "/metrics"
            await trio.sleep(think * i / clients)  # spread the starts
            while trio.current_time() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await http.get(path)
                    problem = "" if r.status_code == 200 else f"{path} answered {r.status_code}"
                except httpx.HTTPError as exc:
                    problem = f"{path}: {type(exc).__name__}: {exc}"
                dt = time.perf_counter() - t0
                if problem:
                    errors += 1
                    first_error = first_error or problem
                    await trio.sleep(think or 0.01)
                    continue
                lat[path].append(dt)
                path = "/metrics" if path == "/status" else "/status"
                if think:
                    await trio.sleep(think)

        async with trio.open_nursery() as nursery:
            for i in range(clients):
                nursery.start_soon(one, i)
    print(json.dumps({"lat": lat, "errors": errors, "first_error": first_error}))


# -- the daemon side ------------------------------------------------------------------------------
async def drive_messages(daemon, groups: list[str], seconds: float) -> list[float]:
    from ngb.records import InboundMessage

    latencies: list[float] = []
    deadline = trio.current_time() + seconds
    async def loop(folder: str) -> None:
        chat = f"local:{folder}"
        receive = daemon.events.subscribe(chat)
        try:
            while trio.current_time() < deadline:
                n = next(_COUNTER)  # platform ids must be new, or the router treats it as a redelivery
                t0 = time.perf_counter()
                await daemon.router.handle(InboundMessage(chat=chat, sender="bench", text=f"ping {n}", platform_id=f"b-{n}"))
                while True:
                    m = await receive.receive()
                    if m.from_bot:
                        break
                latencies.append(time.perf_counter() - t0)
        finally:
            receive.close()

    async with trio.open_nursery() as nursery:
        for folder in groups:
            nursery.start_soon(loop, folder)
    return latencies


async def run_load(url: str, token: str, clients: int, seconds: float, think: float) -> dict:
    proc = await trio.run_process(
        [sys.executable, "-m", "bench.bench_web", "--client", url, "--clients", str(clients),
         "--seconds", str(seconds), "--think", str(think)],
        capture_stdout=True, cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "NGB_BENCH_TOKEN": token},
    )
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


async def main(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.goals import Report
    from ngb.daemon import Daemon
    from ngb.records import Group
    from tests.conftest import make_config
    from tests.fakes.agent import FakeBehaviour, FakeLauncher

    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp), NGB_MAX_CONTAINERS="10", NGB_IDLE_TIMEOUT="60",
                             NGB_SENDER_RATE_PER_MINUTE="0", NGB_GROUP_RATE_PER_MINUTE="0")
        launcher = FakeLauncher(FakeBehaviour(delay=args.agent_delay))
        daemon = Daemon(config, launcher_factory=lambda d: launcher)
        url = f"http://127.0.0.1:{config.web_port}"
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            groups = [f"g{i}" for i in range(10)]
            for g in groups:
                await daemon.registry.add(Group(chat=f"local:{g}", folder=g, requires_trigger=False))
            await drive_messages(daemon, groups, 1.5)  # warm up: containers started, caches hot

            base = await drive_messages(daemon, groups, args.seconds)
            loaded: list[float] = []
            load: dict = {}

            async def loaded_phase() -> None:
                nonlocal loaded
                loaded = await drive_messages(daemon, groups, args.seconds)

            async with trio.open_nursery() as n:
                n.start_soon(loaded_phase)
                load = await run_load(url, daemon.web_token.value, args.clients, args.seconds, args.think)
            sat = await run_load(url, daemon.web_token.value, args.clients, min(args.seconds, 4), 0.0)
            nursery.cancel_scope.cancel()

    print(f"daemon: 10 groups, fake agent delay {args.agent_delay * 1000:.0f} ms, {args.seconds:g}s per phase; "
          f"{args.clients} clients alternating /status and /metrics, {args.think * 1000:.0f} ms think time")
    print(f"{'':28}{'n':>7}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for phase, data in (("loaded", load), ("closed loop", sat)):
        for path in ("/status", "/metrics"):
            v = data["lat"][path]
            if v:
                print(f"{path + f' ({phase})':28}{len(v):>7}{pct(v, 50) * 1000:>10.2f}{pct(v, 95) * 1000:>10.2f}"
                      f"{pct(v, 99) * 1000:>10.2f}{max(v) * 1000:>10.2f}")
    for name, v in (("message path (baseline)", base), ("message path (loaded)", loaded)):
        print(f"{name:28}{len(v):>7}{pct(v, 50) * 1000:>10.2f}{pct(v, 95) * 1000:>10.2f}{pct(v, 99) * 1000:>10.2f}"
              f"{max(v) * 1000:>10.2f}   mean {statistics.mean(v) * 1000:.2f} ms")
    rate = sum(len(v) for v in load["lat"].values()) / args.seconds
    sat_rate = sum(len(v) for v in sat["lat"].values()) / min(args.seconds, 4)
    report.info("web requests/s (200s)", f"{rate:.0f} paced, {sat_rate:.0f} closed loop")
    errors = load["errors"] + sat["errors"]
    report.figure("web answers not 200 (or refused)", errors, "", 0.0, fmt=".0f")
    for path in ("/status", "/metrics"):
        name = f"{path} p99 under load"
        if load["errors"] or sat["errors"]:
            report.fail(name, f"{errors} answers were errors, first: {load['first_error'] or sat['first_error']}")
        else:
            report.figure(name, pct(load["lat"][path], 99) * 1000, "ms", GOAL_P99_MS, fmt=".2f")
    slowdown = statistics.mean(loaded) / statistics.mean(base) - 1
    report.figure("message path slowdown (mean, loaded vs baseline)", slowdown * 100, "%", GOAL_SLOWDOWN * 100,
                  fmt="+.1f")
    return report.exit_code()


def cli() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.goals import run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--think", type=float, default=1.0, help="pause between a client's requests (s)")
    parser.add_argument("--agent-delay", type=float, default=0.02, help="the fake agent's time per answer (s)")
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        trio.run(client_main, args.client, args.clients, args.seconds, args.think)
        return 0
    return run(lambda: trio.run(main, args))


if __name__ == "__main__":
    sys.exit(cli())
