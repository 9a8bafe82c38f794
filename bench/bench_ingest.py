"""Ingest benchmark: inbound messages stored and routed per second through `Router.handle` with a
real `Store` (SQLite on disk, WAL, one transaction per message: the store-first guarantee).

    .venv/bin/python -m bench.bench_ingest [--messages 20000] [--producers 8]

The traffic is a mix over 10 chats (8 registered groups, 2 unregistered), half of it triggering the
agent ("@Andy ..."), from 50 senders; rate limits are set high so every triggered message is
woken (the wake callback only counts). Figures:
  * concurrent: --producers channel tasks calling handle at once (how a daemon with several
    channels, or one busy channel, ingests);
  * sequential: one producer, one message after the other (the latency floor per message);
  * redeliveries: the same platform ids again (idempotent path: nothing stored twice).

Goals: >= 2,500 messages/s stored and routed (concurrent); every message stored once. Exit status
1 when one is missed (bench/goals.py). Why 2,500: the busiest case we design for ("Scale I": 1,000
groups, 5,000 messages a minute = 83/s) with 30x headroom. It was 5,000 while this 2-core box
measured 5,000-7,000; it measures 3,000-4,000 now at the same code (HEAD before Security II, too),
and a goal that fails on the machine's day and not on the code is no check.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.goals import Report, run  # noqa: E402

GOAL_PER_S = 2500.0


async def bench(messages: int, producers: int) -> int:
    from ngb.events import ChatEvents
    from ngb.groups import GroupRegistry
    from ngb.records import Group, InboundMessage
    from ngb.router import Router
    from ngb.store import Store

    report = Report()
    with tempfile.TemporaryDirectory(prefix="ngb-bench-ingest-") as tmp:
        root = Path(tmp)
        store = Store(root / "ngb.db")
        await store.open()
        registry = GroupRegistry(store, root / "groups", root / "global")
        await registry.load()
        for i in range(8):
            await registry.add(Group(chat=f"local:g{i}", folder=f"g{i}", is_main=(i == 0)))
        woken: list[int] = []
        outcomes: dict[str, int] = {}

        def routed(message, outcome: str) -> None:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

        router = Router(
            store,
            registry,
            ChatEvents(),
            wake=lambda folder, mid: woken.append(mid) is None,
            notify=lambda folder, chat, text: None,
            trigger="@Andy",
            max_message_chars=20_000,
            sender_rate_per_minute=1_000_000,
            group_rate_per_minute=1_000_000,
            on_routed=routed,
        )
        chats = [f"local:g{i}" for i in range(8)] + ["local:stranger1", "local:stranger2"]

        def make(n: int, prefix: str) -> InboundMessage:
            text = ("@Andy " if n % 2 else "") + f"message number {n} about the weekly plan and the groceries"
            return InboundMessage(
                chat=chats[n % len(chats)],
                sender=f"user{n % 50}",
                sender_id=f"u{n % 50}",
                text=text,
                platform_id=f"{prefix}-{n}",
            )

        # warm-up (page cache, statement cache, thread pool)
        for n in range(500):
            await router.handle(make(n, "warm"))

        # concurrent producers
        batch = [make(n, "c") for n in range(messages)]
        per = len(batch) // producers

        async def producer(part: list[InboundMessage]) -> None:
            for m in part:
                await router.handle(m)

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for p in range(producers):
                nursery.start_soon(producer, batch[p * per : (p + 1) * per])
        concurrent_s = time.perf_counter() - t0
        concurrent_rate = per * producers / concurrent_s

        # sequential
        seq = [make(n, "s") for n in range(messages // 2)]
        lat: list[float] = []
        t0 = time.perf_counter()
        for m in seq:
            t1 = time.perf_counter()
            await router.handle(m)
            lat.append(time.perf_counter() - t1)
        seq_s = time.perf_counter() - t0
        seq_rate = len(seq) / seq_s
        lat.sort()
        p99_ms = lat[int(0.99 * (len(lat) - 1))] * 1000

        # redeliveries (idempotent; not stored again)
        t0 = time.perf_counter()
        for m in seq[: messages // 4]:
            await router.handle(m)
        redeliver_rate = (messages // 4) / (time.perf_counter() - t0)

        stored = await store.run(lambda c: c.execute("SELECT count(*) FROM messages").fetchone()[0])
        await store.close()

    expected = 500 + per * producers + len(seq)
    print(f"outcomes: {dict(sorted(outcomes.items()))}; agent wake-ups {len(woken)}")
    report.check("messages stored, each once (stored/expected)", stored == expected, f"{stored}/{expected}")
    report.figure(f"ingest, {producers} producers", concurrent_rate, "msg/s", GOAL_PER_S, higher_is_better=True,
                  fmt=".0f")
    report.figure("ingest, 1 producer", seq_rate, "msg/s", fmt=".0f")
    report.figure("  p99 per message, 1 producer", p99_ms, "ms", fmt=".2f")
    report.figure("redelivery (idempotent)", redeliver_rate, "msg/s", fmt=".0f")
    return report.exit_code()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--producers", type=int, default=8)
    args = parser.parse_args()
    return trio.run(bench, args.messages, args.producers)


if __name__ == "__main__":
    sys.exit(run(main))
