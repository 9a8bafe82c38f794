from __future__ import annotations

import os
from pathlib import Path

import pytest

from ngb.config import (
    Config,
    ConfigError,
    is_loopback_host,
    is_secret_key,
    load_config,
    parse_bool,
    parse_duration,
    parse_size,
)
from ngb.folders import group_dir, validate_folder

TOKEN = "t" * 32


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No stray ./ngb.toml from the repository; relative defaults land in tmp_path.
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def one_line_error(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and "\r" not in text
    return text


# -- defaults and sources ---------------------------------------------------------------------------


def test_defaults_without_file(tmp_path: Path) -> None:
    config = load_config(env={})
    assert config.config_file is None
    assert config.state_dir == tmp_path / "state"
    assert config.web_host == "127.0.0.1" and config.web_port == 8640
    assert config.api_token is None and config.anthropic_api_key is None
    assert config.max_containers == 5
    assert config.trigger == "@Andy" and config.assistant_name == "Andy"
    assert config.model_upstream == "https://api.anthropic.com"
    assert config.image == "nanogridbot-agent:latest"
    assert config.container_memory == "1g" and config.container_memory_bytes == 1024**3
    assert (config.container_pids, config.container_cpus) == (256, float(min(2, os.cpu_count() or 1)))
    assert (config.idle_timeout, config.turn_timeout, config.shutdown_grace) == (300.0, 900.0, 30.0)
    assert (config.sender_rate_per_minute, config.group_rate_per_minute) == (20, 60)
    assert (config.max_message_chars, config.max_body_bytes) == (16000, 65536)
    assert config.mount_allowlist == Path("~/.config/nanogridbot/mount-allowlist.toml").expanduser()
    assert (config.instance, config.log_level, config.model_retries) == ("default", "info", 3)
    assert (config.container_network, config.main_chat, config.channels) == ("none", "local:main", {})
    assert config.db_path == tmp_path / "state" / "ngb.db"
    assert config.groups_dir == tmp_path / "state" / "groups"
    assert config.global_dir == tmp_path / "state" / "global"
    assert config.run_dir == tmp_path / "state" / "run"
    assert config.logs_dir == tmp_path / "state" / "logs"
    # Same values as a directly built Config, apart from the absolute state_dir.
    direct = Config()
    assert direct.state_dir == Path("state")
    assert {k: v for k, v in direct.describe().items() if "dir" not in k and k != "db_path"} == {
        k: v for k, v in config.describe().items() if "dir" not in k and k != "db_path"
    }


def test_dot_ngb_toml_is_used_when_present(tmp_path: Path) -> None:
    write(tmp_path / "ngb.toml", 'trigger = "@Bob"\n')
    config = load_config(env={})
    assert config.trigger == "@Bob" and config.assistant_name == "Bob"
    assert config.config_file == tmp_path / "ngb.toml"


def test_ngb_config_env_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc" / "other.toml", "web_port = 9001\n")
    write(tmp_path / "ngb.toml", "web_port = 9002\n")
    assert load_config(env={"NGB_CONFIG": str(path)}).web_port == 9001
    # An explicit path wins over NGB_CONFIG.
    assert load_config(tmp_path / "ngb.toml", env={"NGB_CONFIG": str(path)}).web_port == 9002


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(env={"NGB_CONFIG": str(tmp_path / "nope.toml")})
    assert one_line_error(exc).startswith("NGB_CONFIG: the config file")


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ngb.toml",
        'web_port = 9000\ntrigger = "@Bob"\nidle_timeout = "10m"\nstate_dir = "data"\nmax_containers = 2\n',
    )
    env = {
        "NGB_WEB_PORT": "9100",
        "NGB_MAX_CONTAINERS": "7",
        "NGB_MODEL_UPSTREAM": "http://127.0.0.1:8999/",
        "NGB_TRIGGER": "",  # empty counts as unset
    }
    config = load_config(path, env=env)
    assert config.web_port == 9100
    assert config.max_containers == 7
    assert config.trigger == "@Bob"
    assert config.idle_timeout == 600.0
    assert config.model_upstream == "http://127.0.0.1:8999"
    # Relative paths in the file are relative to the file's folder.
    assert config.state_dir == tmp_path / "data"
    assert config.origins["web_port"] == "env NGB_WEB_PORT"
    assert config.origins["trigger"].startswith(str(path))


