"""DM pairing on the other channels (tests/test_pairing.py has the whole story on Telegram): a
direct message from an unregistered chat gets the pairing code through the platform's own send, a
group chat nobody registered gets nothing; approved, the chat's next message is answered."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.channel_helpers import wait_until
from tests.fakes.discord import FakeDiscord
from tests.fakes.onebot import FakeOneBot, text
from tests.fakes.wecom import FakeWeCom
from tests.fakes.wecom_callback import FakeWeComApp
from tests.test_channel_discord import DM
from tests.test_channel_discord import TOKEN as DC_TOKEN
from tests.test_channel_discord import start as start_discord
from tests.test_channel_onebot import SELF
from tests.test_channel_onebot import TOKEN as QQ_TOKEN
from tests.test_channel_onebot import start as start_qq
from tests.test_channel_wecom import BOT, SECRET
from tests.test_channel_wecom import start as start_wecom
from tests.test_channel_wecom_callback import AGENT, CORP, KEY
from tests.test_channel_wecom_callback import SECRET as APP_SECRET
from tests.test_channel_wecom_callback import TOKEN as APP_TOKEN
from tests.test_channel_wecom_callback import start as start_wecom_app

CODE = re.compile(r"approve the code ([A-Z0-9]{4}-[A-Z0-9]{4})")


@pytest.fixture
async def dc() -> AsyncIterator[FakeDiscord]:
    async with trio.open_nursery() as nursery:
        yield await FakeDiscord.start(nursery, token=DC_TOKEN, heartbeat_ms=300)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def qq() -> AsyncIterator[FakeOneBot]:
    async with trio.open_nursery() as nursery:
        yield await FakeOneBot.start(nursery, access_token=QQ_TOKEN, self_id=SELF, nickname="Andy", heartbeat_interval=0.2)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def wc() -> AsyncIterator[FakeWeCom]:
    async with trio.open_nursery() as nursery:
        yield await FakeWeCom.start(nursery, bot_id=BOT, secret=SECRET)
        nursery.cancel_scope.cancel()


def code_from(texts: list[str]) -> str:
    [found] = [m.group(1) for t in texts if (m := CODE.search(t))]
    return found


async def test_discord_dm(run_daemon: Any, dc: FakeDiscord) -> None:
    d = await start_discord(run_daemon, dc)
    dc.user_message(DM, "hello")
    await wait_until(lambda: dc.sent)
    code = code_from([s["content"] for s in dc.sent])
    assert dc.sent[0]["channel_id"] == DM
    group = await d.daemon.pairings.approve(code)
    assert group.chat == f"discord:{DM}" and group.folder == f"dm-discord-{DM}"
    dc.user_message(DM, "and now?")
    await wait_until(lambda: any(s["content"] == "Echo: and now?" for s in dc.sent))


async def test_qq_private_message(run_daemon: Any, monkeypatch: pytest.MonkeyPatch, qq: FakeOneBot) -> None:
    d = await start_qq(run_daemon, monkeypatch, {"url": qq.url})
    user = 1234567  # a real QQ number (the allow-list takes only those)
    await qq.private_message(user, [text("hello")])
    await wait_until(lambda: qq.sent)
    code = code_from([str(s.get("message")) for s in qq.sent])
    assert (qq.sent[0]["kind"], qq.sent[0]["target"]) == ("private", user)
    group = await d.daemon.pairings.approve(code)
    assert group.chat == f"qq:private:{user}" and group.allowed_senders == (str(user),)


async def test_wecom_single_chat(run_daemon: Any, monkeypatch: pytest.MonkeyPatch, wc: FakeWeCom) -> None:
    d = await start_wecom(run_daemon, monkeypatch, wc)
    await wc.user_message("hello", user="lisi")
    await wait_until(lambda: wc.texts())
    code = code_from(wc.texts())
    group = await d.daemon.pairings.approve(code)
    assert group.chat == "wecom:lisi" and group.folder == "dm-wecom-lisi"


@pytest.fixture
async def app() -> AsyncIterator[FakeWeComApp]:
    async with trio.open_nursery() as nursery:
        app = await FakeWeComApp.start(nursery, corp_id=CORP, agent_id=AGENT, corp_secret=APP_SECRET, token=APP_TOKEN,
                                       encoding_aes_key=KEY)
        yield app
        await app.aclose()
        nursery.cancel_scope.cancel()


async def test_wecom_app_one_to_one(run_daemon: Any, monkeypatch: pytest.MonkeyPatch, app: FakeWeComApp) -> None:
    d = await start_wecom_app(run_daemon, monkeypatch, app)
    await app.user_message("hello", user="wangwu")
    await wait_until(lambda: app.sent)
    code = code_from(app.texts())
    assert app.sent[0]["touser"] == "wangwu"
    group = await d.daemon.pairings.approve(code)
    assert group.chat == "wecom:wangwu"


def test_whatsapp_direct_is_a_persons_jid(tmp_path: Path) -> None:
    from ngb.channels.whatsapp import WhatsAppChannel
    from ngb.channels.whatsapp_settings import WhatsAppSettings

    channel = WhatsAppChannel(WhatsAppSettings(state_dir=tmp_path, node="node"))
    frame = {"id": "m1", "text": "hi", "sender": "4915100000001@s.whatsapp.net"}
    for chat, direct in (("4915100000001@s.whatsapp.net", True), ("120363000000000001@g.us", False),
                         ("98765432109876@lid", True), ("status@broadcast", False)):
        m = channel.to_inbound({**frame, "chat": chat})
        assert m is not None and m.direct is direct, chat
