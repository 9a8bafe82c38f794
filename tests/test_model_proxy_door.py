"""The model proxy is a door, not a tunnel (issue 15, rows 3-5): only POST /v1/messages and POST
/v1/messages/count_tokens go upstream, matched on the exact raw path; the budget is checked for
every billed call; every billable usage field is counted and priced; and the socket's limits (key
from the head before any body byte, body size, connections, dribbling) hold before any trust.

The unit tests run the proxy in-process against the fake Anthropic API (tests/fakes/anthropic.py),
which records every request it gets: "never seen upstream" is `fake.requests` staying empty. The
Docker tests (marked) run the real daemon, the real agent image and the real CLI's path
(127.0.0.1:$NGB_MODEL_PORT in the container -> the runner -> model.sock)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from ngb.budgets import NANO, Budgets, PriceTable
from ngb.sandbox.model_proxy import ModelProxy, Usage
from ngb.store import Store
from tests.conftest import free_port, make_config
from tests.fakes.anthropic import FakeAnthropic, text_reply

KEY = "sk-ant-api03-REAL-secret-door-0123456789abcdef"
PH = "ngb-placeholder-door-group-xxxxxxxxxxxx"
ROOT = Path(__file__).resolve().parent.parent


def message(text: str = "hello", *, stream: bool = False, model: str = "claude-sonnet-4-5-20250929") -> bytes:
    return json.dumps({
        "model": model,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
        "tools": [{"name": "noop", "input_schema": {"type": "object"}}],
    }).encode()


def head(method: str, target: str, *, length: int | None, key: str | None = PH, extra: str = "") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "host: model", "anthropic-version: 2023-06-01",
             "content-type: application/json"]
    if key is not None:
        lines.append(f"x-api-key: {key}")
    if length is not None:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


class Raw:
    """A client that sends exactly the bytes it is given (httpx would normalise the targets)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    @classmethod
    async def open(cls, path: Path) -> Raw:
        return cls(await trio.open_unix_socket(str(path)))

    async def request(self, method: str, target: str, body: bytes = b"", **kw: Any) -> tuple[int, dict[str, str], Any]:
        await self.stream.send_all(head(method, target, length=len(body), **kw) + body)
        return await self.response()

    async def response(self) -> tuple[int, dict[str, str], Any]:
        while b"\r\n\r\n" not in self.buf:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError(bytes(self.buf))
            self.buf += data
        raw_head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        n = int(headers.get("content-length", "0"))
        while len(rest) < n:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError(rest)
            rest += data
        self.buf[:] = rest[n:]
        body = rest[:n]
        return int(lines[0].split()[1]), headers, json.loads(body) if body else None

    async def at_eof(self) -> bool:
        """True once the proxy closed the connection (what it sends meanwhile is dropped)."""
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return True
            if not data:
                return True

    async def aclose(self) -> None:
        await self.stream.aclose()


@attrs.define
class Door:
    fake: FakeAnthropic
    proxy: ModelProxy
    sock: Path
    admitted: list[str]
    refusals: list[tuple[str, str]]
    usage: list[Usage]
    budget_refusal: str | None = None


async def start_door(nursery: trio.Nursery, tmp_path: Path, **kw: Any) -> Door:
    fake = await FakeAnthropic.start(nursery)
    door = Door(fake, None, tmp_path / "run" / "g" / "model.sock", [], [], [])  # type: ignore[arg-type]

    def admit(group: str) -> str | None:
        door.admitted.append(group)
        return door.budget_refusal

    door.proxy = ModelProxy(fake.url, KEY, retries=0, admit=admit, on_usage=lambda g, u: door.usage.append(u),
                            on_refused=lambda g, why: door.refusals.append((g, why)), **kw)
    await nursery.start(door.proxy.serve_group, "g", door.sock, PH)
    return door


@pytest.fixture
async def door(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Door]:
    d = await start_door(nursery, tmp_path)
    yield d
    await d.proxy.aclose()


# ------------------------------------------------------------------ the door: routes


