"""Browser benchmark (docs/web-browser.md): what headless Chromium costs the agent image and a turn.

    .venv/bin/python -m bench.bench_browser

- image growth: the agent image's browser base minus the base it was added to (MB, from the
  engine's image sizes); goal <= 600 MB.
- cold start: in a container of the agent image, locked down as the daemon runs it (read-only,
  no network, uid 1000, tmpfs /tmp), the runner's own Browser (agent/ngb_agent/browser.py) opens a
  page served by a stand-in for the egress door on the container's loopback: the first
  browser_open of a fresh browser (Chromium started, page loaded, text read), 3 fresh browsers
  in a row; goal: the first <= 5 s. The warm figure is a second page on the running browser.
Exits 1 when a figure is past its goal or could not be measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.goals import Report  # noqa: E402

GOAL_GROWTH_MB = 600.0
GOAL_COLD_S = 5.0

# Runs inside the container with the image's Python: a door stand-in on 127.0.0.1:8788 answering
# every proxied GET with a small page, then fresh browsers, each timed from its first browser_open.
PROBE = r"""
import asyncio, json, sys, time
sys.path.insert(0, "/opt/agent")
from pathlib import Path
from typing import Any
from ngb_agent.browser import Browser
from ngb_agent.browser_tools import BrowserTools

PAGE = b"<html><head><title>Bench</title></head><body><h1>Hello</h1>" + b"<p>text</p>" * 200 + b"</body></html>"

async def door(reader, writer):
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     % len(PAGE) + PAGE)
        await writer.drain()
    except Exception:
        pass
    writer.close()

async def main():
    server = await asyncio.start_server(door, "127.0.0.1", 8788)
    cold, warm = [], []
    for i in range(3):
        browser = Browser(8788, Path("/tmp"))
        tools = BrowserTools(browser)
        t0 = time.perf_counter()
        answer = await tools.call("browser_open", {"url": f"http://bench.example/{i}"})
        cold.append(time.perf_counter() - t0)
        if answer.get("is_error"):
            print(json.dumps({"error": answer["content"][0]["text"]}))
            return
        t0 = time.perf_counter()
        await tools.call("browser_open", {"url": f"http://bench.example/{i}/again"})
        warm.append(time.perf_counter() - t0)
        await browser.close()
    server.close()
    print(json.dumps({"cold": cold, "warm": warm}))

asyncio.run(main())
"""


def image_growth_mb(client: Any, image: str) -> tuple[float | None, str]:
    from ngb.sandbox.image import BASE_LABEL
    from ngb.sandbox.image_browser import BROWSER_FROM_LABEL, BROWSER_LABEL
    from ngb.sandbox.image_docker import image_labels, inspect_image

    info = inspect_image(client, image)
    if info is None:
        return None, f"no image {image} (ngb image build)"
    labels = image_labels(info)
    if not labels.get(BROWSER_LABEL):
        return None, f"{image} has no browser (its build said why)"
    names = labels.get(BASE_LABEL), labels.get(BROWSER_FROM_LABEL)
    with_browser, plain = (inspect_image(client, name) if name else None for name in names)
    if with_browser is None or plain is None:
        return None, "the browser base or its base is gone"
    return (int(with_browser["Size"]) - int(plain["Size"])) / 1e6, str(labels[BROWSER_LABEL])


def cold_start(client: Any, image: str) -> dict[str, Any]:
    out = client.containers.run(
        image, ["/opt/agent/bin/python", "-c", PROBE], entrypoint=[], network_mode="none", user="1000:1000",
        read_only=True, tmpfs={"/tmp": "rw,nosuid,nodev,size=128m,mode=1777", "/home/agent": "rw,size=256m,mode=1777"},
        cap_drop=["ALL"], security_opt=["no-new-privileges"], mem_limit="1g", pids_limit=256, init=True,
        remove=True, stdout=True, stderr=False,
    )  # fmt: skip
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


def measure(report: Report, image: str | None = None) -> None:
    from ngb.sandbox.image import DEFAULT_IMAGE
    from ngb.sandbox.image_docker import docker_client

    image = image or DEFAULT_IMAGE
    client = docker_client()
    growth, what = image_growth_mb(client, image)
    if growth is None:
        report.fail("browser: image growth", what)
        return
    report.info("browser", what)
    report.figure("browser: image growth", growth, "MB", GOAL_GROWTH_MB, fmt=".0f")
    res = cold_start(client, image)
    if "error" in res:
        report.fail("browser: cold start (first browser_open)", str(res["error"])[:200])
        return
    report.figure("browser: cold start (first browser_open)", res["cold"][0], "s", GOAL_COLD_S, fmt=".2f")
    report.info("browser: cold starts, 3 fresh browsers", " ".join(f"{s:.2f}" for s in res["cold"]) + " s")
    report.info("browser: warm browser_open (same browser)", f"{min(res['warm']) * 1000:.0f} ms")


def main() -> int:
    report = Report()
    with report.measuring("browser"):
        measure(report, sys.argv[1] if len(sys.argv) > 1 else None)
    return report.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
