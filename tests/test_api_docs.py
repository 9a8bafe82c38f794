"""/docs (Swagger UI from the swagger-ui-py package, served by the daemon) and /openapi.json: behind
the API's auth, every file the page loads comes from the daemon, and the page renders the API's
operations in real headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.test_chat_page import open_page

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "docs-token-0123456789abcdef"


async def test_docs_and_the_document_need_the_token(run_daemon: Any) -> None:
    d = await run_daemon(NGB_API_TOKEN=TOKEN)
    async with d.anonymous() as stranger:
        for path in ("/docs", "/openapi.json", "/docs/assets/swagger-ui-bundle.js"):
            r = await stranger.get(path)
            assert r.status_code == 401 and r.json()["error"], (path, r.status_code, r.text[:200])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    document = await d.http.get("/openapi.json", headers=auth)
    assert document.status_code == 200
    assert document.json() == json.loads((ROOT / "docs" / "openapi.json").read_text())  # the file the docs link
    page = await d.http.get("/docs", headers=auth)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(urls) >= 3 and all(u.startswith("/") and not u.startswith("//") for u in urls), urls  # no CDN
    for url in urls:
        r = await d.http.get(url, headers=auth)
        assert r.status_code == 200 and len(r.content) > 100, (url, r.status_code)
    assert (await d.http.get("/docs/assets/index.html", headers=auth)).status_code == 404  # only what the page uses
    assert (await d.http.get("/docs/assets/..%2F__init__.py", headers=auth)).status_code == 404


@pytest.mark.browser
async def test_the_docs_page_renders_the_operations_in_chromium(run_daemon: Any, tmp_path: Path) -> None:
    d = await run_daemon(NGB_API_TOKEN=TOKEN)
    base = str(d.http.base_url).rstrip("/")
    async with open_page(tmp_path) as page:
        await page.goto(f"{base}/docs?token={TOKEN}")  # the login link signs the browser in
        paths = "[...document.querySelectorAll('.opblock-summary-path')].map(e => e.textContent)"
        await page.wait_js(f"{paths}.length > 20", seconds=20)
        shown = await page.js(paths)
        assert any("/api/chats/{name}/messages" in p for p in shown), shown
        assert await page.js("document.querySelector('.title')?.textContent.includes('NanoGridBot')")
        assert await page.js("location.search") == ""  # the token left the address bar
