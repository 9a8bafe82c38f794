"""The one asyncio bridge: a single asyncio event loop in one dedicated thread, shared by every
asyncio-only SDK (python-telegram-bot, slack-sdk, discord.py...). No channel runs its own loop.

Calls go both ways:

* trio -> asyncio: ``await bridge.call(coro_fn, *args)`` runs ``coro_fn(*args)`` as a task on the
  asyncio loop and returns its result (or raises its exception) in the trio caller. Cancelling the
  trio caller cancels the asyncio task and waits (shielded, bounded by ``cancel_grace``) until it
  has really finished, so nothing keeps running behind the caller's back.
* asyncio -> trio: ``await portal.run(async_fn, *args)`` (from code running on the asyncio loop)
  runs ``async_fn(*args)`` as a trio task in the portal's nursery and returns its result. Cancelling
  the asyncio awaiter cancels the trio task (and waits for it); a trio task cancelled from the trio
  side (its nursery is shutting down) raises ``asyncio.CancelledError`` in the asyncio awaiter.
  ``portal.memory_channel(n)`` gives an asyncio-side sender feeding a trio memory channel, with
  back-pressure.

Life cycle: the loop thread is started by the first ``async with bridge.attach(nursery)`` and
stopped by the last one to leave (remaining asyncio tasks are cancelled and awaited, async
generators closed, the thread joined). Channels attach inside their ``run()``, which the daemon's
root nursery owns, so the loop lives exactly as long as some asyncio channel does.
``await nursery.start(bridge.run)`` attaches for the caller's lifetime (e.g. the daemon).

`BRIDGE` is the process-wide instance channels share; tests may make their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

import outcome
import trio

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["AsyncioBridge", "BridgeClosed", "Portal", "AsyncioSender", "BRIDGE"]


class BridgeClosed(RuntimeError):
    """The bridge's loop is not running (nobody attached, or it is shutting down)."""


