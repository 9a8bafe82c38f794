"""The daemon's configuration: one TOML file, overridden by ``NGB_*`` environment variables.

Where the file comes from: ``load_config(path)``, else ``$NGB_CONFIG``, else ``./ngb.toml`` when it
exists, else no file (all defaults). Top-level TOML keys are the `Config` field names; every field is
overridden by ``NGB_<FIELD_UPPER>`` (an empty variable counts as unset).

Secrets (``api_token``, ``anthropic_api_key``) never live in the TOML file: they come from the
environment (``NGB_API_TOKEN``, ``NGB_ANTHROPIC_API_KEY`` / ``ANTHROPIC_API_KEY``) or from a file
named by ``api_token_file`` / ``anthropic_api_key_file`` that only its owner can read (mode 600).
The same rule holds inside ``[channels.NAME]`` tables: secret-looking keys (``token``,
``*_token``, ``*secret*``, ``*password*``, ``*_key``) are refused there; use ``<key>_file`` instead
(`read_secret_file` checks it).

Every bad value raises `ConfigError`, whose text is one line naming where the value came from:
``NGB_WEB_PORT: must be an integer between 1 and 65535, got "abc"`` or
``web_port in /etc/ngb/ngb.toml: must be an integer between 1 and 65535, got "abc"``.
See docs/configuration.md for every key.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from .prices import parse_model_prices, parse_usd

__all__ = [
    "Config",
    "ConfigError",
    "load_config",
    "parse_bool",
    "parse_duration",
    "parse_size",
    "read_secret_file",
    "is_loopback_host",
    "is_secret_key",
]

ENV_PREFIX = "NGB_"
DEFAULT_FILE = Path("ngb.toml")
MIN_EXPOSED_TOKEN_CHARS = 16  # any api_token (the name predates the rule covering loopback too)
MAX_SECRET_FILE_BYTES = 64 * 1024


class ConfigError(ValueError):
    """A configuration value is wrong. ``str()`` is one line: ``<key>[ in <file>]: <message>``.

    ``key`` names the environment variable when the value came from the environment, and the TOML
    key (with ``source``, the file) when it came from the file.
    """

    def __init__(self, key: str, message: str, source: str | Path | None = None) -> None:
        self.key = key
        self.message = _one_line(message)
        self.source = str(source) if source is not None else None
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.key} in {self.source}" if self.source else self.key
        return f"{where}: {self.message}"


# --------------------------------------------------------------------------------------------------
# Value parsers. Each takes a raw value (a TOML value, an environment string, or an already typed
# value when Config is built directly) and returns the typed value, or raises ValueError whose text
# is the message part of a ConfigError ("must be ..., got ...").


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) if ("\n" in str(text) or "\r" in str(text)) else str(text)


def _got(value: Any) -> str:
    """The offending value, quoted, short, on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(shown, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(value: Any) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off`` (case-insensitive) or a real bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise ValueError(f"must be a boolean (true/false, yes/no, 1/0), got {_got(value)}")


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, *, allow_zero: bool = False) -> float:
    """Seconds as a number, or a string: ``"90"``, ``"90s"``, ``"5m"``, ``"1h"``, ``"1h30m"``, ``"250ms"``."""
    limit = "at least 0" if allow_zero else "greater than 0"
    expected = f'must be a duration {limit}, like 90, "90s", "5m" or "1h", got {_got(value)}'
    seconds: float
    if isinstance(value, bool):
        raise ValueError(expected)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif text and re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d)\s*)+", text):
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise ValueError(expected)
    else:
        raise ValueError(expected)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(expected)
    return seconds


_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
MIN_CONTAINER_MEMORY = 6 * 1024**2  # Docker refuses less than 6 MiB


