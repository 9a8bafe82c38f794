"""QQ's ``[channels.qq]`` table (and NGB_ONEBOT_ACCESS_TOKEN) -> OneBotSettings: a forward websocket
to the OneBot v11 implementation (``url``) or a reverse one it connects to (``listen``)
(docs/channels/qq-onebot.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ..config import parse_bool, read_secret_file
from .settings import ChannelTable

TABLE = "qq"  # [channels.qq]
TOKEN_ENV = "NGB_ONEBOT_ACCESS_TOKEN"
DEFAULT_PATH = "/onebot/v11/ws"  # reverse mode: where the implementation connects
DEFAULT_PART_LIMIT = 3000  # QQ cuts text messages around 4,500 characters; stay well under
KEYS = {"url", "listen", "path", "access_token", "access_token_file", "part_limit", "api_timeout",
        "connect_timeout", "ping_interval", "reconnect_base", "reconnect_cap", "fetch_missed", "catch_up_pages",
        "enabled", "media_dir", "media_dir_onebot", "image_max_mb", "upload_timeout"}
DEFAULT_IMAGE_MAX_MB = 10  # an image out goes inline as base64 (4/3 of its size) in one websocket frame


@attrs.frozen
class OneBotSettings:
    mode: str  # "forward" | "reverse"
    url: str | None = None  # forward: the implementation's websocket (universal endpoint)
    host: str = "127.0.0.1"  # reverse: where the daemon listens
    port: int = 6700
    path: str = DEFAULT_PATH
    access_token: str = attrs.field(default="", repr=False)
    part_limit: int = DEFAULT_PART_LIMIT
    api_timeout: float = 15.0
    connect_timeout: float = 15.0
    ping_interval: float = 20.0  # websocket ping; no pong within this -> reconnect
    reconnect_base: float = 1.0
    reconnect_cap: float = 60.0
    fetch_missed: bool = True
    catch_up_pages: int = 20  # history pages read per chat in one catch-up
    # files through a folder both sides see (docs/channels/qq-onebot.md "Files"): None = not shared
    media_dir: Path | None = None  # the folder as the daemon sees it
    media_dir_onebot: str | None = None  # the same folder as the implementation sees it (default: media_dir)
    image_max_bytes: int = DEFAULT_IMAGE_MAX_MB * 1024 * 1024  # largest image sent inline as base64
    upload_timeout: float = 300.0  # upload_group_file / upload_private_file (QQ uploads are slow)
    off_reason: str | None = None  # why the channel is off (no token, no url/listen)

    @property
    def media_dir_remote(self) -> str | None:
        """The shared folder's path on the implementation's side (POSIX), or None when not shared."""
        if self.media_dir is None:
            return None
        return (self.media_dir_onebot or str(self.media_dir)).rstrip("/") or "/"

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, token: str, config_file: Path | None = None) -> OneBotSettings:
        t = ChannelTable(TABLE, table, config_file, KEYS, doc="qq-onebot")
        url, listen = t.get("url"), t.get("listen")
        if url and listen:
            raise t.error("listen", "set url (forward websocket) or listen (reverse), not both")
        host, port = "127.0.0.1", 6700
        if url:
            url = t.url("url", "", schemes=("ws", "wss"))
        if listen:
            host, _, raw_port = str(listen).rpartition(":")
            try:
                port = int(raw_port)
            except ValueError:
                raise t.error("listen", f'must be "HOST:PORT", got {listen!r}') from None
            host = host.strip("[]") or "127.0.0.1"
        path = t.string("path", DEFAULT_PATH)  # not cls.path: a slot descriptor
        remote = t.string("media_dir_onebot", "") or None
        if remote is not None and not remote.startswith("/"):
            raise t.error("media_dir_onebot", f"must be an absolute path, got {remote!r}")
        return cls(
            mode="reverse" if listen else "forward",
            url=url or None,
            host=host,
            port=port,
            path=path if path.startswith("/") else "/" + path,
            access_token=token,
            part_limit=t.integer("part_limit", DEFAULT_PART_LIMIT, lo=100, hi=10_000),
            api_timeout=t.duration("api_timeout", 15.0),
            connect_timeout=t.duration("connect_timeout", 15.0),
            ping_interval=t.duration("ping_interval", 20.0),
            reconnect_base=t.duration("reconnect_base", 1.0),
            reconnect_cap=t.duration("reconnect_cap", 60.0),
            fetch_missed=t.boolean("fetch_missed", True),
            catch_up_pages=t.integer("catch_up_pages", 20, lo=1, hi=1000),
            media_dir=t.path("media_dir"),
            media_dir_onebot=remote,
            image_max_bytes=t.integer("image_max_mb", DEFAULT_IMAGE_MAX_MB, lo=1, hi=30) * 1024 * 1024,
            upload_timeout=t.duration("upload_timeout", 300.0),
        )


def settings_from_config(config: Any, env: Mapping[str, str] | None = None) -> OneBotSettings | None:
    """The QQ settings this configuration asks for; None when it does not ask for QQ (no table and no
    token, or ``enabled = false``); off (``off_reason``) when it lacks its token or its url/listen. The token: NGB_ONEBOT_ACCESS_TOKEN, or ``access_token`` put into the table by the
    environment, or ``access_token_file`` (mode 600)."""
    env = os.environ if env is None else env
    tables: Mapping[str, Any] = getattr(config, "channels", {}) or {}
    table = tables.get(TABLE)
    token = env.get(TOKEN_ENV, "").strip()
    if table is None and not token:
        return None
    table = dict(table or {})
    if not parse_bool(table.get("enabled", True)):
        return None
    config_file = getattr(config, "config_file", None)
    if not token:
        token = str(table.get("access_token") or "").strip()
    if not token and table.get("access_token_file"):
        path = Path(str(table["access_token_file"])).expanduser()
        if not path.is_absolute() and config_file is not None:
            path = config_file.parent / path
        token = read_secret_file(path, f"channels.{TABLE}.access_token_file")
    if not table.get("url") and not table.get("listen"):
        return OneBotSettings(mode="forward", off_reason="set channels.qq.url for a forward websocket or "
                              "channels.qq.listen for reverse")
    if not token:
        return OneBotSettings(mode="forward", off_reason=f"no access token: set {TOKEN_ENV} or "
                              "channels.qq.access_token_file")
    return OneBotSettings.from_table(table, token=token, config_file=config_file)
