from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ngb.framing import MAX_FRAME, FrameError, FrameWriter, LineReader, decode_line, encode_frame, send_frame

# ------------------------------------------------------------------ helpers


class ChunkStream(trio.abc.ReceiveStream):
    """Hands out the given chunks (split further if the reader asks for fewer bytes)."""

    def __init__(self, chunks: Iterable[bytes], reader_probe: Any = None) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""
        self.probe = reader_probe
        self.max_seen = 0
        self.asked: list[int] = []

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.probe is not None:
            self.max_seen = max(self.max_seen, self.probe().buffered)
        assert max_bytes is not None and max_bytes >= 1
        self.asked.append(max_bytes)
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return b""
        out, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return out

    async def aclose(self) -> None:
        pass


def reference(data: bytes, max_line: int) -> list[dict | FrameError]:
    """What the reader must produce, computed on the whole input at once."""
    out: list[dict | FrameError] = []
    lines = data.split(b"\n")
    for line in lines:
        if len(line) > max_line:
            out.append(FrameError(f"line too long (over {max_line} bytes)"))
        elif line.strip():
            out.append(decode_line(line))
    return out


async def read_all(reader: LineReader) -> list[dict | FrameError]:
    out: list[dict | FrameError] = []
    while True:
        frame = await reader.next_frame()
        if frame is None:
            return out
        out.append(frame)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts}) if data else []
    chunks, last = [], 0
    for p in points:
        chunks.append(data[last:p])
        last = p
    chunks.append(data[last:])
    return [c for c in chunks if c]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
objects = st.dictionaries(st.text(max_size=10), json_values, max_size=5)

good_line = objects.map(lambda o: encode_frame(o)[:-1])
bad_line = st.one_of(
    st.binary(max_size=60).filter(lambda b: b"\n" not in b),
    st.sampled_from([b"[1,2]", b"42", b'"str"', b"null", b"{", b"{'a':1}", b"\xff\xfe{}", b"{}}", b"NaN",
                     b'{"a": NaN}', b"\xc3\x28", b"\xed\xa0\x80", b"  ", b"\r", b"[" * 5000 + b"]" * 5000]),
)
line = st.one_of(good_line, bad_line)


# ------------------------------------------------------------------ LineReader


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(line, max_size=12),
    trailing_newline=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
    max_line=st.sampled_from([8, 40, 200, MAX_FRAME]),
    receive_size=st.sampled_from([1, 3, 64, 65536]),
)
def test_chunking_matches_reference(
    lines: list[bytes], trailing_newline: bool, cuts: list[int], max_line: int, receive_size: int
) -> None:
    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")

    async def main() -> list[dict | FrameError]:
        stream = ChunkStream(split_at(data, cuts))
        reader = LineReader(stream, max_line=max_line, receive_size=receive_size)
        stream.probe = lambda: reader
        frames = await read_all(reader)
        assert stream.max_seen <= max_line + 1
        assert await reader.next_frame() is None  # stays at EOF
        return frames

    assert trio.run(main) == reference(data, max_line)


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300) | st.lists(bad_line, max_size=6).map(b"\n".join),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_malformed_input_never_raises(data: bytes, cuts: list[int]) -> None:
    async def main() -> list[dict | FrameError]:
        return await read_all(LineReader(ChunkStream(split_at(data, cuts)), max_line=64))

    frames = trio.run(main)
    assert all(isinstance(f, (dict, FrameError)) for f in frames)
    assert frames == reference(data, 64)


def test_decode_line_reasons() -> None:
    assert decode_line(b'{"type":"hello"}') == {"type": "hello"}
    assert "UTF-8" in decode_line(b'{"a":"\xff"}').reason  # type: ignore[union-attr]
    assert "invalid JSON" in decode_line(b"{nope").reason  # type: ignore[union-attr]
    assert "not a JSON object" in decode_line(b"[1]").reason  # type: ignore[union-attr]
    assert "invalid JSON" in decode_line(b'{"a":NaN}').reason  # type: ignore[union-attr]
    assert isinstance(decode_line(b"[" * 100_000), FrameError)
    assert isinstance(decode_line(b'{"a":' + b"1" * 10_000 + b"}"), FrameError)  # int digit limit
    # JSON's own UTF-16/32 sniffing must not apply: the wire is UTF-8
    assert isinstance(decode_line('{"a":1}'.encode("utf-16")), FrameError)


