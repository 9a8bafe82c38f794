"""Every channel reads its [channels.NAME] table through one reader: each mistake is one ConfigError
naming channels.NAME.KEY (never a traceback), and defaults are what the docs say."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ngb.channels.discord import DiscordSettings
from ngb.channels.onebot import OneBotSettings
from ngb.channels.settings import ChannelTable
from ngb.channels.slack import SlackSettings
from ngb.channels.telegram import TelegramSettings
from ngb.channels.whatsapp import WhatsAppSettings
from ngb.config import ConfigError


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: TelegramSettings.from_table({"token": "1:a", "poll_timeout": "soon"}), "channels.telegram.poll_timeout"),
        (lambda: TelegramSettings.from_table({"token": "1:a", "parse_mode": "bbcode"}), "channels.telegram.parse_mode"),
        (lambda: TelegramSettings.from_table({"tokn": "1:a"}), "channels.telegram.tokn"),
        (lambda: SlackSettings.from_table({"app_token": "xoxb-wrong-kind"}), "channels.slack.app_token"),
        (lambda: SlackSettings.from_table({"fetch_missed": "perhaps"}), "channels.slack.fetch_missed"),
        (lambda: DiscordSettings.from_table({"gateway_url": "http://gw"}), "channels.discord.gateway_url"),
        (lambda: DiscordSettings.from_table({"api_base": "discord.com"}), "channels.discord.api_base"),
        (lambda: OneBotSettings.from_table({"url": "ws://a/", "part_limit": 5}, token="t"), "channels.qq.part_limit"),
        (lambda: OneBotSettings.from_table({"url": "ws://a/", "part_limit": 2.5}, token="t"), "channels.qq.part_limit"),
        (lambda: OneBotSettings.from_table({"url": "ws://a/", "listen": "h:1"}, token="t"), "channels.qq.listen"),
        (lambda: WhatsAppSettings.from_table({"manage_bridge": "sometimes"}, Path("/s")), "channels.whatsapp.manage_bridge"),
        (lambda: WhatsAppSettings.from_table({"port": 70000}, Path("/s")), "channels.whatsapp.port"),
        (lambda: WhatsAppSettings.from_table({"port": True}, Path("/s")), "channels.whatsapp.port"),
    ],
)
def test_bad_values_are_one_config_error_naming_the_key(build, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()
    assert caught.value.key == key
    assert "\n" not in str(caught.value)


def test_reverse_qq_listens_on_the_documented_path_by_default() -> None:
    # (it used to be "/<member 'path' of 'OneBotSettings' objects>": a slot descriptor read as the default)
    settings = OneBotSettings.from_table({"listen": "127.0.0.1:6700"}, token="t")
    assert (settings.mode, settings.port, settings.path) == ("reverse", 6700, "/onebot/v11/ws")
    assert OneBotSettings.from_table({"listen": "[::1]:7000", "path": "qq"}, token="t").path == "/qq"


def test_secret_files_relative_to_the_config_file(tmp_path: Path) -> None:
    secret = tmp_path / "tg.token"
    secret.write_text("123:from-file\n")
    os.chmod(secret, 0o600)
    config_file = tmp_path / "ngb.toml"
    assert TelegramSettings.from_table({"token_file": "tg.token"}, config_file).token == "123:from-file"
    assert TelegramSettings.from_table({}, config_file).off_reason  # no token: off, with the reason
    os.chmod(secret, 0o644)
    with pytest.raises(ConfigError) as caught:  # readable by others: refused, like every secret file
        TelegramSettings.from_table({"token_file": "tg.token"}, config_file)
    assert caught.value.key == "channels.telegram.token_file"


def test_reader_helpers() -> None:
    t = ChannelTable("x", {"n": "12", "d": "2m", "u": "wss://h/p", "c": "ALWAYS", "enabled": False}, None, {"n", "d", "u", "c"})
    assert t.integer("n", 0, lo=1, hi=20) == 12 and t.duration("d", 1) == 120 and t.url("u", "", schemes=("wss",)) == "wss://h/p"
    assert t.choice("c", "auto", ("auto", "always")) == "always" and t.boolean("missing", True) is True
    assert t.secret("none") is None and t.secret("none", env="NGB_X_TEST", environ={"NGB_X_TEST": " s3 "}) == "s3"
