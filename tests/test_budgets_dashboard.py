"""The dashboard's usage card and table (ngb/web/static/dashboard.*) in headless Chromium, fed by
/status's `usage` (the budgets' tallies)."""

from __future__ import annotations

import json

import pytest

from ngb.sandbox.model_proxy import Usage
from tests.test_chat_page import open_page

pytestmark = pytest.mark.browser  # headless Chromium


def q(selector: str) -> str:
    return f"document.querySelector({json.dumps(selector)})"


async def test_dashboard_shows_spend_and_a_reached_cap(run_daemon, tmp_path) -> None:
    d = await run_daemon(NGB_BUDGET_GLOBAL_DAILY_USD="100")
    budgets = d.daemon.budgets
    # 1M input + 100k output tokens of Sonnet: $3 + $1.50
    budgets.record("main", Usage(1_000_000, 100_000, 0, 0, 1, model="claude-sonnet-4-5-20250929"))
    await budgets.set_caps("main", daily=4)
    base = str(d.http.base_url).rstrip("/")
    async with open_page(tmp_path) as page:
        await page.goto(f"{base}/dashboard?token={d.token}")  # the ready line's login link
        await page.wait_js(f"{q('#spend-today')}.textContent === '$4.50 / $100.00'")
        row = "#usage tr[data-folder=main]"
        assert await page.js(f"{q(row + ' .spend-today')}.textContent") == "$4.50"
        assert await page.js(f"{q(row + ' .budget span')}.textContent") == "daily cap reached"
        assert await page.js(f"{q(row + ' .budget span')}.dataset.state") == "blocked"
        await budgets.set_caps("main", daily=10)
        await page.wait_js(f"{q(row + ' .budget span')}.textContent === 'ok'")
        total = q('#usage tr[data-folder="*"] td')
        assert await page.js(f"{total}.textContent") == "all groups"


async def test_dashboard_shows_the_pairing_qr_while_a_channel_waits_for_a_scan(run_daemon, tmp_path) -> None:
    """The WhatsApp bridge reports state "qr" with a payload: the overview shows it as an image (the
    real route, rendered by the browser), and hides it once the channel is paired."""

    class Pairing:  # stands in for the WhatsApp channel's state (tests/test_channel_whatsapp.py drives the real one)
        name, state, qr = "whatsapp", "qr", "2@TEST-QR-PAYLOAD,abc,def"

        async def run(self, submit, *, task_status) -> None:
            task_status.started()

        async def send(self, chat, text, reply_to=None):
            return None

    d = await run_daemon()
    channel = Pairing()
    d.daemon.channels["whatsapp"] = channel
    base = str(d.http.base_url).rstrip("/")
    async with open_page(tmp_path) as page:
        await page.goto(f"{base}/dashboard?token={d.token}")  # the ready line's login link
        await page.wait_js(f"!{q('#pairing')}.hidden && {q('#pairing-qr')}.complete && {q('#pairing-qr')}.naturalWidth > 100")
        assert await page.js(f"{q('#pairing-name')}.textContent") == "whatsapp"
        channel.state, channel.qr = "connected", None
        await page.wait_js(f"{q('#pairing')}.hidden")
