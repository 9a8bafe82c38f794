"""`ngb service install|uninstall|show`: run the daemon as a systemd service.

The unit (template: packaging/nanogridbot.service.in) is ``Type=notify``: the daemon sends
``READY=1`` once its channels and web server are up and feeds the watchdog from a trio task
(ngb/ops/sdnotify.py), so a wedged event loop gets the service restarted. Secrets live in an
``EnvironmentFile`` with mode 600, never in the unit (units are world-readable). Hardening
(``NoNewPrivileges``, ``ProtectSystem=strict`` with only the state folder writable, ``PrivateTmp``)
keeps the daemon from writing where it has no business; it still reaches the Docker socket (a
socket on a read-only mount can be connected to). See docs/deployment.md.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from ..config import CHANNEL_SECRET_ENV, Config
from ..config.environment import editor, environ, has_user_session_bus, user_config_home
from ..paths import resource

TEMPLATE = resource("packaging", "nanogridbot.service.in")
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
SYSTEM_ENV_FILE = Path("/etc/nanogridbot/ngb.env")
DEFAULT_WATCHDOG = 30
# Environment variables copied by --copy-env: the secrets and every NGB_* setting.
SECRET_VARS = ("ANTHROPIC_API_KEY", "NGB_ANTHROPIC_API_KEY", "NGB_API_TOKEN") + tuple(
    var for keys in CHANNEL_SECRET_ENV.values() for var in keys.values()
)
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_./:@%+,=~-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ServiceError(RuntimeError):
    """Installation cannot go on; the message says why and what to do."""


def unit_name(config: Config) -> str:
    return "nanogridbot.service" if config.instance == "default" else f"nanogridbot-{config.instance}.service"


def user_unit_dir(env: Mapping[str, str] | None = None) -> Path:
    return user_config_home(env) / "systemd" / "user"


def default_env_file(config: Config, *, user: bool) -> Path:
    """Beside the config file (where `ngb init` writes it), else a per-user or system default."""
    if config.config_file is not None:
        return config.config_file.parent / "ngb.env"
    if user:
        return Path.home() / ".config" / "nanogridbot" / "ngb.env"
    return SYSTEM_ENV_FILE


def _quote_unit_arg(arg: str) -> str:
    """An ExecStart= argument: systemd splits on spaces and expands % and $."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and re.fullmatch(r"[^\s\"'\\;]+", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unit_path_value(path: Path) -> str:
    """A path in a unit setting (specifiers escaped; spaces are refused: keep it simple)."""
    text = str(path)
    if any(c.isspace() for c in text) or not path.is_absolute():
        raise ServiceError(f"{text!r}: the service needs an absolute path without spaces")
    return text.replace("%", "%%")


def exec_command(config: Config, python: str | None = None) -> list[str]:
    python = python or sys.executable
    cmd = [python, "-m", "ngb"]
    if config.config_file is not None:
        cmd += ["--config", str(config.config_file)]
    return cmd + ["run", "--no-build"]


def render_unit(
    config: Config,
    *,
    user: bool,
    env_file: Path,
    run_as: str | None = None,
    watchdog: int = DEFAULT_WATCHDOG,
    python: str | None = None,
    template: Path = TEMPLATE,
) -> str:
    """The unit file text for this configuration."""
    if watchdog < 2:
        raise ServiceError("--watchdog must be at least 2 seconds (the daemon pings at half of it)")
    extra: list[str] = []
    if config.config_file is None:  # no file: the settings that matter come from here
        extra.append(f"Environment=NGB_STATE_DIR={_unit_path_value(config.state_dir)}")
        extra.append(f"Environment=NGB_MOUNT_ALLOWLIST={_unit_path_value(config.mount_allowlist)}")
    if run_as and not user:
        extra.append(f"User={run_as}")
        extra.append("SupplementaryGroups=docker")  # the socket is root:docker 660
    values = {
        "description": f"NanoGridBot assistant daemon (instance {config.instance})",
        "docs": f"file://{resource('docs', 'deployment.md')}".replace("%", "%%"),
        # A user manager cannot order itself after the system's docker.service.
        "after": "network-online.target" if user else "network-online.target docker.service",
        "wants": "network-online.target" if user else "network-online.target docker.service",
        "exec_start": " ".join(_quote_unit_arg(a) for a in exec_command(config, python)),
        "env_file": _unit_path_value(env_file),
        "state_dir": _unit_path_value(config.state_dir),
        "watchdog": str(watchdog),
        "stop_timeout": str(int(config.shutdown_grace) + 30),
        "extra": "\n".join(extra),
        "wanted_by": "default.target" if user else "multi-user.target",
    }
    text = template.read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("@" + key + "@", value)
    leftover = re.findall(r"@[a-z_]+@", text)
    if leftover:
        raise ServiceError(f"{template}: unknown placeholders {leftover}")
    return re.sub(r"\n{3,}", "\n\n", text)


# -- the environment file ----------------------------------------------------------------------
def env_line(name: str, value: str) -> str:
    """One ``NAME=value`` line of a systemd EnvironmentFile (double-quoted when needed)."""
    if not _ENV_NAME.fullmatch(name):
        raise ServiceError(f"{name!r} is not a valid environment variable name")
    if "\n" in value or "\r" in value or "\0" in value:
        raise ServiceError(f"{name}: a value on more than one line cannot go into an environment file")
    if _SAFE_VALUE.fullmatch(value):
        return f"{name}={value}"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
    return f'{name}="{escaped}"'


def parse_env_file(text: str) -> dict[str, str]:
    """The names (and raw values) of an environment file; comments and blank lines skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        name, _, value = line.partition("=")
        out[name.strip()] = value
    return out


ENV_HEADER = """\
# NanoGridBot secrets, read by systemd (EnvironmentFile=) or docker compose (env_file:).
# Keep this file mode 600. One NAME=value per line; no spaces around "=".
# ANTHROPIC_API_KEY=sk-ant-...
# NGB_API_TOKEN=...            (required when web_host is not loopback)
# NGB_TELEGRAM_TOKEN=123:abc
"""


def write_env_file(path: Path, values: Mapping[str, str]) -> tuple[bool, list[str]]:
    """Create ``path`` with mode 600 (or tighten an existing one) and set ``values`` in it, keeping
    every other line. Returns (created, notes). Values are never printed."""
    notes: list[str] = []
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    if created:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(ENV_HEADER)
    else:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, 0o600)
            notes.append(f"{path} was mode {mode:04o}; made it 600 (it holds secrets)")
    if values:
        lines = path.read_text(encoding="utf-8").splitlines()
        todo = dict(values)
        for i, line in enumerate(lines):
            name = line.split("=", 1)[0].strip()
            if "=" in line and not line.lstrip().startswith("#") and name in todo:
                lines[i] = env_line(name, todo.pop(name))
        lines += [env_line(n, v) for n, v in todo.items()]
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        os.replace(tmp, path)
    return created, notes


def env_to_copy(env: Mapping[str, str]) -> dict[str, str]:
    """What --copy-env takes from the current environment: secrets and NGB_* settings (not
    NGB_CONFIG, which the unit passes as --config)."""
    out = {}
    for name, value in env.items():
        if not value.strip() or name == "NGB_CONFIG":
            continue
        if name in SECRET_VARS or name.startswith("NGB_"):
            out[name] = value
    return out


# -- commands ------------------------------------------------------------------------------------
def _systemctl(user: bool) -> str:
    return "systemctl --user" if user else "systemctl"


def _systemd_running(user: bool, env: Mapping[str, str]) -> bool:
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        return False
    return not user or has_user_session_bus(env)


def install(config: Config, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    env = environ(env)
    user = bool(args.user)
    if not user and os.geteuid() != 0 and args.unit_dir is None and not args.print:
        print(
            "ngb: a system service needs root: run `sudo ngb service install --run-as $USER` "
            "(or `ngb service install --user` for a per-user service)",
            file=sys.stderr,
        )
        return 2
    run_as = args.run_as
    if run_as and user:
        print("ngb: --run-as is for system services; a --user service runs as you", file=sys.stderr)
        return 2
    if run_as:
        try:
            pwd.getpwnam(run_as)
        except KeyError:
            print(f"ngb: no user {run_as!r} on this machine", file=sys.stderr)
            return 2
    env_file = Path(args.env_file).absolute() if args.env_file else default_env_file(config, user=user)
    try:
        text = render_unit(config, user=user, env_file=env_file, run_as=run_as, watchdog=args.watchdog)
    except ServiceError as exc:
        print(f"ngb: {exc}", file=sys.stderr)
        return 2
    name = unit_name(config)
    if args.print:
        sys.stdout.write(text)
        return 0

    unit_dir = Path(args.unit_dir) if args.unit_dir else (user_unit_dir(env) if user else SYSTEM_UNIT_DIR)
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit_path = unit_dir / name
    tmp = unit_path.with_name(name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, unit_path)
    print(f"wrote {unit_path}")

    copied = env_to_copy(env) if args.copy_env else {}
    try:
        created, notes = write_env_file(env_file, copied)
    except (ServiceError, OSError) as exc:
        print(f"ngb: {env_file}: {exc}", file=sys.stderr)
        return 1
    print(f"{'created' if created else 'kept'} {env_file} (mode 600){': set ' + ', '.join(sorted(copied)) if copied else ''}")
    for note in notes:
        print(note)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    if run_as:
        pw = pwd.getpwnam(run_as)
        if config.state_dir.stat().st_uid != pw.pw_uid:
            print(f"note: {config.state_dir} is not owned by {run_as}: run `chown -R {run_as}: {config.state_dir}`")

    sc = _systemctl(user)
    has_key = any(n in parse_env_file(env_file.read_text(encoding="utf-8")) for n in ("ANTHROPIC_API_KEY", "NGB_ANTHROPIC_API_KEY"))
    print("\nnext:")
    step = 1
    if not has_key and not config.anthropic_api_key_file and "anthropic.com" in config.model_upstream:
        print(f"  {step}. put the model key in {env_file}: {shlex.quote(editor())} {env_file}   (ANTHROPIC_API_KEY=...)")
        step += 1
    ngb = " ".join(shlex.quote(a) for a in exec_command(config)[:-2])
    print(f"  {step}. build the agent image (the service starts with --no-build): {ngb} image build")
    print(f"  {step + 1}. check everything: {ngb} doctor")
    print(f"  {step + 2}. {sc} daemon-reload && {sc} enable --now {name}")
    if user:
        print(f"     loginctl enable-linger {shlex.quote(pwd.getpwuid(os.getuid()).pw_name)}   # keep it running while you are logged out")
    print(f"  logs:   journalctl {'--user ' if user else ''}-u {name} -f")
    print(f"  status: {sc} status {name}")
    return 0


def uninstall(config: Config, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    env = environ(env)
    user = bool(args.user)
    name = unit_name(config)
    unit_dir = Path(args.unit_dir) if args.unit_dir else (user_unit_dir(env) if user else SYSTEM_UNIT_DIR)
    unit_path = unit_dir / name
    sc = _systemctl(user)
    live = args.unit_dir is None and _systemd_running(user, env)
    if live:
        subprocess.run([*sc.split(), "disable", "--now", name], check=False)
    if unit_path.exists():
        unit_path.unlink()
        print(f"removed {unit_path}")
    else:
        print(f"no unit at {unit_path}")
    if live:
        subprocess.run([*sc.split(), "daemon-reload"], check=False)
        print(f"stopped and disabled {name}")
    else:
        print(f"systemd is not managing it from here; if it still runs: {sc} disable --now {name} && {sc} daemon-reload")
    env_file = Path(args.env_file).absolute() if args.env_file else default_env_file(config, user=user)
    if args.purge and env_file.exists():
        env_file.unlink()
        print(f"removed {env_file}")
    elif env_file.exists():
        print(f"kept {env_file} (it holds your secrets; --purge removes it)")
    print(f"kept the state in {config.state_dir}")
    return 0


def cmd_service(config: Config, args: argparse.Namespace) -> int:
    if args.service_cmd == "install":
        return install(config, args)
    if args.service_cmd == "show":
        args.print = True
        args.run_as = getattr(args, "run_as", None)
        return install(config, args)
    return uninstall(config, args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="service_cmd", required=True)
    for cmd, helptext in (
        ("install", "write the systemd unit and a mode-600 environment file for secrets"),
        ("show", "print the unit that install would write"),
        ("uninstall", "stop, disable and remove the unit (the state and, without --purge, the env file stay)"),
    ):
        p = sub.add_parser(cmd, help=helptext)
        p.add_argument("--user", action="store_true", help="a per-user service (systemctl --user), no root needed")
        p.add_argument("--env-file", help="the secrets file (default: ngb.env beside the config file)")
        p.add_argument("--unit-dir", help=argparse.SUPPRESS)  # tests and packagers
        if cmd in ("install", "show"):
            p.add_argument("--run-as", help="system service: the user it runs as (needs the docker group)")
            p.add_argument("--watchdog", type=int, default=DEFAULT_WATCHDOG, help="WatchdogSec (default 30)")
        if cmd == "install":
            p.add_argument("--copy-env", action="store_true", help="copy secrets and NGB_* settings from this shell into the env file (names are printed, values never)")
            p.add_argument("--print", action="store_true", help=argparse.SUPPRESS)
        if cmd == "uninstall":
            p.add_argument("--purge", action="store_true", help="also delete the env file")
        if cmd == "show":
            p.set_defaults(copy_env=False)
