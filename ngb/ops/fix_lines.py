"""How doctor's fix lines name things: the ``ngb`` command for this configuration, the restart
command, the account running it, the nearest existing folder of a path."""

import contextlib
import os
import pwd
import shlex
from pathlib import Path

from ..config import Config
from ..config.environment import config_file_variable


def user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def ngb_command(config: Config) -> str:
    """How to call ngb with this configuration, for the fix lines."""
    if config.config_file is not None and config_file_variable() != str(config.config_file):
        with contextlib.suppress(OSError):
            if Path("ngb.toml").resolve() == config.config_file.resolve():
                return "ngb"
        return f"ngb --config {shlex.quote(str(config.config_file))}"
    return "ngb"


def restart_command(config: Config) -> str:
    name = "nanogridbot" if config.instance == "default" else f"nanogridbot-{config.instance}"
    return f"systemctl restart {name} (or stop `{ngb_command(config)} run` and start it again)"


def existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
