"""Token usage per group per UTC day, its price, and spending caps (docs/budgets.md).

The model proxy reports every response's usage (`Budgets.record`, synchronous, no I/O): the
counts go into in-memory tallies (per group and in total, for today and this month) at once, and
into a pending batch that `Budgets.run` writes to the `usage` table once a second, in one
transaction (upsert-add per day, group and model). So the proxy's relay never waits for the disk,
and the caps always see every response counted so far.

Money is counted in integer nano-dollars (prices are USD per million tokens, so a price is nano-USD
per token, rounded to 0.001 USD per million): sums and cap comparisons are exact.

Caps: a daily and a monthly cap per group (a per-group override from the `budget_caps` table, set
through the API or `ngb budget`, else the config default) and a global daily and monthly cap over
all groups. `Budgets.admit` runs before the proxy forwards a request that costs money: once the
recorded spend of a period is at or over its cap the call is refused, and the group's chat gets one
notice per group, cap and period (remembered in `budget_notices`, so a restart does not repeat it).
Calls already forwarded are never cut off: they finish and are counted, so the spend can end up
above the cap by what the calls in flight at that moment cost, but no call starts once the
recorded spend has reached the cap.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .prices import (  # noqa: F401 - re-exported: ngb.budgets is where callers find them
    DEFAULT_PRICES,
    FALLBACK,
    MAX_PRICE,
    MAX_USD,
    PER_REQUEST_PRICES,
    PRICE_FIELDS,
    WEB_FETCH_USD_PER_1000,
    WEB_SEARCH_USD_PER_1000,
    parse_model_prices,
    parse_usd,
)

if TYPE_CHECKING:
    from .config import Config
    from .store import Store

log = logging.getLogger(__name__)

# The usage table's count columns, in the order counts travel in (Tally.add, write_usage):
# cache_creation_tokens holds cache writes of both lifetimes, cache_creation_1h_tokens the 1-hour share.
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
EXTRA_FIELDS = ("cache_creation_1h_tokens", "web_search_requests", "web_fetch_requests")
COUNT_FIELDS = (*TOKEN_FIELDS, "requests", *EXTRA_FIELDS)
NANO = 1_000_000_000
GLOBAL = "*"  # the budget_caps row of the global caps
FLUSH_INTERVAL = 1.0
CAPS_RELOAD_INTERVAL = 5.0  # picks up caps written straight to the database (`ngb budget` offline)


# --------------------------------------------------------------------------------------------------
# Prices.


def _derived(input: float, output: float, cache_read: float | None = None,  # noqa: A002
             cache_write: float | None = None) -> dict[str, float]:
    """A full price entry (USD) from the input and output prices: the API's multipliers for the
    cache (reads 0.1 x input, 5-minute writes 1.25 x, 1-hour writes 2 x) and its server tool prices."""
    return {
        "input": input,
        "output": output,
        "cache_read": input * 0.1 if cache_read is None else cache_read,
        "cache_write": input * 1.25 if cache_write is None else cache_write,
        "cache_write_1h": input * 2,
        "web_search": WEB_SEARCH_USD_PER_1000,
        "web_fetch": WEB_FETCH_USD_PER_1000,
    }


@attrs.frozen
class Price:
    """Nano-USD per token (= USD per million tokens x 1000), and nano-USD per server tool request
    (= USD per 1000 requests x 1,000,000)."""

    input: int
    output: int
    cache_read: int
    cache_write: int  # 5-minute cache writes
    cache_write_1h: int = 0
    web_search: int = 0
    web_fetch: int = 0

    @classmethod
    def from_usd_per_million(
        cls, input: float, output: float, cache_read: float, cache_write: float,  # noqa: A002
        cache_write_1h: float | None = None, web_search: float = WEB_SEARCH_USD_PER_1000,
        web_fetch: float = WEB_FETCH_USD_PER_1000,
    ) -> Price:
        """Token prices in USD per million tokens; web_search / web_fetch in USD per 1000 requests."""
        if cache_write_1h is None:
            cache_write_1h = 2 * input
        tokens = (round(v * 1000) for v in (input, output, cache_read, cache_write, cache_write_1h))
        return cls(*tokens, round(web_search * 1_000_000), round(web_fetch * 1_000_000))

    def usd_per_million(self) -> dict[str, float]:
        """The prices as configured (web_search and web_fetch per 1000 requests)."""
        return {
            name: getattr(self, name) / (1_000_000 if name in PER_REQUEST_PRICES else 1000) for name in PRICE_FIELDS
        }

    def cost(
        self, input_tokens: int, output_tokens: int, cache_read_tokens: int, cache_creation_tokens: int,
        cache_creation_1h_tokens: int = 0, web_search_requests: int = 0, web_fetch_requests: int = 0,
    ) -> int:
        """Nano-USD. cache_creation_tokens counts writes of both lifetimes; the 1-hour share of them
        (cache_creation_1h_tokens) is priced at cache_write_1h, the rest at cache_write."""
        one_hour = min(cache_creation_1h_tokens, cache_creation_tokens)
        return (
            input_tokens * self.input
            + output_tokens * self.output
            + cache_read_tokens * self.cache_read
            + (cache_creation_tokens - one_hour) * self.cache_write
            + one_hour * self.cache_write_1h
            + web_search_requests * self.web_search
            + web_fetch_requests * self.web_fetch
        )


class PriceTable:
    def __init__(self, overrides: Mapping[str, Mapping[str, float]] | None = None) -> None:
        table: dict[str, dict[str, float]] = {name: _derived(*values[:2], *values[2:])
                                              for name, values in DEFAULT_PRICES.items()}
        for name, given in (overrides or {}).items():
            base = table.get(name) or _derived(given["input"], given["output"])
            table[name] = {**base, **given}
        self.prices = {name: Price.from_usd_per_million(**p) for name, p in table.items()}
        self._keys = sorted((k for k in self.prices if k != FALLBACK), key=len, reverse=True)
        self._cache: dict[str, str] = {}

    def key(self, model: str) -> str:
        """The price table entry a model name uses."""
        got = self._cache.get(model)
        if got is not None:
            return got
        name = model.strip().lower().replace("@", "-")
        if "anthropic." in name:  # Bedrock ids: us.anthropic.claude-sonnet-4-5-20250929-v1:0
            name = name.rsplit("anthropic.", 1)[1]
        found = FALLBACK
        for k in self._keys:
            if name == k or name.startswith(k + "-"):
                found = k
                break
        if found == FALLBACK and model:
            log.info("budgets: no price for model %r; using the %r price", model[:200], FALLBACK)
        if len(self._cache) < 1000:
            self._cache[model] = found
        return found

    def price(self, model: str) -> Price:
        return self.prices[self.key(model)]

    def cost(self, model: str, input_tokens: int, output_tokens: int, cache_read: int, cache_creation: int,
             cache_creation_1h: int = 0, web_search: int = 0, web_fetch: int = 0) -> int:
        return self.price(model).cost(input_tokens, output_tokens, cache_read, cache_creation, cache_creation_1h,
                                      web_search, web_fetch)

    def counts_cost(self, model: str, counts: list[int]) -> int:
        """The cost of a list of counts in COUNT_FIELDS order (requests, the 5th, costs nothing)."""
        return self.price(model).cost(*counts[:4], *counts[5:8])

    def describe(self) -> dict[str, dict[str, float]]:
        return {name: p.usd_per_million() for name, p in self.prices.items()}


# --------------------------------------------------------------------------------------------------
# Tallies and periods.


@attrs.define
class Tally:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    requests: int = 0
    cost_nanos: int = 0
    cache_creation_1h_tokens: int = 0
    web_search_requests: int = 0
    web_fetch_requests: int = 0

    def add(self, counts: Iterable[int], cost_nanos: int) -> None:
        """Counts in COUNT_FIELDS order (the trailing ones may be left out: zero)."""
        for name, n in zip(COUNT_FIELDS, counts, strict=False):
            setattr(self, name, getattr(self, name) + n)
        self.cost_nanos += cost_nanos

    def to_json(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_creation_tokens": self.cache_creation_tokens,
            "cache_creation_1h_tokens": self.cache_creation_1h_tokens,
            "web_search_requests": self.web_search_requests,
            "web_fetch_requests": self.web_fetch_requests,
            "requests": self.requests,
            "cost_usd": usd(self.cost_nanos),
        }


def usd(nanos: int) -> float:
    return round(nanos / NANO, 6)


def nanos(amount_usd: float) -> int:
    return round(amount_usd * NANO)


def fmt_usd(nanos_or_usd: int | float, *, is_nanos: bool = True) -> str:
    amount = nanos_or_usd / NANO if is_nanos else float(nanos_or_usd)
    if amount == 0 or abs(amount) >= 1:
        return f"${amount:,.2f}"
    return f"${amount:.6f}".rstrip("0").rstrip(".") if abs(amount) < 0.01 else f"${amount:.2f}"


def day_of(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d")


def month_of(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m")


def next_day(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, at.day, tzinfo=UTC) + timedelta(days=1)


def next_month(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return datetime(at.year + (at.month == 12), at.month % 12 + 1, 1, tzinfo=UTC)


@attrs.frozen
class Caps:
    """USD; 0: no cap. `None` in an override: the config default."""

    daily: float = 0.0
    monthly: float = 0.0


@attrs.frozen
class Block:
    """Why a call is refused."""

    folder: str
    scope: str  # the group's folder, or GLOBAL
    kind: str  # "daily" | "monthly"
    period: str
    spent: int  # nano-USD
    cap: float  # USD
    resets_at: datetime

    @property
    def notice_key(self) -> str:
        return f"{'global' if self.scope == GLOBAL else 'group'}|{self.kind}|{self.period}|{nanos(self.cap)}"

    def text(self) -> str:
        when = "today" if self.kind == "daily" else "this month"
        whose = "across all groups" if self.scope == GLOBAL else "for this group"
        how = (
            f"ngb budget --global --{self.kind} <USD>"
            if self.scope == GLOBAL
            else f"ngb budget {self.folder} --{self.kind} <USD>"
        )
        api = "PATCH /api/budgets/" + ("global" if self.scope == GLOBAL else self.folder)
        return (
            f"budget reached: {fmt_usd(self.spent)} of {fmt_usd(self.cap, is_nanos=False)} {when} {whose}; "
            f"resets at {self.resets_at.strftime('%Y-%m-%d %H:%M')} UTC (model calls are paused until then); "
            f"raise with `{how}` (or {api})"
        )


# --------------------------------------------------------------------------------------------------
# SQL (sync, on a store connection: `store.run(lambda c: ...)`).

UPSERT_USAGE = (
    f"INSERT INTO usage (day, folder, model, {', '.join(COUNT_FIELDS)})"
    f" VALUES (?, ?, ?, {', '.join('?' * len(COUNT_FIELDS))})"
    " ON CONFLICT(day, folder, model) DO UPDATE SET "
    + ", ".join(f"{f} = {f} + excluded.{f}" for f in COUNT_FIELDS)
)


def write_usage(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Upsert-add rows of (day, folder, model, counts...) in COUNT_FIELDS order; rows with fewer
    counts get zeros for the missing trailing ones."""
    width = 3 + len(COUNT_FIELDS)
    conn.executemany(UPSERT_USAGE, [tuple(r) + (0,) * (width - len(r)) for r in rows])


