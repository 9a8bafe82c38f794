"""The dashboard's activity charts with 1,000 groups (docs/api.md, "Activity").

    .venv/bin/python -m bench.bench_activity

The real daemon (store, web; the fake agent), its `activity` table holding 1,000 groups x 48 hours
of counts (48,000 rows, as a daemon serving 1,000 busy groups for two days would have written),
and GET /api/activity as the dashboard asks it: all groups per hour (48 h), one group, and all
groups per day (30 d). Figures: p99 of 30 requests each (goal <= 100 ms for all groups) and the
answer's size (goal <= 16 KB: the charts stay small however many groups there are).
Exits 1 when a figure is past its goal or could not be measured.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.goals import Report  # noqa: E402
from ngb.activity import hour_of  # noqa: E402
from ngb.daemon import Daemon  # noqa: E402
from ngb.records import Group  # noqa: E402
from tests.conftest import api_headers, make_config  # noqa: E402
from tests.fakes.agent import FakeLauncher  # noqa: E402

GROUPS = 1000
HOURS = 48
REQUESTS = 30


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] if len(samples) > 1 else samples[0]


async def measure(report: Report) -> None:
    with tempfile.TemporaryDirectory(prefix="ngb-bench-activity-") as tmp:
        config = make_config(Path(tmp))
        launcher = FakeLauncher(None)
        daemon = Daemon(config, launcher_factory=lambda d: launcher)
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            now = datetime.now(UTC)
            rows = [(hour_of(now - timedelta(hours=h)), f"group{g:04d}", 5, 5, 4, 0, 4, 4 * 1500, 3000, 2_000_000)
                    for g in range(GROUPS) for h in range(HOURS)]
            await daemon.store.add_activity(rows)
            await daemon.registry.add(Group(chat="local:group0007", folder="group0007"))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.web_port}",
                                         headers=api_headers(config), timeout=30) as http:
                for label, params, goal in [("all groups, 48 h", {"hours": "48"}, 100.0),
                                            ("one group, 48 h", {"hours": "48", "group": "group0007"}, 100.0),
                                            ("all groups, 30 days", {"days": "30"}, 100.0)]:
                    times, size, body = [], 0, None
                    for _ in range(REQUESTS):
                        began = time.perf_counter()
                        r = await http.get("/api/activity", params=params)
                        times.append((time.perf_counter() - began) * 1000)
                        size, body = len(r.content), r.json()
                    hours_in_bucket = min(HOURS, now.hour + 1) if "days" in params else 1  # today: each hour so far
                    expected = 5 * (GROUPS if "group" not in params else 1) * hours_in_bucket
                    counted = body["series"][-1]["messages_in"] if body else None
                    if counted != expected:
                        report.fail(f"activity {label}: p99", f"newest bucket counts {counted}, expected {expected}")
                        continue
                    report.figure(f"activity {label}: p99", p99(times), "ms", goal)
                    if "group" not in params and "hours" in params:
                        report.figure("activity answer size (1,000 groups)", size / 1024, "KB", 16.0)
            nursery.cancel_scope.cancel()


def main() -> int:
    print(f"activity charts: {GROUPS} groups x {HOURS} hours of rows\n", flush=True)
    report = Report()
    trio.run(measure, report)
    return report.exit_code()


if __name__ == "__main__":
    sys.exit(main())
