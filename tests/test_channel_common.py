"""The helpers every platform channel shares."""

from __future__ import annotations

import random

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from ngb.channels.common import (
    AuthError,
    ChannelStatus,
    PartialSends,
    backoff,
    markdown_to_slack_mrkdwn,
    markdown_to_telegram_html,
    reconnect_forever,
    split_text,
    utf16_len,
)


def test_split_prefers_paragraphs_then_sentences() -> None:
    text = "First paragraph is here.\n\nSecond one. It has two sentences."
    assert split_text(text, 40) == ["First paragraph is here.", "Second one. It has two sentences."]
    long_sentences = " ".join(f"Sentence number {i} ends here." for i in range(10))
    parts = split_text(long_sentences, 100)
    assert all(len(p) <= 100 for p in parts)
    assert all(p.endswith("ends here.") for p in parts)  # cut at sentence ends
    assert " ".join(parts) == long_sentences


def test_split_hard_cuts_a_word_longer_than_the_limit() -> None:
    parts = split_text("x" * 250, 100)
    assert "".join(parts) == "x" * 250 and all(len(p) <= 100 for p in parts)


def test_split_reopens_code_fences() -> None:
    code = "Look:\n\n```python\n" + "\n".join(f"value_{i} = {i}" for i in range(100)) + "\n```\nDone."
    parts = split_text(code, 300)
    assert len(parts) > 3 and all(len(p) <= 300 for p in parts)
    for part in parts:
        assert part.count("```") % 2 == 0, part  # every part renders as complete code
    assert parts[1].startswith("```python\n")


def test_split_measures_utf16_for_telegram() -> None:
    text = "😀" * 3000  # 6000 UTF-16 units
    parts = split_text(text, 4096, measure=utf16_len)
    assert all(utf16_len(p) <= 4096 for p in parts) and "".join(parts) == text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab .!?\n")), min_size=0, max_size=600), st.integers(16, 120))