def row_counts(row: Mapping[str, Any]) -> list[int]:
    """A usage row's counts in COUNT_FIELDS order (columns a database not yet migrated lacks: 0)."""
    return [int(row.get(f) or 0) for f in COUNT_FIELDS]


def usage_rows(
    conn: sqlite3.Connection, since_day: str, until_day: str | None = None, folder: str | None = None
) -> list[dict[str, Any]]:
    sql = "SELECT * FROM usage WHERE day >= ?"
    args: list[Any] = [since_day]
    if until_day is not None:
        sql += " AND day <= ?"
        args.append(until_day)
    if folder is not None:
        sql += " AND folder = ?"
        args.append(folder)
    sql += " ORDER BY day, folder, model"
    return [dict(r) for r in conn.execute(sql, args).fetchall()]


def read_caps(conn: sqlite3.Connection) -> dict[str, tuple[float | None, float | None]]:
    return {
        str(r[0]): (r[1], r[2])
        for r in conn.execute("SELECT folder, daily_usd, monthly_usd FROM budget_caps").fetchall()
    }


_UNSET: Any = object()


def write_caps(
    conn: sqlite3.Connection, scope: str, daily: float | None = _UNSET, monthly: float | None = _UNSET
) -> tuple[float | None, float | None]:
    """Change a group's (or GLOBAL's) cap overrides; only the given ones. Returns the new pair."""
    old = read_caps(conn).get(scope, (None, None))
    new = (old[0] if daily is _UNSET else daily, old[1] if monthly is _UNSET else monthly)
    if new == (None, None):
        conn.execute("DELETE FROM budget_caps WHERE folder = ?", (scope,))
    else:
        conn.execute(
            "INSERT INTO budget_caps (folder, daily_usd, monthly_usd, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(folder) DO UPDATE SET daily_usd = excluded.daily_usd,"
            " monthly_usd = excluded.monthly_usd, updated_at = excluded.updated_at",
            (scope, new[0], new[1], datetime.now(UTC).isoformat(timespec="seconds")),
        )
    return new


