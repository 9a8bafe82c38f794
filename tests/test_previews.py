"""Live previews on their own (ngb/previews.py, the runner's agent/ngb_agent/drafts.py, the outbox's
finish): how often a chat is edited, what the final reply edits, and what happens when a platform
says no. Virtual time (trio's MockClock) for the throttle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from agent.ngb_agent.drafts import Drafts
from ngb.channels.base import ChannelError
from ngb.outbox import OutboxSender
from ngb.previews import FINISH_WAIT, Previews
from ngb.protocol import Preview
from ngb.store import Store


class Editable:
    """A channel that shows previews: every call recorded with the (virtual) time it was made."""

    def __init__(self, *, fail_edit: bool = False, fail_post: bool = False, post_delay: float = 0.0) -> None:
        self.calls: list[tuple[float, str, str, str]] = []  # (time, what, id, text)
        self.sent: list[tuple[str, str, str | None]] = []
        self.fail_edit, self.fail_post, self.post_delay = fail_edit, fail_post, post_delay
        self._n = 0

    async def run(self, submit: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        self.sent.append((chat, text, reply_to))
        return "sent-1"

    async def send_preview(self, chat: str, text: str, reply_to: str | None = None) -> str:
        await trio.sleep(self.post_delay)
        if self.fail_post:
            raise ChannelError("no posting here")
        self._n += 1
        self.calls.append((trio.current_time(), "post", f"m{self._n}", text))
        return f"m{self._n}"

    async def edit_preview(self, chat: str, platform_id: str, text: str) -> None:
        if self.fail_edit:
            raise ChannelError("edit refused")
        self.calls.append((trio.current_time(), "edit", platform_id, text))

    async def finish_preview(self, chat: str, platform_id: str, text: str, reply_to: str | None = None) -> str | None:
        self.calls.append((trio.current_time(), "finish", platform_id, text))
        return platform_id


class Frozen(Editable):
    """A platform that refuses the final edit for good (Telegram's "message can't be edited")."""

    async def finish_preview(self, chat: str, platform_id: str, text: str, reply_to: str | None = None) -> str | None:
        raise ChannelError("message can't be edited", retryable=False)


class Plain:
    """A channel that cannot edit."""

    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        return "p1"


async def test_a_reply_grows_by_edits_at_most_one_per_interval(autojump_clock: trio.testing.MockClock) -> None:
    tg = Editable()
    previews = Previews({"tg": tg}, interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(previews.run)
        start = trio.current_time()
        text = ""
        for i in range(40):  # a word every 0.1 s for 4 s
            text += f"w{i} "
            previews.show("g", "tg:1", "42", text)
            await trio.sleep(0.1)
        preview_id = await previews.finish("g")
        nursery.cancel_scope.cancel()
    assert preview_id == "m1"
    assert [c[1] for c in tg.calls] == ["post"] + ["edit"] * (len(tg.calls) - 1)
    assert {c[2] for c in tg.calls} == {"m1"}  # one message, edited
    gaps = [b[0] - a[0] for a, b in zip(tg.calls, tg.calls[1:], strict=False)]
    assert gaps and min(gaps) >= 1.0 - 1e-9, gaps  # the throttle
    assert 4 <= len(tg.calls) <= 5, tg.calls  # and it keeps up: about one per second for 4 s
    assert tg.calls[0][0] - start < 0.01  # the first words show at once
    assert all(text.startswith(c[3]) for c in tg.calls)  # each shows the reply so far


async def test_finish_waits_for_a_post_in_flight_and_returns_its_id(autojump_clock: trio.testing.MockClock) -> None:
    slow = Editable(post_delay=2.0)
    previews = Previews({"tg": slow}, interval=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(previews.run)
        previews.show("g", "tg:1", None, "Hello")
        await trio.sleep(0.5)  # the post is on its way
        assert await previews.finish("g") == "m1"
        # the next reply of the same group gets a new preview message
        previews.show("g", "tg:1", None, "Second")
        await trio.sleep(1.5)
        assert await previews.finish("g") == "m2"
        nursery.cancel_scope.cancel()


async def test_a_failed_post_or_edit_ends_the_preview_and_the_reply_goes_new(autojump_clock: trio.testing.MockClock) -> None:
    for chan, shown in ((Editable(fail_post=True), 0), (Editable(fail_edit=True), 1)):
        previews = Previews({"tg": chan}, interval=0.5)
        async with trio.open_nursery() as nursery:
            await nursery.start(previews.run)
            for i in range(10):
                previews.show("g", "tg:1", None, "x" * (i + 1))
                await trio.sleep(0.3)
            assert await previews.finish("g") is None  # nothing to edit: the outbox sends anew
            nursery.cancel_scope.cancel()
        assert len(chan.calls) == shown  # after the failure, no more tries


async def test_channels_without_edits_and_a_hung_post_never_hold_up_the_answer(autojump_clock: trio.testing.MockClock) -> None:
    hung = Editable(post_delay=10_000)
    previews = Previews({"tg": hung, "plain": Plain()}, interval=1.0)  # type: ignore[dict-item]
    assert not previews.can_preview("tg:1")  # not running yet
    async with trio.open_nursery() as nursery:
        await nursery.start(previews.run)
        assert previews.can_preview("tg:1") and not previews.can_preview("plain:1")
        previews.show("p", "plain:1", None, "hi")
        assert await previews.finish("p") is None
        previews.show("g", "tg:1", None, "hi")
        start = trio.current_time()
        assert await previews.finish("g") is None
        assert trio.current_time() - start <= FINISH_WAIT + 0.01
        previews.show("h", "tg:2", None, "bye")
        previews.drop("h")  # a failed turn: what the chat shows stays; nothing is returned later
        assert await previews.finish("h") is None
        nursery.cancel_scope.cancel()


async def test_the_outbox_turns_the_preview_into_the_reply(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    await store.open()
    try:
        tg, plain = Editable(), Plain()
        outbox = OutboxSender(store, {"tg": tg, "plain": plain}, assistant_name="Andy")  # type: ignore[dict-item]
        await store.commit_reply("g", "tg:1", "the **final** answer", None, reply_to="42", preview_id="m7")
        await store.commit_reply("g", "plain:1", "no preview here", None, preview_id="x1")  # cannot edit: sent
        await outbox.flush()
        assert tg.calls == [(tg.calls[0][0], "finish", "m7", "the **final** answer")]
        assert tg.sent == []  # not sent a second time as a new message
        assert await store.outbox_depth() == 0
        history = await store.messages_after("tg:1", 0, 10)
        assert [(m.text, m.platform_id, m.from_bot) for m in history] == [("the **final** answer", "m7", True)]
    finally:
        await store.close()


async def test_the_runner_previews_only_the_text_block_being_written() -> None:
    sent: list[Preview] = []
    now = [0.0]

    async def send(frame: Preview) -> None:
        sent.append(frame)

    drafts = Drafts(send, interval=0.25, clock=lambda: now[0])

    def delta(text: str) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}

    await drafts.event(3, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    for i, word in enumerate(["Hel", "lo ", "wor", "ld"]):
        now[0] = i * 0.1
        await drafts.event(3, delta(word))
    assert [(f.batch, f.text) for f in sent] == [(3, "Hel"), (3, "Hello world")]  # at most one per 0.25 s
    drafts.finished()  # its output goes now: nothing of it is previewed any more
    now[0] = 5
    await drafts.event(3, delta("!"))
    # a tool call's input is not text for the chat
    await drafts.event(3, {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "name": "x"}})
    await drafts.event(3, {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}})
    now[0] = 10
    await drafts.event(4, {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    await drafts.event(4, delta("Next"))
    assert [(f.batch, f.text) for f in sent][2:] == [(4, "Next")]


async def test_a_preview_that_cannot_become_the_reply_gets_it_as_a_new_message(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    await store.open()
    try:
        frozen = Frozen()
        outbox = OutboxSender(store, {"tg": frozen}, assistant_name="Andy")  # type: ignore[dict-item]
        await store.commit_reply("g", "tg:1", "the final answer", None, reply_to="42", preview_id="m7")
        await outbox.flush()
        assert frozen.sent == [("tg:1", "the final answer", "42")]  # not lost: sent anew
        assert await store.outbox_depth() == 0
    finally:
        await store.close()
