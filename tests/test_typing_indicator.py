"""The typing indicator on its own: who types, how often, and when it stops (trio's virtual clock)."""

from __future__ import annotations

import trio
import trio.testing

from ngb.typing_indicator import TypingIndicator


class Chan:
    def __init__(self, fail: bool = False, hang: bool = False) -> None:
        self.calls: list[tuple[float, str]] = []
        self.fail, self.hang = fail, hang

    async def typing(self, chat: str) -> None:
        self.calls.append((trio.current_time(), chat))
        if self.hang:
            await trio.sleep_forever()
        if self.fail:
            raise RuntimeError("platform said no")


class NoTyping:
    pass


async def run_for(ind: TypingIndicator, seconds: float, steps: list[tuple[float, str, str, dict]]) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(ind.run)
        start = trio.current_time()
        for at, folder, kind, data in steps:
            await trio.sleep_until(start + at)
            ind.event(folder, kind, data)
        await trio.sleep_until(start + seconds)
        nursery.cancel_scope.cancel()


async def test_types_until_the_first_reply(autojump_clock: trio.testing.MockClock) -> None:
    tg = Chan()
    ind = TypingIndicator({"tg": tg, "x": NoTyping()}, {"a": "tg:1", "b": "x:2"}.get, interval=4, max_duration=300)
    await run_for(ind, 30, [
        (0, "a", "batch_sent", {"batch": 1}),
        (0, "b", "batch_sent", {"batch": 1}),  # a channel without typing(): nothing, no error
        (0, "a", "batch_sent", {"batch": 2, "task": "t1"}),  # task turns do not type
        (10, "a", "first_reply", {"batch": 1}),
    ])
    times = [t - tg.calls[0][0] for t, _ in tg.calls]
    assert [c for _, c in tg.calls] == ["tg:1"] * 3 and times == [0, 4, 8]


async def test_a_failed_turn_stops_it_and_a_long_one_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    tg = Chan(fail=True)
    ind = TypingIndicator({"tg": tg}, {"a": "tg:1", "b": "tg:2"}.get, interval=5, max_duration=20)
    await run_for(ind, 100, [
        (0, "a", "batch_sent", {"batch": 1}),
        (0, "b", "batch_sent", {"batch": 7}),
        (6, "a", "turn_failed", {"batch": 1}),
    ])
    by_chat = {c: sum(1 for _, x in tg.calls if x == c) for c in ("tg:1", "tg:2")}
    assert by_chat["tg:1"] == 2  # at 0 and 5, then the turn failed; failures are only logged
    assert 4 <= by_chat["tg:2"] <= 5  # never answered: stops after max_duration, not at 100 s


async def test_a_hanging_platform_call_is_cut(autojump_clock: trio.testing.MockClock) -> None:
    tg = Chan(hang=True)
    ind = TypingIndicator({"tg": tg}, {"a": "tg:1"}.get, interval=4, call_timeout=2)
    await run_for(ind, 9, [(0, "a", "batch_sent", {"batch": 1})])
    assert len(tg.calls) == 3  # each call was cut after 2 s; the refreshes went on
