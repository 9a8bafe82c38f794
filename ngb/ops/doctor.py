"""`ngb doctor`: check everything the daemon needs and say, for each problem, the command that fixes it.

Each check returns one `Check`: ``ok``, ``warn`` (works, but look at it), ``fail`` (something is
wrong; the exit status becomes 1) or ``skip`` (could not be checked because something it needs
failed or was left out). A failing check carries ``fix``: the exact command to run, or the one
edit to make. Nothing here changes anything, and no secret is ever printed.

Checks: the state folder is writable; disk space (state folder, Docker's data root); the database
(integrity check, migrations current); the mount allowlist; Docker reachable; the agent image built
and current (its ``ngb.agent.hash`` label against ``agent/``); the model key or upstream answering;
the clock (against the upstream's ``Date`` header and the NTP status); whether a host account
shares the agents' uid (or, for a daemon not running as root, the daemon's group); whether the daemon runs;
each configured channel's token (ngb/ops/channel_checks.py).
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import json
import os
import pwd
import shlex
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import httpx

from ..config import Config, is_loopback_host
from .check import Check

GIB = 1024**3
MIN_FREE = 1 * GIB  # below this: fail (SQLite and Docker start failing in odd ways)
LOW_FREE = 5 * GIB  # below this: warn
CLOCK_FAIL = 60.0  # seconds of skew against the upstream: TLS, cron tasks and logs go wrong
CLOCK_WARN = 10.0
PROBE_MODEL = "claude-sonnet-4-5"
ANTHROPIC_VERSION = "2023-06-01"


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def ngb_command(config: Config) -> str:
    """How to call ngb with this configuration, for the fix lines."""
    if config.config_file is not None and os.environ.get("NGB_CONFIG") != str(config.config_file):
        with contextlib.suppress(OSError):
            if Path("ngb.toml").resolve() == config.config_file.resolve():
                return "ngb"
        return f"ngb --config {shlex.quote(str(config.config_file))}"
    return "ngb"


def _restart_command(config: Config) -> str:
    name = "nanogridbot" if config.instance == "default" else f"nanogridbot-{config.instance}"
    return f"systemctl restart {name} (or stop `{ngb_command(config)} run` and start it again)"


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# -- state folder ---------------------------------------------------------------------------------
def check_state_dir(config: Config) -> Check:
    state = config.state_dir
    q = shlex.quote(str(state))
    own = f"sudo install -d -o {_user()} {q}"
    if state.exists() and not state.is_dir():
        return Check("state dir", "fail", f"{state} exists but is not a folder", f"move it away, then: {own}")
    if not state.exists():
        parent = _existing_parent(state.parent)
        if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            return Check("state dir", "ok", f"{state} does not exist yet; the daemon creates it at start")
        return Check("state dir", "fail", f"{state} does not exist and {parent} is not writable", own)
    try:
        with tempfile.NamedTemporaryFile(dir=state, prefix=".ngb-doctor-") as fh:
            fh.write(b"x")
            fh.flush()
            os.fsync(fh.fileno())
        for sub in (config.groups_dir, config.run_dir, config.global_dir):
            if sub.exists() and not os.access(sub, os.W_OK | os.X_OK):
                raise PermissionError(f"{sub} is not writable")
    except OSError as exc:
        return Check("state dir", "fail", f"cannot write in {state}: {exc}", f"sudo chown -R {_user()}: {q}")
    mode = stat.S_IMODE(state.stat().st_mode)
    if mode & 0o002:
        return Check("state dir", "warn", f"{state} is writable by everyone (mode {mode:04o})", f"chmod o-w {q}")
    if mode & 0o077:
        return Check("state dir", "warn", f"{state} is open to the host's other users (mode {mode:04o}): they can read "
                     "the chat history (the daemon closes it at its next start)", f"chmod 700 {q}")
    return Check("state dir", "ok", f"{state} is writable")


# -- the agents' uid ----------------------------------------------------------------------------------
def _free_uid(taken: Callable[[int], bool], start: int = 2000) -> int:
    uid = start
    while taken(uid) and uid < start + 100_000:
        uid += 1
    return uid


def check_agent_uid(
    config: Config,
    getpwuid: Callable[[int], Any] = pwd.getpwuid,
    getgrgid: Callable[[int], Any] | None = None,
    euid: int | None = None,
    egid: int | None = None,
) -> Check:
    """A host account with the agents' uid is, to the kernel, every group's agent: it can connect
    to each group's sockets and write each group's folder. A daemon not running as root opens
    those to its own group instead: members of that group are in the same position."""
    import grp

    getgrgid = getgrgid or grp.getgrgid
    euid = os.geteuid() if euid is None else euid
    egid = os.getegid() if egid is None else egid
    uid = config.agent_uid

    def taken(n: int) -> bool:
        for lookup in (getpwuid, getgrgid):
            try:
                lookup(n)
                return True
            except KeyError:
                pass
        return False

    fix = f"set NGB_AGENT_UID={_free_uid(taken)} (or agent_uid in the config file; any uid no account uses), then restart the daemon"
    try:
        account = getpwuid(uid).pw_name
    except KeyError:
        account = None
    if account is not None:
        who = "the daemon's own account" if uid == euid else "host account"
        return Check("agent uid", "warn", f"{who} {account!r} has uid {uid}, the uid agent containers run as: "
                     "it can reach every group's sockets and folders", fix)
    if euid != 0:
        try:
            group = getgrgid(egid)
        except KeyError:
            group = None
        members = sorted(set(group.gr_mem) - {_user()}) if group is not None else []
        if members:
            return Check("agent uid", "warn", f"the daemon's group {group.gr_name!r} (gid {egid}) also has "
                         f"{', '.join(members)}: agent containers run with this group, so they can reach "
                         "every group's sockets", "run the daemon as a user with a group of its own "
                         "(useradd --system nanogridbot)")
    return Check("agent uid", "ok", f"no host account has uid {uid} (the agents' uid)")


# -- disk --------------------------------------------------------------------------------------------
def _disk_check(name: str, path: Path, fix: str, min_free: int, low_free: int) -> Check:
    where = _existing_parent(path)
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        return Check(name, "skip", f"cannot stat {where}: {exc}")
    free = f"{usage.free / GIB:.1f} GiB free of {usage.total / GIB:.1f} GiB on {where}"
    if usage.free < min_free:
        return Check(name, "fail", f"only {free}", fix)
    if usage.free < low_free:
        return Check(name, "warn", f"{free} (low)", fix)
    return Check(name, "ok", free)


def check_disk(config: Config, docker_root: str | None = None, *, min_free: int = MIN_FREE, low_free: int = LOW_FREE) -> list[Check]:
    state = shlex.quote(str(config.state_dir))
    out = [
        _disk_check(
            "disk (state)", config.state_dir,
            f"free space on that disk (largest first: du -xh {state} | sort -h | tail), or move state_dir",
            min_free, low_free,
        )
    ]
    if docker_root and Path(docker_root).exists():
        out.append(
            _disk_check(
                "disk (docker)", Path(docker_root),
                "docker system prune   (removes stopped containers, unused networks and dangling images)",
                min_free, low_free,
            )
        )
    return out


# -- database ---------------------------------------------------------------------------------------
def check_database(config: Config) -> Check:
    from ..store import MIGRATIONS

    db = config.db_path
    if not db.exists():
        return Check("database", "ok", f"{db} not created yet (the daemon creates it at first start)")
    q = shlex.quote(str(db))
    recover = (
        f"stop the daemon, then: mv {q} {q}.corrupt && sqlite3 {q}.corrupt .recover | sqlite3 {q}"
        "   (sqlite3 is the Debian package sqlite3)"
    )
    try:
        conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        return Check("database", "fail", f"cannot open {db}: {exc}", f"sudo chown -R {_user()}: {shlex.quote(str(config.state_dir))}")
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check(20)").fetchall()]
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        return Check("database", "fail", f"{db} is damaged: {exc}", recover)
    finally:
        conn.close()
    if rows != ["ok"]:
        shown = "; ".join(rows[:3]) + (f" (+{len(rows) - 3} more)" if len(rows) > 3 else "")
        return Check("database", "fail", f"integrity check failed: {shown}", recover)
    latest = len(MIGRATIONS)
    if version > latest:
        return Check(
            "database", "fail",
            f"schema version {version} is newer than this ngb knows ({latest}): it was used by a newer version",
            "upgrade ngb to the version that wrote it (or restore a backup taken before the downgrade)",
        )
    if version < latest:
        return Check(
            "database", "fail",
            f"schema version {version}, this ngb expects {latest}: {latest - version} migration(s) not applied yet "
            "(a daemon still running the old version?)",
            f"restart the daemon, it applies them at start: {_restart_command(config)}",
        )
    size = db.stat().st_size / 1024**2
    return Check("database", "ok", f"{db}: integrity ok, schema {version}/{latest} ({size:.1f} MiB)")


# -- mount allowlist ---------------------------------------------------------------------------------
def check_allow_lists(config: Config) -> Check:
    """Allow-list entries stored before names were refused (ngb/identity.py): each matches nobody."""
    from ..identity import invalid_sender_ids
    from ..records import Group

    db = config.db_path
    if not db.exists():
        return Check("allow-lists", "ok", "no groups yet")
    try:
        conn = sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        try:
            groups = [
                Group(chat=r["chat"], folder=r["folder"], allowed_senders=tuple(json.loads(r["allowed_senders"])))
                for r in conn.execute("SELECT chat, folder, allowed_senders FROM groups")
            ]
        finally:
            conn.close()
    except (sqlite3.Error, ValueError, KeyError) as exc:
        return Check("allow-lists", "skip", f"cannot read the groups: {exc}")
    bad = [(g.chat, entry) for g in groups for entry, _ in invalid_sender_ids(g)]
    if bad:
        shown = ", ".join(f"{chat}: {entry!r}" for chat, entry in bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        chat = bad[0][0]
        return Check(
            "allow-lists", "warn",
            f"entries that are names, not the platform's user ids, match nobody: {shown}",
            f"ngb groups senders {shlex.quote(chat)}   (copy the id), then: ngb groups allow {shlex.quote(chat)} ID && "
            f"ngb groups disallow {shlex.quote(chat)} {shlex.quote(bad[0][1])}",
        )
    return Check("allow-lists", "ok", f"{sum(len(g.allowed_senders) for g in groups)} allowed sender id(s) in {len(groups)} group(s)")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_allowlist(config: Config) -> Check:
    from ..sandbox.mounts import AllowlistError, load_allowlist

    path = Path(config.mount_allowlist).expanduser()
    q = shlex.quote(str(path))
    editor = os.environ.get("EDITOR", "nano")
    try:
        allowlist = load_allowlist(path)
    except AllowlistError as exc:
        fix = f"chmod 644 {q}" if "writable by group or others" in exc.message else f"{editor} {q}   (format: docs/security.md#extra-mounts)"
        return Check("mount allowlist", "fail", str(exc), fix)
    if not path.exists():
        return Check("mount allowlist", "ok", f"no file at {path}: no extra mounts (that is fine)")
    real = path.resolve()
    project = Path(__file__).resolve().parents[2]
    good_home = Path("~/.config/nanogridbot").expanduser()
    move = f"install -d -m 700 {good_home} && mv {q} {good_home}/ && set mount_allowlist = \"{good_home}/{path.name}\""
    for root, what in ((config.state_dir.resolve(), "the state folder"), (project, "the project folder")):
        if _inside(real, root):
            return Check("mount allowlist", "fail", f"{path} is inside {what}: an agent could edit it", move)
    problems: list[str] = []
    for i, entry in enumerate(allowlist.entries, start=1):
        target = entry.path.resolve()
        if not entry.path.exists():
            problems.append(f"entry {i} ({entry.path}) does not exist")
        elif _inside(real, target):
            return Check("mount allowlist", "fail", f"entry {i} ({entry.path}) contains the allowlist itself", move)
        elif _inside(config.state_dir.resolve(), target) or _inside(target, config.state_dir.resolve()):
            problems.append(f"entry {i} ({entry.path}) overlaps the state folder: nothing there can be mounted")
    folder_mode = stat.S_IMODE(real.parent.stat().st_mode)
    if folder_mode & 0o022:
        return Check(
            "mount allowlist", "warn",
            f"{real.parent} is writable by group or others (mode {folder_mode:04o}): someone could swap the file",
            f"chmod go-w {shlex.quote(str(real.parent))}",
        )
    if problems:
        return Check("mount allowlist", "warn", "; ".join(problems), f"{editor} {q}")
    return Check("mount allowlist", "ok", f"{path}: {len(allowlist.entries)} allowed folder(s)")


# -- Docker ------------------------------------------------------------------------------------------
def default_docker_factory() -> Any:
    import docker

    return docker.from_env(timeout=10)


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def check_docker(factory: Callable[[], Any] = default_docker_factory) -> tuple[Check, Any]:
    host = _docker_host()
    try:
        client = factory()
        client.ping()
        version = client.version().get("Version", "?")
    except Exception as exc:  # noqa: BLE001 - the docker SDK raises many kinds
        text = f"{type(exc).__name__}: {exc}"
        low = text.lower()
        if "permission denied" in low:
            fix = f"sudo usermod -aG docker {_user()}   (then log out and back in; or run the daemon as root)"
        elif "no such file" in low or "filenotfound" in low or "connection refused" in low:
            if shutil.which("dockerd") is None:
                fix = "sudo apt-get install docker.io && sudo systemctl enable --now docker"
            else:
                fix = "sudo systemctl enable --now docker   (without systemd: sudo dockerd &)"
        else:
            fix = "check DOCKER_HOST and that dockerd runs: docker info"
        return Check("docker", "fail", f"cannot reach the Docker engine at {host}: {text[:200]}", fix), None
    return Check("docker", "ok", f"Docker {version} at {host}"), client


def check_image(config: Config, client: Any, agent_dir: Path | None = None) -> Check:
    from ..sandbox import image as img

    build = f"{ngb_command(config)} image build"
    if client is None:
        return Check("agent image", "skip", "needs Docker (see above)")
    agent_dir = img.DEFAULT_AGENT_DIR if agent_dir is None else agent_dir
    try:
        info = img._inspect(client, config.image)
    except Exception as exc:  # noqa: BLE001
        return Check("agent image", "fail", f"cannot inspect {config.image}: {exc}", build)
    if info is None:
        return Check("agent image", "fail", f"{config.image} is not built", build)
    labels = img._labels(info)
    image_id = str(info.get("Id", ""))[7:19]
    if not (agent_dir / "Dockerfile").is_file():
        return Check("agent image", "warn", f"{config.image} ({image_id}) exists; no {agent_dir} here to tell if it is current")
    want = img.agent_content_hash(agent_dir)
    have = labels.get(img.HASH_LABEL)
    if have != want:
        why = "has no ngb.agent.hash label (not built by ngb)" if not have else f"was built from other agent/ files ({have[:12]}, now {want[:12]})"
        return Check("agent image", "fail", f"{config.image} ({image_id}) {why}", f"{build}   (then restart the daemon)")
    return Check("agent image", "ok", f"{config.image} ({image_id}) is current (agent/ {want[:12]})")


# -- model ---------------------------------------------------------------------------------------------
def _key_fix(config: Config) -> str:
    env_file = (config.config_file.parent if config.config_file else Path("~/.config/nanogridbot")) / "ngb.env"
    return (
        f"put ANTHROPIC_API_KEY=... in {env_file} (mode 600, read by the service), or "
        'anthropic_api_key_file = "/path" (mode 600) in ngb.toml; or point NGB_MODEL_UPSTREAM at your gateway'
    )


def check_model(config: Config, transport: httpx.BaseTransport | None = None, timeout: float = 10) -> tuple[Check, float | None]:
    """A free request (token counting) to the upstream: does it answer, does it take the key?
    Returns the check and the upstream's clock (from its Date header) when it answered."""
    upstream = config.model_upstream.rstrip("/")
    key = config.anthropic_api_key
    if not key and "anthropic.com" in upstream:
        return Check("model", "fail", f"no API key for {upstream}", _key_fix(config)), None
    headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
    if key:
        headers["x-api-key"] = key
    body = {"model": PROBE_MODEL, "messages": [{"role": "user", "content": "ping"}]}
    try:
        with httpx.Client(transport=transport, timeout=timeout) as http:
            r = http.post(f"{upstream}/v1/messages/count_tokens", headers=headers, json=body)
    except httpx.TimeoutException:
        return Check("model", "fail", f"{upstream} did not answer within {timeout:g}s", f"curl -sS -m 10 {upstream}/   (check the network, a proxy, or NGB_MODEL_UPSTREAM)"), None
    except httpx.HTTPError as exc:
        return Check("model", "fail", f"cannot reach {upstream}: {type(exc).__name__}: {str(exc)[:150]}", f"curl -sS -m 10 {upstream}/   (check the network, DNS, or NGB_MODEL_UPSTREAM)"), None
    server_time = None
    if r.headers.get("date"):
        with contextlib.suppress(TypeError, ValueError):
            server_time = email.utils.parsedate_to_datetime(r.headers["date"]).timestamp()
    who = "the key" if key else "the request (no key set)"
    if r.status_code in (401, 403):
        return Check("model", "fail", f"{upstream} refused {who} (HTTP {r.status_code})", _key_fix(config)), server_time
    if r.status_code >= 500:
        return Check("model", "warn", f"{upstream} answered HTTP {r.status_code} (overloaded or down; retried by the proxy)"), server_time
    note = "" if r.status_code < 400 else f" (HTTP {r.status_code} for the probe; the key was accepted)"
    return Check("model", "ok", f"{upstream} answers and accepts {who}{note}"), server_time


