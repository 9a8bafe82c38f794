"""Hostile configuration: random values for every NGB_* variable and random TOML files (ngb/config.py).
`load_config` either returns a Config or raises ConfigError whose text is one line naming the key;
never another exception. Plus folder names (ngb/folders.py): traversal, absolute paths, unicode
look-alikes, symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ngb.config import _FIELDS, ConfigError, env_var, load_config
from ngb.folders import group_dir, validate_folder

FIELDS = sorted(_FIELDS)
SETTINGS = settings(max_examples=1500, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["0", "-1", "1e309", "nan", "inf", "-inf", "1" * 400, "0x10", "1_000", "true", "yes", "off",
                     "30s", "5m", "-5m", "1d2h", "10GB", "1e3", " 8080 ", "65536", "::1", "0.0.0.0", "[::]",
                     "http://", "http://127.0.0.1:0", "ftp://x", "file:///etc/passwd", "~", "/", "..", "../..",
                     "/dev/null", "/proc/self/environ", "\x00", "a\nb", "\u202e", "ｍａｉｎ", "{}", "[]", '{"a":',
                     "local:", ":", "@", "", " "]),
    st.integers().map(str),
    st.floats().map(str),
)


def _check(exc: BaseException) -> None:
    assert isinstance(exc, ConfigError), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert "\n" not in text and "\r" not in text and text.strip(), repr(text)


@SETTINGS
@given(st.dictionaries(st.sampled_from(FIELDS), values, min_size=1, max_size=4))
def test_random_env_values(tmp_path: Path, picked: dict[str, str]) -> None:
    env = {"NGB_STATE_DIR": str(tmp_path / "state"), "NGB_MOUNT_ALLOWLIST": str(tmp_path / "none.toml")}
    env.update({env_var(k): v for k, v in picked.items() if k not in ("state_dir",) or v.strip()})
    env = {k: v.replace("\x00", "") for k, v in env.items()}  # the OS cannot hold NUL in the environment
    try:
        load_config(None, env=env)
    except Exception as exc:  # noqa: BLE001 - the property under test
        _check(exc)


toml_scalars = st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=False),
                         st.booleans(), st.text(max_size=30))
toml_values = st.one_of(toml_scalars, st.lists(toml_scalars, max_size=3),
                        st.dictionaries(st.text(min_size=1, max_size=8), toml_scalars, max_size=3))


def _toml(data: dict) -> str:
    import json

    def val(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v) if v == v and v not in (float("inf"), float("-inf")) else "nan"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {val(x)}" for k, x in v.items()) + "}"
        raise AssertionError(v)

    return "\n".join(f"{k} = {val(v)}" for k, v in data.items()) + "\n"


@SETTINGS
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(min_size=1, max_size=10).filter(str.isidentifier),
                       toml_values, min_size=1, max_size=4) | st.binary(max_size=200).map(lambda b: b))
def test_random_toml_files(tmp_path: Path, data: dict | bytes) -> None:
    path = tmp_path / "ngb.toml"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(_toml(data), encoding="utf-8")
    env = {"NGB_STATE_DIR": str(tmp_path / "state"), "NGB_MOUNT_ALLOWLIST": str(tmp_path / "none.toml")}
    try:
        load_config(path, env=env)
    except Exception as exc:  # noqa: BLE001
        _check(exc)


# -- folder names ----------------------------------------------------------------------------------
@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=80) | st.sampled_from(
    ["..", ".", "../x", "/etc", "a/b", "a\\b", "a\n", "a\x00", "-rf", "global", "GLOBAL", "ｍａｉｎ", "mai\u0301n",
     "ma\u0131n", "a\u200b", "\u202eevil", "a" * 65, "con", "a b", "a.b", "~root", "$HOME", "%2e%2e"]))
def test_folder_names(name: str) -> None:
    try:
        ok = validate_folder(name)
    except ValueError as exc:
        assert str(exc)
        return
    assert ok == name and ok.isascii() and "/" not in ok and "\\" not in ok and not ok.startswith(("-", "."))
    assert ok.lower() != "global" and 1 <= len(ok) <= 64 and "\n" not in ok and "\x00" not in ok


def test_group_dir_refuses_symlink_escape(tmp_path: Path) -> None:
    cfg = load_config(None, env={"NGB_STATE_DIR": str(tmp_path / "state"),
                                 "NGB_MOUNT_ALLOWLIST": str(tmp_path / "none.toml")})
    cfg.groups_dir.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, cfg.groups_dir / "evil")
    with pytest.raises(ValueError, match="outside"):
        group_dir(cfg, "evil")
    os.symlink("/etc", cfg.groups_dir / "etc")
    with pytest.raises(ValueError):
        group_dir(cfg, "etc")
    assert group_dir(cfg, "fine") == (cfg.groups_dir / "fine").resolve()
    for bad in ("../state", "/etc", "fine/../../x", "ｆｉｎｅ"):
        with pytest.raises(ValueError):
            group_dir(cfg, bad)


@SETTINGS
@given(values)
def test_random_config_file_names(tmp_path: Path, name: str) -> None:
    env = {"NGB_CONFIG": name.replace("\x00", ""), "NGB_STATE_DIR": str(tmp_path / "state"),
           "NGB_MOUNT_ALLOWLIST": str(tmp_path / "none.toml")}
    try:
        load_config(None, env=env)
    except Exception as exc:  # noqa: BLE001
        _check(exc)
