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

from ngb.aio_bridge import AsyncioBridge  # noqa: E402
from ngb.daemon import Daemon  # noqa: E402
from tests.conftest import free_port, make_config  # noqa: E402
from tests.fakes.agent import FakeLauncher  # noqa: E402
from tests.fakes.discord import FakeDiscord  # noqa: E402
from tests.fakes.slack import FakeSlack  # noqa: E402
from tests.fakes.telegram import FakeTelegram  # noqa: E402

TOKEN = "123456:BENCH-token"
SLACK_BOT, SLACK_APP = "xoxb-BENCH", "xapp-BENCH"
DISCORD_TOKEN = "BENCH.discord.token"
DISCORD_CHANNEL = 920000000000000001


def line(name: str, value: str, goal: str = "", verdict: str = "") -> None:
    print(f"{name:<46} {value:>16}   {goal:<18} {verdict}", flush=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


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
            channel = daemon.channels["telegram"]
            with trio.fail_after(10):
                while channel.state != "connected":
                    await trio.sleep(0.01)
            latencies = []
            for i in range(n + 20):
                text = f"bench message {i}"
                polls = fake.poll_count
                with trio.fail_after(10):
                    while fake.poll_count == polls and i:  # the next long poll is waiting
                        await trio.lowlevel.checkpoint()
                await trio.sleep(0.001)  # let that poll reach its wait
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


def rss_of(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) * 1024
    return 0


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
            while time.time() < deadline:
                try:
                    status = httpx.get(f"http://127.0.0.1:{port}/status", timeout=1).json()
                    if all(c["state"] == "connected" for c in status["channels"].values()):
                        break
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                time.sleep(0.1)
            else:
                print(f"  (warning: not every channel connected: {status.get('channels')})")
            time.sleep(3)  # idle
            return rss_of(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=500)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, asyncio {asyncio.__name__}")
    line("figure", "value", "goal")

    forward, backward = trio.run(bridge_overhead, 1000)
    line("bridge trio->asyncio (1000 calls)", f"{forward * 1e3:.3f} ms/call", "< 0.2 ms", "ok" if forward < 2e-4 else "MISS")
    line("bridge asyncio->trio (1000 calls)", f"{backward * 1e3:.3f} ms/call", "< 0.2 ms", "ok" if backward < 2e-4 else "MISS")

    lat = trio.run(telegram_latency, args.messages)
    report("telegram", lat)
    for name in ("slack", "discord"):
        report(name, trio.run(socket_latency, name, args.messages))

    off = idle_rss(None)
    tg_env, all_env, stop = fakes_in_thread()
    try:
        on = idle_rss(tg_env)
        three = idle_rss(all_env)
    finally:
        stop()
    mb = 2**20
    line("idle RSS, `ngb run`, channels off", f"{off / mb:.1f} MB", "<= 100 MB", "ok" if off <= 100 * mb else "MISS")
    line("idle RSS, `ngb run`, telegram on", f"{on / mb:.1f} MB", "<= 100 MB", "ok" if on <= 100 * mb else "MISS")
    line("idle RSS, `ngb run`, telegram+slack+discord", f"{three / mb:.1f} MB", "<= 100 MB",
         "ok" if three <= 100 * mb else "MISS")
    line("  telegram's share (PTB + httpx + asyncio thread)", f"{(on - off) / mb:+.1f} MB")
    line("  slack + discord share (slack-sdk, discord.py, aiohttp)", f"{(three - on) / mb:+.1f} MB")


def report(name: str, lat: list[float]) -> None:
    p50, p99 = statistics.median(lat), pct(lat, 99)
    line(f"{name} event -> stored, p50 ({len(lat)} msgs)", f"{p50 * 1e3:.2f} ms")
    line(f"{name} event -> stored, p99", f"{p99 * 1e3:.2f} ms", "< 10 ms", "ok" if p99 < 0.010 else "MISS")
    line(f"{name} event -> stored, max", f"{max(lat) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
