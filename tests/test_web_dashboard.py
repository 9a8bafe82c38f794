"""The dashboard (ngb/web/static/dashboard.html) in real headless Chromium against a real Daemon
with the in-process fake agent: sign in, overview, an actor changing state while a turn runs,
message search, pausing a task, and the local chat page answering. Chromium is driven over the
DevTools protocol like tests/test_chat_page.py (no Playwright/Selenium needed)."""

from __future__ import annotations

import json

import pytest

from ngb.records import InboundMessage
from tests.fakes.agent import FakeBehaviour
from tests.test_chat_page import open_page

pytestmark = pytest.mark.browser  # headless Chromium

TOKEN = "dashboard-token-0123456789"


def q(selector: str) -> str:
    return f"document.querySelector({json.dumps(selector)})"


async def test_dashboard_end_to_end(run_daemon, tmp_path) -> None:
    d = await run_daemon(FakeBehaviour(delay=1.5), NGB_API_TOKEN=TOKEN, NGB_IDLE_TIMEOUT="0.3")
    d.http.headers["Authorization"] = f"Bearer {TOKEN}"
    base = str(d.http.base_url).rstrip("/")
    async with open_page(tmp_path) as page:
        # -- sign in, overview
        await page.goto(base + "/dashboard")
        await page.wait_js(f"{q('#login')}.open")
        await page.type("#token", TOKEN)
        await page.js(f"{q('#login-form')}.requestSubmit()")
        await page.wait_js(f"!{q('#login')}.open")
        await page.wait_js(f"{q('#health')}.dataset.ok === 'true'")
        assert await page.js(f"{q('#health')}.textContent") == "OK"
        await page.wait_js(f"{q('[data-channel=local] [data-state]')}?.textContent === 'connected'")
        assert await page.js(f"{q('#containers')}.textContent") == "0 / 5"
        assert await page.js(f"{q('#chat-link')}.getAttribute('href')") == "/"

        # -- groups: the main actor goes running while a turn runs, then back to idle
        await page.js("location.hash = '#groups'")
        state = f"{q('#groups-table tr[data-folder=main] td.state')}?.dataset.state"
        await page.wait_js(f"{state} === 'idle'")
        await d.post("main", "take your time")
        await page.wait_js(f"{state} === 'running'", seconds=5)
        await page.js("location.hash = '#overview'")
        await page.wait_js(f"{q('#live-containers tr[data-folder=main]')} !== null")
        await page.wait_js(f"{q('#containers')}.textContent === '1 / 5'")
        await page.js("location.hash = '#groups'")
        await d.wait_bot_replies("main", 1)
        await page.wait_js(f"{state} === 'idle'", seconds=5)

        # -- a group's messages, with search (and user text never becomes markup)
        for i, text in enumerate(["zebra crossing at noon", "<img src=x onerror=window.pwned=1> zebra", "nothing"]):
            await d.daemon.store.ingest(InboundMessage(chat="local:main", sender="eve", text=text, platform_id=f"s{i}"))
        r = await d.http.post("/api/chats/main/messages", data={"sender": "eve", "text": ""},
                              files=[("file", ("<i>notes.txt", b"plain notes", "text/plain"))])
        assert r.status_code == 202, r.text
        await page.js("location.hash = '#group/main'")
        await page.wait_js(f"{q('#group-title')}.textContent === 'main'")
        await page.wait_js("document.querySelectorAll('#messages .msg').length >= 5")
        # a message's files are links to /api/files, their names as text
        link = await page.wait_js(f"{q('#messages a.file')}?.textContent")
        assert link == "document: i_notes.txt (1 KB)", link
        assert (await page.js(f"{q('#messages a.file')}.getAttribute('href')")).startswith("/api/files/")
        await page.type("#search-q", "zebra")
        await page.js(f"{q('#search')}.requestSubmit()")
        await page.wait_js(f"{q('#search-info')}.textContent.startsWith('2 messages')")
        assert await page.js("document.querySelectorAll('#messages .msg').length") == 2
        assert await page.js("document.querySelectorAll('#messages mark').length") == 2
        assert await page.js("document.querySelectorAll('#messages img').length") == 0
        assert await page.js("window.pwned") is None
        await page.wait_js(f"{q('#actor-state')}.dataset.state === 'idle'")

        # -- tasks: pause one from the page, see the run log
        r = await d.http.post("/api/tasks", json={"group": "main", "prompt": "water the plants",
                                                  "schedule_kind": "interval", "schedule_value": "3600"})
        tid = r.json()["id"]
        await d.daemon.store.run(lambda c: c.execute(
            "INSERT INTO task_runs (task_id, started_at, ended_at, outcome) VALUES (?, '2026-01-01T09:00:00+00:00',"
            " '2026-01-01T09:00:03+00:00', 'ok')", (tid,)))
        await page.js("location.hash = '#tasks'")
        row = f"#tasks-table tr[data-task={tid}]"
        await page.wait_js(f"{q(row + ' .status')}?.textContent === 'active'")
        await page.js(f"{q(row + ' button.pause')}.click()")
        await page.wait_js(f"{q(row + ' .status')}?.textContent === 'paused'")
        assert (await d.daemon.store.task(tid)).status.value == "paused"
        await page.js(f"{q(row + ' button.runs-btn')}.click()")
        await page.wait_js("document.querySelectorAll('#runs-body tr[data-outcome=ok]').length === 1")
        await page.js(f"{q(row + ' button.resume')}.click()")
        await page.wait_js(f"{q(row + ' .status')}?.textContent === 'active'")
        assert page.errors == []

        # -- the local chat page on the same daemon (signed in by the same cookie)
        await page.goto(base + "/")
        await page.wait_js("document.getElementById('status').dataset.state === 'live'")
        await page.type("#input", "hello from the browser")
        await page.press_enter()
        bot = "document.querySelectorAll('#log .msg.bot')"
        await page.wait_js(f"[...{bot}].some(m => m.textContent.includes('Echo: hello from the browser'))", seconds=10)
        assert page.errors == []
