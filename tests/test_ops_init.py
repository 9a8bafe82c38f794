"""`ngb init`: writes a valid ngb.toml and a mode-600 ngb.env; secrets are never echoed."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import pytest

from ngb.cli_ops import add_ops_commands
from ngb.config import load_config
from ngb.ops import init
from ngb.ops.service import parse_env_file

KEY = "sk-ant-init-SECRET-abcdef123456"
TG = "123456:telegram-SECRET"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ngb")
    add_ops_commands(parser.add_subparsers(dest="cmd", required=True))
    return parser.parse_args(["init", *argv])


def test_non_interactive_with_flags_and_env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "conf" / "ngb.toml"
    args = parse("--yes", "--path", str(path), "--trigger", "Max", "--channel", "telegram", "--web-port", "8700")
    code = init.cmd_init(None, args, env={"ANTHROPIC_API_KEY": KEY, "NGB_TELEGRAM_TOKEN": TG})
    out = capsys.readouterr()
    assert code == 0, out.err
    assert KEY not in out.out + out.err and TG not in out.out + out.err
    env_file = path.parent / "ngb.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert parse_env_file(env_file.read_text()) == {"ANTHROPIC_API_KEY": KEY, "NGB_TELEGRAM_TOKEN": TG}
    text = path.read_text()
    assert KEY not in text and TG not in text
    config = load_config(path, env=parse_env_file(env_file.read_text()))
    assert config.trigger == "@Max" and config.web_port == 8700
    assert config.state_dir == path.parent / "state"
    assert set(config.channels) == {"local", "telegram"}
    assert config.anthropic_api_key == KEY


def test_interactive_answers_and_hidden_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter(["bad trigger with spaces", "@Zed", "", "nonsense", "local:main", "", "", ""])
    asked_secret: list[str] = []

    def secret(prompt: str) -> str:
        asked_secret.append(prompt)
        return KEY

    asker = init.Asker(True, ask=lambda prompt: next(answers), secret=secret)
    path = tmp_path / "ngb.toml"
    args = parse("--path", str(path))
    assert init.cmd_init(None, args, env={}, asker=asker) == 0
    out = capsys.readouterr().out
    assert "one word" in out and "<channel>:<chat id>" in out  # bad answers are asked again
    assert KEY not in out and asked_secret and "hidden" in asked_secret[0]
    config = load_config(path, env=parse_env_file((tmp_path / "ngb.env").read_text()))
    assert config.trigger == "@Zed" and config.main_chat == "local:main"


def test_refuses_to_overwrite_and_merges_env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ngb.toml"
    path.write_text("# mine\n")
    assert init.cmd_init(None, parse("--yes", "--path", str(path)), env={}) == 2
    assert path.read_text() == "# mine\n"
    env_file = tmp_path / "ngb.env"
    env_file.write_text("OTHER=keep\n")
    os.chmod(env_file, 0o640)
    assert init.cmd_init(None, parse("--yes", "--force", "--path", str(path)), env={"ANTHROPIC_API_KEY": KEY}) == 0
    assert parse_env_file(env_file.read_text()) == {"OTHER": "keep", "ANTHROPIC_API_KEY": KEY}
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_key_from_file_and_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY + "\n")
    path = tmp_path / "ngb.toml"
    assert init.cmd_init(None, parse("--yes", "--path", str(path), "--anthropic-key-file", str(keyfile)), env={}) == 0
    assert parse_env_file((tmp_path / "ngb.env").read_text())["ANTHROPIC_API_KEY"] == KEY
    # an answer the config loader refuses leaves nothing half-written
    other = tmp_path / "other.toml"
    assert init.cmd_init(None, parse("--yes", "--path", str(other), "--model-upstream", "http://example.com"), env={}) == 2
    assert not other.exists() and not other.with_name("other.toml.tmp").exists()
    assert "model_upstream" in capsys.readouterr().err


def test_no_terminal_needs_yes(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", open(os.devnull))
    assert init.cmd_init(None, parse("--path", str(tmp_path / "x.toml")), env={}) == 2
    assert "--yes" in capsys.readouterr().err
