"""Live previews (base.LivePreview) on the WeCom intelligent robot: the answer to the triggering
message is one stream (``aibot_respond_msg`` frames with the callback's req_id and one stream id,
each the whole text so far, ``finish: false``, the last ``finish: true``), against the fake gateway
in tests/fakes/wecom.py, which keeps every frame of a stream. The channel alone, then with the
daemon's Previews and outbox (the fake agent sends no preview frames, so the daemon's own parts are
driven here instead of a whole daemon)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from ngb.channels.base import ChannelError, LivePreview, offers
from ngb.channels.wecom import WeComChannel, WeComSettings
from ngb.outbox import OutboxSender
from ngb.previews import Previews
from ngb.records import InboundMessage
from ngb.store import Store
from tests.channel_helpers import wait_until
from tests.fakes.wecom import FakeWeCom

BOT, SECRET = "aibWeComPreviewBot", "wecom-secret-2"
GROUP = "wrGroupChat02"
CHAT = f"wecom:{GROUP}"
HALF = "Here is **the plan"  # a reply cut off mid-Markdown
FINAL = "Here is **the plan**: `ngb start`."
PART_BYTES = 300


def long_reply(paragraphs: int) -> str:
    return "\n\n".join(f"第{i}段。" + "这是一句话，说了一些内容。" * 5 for i in range(paragraphs))


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    async with trio.open_nursery() as nursery:
        gw = await FakeWeCom.start(nursery, bot_id=BOT, secret=SECRET)
        yield gw
        nursery.cancel_scope.cancel()


async def connect(nursery: trio.Nursery, fake: FakeWeCom, *, reply_window: float = 300.0) -> WeComChannel:
    """The channel alone (no daemon), subscribed to the fake; what it receives is dropped."""
    channel = WeComChannel(WeComSettings(bot_id=BOT, secret=SECRET, url=fake.url, part_bytes=PART_BYTES,
                                         reply_window=reply_window, request_timeout=3, reconnect_base=0.05))

    async def submit(inbound: InboundMessage) -> None:
        return None

    await nursery.start(channel.run, submit)
    await wait_until(lambda: channel.state == "connected")
    return channel


async def trigger(fake: FakeWeCom, channel: WeComChannel, text: str = "@Andy plan?") -> dict[str, Any]:
    frame = await fake.user_message(text, chatid=GROUP, user="lisi")
    await wait_until(lambda: frame["body"]["msgid"] in channel._callbacks)
    return frame


async def test_the_answer_grows_as_one_stream_then_finishes_once(fake: FakeWeCom) -> None:
    async with trio.open_nursery() as nursery:
        channel = await connect(nursery, fake)
        assert offers(channel, LivePreview)
        frame = await trigger(fake, channel)
        req_id, msgid = frame["headers"]["req_id"], frame["body"]["msgid"]
        sid = await channel.send_preview(CHAT, HALF, msgid)
        assert fake.streams[sid] == [{"req_id": req_id, "finish": False, "content": HALF}]
        await channel.edit_preview(CHAT, sid, HALF + "** is")
        await channel.edit_preview(CHAT, sid, "长" * 200)  # 600 bytes: cut to part_bytes, with "…"
        contents = [f["content"] for f in fake.streams[sid]]
        assert contents[:2] == [HALF, HALF + "** is"]  # the whole text so far, each time
        assert contents[2].endswith("…") and len(contents[2].encode()) <= PART_BYTES
        assert all((f["req_id"], f["finish"]) == (req_id, False) for f in fake.streams[sid])
        assert fake.pushes == [] and fake.texts() == []  # nothing finished yet

        text = FINAL + "\n\n" + long_reply(6)
        last = await channel.finish_preview(CHAT, sid, text, msgid)
        final = fake.streams[sid][-1]
        assert final["finish"] is True and final["req_id"] == req_id
        assert final["content"].startswith(FINAL)  # Markdown as send sends it
        assert len(fake.pushes) >= 2 and all(p["body"]["msgtype"] == "markdown" for p in fake.pushes)
        assert all(p["body"]["chatid"] == GROUP for p in fake.pushes)
        assert last == fake.pushes[-1]["headers"]["req_id"]  # the last part's id
        assert "\n\n".join(fake.texts()) == text and all(len(t.encode()) <= PART_BYTES for t in fake.texts())

        frames = len(fake.sent)
        assert await channel.finish_preview(CHAT, sid, text, msgid) == last  # the outbox again: nothing new
        assert len(fake.sent) == frames
        nursery.cancel_scope.cancel()


async def test_a_stale_callback_has_no_preview_and_the_reply_goes_the_normal_way(fake: FakeWeCom) -> None:
    async with trio.open_nursery() as nursery:
        channel = await connect(nursery, fake, reply_window=0.3)
        frame = await trigger(fake, channel)
        msgid = frame["body"]["msgid"]
        sid = await channel.send_preview(CHAT, HALF, msgid)  # fresh: a stream
        await trio.sleep(0.4)
        with pytest.raises(ChannelError) as edit:
            await channel.edit_preview(CHAT, sid, HALF + "**")
        with pytest.raises(ChannelError) as finish:
            await channel.finish_preview(CHAT, sid, FINAL, msgid)
        with pytest.raises(ChannelError) as post:
            await channel.send_preview(CHAT, HALF, msgid)
        assert not (edit.value.retryable or finish.value.retryable or post.value.retryable)
        assert [f["finish"] for f in fake.streams[sid]] == [False]  # nothing sent after it went stale
        await channel.send(CHAT, FINAL, msgid)  # the normal way: pushed
        assert [f["cmd"] for f in fake.sent] == ["aibot_respond_msg", "aibot_send_msg"]
        assert fake.texts() == [FINAL]
        nursery.cancel_scope.cancel()


async def test_a_stream_the_channel_does_not_know_cannot_be_continued(fake: FakeWeCom) -> None:
    """After a restart the streams (kept in memory) are unknown: the outbox then sends anew."""
    async with trio.open_nursery() as nursery:
        channel = await connect(nursery, fake)
        frame = await trigger(fake, channel)
        with pytest.raises(ChannelError) as finish:
            await channel.finish_preview(CHAT, "stream_1_1", FINAL, frame["body"]["msgid"])
        assert not finish.value.retryable
        with pytest.raises(ChannelError):
            await channel.send_preview("wecom:someone-else", HALF)  # never triggered: no callback
        assert fake.sent == []
        nursery.cancel_scope.cancel()


async def test_previews_and_outbox_turn_the_stream_into_the_stored_reply(fake: FakeWeCom, tmp_path: Path) -> None:
    """The daemon's parts: Previews posts and edits the stream (throttled), the reply is committed
    with its stream id, the outbox finishes that stream instead of sending anew; a stream whose
    callback went stale meanwhile is not finished, the reply is pushed anew."""
    store = Store(tmp_path / "db.sqlite")
    await store.open()
    try:
        async with trio.open_nursery() as nursery:
            channel = await connect(nursery, fake, reply_window=1.0)
            previews = Previews({"wecom": channel}, interval=0.05)
            await nursery.start(previews.run)
            outbox = OutboxSender(store, {"wecom": channel}, assistant_name="Andy")
            msgid = (await trigger(fake, channel))["body"]["msgid"]
            for text in ("Here", "Here is", "Here is **the plan"):
                previews.show("team", CHAT, msgid, text)
                await trio.sleep(0.1)
            sid = await previews.finish("team")
            assert sid is not None and [f["content"] for f in fake.streams[sid]] == ["Here", "Here is", HALF]
            await store.commit_reply("team", CHAT, FINAL, None, reply_to=msgid, preview_id=sid)
            await outbox.flush()
            assert fake.streams[sid][-1] == {"req_id": fake.streams[sid][0]["req_id"], "finish": True,
                                             "content": FINAL}
            assert fake.pushes == [] and fake.texts() == [FINAL]
            history = await store.messages_after(CHAT, 0, 10)
            assert [(m.text, m.platform_id) for m in history] == [(FINAL, sid)]

            msgid = (await trigger(fake, channel, "@Andy again"))["body"]["msgid"]
            previews.show("team", CHAT, msgid, "Thinking")
            await wait_until(lambda: len(fake.streams) == 2)
            sid = await previews.finish("team")
            assert sid is not None
            await trio.sleep(1.1)  # the callback is stale before the outbox delivers
            await store.commit_reply("team", CHAT, "Done.", None, reply_to=msgid, preview_id=sid)
            await outbox.flush()
            assert [f["finish"] for f in fake.streams[sid]] == [False]  # not finished: it cannot be
            assert [p["body"]["markdown"]["content"] for p in fake.pushes] == ["Done."]  # sent anew
            assert await store.outbox_depth() == 0
            nursery.cancel_scope.cancel()
    finally:
        await store.close()
