from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import h11
import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypothesis import given, settings
from hypothesis import strategies as st

from ngb.sandbox.model_forward import Masker as _Masker
from ngb.sandbox.model_proxy import ModelProxy, Usage
from ngb.sandbox.model_usage import UsageMeter as _UsageMeter
from tests.fakes.anthropic import FakeAnthropic, drop, error_reply, stall, text_reply

KEY = "sk-ant-api03-REAL-secret-0123456789abcdef"
PH_A = "ngb-placeholder-group-a-xxxxxxxxxxxx"
PH_B = "ngb-placeholder-group-b-yyyyyyyyyyyy"


def body(text: str = "hello", *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
        "tools": [{"name": "noop", "input_schema": {"type": "object"}}],
    }


@attrs.define
class Env:
    fake: FakeAnthropic
    proxy: ModelProxy
    sock_a: Path
    sock_b: Path
    seen: list[bytes]  # every response byte and header the clients got, to look for the key
    deltas: list[tuple[str, Usage]]

    def client(self, sock: Path, key: str | None = PH_A, **kw: Any) -> httpx.AsyncClient:
        headers = {"anthropic-version": "2023-06-01"}
        if key is not None:
            headers["x-api-key"] = key

        async def record(response: httpx.Response) -> None:
            self.seen.append(repr(response.headers.raw).encode())

        return httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(sock)),
            base_url="http://model",
            headers=headers,
            timeout=10,
            event_hooks={"response": [record]},
            **kw,
        )

    async def post(self, client: httpx.AsyncClient, payload: dict, url: str = "/v1/messages") -> httpx.Response:
        r = await client.post(url, json=payload)
        self.seen.append(r.content)
        return r


@pytest.fixture
async def env(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Env]:
    fake = await FakeAnthropic.start(nursery)
    deltas: list[tuple[str, Usage]] = []
    proxy = ModelProxy(fake.url, KEY, retries=3, backoff_base=0.01, on_usage=lambda g, u: deltas.append((g, u)))
    sock_a = tmp_path / "run" / "a" / "model.sock"
    sock_b = tmp_path / "run" / "b" / "model.sock"
    await nursery.start(proxy.serve_group, "a", sock_a, PH_A)
    await nursery.start(proxy.serve_group, "b", sock_b, PH_B)
    e = Env(fake, proxy, sock_a, sock_b, [], deltas)
    yield e
    assert not any(KEY.encode() in chunk for chunk in e.seen), "the real key reached a client"
    await proxy.aclose()


def sse_events(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in raw.decode().split("\n\n"):
        name, data = "", ""
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
        if data:
            out.append((name, json.loads(data)))
    return out


# ------------------------------------------------------------------ auth


async def test_wrong_or_missing_placeholder_is_401_and_upstream_never_called(env: Env) -> None:
    for key in ("wrong", PH_B, KEY, None):
        async with env.client(env.sock_a, key=key) as c:
            r = await env.post(c, body())
        assert r.status_code == 401
        err = r.json()
        assert err["type"] == "error" and err["error"]["type"] == "authentication_error"
    assert env.fake.requests == []
    assert env.proxy.rejected["a"] == 4
    assert env.proxy.usage("a") == Usage()


async def test_right_placeholder_forwards_with_real_key(env: Env) -> None:
    async with env.client(env.sock_a) as c:
        r = await env.post(c, body("hi there"), url="/v1/messages?beta=true")
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["text"] == "Echo: hi there"
    [rec] = env.fake.requests
    assert rec.path == "/v1/messages" and rec.query == "beta=true"
    assert rec.header("x-api-key") == KEY
    assert rec.header("authorization") is None
    assert rec.header("anthropic-version") == "2023-06-01"
    assert not any(PH_A in v for v in rec.headers.values())
    assert rec.json["messages"][0]["content"] == "hi there"


async def test_bearer_placeholder_accepted_and_stripped(env: Env) -> None:
    async with env.client(env.sock_a, key=None) as c:
        r = await c.post("/v1/messages", json=body(), headers={"authorization": f"Bearer {PH_A}"})
    assert r.status_code == 200
    rec = env.fake.requests[0]
    assert rec.header("authorization") is None and rec.header("x-api-key") == KEY


async def test_two_groups_cannot_use_each_others_key(env: Env) -> None:
    async with env.client(env.sock_a, key=PH_B) as c:
        assert (await env.post(c, body())).status_code == 401
    async with env.client(env.sock_b, key=PH_A) as c:
        assert (await env.post(c, body())).status_code == 401
    assert env.fake.requests == []
    async with env.client(env.sock_b, key=PH_B) as c:
        assert (await env.post(c, body())).status_code == 200
    async with env.client(env.sock_a, key=PH_A) as c:
        assert (await env.post(c, body())).status_code == 200
    assert env.proxy.usage("a").requests == 1 and env.proxy.usage("b").requests == 1


async def test_keyless_upstream_gets_no_key(nursery: trio.Nursery, tmp_path: Path) -> None:
    fake = await FakeAnthropic.start(nursery)
    proxy = ModelProxy(fake.url, None)
    sock = tmp_path / "m.sock"
    await nursery.start(proxy.serve_group, "g", sock, PH_A)
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(sock)), base_url="http://x") as c:
        r = await c.post("/v1/messages", json=body(), headers={"x-api-key": PH_A})
    assert r.status_code == 200
    assert fake.requests[0].header("x-api-key") is None
    await proxy.aclose()


