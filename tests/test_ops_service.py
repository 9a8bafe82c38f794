"""`ngb service install|show|uninstall`: the unit passes `systemd-analyze verify`, secrets go to a
mode-600 environment file and are never printed."""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ngb.cli_ops import add_ops_commands
from ngb.config import load_config
from ngb.ops import service

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-ant-test-SECRET-value-1234567890"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ngb")
    add_ops_commands(parser.add_subparsers(dest="cmd", required=True))
    return parser.parse_args(argv)


def config_for(tmp_path: Path, **env: str):
    base = {"NGB_STATE_DIR": str(tmp_path / "state"), "NGB_MOUNT_ALLOWLIST": str(tmp_path / "allow.toml")}
    return load_config(None, env={**base, **env})


def run(tmp_path: Path, config, *argv: str, env: dict[str, str] | None = None, capsys=None) -> tuple[int, str]:
    args = parse("service", *argv)
    if args.service_cmd == "install":
        code = service.install(config, args, env=env or {})
    elif args.service_cmd == "uninstall":
        code = service.uninstall(config, args, env=env or {})
    else:
        code = args.fn(config, args)
    out = capsys.readouterr() if capsys else None
    return code, (out.out + out.err) if out else ""


def verify(unit: Path, *, user: bool, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (scripts/test.sh installs it)")
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), SYSTEMD_LOG_LEVEL="notice")
    cmd = [exe] + (["--user"] if user else []) + ["verify", str(unit)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def assert_clean(result: subprocess.CompletedProcess[str], unit: Path) -> None:
    assert result.returncode == 0, result.stderr
    # verify exits 0 even for unknown keys or bad values ("... ignoring"): any line about our file fails.
    ours = [line for line in result.stderr.splitlines() if unit.name in line or str(unit) in line]
    assert ours == [], result.stderr


@pytest.mark.parametrize("user", [False, True])
def test_installed_unit_passes_systemd_analyze_verify(tmp_path: Path, user: bool, capsys) -> None:
    cfg = config_for(tmp_path)
    unit_dir = tmp_path / "units"
    env_file = tmp_path / "etc" / "ngb.env"
    argv = ["install", "--unit-dir", str(unit_dir), "--env-file", str(env_file)] + (["--user"] if user else [])
    code, out = run(tmp_path, cfg, *argv, capsys=capsys)
    assert code == 0, out
    unit = unit_dir / "nanogridbot.service"
    text = unit.read_text()
    for line in (
        "Type=notify", "NotifyAccess=main", "WatchdogSec=30", "Restart=on-failure", "NoNewPrivileges=yes",
        "ProtectSystem=strict", f"ReadWritePaths={cfg.state_dir}", "PrivateTmp=yes",
        f"EnvironmentFile={env_file}", f"ExecStart={sys.executable} -m ngb run --no-build",
    ):
        assert line in text.splitlines(), (line, text)
    assert ("docker.service" in text) is (not user)
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert_clean(verify(unit, user=user, tmp_path=tmp_path), unit)
    # the commands to enable and start it are printed
    sc = "systemctl --user" if user else "systemctl"
    assert f"{sc} daemon-reload && {sc} enable --now nanogridbot.service" in out
    assert "image build" in out and "doctor" in out


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above would notice a mistake: a typo'd key and a bad type are reported."""
    unit = tmp_path / "broken.service"
    unit.write_text("[Service]\nType=notifyy\nWatchdogSecs=30\nExecStart=/bin/true\n")
    result = verify(unit, user=False, tmp_path=tmp_path)
    with pytest.raises(AssertionError):
        assert_clean(result, unit)


def test_config_file_run_as_and_instance(tmp_path: Path, capsys) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    toml = conf / "ngb.toml"
    toml.write_text('state_dir = "st"\ninstance = "home"\nshutdown_grace = "45s"\n')
    cfg = load_config(toml, env={})
    code, out = run(tmp_path, cfg, "install", "--unit-dir", str(tmp_path / "u"), "--run-as", "root", "--watchdog", "20", capsys=capsys)
    assert code == 0, out
    unit = tmp_path / "u" / "nanogridbot-home.service"
    text = unit.read_text()
    assert f"--config {toml}" in text and "User=root" in text and "WatchdogSec=20" in text
    assert "TimeoutStopSec=75" in text  # grace + 30
    assert f"EnvironmentFile={conf / 'ngb.env'}" in text  # beside the config, where `ngb init` puts it
    assert "NGB_STATE_DIR" not in text  # the config file says it
    assert (conf / "st").is_dir()
    assert_clean(verify(unit, user=False, tmp_path=tmp_path), unit)


def test_copy_env_writes_secrets_0600_and_never_prints_them(tmp_path: Path, capsys) -> None:
    cfg = config_for(tmp_path)
    env_file = tmp_path / "ngb.env"
    env = {"ANTHROPIC_API_KEY": SECRET, "NGB_TELEGRAM_TOKEN": "123:tok$en\"x", "NGB_WEB_PORT": "9000", "NGB_CONFIG": "/x", "HOME": "/root", "PATH": "/bin"}
    old = os.umask(0)  # a careless umask must not leak the file
    try:
        code, out = run(tmp_path, cfg, "install", "--unit-dir", str(tmp_path / "u"), "--env-file", str(env_file), "--copy-env", env=env, capsys=capsys)
    finally:
        os.umask(old)
    assert code == 0
    assert SECRET not in out and "tok$en" not in out
    assert "ANTHROPIC_API_KEY" in out and "NGB_TELEGRAM_TOKEN" in out
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = service.parse_env_file(env_file.read_text())
    assert values["ANTHROPIC_API_KEY"] == SECRET
    assert values["NGB_TELEGRAM_TOKEN"] == '"123:tok\\$en\\"x"'
    assert values["NGB_WEB_PORT"] == "9000"
    assert "NGB_CONFIG" not in values and "PATH" not in values and "HOME" not in values
    # what a shell (and systemd's env-file parser, same quoting rules) reads back
    r = subprocess.run(["sh", "-c", f"set -a; . {env_file}; printf %s \"$NGB_TELEGRAM_TOKEN\""], capture_output=True, text=True)
    assert r.stdout == '123:tok$en"x'


def test_existing_env_file_is_kept_merged_and_tightened(tmp_path: Path, capsys) -> None:
    cfg = config_for(tmp_path)
    env_file = tmp_path / "ngb.env"
    env_file.write_text("# mine\nANTHROPIC_API_KEY=old\nOTHER=keep\n")
    os.chmod(env_file, 0o644)
    code, out = run(tmp_path, cfg, "install", "--unit-dir", str(tmp_path / "u"), "--env-file", str(env_file), "--copy-env", env={"ANTHROPIC_API_KEY": SECRET}, capsys=capsys)
    assert code == 0
    assert "made it 600" in out
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    text = env_file.read_text()
    assert "# mine" in text and "OTHER=keep" in text and f"ANTHROPIC_API_KEY={SECRET}" in text and "=old" not in text


def test_show_prints_the_unit_and_writes_nothing(tmp_path: Path, capsys) -> None:
    cfg = config_for(tmp_path)
    args = parse("service", "show", "--unit-dir", str(tmp_path / "u"))
    assert args.fn(cfg, args) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Written by `ngb service install`") and "Type=notify" in out
    assert not (tmp_path / "u").exists()


def test_uninstall_removes_the_unit_keeps_secrets_unless_purged(tmp_path: Path, capsys) -> None:
    cfg = config_for(tmp_path)
    env_file = tmp_path / "ngb.env"
    common = ["--unit-dir", str(tmp_path / "u"), "--env-file", str(env_file)]
    assert run(tmp_path, cfg, "install", *common, capsys=capsys)[0] == 0
    code, out = run(tmp_path, cfg, "uninstall", *common, capsys=capsys)
    assert code == 0 and "removed" in out and "kept" in out
    assert not (tmp_path / "u" / "nanogridbot.service").exists() and env_file.exists()
    assert "systemctl disable --now nanogridbot.service" in out
    code, out = run(tmp_path, cfg, "uninstall", *common, "--purge", capsys=capsys)
    assert code == 0 and "no unit" in out and not env_file.exists()


def test_refusals(tmp_path: Path, capsys) -> None:
    cfg = config_for(tmp_path)
    args = parse("service", "install", "--user", "--run-as", "root", "--unit-dir", str(tmp_path))
    assert service.install(cfg, args, env={}) == 2
    args = parse("service", "install", "--run-as", "no-such-user-xyz", "--unit-dir", str(tmp_path))
    assert service.install(cfg, args, env={}) == 2
    args = parse("service", "install", "--watchdog", "1", "--unit-dir", str(tmp_path))
    assert service.install(cfg, args, env={}) == 2
    err = capsys.readouterr().err
    assert "--run-as is for system services" in err and "no user" in err and "at least 2 seconds" in err
    with pytest.raises(service.ServiceError):
        service.env_line("BAD NAME", "x")
    with pytest.raises(service.ServiceError):
        service.env_line("X", "two\nlines")


def test_exec_start_quoting() -> None:
    assert service._quote_unit_arg("/opt/my venv/bin/python") == '"/opt/my venv/bin/python"'
    assert service._quote_unit_arg("100%") == "100%%"
    assert service._quote_unit_arg("$HOME") == "$$HOME"
