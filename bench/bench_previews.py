"""Live previews benchmark (docs/conversations.md): how much sooner people see the answer.

    .venv/bin/python -m bench.bench_previews

The real daemon, the agent image and the Claude Code CLI, the fake model streaming a 480-character
answer in 8-character pieces 0.1 s apart (about 6 s of writing, a slow model), to a warm container
(a first message answered before). The local chat's event stream is read as the chat page reads
it. For each of 3 runs:
- first words: from posting the message to the first ``preview`` event; goal <= 1.5 s;
- whole answer: from posting to the stored reply (information: the model's pace);
- edits a second while it grows (preview_interval 0.5 s): goal <= 2.1 (the throttle holds);
and the ratio first words / whole answer (the share of the wait people no longer stare at).
Exits 1 when a figure is past its goal or could not be measured.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.goals import Report, expect_status  # noqa: E402
from ngb.daemon import Daemon  # noqa: E402
from ngb.sandbox.image import ensure_image  # noqa: E402
from tests.conftest import api_headers, make_config  # noqa: E402
from tests.fakes.anthropic import FakeAnthropic, slow_reply  # noqa: E402

ANSWER = " ".join(f"Sentence {i} of an answer that a slow model writes." for i in range(1, 10))
RUNS = 3
INTERVAL = 0.5
GOAL_FIRST_S = 1.5
GOAL_EDITS_PER_S = 1 / INTERVAL + 0.1


async def one_run(http: httpx.AsyncClient, fake: FakeAnthropic, n: int) -> tuple[float, float, float]:
    """(first preview s, whole answer s, preview events per second) of one question."""
    marker = f"question {n}"
    fake.script(slow_reply(ANSWER, delay=0.1, chunk=8, match=marker))
    last = expect_status(await http.get("/api/chats/main/messages", params={"after": 0})).json()[-1]["id"]
    previews: list[float] = []
    done = trio.Event()
    answered: list[float] = []
    opened = trio.Event()

    async def read() -> None:
        async with http.stream("GET", "/api/chats/main/events", params={"after": last},
                               timeout=httpx.Timeout(30, read=60)) as resp:
            event = "message"
            async for line in resp.aiter_lines():
                opened.set()
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    data = json.loads(line.split(":", 1)[1])
                    if event == "preview":
                        previews.append(time.perf_counter())
                    elif data.get("from_bot"):
                        answered.append(time.perf_counter())
                        done.set()
                        return
                    event = "message"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await opened.wait()
        t0 = time.perf_counter()
        expect_status(await http.post("/api/chats/main/messages", json={"sender": "bench", "text": marker}), 202)
        with trio.fail_after(120):
            await done.wait()
    if not previews:
        raise RuntimeError("no preview event came")
    span = previews[-1] - previews[0]
    rate = (len(previews) - 1) / span if span > 0 else 0.0
    return previews[0] - t0, answered[0] - t0, rate


async def run() -> int:
    report = Report()
    await measure(report)
    return report.exit_code()


async def measure(report: Report) -> None:
    """The figures into ``report`` (also the short set's: bench/short.py)."""
    ensure_image("nanogridbot-agent:latest", progress=lambda s: None)
    tmp = Path(tempfile.mkdtemp(prefix="ngb-bench-previews-"))
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        config = make_config(tmp, NGB_MODEL_UPSTREAM=fake.url, ANTHROPIC_API_KEY="bench", NGB_IDLE_TIMEOUT="60",
                             NGB_INSTANCE=f"benchpv{os.getpid()}", NGB_PREVIEW_INTERVAL=str(INTERVAL))
        daemon = Daemon(config)
        await nursery.start(daemon.run)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.web_port}", headers=api_headers(config),
                                     timeout=60) as http:
            expect_status(await http.post("/api/chats/main/messages", json={"sender": "bench", "text": "hello"}), 202)
            with trio.fail_after(120):  # the container is warm from here on
                while not any(m["from_bot"] for m in (await http.get("/api/chats/main/messages")).json()):
                    await trio.sleep(0.1)
            firsts, wholes, rates = [], [], []
            for n in range(RUNS):
                first, whole, rate = await one_run(http, fake, n)
                firsts.append(first)
                wholes.append(whole)
                rates.append(rate)
                print(f"run {n + 1}: first words {first:.2f} s, whole answer {whole:.2f} s, {rate:.2f} edits/s")
        nursery.cancel_scope.cancel()
    shutil.rmtree(tmp, ignore_errors=True)
    report.figure("first words shown (median of 3, warm container)", statistics.median(firsts), "s", GOAL_FIRST_S,
                  fmt=".2f")
    report.figure("whole answer stored (median of 3)", statistics.median(wholes), "s", fmt=".2f")
    report.figure("first words / whole answer", statistics.median(firsts) / statistics.median(wholes), "", fmt=".2f")
    report.figure("preview edits a second (worst run, interval 0.5 s)", max(rates), "/s", GOAL_EDITS_PER_S, fmt=".2f")


def main() -> int:
    return trio.run(run)


if __name__ == "__main__":
    sys.exit(main())
