"""The `ngb` command's parser and entry point, and the commands without a module of their own:
run (the daemon), image, chat (ngb/cli/chat.py). groups, tasks, web, pair and the operations
commands are in groups.py, tasks.py, web.py, pair.py and ops.py here."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from .. import __version__
from ..config import Config, ConfigError, load_config
from .chat import add_arguments as add_chat_arguments
from .groups import add_group_commands
from .ops import add_ops_commands
from .pair import add_pair_commands
from .support import ApiRefused, fail
from .tasks import add_task_commands
from .web import add_web_commands

log = logging.getLogger("ngb")


# -- run ----------------------------------------------------------------------------------
def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from ..daemon import Daemon, StateDirBusy
    from ..logs import setup_logging

    setup_logging(config.log_level, config.log_format, secrets=[config.anthropic_api_key, config.api_token])
    if not config.anthropic_api_key and "anthropic.com" in config.model_upstream:
        log.warning(
            "no ANTHROPIC_API_KEY set: the agent cannot reach the model. Set it, or point NGB_MODEL_UPSTREAM at "
            "a compatible server (for a try without a key: python -m tests.fakes.anthropic --port 8788)."
        )
    if not args.no_build:
        from ..sandbox.image import ImageBuildError, ensure_image

        try:
            ensure_image(config.image, browser=config.agent_browser,
                         progress=lambda line: print(line, file=sys.stderr, flush=True))
        except ImageBuildError as exc:
            return fail(f"cannot build the agent image: {exc}")
    from ..ops.backup import BackupError

    daemon = Daemon(config)
    try:
        trio.run(daemon.run)
    except (OSError, BackupError, StateDirBusy, ConfigError) as exc:  # BackupError: no copy before a pending
        return fail(f"cannot start: {exc}", 1)  # migration; ConfigError: the generated API token's file
    except KeyboardInterrupt:
        return 130
    return 0


# -- image --------------------------------------------------------------------------------
def cmd_image(config: Config, args: argparse.Namespace) -> int:
    from ..sandbox.image import ImageBuildError, ensure_image

    try:
        ensure_image(config.image, force=args.force, browser=config.agent_browser and not args.no_browser,
                     progress=lambda line: print(line, flush=True))
    except ImageBuildError as exc:
        return fail(str(exc))
    return 0


def cmd_chat(config: Config, args: argparse.Namespace) -> int:
    from .chat import main_from_args

    return main_from_args(args, config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ngb", description="NanoGridBot: a self-hosted personal Claude assistant daemon.")
    parser.add_argument("--config", type=Path, help="TOML config file (default: $NGB_CONFIG or ./ngb.toml)")
    parser.add_argument("--version", action="version", version=f"ngb {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run the daemon (builds the agent image first when missing)")
    run.add_argument("--no-build", action="store_true", help="do not check or build the agent image")
    run.set_defaults(fn=cmd_run)

    chat = sub.add_parser("chat", help="talk to the assistant in the terminal (local chat)")
    add_chat_arguments(chat)
    chat.set_defaults(fn=cmd_chat)

    add_group_commands(sub)
    add_task_commands(sub)
    add_web_commands(sub)
    add_pair_commands(sub)

    image = sub.add_parser("image", help="build the agent image")
    image.add_argument("action", choices=["build"])
    image.add_argument("--force", action="store_true", help="rebuild even when current")
    image.add_argument("--no-browser", action="store_true",
                       help="without headless Chromium (as agent_browser = false does; docs/web-browser.md)")
    image.set_defaults(fn=cmd_image)

    from ..ops.backup import add_arguments as add_backup_commands

    add_backup_commands(sub)  # backup, restore
    add_ops_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return fail(str(exc))
    try:
        return int(args.fn(config, args))
    except ApiRefused as exc:
        return fail(str(exc), 1)