REFUSED = [
    # (method, target, reason)
    ("POST", "/v1/messages#/count_tokens", "fragment"),
    ("POST", "/v1/messages/count_tokens#x", "fragment"),
    ("POST", "/v1/messages%2Fcount_tokens", "encoded"),
    ("POST", "/v1/messages%2fcount_tokens", "encoded"),
    ("POST", "/v1/%6Dessages", "encoded"),
    ("POST", "/v1/messages%00", "encoded"),
    ("POST", "//v1/messages", "double_slash"),
    ("POST", "/v1//messages", "double_slash"),
    ("POST", "/v1/./messages", "dot_segment"),
    ("POST", "/v1/x/../messages", "dot_segment"),
    ("POST", "/v1/messages/", "variant"),
    ("POST", "/V1/Messages", "variant"),
    ("POST", "/v1/MESSAGES/count_tokens", "variant"),
    ("POST", "/v1/messages/batches", "path"),
    ("POST", "/v1/files", "path"),
    ("GET", "/v1/files", "path"),
    ("DELETE", "/v1/files/file_011CNha8iCJcU1wXNR6q4V8w", "path"),
    ("GET", "/v1/models", "path"),
    ("POST", "/v1/complete", "path"),
    ("GET", "/", "path"),
    ("POST", "http://api.anthropic.com/v1/messages", "not_a_path"),
    ("GET", "/v1/messages", "method"),
    ("PUT", "/v1/messages", "method"),
    ("DELETE", "/v1/messages/count_tokens", "method"),
    ("OPTIONS", "/v1/messages", "method"),
]


async def test_only_the_two_routes_go_upstream_everything_else_is_403(door: Door) -> None:
    c = await Raw.open(door.sock)
    for method, target, _reason in REFUSED:
        status, headers, err = await c.request(method, target, message("must not go upstream"))
        assert status == 403, (method, target, status, err)
        assert headers["content-type"] == "application/json"
        assert err["type"] == "error" and err["error"]["type"] == "permission_error", err
        assert "only POST /v1/messages and POST /v1/messages/count_tokens" in err["error"]["message"]
    # the same keep-alive connection still serves the real routes
    status, _, answer = await c.request("POST", "/v1/messages/count_tokens?beta=true", message("count me"))
    assert status == 200 and answer["input_tokens"] > 0
    status, _, answer = await c.request("POST", "/v1/messages?beta=true", message("answer me"))
    assert status == 200 and answer["content"][0]["text"] == "Echo: answer me"
    await c.aclose()
    seen = [(r.method, r.path, r.query) for r in door.fake.requests]
    assert seen == [("POST", "/v1/messages/count_tokens", "beta=true"), ("POST", "/v1/messages", "beta=true")]
    assert door.refusals == [("g", reason) for _m, _t, reason in REFUSED]
    assert door.proxy.refusals[("g", "fragment")] == 2


async def test_fragment_is_not_a_free_count_and_the_budget_guards_every_billed_call(door: Door) -> None:
    """Row 3: `POST /v1/messages#/count_tokens` was taken as the free count route, skipped the
    budget check and reached upstream as a billed /v1/messages."""
    door.budget_refusal = "You have reached your specified API usage limits: budget reached"
    c = await Raw.open(door.sock)
    status, _, err = await c.request("POST", "/v1/messages#/count_tokens", message("sneak"))
    assert status == 403 and err["error"]["type"] == "permission_error"
    assert door.fake.requests == []
    status, headers, err = await c.request("POST", "/v1/messages", message("over budget"))
    assert status == 400 and headers["x-should-retry"] == "false"
    assert err["error"]["type"] == "invalid_request_error" and "budget reached" in err["error"]["message"]
    assert door.fake.requests == []
    status, _, answer = await c.request("POST", "/v1/messages/count_tokens", message("free"))
    assert status == 200 and "input_tokens" in answer  # counting tokens costs nothing: never refused
    assert door.admitted == ["g"]  # asked once: for the billed call, not for the fragment or the count
    door.budget_refusal = None
    status, _, _ = await c.request("POST", "/v1/messages?beta=true", message("now fine"))
    assert status == 200
    assert door.admitted == ["g", "g"]
    assert [(r.method, r.path) for r in door.fake.requests] == [
        ("POST", "/v1/messages/count_tokens"), ("POST", "/v1/messages")]
    assert door.fake.requests[1].header("x-api-key") == KEY
    await c.aclose()


# ------------------------------------------------------------------ limits before trust


