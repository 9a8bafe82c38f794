"""The `ngb` command line, run as a user would (a subprocess), against a state with no daemon."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent


def ngb(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, NGB_STATE_DIR=str(tmp_path / "state"), NGB_WEB_PORT="1", **env)
    full.pop("NGB_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "ngb", *args], cwd=tmp_path, env=full, capture_output=True, text=True, timeout=60)


def test_groups_add_list_remove(tmp_path: Path) -> None:
    r = ngb(tmp_path, "groups", "add", "local:family", "--folder", "family", "--no-trigger")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "state" / "groups" / "family" / "CLAUDE.md").exists()
    r = ngb(tmp_path, "groups", "list")
    assert "local:family" in r.stdout and "no-trigger" in r.stdout
    r = ngb(tmp_path, "groups", "remove", "local:family")
    assert r.returncode == 0
    assert "local:family" not in ngb(tmp_path, "groups", "list").stdout
    r = ngb(tmp_path, "groups", "remove", "local:family")
    assert r.returncode == 1 and "no group" in r.stderr


def test_folder_names_are_checked(tmp_path: Path) -> None:
    for bad in ("global", "../etc", "a/b", "-x", "x" * 65, "", ".hidden", "na me"):
        r = ngb(tmp_path, "groups", "add", "local:x", f"--folder={bad}")
        assert r.returncode == 2, (bad, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    r = ngb(tmp_path, "groups", "add", "local:x", "--folder", "Good_name-1")
    assert r.returncode == 0, r.stderr


def test_chat_name_must_have_a_channel(tmp_path: Path) -> None:
    r = ngb(tmp_path, "groups", "add", "family", "--folder", "family")
    assert r.returncode == 2 and "<channel>:<id>" in r.stderr


def test_bad_config_is_one_line_naming_the_key(tmp_path: Path) -> None:
    r = ngb(tmp_path, "groups", "list", NGB_MAX_CONTAINERS="257")
    assert r.returncode == 2
    assert r.stderr.startswith("ngb: NGB_MAX_CONTAINERS") and r.stderr.count("\n") == 1
    (tmp_path / "ngb.toml").write_text("web_prot = 8000\n")
    r = ngb(tmp_path, "groups", "list")
    assert r.returncode == 2 and "web_prot" in r.stderr and "Traceback" not in r.stderr


# -- the web API's token (docs/api.md, "Security") ----------------------------------------------
def test_a_short_api_token_is_refused_at_start(tmp_path: Path) -> None:
    r = ngb(tmp_path, "run", "--no-build", NGB_API_TOKEN="0123456789")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("ngb: NGB_API_TOKEN: must be at least 16 characters") and r.stderr.count("\n") == 1
    assert "0123456789" not in r.stderr and not (tmp_path / "state").exists()


async def _ngb_async(state: Path, port: int, *args: str, user: list[str] | None = None, **env: str) -> Any:
    full = {k: v for k, v in os.environ.items() if k not in ("NGB_API_TOKEN", "NGB_CONFIG")}
    full.update(NGB_STATE_DIR=str(state), NGB_WEB_PORT=str(port), PYTHONPATH=str(ROOT), **env)
    return await trio.run_process(
        [*(user or []), sys.executable, "-m", "ngb", *args], cwd="/", env=full, check=False,
        capture_stdout=True, capture_stderr=True,
    )


async def test_commands_use_the_token_the_daemon_generated(run_daemon) -> None:
    d = await run_daemon()  # no NGB_API_TOKEN anywhere: the daemon generated one
    cfg = d.daemon.config
    r = await _ngb_async(cfg.state_dir, cfg.web_port, "chat", "--send", "hi from the shell", "--wait", "10", "--settle", "0")
    assert r.returncode == 0, r.stderr.decode()
    assert "Echo: hi from the shell" in r.stdout.decode()
    r = await _ngb_async(cfg.state_dir, cfg.web_port, "groups", "list")  # through the running daemon's API
    assert r.returncode == 0 and "local:main" in r.stdout.decode(), r.stderr.decode()
    r = await _ngb_async(cfg.state_dir, cfg.web_port, "link")
    assert r.stdout.decode().strip() == f"http://127.0.0.1:{cfg.web_port}/?token={d.token}"


@pytest.mark.hostuser
async def test_a_user_who_cannot_read_the_token_is_told_why(run_daemon) -> None:
    d = await run_daemon()
    cfg = d.daemon.config
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    r = await _ngb_async(cfg.state_dir, cfg.web_port, "chat", "--send", "let me in", "--wait", "1", user=nobody)
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1, err
    assert "needs its API token" in err and "permission denied" in err and "NGB_API_TOKEN" in err
    r = await _ngb_async(cfg.state_dir, cfg.web_port, "groups", "list", user=nobody)
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1 and "permission denied" in err, err
    assert d.daemon.store is not None and not [m for m in await d.history("main") if m["text"] == "let me in"]
