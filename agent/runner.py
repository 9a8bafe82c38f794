#!/usr/bin/env python3
"""NanoGridBot agent runner: the program that runs inside each group's container.

The code is the package ngb_agent/ next to this file (see its __init__ for the map); this file
starts it and keeps the names tests reach through ``import runner``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from ngb_agent.early_cli import SDK_LOADER
from ngb_agent.session import Runner
from ngb_agent.settings import PRESCRIPT_STDOUT, Config, say
from ngb_agent.wire import validate_host_frame

__all__ = ["PRESCRIPT_STDOUT", "Config", "Runner", "amain", "main", "validate_host_frame"]


async def amain() -> int:
    runner = Runner(Config())
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal() -> None:
        # While serving, stop like a stop frame; before that (handshake, SDK start), give up now.
        if runner.serving:
            runner.stop_event.set()
        elif task is not None:
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    try:
        return await runner.run()
    except asyncio.CancelledError:
        say("stopped by a signal before the agent was ready")
        return 0


def main() -> None:
    SDK_LOADER.start()  # the SDK import overlaps the handshake and the CLI's start-up
    try:
        code = asyncio.run(amain())
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()