async def test_key_is_checked_from_the_head_before_any_body_byte(door: Door) -> None:
    """A wrong key with a 30 MiB Content-Length is answered at once, without waiting for (or
    reading) the body; so is a right key with a body over the limit (8 MiB by default)."""
    for key, status_wanted, kind in ((None, 401, "authentication_error"), ("nope", 401, "authentication_error"),
                                     (PH, 413, "request_too_large")):
        c = await Raw.open(door.sock)
        await c.stream.send_all(head("POST", "/v1/messages", length=30 * 1024 * 1024, key=key))
        await c.stream.send_all(b'{"model": "claude')  # and then nothing: the body never comes
        with trio.fail_after(10):  # a guard against hanging, not a timing claim
            status, headers, err = await c.response()
            assert status == status_wanted and err["error"]["type"] == kind, err
            assert headers["connection"] == "close"
            assert await c.at_eof()
        await c.aclose()
    assert door.proxy.max_body == 8 * 1024 * 1024
    assert "model_max_body_bytes" in err["error"]["message"]
    # a 403 route needs no body either
    c = await Raw.open(door.sock)
    await c.stream.send_all(head("POST", "/v1/files", length=30 * 1024 * 1024))
    with trio.fail_after(10):
        status, _, err = await c.response()
    assert status == 403
    await c.aclose()
    assert door.fake.requests == []
    assert [why for _g, why in door.refusals] == ["auth", "auth", "too_large", "path"]


