"""Channel figures, each printed next to its goal.

    .venv/bin/python -m bench.bench_channels [--messages N]

- Telegram inbound latency: a user's message appears on the fake Bot API (a getUpdates long poll
  is waiting) -> the message is stored by the daemon's router. The path is the real one:
  python-telegram-bot's HTTP call on the shared asyncio loop, the bridge back to trio, the router,
  the SQLite write. Goal: p99 < 10 ms.
- Slack inbound latency: the fake pushes an events_api envelope on the Socket Mode websocket ->
  stored (slack-sdk's aiohttp SocketModeClient on the shared loop, its listener queue, the bridge,
  the router, SQLite). Goal: p99 < 10 ms.
- Discord inbound latency: the fake dispatches MESSAGE_CREATE (zlib-stream) on the gateway ->
  stored (discord.py's gateway parser on the shared loop, the bridge, the router, SQLite).
- the asyncio bridge alone: trio -> asyncio and asyncio -> trio round trips (goal < 0.2 ms).
- idle RSS of `ngb run` with no platform channel, with Telegram, and with Telegram + Slack + Discord
  (goal: the core's <= 100 MB holds).

Exit status 1 when a goal is missed or a figure could not be measured (bench/goals.py): a daemon
that dies or whose channels do not all connect is a failed measurement, not a small RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.goals import MeasurementFailed, Report, rss_bytes, run  # noqa: E402
from ngb.aio_bridge import AsyncioBridge  # noqa: E402
from ngb.api_token import TokenUnavailable  # noqa: E402
from ngb.daemon import Daemon  # noqa: E402
from ngb.records import Group  # noqa: E402
from tests.conftest import api_headers, free_port, make_config  # noqa: E402
from tests.fakes.agent import FakeLauncher  # noqa: E402
from tests.fakes.discord import FakeDiscord  # noqa: E402
from tests.fakes.slack import FakeSlack  # noqa: E402
from tests.fakes.telegram import FakeTelegram  # noqa: E402

TOKEN = "123456:BENCH-token"
SLACK_BOT, SLACK_APP = "xoxb-BENCH", "xapp-BENCH"
DISCORD_TOKEN = "BENCH.discord.token"
DISCORD_CHANNEL = 920000000000000001


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def register(daemon: Daemon, chat: str) -> None:
    """The bench chat as a registered group (the path a real group's messages take; an unregistered
    chat's messages past a small hourly quota are not stored at all). The bench messages carry no
    trigger: they are stored as context and wake no agent."""
    await daemon.registry.add(Group(chat=chat, folder="bench", requires_trigger=True))


async def telegram_latency(n: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            fake = await FakeTelegram.start(nursery, token=TOKEN)
            config = make_config(
                Path(tmp),
                NGB_TELEGRAM_TOKEN=TOKEN,
                NGB_CHANNELS=json.dumps({"telegram": {"base_url": fake.base_url, "poll_timeout": 30}}),
                NGB_LOG_LEVEL="warning",
            )
            daemon = Daemon(config, launcher_factory=lambda d: FakeLauncher())
            stored_at: dict[str, float] = {}
            handle = daemon.router.handle

            async def timed(inbound: Any) -> Any:
                message = await handle(inbound)
                stored_at[inbound.text] = time.perf_counter()
                return message

            daemon.router.handle = timed  # type: ignore[method-assign]
            await nursery.start(daemon.run)
            await register(daemon, "telegram:-100")
            channel = daemon.channels["telegram"]
            with trio.fail_after(10):
                while channel.state != "connected":
                    await trio.sleep(0.01)
            latencies = []
            polls = fake.poll_count - 1  # counts the long poll that is waiting now (it started already)
            for i in range(n + 20):
                text = f"bench message {i}"
                with trio.fail_after(10):
                    while fake.poll_count <= polls:  # the next long poll (after the last delivery) is waiting
                        await trio.lowlevel.checkpoint()
                await trio.sleep(0.001)  # let that poll reach its wait
                polls = fake.poll_count  # the poll that will deliver this message is counted in it
                t0 = time.perf_counter()
                fake.user_message(-100, text)
                with trio.fail_after(10):
                    while text not in stored_at:
                        await trio.lowlevel.checkpoint()
                if i >= 20:  # warm-up
                    latencies.append(stored_at[text] - t0)
            nursery.cancel_scope.cancel()
    return latencies


async def socket_latency(name: str, n: int) -> list[float]:
    """Slack or Discord: event written on the fake's websocket -> stored by the router."""
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            if name == "slack":
                fake: Any = await FakeSlack.start(nursery, bot_token=SLACK_BOT, app_token=SLACK_APP)
                env = {"NGB_SLACK_BOT_TOKEN": SLACK_BOT, "NGB_SLACK_APP_TOKEN": SLACK_APP,
                       "NGB_CHANNELS": json.dumps({"slack": {"base_url": fake.base_url}})}

                def inject(text: str) -> None:
                    fake.user_message("C0BENCH", text, mention_event=False)
            else:
                fake = await FakeDiscord.start(nursery, token=DISCORD_TOKEN)
                env = {"NGB_DISCORD_TOKEN": DISCORD_TOKEN, "NGB_CHANNELS": json.dumps(
                    {"discord": {"api_base": fake.api_base, "gateway_url": fake.gateway_url}})}

                def inject(text: str) -> None:
                    fake.user_message(DISCORD_CHANNEL, text)
            config = make_config(Path(tmp), NGB_LOG_LEVEL="warning", **env)
            daemon = Daemon(config, launcher_factory=lambda d: FakeLauncher())
            stored_at: dict[str, float] = {}
            handle = daemon.router.handle

            async def timed(inbound: Any) -> Any:
                message = await handle(inbound)
                stored_at[inbound.text] = time.perf_counter()
                return message

            daemon.router.handle = timed  # type: ignore[method-assign]
            await nursery.start(daemon.run)
            await register(daemon, "slack:C0BENCH" if name == "slack" else f"discord:{DISCORD_CHANNEL}")
            channel = daemon.channels[name]
            with trio.fail_after(20):
                while channel.state != "connected":
                    await trio.sleep(0.01)
            latencies = []
            for i in range(n + 20):
                text = f"bench message {i}"
                await trio.sleep(0.002)  # idle between messages, as a chat is
                t0 = time.perf_counter()
                inject(text)
                with trio.fail_after(10):
                    while text not in stored_at:
                        await trio.lowlevel.checkpoint()
                if i >= 20:  # warm-up
                    latencies.append(stored_at[text] - t0)
            nursery.cancel_scope.cancel()
    return latencies


async def bridge_overhead(n: int) -> tuple[float, float]:
    bridge = AsyncioBridge()
    async with bridge.attach() as portal:

        async def noop() -> None:
            return None

        async def trio_noop() -> None:
            return None

        async def back(count: int) -> float:
            t = time.perf_counter()
            for _ in range(count):
                await portal.run(trio_noop)
            return time.perf_counter() - t

        for _ in range(100):
            await bridge.call(noop)
        t = time.perf_counter()
        for _ in range(n):
            await bridge.call(noop)
        forward = (time.perf_counter() - t) / n
        backward = await bridge.call(back, n) / n
    return forward, backward


def idle_rss(channels_env: dict[str, str] | None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {
            **os.environ,
            "NGB_STATE_DIR": str(Path(tmp) / "state"),
            "NGB_WEB_PORT": str(port),
            "NGB_MOUNT_ALLOWLIST": str(Path(tmp) / "none.toml"),
            "NGB_INSTANCE": f"benchch{os.getpid()}",
            "NGB_LOG_LEVEL": "warning",
        }
        for var in ("NGB_TELEGRAM_TOKEN", "NGB_SLACK_BOT_TOKEN", "NGB_SLACK_APP_TOKEN", "NGB_DISCORD_TOKEN", "NGB_CHANNELS"):
            env.pop(var, None)
        env.update(channels_env or {})
        proc = subprocess.Popen([sys.executable, "-m", "ngb", "run", "--no-build"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 30
            status: dict[str, Any] = {}
            last = "no answer"
            while time.time() < deadline:
                if proc.poll() is not None:
                    raise MeasurementFailed(f"`ngb run` exited with status {proc.returncode}")
                try:
                    auth = api_headers(Path(tmp) / "state")  # the token the daemon generated (once up)
                    r = httpx.get(f"http://127.0.0.1:{port}/status", headers=auth, timeout=1)
                    last = f"/status answered {r.status_code}"
                    if r.status_code == 200:
                        status = r.json()
                        if all(c["state"] == "connected" for c in status["channels"].values()):
                            break
                except (httpx.HTTPError, ValueError, KeyError, TokenUnavailable) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                time.sleep(0.1)
            else:
                states = {name: c.get("state") for name, c in status.get("channels", {}).items()}
                raise MeasurementFailed(f"not every channel connected within 30 s: {states or last}")
            time.sleep(3)  # idle
            return rss_bytes(proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def fakes_in_thread() -> tuple[dict[str, str], dict[str, str], Any]:
    """The three fakes in their own thread (their own trio run), for the `ngb run` subprocess.
    Returns the environment for Telegram alone, for all three, and a stop function."""
    import threading

    ready: dict[str, Any] = {}
    started = threading.Event()

    def main() -> None:
        async def serve() -> None:
            async with trio.open_nursery() as nursery:
                tg = await FakeTelegram.start(nursery, token=TOKEN)
                sl = await FakeSlack.start(nursery, bot_token=SLACK_BOT, app_token=SLACK_APP)
                dc = await FakeDiscord.start(nursery, token=DISCORD_TOKEN)
                ready["tg"] = {"NGB_TELEGRAM_TOKEN": TOKEN,
                               "NGB_CHANNELS": json.dumps({"telegram": {"base_url": tg.base_url}})}
                ready["all"] = {
                    "NGB_TELEGRAM_TOKEN": TOKEN, "NGB_SLACK_BOT_TOKEN": SLACK_BOT, "NGB_SLACK_APP_TOKEN": SLACK_APP,
                    "NGB_DISCORD_TOKEN": DISCORD_TOKEN,
                    "NGB_CHANNELS": json.dumps({"telegram": {"base_url": tg.base_url},
                                                "slack": {"base_url": sl.base_url},
                                                "discord": {"api_base": dc.api_base, "gateway_url": dc.gateway_url}}),
                }
                ready["token"] = trio.lowlevel.current_trio_token()
                ready["cancel"] = nursery.cancel_scope
                started.set()

        trio.run(serve)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    started.wait(10)

    def stop() -> None:
        trio.from_thread.run_sync(ready["cancel"].cancel, trio_token=ready["token"])
        thread.join(5)

    return ready["tg"], ready["all"], stop


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=500)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, asyncio {asyncio.__name__}")
    report = Report()

    with report.measuring("bridge round trips"):
        forward, backward = trio.run(bridge_overhead, 1000)
        report.figure("bridge trio->asyncio (1000 calls)", forward * 1e3, "ms/call", 0.2, fmt=".3f")
        report.figure("bridge asyncio->trio (1000 calls)", backward * 1e3, "ms/call", 0.2, fmt=".3f")

    with report.measuring("telegram event -> stored"):
        latencies(report, "telegram", trio.run(telegram_latency, args.messages))
    for name in ("slack", "discord"):
        with report.measuring(f"{name} event -> stored"):
            latencies(report, name, trio.run(socket_latency, name, args.messages))

    mb = 2**20
    rss: dict[str, float] = {}
    labels = {"off": "channels off", "tg": "telegram on", "all": "telegram+slack+discord"}

    def one(key: str, env: dict[str, str] | None) -> None:
        with report.measuring(f"idle RSS, `ngb run`, {labels[key]}"):
            rss[key] = idle_rss(env) / mb
            report.figure(f"idle RSS, `ngb run`, {labels[key]}", rss[key], "MB", 100.0)

    one("off", None)
    tg_env, all_env, stop = fakes_in_thread()
    try:
        one("tg", tg_env)
        one("all", all_env)
    finally:
        stop()
    if "off" in rss and "tg" in rss:
        report.figure("  telegram's share (PTB + httpx + asyncio thread)", rss["tg"] - rss["off"], "MB", fmt="+.1f")
    if "tg" in rss and "all" in rss:
        report.figure("  slack + discord share (slack-sdk, discord.py, aiohttp)", rss["all"] - rss["tg"], "MB",
                      fmt="+.1f")
    return report.exit_code()


def latencies(report: Report, name: str, lat: list[float]) -> None:
    p50, p99 = statistics.median(lat), pct(lat, 99)
    report.figure(f"{name} event -> stored, p50 ({len(lat)} msgs)", p50 * 1e3, "ms", fmt=".2f")
    report.figure(f"{name} event -> stored, p99", p99 * 1e3, "ms", 10.0, fmt=".2f")
    report.figure(f"{name} event -> stored, max", max(lat) * 1e3, "ms", fmt=".2f")


if __name__ == "__main__":
    sys.exit(run(main))
