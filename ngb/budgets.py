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

The pieces: prices in ngb/prices.py, tallies, periods, caps and refusals in ngb/spend.py, the
tables' SQL in ngb/store/usage.py (the names are re-exported here for callers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

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
    Price,
    PriceTable,
    parse_model_prices,
    parse_usd,
)
from .spend import (  # noqa: F401 - re-exported
    GLOBAL,
    NANO,
    Block,
    Caps,
    Tally,
    day_of,
    fmt_usd,
    month_of,
    nanos,
    next_day,
    next_month,
    usd,
)
from .store.usage import (  # noqa: F401 - re-exported: the usage table's SQL, for ngb.budgets' callers
    COUNT_FIELDS,
    EXTRA_FIELDS,
    TOKEN_FIELDS,
    UNSET,
    UPSERT_USAGE,
    read_caps,
    row_counts,
    usage_rows,
    write_caps,
    write_usage,
)

if TYPE_CHECKING:
    import sqlite3

    from .config import Config
    from .store import Store

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0
CAPS_RELOAD_INTERVAL = 5.0  # picks up caps written straight to the database (`ngb budget` offline)


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

        caps, rows, noticed = await self.store.budget_state(month_start)  # older notices: forgotten
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
        caps = await self.store.budget_caps()
        if version == self._caps_version:  # a set_caps meanwhile wins over what was read before it
            self.overrides = caps

    # -- the proxy's side (synchronous, no I/O) -----------------------------------------------
    def record(self, folder: str, usage: Any) -> int:
        """Count one response's usage (a model_proxy.Usage); returns its cost in nano-USD."""
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
        return cost

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

    async def set_caps(self, scope: str, daily: float | None = UNSET, monthly: float | None = UNSET) -> None:
        """Store a group's (or GLOBAL's) overrides: None = the config default, 0 = no cap. In force
        for the next call."""
        new = await self.store.set_budget_caps(scope, daily, monthly)
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
                await self.store.add_usage(rows)
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
                new = await self.store.record_budget_notice(folder, key, now)
            except Exception as exc:  # noqa: BLE001 - better a repeated notice than none
                log.warning("budgets: cannot record a notice: %s", exc)
                new = True
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