async def test_a_chunked_body_is_cut_when_it_passes_the_limit(nursery: trio.Nursery, tmp_path: Path) -> None:
    d = await start_door(nursery, tmp_path, max_body=100_000)
    c = await Raw.open(d.sock)
    await c.stream.send_all(head("POST", "/v1/messages", length=None, extra="transfer-encoding: chunked\r\n"))
    chunk = b"x" * 16384
    sent = 0
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            async def pump() -> None:
                nonlocal sent
                try:
                    while True:  # an endless body: the proxy must stop it, not buffer it
                        await c.stream.send_all(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        sent += len(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            n.start_soon(pump)
            status, _, err = await c.response()
            n.cancel_scope.cancel()
    assert status == 413 and err["error"]["type"] == "request_too_large"
    assert d.fake.requests == []
    assert ("g", "too_large") in d.refusals
    await c.aclose()


async def test_connections_per_socket_are_bounded(nursery: trio.Nursery, tmp_path: Path) -> None:
    d = await start_door(nursery, tmp_path, max_connections=2, slot_wait=600)
    # Two connections in the middle of a request hold both slots...
    holders = [await Raw.open(d.sock) for _ in range(2)]
    for h in holders:
        await h.stream.send_all(head("POST", "/v1/messages", length=10_000))
    # ...two more wait for a slot (as many as there are slots)...
    waiters = [await Raw.open(d.sock) for _ in range(2)]
    for w in waiters:
        await w.stream.send_all(head("POST", "/v1/messages", length=len(message("waited"))) + message("waited"))
    await trio.testing.wait_all_tasks_blocked()
    # ...and one more is refused at once with a clear, Anthropic-shaped 429.
    extra = await Raw.open(d.sock)
    with trio.fail_after(10):
        status, headers, err = await extra.response()
    assert status == 429 and err["error"]["type"] == "rate_limit_error"
    assert "more than 2 connections" in err["error"]["message"] and headers["retry-after"] == "1"
    assert await extra.at_eof()
    assert d.fake.requests == []
    # A holder goes away: a waiter gets its slot and is served.
    await holders[0].aclose()
    with trio.fail_after(10):
        status, _, answer = await waiters[0].response()
    assert status == 200 and answer["content"][0]["text"] == "Echo: waited"
    assert d.refusals == [("g", "connections")]
    for c in (holders[1], waiters[1], waiters[0], extra):
        await c.aclose()


async def test_an_idle_keep_alive_connection_makes_room(nursery: trio.Nursery, tmp_path: Path) -> None:
    d = await start_door(nursery, tmp_path, max_connections=2, slot_wait=600)
    idle = []
    for i in range(2):
        c = await Raw.open(d.sock)
        status, _, _ = await c.request("POST", "/v1/messages", message(f"first {i}"))
        assert status == 200
        idle.append(c)  # kept open, between requests
    new = await Raw.open(d.sock)
    with trio.fail_after(10):
        status, _, answer = await new.request("POST", "/v1/messages", message("third"))
        assert status == 200 and answer["content"][0]["text"] == "Echo: third"
        assert await idle[0].at_eof()  # the oldest idle one was closed to make room
    assert d.refusals == []
    for c in (*idle, new):
        await c.aclose()


async def test_dribbling_connections_are_cut(nursery: trio.Nursery, tmp_path: Path, autojump_clock: Any) -> None:
    """Virtual time (autojump): the timeouts fire as soon as everything waits."""
    d = await start_door(nursery, tmp_path)
    with trio.fail_after(3600):  # virtual seconds: a proxy that never cuts fails here instead of hanging
        await _dribble(d)
    assert d.fake.requests == []
    assert [why for _g, why in d.refusals] == ["timeout"] * 4


async def _dribble(d: Door) -> None:
    # nothing at all after connecting
    silent = await Raw.open(d.sock)
    assert await silent.at_eof()
    # a head that never ends
    c = await Raw.open(d.sock)
    await c.stream.send_all(b"POST /v1/messages HTTP/1.1\r\nhost: model\r\nx-api-key: " + PH.encode())
    status, _, err = await c.response()
    assert status == 408 and err["error"]["type"] == "timeout_error"
    assert await c.at_eof()
    # a body that stops coming
    c = await Raw.open(d.sock)
    await c.stream.send_all(head("POST", "/v1/messages", length=5000) + b'{"model": ')
    start = trio.current_time()
    status, _, err = await c.response()
    assert status == 408 and trio.current_time() - start >= d.proxy.body_timeout
    # a body that trickles: a byte every 20 s keeps each wait under body_timeout, but the whole
    # body must arrive within body_deadline
    c = await Raw.open(d.sock)
    await c.stream.send_all(head("POST", "/v1/messages", length=5000))

    async def trickle() -> None:
        with trio.move_on_after(3600):
            while True:
                await trio.sleep(20)
                try:
                    await c.stream.send_all(b" ")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

    async with trio.open_nursery() as n:
        n.start_soon(trickle)
        status, _, err = await c.response()
        n.cancel_scope.cancel()
    assert status == 408 and err["error"]["type"] == "timeout_error"


# ------------------------------------------------------------------ usage: every billable field, priced


BILLED_USAGE = {
    "input_tokens": 1000,
    "cache_read_input_tokens": 20_000,
    "cache_creation_input_tokens": 3000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
    "output_tokens": 500,
    "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 2},
}


@pytest.mark.parametrize("stream", [False, True])
async def test_every_billable_usage_field_is_counted_and_priced(nursery: trio.Nursery, tmp_path: Path,
                                                                stream: bool) -> None:
    store = Store(tmp_path / "ngb.db")
    await store.open()
    budgets = Budgets(store, make_config(tmp_path), clock=lambda: datetime(2026, 11, 25, 10, tzinfo=UTC))
    await budgets.load()
    d = await start_door(nursery, tmp_path)
    d.proxy.on_usage = lambda g, u: (d.usage.append(u), budgets.record(g, u))
    d.fake.script(text_reply("searched", usage=BILLED_USAGE))
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(d.sock)), base_url="http://m") as c:
        r = await c.post("/v1/messages", content=message("search the web", stream=stream),
                         headers={"x-api-key": PH, "content-type": "application/json"})
    assert r.status_code == 200
    [u] = d.usage
    assert (u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens,
            u.cache_creation_1h_input_tokens, u.web_search_requests, u.web_fetch_requests) == (
        1000, 500, 20_000, 3000, 2000, 3, 2)
    # Sonnet 4.5: $3 input, $15 output, $0.30 cache read, $3.75 5-minute write, $6 1-hour write per
    # million tokens; web search $10 per 1000 requests; web fetch: only its tokens.
    want_usd = (1000 * 3 + 500 * 15 + 20_000 * 0.30 + 1000 * 3.75 + 2000 * 6) / 1e6 + 3 * 10 / 1000
    today, _month = budgets.spend("g")
    assert today.cost_nanos == round(want_usd * NANO) == 62_250_000
    assert PriceTable().cost("claude-sonnet-4-5", 1000, 500, 20_000, 3000, 2000, 3, 2) == today.cost_nanos
    await budgets.flush()
    again = Budgets(store, make_config(tmp_path), clock=budgets.clock)  # a restart prices the same
    await again.load()
    assert again.spend("g")[0].cost_nanos == today.cost_nanos
    assert again.spend("g")[0].web_search_requests == 3 and again.spend("g")[0].cache_creation_1h_tokens == 2000
    await store.close()
    await d.proxy.aclose()


