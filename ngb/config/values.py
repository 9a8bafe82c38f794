"""One raw setting value in, one typed value out: the parsers behind every `Config` field, and
`ConfigError`, whose text is one line naming where a bad value came from.

Each parser takes a raw value (a TOML value, an environment string, or an already typed value when
`Config` is built directly) and returns the typed value, or raises ValueError whose text is the
message part of a ConfigError ("must be ..., got ...").
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MIN_EXPOSED_TOKEN_CHARS = 16  # any api_token (the name predates the rule covering loopback too)
MAX_SECRET_FILE_BYTES = 64 * 1024


class ConfigError(ValueError):
    """A configuration value is wrong. ``str()`` is one line: ``<key>[ in <file>]: <message>``.

    ``key`` names the environment variable when the value came from the environment, and the TOML
    key (with ``source``, the file) when it came from the file.
    """

    def __init__(self, key: str, message: str, source: str | Path | None = None) -> None:
        self.key = key
        self.message = one_line(message)
        self.source = str(source) if source is not None else None
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.key} in {self.source}" if self.source else self.key
        return f"{where}: {self.message}"


def one_line(text: str) -> str:
    return " ".join(str(text).split()) if ("\n" in str(text) or "\r" in str(text)) else str(text)


def got(value: Any) -> str:
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
    raise ValueError(f"must be a boolean (true/false, yes/no, 1/0), got {got(value)}")


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, *, allow_zero: bool = False) -> float:
    """Seconds as a number, or a string: ``"90"``, ``"90s"``, ``"5m"``, ``"1h"``, ``"1h30m"``, ``"250ms"``."""
    limit = "at least 0" if allow_zero else "greater than 0"
    expected = f'must be a duration {limit}, like 90, "90s", "5m" or "1h", got {got(value)}'
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
            raise ValueError(f"is too large, got {got(value)}")
        size = int(number)
    else:
        raise ValueError(f'must be a size like "512m" or "2g", got {got(value)}')
    return size


def memory(value: Any) -> str:
    size = parse_size(value)
    if size < MIN_CONTAINER_MEMORY:
        raise ValueError(f'must be at least "6m" (Docker\'s minimum), got {got(value)}')
    if isinstance(value, int):
        return str(value)
    return value.strip().lower().replace(" ", "")


def int_range(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    bounds = f"between {lo} and {hi}" if hi is not None else f"of at least {lo}"

    def parse(value: Any) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            number = int(value)
        if number is None or number < lo or (hi is not None and number > hi):
            raise ValueError(f"must be an integer {bounds}, got {got(value)}")
        return number

    return parse


def float_range(lo: float, hi: float, *, lo_open: bool = True) -> Callable[[Any], float]:
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
            raise ValueError(f"must be a number {bounds}, got {got(value)}")
        return number

    return parse


def duration(*, allow_zero: bool = False) -> Callable[[Any], float]:
    return lambda value: parse_duration(value, allow_zero=allow_zero)


def string(pattern: str, description: str, *, lower: bool = False) -> Callable[[Any], str]:
    regex = re.compile(pattern)

    def parse(value: Any) -> str:
        if isinstance(value, str):
            text = value.strip().lower() if lower else value.strip()
            if regex.fullmatch(text):
                return text
        raise ValueError(f"must be {description}, got {got(value)}")

    return parse


def path(value: Any) -> Path:
    if isinstance(value, Path):
        text = str(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
    else:
        raise ValueError(f"must be a file system path, got {got(value)}")
    if "\x00" in text:
        raise ValueError("must be a file system path without NUL characters")
    try:
        return Path(text).expanduser()
    except RuntimeError:  # "~nobody-here/x": no such user (was an uncaught RuntimeError)
        raise ValueError(f"names a home folder that does not exist, got {got(value)}") from None


def optional_path(value: Any) -> Path | None:
    return None if value is None else path(value)


def secret(value: Any) -> str | None:
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


def host(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        try:
            ipaddress.ip_address(bare)
            return bare
        except ValueError:
            if _HOSTNAME_RE.fullmatch(text):
                return text
    raise ValueError(f'must be an IP address or host name, like "127.0.0.1" or "0.0.0.0", got {got(value)}')


def url(value: Any) -> str:
    expected = f'must be an http(s) URL like "https://api.anthropic.com", got {got(value)}'
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
        raise ValueError(f"must not have a query string or fragment, got {got(value)}")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ValueError(
            f"must use https unless the host is loopback (the API key is sent there), got {got(value)}"
        )
    return text.rstrip("/")


def trigger(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        if 1 <= len(text.removeprefix("@")) <= 64 and not any(ch.isspace() for ch in text):
            return text
    raise ValueError(f'must be one word of 1-64 characters, like "@Andy", got {got(value)}')


CHANNEL_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def chat(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        channel, sep, chat_id = text.partition(":")
        if sep and CHANNEL_NAME_RE.fullmatch(channel) and chat_id and not any(c.isspace() for c in chat_id):
            return text
    raise ValueError(f'must look like <channel>:<chat id>, e.g. "local:main", got {got(value)}')


def image(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        if 0 < len(text) <= 255 and re.fullmatch(r"[a-z0-9][A-Za-z0-9._/:@+-]*", text):
            return text
    raise ValueError(f'must be a Docker image reference like "nanogridbot-agent:latest", got {got(value)}')


def network(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip()
        if text == "host" or text.startswith("container:"):
            raise ValueError(
                f"{got(value)} would share a network namespace with the host or another container "
                '(reaching the daemon\'s own ports); use "none" (default), "bridge" or a user network'
            )
        if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", text):
            return text
    raise ValueError(f'must be a Docker network name ("none", "bridge", ...), got {got(value)}')


SECRET_KEY_RE = re.compile(r"(?:^|_)(?:token|key)$|secret|password|passwd", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """Does a config key name look like it holds a secret? (``token``, ``bot_token``,
    ``app_secret``, ``password``, ``api_key``...; ``*_file`` and ``*_env`` names are fine)."""
    low = key.lower()
    if low.endswith(("_file", "_env")):
        return False
    return bool(SECRET_KEY_RE.search(low))
