"""Reading a ``[channels.NAME]`` table: one reader for every channel, so each key is checked the
same way and every mistake is one ConfigError line naming ``channels.NAME.KEY``.

    t = ChannelTable("telegram", table, config_file, KEYS)   # unknown keys refused here
    token = t.secret("token")                                # the value, or token_file (mode 600)
    timeout = t.duration("request_timeout", 20.0)            # "20s", "2m", 20 ...
    fetch = t.boolean("fetch_missed", True)
    limit = t.integer("part_limit", 3000, lo=100, hi=10_000)
    mode = t.choice("reply_in_thread", "auto", ("auto", "always"))
    url = t.url("gateway_url", DEFAULT, schemes=("ws", "wss"))

A settings class declares the keys read one way with `setting` (the default written once, beside
the reader) and fills them with `t.fill`:

    connect_timeout: float = setting(15.0, ChannelTable.duration)
    ...
    return t.fill(cls, token=token, off_reason=...)          # the fields read another way
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, overload
from urllib.parse import urlsplit

import attrs

from ..config import ConfigError, parse_bool, parse_duration, read_secret_file

S = TypeVar("S", bound=attrs.AttrsInstance)


class ChannelTable:
    def __init__(
        self,
        channel: str,
        table: Mapping[str, Any] | None,
        config_file: Path | None,
        known: Iterable[str],
        *,
        doc: str | None = None,
    ) -> None:
        self.channel = channel
        self.table: Mapping[str, Any] = table or {}
        self.config_file = config_file
        self.doc = f"docs/channels/{doc or channel}.md"
        unknown = sorted(set(self.table) - set(known) - {"enabled"})
        if unknown:
            raise self.error(unknown[0], f"unknown key; see {self.doc}")

    def key(self, key: str) -> str:
        return f"channels.{self.channel}.{key}"

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.key(key), message)

    def __contains__(self, key: str) -> bool:
        return key in self.table

    def get(self, key: str, default: Any = None) -> Any:
        return self.table.get(key, default)

    @overload
    def path(self, key: str, default: Path) -> Path: ...
    @overload
    def path(self, key: str, default: None = None) -> Path | None: ...
    def path(self, key: str, default: Path | None = None) -> Path | None:
        """A path; relative ones in the file are relative to the file's folder. Absolute."""
        raw = self.table.get(key)
        if raw is None or raw == "":
            return None if default is None else default.expanduser().absolute()
        value = Path(str(raw)).expanduser()
        if not value.is_absolute() and self.config_file is not None:
            value = self.config_file.parent / value
        return value.absolute()

    def secret(self, key: str, *, env: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
        """The secret: the table's value (put there from the environment by config.py), else the
        ``env`` variable when given, else the file named by ``KEY_file`` (mode 600). None: not set."""
        value = str(self.table.get(key) or "").strip()
        if not value and env is not None:
            import os

            value = (os.environ if environ is None else environ).get(env, "").strip()
        if not value and self.table.get(f"{key}_file"):
            path = self.path(f"{key}_file")
            assert path is not None
            value = read_secret_file(path, self.key(f"{key}_file")).strip()
        return value or None

    def string(self, key: str, default: str = "") -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self.error(key, f"must be a string, got {type(value).__name__}")
        return str(value)

    def duration(self, key: str, default: float, *, allow_zero: bool = False) -> float:
        try:
            return parse_duration(self.table.get(key, default), allow_zero=allow_zero)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def boolean(self, key: str, default: bool) -> bool:
        try:
            return parse_bool(self.table.get(key, default))
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def integer(self, key: str, default: int, *, lo: int | None = None, hi: int | None = None) -> int:
        raw = self.table.get(key, default)
        try:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            value = int(raw)
        except (TypeError, ValueError, OverflowError):
            raise self.error(key, f"must be a whole number, got {raw!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"between {lo} and {hi}" if lo is not None and hi is not None else (f">= {lo}" if lo is not None else f"<= {hi}")
            raise self.error(key, f"must be {bounds}, got {value}")
        return value

    def choice(self, key: str, default: str, options: Collection[str]) -> str:
        value = str(self.table.get(key, default)).lower()
        if value not in options:
            shown = " or ".join(f'"{o}"' for o in options)
            raise self.error(key, f'must be {shown}, got "{value}"')
        return value

    def url(self, key: str, default: str, *, schemes: Collection[str] = ("http", "https")) -> str:
        value = str(self.table.get(key, default)).strip()
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            shown = " or ".join(f"{s}://" for s in schemes)
            raise self.error(key, f"must be a {shown} URL, got {value!r}")
        return value

    def fill(self, cls: type[S], **given: Any) -> S:
        """`cls` with its `setting` fields read from the table, in the order of the fields (so the
        first mistake is the first one reported), and `given` for the others."""
        values = dict(given)
        for field in attrs.fields(cls):
            if "read" in field.metadata and field.name not in given:
                read, options = field.metadata["read"]
                values[field.name] = read(self, field.name, field.default, **options)
        return cls(**values)


def setting(default: Any, read: Callable[..., Any], **options: Any) -> Any:
    """A settings field whose key (its name) is read by `read` (a ChannelTable method: duration,
    boolean, integer, choice, url, string) with its default and `options`; see ChannelTable.fill."""
    return attrs.field(default=default, metadata={"read": (read, options)})