def test_cache_write_split_and_server_tool_prices_are_configurable() -> None:
    from ngb.budgets import parse_model_prices

    prices = PriceTable(parse_model_prices({
        "my-model": {"input": 10, "output": 20},  # the API's multipliers by default
        "claude-haiku-4-5": {"web_search": 5, "cache_write_1h": 1.5},
    }))
    assert prices.describe()["my-model"] == {"input": 10.0, "output": 20.0, "cache_read": 1.0, "cache_write": 12.5,
                                             "cache_write_1h": 20.0, "web_search": 10.0, "web_fetch": 0.0}
    # 1000 cache-write tokens of which 400 for an hour, 2 searches
    assert prices.cost("claude-haiku-4-5", 0, 0, 0, 1000, 400, 2) == 600 * 1250 + 400 * 1500 + 2 * 5_000_000
    # a total without the split is priced as 5-minute writes (what older rows and APIs report)
    assert prices.cost("claude-haiku-4-5", 0, 0, 0, 1000) == 1000 * 1250
    with pytest.raises(ValueError, match="web_search must be a number of USD per 1000 requests"):
        parse_model_prices({"claude-haiku-4-5": {"web_search": -1}})


# ------------------------------------------------------------------ Docker: the real container and daemon


PROBE_CASES = [
    ("POST", "/v1/messages#/count_tokens"),
    ("POST", "/v1/messages%2Fcount_tokens"),
    ("POST", "/v1/messages%2fcount_tokens"),
    ("POST", "/v1/%6Dessages"),
    ("POST", "//v1/messages"),
    ("POST", "/v1/messages/"),
    ("POST", "/V1/Messages"),
    ("POST", "/v1/x/../messages"),
    ("GET", "/v1/files"),
    ("DELETE", "/v1/files/file_abc"),
    ("POST", "/v1/messages/batches"),
    ("GET", "/v1/models"),
    ("GET", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),  # the one allowed: a free count
]

# Runs inside the container (the Bash tool): raw HTTP to 127.0.0.1:$NGB_MODEL_PORT, the address the
# CLI uses, with the container's placeholder key read from the runner's environment.
PROBE = r'''
import glob, json, os, socket
key = ""
for path in glob.glob("/proc/[0-9]*/environ"):
    try:
        for item in open(path, "rb").read().split(b"\0"):
            if item.startswith(b"ANTHROPIC_API_KEY=ngb-placeholder-"):
                key = item.split(b"=", 1)[1].decode()
    except OSError:
        pass
port = int(os.environ.get("NGB_MODEL_PORT", "8787"))
body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 8,
                   "messages": [{"role": "user", "content": "PROBE-MARK"}]}).encode()
for method, target in CASES:
    s = socket.create_connection(("127.0.0.1", port))
    head = (f"{method} {target} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nx-api-key: {key}\r\n"
            f"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    s.sendall(head.encode() + body)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    top, _, rest = data.partition(b"\r\n\r\n")
    status = top.split(b" ")[1].decode() if top else "none"
    try:
        kind = json.loads(rest).get("error", {}).get("type", "ok")
    except ValueError:
        kind = "?"
    print("PROBE", method, target, status, kind)
print("PROBE-DONE")
'''


def tool_results(fake: FakeAnthropic) -> list[str]:
    out: list[str] = []
    for req in fake.message_requests:
        for msg in (req.json or {}).get("messages", []):
            content = msg.get("content")
            if isinstance(content, list):
                for block in content:
                    if block.get("type") == "tool_result":
                        inner = block.get("content")
                        out.append(" ".join(str(b.get("text", "")) for b in inner if isinstance(b, dict))
                                   if isinstance(inner, list) else str(inner))
    return out


