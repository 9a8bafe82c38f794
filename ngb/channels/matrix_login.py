"""A Matrix login by password, done once: the access token and the device it gives are kept in
``<state>/secrets/matrix/login.json`` (0600, beside the encryption store) and used from then on, so
the password may leave the configuration after the first start and the bot keeps one device (its
encryption keys belong to it). An access token set in the configuration always wins.

A stored login the homeserver no longer takes (logged out, the token revoked) is forgotten; with a
password still configured the channel logs in again (a new device), else it stops with a line that
says what to set."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from .matrix_crypto import STORE_DIR
from .status import AuthError

log = logging.getLogger("ngb.channels.matrix")

LOGIN_FILE = "login.json"


@attrs.frozen
class StoredLogin:
    homeserver: str
    user_id: str
    device_id: str
    access_token: str = attrs.field(repr=False)


def login_path(state_dir: Path) -> Path:
    return state_dir / STORE_DIR / LOGIN_FILE


def read_login(state_dir: Path | None, homeserver: str, user_id: str = "") -> StoredLogin | None:
    """The login kept for this homeserver (and user, when one is configured); None if there is none."""
    if state_dir is None:
        return None
    try:
        data = json.loads(login_path(state_dir).read_text(encoding="utf-8"))
        login = StoredLogin(str(data["homeserver"]), str(data["user_id"]), str(data["device_id"]),
                            str(data["access_token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if login.homeserver != homeserver or (user_id and login.user_id != user_id) or not login.access_token:
        return None
    return login


def write_login(state_dir: Path, login: StoredLogin) -> None:
    """Keep the login (0600, written whole then renamed into place)."""
    path = login_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    part = path.with_suffix(".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(attrs.asdict(login), out)
    os.replace(part, path)


def forget_login(state_dir: Path | None) -> None:
    if state_dir is not None:
        login_path(state_dir).unlink(missing_ok=True)


def login_of(answer: Any, homeserver: str) -> StoredLogin:
    """A LoginResponse of nio -> what is kept."""
    return StoredLogin(homeserver, str(answer.user_id), str(answer.device_id), str(answer.access_token))


class MatrixLogin:
    """The login half of MatrixChannel (a mixin: it shares the channel's settings and client)."""

    settings: Any
    client: Any
    token: str
    keep_secret: Callable[..., None]  # PlatformChannel's
    _api: Callable[..., Awaitable[Any]]  # MatrixChannel's

    def _secrets(self) -> list[str]:
        return [x for x in (self.settings.access_token, self.settings.password, self.token) if x]

    def off_reason(self) -> str | None:
        reason: str | None = super().off_reason()  # type: ignore[misc]
        if reason is not None and self.settings.homeserver and read_login(self.settings.state_dir,
                                                                          self.settings.homeserver, self.settings.user_id):
            return None  # the password is gone from the configuration; the login it gave is kept
        return reason

    def _load_login(self) -> None:
        """No token configured: the kept login's, if there is one."""
        if not self.token:
            stored = read_login(self.settings.state_dir, self.settings.homeserver, self.settings.user_id)
            self.token = stored.access_token if stored is not None else ""
            self.keep_secret(*self._secrets(), loggers=("nio", "aiohttp", "ngb"))

    async def _login(self) -> None:
        """Log in with the password (once): the token and device it gives are kept."""
        settings = self.settings
        if not settings.password or settings.state_dir is None:
            raise AuthError("matrix: no access token: set NGB_MATRIX_ACCESS_TOKEN, or user_id and NGB_MATRIX_PASSWORD")
        self.client.user = settings.user_id
        answer = await self._api("login", settings.password, device_name=settings.device_name)
        login = login_of(answer, settings.homeserver)
        await trio.to_thread.run_sync(write_login, settings.state_dir, login)
        self.token = login.access_token
        self.keep_secret(*self._secrets(), loggers=("nio", "aiohttp", "ngb"))
        log.info("matrix: logged in as %s by password: device %s, its token kept in %s", login.user_id,
                 login.device_id, "secrets/matrix/login.json")

    async def _whoami(self) -> Any:
        """Who the token is; a stored login the homeserver no longer takes is forgotten (and, with
        a password, replaced by a new login)."""
        if not self.token:
            await self._login()
        try:
            return await self._api("whoami")
        except AuthError:
            if self.settings.access_token or self.settings.state_dir is None:
                raise
            log.warning("matrix: the homeserver refused the stored login; %s", "logging in again with the password"
                        if self.settings.password else "set NGB_MATRIX_PASSWORD (or an access token) to log in again")
            await trio.to_thread.run_sync(forget_login, self.settings.state_dir)
            self.token = self.client.access_token = ""
            await self._login()
            return await self._api("whoami")
