"""One registry builds every platform channel the same way; a channel that is configured but cannot
run (no token, no address) is still built and listed, with state "off" and the reason, for every
platform alike (QQ and WeCom used to vanish from /status instead)."""

from __future__ import annotations

import pytest
import trio

from ngb.channels import REGISTRY, build_channels
from ngb.channels.base import Callbacks, IdempotentSend, Typing
from ngb.channels.skeleton import PlatformChannel
from tests.conftest import make_config


@pytest.mark.parametrize(
    ("name", "table"),
    [
        ("telegram", '{"telegram": {}}'),
        ("discord", '{"discord": {}}'),
        ("qq", '{"qq": {"url": "ws://127.0.0.1:1/"}}'),  # no access token
        ("qq", '{"qq": {}}'),  # no url or listen
        ("wecom", '{"wecom": {"bot_id": "b"}}'),  # no secret
        ("wecom", '{"wecom": {"mode": "callback", "corp_id": "c"}}'),  # callback mode, values missing
        ("email", '{"email": {"address": "bot@example.com", "imap_host": "127.0.0.1"}}'),  # no password
    ],
)
async def test_a_configured_channel_without_its_token_is_listed_as_off(tmp_path, monkeypatch, name, table) -> None:
    for var in ("NGB_ONEBOT_ACCESS_TOKEN", "NGB_WECOM_SECRET", "NGB_WECOM_BOT_ID", "NGB_WECOM_CORP_SECRET",
                "NGB_WECOM_TOKEN", "NGB_WECOM_ENCODING_AES_KEY", "NGB_WECOM_AGENT_ID", "NGB_WECOM_CORP_ID",
                "NGB_EMAIL_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    channels = build_channels(make_config(tmp_path, NGB_CHANNELS=table))
    channel = channels[name]
    assert isinstance(channel, PlatformChannel) and channel.off_reason()
    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run, None)
        assert channel.state == "off" and channel.status.describe()["state"] == "off"
        nursery.cancel_scope.cancel()
    assert not (isinstance(channel, Callbacks) and channel.callback_path)  # an off channel serves no webhook


def test_not_configured_is_not_built(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NGB_ONEBOT_ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("NGB_WECOM_SECRET", raising=False)
    monkeypatch.delenv("NGB_WHATSAPP", raising=False)
    assert list(build_channels(make_config(tmp_path))) == ["local"]
    assert {entry.name for entry in REGISTRY} == {"telegram", "slack", "discord", "lark", "dingtalk", "qq", "wecom", "matrix",
                                                   "whatsapp", "email"}


def test_capabilities_are_declared() -> None:
    from ngb.channels.discord import DiscordChannel
    from ngb.channels.slack import SlackChannel
    from ngb.channels.telegram import TelegramChannel

    assert issubclass(TelegramChannel, PlatformChannel)
    assert DiscordChannel.takes_idempotency_key and SlackChannel.takes_idempotency_key
    assert not hasattr(TelegramChannel, "takes_idempotency_key")
    assert callable(TelegramChannel.typing) and not hasattr(SlackChannel, "typing")
    assert Typing and IdempotentSend  # runtime-checkable protocols (isinstance in outbox, typing_indicator)


def test_the_keys_the_outbox_passes_are_taken() -> None:
    """The outbox passes ``idempotency_key`` to send and send_file of a channel that declares
    takes_idempotency_key, and ``maybe_sent_since`` to one that declares looks_before_resend: each
    such method must take them (Slack's and Matrix's send_file did not: every file the agent sent
    there failed with a TypeError, retried for ever)."""
    import importlib
    import inspect

    checked = 0
    for entry in REGISTRY:
        for ref in entry.channels.values():
            module, _, name = ref.partition(":")
            cls = getattr(importlib.import_module(f"ngb.channels.{module}"), name)
            wanted = {"send": {"idempotency_key"} if getattr(cls, "takes_idempotency_key", False) else set()}
            wanted["send_file"] = set(wanted["send"])
            if getattr(cls, "looks_before_resend", False):
                wanted["send"].add("maybe_sent_since")
            for method, names in wanted.items():
                if names and hasattr(cls, method):
                    params = inspect.signature(getattr(cls, method)).parameters
                    assert names <= set(params), f"{cls.__name__}.{method} takes no {names - set(params)}"
                    checked += 1
    assert checked >= 8  # Slack, Discord, Lark and Matrix: send and send_file each
