"""The settings record: `Config`, every setting of the daemon with its default and its parser, the
checks that involve more than one field, and the paths derived from it. `load_config` (loading.py)
fills it from the TOML file and the environment; docs/configuration.md lists every key."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ..prices import parse_model_prices, parse_usd
from ..records import DmPolicy, ThreadMode, WebMode
from . import compound as vc
from . import values as v
from .values import MIN_EXPOSED_TOKEN_CHARS, ConfigError, is_loopback_host, is_secret_key, parse_size


def _field(default: Any, parse: Callable[[Any], Any], *, secret: bool = False) -> Any:
    return attrs.field(default=default, metadata={"parse": parse, "secret": secret})


def _default_allowlist() -> Path:
    return Path("~/.config/nanogridbot/mount-allowlist.toml").expanduser()


@attrs.frozen(kw_only=True)
class Config:
    """Every setting of the daemon. Build it with `load_config`; building it directly validates
    and normalizes the values too (raising `ConfigError` named by the field)."""

    state_dir: Path = _field(Path("state"), v.path)
    web_host: str = _field("127.0.0.1", v.host)
    web_port: int = _field(8640, v.int_range(1, 65535))
    # reverse proxies whose X-Forwarded-For/-Proto are believed (docs/deployment.md); none by default
    trusted_proxies: tuple[str, ...] = _field((), vc.network_list)
    api_token: str | None = _field(None, v.secret, secret=True)
    api_token_file: Path | None = _field(None, v.optional_path)
    max_containers: int = _field(5, v.int_range(1, 256))  # each takes up to container_memory (docs/scaling.md)
    trigger: str = _field("@Andy", v.trigger)
    model_upstream: str = _field("https://api.anthropic.com", v.url)
    anthropic_api_key: str | None = _field(None, v.secret, secret=True)
    anthropic_api_key_file: Path | None = _field(None, v.optional_path)
    image: str = _field("nanogridbot-agent:latest", v.image)
    # Headless Chromium in the agent image for the browser tools (docs/web-browser.md, +~500 MB)
    agent_browser: bool = _field(True, v.parse_bool)
    container_memory: str = _field("1g", v.memory)
    container_pids: int = _field(256, v.int_range(16, 100_000))
    # Two CPUs let the runner import the SDK while the CLI boots (a cold turn ~0.8 s instead of
    # ~1.0 s); never more than the host has, or Docker refuses to start the container.
    container_cpus: float = _field(float(min(2, os.cpu_count() or 1)), v.float_range(0.0, 1024.0))
    idle_timeout: float = _field(300.0, v.duration())
    turn_timeout: float = _field(900.0, v.duration())
    start_timeout: float = _field(60.0, v.duration())
    min_task_interval: float = _field(60.0, v.duration())
    prescript_timeout: float = _field(60.0, v.duration())
    shutdown_grace: float = _field(30.0, v.duration(allow_zero=True))
    sender_rate_per_minute: int = _field(20, v.int_range(0, 100_000))
    group_rate_per_minute: int = _field(60, v.int_range(0, 100_000))
    # Chats nobody registered (docs/security.md): stored up to these counts, the rest dropped
    unregistered_per_chat_per_hour: int = _field(30, v.int_range(0, 100_000))
    unregistered_per_hour: int = _field(600, v.int_range(0, 1_000_000))
    unregistered_keep: int = _field(5000, v.int_range(0, 10_000_000))
    # A direct message from a chat nobody registered (docs/conversations.md): pairing (a code the
    # operator approves), open (registered at once) or closed; per channel in dm_policies
    dm_policy: DmPolicy = _field(DmPolicy.PAIRING, vc.dm_policy)
    dm_policies: dict[str, DmPolicy] = _field(attrs.Factory(dict), vc.dm_policies)
    pairing_code_ttl: float = _field(86400.0, v.duration())  # a code's life; a new one at most daily
    # Live previews (docs/conversations.md): the reply grows in the chat by edits of one message, at
    # most one edit per preview_interval per chat (Telegram and Discord allow about one a second);
    # a group's own `previews` setting overrides this one
    previews: bool = _field(True, v.parse_bool)
    preview_interval: float = _field(1.0, v.float_range(0.2, 60.0))
    # Reactions (docs/conversations.md): on the message a turn answers, while it runs (ack), and
    # instead once it is done or failed; "" turns one off. Where the channel has reactions.
    ack_reaction: str = _field("👀", v.string(r"[^\sA-Za-z0-9]{0,16}", "an emoji such as 👀, or empty"))
    done_reaction: str = _field("", v.string(r"[^\sA-Za-z0-9]{0,16}", "an emoji such as ✅, or empty"))
    failed_reaction: str = _field("", v.string(r"[^\sA-Za-z0-9]{0,16}", "an emoji such as 😢, or empty"))
    # Threads and topics (docs/conversations.md): shared (one agent session per chat, replies in the
    # thread they answer) or per_thread (one session per thread); a group's `threads` overrides it
    threads: ThreadMode = _field(
        ThreadMode.SHARED,
        lambda x: ThreadMode(v.string(r"shared|per_thread", "shared or per_thread", lower=True)(x)),
    )
    max_message_chars: int = _field(16000, v.int_range(1, 1_000_000))
    max_body_bytes: int = _field(65536, v.int_range(1024, 64 * 1024 * 1024))
    mount_allowlist: Path = _field(attrs.Factory(_default_allowlist), v.path)
    instance: str = _field("default", v.string(r"[a-z0-9][a-z0-9-]{0,31}", "1-32 of a-z, 0-9 and -"))
    log_level: str = _field(
        "info",
        v.string(
            r"debug|info|warning|error|critical", "one of debug, info, warning, error, critical", lower=True
        ),
    )
    log_format: str = _field(
        "auto", v.string(r"auto|text|json|journal", "one of auto, text, json, journal", lower=True)
    )
    model_retries: int = _field(3, v.int_range(0, 10))
    model_stall_timeout: float = _field(120.0, v.duration(allow_zero=True))
    model_max_body_bytes: int = _field(8 * 1024 * 1024, v.int_range(64 * 1024, 32 * 1024 * 1024))
    # Spending (docs/budgets.md): USD caps, 0 = no cap; model prices in USD per million tokens.
    budget_daily_usd: float = _field(0.0, parse_usd)
    budget_monthly_usd: float = _field(0.0, parse_usd)
    budget_global_daily_usd: float = _field(0.0, parse_usd)
    budget_global_monthly_usd: float = _field(0.0, parse_usd)
    model_prices: dict[str, dict[str, float]] = _field(attrs.Factory(dict), parse_model_prices)
    container_network: str = _field("none", v.network)
    # The uid agent containers run as, and the only host uid besides the daemon's that may reach
    # a group's sockets and folders (ngb/hostperms.py); never 0.
    agent_uid: int = _field(1000, v.int_range(1, 2**31 - 2))
    main_chat: str = _field("local:main", v.chat)
    plugins: tuple[str, ...] = _field((), vc.module_list)  # docs/plugins.md
    plugin_timeout: float = _field(10.0, v.duration())
    channels: dict[str, dict[str, Any]] = _field(attrs.Factory(dict), vc.channels)
    # Media (docs/media.md): files in and out, their limits, retention and transcription.
    media_max_file_mb: int = _field(20, v.int_range(1, 2048))
    media_max_files: int = _field(10, v.int_range(1, 100))
    media_quota_mb: int = _field(1024, v.int_range(0, 10_000_000))  # per chat; 0: no quota
    media_retention_days: int = _field(30, v.int_range(0, 36_500))  # 0: kept for ever
    media_download_timeout: float = _field(60.0, v.duration())
    media_send_max_mb: int = _field(50, v.int_range(1, 2048))
    media_sends_per_turn: int = _field(10, v.int_range(0, 100))
    transcribe_url: str | None = _field(None, lambda x: None if x in (None, "") else v.url(x))
    transcribe_model: str = _field("whisper-1", v.string(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}", "a model name"))
    transcribe_api_key: str | None = _field(None, v.secret, secret=True)
    transcribe_api_key_file: Path | None = _field(None, v.optional_path)
    transcribe_timeout: float = _field(120.0, v.duration())
    # The web through the egress door (docs/web-access.md). web_host/web_port above are the daemon's
    # own HTTP server; these say what the agents may reach.
    web_main: WebMode = _field(WebMode.OPEN, vc.web_mode)  # the main group, unless it sets its own
    web_default: WebMode = _field(WebMode.OFF, vc.web_mode)  # every other group, likewise
    web_allow: tuple[str, ...] = _field((), vc.host_patterns)  # added to each group's allow list
    web_deny: tuple[str, ...] = _field((), vc.host_patterns)  # refused for every group, whatever its mode
    web_ports: tuple[int, ...] = _field((80, 443), vc.port_list)
    # Address ranges the door may reach although they are not public (loopback, LAN): empty by
    # default; cloud metadata addresses stay refused even inside them.
    web_allow_networks: tuple[str, ...] = _field((), vc.network_list)
    web_turn_mb: int = _field(50, v.int_range(0, 1_000_000))  # per group and turn; 0: no limit
    web_day_mb: int = _field(500, v.int_range(0, 10_000_000))  # per group and UTC day; 0: no limit
    web_max_connections: int = _field(8, v.int_range(1, 1024))  # per group, at once
    web_connect_timeout: float = _field(10.0, v.duration())
    web_idle_timeout: float = _field(30.0, v.duration())
    # A PEM file of extra certificate authorities the agent's CLI (WebFetch) trusts: a LAN service's
    # own CA, or a TLS-inspecting corporate proxy's. Copied into the container's run folder.
    web_extra_ca_file: Path | None = _field(None, v.optional_path)
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
    def container_memory_bytes(self) -> int:
        return parse_size(self.container_memory)

    @property
    def media_dir(self) -> Path:
        return self.state_dir / "media"

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
                f"{v.got(config.web_host)} is not a loopback address and no api_token is set; the web "
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
