"""The `ngb` command line, run as a user would (a subprocess), against a state with no daemon."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    r = ngb(tmp_path, "groups", "list", NGB_MAX_CONTAINERS="11")
    assert r.returncode == 2
    assert r.stderr.startswith("ngb: NGB_MAX_CONTAINERS") and r.stderr.count("\n") == 1
    (tmp_path / "ngb.toml").write_text("web_prot = 8000\n")
    r = ngb(tmp_path, "groups", "list")
    assert r.returncode == 2 and "web_prot" in r.stderr and "Traceback" not in r.stderr
