"""WeCom's ``[channels.wecom]`` table (and its NGB_WECOM_* variables) -> the settings of one of its two
modes: the AI bot's websocket (``mode = "robot"``, the default: WeComSettings) or a self-built
app's HTTP callback (``mode = "callback"``: WeComCallbackSettings). docs/channels/wecom.md."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from ..config import ConfigError, parse_bool, parse_duration, read_secret_file
from .wecom_crypto import decode_aes_key

PREFIX = "wecom"
DEFAULT_URL = "wss://openws.work.weixin.qq.com"
BOT_ID_ENV = "NGB_WECOM_BOT_ID"
SECRET_ENV = "NGB_WECOM_SECRET"
DEFAULT_PART_BYTES = 4000  # markdown messages stop at 4,096 bytes (a stream takes 20,480)
KEYS = {"url", "bot_id", "secret", "secret_file", "part_bytes", "reply_window", "heartbeat_interval",
        "request_timeout", "connect_timeout", "reconnect_base", "reconnect_cap", "enabled"}
CALLBACK_ONLY = ("corp_id", "agent_id", "token", "encoding_aes_key", "corp_secret", "api_base", "msgtype")

# -- callback mode
CALLBACK_PATH = "/channels/wecom/callback"
DEFAULT_API = "https://qyapi.weixin.qq.com"
CALLBACK_PART_BYTES = 2000  # text and markdown app messages stop at 2,048 bytes
ENV = {  # key -> environment variable (the variable wins over the table)
    "corp_id": "NGB_WECOM_CORP_ID",
    "agent_id": "NGB_WECOM_AGENT_ID",
    "token": "NGB_WECOM_TOKEN",
    "encoding_aes_key": "NGB_WECOM_ENCODING_AES_KEY",
    "corp_secret": "NGB_WECOM_CORP_SECRET",
}
SECRETS = ("token", "encoding_aes_key", "corp_secret")
CALLBACK_KEYS = {"mode", "corp_id", "agent_id", *SECRETS, *(f"{k}_file" for k in SECRETS), "api_base", "msgtype",
        "part_bytes", "timestamp_window", "request_timeout", "reconnect_base", "reconnect_cap", "enabled"}
ROBOT_KEYS = {"bot_id", "secret", "secret_file", "url", "reply_window", "heartbeat_interval", "connect_timeout"}


@attrs.frozen
class WeComSettings:
    bot_id: str
    secret: str = attrs.field(repr=False)
    url: str = DEFAULT_URL
    part_bytes: int = DEFAULT_PART_BYTES
    reply_window: float = 300.0  # a callback's req_id can be answered this long (then: aibot_send_msg)
    heartbeat_interval: float = 30.0
    request_timeout: float = 15.0
    connect_timeout: float = 15.0
    reconnect_base: float = 1.0
    reconnect_cap: float = 60.0
    off_reason: str | None = None  # why the channel is off (no bot id or secret)


@attrs.frozen
class WeComCallbackSettings:
    corp_id: str
    agent_id: int
    token: str = attrs.field(repr=False)
    encoding_aes_key: str = attrs.field(repr=False)
    corp_secret: str = attrs.field(repr=False)
    api_base: str = DEFAULT_API
    msgtype: str = "markdown"
    part_bytes: int = CALLBACK_PART_BYTES
    timestamp_window: float = 300.0
    request_timeout: float = 15.0
    reconnect_base: float = 1.0
    reconnect_cap: float = 60.0
    off_reason: str | None = None  # why the channel is off (a value missing)


def _duration(table: Mapping[str, Any], key: str, default: float) -> float:
    try:
        return parse_duration(table.get(key, default))
    except ValueError as exc:
        raise ConfigError(f"channels.wecom.{key}", str(exc)) from None


def _part_bytes(table: Mapping[str, Any], default: int, most: int) -> int:
    try:
        part_bytes = int(table.get("part_bytes", default))
    except ValueError:
        raise ConfigError("channels.wecom.part_bytes", "must be a number") from None
    if not 200 <= part_bytes <= most:
        raise ConfigError("channels.wecom.part_bytes", f"must be between 200 and {most}, got {part_bytes}")
    return part_bytes


def _secret_file(table: Mapping[str, Any], key: str, config_file: Path | None) -> str:
    """The secret in the file named by ``KEY_file`` (relative: to the config file's folder)."""
    path = Path(str(table[f"{key}_file"])).expanduser()
    if not path.is_absolute() and config_file is not None:
        path = config_file.parent / path
    return read_secret_file(path, f"channels.wecom.{key}_file")


def settings_from_config(config: Any, env: Mapping[str, str] | None = None
                         ) -> WeComSettings | WeComCallbackSettings | None:
    """The WeCom settings; None when the configuration does not ask for WeCom (no table and no
    secret, or ``enabled = false``); off (``off_reason``) when the bot id or secret is missing.
    Secret: NGB_WECOM_SECRET, ``secret`` put into the table by the environment, or ``secret_file``.
    ``mode = "callback"`` makes the self-built app's callback channel instead (wecom_callback.py)."""
    env = os.environ if env is None else env
    table = (getattr(config, "channels", {}) or {}).get(PREFIX)
    secret = env.get(SECRET_ENV, "").strip()
    if table is None and not secret:
        return None
    table = dict(table or {})
    mode = str(table.pop("mode", "robot")).strip().lower()
    if mode == "callback":
        return callback_settings(config, env)
    if mode != "robot":
        raise ConfigError("channels.wecom.mode", f'must be "robot" or "callback", got {mode!r}')
    unknown = sorted(set(table) - KEYS)
    if unknown:
        hint = ' (a callback-mode key: add mode = "callback")' if unknown[0].startswith(CALLBACK_ONLY) else ""
        raise ConfigError(f"channels.wecom.{unknown[0]}", f"unknown key{hint}; see docs/channels/wecom.md")
    if not parse_bool(table.get("enabled", True)):
        return None
    config_file = getattr(config, "config_file", None)
    secret = secret or str(table.get("secret") or "").strip()
    if not secret and table.get("secret_file"):
        secret = _secret_file(table, "secret", config_file)
    bot_id = env.get(BOT_ID_ENV, "").strip() or str(table.get("bot_id") or "").strip()
    if not bot_id or not secret:
        missing = " and ".join(n for n, v in (("bot_id (or NGB_WECOM_BOT_ID)", bot_id),
                                              (f"{SECRET_ENV} (or channels.wecom.secret_file)", secret)) if not v)
        return WeComSettings(bot_id="", secret="", off_reason=f"set {missing}")

    url = str(table.get("url", DEFAULT_URL))
    if urlsplit(url).scheme not in ("ws", "wss"):
        raise ConfigError("channels.wecom.url", f"must be a ws:// or wss:// URL, got {url!r}")
    part_bytes = _part_bytes(table, DEFAULT_PART_BYTES, 20_000)
    settings = WeComSettings(
        bot_id=bot_id, secret=secret, url=url, part_bytes=part_bytes,
        reply_window=_duration(table, "reply_window", 300.0), heartbeat_interval=_duration(table, "heartbeat_interval", 30.0),
        request_timeout=_duration(table, "request_timeout", 15.0), connect_timeout=_duration(table, "connect_timeout", 15.0),
        reconnect_base=_duration(table, "reconnect_base", 1.0), reconnect_cap=_duration(table, "reconnect_cap", 60.0))
    return settings


def callback_settings(config: Any, env: Mapping[str, str] | None = None) -> WeComCallbackSettings | None:
    """The callback-mode settings for ``[channels.wecom]`` with ``mode = "callback"``; None with
    ``enabled = false``; off (``off_reason``) when a required value is missing. Secrets: NGB_WECOM_TOKEN / _ENCODING_AES_KEY /
    _CORP_SECRET, or ``token_file`` / ``encoding_aes_key_file`` / ``corp_secret_file``."""
    env = os.environ if env is None else env
    table = dict((getattr(config, "channels", {}) or {}).get(PREFIX) or {})
    unknown = sorted(set(table) - CALLBACK_KEYS)
    if unknown:
        hint = ' (a robot-mode key; this table has mode = "callback")' if unknown[0] in ROBOT_KEYS else ""
        raise ConfigError(f"channels.wecom.{unknown[0]}", f"unknown key{hint}; see docs/channels/wecom.md")
    if not parse_bool(table.get("enabled", True)):
        return None
    config_file = getattr(config, "config_file", None)
    values: dict[str, str] = {}
    for key, var in ENV.items():
        value = env.get(var, "").strip() or str(table.get(key) or "").strip()
        if not value and key in SECRETS and table.get(f"{key}_file"):
            value = _secret_file(table, key, config_file)
        values[key] = value
    missing = [f"{k} (or {ENV[k]})" if k not in SECRETS else f"{ENV[k]} (or channels.wecom.{k}_file)"
               for k in ENV if not values[k]]
    if missing:
        return WeComCallbackSettings(corp_id="", agent_id=0, token="", encoding_aes_key="", corp_secret="",
                                     off_reason=f"callback mode; set {', '.join(missing)}")

    try:
        agent_id = int(values["agent_id"])
    except ValueError:
        raise ConfigError("channels.wecom.agent_id", f"must be the app's AgentId (a number), got {values['agent_id']!r}") from None
    try:
        decode_aes_key(values["encoding_aes_key"])
    except ValueError as exc:
        raise ConfigError("channels.wecom.encoding_aes_key", f"the EncodingAESKey {exc}") from None
    api_base = str(table.get("api_base", DEFAULT_API)).rstrip("/")
    if urlsplit(api_base).scheme not in ("http", "https") or not urlsplit(api_base).netloc:
        raise ConfigError("channels.wecom.api_base", f"must be an http:// or https:// URL, got {api_base!r}")
    msgtype = str(table.get("msgtype", "markdown"))
    if msgtype not in ("markdown", "text"):
        raise ConfigError("channels.wecom.msgtype", f'must be "markdown" or "text", got {msgtype!r}')
    part_bytes = _part_bytes(table, CALLBACK_PART_BYTES, 2048)
    settings = WeComCallbackSettings(
        corp_id=values["corp_id"], agent_id=agent_id, token=values["token"],
        encoding_aes_key=values["encoding_aes_key"], corp_secret=values["corp_secret"], api_base=api_base,
        msgtype=msgtype, part_bytes=part_bytes, timestamp_window=_duration(table, "timestamp_window", 300.0),
        request_timeout=_duration(table, "request_timeout", 15.0), reconnect_base=_duration(table, "reconnect_base", 1.0),
        reconnect_cap=_duration(table, "reconnect_cap", 60.0))
    return settings
