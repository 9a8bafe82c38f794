"""The dashboard's conversation settings in real headless Chromium (driven like
tests/test_web_dashboard.py): a group's panel shows its threads and previews settings and changes
them through PATCH /api/groups."""

from __future__ import annotations

import pytest

from ngb.records import ThreadMode
from tests.test_chat_page import open_page
from tests.test_web_dashboard import TOKEN, q

pytestmark = pytest.mark.browser


async def test_dashboard_changes_a_groups_threads_and_previews(run_daemon, tmp_path) -> None:
    d = await run_daemon(NGB_API_TOKEN=TOKEN)
    base = str(d.http.base_url).rstrip("/")
    async with open_page(tmp_path) as page:
        await page.goto(f"{base}/?token={TOKEN}")
        await page.goto(base + "/dashboard#group/main")
        await page.wait_js(f"{q('#set-threads')} && {q('#settings-msg')}.textContent === '' && "
                           f"{q('#set-web')}.options[0].textContent.includes('main group')")
        assert await page.js(f"[{q('#set-threads')}.value, {q('#set-previews')}.value]") == ["", ""]
        await page.js(f"{q('#set-threads')}.value = 'per_thread'")
        await page.js(f"{q('#set-previews')}.value = 'off'")
        await page.js(f"{q('#settings')}.requestSubmit()")
        await page.wait_js(f"{q('#settings-msg')}.textContent === 'saved'")
        main = d.daemon.registry.get("local:main")
        assert main is not None and (main.threads, main.previews) == (ThreadMode.PER_THREAD, False)
        # back to the daemon's defaults
        await page.js(f"{q('#settings-msg')}.textContent = ''")  # so the next 'saved' is the next save's
        await page.js(f"{q('#set-threads')}.value = ''")
        await page.js(f"{q('#set-previews')}.value = ''")
        await page.js(f"{q('#settings')}.requestSubmit()")
        await page.wait_js(f"{q('#settings-msg')}.textContent === 'saved'")
        main = d.daemon.registry.get("local:main")
        assert main is not None and (main.threads, main.previews) == (None, None)
