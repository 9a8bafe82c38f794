"""The outbox against the real store with a channel double: a channel bug (an exception that is
not a ChannelError) is tried a few times and then given up, so the chat's later replies, held back
behind it in order, still go out."""

from __future__ import annotations

from pathlib import Path

import trio

from ngb.outbox import BUG_ATTEMPTS, OutboxSender
from ngb.store import Store


class _Buggy:
    """Text goes out; the text "boom" raises as a channel bug would (a TypeError)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.calls = 0

    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        self.calls += 1
        if text == "boom":
            raise TypeError("send() got an unexpected keyword argument")
        self.sent.append(text)
        return f"m{len(self.sent)}"


async def test_a_channel_bug_is_given_up_after_a_few_tries_and_later_replies_go(tmp_path: Path) -> None:
    store = Store(tmp_path / "ngb.db")
    await store.open()
    channel = _Buggy()
    sender = OutboxSender(store, {"chan": channel}, assistant_name="Andy", retry_base=0.001, retry_cap=0.002)
    await store.queue_message("g", "chan:1", "first")
    await store.queue_message("g", "chan:1", "boom")
    await store.queue_message("g", "chan:1", "after the bug")
    with trio.fail_after(10):
        while await store.outbox_depth():
            next_try = await sender.flush()
            if next_try is not None:
                await trio.sleep_until(next_try)
    assert channel.sent == ["first", "after the bug"]  # in order, and the bug held nothing back for good
    rows = {r.text: r for r in await store.outbox_items("chan:1")}
    assert (rows["boom"].state, rows["boom"].attempts) == ("failed", BUG_ATTEMPTS)
    assert "TypeError" in (rows["boom"].last_error or "")
    assert channel.calls == 2 + BUG_ATTEMPTS
    await store.close()
