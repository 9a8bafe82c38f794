"""The operations commands of `ngb`: service, doctor, init (ngb/ops/).

`ngb/cli.py` calls `add_ops_commands(sub)` on its subparsers; each handler takes (config, args)
and returns the exit status, like the other commands.
"""

from __future__ import annotations

import argparse
from typing import Any

from .config import Config


def cmd_service(config: Config, args: argparse.Namespace) -> int:
    from .ops.service import cmd_service as run

    return run(config, args)


def cmd_doctor(config: Config, args: argparse.Namespace) -> int:
    from .ops.doctor import cmd_doctor as run

    return run(config, args)


def cmd_init(config: Config, args: argparse.Namespace) -> int:
    from .ops.init import cmd_init as run

    return run(config, args)


def add_ops_commands(subparsers: Any) -> None:
    """Register `service`, `doctor` and `init` on the `ngb` subparsers."""
    from .ops import doctor, init, service

    svc = subparsers.add_parser("service", help="install or remove the systemd service")
    service.add_arguments(svc)
    svc.set_defaults(fn=cmd_service)

    doc = subparsers.add_parser("doctor", help="check Docker, the image, the model, the state; say what to fix")
    doctor.add_arguments(doc)
    doc.set_defaults(fn=cmd_doctor)

    ini = subparsers.add_parser("init", help="first-run set-up: write ngb.toml and a mode-600 env file for secrets")
    init.add_arguments(ini)
    ini.set_defaults(fn=cmd_init)
