"""Shutdown waits on events, not by polling: the supervisor returns from ``wait_idle`` when the last
container session ends, and the outbox sender from ``wait_idle`` when a pass found nothing left to
deliver. Each test proves the wait really waited: the thing it waits for is seen unfinished while
the waiter is blocked, and finished once it returns."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from ngb.outbox import OutboxSender
from ngb.records import Group
from ngb.store import Store
from tests.fakes.agent import FakeBehaviour


class HeldChannel:
    """A local channel whose sends wait until the test lets them through."""

    name = "local"
    state = "connected"

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.release = trio.Event()
        self.sent: list[str] = []

    async def run(self, submit, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # noqa: ANN001
        task_status.started()

    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        self.entered.set()
        await self.release.wait()
        self.sent.append(text)
        return None


async def test_outbox_wait_idle_returns_only_after_the_last_reply_is_delivered(tmp_path: Path) -> None:
    store = Store(tmp_path / "ngb.db")
    await store.open()
    channel = HeldChannel()
    sender = OutboxSender(store, {"local": channel}, assistant_name="Andy")
    done = trio.Event()

    async def waiter() -> None:
        await sender.wait_idle()
        done.set()

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(sender.run)
                await trio.testing.wait_all_tasks_blocked()
                await store.queue_message("main", "local:main", "the last reply")
                sender.wake()  # new work: no longer idle
                nursery.start_soon(waiter)
                await channel.entered.wait()
                await trio.testing.wait_all_tasks_blocked()
                assert not done.is_set(), "idle while a reply was still being delivered"
                channel.release.set()
                await done.wait()
                assert channel.sent == ["the last reply"]
                assert await store.outbox_depth() == 0
                nursery.cancel_scope.cancel()
    finally:
        await store.close()


async def test_supervisor_wait_idle_returns_when_the_running_turn_has_ended(run_daemon) -> None:
    d = await run_daemon(FakeBehaviour(delay=1.0))
    await d.daemon.registry.add(Group(chat="local:slow", folder="slow", requires_trigger=False))
    await d.post("slow", "take your time")
    with trio.fail_after(10):
        while not d.daemon.supervisor.busy():  # the turn has started
            await trio.sleep(0.01)
        d.daemon.supervisor.begin_drain()
        await d.daemon.supervisor.wait_idle()
    assert d.daemon.supervisor.busy() == 0
    replies = [m["text"] for m in await d.history("slow") if m["from_bot"]]
    assert replies == ["Echo: take your time"], "the turn finished before wait_idle returned"