@pytest.mark.docker
@pytest.mark.slow
async def test_from_inside_a_real_container_only_the_two_routes_reach_upstream(tmp_path: Path, agent_image: str) -> None:
    from ngb.daemon import Daemon

    token = "door-test-token-0123456789abcdef"
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        config = make_config(tmp_path, NGB_MODEL_UPSTREAM=fake.url, ANTHROPIC_API_KEY=KEY, NGB_IDLE_TIMEOUT="3",
                             NGB_INSTANCE=f"door{os.getpid()}", NGB_CONTAINER_MEMORY="768m", NGB_API_TOKEN=token)
        daemon = Daemon(config)
        await nursery.start(daemon.run)
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.web_port}", timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})
        script = "CASES = " + repr(PROBE_CASES) + "\n" + PROBE
        command = ("python -c \"import base64; exec(base64.b64decode('"
                   + base64.b64encode(script.encode()).decode() + "'))\"")
        r = await http.post("/api/chats/main/messages",
                            json={"sender": "alice", "text": f"[[tool:Bash {json.dumps({'command': command})}]]"})
        assert r.status_code == 202, r.text
        with trio.fail_after(180):
            while not any("PROBE-DONE" in t for t in tool_results(fake)):
                await trio.sleep(0.2)
        [probe] = [t for t in tool_results(fake) if "PROBE-DONE" in t]
        print(probe)
        lines = dict(re.findall(r"PROBE (\S+ \S+) (\S+ \S+)", probe))
        for method, target in PROBE_CASES[:-1]:
            assert lines[f"{method} {target}"] == "403 permission_error", (method, target, probe)
        assert lines["POST /v1/messages/count_tokens"] == "200 ok", probe
        # Upstream saw the CLI's own /v1/messages calls and the one count; no probe reached it otherwise.
        probe_calls = [(req.method, req.path) for req in fake.requests if "PROBE-MARK" in json.dumps(req.json)]
        assert probe_calls == [("POST", "/v1/messages/count_tokens")], probe_calls
        assert {(req.method, req.path) for req in fake.requests} <= {("POST", "/v1/messages"),
                                                                     ("POST", "/v1/messages/count_tokens")}
        metrics = (await http.get("/metrics")).text
        assert 'ngb_model_proxy_refused_total{group="main",reason="fragment"} 1.0' in metrics, metrics
        assert 'ngb_model_proxy_refused_total{group="main",reason="encoded"} 3.0' in metrics
        assert 'ngb_model_proxy_refused_total{group="main",reason="path"} 4.0' in metrics
        await http.aclose()
        nursery.cancel_scope.cancel()


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A real daemon process (`ngb run`), as a service manager would start it."""
    return subprocess.Popen([sys.executable, "-m", "ngb", "run", "--no-build"], cwd=ROOT, env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _rss_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":", 1)
            out[name] = int(value.split()[0])
    return out


@pytest.mark.docker
@pytest.mark.slow
async def test_twenty_unfinished_30mib_bodies_keep_the_daemon_small(tmp_path: Path, agent_image: str) -> None:
    """Row 5: the daemon (a real `ngb run` process) serves a real container's model socket; 20
    connections each send a head and push as much of the body as the proxy takes, never finishing
    it: half with the group's placeholder and Content-Length 30 MiB (over the limit), half with a
    wrong key and Content-Length 7 MiB (under it: only the key check from the head stops them).
    The daemon's resident memory must stay within 50 MB of idle."""
    import docker

    token = "door-test-token-0123456789abcdef"
    instance = f"rss{os.getpid()}"
    state = tmp_path / "state"
    port = free_port()
    log = tmp_path / "daemon.log"
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        env = dict(os.environ, NGB_STATE_DIR=str(state), NGB_WEB_PORT=str(port), NGB_MODEL_UPSTREAM=fake.url,
                   ANTHROPIC_API_KEY=KEY, NGB_INSTANCE=instance, NGB_IDLE_TIMEOUT="2", NGB_API_TOKEN=token,
                   NGB_MOUNT_ALLOWLIST=str(tmp_path / "none.toml"))
        proc = _spawn(env, log)
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})
        try:
            with trio.fail_after(60):
                while True:
                    assert proc.poll() is None, log.read_text()
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)
            # A turn that waits on the model keeps the container, and so its model socket, up.
            r = await http.post("/api/chats/main/messages", json={"sender": "alice", "text": "hold [[sleep:600]]"})
            assert r.status_code == 202, r.text
            with trio.fail_after(120):
                await fake.wait_for(lambda req: "hold" in req.last_user_text())
            [container] = docker.from_env().containers.list(filters={"label": f"ngb.instance={instance}"})
            env_list = container.attrs["Config"]["Env"]
            placeholder = next(e.split("=", 1)[1] for e in env_list if e.startswith("ANTHROPIC_API_KEY="))
            sock = state / "run" / "main" / "model.sock"
            assert sock.exists()

            idle = _rss_kib(proc.pid)
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
            sampled = [idle["VmRSS"]]
            mib = 1024 * 1024
            answers: list[str] = []

            async def one(done: trio.Event, key: str, total: int) -> None:
                stream = await trio.open_unix_socket(str(sock))
                request = (f"POST /v1/messages HTTP/1.1\r\nhost: m\r\nx-api-key: {key}\r\n"
                           f"content-type: application/json\r\ncontent-length: {total}\r\n\r\n").encode()

                async def push() -> None:
                    try:
                        await stream.send_all(request)
                        chunk = b"x" * (1024 * 1024)
                        for _ in range(total // mib - 1):
                            await stream.send_all(chunk)
                        await stream.send_all(chunk[:-1])  # all but the last byte: never finished
                        answers.append("took all but the last byte")
                        done.set()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass

                async def read() -> None:
                    data = b""
                    try:
                        while chunk := await stream.receive_some(65536):
                            data += chunk
                    except trio.BrokenResourceError:
                        pass
                    answers.append(data.split(b"\r\n", 1)[0].decode(errors="replace") or "closed")
                    done.set()

                async with trio.open_nursery() as n:
                    n.start_soon(push)
                    n.start_soon(read)
                    await done.wait()
                    held.append(stream)  # left open, unfinished, until the figures are taken
                    n.cancel_scope.cancel()

            async def sample(stop: trio.Event) -> None:
                while not stop.is_set():
                    sampled.append(_rss_kib(proc.pid)["VmRSS"])
                    await trio.sleep(0.02)

            held: list[trio.SocketStream] = []
            stop = trio.Event()
            dones = [trio.Event() for _ in range(20)]
            async with trio.open_nursery() as n:
                n.start_soon(sample, stop)
                async with trio.open_nursery() as clients:
                    for i, done in enumerate(dones):
                        if i % 2:
                            clients.start_soon(one, done, "ngb-placeholder-of-nobody", 7 * mib)
                        else:
                            clients.start_soon(one, done, placeholder, 30 * mib)
                stop.set()
            after = _rss_kib(proc.pid)
            peak = max(after["VmHWM"], *sampled)
            print(f"\ndaemon RSS idle {idle['VmRSS'] / 1024:.1f} MiB, peak during 20 unfinished bodies (10 x 30 MiB, 10 x 7 MiB) "
                  f"{peak / 1024:.1f} MiB (+{(peak - idle['VmRSS']) / 1024:.1f} MiB), after {after['VmRSS'] / 1024:.1f} MiB")
            print("answers:", sorted(set(answers)), {a: answers.count(a) for a in set(answers)})
            for s in held:
                await s.aclose()
            assert (peak - idle["VmRSS"]) < 50 * 1024, "the daemon buffered the unfinished bodies"
            assert all(a.startswith(("HTTP/1.1 413", "HTTP/1.1 401", "HTTP/1.1 429")) for a in answers), answers
            assert (await http.get("/healthz")).status_code == 200  # and it keeps answering
            assert not any(req.path == "/v1/messages" and req.json is None for req in fake.requests)
        finally:
            await http.aclose()
            proc.terminate()
            with trio.move_on_after(30):
                while proc.poll() is None:
                    await trio.sleep(0.1)
            if proc.poll() is None:
                proc.kill()
            for c in docker.from_env().containers.list(all=True, filters={"label": f"ngb.instance={instance}"}):
                c.remove(force=True)
            nursery.cancel_scope.cancel()