# ------------------------------------------------------------------ streaming and usage


async def test_sse_streams_incrementally_and_counts_usage(env: Env) -> None:
    env.fake.script(text_reply("abcdefghijkl", delay=0.25, chunk=4))  # 4 sleeps of 0.25 s
    async with env.client(env.sock_a) as c:
        t0 = trio.current_time()
        first_at = None
        raw = b""
        async with c.stream("POST", "/v1/messages", json=body(stream=True)) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            async for chunk in r.aiter_raw():
                if first_at is None and b"message_start" in chunk:
                    first_at = trio.current_time() - t0
                raw += chunk
        total = trio.current_time() - t0
    env.seen.append(raw)
    assert first_at is not None and first_at < 0.25, first_at
    assert total >= 0.9
    events = sse_events(raw)
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    assert text == "abcdefghijkl"
    start = next(d for n, d in events if n == "message_start")["message"]["usage"]
    delta = next(d for n, d in events if n == "message_delta")["usage"]
    expected = Usage(input_tokens=start["input_tokens"], output_tokens=delta["output_tokens"], requests=1)
    assert env.proxy.usage("a") == expected
    assert env.proxy.usage("b") == Usage()
    assert env.deltas == [("a", expected)]


async def test_json_usage_counted_per_group(env: Env) -> None:
    totals = {"a": Usage(), "b": Usage()}
    for group, sock, key, n in (("a", env.sock_a, PH_A, 2), ("b", env.sock_b, PH_B, 1)):
        async with env.client(sock, key=key) as c:
            for i in range(n):
                r = await env.post(c, body(f"message {i} " + "x" * (50 * (i + 1))))
                assert r.status_code == 200
                u = r.json()["usage"]
                totals[group].add(Usage(u["input_tokens"], u["output_tokens"], u["cache_read_input_tokens"],
                                        u["cache_creation_input_tokens"], 1))
    assert env.proxy.usage("a") == totals["a"] and env.proxy.usage("a").requests == 2
    assert env.proxy.usage("b") == totals["b"]
    assert env.proxy.usage("a").input_tokens > env.proxy.usage("b").input_tokens > 0
    assert [g for g, _ in env.deltas] == ["a", "a", "b"]


