"""Starting the Claude Code CLI early, while the SDK is still importing.

Importing claude_agent_sdk takes about half a second (it loads mcp.types / pydantic), and the CLI
it spawns needs about as long again to reach its first model request. The runner overlaps the
two: a thread imports the SDK from the runner's first moment, and as soon as the start frame is
known the runner spawns the bundled CLI itself, with the command line and environment the SDK
will build for these options. Once the import is done the SDK's own transport runs its normal
connect(); at the point where it would spawn the CLI it is handed the running process, but only
if its command, environment, cwd and pipes are exactly the ones the early process got. Otherwise
the early process is killed and the SDK spawns its own (slower, never wrong).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .settings import say

# Starting the CLI early pays off only when it can run beside the import: with a CPU quota of one
# CPU both are CPU-bound and the sum is the same (measured slightly worse, ~+40 ms).
EARLY_CLI_MIN_CPUS = 1.5


def effective_cpus() -> float:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (v2 or v1)."""
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cpus = float(os.cpu_count() or 1)
    quota = period = 0
    try:
        parts = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if parts and parts[0] != "max":
            quota, period = int(parts[0]), int(parts[1])
    except (OSError, ValueError, IndexError):
        try:
            quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            quota = period = 0
    if quota > 0 and period > 0:
        cpus = min(cpus, quota / period)
    return cpus


class SdkLoader:
    """Imports claude_agent_sdk in a background thread.

    Phase 1 (a few ms) imports anyio's asyncio backend and finds the package without running it,
    so the main thread can spawn the CLI through ``anyio.open_process`` without importing anything
    itself while phase 2, the SDK import, runs (two threads importing at once can trip over each
    other's module locks).
    """

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.located = threading.Event()
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[tuple[threading.Event, asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.pkg_dir: Path | None = None
        self.version: str | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="sdk-import", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        try:
            import importlib.util
            import re

            import anyio  # noqa: F401
            import anyio._backends._asyncio  # noqa: F401

            spec = importlib.util.find_spec("claude_agent_sdk")  # does not run the package
            locations = list(spec.submodule_search_locations or []) if spec else []
            if locations:
                pkg = Path(locations[0])
                text = (pkg / "_version.py").read_text(encoding="utf-8")
                m = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.M)
                if m:
                    self.pkg_dir, self.version = pkg, m.group(1)
        except Exception as exc:  # noqa: BLE001 - only the early start is lost
            say(f"early CLI start unavailable: {exc!r}")
        finally:
            self._signal(self.located)
        # The import allocates a few hundred thousand long-lived objects (pydantic models of
        # mcp.types); collecting during it finds next to nothing and costs ~10% of it. Freezing
        # them afterwards keeps later full collections (in the middle of a turn) from walking
        # them all; merely deferring the collection would move that cost into the first turn.
        gc.disable()
        try:
            with contextlib.suppress(BaseException):  # a failure shows again in the main thread
                import claude_agent_sdk  # noqa: F401
        finally:
            gc.freeze()
            gc.enable()
            self._signal(self.finished)

    # The waits are woken with call_soon_threadsafe: asyncio.to_thread would import
    # concurrent.futures.thread on the main thread while the SDK import runs.

    def _signal(self, flag: threading.Event) -> None:
        with self._lock:
            flag.set()
            waiters = [(loop, event) for f, loop, event in self._waiters if f is flag]
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(event.set)

    async def _wait(self, flag: threading.Event) -> None:
        event = asyncio.Event()
        with self._lock:
            if flag.is_set():
                return
            self._waiters.append((flag, asyncio.get_running_loop(), event))
        await event.wait()

    async def wait_located(self) -> bool:
        """True when phase 1 found the package (then the main thread may use anyio)."""
        if self.thread is None:
            return False
        await self._wait(self.located)
        return self.pkg_dir is not None

    async def wait(self) -> None:
        """Until the background import has finished (at once if it never started)."""
        if self.thread is not None:
            await self._wait(self.finished)


SDK_LOADER = SdkLoader()


class EarlyCli:
    """A CLI process started before the SDK was imported, waiting for the SDK to adopt it."""

    def __init__(self, command: list[str], kwargs: dict[str, Any], process: Any) -> None:
        self.command = command
        self.kwargs = kwargs
        self.process = process
        self.adopted = False

    def mismatch(self, command: list[str], kwargs: dict[str, Any]) -> str | None:
        if command != self.command:
            for i, (a, b) in enumerate(zip(command, self.command, strict=False)):
                if a != b:
                    return f"command differs at argument {i} ({a[:80]!r} vs {b[:80]!r})"
            return f"command length differs ({len(command)} vs {len(self.command)})"
        if kwargs.keys() != self.kwargs.keys():
            return f"spawn arguments differ ({sorted(kwargs)} vs {sorted(self.kwargs)})"
        for key, value in kwargs.items():
            if key == "env" and value != self.kwargs["env"]:
                env = self.kwargs["env"]
                keys = sorted(k for k in set(value) | set(env) if value.get(k) != env.get(k))
                return f"environment differs in {keys}"
            if value != self.kwargs[key]:
                return f"spawn argument {key} differs"
        return None

    async def discard(self) -> None:
        """Kill the process (it was not adopted) and reap it."""
        proc, self.process = self.process, None
        if proc is None or self.adopted:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            if proc.returncode is None:
                proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.aclose(), 5)


class _OpenProcessShim:
    """Stands in for the ``anyio`` module inside the SDK's transport during one connect():
    ``open_process`` returns the early CLI when the SDK asks for exactly that process."""

    def __init__(self, real: Any, early: EarlyCli) -> None:
        self._real = real
        self._early: EarlyCli | None = early

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def open_process(self, command: Any, **kwargs: Any) -> Any:
        early, self._early = self._early, None
        if early is not None and early.process is not None:
            reason: str | None = "command is not a list"
            if isinstance(command, list):
                reason = early.mismatch([str(c) for c in command], kwargs)
            if reason is None:
                early.adopted = True
                return early.process
            say(f"early CLI not used ({reason}); starting it the SDK's way")
            await early.discard()
        return await self._real.open_process(command, **kwargs)


_ADOPTING_TRANSPORT: Any = None


def adopting_transport(options: Any, early: EarlyCli) -> Any:
    """The SDK's own subprocess transport, set to adopt ``early`` instead of spawning."""
    global _ADOPTING_TRANSPORT
    if _ADOPTING_TRANSPORT is None:
        from claude_agent_sdk._internal.transport import subprocess_cli

        class AdoptingTransport(subprocess_cli.SubprocessCLITransport):
            def __init__(self, options: Any, early: EarlyCli) -> None:
                super().__init__(prompt=_no_prompt(), options=options)
                self._early: EarlyCli | None = early

            async def connect(self) -> None:
                early, self._early = self._early, None
                sdk: Any = subprocess_cli  # its anyio is swapped for the shim while connect() runs
                real = sdk.anyio
                if early is None or self._process is not None or not hasattr(real, "open_process"):
                    if early is not None:
                        await early.discard()
                    await super().connect()
                    return
                sdk.anyio = _OpenProcessShim(real, early)
                try:
                    await super().connect()
                finally:
                    sdk.anyio = real
                    if not early.adopted:
                        await early.discard()

        _ADOPTING_TRANSPORT = AdoptingTransport
    return _ADOPTING_TRANSPORT(options, early)


async def _no_prompt() -> AsyncIterator[dict[str, Any]]:
    """An empty prompt stream (an async generator that yields nothing)."""
    messages: list[dict[str, Any]] = []
    for message in messages:
        yield message