# -- clock -----------------------------------------------------------------------------------------------
def _ntp_synchronized() -> bool | None:
    if not Path("/run/systemd/system").is_dir() or shutil.which("timedatectl") is None:
        return None
    try:
        out = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    return {"yes": True, "no": False}.get(value)


def check_clock(server_time: float | None, now: float | None = None, ntp: bool | None = None, floor: float | None = None) -> Check:
    now = time.time() if now is None else now
    fix = "sudo timedatectl set-ntp true   (or: sudo apt-get install systemd-timesyncd)"
    floor = Path(__file__).stat().st_mtime - 86400 if floor is None else floor
    if now < floor:
        return Check("clock", "fail", f"the system clock says {time.strftime('%Y-%m-%d %H:%M', time.gmtime(now))} UTC, before this ngb was installed", fix)
    if server_time is not None:
        skew = now - server_time
        detail = f"{abs(skew):.0f}s {'ahead of' if skew > 0 else 'behind'} the model upstream's clock"
        if abs(skew) > CLOCK_FAIL:
            return Check("clock", "fail", detail + " (TLS, scheduled tasks and logs go wrong)", fix)
        if abs(skew) > CLOCK_WARN:
            return Check("clock", "warn", detail, fix)
        synced = "" if ntp is None else (", NTP synchronized" if ntp else ", NTP not synchronized")
        return Check("clock", "ok", f"within {CLOCK_WARN:g}s of the upstream's clock{synced}")
    if ntp is False:
        return Check("clock", "warn", "NTP is not synchronized (and no upstream clock to compare with)", fix)
    return Check("clock", "ok", "plausible" + (" and NTP synchronized" if ntp else " (no upstream clock to compare with)"))