def test_usage_meter_sse_any_split() -> None:
    stream = (
        b"event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":120,"
        b"\"cache_read_input_tokens\":7,\"cache_creation_input_tokens\":3,\"output_tokens\":1}}}\r\n\r\n"
        b"event: ping\ndata: {\"type\":\"ping\"}\n\n"
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"usage\"}}\n\n"
        b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}\n\n"
        b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    )
    for step in (1, 2, 7, 64, len(stream)):
        meter = _UsageMeter("text/event-stream; charset=utf-8")
        for i in range(0, len(stream), step):
            meter.feed(stream[i: i + step])
        assert meter.finish() == Usage(120, 42, 7, 3, 1)


# ------------------------------------------------------------------ retries and failures


async def test_429_then_200_is_retried(env: Env) -> None:
    env.fake.script(error_reply(429, retry_after=0.3), text_reply("after the limit"))
    async with env.client(env.sock_a) as c:
        t0 = trio.current_time()
        r = await env.post(c, body())
    assert trio.current_time() - t0 >= 0.3  # retry-after honoured
    assert r.status_code == 200
    assert r.json()["content"][0]["text"] == "after the limit"
    assert [x.status for x in env.fake.message_requests] == [429, 200]
    assert env.proxy.usage("a").requests == 1


async def test_529_forever_passes_the_last_error_through(env: Env) -> None:
    async with env.client(env.sock_a) as c:
        r = await env.post(c, body("[[status:529]] please"))
        assert r.status_code == 529
        assert r.json()["error"]["type"] == "overloaded_error"
        assert len(env.fake.message_requests) == 4  # first try + 3 retries
        r = await env.post(c, body("fine now"))  # same connection still usable
        assert r.status_code == 200


async def test_no_retry_when_upstream_says_so(env: Env) -> None:
    env.fake.script(error_reply(429, retry_after=0), text_reply("x"))
    env.proxy.retries = 0
    async with env.client(env.sock_a) as c:
        r = await env.post(c, body())
    assert r.status_code == 429 and len(env.fake.message_requests) == 1


async def test_a_stalled_stream_is_cut_so_the_client_asks_again(env: Env) -> None:
    """No byte for stall_timeout in a streamed answer: the proxy cuts it (the CLI then retries)
    rather than leave the turn hanging until the turn timeout. A slow non-streamed answer is not cut."""
    env.proxy.stall_timeout = 0.5
    env.fake.script(stall(None), text_reply("second answer"))
    async with env.client(env.sock_a) as c:
        t0 = trio.current_time()
        got = b""
        with pytest.raises(httpx.TransportError):
            async with c.stream("POST", "/v1/messages", json=body(stream=True)) as r:
                assert r.status_code == 200
                async for chunk in r.aiter_raw():
                    got += chunk
        assert b"message_start" in got and 0.5 <= trio.current_time() - t0 < 5
        r = await env.post(c, body(stream=True))
        assert r.status_code == 200 and b"second answer" in r.content
    assert env.proxy.stalled == 1
    env.fake.script(stall(1.0, text="slow but whole"))
    async with env.client(env.sock_a) as c:
        r = await env.post(c, body())  # not streamed: the stall timeout does not apply
        assert r.status_code == 200 and "slow but whole" in r.text
    assert env.proxy.stalled == 1


async def test_drop_mid_stream_closes_client_and_keeps_serving(env: Env) -> None:
    env.fake.script(drop("never finished", after_events=4), text_reply("second answer"))
    async with env.client(env.sock_a) as c:
        got = b""
        with pytest.raises(httpx.TransportError):
            async with c.stream("POST", "/v1/messages", json=body(stream=True)) as r:
                assert r.status_code == 200
                async for chunk in r.aiter_raw():
                    got += chunk
        assert b"message_start" in got and b"message_stop" not in got
        r = await env.post(c, body(stream=True))
        assert r.status_code == 200 and b"second answer" in r.content
    assert env.proxy.usage("a").requests == 2
    assert env.proxy.usage("a").input_tokens > 0


