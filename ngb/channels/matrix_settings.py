"""Matrix's ``[channels.matrix]`` table -> MatrixSettings (docs/channels/matrix.md), and its chat
names (``matrix:<room id>``, e.g. ``matrix:!abc:example.org``; room version 12 ids have no server part)."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import attrs

from .chats import chat_name, platform_id_of
from .settings import ChannelTable, setting

PREFIX = "matrix"
KEYS = {"homeserver", "access_token", "access_token_file", "user_id", "password", "password_file", "device_name",
        "invites_from", "reply_in_thread", "sync_timeout",
        "request_timeout", "timeline_limit", "reconnect_base", "reconnect_cap", "display_name", "encryption"}
# "!opaque:server", or from room version 12 on (MSC4291) "!<hash of the create event>" alone
ROOM_ID = re.compile(r"![^\s:]+(:[A-Za-z0-9.:\[\]-]+)?")
USER_ID = re.compile(r"@[^:\s]+:[A-Za-z0-9.:\[\]-]+")


@attrs.frozen
class MatrixSettings:
    homeserver: str = ""  # https://matrix.example.org (the client API's base)
    access_token: str | None = attrs.field(default=None, repr=False)  # the bot account's token (syt_...)
    # or a password login, once (matrix_login.py): the token it gives is kept under the secrets dir
    user_id: str = ""  # @bot:example.org
    password: str | None = attrs.field(default=None, repr=False)
    device_name: str = "NanoGridBot"  # what people's clients show for the bot's device
    # who may invite the bot into a room: user ids ("@alice:example.org") or whole servers
    # (":example.org"); an invite from anyone else is ignored with one log line
    invites_from: tuple[str, ...] = ()
    # "auto": in the thread when the trigger was in one; "always": a thread on the trigger
    reply_in_thread: str = setting("auto", ChannelTable.choice, options=("auto", "always"))
    sync_timeout: float = setting(30.0, ChannelTable.duration)  # the long poll's wait on the server
    request_timeout: float = setting(30.0, ChannelTable.duration)  # any other request
    # events per room one sync returns; a longer gap is paged back through /messages
    timeline_limit: int = setting(100, ChannelTable.integer, lo=1, hi=1000)
    display_name: str = ""  # set on the bot's account at start when given
    # end-to-end encrypted rooms through nio's Olm/Megolm (store under <state>/secrets/matrix)
    encryption: bool = setting(True, ChannelTable.boolean)
    state_dir: Path | None = None  # the daemon's (build_channels sets it); None: no encryption store
    reconnect_base: float = setting(1.0, ChannelTable.duration)
    reconnect_cap: float = setting(60.0, ChannelTable.duration)
    off_reason: str | None = None

    @classmethod
    def from_table(cls, table: dict[str, Any], config_file: Path | None = None) -> MatrixSettings:
        t = ChannelTable(PREFIX, table, config_file, KEYS)
        token = t.secret("access_token")
        homeserver = t.url("homeserver", "http://-") if "homeserver" in t else ""
        raw = t.get("invites_from", [])
        if isinstance(raw, str):
            raw = [part for part in re.split(r"[,\s]+", raw) if part]
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise t.error("invites_from", "must be a list of user ids or :servers")
        for entry in raw:
            if not (USER_ID.fullmatch(entry) or re.fullmatch(r":[A-Za-z0-9.:\[\]-]+", entry)):
                raise t.error("invites_from", f'"{entry}" is neither a user id (@name:server) nor a server (:server)')
        user_id = t.string("user_id", "")
        if user_id and not USER_ID.fullmatch(user_id):
            raise t.error("user_id", f'"{user_id}" is not a user id (@name:server)')
        password = t.secret("password")
        if password and not user_id:
            raise t.error("password", "a password login needs user_id too (@name:server)")
        login = token or password
        missing = [what for what, value in (("homeserver", homeserver),
                                            ("NGB_MATRIX_ACCESS_TOKEN (or user_id and NGB_MATRIX_PASSWORD)", login))
                   if not value]
        return t.fill(
            cls,
            homeserver=homeserver.rstrip("/"),
            access_token=token,
            user_id=user_id,
            password=password,
            device_name=t.string("device_name", "NanoGridBot") or "NanoGridBot",
            invites_from=tuple(raw),
            display_name=t.string("display_name", ""),
            off_reason=f"not configured: set {' and '.join(missing)} (or access_token_file)" if missing else None,
        )

    def may_invite(self, user_id: str) -> bool:
        """Whether an invite from this user is accepted."""
        server = user_id.partition(":")[2]
        return user_id in self.invites_from or f":{server}" in self.invites_from


matrix_chat = partial(chat_name, PREFIX)  # room id -> chat


def room_id_of(chat: str) -> str:
    return platform_id_of(chat, PREFIX, ROOM_ID.fullmatch,
                          "Matrix chat: {chat} (expected matrix:<room id>, e.g. matrix:!abc:example.org)")