def report(
    conn: sqlite3.Connection,
    prices: PriceTable,
    *,
    days: int = 7,
    folder: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Usage and cost of the last `days` UTC days (today included), per day, group and model, with
    totals per group and overall: the shape of GET /api/usage and `ngb usage --json`."""
    now = now or datetime.now(UTC)
    since = day_of(now - timedelta(days=max(1, days) - 1))
    rows = usage_rows(conn, since, folder=folder)
    groups: dict[str, Tally] = {}
    total = Tally()
    out_rows = []
    for r in rows:
        counts = row_counts(r)
        key = prices.key(r["model"])
        cost = prices.prices[key].cost(*counts[:4], *counts[5:])
        groups.setdefault(r["folder"], Tally()).add(counts, cost)
        total.add(counts, cost)
        out_rows.append({**{k: r[k] for k in ("day", "folder", "model")}, "price": key,
                         **dict(zip(COUNT_FIELDS, counts, strict=True)), "cost_usd": usd(cost)})
    return {
        "from": since,
        "to": day_of(now),
        "days": max(1, days),
        "group": folder,
        "rows": out_rows,
        "groups": {name: t.to_json() for name, t in sorted(groups.items())},
        "total": total.to_json(),
    }


# --------------------------------------------------------------------------------------------------
# The daemon's side.


class Budgets:
    """Usage tallies, the batched usage writer, caps and the refusal notices."""

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        notify: Callable[[str, str], None] | None = None,
        clock: Callable[[], datetime] | None = None,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self.store = store
        self.prices = PriceTable(config.model_prices)
        self.defaults = Caps(config.budget_daily_usd, config.budget_monthly_usd)
        self.global_defaults = Caps(config.budget_global_daily_usd, config.budget_global_monthly_usd)
        self.overrides: dict[str, tuple[float | None, float | None]] = {}
        self.notify = notify
        self.clock = clock or (lambda: datetime.now(UTC))
        self.flush_interval = flush_interval
        self.refused: dict[str, int] = {}  # per group: calls refused over a budget
        self.write_errors = 0
        self._tallies: dict[tuple[str, str], Tally] = {}  # (folder | GLOBAL, day | month) -> tally
        self._pending: dict[tuple[str, str, str], list[int]] = {}  # (day, folder, model) -> COUNT_FIELDS
        self._noticed: set[tuple[str, str]] = set()  # (folder, notice key)
        self._period = ("", "")
        self._notices_in, self._notices_out = trio.open_memory_channel[tuple[str, str, str]](256)
        self._flush_lock = trio.Lock()
        self._caps_version = 0
        self._loaded = False

    # -- loading ---------------------------------------------------------------------------
    async def load(self) -> None:
        """Read the caps and this month's usage (the tallies the caps are checked against)."""
        now = self.clock()
        month_start = month_of(now) + "-01"

        def q(c: sqlite3.Connection) -> tuple[dict[str, Any], list[dict[str, Any]], set[tuple[str, str]]]:
            c.execute("DELETE FROM budget_notices WHERE sent_at < ?", (month_start,))  # periods long over
            noticed = {
                (str(r[0]), str(r[1]))
                for r in c.execute("SELECT folder, notice FROM budget_notices WHERE sent_at >= ?", (month_start,))
            }
            return read_caps(c), usage_rows(c, month_start), noticed

        caps, rows, noticed = await self.store.run(q)
        self.overrides = caps
        self._tallies.clear()
        self._period = (day_of(now), month_of(now))
        for r in rows:
            counts = row_counts(r)
            self._tally(r["folder"], r["day"], month_of(now), counts, self.prices.counts_cost(r["model"], counts))
        self._noticed |= noticed
        self._loaded = True

    async def reload_caps(self) -> None:
        version = self._caps_version
        caps = await self.store.run(read_caps)
        if version == self._caps_version:  # a set_caps meanwhile wins over what was read before it
            self.overrides = caps

    # -- the proxy's side (synchronous, no I/O) -----------------------------------------------
    def record(self, folder: str, usage: Any) -> None:
        """Count one response's usage (a model_proxy.Usage)."""
        counts = [
            int(usage.input_tokens),
            int(usage.output_tokens),
            int(usage.cache_read_input_tokens),
            int(usage.cache_creation_input_tokens),
            int(usage.requests),
            int(getattr(usage, "cache_creation_1h_input_tokens", 0)),
            int(getattr(usage, "web_search_requests", 0)),
            int(getattr(usage, "web_fetch_requests", 0)),
        ]
        model = str(getattr(usage, "model", "") or "unknown")[:200]
        now = self.clock()
        self._roll(now)
        day, month = self._period
        cost = self.prices.counts_cost(model, counts)
        self._tally(folder, day, month, counts, cost)
        pending = self._pending.setdefault((day, folder, model), [0] * len(COUNT_FIELDS))
        for i, n in enumerate(counts):
            pending[i] += n

    def admit(self, folder: str) -> str | None:
        """None: the call may go upstream. Else the message to answer the agent with (and the
        group's chat gets its notice, once per cap and period)."""
        block = self.blocked(folder)
        if block is None:
            return None
        self.refused[folder] = self.refused.get(folder, 0) + 1
        key = (folder, block.notice_key)
        if key not in self._noticed:
            self._noticed.add(key)
            try:
                self._notices_in.send_nowait((folder, block.notice_key, block.text()))
            except trio.WouldBlock:
                self._noticed.discard(key)  # try again on the next refused call
        return "You have reached your specified API usage limits: " + block.text()

    def blocked(self, folder: str) -> Block | None:
        now = self.clock()
        self._roll(now)
        day, month = self._period
        for scope in (folder, GLOBAL):
            caps = self.caps(scope)
            for kind, cap, period, resets in (
                ("daily", caps.daily, day, next_day(now)),
                ("monthly", caps.monthly, month, next_month(now)),
            ):
                if cap <= 0:
                    continue
                spent = self._get(scope, period).cost_nanos
                if spent >= nanos(cap):
                    return Block(folder, scope, kind, period, spent, cap, resets)
        return None

    # -- caps ------------------------------------------------------------------------------------
    def caps(self, scope: str) -> Caps:
        """The caps in force for a group's folder (or GLOBAL)."""
        base = self.global_defaults if scope == GLOBAL else self.defaults
        daily, monthly = self.overrides.get(scope, (None, None))
        return Caps(base.daily if daily is None else daily, base.monthly if monthly is None else monthly)

    async def set_caps(self, scope: str, daily: float | None = _UNSET, monthly: float | None = _UNSET) -> None:
        """Store a group's (or GLOBAL's) overrides: None = the config default, 0 = no cap. In force
        for the next call."""
        new = await self.store.run(lambda c: write_caps(c, scope, daily, monthly))
        self._caps_version += 1
        if new == (None, None):
            self.overrides.pop(scope, None)
        else:
            self.overrides[scope] = new

    # -- reading -----------------------------------------------------------------------------------
    def spend(self, scope: str) -> tuple[Tally, Tally]:
        """(today, this month) for a folder or GLOBAL."""
        self._roll(self.clock())
        day, month = self._period
        return self._get(scope, day), self._get(scope, month)

    def summary(self, folders: Iterable[str]) -> dict[str, Any]:
        """The `usage` part of /status."""
        now = self.clock()
        self._roll(now)
        day, month = self._period
        names = set(folders) | {s for s, _ in self._tallies if s != GLOBAL}

        def one(scope: str) -> dict[str, Any]:
            today, this_month = self._get(scope, day), self._get(scope, month)
            caps = self.caps(scope)
            block = None
            for kind, cap, spent in (("daily", caps.daily, today), ("monthly", caps.monthly, this_month)):
                if cap > 0 and spent.cost_nanos >= nanos(cap) and block is None:
                    block = kind
            return {
                "today": today.to_json(),
                "month": this_month.to_json(),
                "daily_cap_usd": caps.daily or None,
                "monthly_cap_usd": caps.monthly or None,
                "blocked": block,
            }

        groups = {}
        for name in sorted(names):
            data = one(name)
            b = self.blocked(name)
            data["blocked"] = None if b is None else ("global_" + b.kind if b.scope == GLOBAL else b.kind)
            data["refused_calls"] = self.refused.get(name, 0)
            groups[name] = data
        return {
            "day": day,
            "month": month,
            "resets": {
                "day": next_day(now).isoformat(timespec="seconds"),
                "month": next_month(now).isoformat(timespec="seconds"),
            },
            "groups": groups,
            "total": one(GLOBAL),
        }

    # -- the service -----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load, then write pending usage every `flush_interval` and send the notices, until
        cancelled (then a last, shielded flush)."""
        if not self._loaded:
            await self.load()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._notices_loop)
                task_status.started()
                since_caps = 0.0
                while True:
                    await trio.sleep(self.flush_interval)
                    await self.flush()
                    since_caps += self.flush_interval
                    if since_caps >= CAPS_RELOAD_INTERVAL:
                        since_caps = 0.0
                        try:
                            await self.reload_caps()
                        except Exception as exc:  # noqa: BLE001 - the caps in memory stay in force
                            log.warning("budgets: cannot reload the caps: %s", exc)
        finally:
            with trio.CancelScope(shield=True):
                await self.flush()

    async def flush(self) -> None:
        """Write the pending usage in one transaction (kept for the next try if that fails)."""
        async with self._flush_lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            rows = [(day, folder, model, *counts) for (day, folder, model), counts in batch.items()]
            try:
                await self.store.run(lambda c: write_usage(c, rows))
            except BaseException as exc:
                for key, counts in batch.items():  # merge back: nothing is lost or counted twice
                    pending = self._pending.setdefault(key, [0] * len(COUNT_FIELDS))
                    for i, n in enumerate(counts):
                        pending[i] += n
                if not isinstance(exc, Exception):
                    raise
                self.write_errors += 1
                log.warning("budgets: cannot write usage (%s); will retry", exc)

    async def _notices_loop(self) -> None:
        async for folder, key, text in self._notices_out:
            now = self.clock().isoformat(timespec="seconds")
            try:
                new = await self.store.run(
                    lambda c, f=folder, k=key, t=now: c.execute(
                        "INSERT OR IGNORE INTO budget_notices (folder, notice, sent_at) VALUES (?, ?, ?)", (f, k, t)
                    ).rowcount
                )
            except Exception as exc:  # noqa: BLE001 - better a repeated notice than none
                log.warning("budgets: cannot record a notice: %s", exc)
                new = 1
            log.warning("budgets: group %s: %s", folder, text)
            if new and self.notify is not None:
                try:
                    self.notify(folder, "⚠️ " + text)
                except Exception:
                    log.exception("budgets: notify failed")

    # -- internals -------------------------------------------------------------------------------
    def _roll(self, now: datetime) -> None:
        period = (day_of(now), month_of(now))
        if period != self._period:
            self._period = period
            for key in [k for k in self._tallies if k[1] not in period]:
                del self._tallies[key]
            self._noticed = {n for n in self._noticed if period[0] in n[1] or f"|{period[1]}|" in n[1]}

    def _get(self, scope: str, period: str) -> Tally:
        return self._tallies.get((scope, period)) or Tally()

    def _tally(self, folder: str, day: str, month: str, counts: list[int], cost: int) -> None:
        keys = [(folder, month), (GLOBAL, month)]
        if day == self._period[0]:
            keys += [(folder, day), (GLOBAL, day)]
        for key in keys:
            self._tallies.setdefault(key, Tally()).add(counts, cost)