# -- daemon ---------------------------------------------------------------------------------------------
def check_daemon(config: Config, transport: httpx.BaseTransport | None = None) -> Check:
    host = f"[{config.web_host}]" if ":" in config.web_host else config.web_host
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1"
    url = f"http://{host}:{config.web_port}/healthz"
    try:
        with httpx.Client(transport=transport, timeout=3) as http:
            r = http.get(url)
    except httpx.HTTPError:
        return Check("daemon", "ok", f"not running (nothing on {url})")
    try:
        data = r.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return Check("daemon", "fail", f"something else answers on port {config.web_port} (HTTP {r.status_code})", f"sudo ss -ltnp 'sport = :{config.web_port}'   (then stop it, or set web_port)")
    if r.status_code != 200:
        problems = data.get("problems") or data.get("error") or r.text[:200]
        return Check("daemon", "fail", f"running but unhealthy: {problems}", f"journalctl -u nanogridbot -n 100   (or the terminal running `{ngb_command(config)} run`)")
    return Check("daemon", "ok", f"running and healthy at {url}")


# -- the whole run ------------------------------------------------------------------------------------------
@attrs.define
class Doctor:
    config: Config
    docker_factory: Callable[[], Any] = default_docker_factory
    model_transport: httpx.BaseTransport | None = None
    web_transport: httpx.BaseTransport | None = None
    channel_transport: httpx.BaseTransport | None = None
    agent_dir: Path | None = None
    offline: bool = False
    now: Callable[[], float] = time.time

    def run(self) -> Iterator[Check]:
        cfg = self.config
        yield check_state_dir(cfg)
        yield check_agent_uid(cfg)
        yield check_database(cfg)
        yield check_allow_lists(cfg)
        yield check_allowlist(cfg)
        docker_check, client = check_docker(self.docker_factory)
        yield docker_check
        yield check_image(cfg, client, self.agent_dir)
        docker_root = None
        if client is not None:
            with contextlib.suppress(Exception):
                docker_root = client.info().get("DockerRootDir")
        yield from check_disk(cfg, docker_root)
        server_time = None
        if self.offline:
            yield Check("model", "skip", "--offline: not asked")
        else:
            model, server_time = check_model(cfg, self.model_transport)
            yield model
        yield check_clock(server_time, self.now(), _ntp_synchronized())
        yield check_daemon(cfg, self.web_transport)
        from .channel_checks import check_channels

        yield from check_channels(cfg, self.channel_transport, self.web_transport, offline=self.offline)


MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "skip": "skip"}


def format_check(check: Check) -> str:
    line = f"{MARK[check.status]}  {check.name:<16} {check.detail}"
    if check.fix and check.status in ("fail", "warn"):
        line += f"\n      fix: {check.fix}"
    return line


def cmd_doctor(config: Config, args: argparse.Namespace, doctor: Doctor | None = None) -> int:
    doctor = doctor or Doctor(config, offline=bool(getattr(args, "offline", False)))
    checks: list[Check] = []
    as_json = bool(getattr(args, "json", False))
    if not as_json:
        where = f" ({config.config_file})" if config.config_file else ""
        print(f"ngb doctor: instance {config.instance}{where}, state {config.state_dir}", flush=True)
    for check in doctor.run():
        checks.append(check)
        if not as_json:
            print(format_check(check), flush=True)
    failed = [c for c in checks if c.failed]
    if as_json:
        print(json.dumps([attrs.asdict(c) for c in checks], indent=2))
    else:
        warned = sum(c.status == "warn" for c in checks)
        if failed:
            print(f"\n{len(failed)} problem(s){f', {warned} warning(s)' if warned else ''}: run the fix lines above, then `{ngb_command(config)} doctor` again.")
        else:
            print(f"\nall good{f' ({warned} warning(s))' if warned else ''}.")
        if not is_loopback_host(config.web_host):
            print(f"note: the web server listens on {config.web_host} (not loopback); it requires the api token.")
    sys.stdout.flush()
    return 1 if failed else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--offline", action="store_true", help="do not contact the model upstream")
    parser.add_argument("--json", action="store_true", help="the checks as JSON")
