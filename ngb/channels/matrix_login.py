"""A Matrix login by password, done once: the access token and the device it gives are kept in
``<state>/secrets/matrix/login.json`` (0600, beside the encryption store) and used from then on, so
the password may leave the configuration after the first start and the bot keeps one device (its
encryption keys belong to it). An access token set in the configuration always wins.

A stored login the homeserver no longer takes (logged out, the token revoked) is forgotten; with a
password still configured the channel logs in again (a new device), else it stops with a line that
says what to set."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs

from .matrix_crypto import STORE_DIR

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