async def test_unreachable_upstream_retries_then_502(tmp_path: Path, nursery: trio.Nursery) -> None:
    with trio.socket.socket() as s:  # a port nobody listens on
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proxy = ModelProxy(f"http://127.0.0.1:{port}", KEY, retries=2, backoff_base=0.01)
    sock = tmp_path / "m.sock"
    await nursery.start(proxy.serve_group, "g", sock, PH_A)
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(sock)), base_url="http://x",
                                 headers={"x-api-key": PH_A}) as c:
        r = await c.post("/v1/messages", json=body())
        assert r.status_code == 502
        assert r.json()["error"]["type"] == "api_error"
        assert KEY not in r.text
        r = await c.post("/v1/messages", json=body())
        assert r.status_code == 502
    await proxy.aclose()


# ------------------------------------------------------------------ HTTP details


async def test_keep_alive_three_requests_on_one_connection(env: Env) -> None:
    env.fake.script(text_reply("one"), text_reply("two", delay=0.01), text_reply("three"))
    stream = await trio.open_unix_socket(str(env.sock_a))
    conn = h11.Connection(h11.CLIENT)
    bodies = []
    async with stream:
        for i in range(3):
            payload = json.dumps(body(f"q{i}", stream=(i == 1))).encode()
            req = h11.Request(method="POST", target="/v1/messages", headers=[
                ("host", "model"), ("x-api-key", PH_A), ("content-type", "application/json"),
                ("content-length", str(len(payload)))])
            await stream.send_all(conn.send(req) + conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))
            status, data = None, b""
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(ev, h11.Response):
                    status = ev.status_code
                elif isinstance(ev, h11.Data):
                    data += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    break
                else:
                    raise AssertionError(ev)
            assert status == 200
            bodies.append(data)
            conn.start_next_cycle()
    env.seen.extend(bodies)
    assert b"one" in bodies[0] and b"two" in bodies[1] and b"three" in bodies[2]
    assert bodies[1].startswith(b"event: message_start")
    assert env.proxy.usage("a").requests == 3, (env.deltas, bodies)


async def test_chunked_request_body_and_body_cap(env: Env) -> None:
    payload = json.dumps(body("chunked " * 20)).encode()

    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 17):
            yield payload[i: i + 17]

    async with env.client(env.sock_a) as c:
        r = await c.post("/v1/messages", content=gen(), headers={"content-type": "application/json"})
        assert r.status_code == 200
    assert env.fake.requests[0].json["messages"][0]["content"] == "chunked " * 20

    env.proxy.max_body = 1000
    async with env.client(env.sock_a) as c:
        r = await env.post(c, body("x" * 2000))
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "request_too_large"
    async with env.client(env.sock_a) as c:
        big = json.dumps(body("y" * 2000)).encode()

        async def gen2() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 500):
                yield big[i: i + 500]

        try:
            r = await c.post("/v1/messages", content=gen2())
            assert r.status_code == 413
        except httpx.TransportError:
            pass  # the proxy may close before the client finished sending; either way no upstream call
    assert len(env.fake.requests) == 1


async def test_malformed_http_is_400(env: Env) -> None:
    stream = await trio.open_unix_socket(str(env.sock_a))
    async with stream:
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400")
    assert env.fake.requests == []


async def test_socket_file_mode_and_cleanup(tmp_path: Path) -> None:
    proxy = ModelProxy("http://127.0.0.1:9", KEY)
    long_dir = tmp_path / ("d" * 60) / ("e" * 60)
    for sock in (tmp_path / "short" / "model.sock", long_dir / "model.sock"):
        sock.parent.mkdir(parents=True, exist_ok=True)
        async with trio.open_nursery() as n:
            await n.start(proxy.serve_group, "g", sock, PH_A)
            st_ = sock.lstat()
            assert stat.S_ISSOCK(st_.st_mode) and stat.S_IMODE(st_.st_mode) == 0o666
            if len(os.fsencode(sock)) < 100:
                s = await trio.open_unix_socket(str(sock))
                await s.aclose()
            n.cancel_scope.cancel()
        assert not sock.exists()
    # a stale socket file left by a crash is replaced; a non-socket file is not touched
    stale = tmp_path / "short" / "model.sock"
    with trio.socket.socket(trio.socket.AF_UNIX) as s:
        await s.bind(str(stale))
    assert stale.exists()
    async with trio.open_nursery() as n:
        await n.start(proxy.serve_group, "g", stale, PH_A)
        s2 = await trio.open_unix_socket(str(stale))
        await s2.aclose()
        n.cancel_scope.cancel()
    assert not stale.exists()
    stale.write_text("not a socket")
    with pytest.raises(FileExistsError):
        await proxy.serve_group("g", stale, PH_A)
    assert stale.read_text() == "not a socket"
    with pytest.raises(ValueError):
        await proxy.serve_group("g", stale, KEY)
    with pytest.raises(ValueError):
        await proxy.serve_group("g", stale, "")
    await proxy.aclose()
    assert KEY not in repr(proxy)