def test_env_relative_path_is_relative_to_cwd(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    path = write(sub / "ngb.toml", 'state_dir = "s"\n')
    assert load_config(path, env={"NGB_STATE_DIR": "elsewhere"}).state_dir == tmp_path / "elsewhere"
    assert load_config(path, env={}).state_dir == sub / "s"
    assert load_config(env={"NGB_STATE_DIR": "~/x"}).state_dir == Path("~/x").expanduser()


def test_every_field_has_an_env_override() -> None:
    env = {
        "NGB_STATE_DIR": "/srv/ngb",
        "NGB_WEB_HOST": "0.0.0.0",
        "NGB_WEB_PORT": "1234",
        "NGB_API_TOKEN": TOKEN,
        "NGB_MAX_CONTAINERS": "10",
        "NGB_TRIGGER": "@Zed",
        "NGB_MODEL_UPSTREAM": "https://gw.example.com/anthropic",
        "NGB_ANTHROPIC_API_KEY": "sk-test",
        "NGB_IMAGE": "registry.local:5000/agent@sha256:abc",
        "NGB_CONTAINER_MEMORY": "512M",
        "NGB_CONTAINER_PIDS": "128",
        "NGB_CONTAINER_CPUS": "0.5",
        "NGB_IDLE_TIMEOUT": "90s",
        "NGB_TURN_TIMEOUT": "1h",
        "NGB_START_TIMEOUT": "2m",
        "NGB_SHUTDOWN_GRACE": "0",
        "NGB_SENDER_RATE_PER_MINUTE": "0",
        "NGB_GROUP_RATE_PER_MINUTE": "5",
        "NGB_MAX_MESSAGE_CHARS": "100",
        "NGB_MAX_BODY_BYTES": "2048",
        "NGB_MOUNT_ALLOWLIST": "/etc/ngb/allow.toml",
        "NGB_INSTANCE": "prod-1",
        "NGB_LOG_LEVEL": "DEBUG",
        "NGB_MODEL_RETRIES": "0",
        "NGB_CONTAINER_NETWORK": "bridge",
        "NGB_MAIN_CHAT": "telegram:-100123",
        "NGB_CHANNELS": '{"telegram": {"api_base": "http://127.0.0.1:1"}}',
    }
    c = load_config(env=env)
    assert c.state_dir == Path("/srv/ngb") and c.web_host == "0.0.0.0" and c.web_port == 1234
    assert c.api_token == TOKEN and c.max_containers == 10 and c.trigger == "@Zed"
    assert c.model_upstream == "https://gw.example.com/anthropic" and c.anthropic_api_key == "sk-test"
    assert c.image == "registry.local:5000/agent@sha256:abc"
    assert c.container_memory == "512m" and c.container_memory_bytes == 512 * 1024**2
    assert (c.container_pids, c.container_cpus) == (128, 0.5)
    assert (c.idle_timeout, c.turn_timeout, c.start_timeout, c.shutdown_grace) == (90, 3600, 120, 0)
    assert (c.sender_rate_per_minute, c.group_rate_per_minute) == (0, 5)
    assert (c.max_message_chars, c.max_body_bytes) == (100, 2048)
    assert c.mount_allowlist == Path("/etc/ngb/allow.toml")
    assert (c.instance, c.log_level, c.model_retries) == ("prod-1", "debug", 0)
    assert (c.container_network, c.main_chat) == ("bridge", "telegram:-100123")
    assert c.channels == {"telegram": {"api_base": "http://127.0.0.1:1"}}


def test_channels_env_merges_into_file_tables(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ngb.toml",
        '[channels.telegram]\napi_base = "https://tg.local"\n[channels.local]\n',
    )
    config = load_config(path, env={"NGB_CHANNELS": '{"telegram": {"bot_token": "123:abc"}}'})
    assert config.channels == {
        "telegram": {"api_base": "https://tg.local", "bot_token": "123:abc"},
        "local": {},
    }
    assert config.describe()["channels"]["telegram"]["bot_token"] == "<redacted>"


# -- bad values ---------------------------------------------------------------------------------------

BAD_VALUES = [
    ("web_port", "abc", 'must be an integer between 1 and 65535, got "abc"'),
    ("web_port", "0", "between 1 and 65535"),
    ("web_port", "70000", "between 1 and 65535"),
    ("web_host", "not a host", "IP address or host name"),
    ("max_containers", "257", "between 1 and 256"),
    ("max_containers", "0", "between 1 and 256"),
    ("trigger", "@Andy Bot", "one word"),
    ("trigger", "@", "one word"),
    ("model_upstream", "ftp://x", "http(s) URL"),
    ("model_upstream", "http://api.example.com", "must use https unless the host is loopback"),
    ("model_upstream", "https://user:pw@api.example.com", "user name or password"),
    ("model_upstream", "https://api.example.com/?x=1", "query string"),
    ("image", "Bad Image", "Docker image reference"),
    ("container_memory", "lots", 'size like "512m"'),
    ("container_memory", "1m", "at least"),
    ("container_pids", "-1", "between 16 and 100000"),
    ("container_cpus", "0", "greater than 0"),
    ("container_cpus", "nan", "greater than 0"),
    ("idle_timeout", "5 minutes", "duration"),
    ("idle_timeout", "0", "duration greater than 0"),
    ("turn_timeout", "-5", "duration"),
    ("shutdown_grace", "soon", "duration at least 0"),
    ("sender_rate_per_minute", "1.5", "integer"),
    ("group_rate_per_minute", "-1", "integer"),
    ("max_message_chars", "0", "integer"),
    ("max_body_bytes", "10", "integer between 1024"),
    ("instance", "Prod_1", "a-z, 0-9"),
    ("log_level", "verbose", "one of debug"),
    ("model_retries", "11", "between 0 and 10"),
    ("container_network", "host", "network namespace"),
    ("container_network", "container:abc", "network namespace"),
    ("container_network", "bad net", "Docker network name"),
    ("main_chat", "main", "<channel>:<chat id>"),
    ("web_default", "sometimes", "one of off, allowlist, open"),
    ("web_allow", "https://example.com/page", "not a URL"),
    ("web_deny", "10.0.0.5", "addresses are not host patterns"),
    ("web_ports", "80,http", "ports 1-65535"),
    ("web_ports", "70000", "ports 1-65535"),
    ("web_allow_networks", "192.168.1.0/33", "address ranges like 192.168.1.0/24"),
    ("web_turn_mb", "-1", "integer"),
    ("web_max_connections", "0", "between 1 and 1024"),
]


def test_web_settings_from_the_environment_and_the_file(tmp_path: Path) -> None:
    cfg = load_config(env={"NGB_WEB_DEFAULT": "Allowlist", "NGB_WEB_ALLOW": "Example.COM, *.wikipedia.org",
                           "NGB_WEB_PORTS": "443 8443", "NGB_WEB_ALLOW_NETWORKS": "192.168.1.20,fd00::/8"})
    assert (cfg.web_main, cfg.web_default) == ("open", "allowlist")
    assert cfg.web_allow == ("example.com", "*.wikipedia.org") and cfg.web_ports == (443, 8443)
    assert cfg.web_allow_networks == ("192.168.1.20/32", "fd00::/8")
    path = write(tmp_path / "ngb.toml", 'web_main = "off"\nweb_deny = ["ads.example.com"]\nweb_ports = [80]\n')
    cfg = load_config(path, env={})
    assert (cfg.web_main, cfg.web_deny, cfg.web_ports) == ("off", ("ads.example.com",), (80,))


@pytest.mark.parametrize(("key", "value", "expected"), BAD_VALUES)
def test_bad_env_value_names_the_variable(key: str, value: str, expected: str) -> None:
    var = "NGB_" + key.upper()
    with pytest.raises(ConfigError) as exc:
        load_config(env={var: value})
    text = one_line_error(exc)
    assert text.startswith(f"{var}: "), text
    assert expected in text
    assert exc.value.key == var


@pytest.mark.parametrize(("key", "value", "expected"), BAD_VALUES)
def test_bad_file_value_names_the_key_and_file(tmp_path: Path, key: str, value: str, expected: str) -> None:
    path = write(tmp_path / "ngb.toml", f"{key} = {value!r}\n".replace("'", '"'))
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    text = one_line_error(exc)
    assert text.startswith(f"{key} in {path}: "), text
    assert expected in text


def test_exact_error_text() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(env={"NGB_WEB_PORT": "abc"})
    assert str(exc.value) == 'NGB_WEB_PORT: must be an integer between 1 and 65535, got "abc"'


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("web_port = true", "got true"),
        ("web_port = 8640.0", "got 8640.0"),
        ("web_port = [1]", "got a list"),
        ("trigger = 5", "got 5"),
        ("idle_timeout = true", "duration"),
        ("channels = 3", "table of [channels.NAME]"),
        ("[channels.Tele]", "channel names"),
        ('state_dir = ""', "file system path"),
        ("state_dir = 5", "file system path"),
    ],
)
def test_wrong_toml_types(tmp_path: Path, toml: str, expected: str) -> None:
    path = write(tmp_path / "ngb.toml", toml + "\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert expected in one_line_error(exc)


def test_value_with_newline_stays_one_line() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(env={"NGB_TRIGGER": "@a\nb"})
    assert '"@a\\nb"' in one_line_error(exc)


def test_unknown_key_with_did_you_mean(tmp_path: Path) -> None:
    path = write(tmp_path / "ngb.toml", "web_prot = 1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert one_line_error(exc) == f'web_prot in {path}: unknown key (did you mean "web_port"?)'
    path = write(tmp_path / "ngb.toml", "[web]\nport = 1\n")
    with pytest.raises(ConfigError, match="^web in .*: unknown key$"):
        load_config(path, env={})
    # Internal fields are not keys.
    path = write(tmp_path / "ngb.toml", 'config_file = "x"\n')
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(path, env={})


def test_bad_toml_syntax(tmp_path: Path) -> None:
    path = write(tmp_path / "ngb.toml", "web_port = \n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert one_line_error(exc).startswith(f"{path}: not valid TOML")


def test_world_writable_config_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "ngb.toml", "web_port = 1\n", mode=0o666)
    with pytest.raises(ConfigError, match="writable by everyone"):
        load_config(path, env={})


def test_direct_construction_validates_and_normalizes() -> None:
    with pytest.raises(ConfigError) as exc:
        Config(max_containers=257)
    assert str(exc.value) == "max_containers: must be an integer between 1 and 256, got 257"
    config = Config(idle_timeout="5m", web_port="9000", log_level="WARNING")  # type: ignore[arg-type]
    assert (config.idle_timeout, config.web_port, config.log_level) == (300.0, 9000, "warning")


# -- secrets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "var"), [("api_token", "NGB_API_TOKEN"), ("anthropic_api_key", "NGB_ANTHROPIC_API_KEY")]
)
def test_secrets_are_refused_in_the_file(tmp_path: Path, key: str, var: str) -> None:
    path = write(tmp_path / "ngb.toml", f'{key} = "sk-secret-value"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    text = one_line_error(exc)
    assert text.startswith(f"{key} in {path}: secrets may not be stored in the config file")
    assert var in text and f"{key}_file" in text
    assert "sk-secret-value" not in text


def test_channel_secrets_are_refused_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "ngb.toml", '[channels.telegram]\nbot_token = "123:abc"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    text = one_line_error(exc)
    assert text.startswith(f"channels.telegram.bot_token in {path}: secrets may not")
    assert "bot_token_file" in text and "123:abc" not in text
    # The _file variant is fine.
    path = write(tmp_path / "ngb.toml", '[channels.telegram]\nbot_token_file = "/run/secrets/tg"\n')
    assert load_config(path, env={}).channels["telegram"]["bot_token_file"] == "/run/secrets/tg"


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("token", True),
        ("bot_token", True),
        ("app_secret", True),
        ("client_secret", True),
        ("password", True),
        ("api_key", True),
        ("encrypt_key", True),
        ("bot_token_file", False),
        ("api_base", False),
        ("keyword", False),
        ("domain", False),
    ],
)
def test_is_secret_key(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_key_from_env(tmp_path: Path) -> None:
    assert load_config(env={"ANTHROPIC_API_KEY": "sk-generic"}).anthropic_api_key == "sk-generic"
    both = {"ANTHROPIC_API_KEY": "sk-generic", "NGB_ANTHROPIC_API_KEY": "sk-ngb"}
    assert load_config(env=both).anthropic_api_key == "sk-ngb"


def test_key_file(tmp_path: Path) -> None:
    key = write(tmp_path / "anthropic.key", "sk-from-file\n", mode=0o600)
    config = load_config(env={"NGB_ANTHROPIC_API_KEY_FILE": str(key), "ANTHROPIC_API_KEY": "sk-generic"})
    # The NGB-specific file wins over the generic ANTHROPIC_API_KEY.
    assert config.anthropic_api_key == "sk-from-file"
    assert config.anthropic_api_key_file == key
    assert config.origins["anthropic_api_key"] == f"file {key}"
    # A direct NGB_ANTHROPIC_API_KEY wins over the file.
    config = load_config(env={"NGB_ANTHROPIC_API_KEY_FILE": str(key), "NGB_ANTHROPIC_API_KEY": "sk-direct"})
    assert config.anthropic_api_key == "sk-direct"
    # From the TOML file, relative to the file's folder.
    path = write(tmp_path / "ngb.toml", 'anthropic_api_key_file = "anthropic.key"\n')
    assert load_config(path, env={}).anthropic_api_key == "sk-from-file"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = write(tmp_path / "anthropic.key", "sk-from-file\n", mode=mode)
    with pytest.raises(ConfigError) as exc:
        load_config(env={"NGB_ANTHROPIC_API_KEY_FILE": str(key)})
    text = one_line_error(exc)
    assert text.startswith("NGB_ANTHROPIC_API_KEY_FILE: ")
    assert f"mode {mode:04o}" in text and f"chmod 600 {key}" in text
    assert "sk-from-file" not in text


def test_key_file_problems(tmp_path: Path) -> None:
    path = write(tmp_path / "ngb.toml", 'anthropic_api_key_file = "missing.key"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert one_line_error(exc).startswith(f"anthropic_api_key_file in {path}: the file")
    empty = write(tmp_path / "empty.key", "\n", mode=0o600)
    with pytest.raises(ConfigError, match="is empty"):
        load_config(env={"NGB_ANTHROPIC_API_KEY_FILE": str(empty)})
    two = write(tmp_path / "two.key", "sk-a\nsk-b\n", mode=0o600)
    with pytest.raises(ConfigError, match="one line"):
        load_config(env={"NGB_ANTHROPIC_API_KEY_FILE": str(two)})
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(env={"NGB_ANTHROPIC_API_KEY_FILE": str(tmp_path)})


def test_api_token_file(tmp_path: Path) -> None:
    token = write(tmp_path / "token", TOKEN + "\n", mode=0o400)
    config = load_config(env={"NGB_API_TOKEN_FILE": str(token), "NGB_WEB_HOST": "0.0.0.0"})
    assert config.api_token == TOKEN


def test_secret_with_space_is_refused_without_echo() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(env={"NGB_API_TOKEN": "abc def"})
    assert "abc" not in str(exc.value) and str(exc.value).startswith("NGB_API_TOKEN: ")


def test_describe_redacts_secrets() -> None:
    config = load_config(env={"NGB_API_TOKEN": TOKEN, "ANTHROPIC_API_KEY": "sk-secret"})
    shown = config.describe()
    assert shown["api_token"] == "<redacted>" and shown["anthropic_api_key"] == "<redacted>"
    assert TOKEN not in repr(shown) and "sk-secret" not in repr(shown)
    assert shown["web_port"] == 8640 and isinstance(shown["state_dir"], str)


# -- exposure -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.com"])
def test_non_loopback_host_needs_a_token(host: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(env={"NGB_WEB_HOST": host})
    text = one_line_error(exc)
    assert text.startswith("NGB_WEB_HOST: ") and "no api_token" in text
    with pytest.raises(ConfigError) as exc:
        load_config(env={"NGB_WEB_HOST": host, "NGB_API_TOKEN": "short"})
    assert one_line_error(exc).startswith("NGB_API_TOKEN: must be at least 16 characters")
    assert load_config(env={"NGB_WEB_HOST": host, "NGB_API_TOKEN": TOKEN}).web_exposed


def test_non_loopback_host_in_file_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "ngb.toml", 'web_host = "0.0.0.0"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert one_line_error(exc).startswith(f"web_host in {path}: ")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"])
def test_loopback_hosts_need_no_token(host: str) -> None:
    assert is_loopback_host(host)
    assert not load_config(env={"NGB_WEB_HOST": host}).web_exposed


# -- value parsers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("250ms", 0.25),
        ("2d", 172800.0),
        (" 5M ", 300.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "-1", "1.2.3s", "inf", "nan", True, None, "5 m s"])
def test_parse_duration_refuses(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_parse_bool() -> None:
    for text in ("1", "true", "TRUE", "yes", "on", True, 1):
        assert parse_bool(text) is True
    for text in ("0", "false", "No", "off", False, 0):
        assert parse_bool(text) is False
    for text in ("2", "y", "", None, 2):
        with pytest.raises(ValueError, match="boolean"):
            parse_bool(text)


def test_parse_size() -> None:
    assert parse_size("1g") == 1024**3
    assert parse_size("512m") == 512 * 1024**2
    assert parse_size("1.5g") == int(1.5 * 1024**3)
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size(4096) == 4096
    with pytest.raises(ValueError):
        parse_size("1 gallon")


# -- folders ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["main", "Family", "a", "x" * 64, "team-1_b", "0day"])
def test_valid_folders(name: str) -> None:
    assert validate_folder(name) == name


@pytest.mark.parametrize(
    "name", ["", "x" * 65, "-a", "_a", ".", "..", "a/b", "a b", "a.b", "ünï", "a\n", "global", "GLOBAL", 5]
)
def test_invalid_folders(name: object) -> None:
    with pytest.raises(ValueError):
        validate_folder(name)


def test_folder_case_collision() -> None:
    assert validate_folder("family", ["family", "work"]) == "family"
    with pytest.raises(ValueError, match="differs only by case from the existing folder 'family'"):
        validate_folder("Family", ["family"])


def test_group_dir(tmp_path: Path) -> None:
    config = Config(state_dir=tmp_path / "state")
    assert group_dir(config, "main") == (tmp_path / "state" / "groups" / "main").resolve()
    with pytest.raises(ValueError):
        group_dir(config, "../x")
    # A group folder that is a symlink to a sibling (or anywhere else) is refused.
    groups = tmp_path / "state" / "groups"
    (groups / "other").mkdir(parents=True)
    (groups / "evil").symlink_to(groups / "other")
    with pytest.raises(ValueError, match="resolves to"):
        group_dir(config, "evil")
    (groups / "out").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="outside"):
        group_dir(config, "out")
