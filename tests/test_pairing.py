"""DM pairing (ngb/pairing.py, docs/conversations.md): a stranger's direct message gets one reply
with a code; the operator approves it (ngb pair / the API) and the chat becomes its own group, whose
next message is answered; a wrong, used or expired code is refused with one line; dm_policy open
registers at once, closed says nothing. Against the Telegram fake with the real daemon."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import attrs
import pytest
import trio

from ngb.pairing import PairingError, Pairings, dm_folder, normalize_code
from ngb.records import InboundMessage, PairingState, utcnow
from tests.channel_helpers import wait_until
from tests.fakes.telegram import FakeTelegram
from tests.test_channel_telegram import TOKEN, start
from tests.test_cli import _ngb_async


@pytest.fixture
async def fake_tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram.serving(token=TOKEN) as fake:
        yield fake


CODE = re.compile(r"approve the code ([A-Z0-9]{4}-[A-Z0-9]{4})")


async def settled(d: Any) -> None:
    """Nothing waits in the outbox: what was sent by now is all that will be sent for it."""
    with trio.fail_after(10):
        while await d.daemon.store.outbox_depth():
            await trio.sleep(0.02)


def code_in(fake: Any) -> str:
    [match] = [m for s in fake.sent if (m := CODE.search(s["text"]))]
    return match.group(1)


async def test_a_strangers_dm_gets_one_code_and_is_answered_once_approved(run_daemon: Any, fake_tg: Any) -> None:
    d = await start(run_daemon, fake_tg)
    fake_tg.user_message(5150, "hello bot", user_id=5150)
    await wait_until(lambda: fake_tg.sent)
    code = code_in(fake_tg)
    assert fake_tg.sent[0]["params"]["chat_id"] == 5150
    fake_tg.user_message(5150, "hello? anyone?", user_id=5150)  # the same day: no second code
    await wait_until(lambda: not fake_tg.updates)
    await settled(d)
    assert len(fake_tg.sent) == 1 and d.daemon.registry.get("telegram:5150") is None

    cfg = d.daemon.config
    r = await _ngb_async(cfg.state_dir, cfg.web_port, "pair", "list")
    assert r.returncode == 0 and code in r.stdout.decode() and "telegram:5150" in r.stdout.decode(), r.stdout
    r = await _ngb_async(cfg.state_dir, cfg.web_port, "pair", "approve", "WRNG-KEYS")
    assert r.returncode != 0 and r.stderr.decode().strip() == "ngb: no pairing has the code WRNG-KEYS", r.stderr
    r = await _ngb_async(cfg.state_dir, cfg.web_port, "pair", "approve", code.lower().replace("-", ""))
    assert r.returncode == 0, r.stderr.decode()
    group = d.daemon.registry.get("telegram:5150")
    assert group is not None and group.folder == "dm-telegram-5150" in r.stdout.decode()
    assert (group.requires_trigger, group.allowed_senders) == (False, ("5150",))
    await wait_until(lambda: any("You're connected" in s["text"] for s in fake_tg.sent))

    fake_tg.user_message(5150, "now then", user_id=5150)
    await wait_until(lambda: any(s["text"] == "Echo: now then" for s in fake_tg.sent))
    r = await _ngb_async(cfg.state_dir, cfg.web_port, "pair", "approve", code)
    assert r.returncode != 0 and "was approved already" in r.stderr.decode(), r.stderr
    # a group chat nobody registered gets no code (only direct messages do)
    fake_tg.user_message(-4711, "@andy_bot hi")
    await wait_until(lambda: not fake_tg.updates)
    await settled(d)
    assert not any(s["params"]["chat_id"] == -4711 for s in fake_tg.sent)


async def test_open_registers_at_once_and_answers(run_daemon: Any, fake_tg: Any) -> None:
    d = await start(run_daemon, fake_tg, NGB_DM_POLICY="closed", NGB_DM_POLICIES="telegram=open")
    fake_tg.user_message(6160, "hi there", user_id=6160)
    await wait_until(lambda: any(s["text"] == "Echo: hi there" for s in fake_tg.sent))
    assert d.daemon.registry.get("telegram:6160").folder == "dm-telegram-6160"
    assert len(fake_tg.sent) == 1, fake_tg.sent  # the answer only: no code


async def test_closed_says_nothing(run_daemon: Any, fake_tg: Any) -> None:
    d2 = await start(run_daemon, fake_tg, NGB_DM_POLICY="closed")
    fake_tg.user_message(7170, "hi there", user_id=7170)
    await wait_until(lambda: not fake_tg.updates)
    await settled(d2)
    assert fake_tg.sent == [] and d2.daemon.registry.get("telegram:7170") is None
    assert await d2.daemon.store.pairing_for_chat("telegram:7170") is None


async def test_expired_and_denied_codes(run_daemon: Any) -> None:
    d = await run_daemon()
    told: list[tuple[str, str]] = []
    clock = [utcnow()]
    pairings = Pairings(d.daemon.store, d.daemon.registry, notify=lambda chat, text: told.append((chat, text)),
                        config=d.daemon.config, now=lambda: clock[0])
    dm = InboundMessage(chat="slack:D123", sender="Mallory", sender_id="U999", text="hi", platform_id="x", direct=True)
    assert await pairings.direct_message(dm) is False
    first = await d.daemon.store.pairing_for_chat("slack:D123")
    assert first is not None and len(told) == 1 and first.code[:4] in told[0][1]
    clock[0] += timedelta(days=1, seconds=1)  # past the code's day
    try:
        await pairings.approve(first.code)
        raise AssertionError("an expired code was approved")
    except PairingError as exc:
        assert "expired" in str(exc) and "gets a new one with its next message" in str(exc)
    await pairings.direct_message(dm)  # the next DM: a new code, told again
    second = await d.daemon.store.pairing_for_chat("slack:D123")
    assert second is not None and second.code != first.code and len(told) == 2
    denied = await pairings.deny(second.code)
    assert denied.state is PairingState.DENIED
    clock[0] += timedelta(days=2)
    await pairings.direct_message(dm)  # denied: silence, whatever the day
    assert len(told) == 2
    # wrong codes are rate limited (10 a minute), then refused without looking
    for _ in range(10):
        try:
            await pairings.approve("ZZZZ-ZZZZ")
        except PairingError as exc:
            assert "no pairing has the code" in str(exc)
    try:
        await pairings.approve(second.code)
        raise AssertionError("the 11th try went through")
    except PairingError as exc:
        assert "too many wrong pairing codes" in str(exc)


def test_codes_and_folders() -> None:
    assert normalize_code(" abcd-efgh ") == "ABCDEFGH"
    for bad in ("ABCD-EFG", "ABCD-EFG0", "hello"):
        try:
            normalize_code(bad)
            raise AssertionError(bad)
        except PairingError as exc:
            assert "is not a pairing code" in str(exc)
    taken = {"dm-slack-d123"}
    assert dm_folder("slack:D123", taken.__contains__) == "dm-slack-d123-2"
    assert dm_folder("whatsapp:4915112345678@s.whatsapp.net", lambda n: False) == "dm-whatsapp-4915112345678-s-whatsapp-net"
    assert attrs.has(type(InboundMessage(chat="a:b", sender="s", text="t", platform_id="p")))


def test_pair_commands_without_a_daemon(tmp_path: Any) -> None:
    """On the state directly: the code is approved and the chat's welcome waits in the outbox."""
    from ngb.config import load_config
    from ngb.records import Pairing
    from ngb.store import Store
    from tests.test_cli import ngb

    assert ngb(tmp_path, "pair", "list").stdout.strip() == "no pairings waiting"

    async def seed() -> None:
        store = Store(load_config(env={"NGB_STATE_DIR": str(tmp_path / "state")}).db_path)
        await store.open()
        now = utcnow()
        await store.save_pairing(Pairing(code="ABCDEFGH", chat="telegram:42", sender="Zoe", sender_id="42",
                                         created=now, expires=now + timedelta(hours=1), notified=now))
        await store.close()

    ngb(tmp_path, "groups", "list")  # makes the state
    trio.run(seed)
    listed = ngb(tmp_path, "pair", "list").stdout
    assert "ABCD-EFGH" in listed and "telegram:42" in listed and "Zoe (42)" in listed, listed
    r = ngb(tmp_path, "pair", "approve", "abcd efgh")
    assert r.returncode == 0 and "telegram:42 is now group dm-telegram-42" in r.stdout, r.stderr
    assert "telegram:42" in ngb(tmp_path, "groups", "list").stdout

    async def queued() -> list[str]:
        store = Store(load_config(env={"NGB_STATE_DIR": str(tmp_path / "state")}).db_path)
        await store.open()
        try:
            return [item.text for item in await store.outbox_items("telegram:42")]
        finally:
            await store.close()

    assert trio.run(queued) == ["You're connected: write me anything."]  # sent when the daemon runs
    assert "approved" in ngb(tmp_path, "pair", "list", "--all").stdout
    r = ngb(tmp_path, "pair", "deny", "ABCD-EFGH")
    assert r.returncode != 0 and "was approved already" in r.stderr


