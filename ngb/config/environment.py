"""The process environment, read in one place: the ``NGB_*`` settings that are not `Config` fields
(build-time and command-line settings), and the variables other programs own that the daemon
consults (``DOCKER_HOST``, ``EDITOR``, the XDG folders).

Every function takes an optional ``env`` mapping (tests pass their own); None means the process's
environment. Outside ngb/config/ the environment is read only for the systemd protocol
(ngb/ops/sdnotify.py, ngb/logs.py's ``JOURNAL_STREAM``), to hand it to a child process, and in
each channel's own settings module (ngb/channels/*_settings.py: a channel's table is read where
the channel is described, through ngb/channels/settings.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .values import is_secret_key

__all__ = [
    "environ",
    "env_value",
    "api_token_override",
    "chat_sender",
    "host_timezone",
    "config_file_variable",
    "base_image_override",
    "debian_mirror_override",
    "docker_host",
    "editor",
    "user_runtime_dir",
    "user_config_home",
    "user_cache_dir",
    "has_user_session_bus",
    "secret_env_values",
]


def environ(env: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """``env`` when given, else the process environment."""
    return os.environ if env is None else env


def env_value(name: str, env: Mapping[str, str] | None = None) -> str:
    """The variable's value, stripped; "" when unset."""
    return environ(env).get(name, "").strip()


def api_token_override(env: Mapping[str, str] | None = None) -> str:
    """``NGB_API_TOKEN``: the token an ``ngb`` command sends, before the configured or generated one."""
    return env_value("NGB_API_TOKEN", env)


def chat_sender(env: Mapping[str, str] | None = None) -> str:
    """``NGB_CHAT_SENDER``: the name ``ngb chat`` writes as ("" when unset)."""
    return env_value("NGB_CHAT_SENDER", env)


def host_timezone(env: Mapping[str, str] | None = None) -> str:
    """The host's ``TZ`` (UTC when unset): the agent's clock shows the user's time zone."""
    return environ(env).get("TZ", "UTC")


def config_file_variable(env: Mapping[str, str] | None = None) -> str | None:
    """``NGB_CONFIG`` as set (unstripped), or None: the config file the environment names."""
    return environ(env).get("NGB_CONFIG")


def base_image_override(env: Mapping[str, str] | None = None) -> str | None:
    """``NGB_BASE_IMAGE``: the base the agent image is built on (docs/configuration.md), or None."""
    return environ(env).get("NGB_BASE_IMAGE") or None


def debian_mirror_override(env: Mapping[str, str] | None = None) -> str | None:
    """``NGB_DEBIAN_MIRROR``: the Debian mirror for a local base image instead of the host apt's."""
    return environ(env).get("NGB_DEBIAN_MIRROR")


def docker_host(env: Mapping[str, str] | None = None) -> str:
    """Docker's own ``DOCKER_HOST`` ("" when unset)."""
    return environ(env).get("DOCKER_HOST", "")


def editor(env: Mapping[str, str] | None = None) -> str:
    """``EDITOR``, for the fixes doctor and the installer print (nano when unset)."""
    return environ(env).get("EDITOR", "nano")


def user_runtime_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """``XDG_RUNTIME_DIR`` (a rootless Docker's socket lives there), or None."""
    value = environ(env).get("XDG_RUNTIME_DIR")
    return Path(value) if value else None


def has_user_session_bus(env: Mapping[str, str] | None = None) -> bool:
    """Can ``systemctl --user`` reach a user manager (``XDG_RUNTIME_DIR`` or a session bus set)?"""
    e = environ(env)
    return bool(e.get("XDG_RUNTIME_DIR") or e.get("DBUS_SESSION_BUS_ADDRESS"))


def user_config_home(env: Mapping[str, str] | None = None) -> Path:
    """``XDG_CONFIG_HOME``, else ``~/.config``."""
    return Path(environ(env).get("XDG_CONFIG_HOME") or str(Path.home() / ".config"))


def user_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``XDG_CACHE_HOME``, else ``~/.cache``."""
    return Path(environ(env).get("XDG_CACHE_HOME") or str(Path.home() / ".cache"))


def secret_env_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The values (stripped) of ``ANTHROPIC_API_KEY`` and of every ``NGB_*`` variable whose name looks
    like it holds a secret (``NGB_API_TOKEN``, ``NGB_TELEGRAM_TOKEN``, ``NGB_LARK_APP_SECRET``...;
    not the ``*_FILE`` / ``*_ENV`` names, which hold paths and names)."""
    out = []
    for name, value in environ(env).items():
        upper = name.upper()
        if upper.endswith(("_FILE", "_ENV")):
            continue
        if upper == "ANTHROPIC_API_KEY" or (upper.startswith("NGB_") and is_secret_key(upper[4:])):
            out.append(value.strip())
    return out
