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
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx

from ..config import Config, is_loopback_host
from .check import Check
from .checks_host import check_agent_uid, check_database, check_disk, check_state_dir
from .checks_sandbox import (
    check_allow_lists,
    check_allowlist,
    check_docker,
    check_image,
    default_docker_factory,
)
from .checks_services import check_clock, check_daemon, check_model, ntp_synchronized
from .checks_web import check_web
from .fix_lines import ngb_command

__all__ = [
    "Check",
    "Doctor",
    "add_arguments",
    "check_agent_uid",
    "check_allow_lists",
    "check_allowlist",
    "check_clock",
    "check_daemon",
    "check_database",
    "check_disk",
    "check_docker",
    "check_image",
    "check_model",
    "check_state_dir",
    "check_web",
    "cmd_doctor",
    "default_docker_factory",
    "format_check",
    "ngb_command",
]


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
        yield check_web(cfg)
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
        yield check_clock(server_time, self.now(), ntp_synchronized())
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
            print(
                f"\n{len(failed)} problem(s){f', {warned} warning(s)' if warned else ''}: run the fix lines above, then `{ngb_command(config)} doctor` again."
            )
        else:
            print(f"\nall good{f' ({warned} warning(s))' if warned else ''}.")
        if not is_loopback_host(config.web_host):
            print(
                f"note: the web server listens on {config.web_host} (not loopback); it requires the api token."
            )
    sys.stdout.flush()
    return 1 if failed else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--offline", action="store_true", help="do not contact the model upstream")
    parser.add_argument("--json", action="store_true", help="the checks as JSON")