def parse_size(value: Any) -> int:
    """A Docker size string (``"512m"``, ``"1g"``, ``"1.5g"``, ``"1024k"``, ``"2GiB"``) or a number
    of bytes, as bytes (binary units, as Docker counts them)."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.fullmatch(value.strip())):
        number = float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
        if not math.isfinite(number):  # "1111...1" (400 digits) is inf: int() would raise OverflowError
            raise ValueError(f"is too large, got {_got(value)}")
        size = int(number)
    else:
        raise ValueError(f'must be a size like "512m" or "2g", got {_got(value)}')
    return size


def _memory(value: Any) -> str:
    size = parse_size(value)
    if size < MIN_CONTAINER_MEMORY:
        raise ValueError(f'must be at least "6m" (Docker\'s minimum), got {_got(value)}')
    if isinstance(value, int):
        return str(value)
    return value.strip().lower().replace(" ", "")


def _int_range(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    bounds = f"between {lo} and {hi}" if hi is not None else f"of at least {lo}"

    def parse(value: Any) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            number = int(value)
        if number is None or number < lo or (hi is not None and number > hi):
            raise ValueError(f"must be an integer {bounds}, got {_got(value)}")
        return number

    return parse


def _float_range(lo: float, hi: float, *, lo_open: bool = True) -> Callable[[Any], float]:
    bounds = f"greater than {lo:g} and at most {hi:g}" if lo_open else f"between {lo:g} and {hi:g}"

    def parse(value: Any) -> float:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if (
            number is None
            or not math.isfinite(number)
            or number > hi
            or number < lo
            or (lo_open and number == lo)
        ):
            raise ValueError(f"must be a number {bounds}, got {_got(value)}")
        return number

    return parse


def _duration(*, allow_zero: bool = False) -> Callable[[Any], float]:
    return lambda value: parse_duration(value, allow_zero=allow_zero)


def _string(pattern: str, description: str, *, lower: bool = False) -> Callable[[Any], str]:
    regex = re.compile(pattern)

    def parse(value: Any) -> str:
        if isinstance(value, str):
            text = value.strip().lower() if lower else value.strip()
            if regex.fullmatch(text):
                return text
        raise ValueError(f"must be {description}, got {_got(value)}")

    return parse


def _path(value: Any) -> Path:
    if isinstance(value, Path):
        text = str(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
    else:
        raise ValueError(f"must be a file system path, got {_got(value)}")
    if "\x00" in text:
        raise ValueError("must be a file system path without NUL characters")
    try:
        return Path(text).expanduser()
    except RuntimeError:  # "~nobody-here/x": no such user (was an uncaught RuntimeError)
        raise ValueError(f"names a home folder that does not exist, got {_got(value)}") from None


def _optional_path(value: Any) -> Path | None:
    return None if value is None else _path(value)


def _secret(value: Any) -> str | None:
    # Never echo the value: it is a secret.
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got a {type(value).__name__} (value not shown)")
    text = value.strip()
    if not text:
        return None
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise ValueError("must not contain spaces, line breaks or control characters (value not shown)")
    return text


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, ``127.0.0.0/8`` and ``::1`` (brackets allowed)."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def _host(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        try:
            ipaddress.ip_address(bare)
            return bare
        except ValueError:
            if _HOSTNAME_RE.fullmatch(text):
                return text
    raise ValueError(f'must be an IP address or host name, like "127.0.0.1" or "0.0.0.0", got {_got(value)}')


def _url(value: Any) -> str:
    expected = f'must be an http(s) URL like "https://api.anthropic.com", got {_got(value)}'
    if not isinstance(value, str) or not value.strip():
        raise ValueError(expected)
    text = value.strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(expected) from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(expected)
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain a user name or password (credentials never go in the config)")
    if parts.query or parts.fragment:
        raise ValueError(f"must not have a query string or fragment, got {_got(value)}")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ValueError(
            f"must use https unless the host is loopback (the API key is sent there), got {_got(value)}"
        )
    return text.rstrip("/")


def _trigger(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        if 1 <= len(text.removeprefix("@")) <= 64 and not any(ch.isspace() for ch in text):
            return text
    raise ValueError(f'must be one word of 1-64 characters, like "@Andy", got {_got(value)}')


_CHANNEL_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def _chat(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        channel, sep, chat_id = text.partition(":")
        if sep and _CHANNEL_NAME_RE.fullmatch(channel) and chat_id and not any(c.isspace() for c in chat_id):
            return text
    raise ValueError(f'must look like <channel>:<chat id>, e.g. "local:main", got {_got(value)}')


def _image(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        if 0 < len(text) <= 255 and re.fullmatch(r"[a-z0-9][A-Za-z0-9._/:@+-]*", text):
            return text
    raise ValueError(f'must be a Docker image reference like "nanogridbot-agent:latest", got {_got(value)}')


def _network(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        if text == "host" or text.startswith("container:"):
            raise ValueError(
                f"{_got(value)} would share a network namespace with the host or another container "
                '(reaching the daemon\'s own ports); use "none" (default), "bridge" or a user network'
            )
        if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", text):
            return text
    raise ValueError(f'must be a Docker network name ("none", "bridge", ...), got {_got(value)}')


SECRET_KEY_RE = re.compile(r"(?:^|_)(?:token|key)$|secret|password|passwd", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """Does a config key name look like it holds a secret? (``token``, ``bot_token``,
    ``app_secret``, ``password``, ``api_key``...; ``*_file`` and ``*_env`` names are fine)."""
    low = key.lower()
    if low.endswith(("_file", "_env")):
        return False
    return bool(SECRET_KEY_RE.search(low))


def _channels(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a table of [channels.NAME] tables, got {_got(value)}")
    out: dict[str, dict[str, Any]] = {}
    for name, table in value.items():
        if not isinstance(name, str) or not _CHANNEL_NAME_RE.fullmatch(name):
            raise ValueError(f"channel names must match [a-z][a-z0-9_-]*, got {_got(name)}")
        if not isinstance(table, Mapping):
            raise ValueError(f"channels.{name} must be a table, got {_got(table)}")
        out[name] = dict(table)
    return out


_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_.]*)?")


def _module_list(value: Any) -> tuple[str, ...]:
    """Plugin module paths: a list (TOML) or a comma-separated string (environment)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f"must be a list of module paths, got {_got(value)}")
    out = []
    for item in items:
        if isinstance(value, str) and not item.strip():
            continue  # "a,,b" and a trailing comma
        if not isinstance(item, str) or not _MODULE_RE.fullmatch(item.strip()):
            raise ValueError(f'must be a list of module paths like "my_plugin" or "pkg.mod:attr", got {_got(item)}')
        out.append(item.strip())
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# The Config record.


