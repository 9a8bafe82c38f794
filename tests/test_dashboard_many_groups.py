"""1,000 groups and the dashboard: it asks for one page of groups and the actors on it, a brief
status (no list of every group, the top spenders' usage only) and the active actors, so what it
moves each second does not grow with the groups. The API's pages, filter and brief status, then
the page itself in real Chromium (tests/test_chat_page.py drives it over the DevTools protocol)."""

from __future__ import annotations

import json

import pytest
import trio

from ngb.records import Group
from tests.channel_helpers import wait_until
from tests.fakes.agent import FakeBehaviour
from tests.test_chat_page import open_page

TOKEN = "dashboard-token-0123456789"


async def many(d, count: int) -> None:
    for i in range(count):
        await d.daemon.registry.add(Group(chat=f"local:g{i:03d}", folder=f"g{i:03d}"))


async def test_groups_are_paged_and_filtered_and_the_status_is_brief(run_daemon) -> None:
    d = await run_daemon(FakeBehaviour(delay=1.0), NGB_IDLE_TIMEOUT="30")
    await many(d, 120)  # and main: 121
    r = await d.http.get("/api/groups", params={"limit": 50, "offset": 100})
    assert r.status_code == 200 and r.headers["X-Total-Count"] == "121"
    assert [g["folder"] for g in r.json()] == [f"g{i:03d}" for i in range(99, 120)]  # main is the first
    r = await d.http.get("/api/groups", params={"q": "G11"})
    assert [g["folder"] for g in r.json()] == [f"g11{i}" for i in range(10)]
    assert r.headers["X-Total-Count"] == "10"
    assert len((await d.http.get("/api/groups")).json()) == 121  # no paging asked: every group, as before
    assert (await d.http.get("/api/groups", params={"limit": "x"})).status_code == 400
    assert (await d.http.get("/api/groups", params={"limit": 5000})).status_code == 400

    actors = (await d.http.get("/debug/actors", params={"folders": "g001,g002,nope"})).json()
    assert sorted(a["folder"] for a in actors) == ["g001", "g002"]
    with trio.fail_after(10):  # every new actor's first look at the store done (its start wake-up)
        while (await d.http.get("/debug/actors", params={"active": 1})).json():
            await trio.sleep(0.05)
    await d.post("g007", "@Andy are you there?")
    await wait_until(lambda: d.daemon.supervisor.actors["g007"].view.state == "running", timeout=5)
    assert [a["folder"] for a in (await d.http.get("/debug/actors", params={"active": 1})).json()] == ["g007"]

    full, brief = (await d.http.get("/status")).json(), (await d.http.get("/status?brief=1")).json()
    assert len(full["groups"]) == 121 and len(full["usage"]["groups"]) == 121
    assert "groups" not in brief and "inboxes" not in brief["queues"] and brief["groups_registered"] == 121
    assert brief["usage"]["groups_total"] == 121 and len(brief["usage"]["groups"]) == 20
    assert brief["usage"]["total"] == full["usage"]["total"]
    assert len(json.dumps(brief)) * 4 < len(json.dumps(full))


@pytest.mark.browser
async def test_the_dashboard_pages_through_many_groups(run_daemon, tmp_path) -> None:
    d = await run_daemon(NGB_API_TOKEN=TOKEN)
    await many(d, 120)
    base = str(d.http.base_url).rstrip("/")

    def shown() -> str:
        return "[...document.querySelectorAll('#groups-table tbody tr')].map(r => r.dataset.folder).join(',')"

    async with open_page(tmp_path) as page:
        await page.goto(base + "/dashboard")
        await page.wait_js("document.querySelector('#login').open")
        await page.type("#token", TOKEN)
        await page.js("document.querySelector('#login-form').requestSubmit()")
        await page.wait_js("!document.querySelector('#login').open")
        # the overview lists the top spenders only, and says how many more there are
        await page.wait_js("!document.querySelector('#usage-more').hidden")
        assert await page.js("document.querySelectorAll('#usage tr').length") == 21  # 20 and the total
        more = await page.js("document.querySelector('#usage-more').textContent")
        assert more.startswith("The 20 groups that spent most this month; 101 more"), more
        await page.js("location.hash = '#groups'")
        first = ",".join(["main", *[f"g{i:03d}" for i in range(49)]])
        await page.wait_js(f"{shown()} === {json.dumps(first)}")
        assert await page.js("document.querySelector('#groups-range').textContent") == "1–50 of 121"
        assert await page.js("document.querySelector('#groups-prev').disabled")
        await page.js("document.querySelector('#groups-next').click()")
        await page.wait_js(f"{shown()} === {json.dumps(','.join(f'g{i:03d}' for i in range(49, 99)))}")
        await page.js("document.querySelector('#groups-next').click()")
        await page.wait_js(f"{shown()} === {json.dumps(','.join(f'g{i:03d}' for i in range(99, 120)))}")
        assert await page.js("document.querySelector('#groups-next').disabled")
        await page.type("#groups-filter", "g11")
        await page.js("document.querySelector('#groups-filter').dispatchEvent(new Event('input'))")
        await page.wait_js(f"{shown()} === {json.dumps(','.join(f'g11{i}' for i in range(10)))}")
        assert await page.js("document.querySelector('#groups-count').textContent") == "(10 matching)"