class AsyncioBridge:
    def __init__(self, *, cancel_grace: float = 5.0, stop_grace: float = 5.0, name: str = "ngb-asyncio") -> None:
        self.cancel_grace = cancel_grace  # how long a cancelled call waits for its asyncio task to end
        self.stop_grace = stop_grace  # how long stopping waits for leftover asyncio tasks
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._users = 0
        self._lock: trio.Lock | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self.calls = 0

    # -- life cycle ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._loop is not None and self._loop.is_running()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise BridgeClosed("the asyncio bridge is not running")
        return self._loop

    @contextlib.asynccontextmanager
    async def attach(self, nursery: trio.Nursery | None = None) -> AsyncIterator[Portal]:
        """Keep the loop running while inside; yields a `Portal` whose asyncio->trio calls run in
        ``nursery`` (default: a nursery owned by this context)."""
        token = trio.lowlevel.current_trio_token()
        if self._lock is None or self._token is not token:
            # a new trio run (tests run many): forget state left by one that ended uncleanly
            if self._thread is not None and self._loop is not None:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(self.stop_grace)
            self._loop = self._thread = None
            self._users = 0
            self._lock, self._token = trio.Lock(), token
        async with self._lock:
            if self._users == 0:
                await self._start()
            self._users += 1
        try:
            if nursery is not None:
                yield Portal(self, nursery)
            else:
                async with trio.open_nursery() as own:
                    yield Portal(self, own)
                    own.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                async with self._lock:
                    self._users -= 1
                    if self._users == 0:
                        await self._stop()

    async def run(self, *, task_status: trio.TaskStatus[Portal] = trio.TASK_STATUS_IGNORED) -> None:
        """Attach for as long as this task runs (``await nursery.start(bridge.run)``)."""
        async with self.attach() as portal:
            task_status.started(portal)
            await trio.sleep_forever()

    async def _start(self) -> None:
        ready = threading.Event()
        loop = asyncio.new_event_loop()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                try:
                    _finish(loop, self.stop_grace)
                finally:
                    loop.close()

        thread = threading.Thread(target=main, name=self.name, daemon=True)
        thread.start()
        await trio.to_thread.run_sync(ready.wait)
        self._loop, self._thread = loop, thread
        log.debug("asyncio bridge started (thread %s)", thread.name)

    async def _stop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        await trio.to_thread.run_sync(thread.join)
        log.debug("asyncio bridge stopped")

    # -- trio -> asyncio -------------------------------------------------------------------------
    async def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the asyncio loop; return its result in trio (see module doc)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise BridgeClosed("the asyncio bridge is not running")
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: dict[str, Any] = {}
        self.calls += 1

        def finished(task: asyncio.Future[Any]) -> None:  # on the asyncio thread
            box["result"] = task
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        def start() -> None:  # on the asyncio thread
            try:
                task = loop.create_task(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - fn() itself raised: report it to the caller
                fut = loop.create_future()
                fut.set_exception(exc)
                finished(fut)
                return
            box["task"] = task
            task.add_done_callback(finished)

        def cancel() -> None:  # on the asyncio thread; FIFO after start()
            task = box.get("task")
            if task is not None:
                task.cancel()

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError as exc:  # closed between the check and here
            raise BridgeClosed(f"the asyncio bridge is not running: {exc}") from None
        try:
            await done.wait()
        except trio.Cancelled:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(cancel)
            with trio.CancelScope(shield=True):
                with trio.move_on_after(self.cancel_grace) as scope:
                    await done.wait()
                if scope.cancelled_caught:
                    log.warning("asyncio bridge: %s did not finish within %.1fs of being cancelled", _name(fn), self.cancel_grace)
            raise
        fut = box["result"]
        if fut.cancelled():
            raise asyncio.CancelledError(f"{_name(fn)} was cancelled on the asyncio side")
        error = fut.exception()
        if error is not None:
            try:
                raise error
            finally:
                del error, fut, box
        return fut.result()

    async def call_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a plain function on the loop thread (e.g. to build an SDK object bound to the loop)."""

        async def wrapper() -> T:
            return fn(*args)

        return await self.call(wrapper)


class Portal:
    """asyncio -> trio calls, landing in one trio nursery. Use its methods from the asyncio thread."""

    def __init__(self, bridge: AsyncioBridge, nursery: trio.Nursery) -> None:
        self.bridge = bridge
        self.nursery = nursery
        self.token = trio.lowlevel.current_trio_token()

    async def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        """trio -> asyncio (same as the bridge's); handy when a channel only keeps its portal."""
        return await self.bridge.call(fn, *args, **kwargs)

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """From the asyncio loop: run ``fn(*args)`` as a trio task in the portal's nursery."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[outcome.Outcome] = loop.create_future()
        state: dict[str, Any] = {"cancel": False, "scope": None}

        def deliver(result: outcome.Outcome) -> None:  # on the asyncio thread
            if not fut.done():
                fut.set_result(result)

        def report(result: outcome.Outcome) -> None:  # on the trio thread
            try:
                loop.call_soon_threadsafe(deliver, result)
            except RuntimeError:
                pass  # the loop is gone; nobody waits any more

        async def runner() -> None:
            with trio.CancelScope() as scope:
                state["scope"] = scope
                if state["cancel"]:
                    scope.cancel()
                try:
                    value = await fn(*args)
                except trio.Cancelled:
                    report(outcome.Error(asyncio.CancelledError("cancelled on the trio side")))
                    raise
                except BaseException as exc:  # noqa: BLE001 - handed to the asyncio caller
                    report(outcome.Error(exc))
                    if not isinstance(exc, Exception):
                        raise
                    return
                report(outcome.Value(value))
                return
            # the scope caught our own cancel (the asyncio awaiter was cancelled)
            report(outcome.Error(asyncio.CancelledError("cancelled on the asyncio side")))

        def spawn() -> None:  # on the trio thread
            try:
                self.nursery.start_soon(runner)
            except RuntimeError as exc:  # the nursery is closed
                report(outcome.Error(BridgeClosed(f"the trio side is gone: {exc}")))

        def cancel() -> None:  # on the trio thread; FIFO after spawn()
            state["cancel"] = True
            if state["scope"] is not None:
                state["scope"].cancel()

        try:
            self.token.run_sync_soon(spawn)
        except trio.RunFinishedError:
            raise BridgeClosed("the trio run has finished") from None
        try:
            result = await asyncio.shield(fut)
        except asyncio.CancelledError:
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(cancel)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(fut), self.bridge.cancel_grace)
            raise
        return result.unwrap()

    def memory_channel(self, max_buffer_size: float = 0) -> tuple[AsyncioSender[Any], trio.MemoryReceiveChannel[Any]]:
        """An asyncio-side sender feeding a trio memory channel (call from the trio side)."""
        send, receive = trio.open_memory_channel[Any](max_buffer_size)
        return AsyncioSender(self, send), receive


class AsyncioSender(Generic[T]):
    """The asyncio end of a trio memory channel: ``await sender.send(x)`` waits for buffer space."""

    def __init__(self, portal: Portal, channel: trio.MemorySendChannel[T]) -> None:
        self.portal = portal
        self.channel = channel

    async def send(self, value: T) -> None:
        await self.portal.run(self.channel.send, value)

    async def aclose(self) -> None:
        await self.portal.run(self.channel.aclose)


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _finish(loop: asyncio.AbstractEventLoop, grace: float) -> None:
    """Cancel what is still running on the loop and let it unwind (on the loop thread)."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        try:
            _, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=grace))
        except Exception:  # noqa: BLE001
            log.exception("asyncio bridge: error while stopping tasks")
            pending = set()
        if pending:
            log.warning("asyncio bridge: %d task(s) did not stop within %.1fs: %s", len(pending), grace,
                        ", ".join(sorted(t.get_name() for t in pending)))
        for t in tasks:
            if t.done() and not t.cancelled():
                t.exception()  # retrieved: no "exception was never retrieved" noise
    with contextlib.suppress(Exception):
        loop.run_until_complete(loop.shutdown_asyncgens())
    with contextlib.suppress(Exception):
        loop.run_until_complete(loop.shutdown_default_executor())


BRIDGE = AsyncioBridge()