def _field(default: Any, parse: Callable[[Any], Any], *, secret: bool = False) -> Any:
    return attrs.field(default=default, metadata={"parse": parse, "secret": secret})


def _default_allowlist() -> Path:
    return Path("~/.config/nanogridbot/mount-allowlist.toml").expanduser()


@attrs.frozen(kw_only=True)
class Config:
    """Every setting of the daemon. Build it with `load_config`; building it directly validates
    and normalizes the values too (raising `ConfigError` named by the field)."""

    state_dir: Path = _field(Path("state"), _path)
    web_host: str = _field("127.0.0.1", _host)
    web_port: int = _field(8640, _int_range(1, 65535))
    api_token: str | None = _field(None, _secret, secret=True)
    api_token_file: Path | None = _field(None, _optional_path)
    max_containers: int = _field(5, _int_range(1, 10))
    trigger: str = _field("@Andy", _trigger)
    model_upstream: str = _field("https://api.anthropic.com", _url)
    anthropic_api_key: str | None = _field(None, _secret, secret=True)
    anthropic_api_key_file: Path | None = _field(None, _optional_path)
    image: str = _field("nanogridbot-agent:latest", _image)
    container_memory: str = _field("1g", _memory)
    container_pids: int = _field(256, _int_range(16, 100_000))
    # Two CPUs let the runner import the SDK while the CLI boots (a cold turn ~0.8 s instead of
    # ~1.0 s); never more than the host has, or Docker refuses to start the container.
    container_cpus: float = _field(float(min(2, os.cpu_count() or 1)), _float_range(0.0, 1024.0))
    idle_timeout: float = _field(300.0, _duration())
    turn_timeout: float = _field(900.0, _duration())
    start_timeout: float = _field(60.0, _duration())
    min_task_interval: float = _field(60.0, _duration())
    prescript_timeout: float = _field(60.0, _duration())
    shutdown_grace: float = _field(30.0, _duration(allow_zero=True))
    sender_rate_per_minute: int = _field(20, _int_range(0, 100_000))
    group_rate_per_minute: int = _field(60, _int_range(0, 100_000))
    # Chats nobody registered (docs/security.md): stored up to these counts, the rest dropped
    unregistered_per_chat_per_hour: int = _field(30, _int_range(0, 100_000))
    unregistered_per_hour: int = _field(600, _int_range(0, 1_000_000))
    unregistered_keep: int = _field(5000, _int_range(0, 10_000_000))
    max_message_chars: int = _field(16000, _int_range(1, 1_000_000))
    max_body_bytes: int = _field(65536, _int_range(1024, 64 * 1024 * 1024))
    mount_allowlist: Path = _field(attrs.Factory(_default_allowlist), _path)
    instance: str = _field("default", _string(r"[a-z0-9][a-z0-9-]{0,31}", "1-32 of a-z, 0-9 and -"))
    log_level: str = _field(
        "info",
        _string(
            r"debug|info|warning|error|critical", "one of debug, info, warning, error, critical", lower=True
        ),
    )
    log_format: str = _field("auto", _string(r"auto|text|json|journal", "one of auto, text, json, journal", lower=True))
    model_retries: int = _field(3, _int_range(0, 10))
    model_stall_timeout: float = _field(120.0, _duration(allow_zero=True))
    model_max_body_bytes: int = _field(8 * 1024 * 1024, _int_range(64 * 1024, 32 * 1024 * 1024))
    # Spending (docs/budgets.md): USD caps, 0 = no cap; model prices in USD per million tokens.
    budget_daily_usd: float = _field(0.0, parse_usd)
    budget_monthly_usd: float = _field(0.0, parse_usd)
    budget_global_daily_usd: float = _field(0.0, parse_usd)
    budget_global_monthly_usd: float = _field(0.0, parse_usd)
    model_prices: dict[str, dict[str, float]] = _field(attrs.Factory(dict), parse_model_prices)
    container_network: str = _field("none", _network)
    # The uid agent containers run as, and the only host uid besides the daemon's that may reach
    # a group's sockets and folders (ngb/hostperms.py); never 0.
    agent_uid: int = _field(1000, _int_range(1, 2**31 - 2))
    main_chat: str = _field("local:main", _chat)
    plugins: tuple[str, ...] = _field((), _module_list)  # docs/plugins.md
    plugin_timeout: float = _field(10.0, _duration())
    channels: dict[str, dict[str, Any]] = _field(attrs.Factory(dict), _channels)
    # Not settable: where the values came from (load_config fills them in).
    config_file: Path | None = attrs.field(default=None, metadata={"internal": True})
    origins: dict[str, str] = attrs.field(factory=dict, eq=False, repr=False, metadata={"internal": True})

    def __attrs_post_init__(self) -> None:
        for f in attrs.fields(type(self)):
            parse = f.metadata.get("parse")
            if parse is None:
                continue
            try:
                value = parse(getattr(self, f.name))
            except ValueError as exc:
                raise ConfigError(f.name, str(exc)) from None
            object.__setattr__(self, f.name, value)
        problem = _cross_check(self)
        if problem is not None:
            raise ConfigError(*problem)

    # Derived paths.
    @property
    def assistant_name(self) -> str:
        return self.trigger.removeprefix("@")

    @property
    def db_path(self) -> Path:
        return self.state_dir / "ngb.db"

    @property
    def groups_dir(self) -> Path:
        return self.state_dir / "groups"

    @property
    def global_dir(self) -> Path:
        return self.state_dir / "global"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def secrets_dir(self) -> Path:
        """Secrets the daemon makes itself (mode 700): the generated web API token (ngb/api_token.py)."""
        return self.state_dir / "secrets"

    @property
    def container_memory_bytes(self) -> int:
        return parse_size(self.container_memory)

    @property
    def web_exposed(self) -> bool:
        return not is_loopback_host(self.web_host)

    def describe(self) -> dict[str, Any]:
        """Every setting for display (``ngb config``, ``/status``, logs), secrets redacted."""
        out: dict[str, Any] = {}
        for f in attrs.fields(type(self)):
            if f.name == "origins":
                continue
            value = getattr(self, f.name)
            if f.metadata.get("secret"):
                value = "<redacted>" if value else None
            elif f.name == "channels":
                value = {name: _redact_table(table) for name, table in value.items()}
            elif isinstance(value, Path):
                value = str(value)
            out[f.name] = value
        for name in ("assistant_name", "db_path", "groups_dir", "global_dir", "run_dir", "logs_dir"):
            value = getattr(self, name)
            out[name] = str(value) if isinstance(value, Path) else value
        return out


