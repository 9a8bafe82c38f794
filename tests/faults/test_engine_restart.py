"""The Docker engine restarted mid-turn, with the real daemon process, a real container and the fake
model. The engine is a private one (tests/faults/private_engine.py: its own dockerd, socket and
data root), so killing it disturbs nothing else; it is stopped whatever happens.

Two restarts in one run: a crash (SIGKILL to dockerd; the managed containerd and the container may
outlive it) and a clean stop (SIGTERM; the engine stops the container). Each time the group gets
its answer or one clear error, the next message is answered, and no container is left behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import trio

from tests.fakes.anthropic import FakeAnthropic
from tests.faults.daemon_process import DaemonProcess
from tests.faults.private_engine import PrivateEngine, private_engine  # noqa: F401 - the fixture

pytestmark = [pytest.mark.docker, pytest.mark.slow]


async def test_engine_restart_mid_turn_answers_or_one_error_then_works(tmp_path: Path, private_engine: PrivateEngine) -> None:  # noqa: F811
    engine = private_engine
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        daemon = DaemonProcess(tmp_path, fake.url, f"eng{os.getpid()}", DOCKER_HOST=engine.host, NGB_IDLE_TIMEOUT="2")
        try:
            await daemon.start()
            for n, (sig, down_for) in enumerate([(signal.SIGKILL, 1.0), (signal.SIGTERM, 0.5)]):
                tag = f"eng{n}"
                before = len(await daemon.bot_texts())
                await daemon.post("main", f"{tag} slow [[sleep:4]]")
                with trio.fail_after(60):
                    await fake.wait_for(lambda r, tag=tag: tag in r.last_user_text())
                t0 = time.monotonic()
                await trio.to_thread.run_sync(engine.restart, sig, down_for)
                restarted = time.monotonic() - t0
                with trio.fail_after(120):
                    while len(about := (await daemon.bot_texts())[before:]) < 1:
                        await trio.sleep(0.1)
                assert len(about) == 1 and (tag in about[0] or "could not answer" in about[0]), about
                print(f"engine {signal.Signals(sig).name} (back after {restarted:.1f} s): {about[0][:120]!r} "
                      f"after {time.monotonic() - t0:.1f} s", flush=True)
                await daemon.post("main", f"after {tag}")
                await daemon.wait_bot(lambda t, tag=tag: f"after {tag}" in t)
                await trio.sleep(2)  # a duplicate would show up by now
                texts = (await daemon.bot_texts())[before:]
                assert len(texts) == 2 and f"after {tag}" in texts[1], texts
            assert daemon.stop() == 0, daemon.tail()
            left = [c.name for c in daemon.containers()]
            assert not left, f"containers left behind: {left}"
        finally:
            await daemon.aclose()
            nursery.cancel_scope.cancel()
