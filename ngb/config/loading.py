"""Loading the settings: find the TOML file, read it, apply the ``NGB_*`` environment overrides and
the secrets (from the environment or from owner-only files), and name where every bad value came
from. `load_config` is the one entry point; `read_secret_file` is shared with the channels."""

from __future__ import annotations

import difflib
import json
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from . import values as v
from .settings import Config
from .values import MAX_SECRET_FILE_BYTES, ConfigError, is_secret_key

ENV_PREFIX = "NGB_"
DEFAULT_FILE = Path("ngb.toml")

_FIELDS: dict[str, attrs.Attribute] = {
    f.name: f for f in attrs.fields(Config) if not f.metadata.get("internal")
}
_SECRET_FILES = {"api_token": "api_token_file", "anthropic_api_key": "anthropic_api_key_file",
                 "transcribe_api_key": "transcribe_api_key_file"}
_PATH_FIELDS = ("state_dir", "mount_allowlist", "api_token_file", "anthropic_api_key_file", "transcribe_api_key_file")


# Channel secrets and the environment variables they come from (`[channels.NAME]` keys). A token
# set here turns its channel on even without a [channels.NAME] table.
CHANNEL_SECRET_ENV: dict[str, dict[str, str]] = {
    "telegram": {"token": "NGB_TELEGRAM_TOKEN"},
    "slack": {"bot_token": "NGB_SLACK_BOT_TOKEN", "app_token": "NGB_SLACK_APP_TOKEN"},
    "discord": {"token": "NGB_DISCORD_TOKEN"},
    "lark": {"app_id": "NGB_LARK_APP_ID", "app_secret": "NGB_LARK_APP_SECRET"},
    "dingtalk": {"client_id": "NGB_DINGTALK_CLIENT_ID", "client_secret": "NGB_DINGTALK_CLIENT_SECRET"},
    "matrix": {"access_token": "NGB_MATRIX_ACCESS_TOKEN", "password": "NGB_MATRIX_PASSWORD"},
    "email": {"password": "NGB_EMAIL_PASSWORD", "smtp_password": "NGB_EMAIL_SMTP_PASSWORD"},
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
            raise ConfigError(
                "NGB_CONFIG", f"names a home folder that does not exist, got {v.got(env['NGB_CONFIG'])}"
            ) from None
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
                raise ConfigError(var, f"must be a JSON object of channel tables, got {v.got(value)}")
            base: object = raw["channels"][0] if "channels" in raw else {}
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
            default: Any = _FIELDS[name].default
            # attrs' stubs declare Factory as a function (it is a class), so isinstance cannot take it
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                default = default.factory()
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
