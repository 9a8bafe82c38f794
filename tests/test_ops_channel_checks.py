"""`ngb doctor`'s channel checks, against the local fakes of each platform (their real wire format):
a good token is accepted, a wrong one fails with the variable to set, nothing prints a secret."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ngb.cli_ops import add_ops_commands
from ngb.config import load_config
from ngb.ops import doctor as d
from ngb.ops.channel_checks import check_channels
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram


def cfg(tmp_path: Path, channels: dict[str, Any], **env: str) -> Any:
    base = {
        "NGB_STATE_DIR": str(tmp_path / "state"),
        "NGB_MOUNT_ALLOWLIST": str(tmp_path / "cfg" / "allow.toml"),
        "NGB_WEB_PORT": "1",
        "NGB_CHANNELS": json.dumps(channels),
    }
    return load_config(None, env={**base, **env})


async def checks_for(config: Any, **kw: Any) -> dict[str, d.Check]:
    found = await trio.to_thread.run_sync(lambda: check_channels(config, **kw))
    return {c.name: c for c in found}


async def test_no_channels_no_checks(tmp_path: Path) -> None:
    assert await checks_for(cfg(tmp_path, {})) == {}


async def test_telegram_good_and_bad_token(tmp_path: Path) -> None:
    token = "123456:GOOD-token-value"
    async with trio.open_nursery() as nursery:
        fake = await FakeTelegram.start(nursery, token=token, username="andy_bot")
        base = fake.base_url
        good = await checks_for(cfg(tmp_path, {"telegram": {"base_url": base}}, NGB_TELEGRAM_TOKEN=token))
        bad = await checks_for(cfg(tmp_path, {"telegram": {"base_url": base}}, NGB_TELEGRAM_TOKEN="123456:WRONG-token"))
        nursery.cancel_scope.cancel()
    assert good["channel telegram"].status == "ok" and "@andy_bot" in good["channel telegram"].detail
    check = bad["channel telegram"]
    assert check.status == "fail" and "refused" in check.detail
    assert "NGB_TELEGRAM_TOKEN" in (check.fix or "")
    assert "WRONG-token" not in check.detail + (check.fix or "")


async def test_slack_bot_and_app_tokens(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        fake = await FakeSlack.start(nursery, bot_token="xoxb-good", app_token="xapp-good")
        table = {"slack": {"base_url": fake.base_url}}
        good = await checks_for(cfg(tmp_path, table, NGB_SLACK_BOT_TOKEN="xoxb-good", NGB_SLACK_APP_TOKEN="xapp-good"))
        bad_bot = await checks_for(cfg(tmp_path, table, NGB_SLACK_BOT_TOKEN="xoxb-bad", NGB_SLACK_APP_TOKEN="xapp-good"))
        bad_app = await checks_for(cfg(tmp_path, table, NGB_SLACK_BOT_TOKEN="xoxb-good", NGB_SLACK_APP_TOKEN="xapp-bad"))
        nursery.cancel_scope.cancel()
    assert good["channel slack"].status == "ok", good
    assert bad_bot["channel slack"].status == "fail" and "bot token" in bad_bot["channel slack"].detail
    assert bad_app["channel slack"].status == "fail" and "app-level token" in bad_app["channel slack"].detail
    assert "NGB_SLACK_APP_TOKEN" in (bad_app["channel slack"].fix or "")


async def test_discord_token(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        fake = await FakeDiscord.start(nursery, token="GOOD.discord.token")
        table = {"discord": {"api_base": fake.api_base, "gateway_url": fake.gateway_url}}
        good = await checks_for(cfg(tmp_path, table, NGB_DISCORD_TOKEN="GOOD.discord.token"))
        bad = await checks_for(cfg(tmp_path, table, NGB_DISCORD_TOKEN="BAD.discord.token"))
        nursery.cancel_scope.cancel()
    assert good["channel discord"].status == "ok"
    assert bad["channel discord"].status == "fail" and "NGB_DISCORD_TOKEN" in (bad["channel discord"].fix or "")
    assert "BAD.discord.token" not in bad["channel discord"].detail


async def test_unreachable_platform_names_the_url_not_the_token(tmp_path: Path) -> None:
    token = "123456:SECRET-never-printed"
    config = cfg(tmp_path, {"telegram": {"base_url": "http://127.0.0.1:9/bot"}}, NGB_TELEGRAM_TOKEN=token)
    check = (await checks_for(config, timeout=3))["channel telegram"]
    assert check.status == "fail" and "cannot reach" in check.detail
    assert "SECRET" not in check.detail + (check.fix or "")


async def test_missing_token_and_offline(tmp_path: Path) -> None:
    config = cfg(tmp_path, {"telegram": {}, "discord": {}}, NGB_DISCORD_TOKEN="x.y.z")
    found = await checks_for(config, offline=True)
    assert found["channel telegram"].status == "fail" and "NGB_TELEGRAM_TOKEN" in (found["channel telegram"].fix or "")
    assert found["channel discord"].status == "skip"  # --offline: the platform is not asked


async def test_bad_channel_table_is_one_failed_check(tmp_path: Path) -> None:
    config = cfg(tmp_path, {"telegram": {"bogus_key": 1}}, NGB_TELEGRAM_TOKEN="1:a")
    found = await checks_for(config)
    assert found["channels"].status == "fail" and "bogus_key" in found["channels"].detail


async def test_connection_channels_use_the_daemon_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """QQ keeps a websocket rather than answering a request: the running daemon's /status says."""
    monkeypatch.setenv("NGB_ONEBOT_ACCESS_TOKEN", "tok")  # the QQ channel reads its own variable
    config = cfg(tmp_path, {"qq": {"url": "ws://127.0.0.1:9/"}})

    def status(state: str) -> httpx.MockTransport:
        return httpx.MockTransport(lambda request: httpx.Response(200, json={"channels": {"qq": {"state": state}}}))

    down = await checks_for(config)
    assert down["channel qq"].status == "skip"
    refused = await checks_for(config, web_transport=status("unauthorized"))
    assert refused["channel qq"].status == "fail" and "NGB_ONEBOT_ACCESS_TOKEN" in (refused["channel qq"].fix or "")
    connected = await checks_for(config, web_transport=status("connected"))
    assert connected["channel qq"].status == "ok"


