"""The shared asyncio bridge on its own: calls both ways, cancellation from either side,
exceptions, deadlines, shutdown, and the per-call overhead."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import trio
import trio.lowlevel

from ngb.aio_bridge import AsyncioBridge, BridgeClosed


class Boom(Exception):
    pass


async def test_call_returns_value_on_the_loop_thread() -> None:
    bridge = AsyncioBridge()
    async with bridge.attach():

        async def where(x: int) -> tuple[int, str, bool]:
            await asyncio.sleep(0)
            return x * 2, threading.current_thread().name, asyncio.get_running_loop() is bridge.loop

        value, thread, same_loop = await bridge.call(where, 21)
        assert value == 42 and thread == "ngb-asyncio" and same_loop
    assert not bridge.running


async def test_exception_surfaces_in_the_trio_caller_with_traceback() -> None:
    bridge = AsyncioBridge()
    async with bridge.attach():

        async def sdk_call() -> None:
            await asyncio.sleep(0.001)
            raise Boom("the SDK failed")

        with pytest.raises(Boom, match="the SDK failed") as info:
            await bridge.call(sdk_call)
        assert any(tb.name == "sdk_call" for tb in info.traceback)

        def not_a_coroutine_fn() -> None:
            raise Boom("at call time")

        with pytest.raises(Boom, match="at call time"):
            await bridge.call(not_a_coroutine_fn)  # type: ignore[arg-type]
        assert await bridge.call(asyncio.sleep, 0, "still works") == "still works"


async def test_trio_cancellation_cancels_the_asyncio_task_and_waits_for_it() -> None:
    bridge = AsyncioBridge()
    events: list[str] = []
    async with bridge.attach():

        async def hangs() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(0.05)  # cleanup that takes a moment
                events.append("asyncio task cancelled and cleaned up")
                raise

        with trio.move_on_after(0.1) as scope:
            await bridge.call(hangs)
        assert scope.cancelled_caught
        # the call returned only once the asyncio side had finished its cleanup
        assert events == ["asyncio task cancelled and cleaned up"]
        assert [t for t in await bridge.call(_other_tasks) if not t.done()] == []


async def _other_tasks() -> list[asyncio.Task]:
    me = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not me]


async def test_sdk_coroutine_that_hangs_past_a_deadline() -> None:
    bridge = AsyncioBridge(cancel_grace=0.2, stop_grace=0.2)
    async with bridge.attach():

        async def stubborn() -> str:
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    continue  # refuses to stop

        started = time.monotonic()
        with pytest.raises(trio.TooSlowError):
            with trio.fail_after(0.1):
                await bridge.call(stubborn)
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 2, elapsed  # deadline + bounded grace, never stuck


async def test_asyncio_side_cancellation_surfaces_in_trio() -> None:
    bridge = AsyncioBridge()
    async with bridge.attach():

        async def cancelled_by_sdk() -> None:
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().call_later(0.01, task.cancel)
            await asyncio.sleep(3600)

        with pytest.raises(asyncio.CancelledError):
            await bridge.call(cancelled_by_sdk)


async def test_asyncio_to_trio_calls_and_errors() -> None:
    bridge = AsyncioBridge()
    async with bridge.attach() as portal:

        async def trio_side(x: int) -> tuple[int, bool]:
            await trio.lowlevel.checkpoint()
            return x + 1, threading.current_thread() is threading.main_thread()

        async def trio_fails() -> None:
            await trio.lowlevel.checkpoint()
            raise Boom("trio side")

        async def asyncio_side() -> tuple[tuple[int, bool], str]:
            value = await portal.run(trio_side, 1)
            try:
                await portal.run(trio_fails)
            except Boom as exc:
                return value, str(exc)
            return value, "no error"

        assert await bridge.call(asyncio_side) == ((2, True), "trio side")


async def test_asyncio_cancellation_cancels_the_trio_task() -> None:
    bridge = AsyncioBridge()
    seen: list[str] = []
    async with bridge.attach() as portal:

        async def trio_hangs() -> None:
            try:
                await trio.sleep_forever()
            finally:
                seen.append("trio task cancelled")

        async def asyncio_side() -> str:
            try:
                await asyncio.wait_for(portal.run(trio_hangs), 0.05)
            except TimeoutError:
                return "timed out"
            return "finished?"

        assert await bridge.call(asyncio_side) == "timed out"
        assert seen == ["trio task cancelled"]


async def test_trio_side_cancellation_reaches_the_asyncio_awaiter() -> None:
    bridge = AsyncioBridge()
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as inner:
            async with bridge.attach(inner) as portal:

                async def asyncio_side() -> str:
                    try:
                        await portal.run(trio.sleep_forever)
                    except asyncio.CancelledError:
                        return "asyncio saw the trio cancellation"
                    return "?"

                result: list[str] = []

                async def caller() -> None:
                    result.append(await bridge.call(asyncio_side))

                outer.start_soon(caller)
                await trio.sleep(0.05)
                inner.cancel_scope.cancel()
        with trio.fail_after(2):
            while not result:
                await trio.sleep(0.01)
        assert result == ["asyncio saw the trio cancellation"]


async def test_memory_channel_with_back_pressure() -> None:
    bridge = AsyncioBridge()
    async with bridge.attach() as portal:
        sender, receiver = portal.memory_channel(1)

        async def produce() -> None:
            for i in range(20):
                await sender.send(i)
            await sender.aclose()

        got: list[int] = []
        async with trio.open_nursery() as n:
            n.start_soon(bridge.call, produce)
            async for item in receiver:
                got.append(item)
                await trio.lowlevel.checkpoint()
        assert got == list(range(20))


async def test_shared_by_many_users_and_stopped_by_the_last() -> None:
    bridge = AsyncioBridge()
    async with bridge.attach():
        loop = bridge.loop
        async with bridge.attach():
            assert bridge.loop is loop
        assert bridge.running

        async def leftover() -> None:
            await asyncio.sleep(3600)

        # a task nobody awaits is cancelled when the bridge stops
        await bridge.call_sync(lambda: loop.create_task(leftover()))
    assert not bridge.running and loop.is_closed()
    with pytest.raises(BridgeClosed):
        await bridge.call(asyncio.sleep, 0)


async def test_run_in_a_nursery() -> None:
    bridge = AsyncioBridge()
    async with trio.open_nursery() as n:
        await n.start(bridge.run)
        assert await bridge.call(asyncio.sleep, 0, 7) == 7
        n.cancel_scope.cancel()
    assert not bridge.running


async def test_round_trip_overhead() -> None:
    bridge = AsyncioBridge()
    n = 1000
    async with bridge.attach() as portal:

        async def noop() -> int:
            return 1

        async def trio_noop() -> int:
            return 1

        async def asyncio_calls_trio(count: int) -> float:
            t0 = time.perf_counter()
            for _ in range(count):
                await portal.run(trio_noop)
            return time.perf_counter() - t0

        for _ in range(50):  # warm up
            await bridge.call(noop)
        t0 = time.perf_counter()
        for _ in range(n):
            await bridge.call(noop)
        to_asyncio = (time.perf_counter() - t0) / n
        to_trio = await bridge.call(asyncio_calls_trio, n) / n
    print(f"\nasyncio bridge: trio->asyncio {to_asyncio * 1e3:.3f} ms/call, asyncio->trio {to_trio * 1e3:.3f} ms/call ({n} round trips each)")
    assert to_asyncio < 0.002 and to_trio < 0.002  # generous for loaded CI; the goal is < 0.2 ms
