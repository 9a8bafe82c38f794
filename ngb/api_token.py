"""The web API's token: the configured one, or one the daemon generates (docs/api.md, "Security").

The web API always needs a token. ``NGB_API_TOKEN`` (or ``api_token_file``) sets it; without one,
the daemon generates a random token at its first start into ``<state_dir>/secrets/api_token``
(directory 700, file 600, written under a temporary name and linked into place, so a file is never
seen half-written and two starts cannot both write one) and reads it on later starts. The ready
line in the log prints a login link carrying it (as Jupyter does), and the ``ngb`` commands that
call the API read it from the same file (`client_token`).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs

from .config import ConfigError, read_secret_file
from .config.environment import api_token_override

TOKEN_FILE = "api_token"


class TokenUnavailable(Exception):
    """A client cannot find the daemon's token; ``str()`` is one line saying what to do."""


@attrs.frozen
class WebToken:
    value: str = attrs.field(repr=False)
    configured: bool  # NGB_API_TOKEN / api_token_file, rather than generated into the state dir
    path: Path | None = None  # the generated token's file


def token_path(config: Any) -> Path:
    return Path(config.state_dir) / "secrets" / TOKEN_FILE


def ensure_api_token(config: Any) -> WebToken:
    """The daemon's token: the configured one, else the one in the state dir (generated on the
    first start). Raises ConfigError (one line) when the file exists but is unsafe or unreadable."""
    if config.api_token:
        return WebToken(config.api_token, configured=True)
    path = token_path(config)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    if not path.exists():
        _write_new(path, secrets.token_urlsafe(32))
    return WebToken(read_secret_file(path, "api token"), configured=False, path=path)


def _write_new(path: Path, token: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(token + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # never replaces: a token another start wrote first wins
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def client_token(config: Any, env: dict[str, str] | None = None) -> str:
    """The token an ``ngb`` command sends: NGB_API_TOKEN / the configured one, else the daemon's
    generated one from the state dir. Raises TokenUnavailable with a one-line reason."""
    given = api_token_override(env)
    if given:
        return given
    if getattr(config, "api_token", None):
        return str(config.api_token)
    path = token_path(config)
    try:
        os.stat(path)
    except FileNotFoundError:
        raise TokenUnavailable(
            f"no API token at {path}: the daemon writes one there when it starts (is this its state_dir?); "
            "or set NGB_API_TOKEN"
        ) from None
    except PermissionError:
        raise TokenUnavailable(
            f"cannot read the API token at {path} (permission denied): run this as the daemon's user "
            "(e.g. sudo -u <that user> ngb ...), or set NGB_API_TOKEN"
        ) from None
    try:
        return read_secret_file(path, "api token")
    except ConfigError as exc:
        if isinstance(exc.__context__, PermissionError) or "Permission denied" in str(exc):
            raise TokenUnavailable(
                f"cannot read the API token at {path} (permission denied): run this as the daemon's user "
                "(e.g. sudo -u <that user> ngb ...), or set NGB_API_TOKEN"
            ) from None
        raise TokenUnavailable(str(exc)) from None


def base_url(config: Any) -> str:
    """The daemon's URL for a client on this host (a wildcard bind becomes loopback)."""
    return client_url(config.web_host, config.web_port)


def client_url(host: str | None, port: int | str) -> str:
    """A client's URL for the daemon's bind address (wildcards become loopback)."""
    host = (host or "").strip() or "127.0.0.1"
    if host in ("0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def login_link(config: Any, token: WebToken, page: str = "/") -> str:
    """The chat page's URL; for a generated token it carries it (``/?token=...``): opening it signs
    the browser in (HttpOnly cookie) and drops the token from the address."""
    url = base_url(config) + page
    return url if token.configured else f"{url}?token={quote(token.value, safe='')}"
