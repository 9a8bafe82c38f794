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

The package: `values` (one raw value -> one typed value, `ConfigError`), `settings` (the `Config`
record), `loading` (`load_config`: file, environment, secrets), `environment` (the process
environment outside the record: `NGB_*` build and command-line settings, Docker's and the XDG
variables). Import from `ngb.config`; the names below are its interface.
"""

from __future__ import annotations

from .loading import (
    _FIELDS,  # noqa: F401 - tests/test_fuzz_config.py walks every settable field
    CHANNEL_SECRET_ENV,
    DEFAULT_FILE,
    ENV_PREFIX,
    env_var,
    load_config,
    read_secret_file,
)
from .settings import Config
from .values import (
    MAX_SECRET_FILE_BYTES,
    MIN_CONTAINER_MEMORY,
    MIN_EXPOSED_TOKEN_CHARS,
    SECRET_KEY_RE,
    ConfigError,
    is_loopback_host,
    is_secret_key,
    parse_bool,
    parse_duration,
    parse_size,
)

__all__ = [
    "CHANNEL_SECRET_ENV",
    "DEFAULT_FILE",
    "ENV_PREFIX",
    "MAX_SECRET_FILE_BYTES",
    "MIN_CONTAINER_MEMORY",
    "MIN_EXPOSED_TOKEN_CHARS",
    "SECRET_KEY_RE",
    "Config",
    "ConfigError",
    "env_var",
    "is_loopback_host",
    "is_secret_key",
    "load_config",
    "parse_bool",
    "parse_duration",
    "parse_size",
    "read_secret_file",
]
