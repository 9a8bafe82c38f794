"""Egress door benchmark (docs/web-access.md): what the door costs a download and a connection.

    .venv/bin/python -m bench.bench_web_door

The door (ngb/sandbox/web_door.py, as the daemon runs it: a group's rules, byte accounting, the
idle watch) serves a unix socket like a group's web.sock; a site on 127.0.0.1 sends bytes.

- throughput: 64 MB downloaded through a CONNECT tunnel, and the same directly from the site
  (best of 3 each); goal: the tunnel >= 150 MB/s (a fast home line is ~120 MB/s).
- setup: CONNECT -> "200 Connection established" (rules, resolve, connect, record), 300 in a row;
  goal p99 <= 10 ms.
- refusal: a refused CONNECT (a private address) answered, p99 over 300; goal <= 5 ms.
"""

from __future__ import annotations

import ipaddress
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.goals import Report  # noqa: E402
from ngb.records import WebMode, WebRequest  # noqa: E402
from ngb.sandbox.web_door import WebDoor, WebLimits  # noqa: E402
from ngb.sandbox.web_policy import WebRules  # noqa: E402

SIZE = 64 * 1024 * 1024
CHUNK = b"z" * (256 * 1024)
GOAL_MB_S = 150.0
GOAL_SETUP_P99_MS = 10.0
GOAL_REFUSAL_P99_MS = 5.0
CONNECTIONS = 300


async def serve_site(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Every connection gets SIZE bytes after its first byte arrives (or closes at once on b"q")."""

    async def handler(stream: trio.SocketStream) -> None:
        try:
            first = await stream.receive_some(1)
            if first == b"g":
                sent = 0
                while sent < SIZE:
                    await stream.send_all(CHUNK)
                    sent += len(CHUNK)
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)


async def drain(stream: trio.abc.Stream) -> int:
    got = 0
    while data := await stream.receive_some(1024 * 1024):
        got += len(data)
    return got


async def connect(sock: Path, target: str) -> tuple[bytes, trio.SocketStream]:
    stream = await trio.open_unix_socket(str(sock))
    await stream.send_all(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = await stream.receive_some(4096)
        if not data:
            break
        head += data
    return head, stream


async def measure(report: Report) -> None:
    async def resolver(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return [ipaddress.ip_address(host)]

    logging.getLogger("ngb.sandbox.web_door").setLevel(logging.ERROR)  # 300 refusals: their lines are not the point
    recorded: list[WebRequest] = []
    door = WebDoor(WebLimits(turn_bytes=0, day_bytes=0, max_connections=8, connect_timeout=5, idle_timeout=30),
                   resolver=resolver, on_request=recorded.append)
    with tempfile.TemporaryDirectory(prefix="ngb-bench-door-") as tmp:
        sock = Path(tmp) / "web.sock"
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_site)
            rules = WebRules(folder="bench", mode=WebMode.OPEN, ports=(443, port),
                             allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))
            await nursery.start(door.serve_group, "bench", sock, lambda: rules)
            target = f"127.0.0.1:{port}"

            direct, tunnel = [], []
            for _ in range(3):
                t0 = time.perf_counter()
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(b"g")
                got = await drain(stream)
                direct.append(got / (time.perf_counter() - t0) / 1e6)
                t0 = time.perf_counter()
                head, stream = await connect(sock, target)
                if not head.startswith(b"HTTP/1.1 200"):
                    report.fail("tunnel throughput", f"the door answered {head[:60]!r}")
                    nursery.cancel_scope.cancel()
                    return
                await stream.send_all(b"g")
                got = await drain(stream)
                tunnel.append(got / (time.perf_counter() - t0) / 1e6)
                if got != SIZE:
                    report.fail("tunnel throughput", f"{got} of {SIZE} bytes arrived")
                    nursery.cancel_scope.cancel()
                    return
            report.figure("download directly from the site", max(direct), "MB/s")
            report.figure("download through the door (CONNECT tunnel)", max(tunnel), "MB/s", GOAL_MB_S,
                          higher_is_better=True)
            report.figure("  tunnel / direct", max(tunnel) / max(direct), "x", fmt=".2f")

            setups = []
            for _ in range(CONNECTIONS):
                t0 = time.perf_counter()
                head, stream = await connect(sock, target)
                setups.append((time.perf_counter() - t0) * 1000)
                await stream.send_all(b"q")
                await stream.aclose()
            q = statistics.quantiles(setups, n=100)
            report.figure("CONNECT -> established, p50", statistics.median(setups), "ms", fmt=".2f")
            report.figure("CONNECT -> established, p99", q[98], "ms", GOAL_SETUP_P99_MS, fmt=".2f")

            refusals = []
            for _ in range(CONNECTIONS):
                t0 = time.perf_counter()
                head, stream = await connect(sock, "10.0.0.5:443")
                refusals.append((time.perf_counter() - t0) * 1000)
                await stream.aclose()
            if not head.startswith(b"HTTP/1.1 403 web: 10.0.0.5 is a private address"):
                report.fail("refusal p99", f"the door answered {head[:80]!r}")
            else:
                report.figure("refused CONNECT answered, p99", statistics.quantiles(refusals, n=100)[98], "ms",
                              GOAL_REFUSAL_P99_MS, fmt=".2f")
            nursery.cancel_scope.cancel()


def main() -> int:
    report = Report()
    trio.run(measure, report)
    return report.exit_code()


if __name__ == "__main__":
    raise SystemExit(main())