# ------------------------------------------------------------------ the real key never leaks


async def _leaky_upstream(scope: dict, receive: Any, send: Any) -> None:
    """Echoes the x-api-key it got in a header and, split across chunks, in the body."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    key = dict(scope["headers"]).get(b"x-api-key", b"")
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"text/plain"), (b"x-echo", b"key=" + key)]})
    half = len(key) // 2
    for part in (b"your key " + key[:half], key[half:] + b" and again " + key, b" end"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
        await trio.sleep(0.01)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def test_real_key_is_masked_if_upstream_echoes_it(nursery: trio.Nursery, tmp_path: Path) -> None:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    binds = await nursery.start(serve, _leaky_upstream, config)
    proxy = ModelProxy(binds[0], KEY, retries=0)
    sock = tmp_path / "m.sock"
    await nursery.start(proxy.serve_group, "g", sock, PH_A)
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(sock)), base_url="http://x") as c:
        r = await c.post("/v1/messages", json=body(), headers={"x-api-key": PH_A})
    assert r.status_code == 400
    assert KEY.encode() not in r.content and KEY not in repr(r.headers.raw)
    assert r.headers["x-echo"] == "key=" + "*" * len(KEY)
    assert r.content.endswith(b" and again " + b"*" * len(KEY) + b" end")
    await proxy.aclose()


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.sampled_from([b"SECRET", b"SEC", b"RET", b"S", b"x", b"ab", b"SECRETSECRET", b"T"]), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=10),
)
def test_masker_never_lets_the_secret_through(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, last = [], 0
    for p in points + [len(data)]:
        chunks.append(data[last:p])
        last = p
    m = _Masker(b"SECRET")
    out = b"".join(m.mask(c) for c in chunks)
    assert len(out) == len(data)
    assert b"SECRET" not in out
    assert all(o == d or o == ord("*") for o, d in zip(out, data, strict=True))
    if len(chunks) == 1:
        assert out == data.replace(b"SECRET", b"******")


async def test_retry_after_is_capped_and_callback_errors_are_contained(env: Env) -> None:
    env.fake.script(error_reply(529, retry_after=1000), text_reply("patience"))
    env.proxy.max_retry_after = 0.2

    def boom(group: str, usage: Usage) -> None:
        raise RuntimeError("metrics broke")

    env.proxy.on_usage = boom
    async with env.client(env.sock_a) as c:
        with trio.fail_after(3):
            r = await env.post(c, body())
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "patience"
    assert env.proxy.usage("a").requests == 1


def test_retry_after_parsing() -> None:
    import email.utils
    import time as _time

    from ngb.sandbox.model_forward import retry_after as _retry_after

    assert _retry_after(httpx.Headers({"retry-after": "2.5"})) == 2.5
    assert _retry_after(httpx.Headers({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert _retry_after(httpx.Headers({"retry-after": "-3"})) == 0.0
    assert _retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert _retry_after(httpx.Headers({"retry-after": "nan"})) is None
    assert _retry_after(httpx.Headers({})) is None
    later = email.utils.formatdate(_time.time() + 20, usegmt=True)
    assert 15 < (_retry_after(httpx.Headers({"retry-after": later})) or 0) <= 20