async def test_stale_codes_are_forgotten_and_decided_ones_kept(tmp_path: Any) -> None:
    from ngb.records import Pairing
    from ngb.store import Store

    store = Store(tmp_path / "ngb.db")
    await store.open()
    now = utcnow()
    old = now - timedelta(days=31)

    def pairing(code: str, chat: str, expires: Any, state: PairingState = PairingState.PENDING) -> Pairing:
        return Pairing(code=code, chat=chat, sender="x", sender_id="1", created=expires - timedelta(days=1),
                       expires=expires, state=state)

    await store.save_pairing(pairing("AAAAAAAA", "telegram:1", old))
    await store.save_pairing(pairing("BBBBBBBB", "telegram:2", old, PairingState.APPROVED))
    await store.save_pairing(pairing("CCCCCCCC", "telegram:3", now - timedelta(days=2)))  # expired lately: kept
    await store.save_pairing(pairing("DDDDDDDD", "telegram:4", now + timedelta(hours=1)))
    assert {p.code for p in await store.pairings()} == {"BBBBBBBB", "CCCCCCCC", "DDDDDDDD"}
    await store.close()


@pytest.mark.browser
async def test_the_dashboard_lists_codes_and_approves_one(run_daemon: Any, tmp_path: Any) -> None:
    from tests.test_chat_page import open_page
    from tests.test_web_dashboard import TOKEN, q

    d = await run_daemon(NGB_API_TOKEN=TOKEN)
    for n, who in ((1, "Zoe"), (2, "Yann")):
        await d.daemon.router.handle(InboundMessage(chat=f"slack:D{n}", sender=who, sender_id=f"U0ABCDEF{n}", text="hi",
                                                    platform_id=f"p{n}", direct=True))
    [zoe] = [p for p in await d.daemon.store.pairings() if p.chat == "slack:D1"]
    shown_code = f"{zoe.code[:4]}-{zoe.code[4:]}"
    base = str(d.http.base_url).rstrip("/")
    async with open_page(tmp_path) as page:
        await page.goto(f"{base}/?token={TOKEN}")
        await page.goto(base + "/dashboard#groups")
        await page.wait_js("document.querySelectorAll('#pairings tr[data-code]').length === 2")
        row = f"#pairings tr[data-code='{shown_code}']"
        assert (await page.js(f"{q(row)}.textContent")).startswith(shown_code + "slack:D1Zoe (U0ABCDEF1)")
        await page.js(f"{q(row + ' button[data-action=approve]')}.click()")
        msg = await page.wait_js(f"{q('#pairing-msg')}.textContent.includes('is now group') && {q('#pairing-msg')}.textContent")
        assert msg == "slack:D1 is now group dm-slack-d1", msg
        await page.wait_js("document.querySelectorAll('#pairings tr[data-code]').length === 1")
        await page.wait_js(f"{q('#groups-table tr[data-folder=dm-slack-d1]')} !== null")
    group = d.daemon.registry.get("slack:D1")
    assert group is not None and group.allowed_senders == ("U0ABCDEF1",)