async def test_whatsapp_needs_the_bridge_and_pairing(tmp_path: Path) -> None:
    bridge = tmp_path / "bridge"
    bridge.mkdir()
    table = {"whatsapp": {"bridge_dir": str(bridge), "node": "no-such-node-binary"}}
    missing_node = await checks_for(cfg(tmp_path, table))
    assert missing_node["channel whatsapp"].status == "fail" and "scripts/setup.sh" in (missing_node["channel whatsapp"].fix or "")

    (bridge / "node_modules").mkdir()
    from ngb.channels.whatsapp import find_node

    node = find_node()
    assert node is not None, "no Node.js for the bridge: run scripts/setup.sh"
    table["whatsapp"]["node"] = node
    unpaired = await checks_for(cfg(tmp_path, table))
    assert unpaired["channel whatsapp"].status == "warn" and "QR" in (unpaired["channel whatsapp"].fix or "")

    auth = tmp_path / "state" / "whatsapp" / "auth"
    auth.mkdir(parents=True)
    (auth / "creds.json").write_text("{}")
    paired = await checks_for(cfg(tmp_path, table))
    assert paired["channel whatsapp"].status == "skip"  # paired; the connection itself is the daemon's to report


def test_doctor_exit_status_counts_a_refused_channel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = cfg(tmp_path, {"telegram": {}})
    parser = argparse.ArgumentParser(prog="ngb")
    add_ops_commands(parser.add_subparsers(dest="cmd", required=True))
    doctor = d.Doctor(config, docker_factory=lambda: None, offline=True)
    assert d.cmd_doctor(config, parser.parse_args(["doctor", "--json"]), doctor) == 1
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["channel telegram"]["status"] == "fail"


async def test_wecom_callback_mode_app_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes.wecom_callback import FakeWeComApp

    corp, key = "wwDoctorCorp01", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    monkeypatch.setenv("NGB_WECOM_TOKEN", "cbTok3n")
    monkeypatch.setenv("NGB_WECOM_ENCODING_AES_KEY", key)
    async with trio.open_nursery() as nursery:
        fake = await FakeWeComApp.start(nursery, corp_id=corp, agent_id=1000002, corp_secret="right-secret",
                                        token="cbTok3n", encoding_aes_key=key)
        table = {"wecom": {"mode": "callback", "corp_id": corp, "agent_id": 1000002, "api_base": fake.api_base}}
        monkeypatch.setenv("NGB_WECOM_CORP_SECRET", "right-secret")
        good = await checks_for(cfg(tmp_path, table))
        monkeypatch.setenv("NGB_WECOM_CORP_SECRET", "wrong-secret")
        bad = await checks_for(cfg(tmp_path, table))
        nursery.cancel_scope.cancel()
    assert good["channel wecom"].status == "ok", good
    assert bad["channel wecom"].status == "fail" and "NGB_WECOM_CORP_SECRET" in (bad["channel wecom"].fix or "")
    assert "wrong-secret" not in bad["channel wecom"].detail


async def test_dingtalk_client_secret(tmp_path: Path) -> None:
    from tests.fakes.dingtalk import FakeDingTalk

    async with trio.open_nursery() as nursery:
        fake = await FakeDingTalk.start(nursery, client_id="dingdoctor", client_secret="right-secret")
        table = {"dingtalk": {"gateway_url": fake.gateway_url, "api_base": fake.api_base}}
        good = await checks_for(cfg(tmp_path, table, NGB_DINGTALK_CLIENT_ID="dingdoctor", NGB_DINGTALK_CLIENT_SECRET="right-secret"))
        bad = await checks_for(cfg(tmp_path, table, NGB_DINGTALK_CLIENT_ID="dingdoctor", NGB_DINGTALK_CLIENT_SECRET="wrong-secret"))
        nursery.cancel_scope.cancel()
    assert good["channel dingtalk"].status == "ok", good
    assert bad["channel dingtalk"].status == "fail" and "NGB_DINGTALK_CLIENT_SECRET" in (bad["channel dingtalk"].fix or "")
    assert "wrong-secret" not in bad["channel dingtalk"].detail


async def test_lark_app_secret(tmp_path: Path) -> None:
    from tests.fakes.lark import FakeLark

    async with trio.open_nursery() as nursery:
        fake = await FakeLark.start(nursery, app_id="cli_doctor", app_secret="right-secret")
        table = {"lark": {"domain": fake.domain}}
        good = await checks_for(cfg(tmp_path, table, NGB_LARK_APP_ID="cli_doctor", NGB_LARK_APP_SECRET="right-secret"))
        bad = await checks_for(cfg(tmp_path, table, NGB_LARK_APP_ID="cli_doctor", NGB_LARK_APP_SECRET="wrong-secret"))
        nursery.cancel_scope.cancel()
    assert good["channel lark"].status == "ok", good
    assert bad["channel lark"].status == "fail" and "NGB_LARK_APP_SECRET" in (bad["channel lark"].fix or "")
    assert "wrong-secret" not in bad["channel lark"].detail
