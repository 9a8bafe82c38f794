"""The dashboard's web parts in real headless Chromium (driven like tests/test_web_dashboard.py):
the groups table shows each group's web mode in force; a group's panel shows its recent requests
through the egress door with the rule of each refusal and today's sums, and its settings form
changes the mode and the lists (through PATCH /api/groups, so the door sees them at once)."""

from __future__ import annotations

import json

import pytest

from ngb.records import WebMode
from tests.test_chat_page import open_page
from tests.test_web_access_cli import logged
from tests.test_web_dashboard import TOKEN, q

pytestmark = pytest.mark.browser


async def test_dashboard_shows_and_changes_a_groups_web(run_daemon, tmp_path) -> None:
    d = await run_daemon(NGB_API_TOKEN=TOKEN)
    base = str(d.http.base_url).rstrip("/")
    await d.daemon.store.record_web([logged("main", "example.com", minutes=2, down=2 * 1024 * 1024),
                                     logged("main", "10.0.0.5", minutes=1, refused=True),
                                     logged("ops", "ops.example")])
    async with open_page(tmp_path) as page:
        await page.goto(f"{base}/?token={TOKEN}")  # the login link signs the browser in
        await page.goto(base + "/dashboard#groups")
        web_cell = f"{q('#groups-table tr[data-folder=main] td.web')}?.textContent"
        assert await page.wait_js(web_cell) == "open (default)"

        await page.js("location.hash = '#group/main'")
        await page.wait_js(f"{q('#web-recent tbody')}.rows.length === 2 && {q('#web-recent tbody tr')}.dataset.verdict")
        rows = await page.js("[...document.querySelectorAll('#web-recent tbody tr')].map(r => [r.dataset.verdict,"
                             " r.querySelector('.host').textContent, r.querySelector('.rule').textContent])")
        assert rows == [["refused", "10.0.0.5:443", "web: 10.0.0.5 is a private address"],
                        ["allowed", "example.com:443", ""]], rows
        summary = await page.js(f"{q('#web-summary')}.textContent")
        assert summary == "the daemon's default · today: 2 requests, 1 refused, 1.4 KB up / 2.0 MB down", summary
        assert await page.js(f"{q('#web-mode')}.textContent") == "open"

        # change the mode and the allow list from the settings form
        await page.js(f"{q('#set-web')}.value = 'allowlist'")
        await page.js(f"{q('#set-web-allow')}.value = 'Docs.Python.org\\n*.wikipedia.org'")
        await page.js(f"{q('#settings')}.requestSubmit()")
        await page.wait_js(f"{q('#settings-msg')}.textContent === 'saved'")
        assert await page.js(f"{q('#web-mode')}.textContent") == "allowlist"
        assert await page.js(f"{q('#set-web-allow')}.value") == "docs.python.org\n*.wikipedia.org"
        main = d.daemon.registry.get("local:main")
        assert main is not None and (main.web, main.web_allow) == (WebMode.ALLOWLIST, ("docs.python.org", "*.wikipedia.org"))

        # a bad pattern is refused with the reason, and nothing changes
        await page.js(f"{q('#set-web-deny')}.value = {json.dumps('https://evil.example/x')}")
        await page.js(f"{q('#settings')}.requestSubmit()")
        msg = await page.wait_js(f"{q('#settings-msg')}.textContent.includes('not a URL') && {q('#settings-msg')}.textContent")
        assert "web_deny" in msg, msg
        main = d.daemon.registry.get("local:main")
        assert main is not None and main.web_deny == ()