def _redact_table(table: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out[key] = _redact_table(value)
        elif is_secret_key(key):
            out[key] = "<redacted>" if value else value
        else:
            out[key] = value
    return out


def _cross_check(config: Config) -> tuple[str, str] | None:
    """Checks that involve more than one field: (field, message) or None."""
    if config.web_exposed:
        if not config.api_token:
            return (
                "web_host",
                f"{_got(config.web_host)} is not a loopback address and no api_token is set; the web "
                "server refuses to run exposed without one: set NGB_API_TOKEN (or api_token_file) or "
                'use web_host = "127.0.0.1"',
            )
    if config.api_token and len(config.api_token) < MIN_EXPOSED_TOKEN_CHARS:
        return (
            "api_token",
            f"must be at least {MIN_EXPOSED_TOKEN_CHARS} characters (value not shown); "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'` makes one, or unset it and "
            "the daemon generates one",
        )
    return None


# --------------------------------------------------------------------------------------------------
# Loading.

_FIELDS: dict[str, attrs.Attribute] = {
    f.name: f for f in attrs.fields(Config) if not f.metadata.get("internal")
}
_SECRET_FILES = {"api_token": "api_token_file", "anthropic_api_key": "anthropic_api_key_file"}
_PATH_FIELDS = ("state_dir", "mount_allowlist", "api_token_file", "anthropic_api_key_file")


# Channel secrets and the environment variables they come from (`[channels.NAME]` keys). A token
# set here turns its channel on even without a [channels.NAME] table.
CHANNEL_SECRET_ENV: dict[str, dict[str, str]] = {
    "telegram": {"token": "NGB_TELEGRAM_TOKEN"},
    "slack": {"bot_token": "NGB_SLACK_BOT_TOKEN", "app_token": "NGB_SLACK_APP_TOKEN"},
    "discord": {"token": "NGB_DISCORD_TOKEN"},
    "lark": {"app_id": "NGB_LARK_APP_ID", "app_secret": "NGB_LARK_APP_SECRET"},
    "dingtalk": {"client_id": "NGB_DINGTALK_CLIENT_ID", "client_secret": "NGB_DINGTALK_CLIENT_SECRET"},
}


def env_var(field: str) -> str:
    """The environment variable that overrides a field: ``web_port`` -> ``NGB_WEB_PORT``."""
    return ENV_PREFIX + field.upper()


@attrs.frozen
class _Source:
    label: str  # the env var, or the TOML key
    file: Path | None = None  # the TOML file, when the value came from it

    def error(self, message: str) -> ConfigError:
        return ConfigError(self.label, message, self.file)

    @property
    def origin(self) -> str:
        return f"{self.file} ({self.label})" if self.file else f"env {self.label}"


def read_secret_file(path: Path, key: str = "secret", *, source: _Source | None = None) -> str:
    """Read a one-line secret from a file only its owner can read (mode 600 or stricter).

    Raises ConfigError naming ``key`` (or ``source``) when the file is missing, not a regular file,
    readable or writable by group/others, empty, or not one line without spaces.
    """
    src = source or _Source(key)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise src.error(f"the file {path} does not exist") from None
    except OSError as exc:
        raise src.error(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise src.error(f"{path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise src.error(
            f"{path} is accessible by group or others (mode {mode:04o}); secrets must be readable only "
            f"by their owner: run chmod 600 {path}"
        )
    if st.st_size > MAX_SECRET_FILE_BYTES:
        raise src.error(f"{path} is {st.st_size} bytes; a secret file holds one line")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise src.error(f"cannot read {path}: {exc}") from None
    secret = text.strip()
    if not secret:
        raise src.error(f"{path} is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in secret):
        raise src.error(f"{path} must hold one line without spaces (the secret alone)")
    return secret


def _find_file(path: Path | None, env: Mapping[str, str]) -> tuple[Path | None, str]:
    if path is not None:
        return Path(path).expanduser(), "--config"
    if env.get("NGB_CONFIG"):
        try:
            return Path(env["NGB_CONFIG"]).expanduser(), "NGB_CONFIG"
        except RuntimeError:
            raise ConfigError("NGB_CONFIG", f"names a home folder that does not exist, got {_got(env['NGB_CONFIG'])}") from None
    if DEFAULT_FILE.is_file():
        return DEFAULT_FILE, "./ngb.toml"
    return None, ""


def _read_toml(path: Path, named_by: str) -> dict[str, Any]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(named_by, f"the config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(named_by, f"cannot read the config file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(named_by, f"{path} is not a regular file")
    if st.st_mode & 0o002:
        raise ConfigError(
            str(path),
            f"the config file is writable by everyone (mode {stat.S_IMODE(st.st_mode):04o}); run chmod o-w {path}",
        )
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read the config file: {exc}") from None


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key.lower(), known, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _check_channel_secrets(channels: Mapping[str, Any], file: Path) -> None:
    for name, table in channels.items():
        if not isinstance(table, Mapping):
            continue
        for key, value in table.items():
            if is_secret_key(str(key)) and value not in (None, ""):
                raise ConfigError(
                    f"channels.{name}.{key}",
                    f'secrets may not be stored in the config file; use {key}_file = "/path/to/file" '
                    "(mode 600) or the channel's environment variable",
                    file,
                )


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the configuration: TOML file (see module doc), then ``NGB_*`` overrides, then secrets.

    Relative paths in the file are relative to the file's folder; relative paths from the
    environment and the defaults are relative to the working directory. Returned paths are absolute.
    Raises ConfigError (one line, naming the key and where it came from) for every bad value.
    """
    env = os.environ if env is None else env
    file, named_by = _find_file(path, env)
    raw: dict[str, tuple[Any, _Source]] = {}

    if file is not None:
        data = _read_toml(file, named_by)
        file = file.absolute()
        known = sorted(_FIELDS)
        for key, value in data.items():
            if key not in _FIELDS:
                raise ConfigError(key, "unknown key" + _did_you_mean(key, known), file)
            if _FIELDS[key].metadata.get("secret"):
                raise ConfigError(
                    key,
                    f"secrets may not be stored in the config file; set {env_var(key)} in the environment "
                    f'or use {_SECRET_FILES[key]} = "/path/to/file" (mode 600)',
                    file,
                )
            if key == "channels" and isinstance(value, Mapping):
                _check_channel_secrets(value, file)
            raw[key] = (value, _Source(key, file))

    for name in _FIELDS:
        var = env_var(name)
        value = env.get(var)
        if value is None or value.strip() == "":
            continue
        if name == "channels":
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(var, "must be a JSON object of channel tables, got invalid JSON") from None
            if not isinstance(value, dict):
                raise ConfigError(var, f"must be a JSON object of channel tables, got {_got(value)}")
            base = raw.get("channels", ({}, None))[0]
            merged = dict(base) if isinstance(base, Mapping) else {}
            for channel, table in value.items():  # one level deep: env keys win per channel
                old = merged.get(channel)
                merged[channel] = (
                    {**old, **table} if isinstance(old, Mapping) and isinstance(table, Mapping) else table
                )
            value = merged
        raw[name] = (value, _Source(var))

    # The generic ANTHROPIC_API_KEY is used only when nothing NGB-specific names the key.
    generic = env.get("ANTHROPIC_API_KEY", "")
    if "anthropic_api_key" not in raw and "anthropic_api_key_file" not in raw and generic.strip():
        raw["anthropic_api_key"] = (generic, _Source("ANTHROPIC_API_KEY"))

    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, (value, src) in raw.items():
        try:
            parsed = _FIELDS[name].metadata["parse"](value)
        except ValueError as exc:
            raise src.error(str(exc)) from None
        if name in _PATH_FIELDS and parsed is not None and not parsed.is_absolute():
            parsed = (src.file.parent if src.file else Path.cwd()) / parsed
        values[name] = parsed
        origins[name] = src.origin
    for name in _PATH_FIELDS:
        if name not in values:
            default = _FIELDS[name].default
            default = default.factory() if isinstance(default, attrs.Factory) else default  # type: ignore[arg-type]
            if default is not None:
                values[name] = default if default.is_absolute() else Path.cwd() / default

    # Channel tokens from their environment variables (never from the file).
    channel_tables = {name: dict(table) for name, table in values.get("channels", {}).items()}
    for channel, keys in CHANNEL_SECRET_ENV.items():
        for key, var in keys.items():
            secret = env.get(var, "").strip()
            if secret:
                channel_tables.setdefault(channel, {})[key] = secret
                origins[f"channels.{channel}.{key}"] = f"env {var}"
    if channel_tables or "channels" in values:
        values["channels"] = channel_tables

    # Secrets from files, when no direct value was given.
    for secret, file_key in _SECRET_FILES.items():
        if values.get(secret) is None and values.get(file_key) is not None:
            src = raw[file_key][1]
            values[secret] = read_secret_file(values[file_key], file_key, source=src)
            origins[secret] = f"file {values[file_key]}"

    def source_of(field: str) -> _Source:
        if field not in raw and field in _SECRET_FILES and _SECRET_FILES[field] in raw:
            return raw[_SECRET_FILES[field]][1]
        return raw[field][1] if field in raw else _Source(env_var(field))

    try:
        return Config(**values, config_file=file, origins=origins)
    except ConfigError as exc:  # a cross-field check: name the key where the user set it
        field = exc.key
        if field in _FIELDS:
            raise source_of(field).error(exc.message) from None
        raise
