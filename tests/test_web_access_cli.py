"""`ngb groups web` and `ngb web log|usage` (docs/web-access.md): on the state directly when no
daemon runs, and through a running daemon's API, with the same output."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from ngb.records import WebRequest, WebVerdict, utcnow
from tests.test_cli import _ngb_async, ngb


def test_groups_web_offline_shows_and_changes_the_settings(tmp_path: Path) -> None:
    assert ngb(tmp_path, "groups", "add", "local:team", "--folder", "team").returncode == 0
    r = ngb(tmp_path, "groups", "web", "local:team")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "local:team: web off (the daemon's default for groups)"
    r = ngb(tmp_path, "groups", "web", "local:team", "--mode", "allowlist", "--allow", "Example.COM.", "*.wikipedia.org",
            "--deny", "ads.example.com")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["local:team: web allowlist (its own setting)",
                                     "  allow: example.com, *.wikipedia.org", "  deny:  ads.example.com"]
    r = ngb(tmp_path, "groups", "web", "local:team", "--remove-allow", "example.com", "--json")
    data = json.loads(r.stdout)
    assert (data["web"], data["web_allow"], data["web_deny"], data["web_effective"]) == (
        "allowlist", ["*.wikipedia.org"], ["ads.example.com"], "allowlist")
    r = ngb(tmp_path, "groups", "web", "local:team", "--mode", "default", "--json")
    assert json.loads(r.stdout)["web_effective"] == "off" and json.loads(r.stdout)["web"] is None
    # the daemon's default is a setting too
    r = ngb(tmp_path, "groups", "web", "local:team", NGB_WEB_DEFAULT="open")
    assert r.stdout.startswith("local:team: web open (the daemon's default for groups)"), r.stdout
    assert "web=" not in ngb(tmp_path, "groups", "list").stdout  # no own setting: no flag
    ngb(tmp_path, "groups", "web", "local:team", "--mode", "off")
    assert "web=off" in ngb(tmp_path, "groups", "list").stdout


def test_groups_web_refuses_bad_patterns_and_unknown_groups(tmp_path: Path) -> None:
    ngb(tmp_path, "groups", "add", "local:team", "--folder", "team")
    for bad, needle in (("https://example.com/x", "not a URL"), ("10.0.0.5", "addresses are not host patterns"),
                        ("example.com:8080", "no port")):
        r = ngb(tmp_path, "groups", "web", "local:team", "--allow", bad)
        assert r.returncode != 0 and needle in r.stderr, (bad, r.stderr)
    assert "allow: (none)" in ngb(tmp_path, "groups", "web", "local:team").stdout
    r = ngb(tmp_path, "groups", "web", "local:nobody")
    assert r.returncode == 1 and "no group for chat local:nobody" in r.stderr
    r = ngb(tmp_path, "groups", "add", "local:other", "--folder", "other", "--web", "sometimes")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def logged(folder: str, host: str, *, minutes: int = 0, refused: bool = False, down: int = 0) -> WebRequest:
    return WebRequest(folder=folder, time=utcnow() - timedelta(minutes=minutes), host=host, port=443,
                      method="CONNECT", verdict=WebVerdict.REFUSED if refused else WebVerdict.ALLOWED,
                      rule="web: 10.0.0.5 is a private address" if refused else "",
                      address="" if refused else "93.184.216.34", bytes_up=700, bytes_down=down)


async def test_web_log_and_usage_through_the_daemon(run_daemon) -> None:
    d = await run_daemon()
    cfg = d.daemon.config
    r = await _ngb_async(cfg.state_dir, cfg.web_port, "web", "log")
    assert r.returncode == 0 and r.stdout.decode().strip() == "no web requests logged", r.stderr.decode()
    await d.daemon.store.record_web([logged("main", "example.com", minutes=2, down=3 * 1024 * 1024),
                                     logged("main", "10.0.0.5", minutes=1, refused=True),
                                     logged("ops", "ops.example")])
    r = await _ngb_async(cfg.state_dir, cfg.web_port, "web", "log", "--group", "main")
    lines = r.stdout.decode().splitlines()
    assert r.returncode == 0 and len(lines) == 3, r.stdout.decode()
    assert "allowed" in lines[1] and "CONNECT example.com:443" in lines[1] and "3.0 MB" in lines[1]
    assert "refused" in lines[2] and lines[2].endswith("web: 10.0.0.5 is a private address")  # newest last
    r = await _ngb_async(cfg.state_dir, cfg.web_port, "web", "usage", "--json")
    usage = {u["folder"]: u for u in json.loads(r.stdout)}
    assert (usage["main"]["requests"], usage["main"]["refused"], usage["main"]["bytes_down"]) == (2, 1, 3 * 1024 * 1024)
    assert usage["ops"]["requests"] == 1
    r = await _ngb_async(cfg.state_dir, cfg.web_port, "web", "usage", "--days", "0")
    assert r.returncode != 0 and "--days must be between 1 and 366" in r.stderr.decode()
    # a change through the running daemon reaches its registry (and so the door) at once
    r = await _ngb_async(cfg.state_dir, cfg.web_port, "groups", "web", "local:main", "--mode", "allowlist",
                         "--allow", "docs.python.org")
    assert r.returncode == 0, r.stderr.decode()
    main = d.daemon.registry.get("local:main")
    assert main is not None and (main.web, main.web_allow) == ("allowlist", ("docs.python.org",))