def test_split_keeps_every_word_in_order(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert all(len(p) <= limit for p in parts)
    assert "".join("".join(parts).split()) == "".join(text.split())


def test_markdown_to_telegram_html() -> None:
    html = markdown_to_telegram_html(
        "# Plan\n**bold** *it* `a<b` [site](https://e.com/?a=1&b=2) ~~old~~ 5 < 6 & x_y_z\n- one\n```py\nif a<b: pass\n```"
    )
    assert html == (
        "<b>Plan</b>\n<b>bold</b> <i>it</i> <code>a&lt;b</code> "
        '<a href="https://e.com/?a=1&amp;b=2">site</a> <s>old</s> 5 &lt; 6 &amp; x_y_z\n• one\n'
        '<pre><code class="language-py">if a&lt;b: pass</code></pre>'
    )


def test_markdown_to_slack() -> None:
    assert markdown_to_slack_mrkdwn("**b** *i* ~~s~~ [t](https://e.com) a<b") == "*b* _i_ ~s~ <https://e.com|t> a&lt;b"


def test_backoff_grows_with_jitter_and_caps() -> None:
    rng = random.Random(1)
    delays = [backoff(n, base=1, cap=8, rng=rng) for n in range(1, 8)]
    assert 0.5 <= delays[0] <= 1 and 1 <= delays[1] <= 2 and all(4 <= d <= 8 for d in delays[3:])
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered


async def test_reconnect_forever_shows_state_and_keeps_going() -> None:
    status = ChannelStatus("demo")
    seen: list[str] = []
    status._on_change = lambda name, state: seen.append(state)
    status.secrets = ["tok-123"]
    calls = 0

    async def session() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("network down")
        if calls == 2:
            raise AuthError("bad token tok-123")
        status.set("connected")
        await trio.sleep_forever()

    async with trio.open_nursery() as n:
        n.start_soon(lambda: reconnect_forever(status, session, base=0.01, cap=0.02, auth_cap=0.05))
        with trio.fail_after(5):
            while status.state != "connected":
                await trio.sleep(0.01)
        n.cancel_scope.cancel()
    assert seen == ["connecting", "disconnected", "connecting", "unauthorized", "connecting", "connected"]
    assert status.reconnects == 2 and "tok-123" not in (status.last_error or "")


def test_partial_sends_resume() -> None:
    p = PartialSends(max_entries=2)
    k = p.key("telegram:1", "long text", None)
    p.record(k, "1:10")
    assert p.done(k) == ["1:10"]
    p.finish(k)
    assert p.done(k) == []
    with pytest.raises(ValueError):
        split_text("x", 3)


def test_a_too_short_secret_does_not_shred_every_log_line(caplog) -> None:
    import logging

    from ngb.channels.common import redact_in_logs

    redact_in_logs("s")  # (a test's placeholder secret once redacted every "s" of every later log line)
    redact_in_logs("long-secret-value-42")
    log = logging.getLogger("ngb.channels.test")
    with caplog.at_level(logging.WARNING):
        log.warning("channel discord: off (token long-secret-value-42)")
    assert caplog.records[-1].getMessage() == "channel discord: off (token <redacted>)"


# -- NewestStored: where a channel's catch-up starts, kept in the store --------------------------------
async def test_newest_stored_moves_forward_only_and_survives_a_restart(tmp_path) -> None:
    from ngb.channels.common import NewestStored
    from ngb.store import Store

    store = Store(tmp_path / "ngb.db")
    await store.open()
    marks = NewestStored("discord", store, order=int)
    await marks.load()
    assert marks.get("discord:1") is None
    assert await marks.advance("discord:1", "900")
    assert not await marks.advance("discord:1", "120")  # older (ids compare as numbers, not text)
    assert await marks.advance("discord:1", "1000")
    assert not await marks.advance("discord:2", "not-a-snowflake")
    await marks.advance("discord:2", "5")
    await store.close()

    store = Store(tmp_path / "ngb.db")  # the next run
    await store.open()
    again = NewestStored("discord", store, order=int)
    await again.load()
    assert dict(again.items()) == {"discord:1": "1000", "discord:2": "5"}
    assert await store.channel_marks("slack") == {}  # per channel
    await store.close()


async def test_newest_stored_keeps_working_when_the_store_fails(caplog) -> None:
    from ngb.channels.common import NewestStored

    class Broken:
        async def channel_marks(self, channel: str) -> dict[str, str]:
            raise OSError("disk I/O error")

        async def set_channel_mark(self, channel: str, chat: str, mark: str) -> None:
            raise OSError("database or disk is full")

        async def sent_by_bot(self, channel: str, platform_id: str) -> bool:
            return False

    marks = NewestStored("slack", Broken(), order=float)
    await marks.load()  # logged: this run catches up from what it sees
    assert await marks.advance("slack:C1", "1700000000.000200")
    assert marks.get("slack:C1") == "1700000000.000200"  # kept in memory all the same
    assert "could not read" in caplog.text and "could not keep" in caplog.text


async def test_sent_by_bot_answers_from_the_store(tmp_path) -> None:
    from datetime import UTC, datetime

    from ngb.records import InboundMessage, OutboxItem
    from ngb.store import Store

    store = Store(tmp_path / "ngb.db")
    await store.open()
    await store.ingest(InboundMessage(chat="qq:group:1", platform_id="77", sender="bob", sender_id="5",
                                      text="hi", time=datetime.now(UTC)))
    item = OutboxItem(id=await store.queue_message("g", "qq:group:1", "hello"), chat="qq:group:1", text="hello",
                      folder="g", created_at=datetime.now(UTC))
    await store.deliver(item, "Andy", "78")
    assert await store.sent_by_bot("qq", "78")
    assert not await store.sent_by_bot("qq", "77")  # bob's
    assert not await store.sent_by_bot("qq", "79") and not await store.sent_by_bot("discord", "78")
    await store.close()
