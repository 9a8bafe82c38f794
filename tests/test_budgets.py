"""Usage, cost and spending caps (ngb/budgets.py, the model proxy's admit hook, /status, /api/usage,
/api/budgets, `ngb usage`, `ngb budget`), against the fake Anthropic API (tests/fakes/anthropic.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from ngb import cli
from ngb.budgets import GLOBAL, NANO, Budgets, PriceTable, nanos, parse_model_prices, write_usage
from ngb.config import ConfigError, load_config
from ngb.sandbox.model_proxy import ModelProxy, Usage
from ngb.sandbox.model_usage import UsageMeter as _UsageMeter
from ngb.sandbox.model_usage import finish_usage as _finish
from ngb.store import Store
from tests.conftest import make_config
from tests.fakes.anthropic import FakeAnthropic

KEY = "sk-ant-api03-REAL-secret-budget-0123456789"
PH = "ngb-placeholder-budget-group-xxxxxxxx"
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def body(text: str = "hello", *, stream: bool = True, model: str = "claude-sonnet-4-5-20250929") -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
        "tools": [{"name": "noop", "input_schema": {"type": "object"}}],
    }


# ------------------------------------------------------------------ prices and config


def test_price_lookup_and_cost_math() -> None:
    prices = PriceTable()
    assert prices.key("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert prices.key("claude-opus-4-5") == "claude-opus-4-5"
    assert prices.key("claude-opus-4-1-20250805") == "claude-opus-4-1"
    assert prices.key("claude-opus-4-20250514") == "claude-opus-4-20250514"
    assert prices.key("claude-opus-4-6") == "claude-opus"  # a newer opus: the family price
    assert prices.key("claude-3-5-haiku-20241022") == "claude-3-5-haiku"
    assert prices.key("us.anthropic.claude-haiku-4-5-20251001-v1:0") == "claude-haiku-4-5"
    assert prices.key("claude-sonnet-4-5@20250929") == "claude-sonnet-4-5"
    assert prices.key("some-local-model") == "default"
    assert prices.key("") == "default"
    # 1000 input, 500 output, 2000 cache read, 100 cache write at $3 / $15 / $0.30 / $3.75 per million
    cost = prices.cost("claude-sonnet-4-5", 1000, 500, 2000, 100)
    assert cost == 1000 * 3000 + 500 * 15000 + 2000 * 300 + 100 * 3750 == 11_475_000
    assert cost / NANO == pytest.approx(0.011475)
    assert prices.cost("claude-opus-4-5", 1_000_000, 1_000_000, 0, 0) == 30 * NANO
    assert prices.cost("claude-3-haiku-20240307", 0, 0, 1_000_000, 1_000_000) == nanos(0.03 + 0.30)


def test_price_overrides_from_config() -> None:
    prices = PriceTable(parse_model_prices({
        "claude-sonnet-4-5": {"input": 2},  # partial: the rest from the built-in price
        "my-model": {"input": 10, "output": 20},  # new: cache prices from the input price
        "default": {"input": 100, "output": 200, "cache_read": 1, "cache_write": 2},
    }))
    assert prices.describe()["claude-sonnet-4-5"] == {"input": 2.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75,
                                                      "cache_write_1h": 6.0, "web_search": 10.0, "web_fetch": 0.0}
    assert prices.describe()["my-model"] == {"input": 10.0, "output": 20.0, "cache_read": 1.0, "cache_write": 12.5,
                                             "cache_write_1h": 20.0, "web_search": 10.0, "web_fetch": 0.0}
    assert prices.key("my-model-2026") == "my-model"
    assert prices.cost("mystery", 1_000_000, 0, 0, 0) == 100 * NANO


def test_bad_price_and_budget_config_is_one_line(tmp_path: Path) -> None:
    cases = {
        '[model_prices.claude-x]\ninput = "cheap"\noutput = 1\n': 'claude-x.input must be a number of USD per million tokens >= 0, got "cheap"',
        "[model_prices.claude-x]\ninptu = 1\n": 'claude-x.inptu is not a price field (did you mean "input"?)',
        "[model_prices.new-model]\ninput = 1\n": "new-model needs at least input and output",
        "[model_prices.claude-x]\ninput = -1\noutput = 1\n": "claude-x.input must be a number",
        'model_prices = "x"\n': "must be a table of",
        "budget_daily_usd = -5\n": "budget_daily_usd in",
        'budget_monthly_usd = "lots"\n': "must be an amount of US dollars",
    }
    for i, (text, expected) in enumerate(cases.items()):
        path = tmp_path / f"c{i}.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path, env={})
        message = str(info.value)
        assert "\n" not in message and expected in message, (text, message)
    good = tmp_path / "good.toml"
    good.write_text(
        'budget_daily_usd = 2.5\nbudget_global_monthly_usd = "100"\n'
        '[model_prices."claude-sonnet-4-5"]\ninput = 2.0\noutput = 10\ncache_read = 0.2\ncache_write = 2.5\n'
    )
    config = load_config(good, env={"NGB_BUDGET_MONTHLY_USD": "40"})
    assert (config.budget_daily_usd, config.budget_monthly_usd, config.budget_global_monthly_usd) == (2.5, 40.0, 100.0)
    assert config.model_prices == {"claude-sonnet-4-5": {"input": 2.0, "output": 10.0, "cache_read": 0.2, "cache_write": 2.5}}
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"NGB_MODEL_PRICES": "{not json"})
    assert str(info.value) == "NGB_MODEL_PRICES: must be a JSON object of model tables, got invalid JSON"


# ------------------------------------------------------------------ usage rows


class Clock:
    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def usage(i: int, o: int, cr: int = 0, cw: int = 0, model: str = "claude-sonnet-4-5-20250929") -> Usage:
    return Usage(i, o, cr, cw, 1, model=model)


async def open_store(path: Path) -> Store:
    store = Store(path)
    await store.open()
    return store


async def test_usage_rows_per_day_group_and_model_upsert_added(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "ngb.db")
    assert store.schema_version >= 5
    clock = Clock()
    b = Budgets(store, make_config(tmp_path), clock=clock)
    await b.load()
    b.record("a", usage(100, 10))
    b.record("a", usage(50, 5, 7, 3))
    b.record("a", usage(1, 1, model="claude-opus-4-5"))
    b.record("b", usage(2, 2))
    await b.flush()
    b.record("a", usage(1000, 100))  # a second flush adds to the same row
    clock.at = T0 + timedelta(days=1)
    b.record("a", usage(9, 9))
    await b.flush()
    columns = "day, folder, model, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, requests"
    rows = await store.run(lambda c: [dict(r) for r in c.execute(f"SELECT {columns} FROM usage ORDER BY day, folder, model")])
    assert rows == [
        {"day": "2026-11-25", "folder": "a", "model": "claude-opus-4-5", "input_tokens": 1, "output_tokens": 1,
         "cache_read_tokens": 0, "cache_creation_tokens": 0, "requests": 1},
        {"day": "2026-11-25", "folder": "a", "model": "claude-sonnet-4-5-20250929", "input_tokens": 1150,
         "output_tokens": 115, "cache_read_tokens": 7, "cache_creation_tokens": 3, "requests": 3},
        {"day": "2026-11-25", "folder": "b", "model": "claude-sonnet-4-5-20250929", "input_tokens": 2,
         "output_tokens": 2, "cache_read_tokens": 0, "cache_creation_tokens": 0, "requests": 1},
        {"day": "2026-11-26", "folder": "a", "model": "claude-sonnet-4-5-20250929", "input_tokens": 9,
         "output_tokens": 9, "cache_read_tokens": 0, "cache_creation_tokens": 0, "requests": 1},
    ]
    today, month = b.spend("a")
    assert today.requests == 1 and month.requests == 5
    assert month.cost_nanos == PriceTable().cost("claude-sonnet-4-5", 1159, 124, 7, 3) + PriceTable().cost(
        "claude-opus-4-5", 1, 1, 0, 0)
    # a restart reads this month back: the tallies are the same
    again = Budgets(store, make_config(tmp_path), clock=clock)
    await again.load()
    assert again.spend("a") == b.spend("a") and again.spend(GLOBAL) == b.spend(GLOBAL)
    await store.close()


async def test_a_failed_flush_keeps_the_rows_for_the_next_one(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "ngb.db")
    b = Budgets(store, make_config(tmp_path), clock=Clock())
    await b.load()
    b.record("a", usage(5, 5))
    real = store.run

    async def broken(fn: Any) -> Any:
        raise RuntimeError("disk on fire")

    store.run = broken  # type: ignore[method-assign]
    await b.flush()
    assert b.write_errors == 1
    b.record("a", usage(1, 1))
    store.run = real  # type: ignore[method-assign]
    await b.flush()
    rows = await store.run(lambda c: [tuple(r) for r in c.execute("SELECT input_tokens, requests FROM usage")])
    assert rows == [(6, 2)]
    await store.close()


def test_the_meter_names_the_model() -> None:
    meter = _UsageMeter("text/event-stream")
    meter.feed(b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-haiku-4-5",'
               b'"usage":{"input_tokens":5,"output_tokens":1}}}\n\n')
    assert meter.finish().model == "claude-haiku-4-5"
    meter = _UsageMeter("application/json")
    meter.feed(b'{"usage": {"input_tokens": 1, "output_tokens": 2}}')  # a gateway that names no model
    got = _finish(meter, b'{"model": "claude-opus-4-5", "messages": [{"role": "user", "content": "\\"model\\": \\"x\\""}]}')
    assert got.model == "claude-opus-4-5" and got.input_tokens == 1 and got == Usage(1, 2, 0, 0, 1)


# ------------------------------------------------------------------ caps at the proxy


@attrs.define
class Env:
    fake: FakeAnthropic
    proxy: ModelProxy
    budgets: Budgets
    store: Store
    clock: Clock
    sock: Path
    notices: list[tuple[str, str]]
    deltas: list[Usage]

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(self.sock)),
            base_url="http://model",
            headers={"x-api-key": PH, "anthropic-version": "2023-06-01"},
            timeout=10,
        )

    async def call(self, text: str = "hello", **kw: Any) -> httpx.Response:
        async with self.client() as c:
            r = await c.post("/v1/messages?beta=true", json=body(text, **kw))
            await r.aread()
            return r

    async def settle(self) -> None:
        """Let the notice loop run."""
        for _ in range(20):
            await trio.sleep(0.01)


@pytest.fixture
async def env(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Env]:
    fake = await FakeAnthropic.start(nursery)
    store = await open_store(tmp_path / "ngb.db")
    clock = Clock()
    notices: list[tuple[str, str]] = []
    budgets = Budgets(store, make_config(tmp_path), notify=lambda f, t: notices.append((f, t)), clock=clock,
                      flush_interval=0.05)
    deltas: list[Usage] = []

    def on_usage(group: str, u: Usage) -> None:
        deltas.append(u)
        budgets.record(group, u)

    proxy = ModelProxy(fake.url, KEY, retries=0, on_usage=on_usage, admit=budgets.admit)
    await nursery.start(budgets.run)
    sock = tmp_path / "run" / "fam" / "model.sock"
    await nursery.start(proxy.serve_group, "fam", sock, PH)
    yield Env(fake, proxy, budgets, store, clock, sock, notices, deltas)
    await proxy.aclose()


async def test_model_name_comes_from_the_response_or_the_request(env: Env) -> None:
    assert (await env.call("streamed")).status_code == 200
    assert (await env.call("plain", stream=False, model="claude-opus-4-5")).status_code == 200
    assert [d.model for d in env.deltas] == ["claude-sonnet-4-5-20250929", "claude-opus-4-5"]
    await env.budgets.flush()
    models = await env.store.run(lambda c: [r[0] for r in c.execute("SELECT model FROM usage ORDER BY model")])
    assert models == ["claude-opus-4-5", "claude-sonnet-4-5-20250929"]


async def test_daily_cap_stops_calls_exactly_at_the_cap(env: Env) -> None:
    assert (await env.call()).status_code == 200
    one = env.budgets.spend("fam")[0].cost_nanos
    assert one > 0
    # the cap is exactly two calls' cost: the second call starts under it, the third at it
    await env.budgets.set_caps("fam", daily=2 * one / NANO)
    assert (await env.call()).status_code == 200
    assert env.budgets.spend("fam")[0].cost_nanos == 2 * one
    upstream = len(env.fake.requests)
    for _ in range(3):
        r = await env.call()
        assert r.status_code == 400
        assert r.headers["x-should-retry"] == "false"
        err = r.json()
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
        assert "budget reached" in err["error"]["message"] and "today" in err["error"]["message"]
    # concurrent callers once the cap is reached: none of them gets through
    async with trio.open_nursery() as n:
        for _ in range(8):
            n.start_soon(env.call)
    assert len(env.fake.requests) == upstream, "a call went upstream past the cap"
    assert env.proxy.refused_budget["fam"] == 11 and env.budgets.refused["fam"] == 11
    # free requests still pass (token counting costs nothing)
    async with env.client() as c:
        assert (await c.post("/v1/messages/count_tokens", json=body())).status_code == 200
    await env.settle()
    assert len(env.notices) == 1, env.notices
    folder, text = env.notices[0]
    assert folder == "fam"
    spent = f"${2 * one / NANO:.6f}".rstrip("0")
    assert text.startswith(f"⚠️ budget reached: {spent}") and "today for this group" in text, text
    assert "resets at 2026-11-26 00:00 UTC" in text and "ngb budget fam --daily" in text


async def test_next_period_and_a_raised_cap_let_calls_through(env: Env) -> None:
    await env.budgets.set_caps("fam", daily=0.000001)  # one call is enough to reach it
    assert (await env.call()).status_code == 200
    assert (await env.call()).status_code == 400
    # raised: in force for the next call, no restart
    await env.budgets.set_caps("fam", daily=100)
    assert (await env.call()).status_code == 200
    # lowered again and reached: a notice for the new cap (the first was for the old one)
    await env.budgets.set_caps("fam", daily=0.000002)
    assert (await env.call()).status_code == 400
    assert (await env.call()).status_code == 400
    await env.settle()
    assert len(env.notices) == 2
    # the next UTC day: the daily spend starts again at zero
    env.clock.at = T0 + timedelta(days=1)
    assert (await env.call()).status_code == 200
    assert (await env.call()).status_code == 400
    await env.settle()
    assert len(env.notices) == 3 and "resets at 2026-11-27 00:00 UTC" in env.notices[-1][1]
    # back to the config default (no cap)
    await env.budgets.set_caps("fam", daily=None)
    assert (await env.call()).status_code == 200


async def test_monthly_and_global_caps(env: Env) -> None:
    assert (await env.call()).status_code == 200
    one = env.budgets.spend("fam")[1].cost_nanos
    await env.budgets.set_caps("fam", monthly=one / NANO)
    r = await env.call()
    assert r.status_code == 400 and "this month for this group" in r.json()["error"]["message"]
    env.clock.at = T0 + timedelta(days=3)  # a new day does not reset a monthly cap
    assert (await env.call()).status_code == 400
    env.clock.at = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)  # a new month does
    assert (await env.call()).status_code == 200
    await env.budgets.set_caps("fam", monthly=None)
    await env.budgets.set_caps(GLOBAL, daily=one / NANO)
    r = await env.call()
    assert r.status_code == 400 and "across all groups" in r.json()["error"]["message"]
    assert "ngb budget --global --daily" in r.json()["error"]["message"]
    await env.settle()
    assert [t.split(":")[0] for _, t in env.notices] == ["⚠️ budget reached"] * 2
    assert "this month" in env.notices[0][1] and "resets at 2026-12-01 00:00 UTC" in env.notices[0][1]
    assert "today across all groups" in env.notices[1][1] and "resets at 2026-12-02 00:00 UTC" in env.notices[1][1]


async def test_a_call_in_flight_finishes_and_is_counted(env: Env) -> None:
    """Semantics: a call admitted under the cap is not cut off when another call reaches the cap
    meanwhile; it finishes and counts. Calls that start after that are refused."""
    env.fake.script({"kind": "text", "text": "slow answer " * 5, "delay": 0.05, "chunk": 8})
    assert (await env.call()).status_code == 200
    one = env.budgets.spend("fam")[0].cost_nanos
    await env.budgets.set_caps("fam", daily=1.5 * one / NANO)
    results: list[int] = []

    async def slow() -> None:
        env.fake.script({"kind": "text", "text": "slow answer " * 5, "delay": 0.05, "chunk": 8})
        results.append((await env.call()).status_code)

    async with trio.open_nursery() as n:
        n.start_soon(slow)
        n.start_soon(slow)
    assert results == [200, 200]  # both started under the cap
    assert env.budgets.spend("fam")[0].cost_nanos > 1.5 * one  # the overshoot is what was in flight
    before = len(env.fake.requests)
    assert (await env.call()).status_code == 400
    assert len(env.fake.requests) == before


async def test_notice_is_not_repeated_after_a_restart(env: Env, tmp_path: Path) -> None:
    await env.budgets.set_caps("fam", daily=0.000001)
    await env.call()
    assert (await env.call()).status_code == 400
    await env.settle()
    assert len(env.notices) == 1
    await env.budgets.flush()
    notices: list[tuple[str, str]] = []
    again = Budgets(env.store, make_config(tmp_path), notify=lambda f, t: notices.append((f, t)), clock=env.clock)
    async with trio.open_nursery() as n:
        await n.start(again.run)
        assert again.admit("fam") is not None  # still over its cap after the restart
        await env.settle()
        n.cancel_scope.cancel()
    assert notices == []


async def test_no_budget_no_refusal_and_a_broken_check_refuses(env: Env) -> None:
    for _ in range(3):
        assert (await env.call()).status_code == 200

    def broken(group: str) -> str | None:
        raise RuntimeError("bug")

    env.proxy.admit = broken
    before = len(env.fake.requests)
    assert (await env.call()).status_code == 400
    assert len(env.fake.requests) == before


# ------------------------------------------------------------------ the daemon: chat, /status, API


async def test_daemon_notice_status_and_api(run_daemon, nursery: trio.Nursery) -> None:
    fake = await FakeAnthropic.start(nursery)
    d = await run_daemon(NGB_MODEL_UPSTREAM=fake.url, NGB_ANTHROPIC_API_KEY=KEY, NGB_BUDGET_DAILY_USD="0.000001")
    daemon = d.daemon
    sock = daemon.config.run_dir / "main" / "model.sock"
    await nursery.start(daemon.proxy.serve_group, "main", sock, PH)

    async def call() -> int:
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(sock)), base_url="http://model",
                                     headers={"x-api-key": PH}, timeout=10) as c:
            return (await c.post("/v1/messages", json=body())).status_code

    assert await call() == 200
    assert [await call() for _ in range(4)] == [400] * 4
    assert len(fake.requests) == 1
    with trio.fail_after(5):
        while not [m for m in await d.history("main") if m["from_bot"]]:
            await trio.sleep(0.02)
    await trio.sleep(0.3)
    bot = [m for m in await d.history("main") if m["from_bot"]]
    assert len(bot) == 1 and bot[0]["text"].startswith("⚠️ budget reached: $") and "today" in bot[0]["text"], bot

    status = (await d.http.get("/status")).json()
    usage = status["usage"]
    main = usage["groups"]["main"]
    assert main["today"]["requests"] == 1 and main["today"]["cost_usd"] > 0
    assert main["month"] == main["today"] and main["daily_cap_usd"] == 0.000001 and main["monthly_cap_usd"] is None
    assert main["blocked"] == "daily" and main["refused_calls"] == 4
    assert usage["total"]["today"] == main["today"] and usage["total"]["daily_cap_usd"] is None
    assert usage["day"] == datetime.now(UTC).strftime("%Y-%m-%d")

    r = await d.http.get("/api/usage", params={"days": 2})
    assert r.status_code == 200
    rep = r.json()
    assert [(x["folder"], x["model"], x["requests"]) for x in rep["rows"]] == [("main", "claude-sonnet-4-5-20250929", 1)]
    assert rep["total"]["cost_usd"] == main["today"]["cost_usd"]

    # raise the cap through the API: the next call goes through, no restart
    r = await d.http.patch("/api/budgets/main", json={"daily_usd": 50})
    assert r.status_code == 200 and r.json()["daily_usd"] == 50 and r.json()["override"]["daily_usd"] == 50
    assert await call() == 200
    r = await d.http.patch("/api/budgets/global", json={"monthly_usd": 0.000001})
    assert r.status_code == 200 and r.json()["monthly_usd"] == 0.000001
    assert await call() == 400
    got = (await d.http.get("/api/budgets")).json()
    assert got["global"]["override"] == {"daily_usd": None, "monthly_usd": 0.000001}
    assert got["groups"]["main"]["daily_usd"] == 50 and got["defaults"]["daily_usd"] == 0.000001
    assert got["prices"]["claude-sonnet-4-5"]["output"] == 15.0
    for bad in ({"daily_usd": -1}, {"daily_usd": "5"}, {}, {"weekly_usd": 1}):
        r = await d.http.patch("/api/budgets/main", json=bad)
        assert r.status_code == 400, (bad, r.text)
    assert (await d.http.patch("/api/budgets/nope", json={"daily_usd": 1})).status_code == 404
    assert (await d.http.get("/api/usage", params={"days": 0})).status_code == 400


# ------------------------------------------------------------------ the CLI


def seed(state: Path) -> None:
    store = Store(state / "ngb.db")
    store.open_sync()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    old = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%d")
    store.run_sync(lambda c: write_usage(c, [
        (today, "fam", "claude-sonnet-4-5-20250929", 1000, 500, 2000, 100, 2),
        (today, "main", "claude-opus-4-5", 100_000, 1000, 0, 0, 1),
        (old, "fam", "claude-haiku-4-5", 10, 10, 0, 0, 1),
    ]))
    store.run_sync(lambda c: c.execute(
        "INSERT INTO groups (chat, folder, added_at) VALUES ('local:fam', 'fam', '2026-01-01T00:00:00+00:00')"))
    store.close_sync()


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("NGB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NGB_WEB_PORT", "1")  # no daemon there: the CLI uses the database
    monkeypatch.setenv("NGB_BUDGET_MONTHLY_USD", "20")
    monkeypatch.delenv("NGB_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ngb_usage(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(monkeypatch, capsys, tmp_path, "usage")
    assert code == 1 and "nothing recorded yet" in err
    (tmp_path / "state").mkdir()
    seed(tmp_path / "state")
    code, out, _ = run_cli(monkeypatch, capsys, tmp_path, "usage")
    assert code == 0
    lines = out.splitlines()
    fam = next(line for line in lines if " fam " in line and line.strip()[0].isdigit())
    # 1000*3 + 500*15 + 2000*0.3 + 100*3.75 = 11475 millionths of a dollar
    assert fam.split()[2:] == ["2", "1000", "500", "2000", "100", "$0.01"], fam
    assert any(line.split()[:2] == ["total", "3"] for line in lines), out
    assert "fam              today $0.01 (no cap), month $0.01 of $20.00" in out
    assert "all groups" in out
    code, out, _ = run_cli(monkeypatch, capsys, tmp_path, "usage", "--json", "--days", "30", "--group", "fam")
    data = json.loads(out)
    assert [r["model"] for r in data["rows"]] == ["claude-haiku-4-5", "claude-sonnet-4-5-20250929"]
    assert data["groups"]["fam"]["requests"] == 3
    assert data["rows"][1]["cost_usd"] == 0.011475 and data["rows"][1]["price"] == "claude-sonnet-4-5"
    assert list(data["spend"]["groups"]) == ["fam"]
    assert data["spend"]["groups"]["fam"]["monthly_cap_usd"] == 20


def test_ngb_budget(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    seed(tmp_path / "state")
    code, out, _ = run_cli(monkeypatch, capsys, tmp_path, "budget", "fam", "--daily", "5", "--monthly", "none")
    assert code == 0 and "daily $5 (set for it), monthly none (set for it)" in out, out
    code, out, _ = run_cli(monkeypatch, capsys, tmp_path, "budget", "--global", "--daily", "1.5", "--json")
    assert json.loads(out)["global"]["daily_cap_usd"] == 1.5
    code, out, _ = run_cli(monkeypatch, capsys, tmp_path, "budget", "fam", "--monthly", "default")
    assert "monthly $20 (config default)" in out
    code, _, err = run_cli(monkeypatch, capsys, tmp_path, "budget", "nope", "--daily", "1")
    assert code == 1 and "no group with folder 'nope'" in err
    code, out, _ = run_cli(monkeypatch, capsys, tmp_path, "budget")
    assert "fam:" in out and "main:" in out and "global:" in out
    store = Store(tmp_path / "state" / "ngb.db")
    store.open_sync()
    caps = store.run_sync(lambda c: {r[0]: (r[1], r[2]) for r in c.execute("SELECT * FROM budget_caps")})
    store.close_sync()
    assert caps == {"fam": (5.0, None), "*": (1.5, None)}


async def test_ngb_budget_goes_through_a_running_daemon(run_daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    d = await run_daemon()
    config = d.daemon.config
    monkeypatch.setenv("NGB_STATE_DIR", str(config.state_dir))
    monkeypatch.setenv("NGB_WEB_PORT", str(config.web_port))
    monkeypatch.delenv("NGB_CONFIG", raising=False)
    code = await trio.to_thread.run_sync(cli.main, ["budget", "main", "--daily", "7.5"])
    assert code == 0
    assert d.daemon.budgets.caps("main").daily == 7.5  # in force at once, no restart
    code = await trio.to_thread.run_sync(cli.main, ["usage", "--days", "1"])
    assert code == 0


async def test_a_group_over_its_cap_gets_no_turn_and_one_notice(run_daemon) -> None:
    """Over the cap, a message starts no container and brings no "could not answer" message: the
    chat sees the one budget notice. Raising the cap answers the next message."""
    from ngb.sandbox.model_proxy import Usage

    d = await run_daemon(NGB_BUDGET_DAILY_USD="0.01")
    await d.post("main", "first")
    await d.wait_bot_replies("main", 1)
    started = d.launcher.started
    d.daemon.budgets.record("main", Usage(input_tokens=0, output_tokens=10_000, requests=1, model="claude-sonnet-4-5"))
    for text in ("second", "third"):
        await d.post("main", text)
    with trio.fail_after(5):
        while len([m for m in await d.history("main") if m["from_bot"]]) < 2:
            await trio.sleep(0.02)
    await trio.sleep(0.5)
    bot = [m["text"] for m in await d.history("main") if m["from_bot"]]
    assert len(bot) == 2 and bot[1].startswith("⚠️ budget reached: $"), bot
    assert d.launcher.started == started  # no container for a turn that could not call the model
    r = await d.http.patch("/api/budgets/main", json={"daily_usd": 50})
    assert r.status_code == 200
    await d.post("main", "fourth")
    replies = await d.wait_bot_replies("main", 3)
    assert replies[-1]["text"] == "Echo: fourth"  # the earlier two were seen while over the cap, not answered
