"""The spine's figures, each printed next to its goal.

    .venv/bin/python -m bench.bench_spine [--runs N]

- floor: a bare `docker run --rm IMAGE true`, plus the Claude CLI's own time from start to its first
  model request (the same bundled CLI, run on the host against the fake model);
- cold turn: message posted to the local chat -> first model request, container not running
  (goal <= 1.5x the floor);
- warm follow-up: message posted -> first model request while the container is live, and the
  daemon's own share of it (message in -> input frame written to the runner; goal <= 30 ms);
- idle daemon RSS (goal <= 100 MB), ready time from `ngb run` to /healthz 200 (goal < 1 s), idle
  agent container memory.

Exit status 1 when a goal is missed or a figure could not be measured (bench/goals.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
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

from bench.goals import MeasurementFailed, Report, expect_status, rss_bytes, run, wait_healthz  # noqa: E402
from ngb.daemon import Daemon  # noqa: E402
from ngb.sandbox.image import ensure_image  # noqa: E402
from tests.conftest import api_headers, free_port, make_config  # noqa: E402
from tests.fakes.anthropic import FakeAnthropic  # noqa: E402

IMAGE = "nanogridbot-agent:latest"


def bare_docker_run(runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(
            ["docker", "run", "--rm", "--network", "none", "--entrypoint", "true", IMAGE],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - t)
    return statistics.median(times)


async def cli_to_first_request(fake: FakeAnthropic, runs: int) -> float:
    """The bundled CLI alone: process start -> first /v1/messages request at the fake."""
    import claude_agent_sdk

    cli = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
    times = []
    for _ in range(runs):
        before = len(fake.message_requests)
        env = dict(os.environ)
        env.update(
            ANTHROPIC_BASE_URL=fake.url,
            ANTHROPIC_API_KEY="bench",
            DISABLE_TELEMETRY="1",
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            DISABLE_AUTOUPDATER="1",
            HOME=tempfile.mkdtemp(),
        )
        t = time.perf_counter()
        proc = await trio.lowlevel.open_process(
            [str(cli), "-p", "hello"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        with trio.fail_after(60):
            while len(fake.message_requests) == before:
                await trio.sleep(0.002)
        times.append(time.perf_counter() - t)
        with trio.move_on_after(30):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
    return statistics.median(times)


async def turns(fake: FakeAnthropic, runs: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp())
    config = make_config(tmp, NGB_MODEL_UPSTREAM=fake.url, ANTHROPIC_API_KEY="bench", NGB_IDLE_TIMEOUT="600",
                         NGB_INSTANCE="bench")
    cold, warm, warm_daemon = [], [], []
    sent_at: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        daemon = Daemon(config)
        await nursery.start(daemon.run)
        original = daemon._actor_event

        def spy(folder: str, kind: str, data: dict[str, Any]) -> None:
            if kind == "batch_sent":
                sent_at["batch"] = time.perf_counter()
            original(folder, kind, data)

        daemon._actor_event = spy  # type: ignore[method-assign]
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{config.web_port}", headers=api_headers(config), timeout=60
        ) as http:

            async def one(text: str) -> tuple[float, float]:
                before = len(fake.message_requests)
                t = time.perf_counter()
                r = expect_status(await http.post("/api/chats/main/messages",
                                                  json={"sender": "bench", "text": text}), 202)
                with trio.fail_after(120):
                    while len(fake.message_requests) == before:
                        await trio.sleep(0.001)
                first_request = time.perf_counter() - t
                # wait for the reply, so the next message is a new batch
                with trio.fail_after(120):
                    while True:
                        msgs = expect_status(await http.get("/api/chats/main/messages",
                                                            params={"after": r.json()["id"]})).json()
                        if any(m["from_bot"] for m in msgs):
                            break
                        await trio.sleep(0.01)
                return first_request, sent_at.get("batch", t) - t

            for i in range(runs):
                # cold: make sure no container runs
                actor = daemon.supervisor.actors["main"].actor
                with trio.fail_after(60):  # the last turn's result closes its batch first
                    while actor is not None and actor.busy():
                        await trio.sleep(0.005)
                if actor is not None:
                    actor.stop_if_idle()
                with trio.fail_after(60):
                    while daemon.supervisor.actors["main"].view.container_id is not None:
                        await trio.sleep(0.01)
                cold.append((await one(f"cold {i}"))[0])
                for j in range(2):
                    total, share = await one(f"warm {i}.{j}")
                    warm.append(total)
                    warm_daemon.append(share)
            # idle agent container memory
            client = docker.from_env()
            mem = None
            for c in client.containers.list(filters={"label": "ngb.instance=bench"}):
                stats = c.stats(stream=False)
                mem = stats["memory_stats"].get("usage", 0) - stats["memory_stats"].get("stats", {}).get("inactive_file", 0)
        nursery.cancel_scope.cancel()
    shutil.rmtree(tmp, ignore_errors=True)
    return {"cold": statistics.median(cold), "warm": statistics.median(warm), "warm_daemon": statistics.median(warm_daemon),
            "warm_daemon_max": max(warm_daemon), "container_mem": mem}


def daemon_rss_and_ready(fake_url: str) -> tuple[float, float]:
    """Idle RSS of `ngb run` in MB and its ready time in s; MeasurementFailed when it does not come
    up or dies before its memory is read."""
    tmp = Path(tempfile.mkdtemp())
    port = free_port()
    env = dict(os.environ, NGB_STATE_DIR=str(tmp / "state"), NGB_WEB_PORT=str(port), NGB_MODEL_UPSTREAM=fake_url,
               NGB_INSTANCE="benchrss", NGB_MOUNT_ALLOWLIST=str(tmp / "none.toml"))
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ngb", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = wait_healthz(proc, port, t)
        time.sleep(3)
        rss = rss_bytes(proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return rss / 2**20, ready


async def main(runs: int) -> int:
    ensure_image(IMAGE, progress=lambda s: None)
    print(f"NanoGridBot spine benchmark ({runs} runs each, medians; {os.cpu_count()} cores)\n")
    report = Report()
    bare = bare_docker_run(runs)
    rss: float | MeasurementFailed
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        cli = await cli_to_first_request(fake, runs)
        t = await turns(fake, runs)
        try:
            rss, ready = await trio.to_thread.run_sync(daemon_rss_and_ready, fake.url)
        except MeasurementFailed as exc:
            rss = ready = exc
        nursery.cancel_scope.cancel()
    floor = bare + cli
    report.figure("bare docker run --rm IMAGE true", bare * 1000, "ms", fmt=".0f")
    report.figure("CLI alone: start -> first model request", cli * 1000, "ms", fmt=".0f")
    report.figure("floor (sum)", floor * 1000, "ms", fmt=".0f")
    report.figure("cold turn: message in -> first model request", t["cold"] * 1000, "ms", fmt=".0f")
    report.figure("  cold turn / floor", t["cold"] / floor, "x", 1.5, fmt=".2f")
    report.figure("warm follow-up: message in -> model request", t["warm"] * 1000, "ms", fmt=".0f")
    report.figure("warm follow-up: daemon share (in -> runner)", t["warm_daemon"] * 1000, "ms", 30.0)
    report.figure("  (max over runs)", t["warm_daemon_max"] * 1000, "ms")
    if isinstance(rss, MeasurementFailed):
        report.fail("idle daemon RSS", str(rss))
        report.fail("ready: ngb run -> /healthz 200 (image built)", str(rss))
    else:
        report.figure("idle daemon RSS", rss, "MB", 100.0)
        report.figure("ready: ngb run -> /healthz 200 (image built)", ready * 1000, "ms", 1000.0, fmt=".0f")
    if t["container_mem"] is not None:
        report.figure("idle agent container memory", t["container_mem"] / 2**20, "MB")
    return report.exit_code()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    sys.exit(run(lambda: trio.run(main, runs)))
