"""The dashboard's activity charts (ngb/activity.py, GET /api/activity, static/dashboard-charts.js):
what a real daemon (in-process, fake agent) did is counted per hour and group, kept in the store,
read back summed for all groups or one, and drawn in the dashboard in real headless Chromium."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ngb.activity import hour_of
from ngb.records import Group
from tests.fakes.agent import FakeBehaviour
from tests.test_chat_page import open_page

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "activity-token-0123456789"


async def converse(d: Any) -> None:
    """Two questions in main, one in a second group: three turns, three replies."""
    await d.daemon.registry.add(Group(chat="local:family", folder="family", requires_trigger=False))
    for i, (chat, text) in enumerate([("main", "first"), ("main", "second"), ("family", "third")]):
        await d.post(chat, text)
        await d.wait_bot_replies(chat, 1 if chat == "family" else i + 1)


async def test_what_the_daemon_did_is_counted_per_hour_and_group(run_daemon: Any) -> None:
    d = await run_daemon(FakeBehaviour(delay=0.2))
    await converse(d)
    every = (await d.http.get("/api/activity")).json()
    assert every["bucket"] == "hour" and len(every["series"]) == 48, every
    assert every["series"][-1]["bucket"] == hour_of(datetime.now(UTC))  # newest last, this hour included
    now = every["series"][-1]
    assert (now["messages_in"], now["messages_out"], now["turns"], now["replies"]) == (3, 3, 3, 3), now
    assert now["failed_turns"] == 0 and 0.2 <= now["reply_avg_s"] <= now["reply_max_s"] < 10, now
    assert sum(b["messages_in"] for b in every["series"][:-1]) == 0
    family = (await d.http.get("/api/activity", params={"group": "family"})).json()["series"][-1]
    assert (family["messages_in"], family["messages_out"], family["turns"]) == (1, 1, 1), family
    days = (await d.http.get("/api/activity", params={"days": "30"})).json()
    assert days["bucket"] == "day" and len(days["series"]) == 30 and days["series"][-1]["messages_in"] == 3
    # kept in the store, not only in memory: a fresh read of the table holds the same counts
    rows = await d.daemon.store.activity(hour_of(datetime.now(UTC)))
    assert rows[-1].messages_in == 3 and rows[-1].turns == 3
    assert (await d.http.get("/api/activity", params={"group": "nobody"})).status_code == 404
    assert (await d.http.get("/api/activity", params={"hours": "999"})).status_code == 400


async def test_a_failed_turn_is_counted(run_daemon: Any) -> None:
    d = await run_daemon(FakeBehaviour(fail_start=True))
    await d.post("main", "hello?")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = (await d.http.get("/api/activity", params={"hours": "1"})).json()["series"][-1]
        if now["failed_turns"]:
            break
    assert now["failed_turns"] >= 1 and now["messages_in"] == 1, now


@pytest.mark.browser
async def test_the_dashboard_draws_the_charts(run_daemon: Any, tmp_path: Path) -> None:
    d = await run_daemon(FakeBehaviour(delay=0.2), NGB_API_TOKEN=TOKEN)
    d.http.headers["Authorization"] = f"Bearer {TOKEN}"
    await converse(d)
    base = str(d.http.base_url).rstrip("/")
    async with open_page(tmp_path) as page:
        await page.goto(f"{base}/dashboard?token={TOKEN}")
        await page.wait_js("document.querySelectorAll('#charts figure.chart').length === 4")
        totals = json.loads(await page.js("document.getElementById('charts').dataset.totals"))
        assert (totals["messages_in"], totals["messages_out"], totals["turns"], totals["replies"]) == (3, 3, 3, 3), totals
        caption = await page.js("document.querySelector('[data-chart=messages] figcaption').textContent")
        assert caption == "Messages 3 in · 3 out", caption
        bars = await page.js("[...document.querySelectorAll('[data-chart=messages] rect')].map(r => r.querySelector('title').textContent)")
        assert f"{hour_of(datetime.now(UTC))}: 3 in" in bars, bars
        # one group only
        await page.js("{ const s = document.getElementById('activity-group'); s.value = 'family';"
                      " s.dispatchEvent(new Event('change')) }")
        await page.wait_js("JSON.parse(document.getElementById('charts').dataset.totals || '{}').messages_in === 1")
        await page.js("{ const s = document.getElementById('activity-group'); s.value = '';"
                      " s.dispatchEvent(new Event('change')) }")
        await page.wait_js("JSON.parse(document.getElementById('charts').dataset.totals || '{}').messages_in === 3")
        if os.environ.get("NGB_SCREENSHOT") == "1":  # docs/images/dashboard-charts.png is made this way
            await page.screenshot(ROOT / "docs" / "images" / "dashboard-charts.png")