async def test_huge_garbage_line_then_frame_bounded_memory() -> None:
    total = 10 * 1024 * 1024
    piece = b"x" * 65536

    def chunks() -> Iterator[bytes]:
        sent = 0
        while sent < total:
            yield piece
            sent += len(piece)
        yield b"\n" + encode_frame({"type": "hello", "version": 1})

    stream = ChunkStream(chunks())
    reader = LineReader(stream)
    stream.probe = lambda: reader
    first = await reader.next_frame()
    assert isinstance(first, FrameError) and "too long" in first.reason
    assert await reader.next_frame() == {"type": "hello", "version": 1}
    assert await reader.next_frame() is None
    assert stream.max_seen <= MAX_FRAME + 1
    assert max(stream.asked) <= MAX_FRAME + 1


async def test_exact_cap_is_allowed() -> None:
    small = 32
    ok = encode_frame({"a": "x" * (small - 8)})
    assert len(ok) == small + 1
    too_long = b'{"a":"' + b"y" * small + b'"}\n'
    reader = LineReader(ChunkStream([ok + too_long + ok]), max_line=small)
    assert await read_all(reader) == [{"a": "x" * (small - 8)}, FrameError(f"line too long (over {small} bytes)"),
                                      {"a": "x" * (small - 8)}]


async def test_crlf_and_blank_lines_and_unterminated_last_line() -> None:
    reader = LineReader(ChunkStream([b'\n\r\n{"a":1}\r\n\n  \n{"b":2}']))
    assert await read_all(reader) == [{"a": 1}, {"b": 2}]


# ------------------------------------------------------------------ writing


def test_encode_frame() -> None:
    assert encode_frame({"type": "x", "t": "é\n"}) == '{"type":"x","t":"é\\n"}\n'.encode()
    with pytest.raises(ValueError):
        encode_frame({"a": "x" * MAX_FRAME})
    with pytest.raises(ValueError):
        encode_frame({"a": float("nan")})
    with pytest.raises(ValueError):
        encode_frame({"a": object()})
    with pytest.raises(ValueError):
        encode_frame({"a": "\ud800"})
    big = {"a": "x" * (MAX_FRAME - 8)}
    assert len(encode_frame(big)) == MAX_FRAME + 1


@settings(max_examples=100, deadline=None)
@given(objs=st.lists(objects, max_size=10))
def test_roundtrip(objs: list[dict]) -> None:
    async def main() -> list[Any]:
        send, receive = trio.testing.memory_stream_pair()
        for o in objs:
            await send_frame(send, o)
        await send.aclose()
        return await read_all(LineReader(receive))

    assert trio.run(main) == [json.loads(json.dumps(o)) for o in objs]


async def test_frame_writer_serialises_concurrent_senders() -> None:
    send, receive = trio.testing.memory_stream_pair()
    writer = FrameWriter(send)
    payload = "z" * 200_000
    got: list[Any] = []

    async def reader_task() -> None:
        reader = LineReader(receive)
        while len(got) < 40:
            frame = await reader.next_frame()
            assert frame is not None
            got.append(frame)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader_task)
        for i in range(40):
            nursery.start_soon(writer.send, {"i": i, "p": payload})
    assert sorted(f["i"] for f in got) == list(range(40))
    assert all(f["p"] == payload for f in got)


async def test_frame_writer_refuses_after_cut_off_send() -> None:
    send, _receive = trio.testing.lockstep_stream_pair()
    writer = FrameWriter(send)
    with trio.move_on_after(0.05):
        await writer.send({"a": 1})  # nobody reads: blocks, then is cancelled mid-send
    with pytest.raises(trio.BrokenResourceError):
        await writer.send({"b": 2})
    with pytest.raises(ValueError):
        await FrameWriter(send).send({"x": "y" * MAX_FRAME})
