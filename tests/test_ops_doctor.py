"""`ngb doctor`: every check's failure mode gives a fail line with the command that fixes it, and
the exit status is non-zero whenever anything is wrong."""

from __future__ import annotations

import argparse
import email.utils
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ngb.cli_ops import add_ops_commands
from ngb.config import load_config
from ngb.ops import doctor as d
from ngb.ops.fix_lines import user_name
from ngb.sandbox import image as img
from ngb.store import MIGRATIONS, Store
from tests.fakes.anthropic import FakeAnthropic

SECRET = "sk-ant-doctor-SECRET-0123456789"


def cfg(tmp_path: Path, **env: str) -> Any:
    base = {
        "NGB_STATE_DIR": str(tmp_path / "state"),
        "NGB_MOUNT_ALLOWLIST": str(tmp_path / "cfg" / "allow.toml"),
        "NGB_WEB_PORT": "1",
    }
    return load_config(None, env={**base, **env})


def make_db(config: Any) -> None:
    store = Store(config.db_path)
    store.open_sync()
    store.close_sync()


# -- state dir ------------------------------------------------------------------------------------
def test_state_dir_ok_missing_and_broken(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    assert d.check_state_dir(c).status == "ok"  # missing but creatable
    c.state_dir.mkdir(mode=0o700)
    assert d.check_state_dir(c).status == "ok"
    assert not list(c.state_dir.iterdir())  # the probe file is gone

    blocker = tmp_path / "file"
    blocker.write_text("x")
    c2 = cfg(tmp_path, NGB_STATE_DIR=str(blocker))
    check = d.check_state_dir(c2)
    assert check.failed and "not a folder" in check.detail and "install -d -o" in check.fix

    c3 = cfg(tmp_path, NGB_STATE_DIR=str(blocker / "under"))  # parent is a file: cannot be created
    check = d.check_state_dir(c3)
    assert check.failed and check.fix.startswith("sudo install -d -o")


def test_state_dir_not_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = cfg(tmp_path)
    c.state_dir.mkdir()

    def refuse(*a: Any, **k: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)  # root ignores modes; simulate
    check = d.check_state_dir(c)
    assert check.failed and "Permission denied" in check.detail
    assert check.fix == f"sudo chown -R {user_name()}: {c.state_dir}"


def test_state_dir_world_writable_warns(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    c.state_dir.mkdir()
    os.chmod(c.state_dir, 0o777)
    check = d.check_state_dir(c)
    assert check.status == "warn" and check.fix == f"chmod o-w {c.state_dir}"


def test_state_dir_open_to_other_users_warns(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    c.state_dir.mkdir()
    os.chmod(c.state_dir, 0o755)  # as an older daemon made it
    check = d.check_state_dir(c)
    assert check.status == "warn" and "other users" in check.detail and "0755" in check.detail
    assert check.fix == f"chmod 700 {c.state_dir}"


# -- the agents' uid ------------------------------------------------------------------------------
class _Entry:
    def __init__(self, name: str, members: list[str] | None = None) -> None:
        self.pw_name = self.gr_name = name
        self.gr_mem = members or []


def _lookup(table: dict[int, _Entry]) -> Any:
    def get(n: int) -> _Entry:
        if n not in table:
            raise KeyError(n)
        return table[n]

    return get


def test_agent_uid_owned_by_a_host_account_warns_naming_it(tmp_path: Path) -> None:
    c = cfg(tmp_path)  # agent_uid 1000
    users = {1000: _Entry("alice"), 2000: _Entry("bob")}
    check = d.check_agent_uid(c, getpwuid=_lookup(users), getgrgid=_lookup({2001: _Entry("g")}), euid=0, egid=0)
    assert check.status == "warn" and "'alice'" in check.detail and "uid 1000" in check.detail
    assert check.fix.startswith("set NGB_AGENT_UID=2002 ")  # the first uid and gid nobody uses

    c2 = cfg(tmp_path, NGB_AGENT_UID="3000")
    check = d.check_agent_uid(c2, getpwuid=_lookup(users), getgrgid=_lookup({}), euid=0, egid=0)
    assert check.status == "ok" and "3000" in check.detail

    # the daemon's own account is the agents' uid: named as such
    check = d.check_agent_uid(c, getpwuid=_lookup(users), getgrgid=_lookup({}), euid=1000, egid=1000)
    assert check.status == "warn" and "the daemon's own account 'alice'" in check.detail


def test_agent_uid_daemon_group_with_other_members_warns(tmp_path: Path) -> None:
    c = cfg(tmp_path, NGB_AGENT_UID="3000")
    groups = {998: _Entry("nanogridbot", ["carol"])}
    check = d.check_agent_uid(c, getpwuid=_lookup({}), getgrgid=_lookup(groups), euid=998, egid=998)
    assert check.status == "warn" and "carol" in check.detail and "'nanogridbot'" in check.detail
    assert "useradd --system" in check.fix
    check = d.check_agent_uid(c, getpwuid=_lookup({}), getgrgid=_lookup({998: _Entry("nanogridbot")}), euid=998, egid=998)
    assert check.status == "ok"


# -- database -------------------------------------------------------------------------------------
def test_database_ok_and_missing(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    assert d.check_database(c).status == "ok"
    make_db(c)
    check = d.check_database(c)
    assert check.status == "ok" and f"schema {len(MIGRATIONS)}/{len(MIGRATIONS)}" in check.detail


def test_database_not_a_database(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    c.state_dir.mkdir()
    c.db_path.write_bytes(b"this is not sqlite" * 400)
    check = d.check_database(c)
    assert check.failed and ".recover" in check.fix and "stop the daemon" in check.fix


def test_database_corrupt_pages(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    c.state_dir.mkdir()
    conn = sqlite3.connect(c.db_path)
    conn.execute("CREATE TABLE t (x TEXT)")
    conn.execute("CREATE INDEX tx ON t(x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(f"row {i} " * 20,) for i in range(3000)])
    conn.commit()
    conn.close()
    raw = bytearray(c.db_path.read_bytes())
    page = 4096
    for p in range(3, len(raw) // page, 3):  # scribble over every third page (not the header page)
        raw[p * page + 100 : p * page + 400] = os.urandom(300)
    c.db_path.write_bytes(bytes(raw))
    check = d.check_database(c)
    assert check.failed, check
    assert ".recover" in check.fix


def test_database_migrations_behind_and_ahead(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    make_db(c)
    conn = sqlite3.connect(c.db_path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    conn.commit()
    check = d.check_database(c)
    assert check.failed and "1 migration(s) not applied" in check.detail and "restart" in check.fix
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 3}")
    conn.commit()
    conn.close()
    check = d.check_database(c)
    assert check.failed and "newer" in check.detail and "upgrade ngb" in check.fix


# -- mount allowlist --------------------------------------------------------------------------------
def write_allowlist(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    path.write_text(text)
    os.chmod(path, mode)


def test_allowlist_missing_is_fine_and_valid_is_ok(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    assert d.check_allowlist(c).status == "ok"
    (tmp_path / "projects").mkdir()
    write_allowlist(c.mount_allowlist, f'[[allow]]\npath = "{tmp_path / "projects"}"\n')
    check = d.check_allowlist(c)
    assert check.status == "ok" and "1 allowed" in check.detail


def test_allowlist_failures(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    write_allowlist(c.mount_allowlist, "[[allow]\n")
    check = d.check_allowlist(c)
    assert check.failed and "not valid TOML" in check.detail and str(c.mount_allowlist) in check.fix

    write_allowlist(c.mount_allowlist, "[[allow]]\npaht = '/srv'\n")
    check = d.check_allowlist(c)
    assert check.failed and "did you mean" in check.detail

    write_allowlist(c.mount_allowlist, "", mode=0o666)
    check = d.check_allowlist(c)
    assert check.failed and check.fix == f"chmod 644 {c.mount_allowlist}"

    inside = cfg(tmp_path, NGB_MOUNT_ALLOWLIST=str(tmp_path / "state" / "allow.toml"))
    write_allowlist(inside.mount_allowlist, "")
    check = d.check_allowlist(inside)
    assert check.failed and "inside the state folder" in check.detail and "mv " in check.fix

    write_allowlist(c.mount_allowlist, f'[[allow]]\npath = "{tmp_path}"\n')  # contains the allowlist
    check = d.check_allowlist(c)
    assert check.failed and "contains the allowlist" in check.detail


def test_allowlist_warnings(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    write_allowlist(c.mount_allowlist, f'[[allow]]\npath = "{tmp_path / "gone"}"\n')
    check = d.check_allowlist(c)
    assert check.status == "warn" and "does not exist" in check.detail
    os.chmod(c.mount_allowlist.parent, 0o777)
    check = d.check_allowlist(c)
    assert check.status == "warn" and check.fix.startswith("chmod go-w")


# -- Docker and the image -----------------------------------------------------------------------------
class FakeAPI:
    def __init__(self, info: dict | None) -> None:
        self.info = info

    def inspect_image(self, name: str) -> dict:
        import docker.errors

        if self.info is None:
            raise docker.errors.ImageNotFound("no such image")
        return self.info


class FakeDocker:
    def __init__(self, info: dict | None = None) -> None:
        self.api = FakeAPI(info)

    def ping(self) -> bool:
        return True

    def version(self) -> dict:
        return {"Version": "99.0"}

    def info(self) -> dict:
        return {"DockerRootDir": "/nonexistent-docker-root"}


def test_docker_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    check, client = d.check_docker()
    assert check.failed and client is None
    assert "no-docker.sock" in check.detail
    assert "systemctl enable --now docker" in check.fix


def test_docker_permission_denied() -> None:
    def factory() -> Any:
        raise PermissionError(13, "Permission denied")

    check, _ = d.check_docker(factory)
    assert check.failed and check.fix.startswith(f"sudo usermod -aG docker {user_name()}")


def test_image_missing_stale_unlabelled_current(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    agent = tmp_path / "agent"
    agent.mkdir()
    (agent / "Dockerfile").write_text("FROM scratch\n")
    want = img.agent_content_hash(agent)
    check = d.check_image(c, FakeDocker(None), agent)
    assert check.failed and "not built" in check.detail and check.fix == "ngb image build"
    check = d.check_image(c, FakeDocker({"Id": "sha256:" + "a" * 64, "Config": {"Labels": {img.HASH_LABEL: "0" * 64}}}), agent)
    assert check.failed and "other agent/ files" in check.detail and check.fix.startswith("ngb image build")
    check = d.check_image(c, FakeDocker({"Id": "sha256:" + "a" * 64, "Config": {"Labels": None}}), agent)
    assert check.failed and "no ngb.agent.hash label" in check.detail
    check = d.check_image(c, FakeDocker({"Id": "sha256:" + "a" * 64, "Config": {"Labels": {img.HASH_LABEL: want}}}), agent)
    assert check.status == "ok" and check.detail.endswith("; no browser (the agent's browser tools are off: docs/web-browser.md)")
    labels = {img.HASH_LABEL: want, "ngb.browser": "chromium 156.0.8078.114-1~deb12u1"}
    check = d.check_image(c, FakeDocker({"Id": "sha256:" + "a" * 64, "Config": {"Labels": labels}}), agent)
    assert check.status == "ok" and check.detail.endswith("; browser: chromium 156.0.8078.114-1~deb12u1"), check.detail
    assert d.check_image(c, None, agent).status == "skip"


def test_fix_lines_name_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NGB_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    toml = tmp_path / "etc" / "ngb.toml"
    toml.parent.mkdir()
    toml.write_text('state_dir = "s"\n')
    c = load_config(toml, env={})
    assert d.check_image(c, FakeDocker(None), tmp_path).fix == f"ngb --config {toml} image build"


# -- model and clock ------------------------------------------------------------------------------------
def mock(status: int, date: float | None = None, seen: list | None = None) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        headers = {"date": email.utils.formatdate(date, usegmt=True)} if date is not None else {}
        return httpx.Response(status, headers=headers, json={"type": "error"} if status >= 400 else {"input_tokens": 3})

    return httpx.MockTransport(handler)


def test_model_without_key(tmp_path: Path) -> None:
    check, _ = d.check_model(cfg(tmp_path))
    assert check.failed and "no API key" in check.detail and "ANTHROPIC_API_KEY" in check.fix


def test_model_key_refused_is_never_printed(tmp_path: Path) -> None:
    c = cfg(tmp_path, NGB_ANTHROPIC_API_KEY=SECRET)
    seen: list[httpx.Request] = []
    check, _ = d.check_model(c, mock(401, seen=seen))
    assert check.failed and "refused the key" in check.detail
    assert seen[0].headers["x-api-key"] == SECRET and seen[0].url.path == "/v1/messages/count_tokens"
    assert SECRET not in repr(check)


def test_model_unreachable_and_overloaded(tmp_path: Path) -> None:
    c = cfg(tmp_path, NGB_MODEL_UPSTREAM="http://127.0.0.1:1")
    check, _ = d.check_model(c)
    assert check.failed and "cannot reach" in check.detail and check.fix.startswith("curl -sS -m 10 http://127.0.0.1:1/")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    check, _ = d.check_model(c, httpx.MockTransport(slow))
    assert check.failed and "did not answer" in check.detail
    check, _ = d.check_model(c, mock(529))
    assert check.status == "warn"
    check, _ = d.check_model(c, mock(404))
    assert check.status == "ok" and "HTTP 404" in check.detail


def test_clock(tmp_path: Path) -> None:
    now = time.time()
    assert d.check_clock(now + 2, now).status == "ok"
    assert d.check_clock(now - 30, now).status == "warn"
    check = d.check_clock(now - 3600, now)
    assert check.failed and "ahead of" in check.detail and "timedatectl set-ntp true" in check.fix
    check = d.check_clock(None, now=1_000_000_000.0)  # 2001: before this ngb was installed
    assert check.failed and "2001" in check.detail
    assert d.check_clock(None, now, ntp=False).status == "warn"
    assert d.check_clock(None, now, ntp=True).status == "ok"


def test_clock_skew_read_from_the_upstream(tmp_path: Path) -> None:
    c = cfg(tmp_path, NGB_MODEL_UPSTREAM="http://127.0.0.1:9", NGB_ANTHROPIC_API_KEY=SECRET)
    check, server_time = d.check_model(c, mock(200, date=time.time() - 7200))
    assert check.status == "ok"
    assert d.check_clock(server_time).failed


# -- disk and daemon -----------------------------------------------------------------------------------------
def test_disk_low_and_full(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    assert d.check_disk(c)[0].status in ("ok", "warn")
    checks = d.check_disk(c, docker_root=str(tmp_path), min_free=1 << 60, low_free=1 << 61)
    assert [x.status for x in checks] == ["fail", "fail"]
    assert "du -xh" in checks[0].fix and checks[1].fix.startswith("docker system prune")
    checks = d.check_disk(c, min_free=0, low_free=1 << 60)
    assert checks[0].status == "warn"


def test_daemon_states(tmp_path: Path) -> None:
    c = cfg(tmp_path)
    assert d.check_daemon(c).detail.startswith("not running")
    ok = httpx.MockTransport(lambda r: httpx.Response(200, json={"status": "ok"}))
    assert d.check_daemon(c, ok).status == "ok"
    bad = httpx.MockTransport(lambda r: httpx.Response(503, json={"status": "unhealthy", "problems": ["store: locked"]}))
    check = d.check_daemon(c, bad)
    assert check.failed and "store: locked" in check.detail
    other = httpx.MockTransport(lambda r: httpx.Response(200, text="<html>nginx</html>"))
    check = d.check_daemon(c, other)
    assert check.failed and "something else" in check.detail and "ss -ltnp" in check.fix


# -- the command ---------------------------------------------------------------------------------------------
def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ngb")
    add_ops_commands(parser.add_subparsers(dest="cmd", required=True))
    return parser.parse_args(argv)


def test_exit_status_and_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = cfg(tmp_path, NGB_MODEL_UPSTREAM="http://127.0.0.1:9", NGB_ANTHROPIC_API_KEY=SECRET)
    agent = tmp_path / "agent"
    agent.mkdir()
    (agent / "Dockerfile").write_text("FROM scratch\n")
    labels = {img.HASH_LABEL: img.agent_content_hash(agent)}
    good = d.Doctor(
        c, docker_factory=lambda: FakeDocker({"Id": "sha256:" + "b" * 64, "Config": {"Labels": labels}}),
        model_transport=mock(200, date=time.time()), agent_dir=agent,
    )
    args = parse("doctor")
    assert d.cmd_doctor(c, args, good) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "all good" in out and SECRET not in out
    names = [line.split()[1] for line in out.splitlines() if line[:4] in ("ok  ", "warn", "FAIL", "skip")]
    for name in ("state", "database", "mount", "web", "docker", "agent", "disk", "model", "clock", "daemon"):
        assert name in names, names

    bad = d.Doctor(c, docker_factory=lambda: FakeDocker(None), model_transport=mock(401), agent_dir=agent)
    assert d.cmd_doctor(c, parse("doctor", "--json"), bad) == 1
    out = capsys.readouterr().out
    import json

    rows = json.loads(out)
    failed = {r["name"]: r["fix"] for r in rows if r["status"] == "fail"}
    assert set(failed) == {"agent image", "model"} and all(failed.values())
    assert SECRET not in out


@pytest.mark.docker
async def test_against_the_fake_model_and_real_docker(tmp_path: Path, docker_client) -> None:
    """The whole doctor on a fresh state, as CI runs it: the real Docker engine, the fake model."""
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        c = cfg(tmp_path, NGB_MODEL_UPSTREAM=fake.url)
        checks = await trio.to_thread.run_sync(lambda: list(d.Doctor(c).run()))
        nursery.cancel_scope.cancel()
    by_name = {x.name: x for x in checks}
    for name in ("state dir", "database", "mount allowlist", "docker", "model", "clock", "daemon"):
        assert by_name[name].status == "ok", by_name[name]
    # The image may be stale on a developer's machine mid-change; it must then say how to fix it.
    assert by_name["agent image"].status == "ok" or by_name["agent image"].fix.endswith("(then restart the daemon)") or by_name["agent image"].fix == "ngb image build"


def test_web_check_says_what_the_door_lets_through_and_warns_on_wide_openings(tmp_path: Path) -> None:
    ok = d.check_web(cfg(tmp_path))
    assert (ok.status, ok.detail) == ("ok", "main group: open, other groups: off (unless set: ngb groups web); ports 80, 443")
    lan = d.check_web(cfg(tmp_path, NGB_WEB_ALLOW_NETWORKS="192.168.1.20/32"))
    assert lan.status == "ok"
    wide = d.check_web(cfg(tmp_path, NGB_WEB_ALLOW_NETWORKS="127.0.0.1/32,10.0.0.0/8,169.254.0.0/16"))
    assert wide.status == "warn"
    assert "web_allow_networks 127.0.0.1/32 includes this host's loopback" in wide.detail
    assert "web_allow_networks 10.0.0.0/8 opens 16,777,216 addresses" in wide.detail
    assert "169.254.0.0/16 holds a cloud metadata address, which stays refused" in wide.detail
    assert wide.fix == "open single hosts (192.168.1.20/32) in web_allow_networks"
    net = d.check_web(cfg(tmp_path, NGB_CONTAINER_NETWORK="bridge"))
    assert net.status == "warn" and "past the egress door" in net.detail and 'container_network = "none"' in (net.fix or "")
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n")
    bad_ca = d.check_web(cfg(tmp_path, NGB_WEB_EXTRA_CA_FILE=str(key)))
    assert bad_ca.status == "warn" and "not a PEM file of certificates only" in bad_ca.detail
    gone = d.check_web(cfg(tmp_path, NGB_WEB_EXTRA_CA_FILE=str(tmp_path / "nope.pem")))
    assert gone.status == "warn" and "cannot be read" in gone.detail
