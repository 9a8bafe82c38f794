"""Model prices and USD amounts: the built-in price list, the parsers the configuration uses for
`[model_prices]` and the budget caps (ValueError text is the message of a ConfigError), and the
price table ngb/budgets.py prices usage with (`PriceTable`: a model name -> its `Price` in
nano-USD per token)."""

from __future__ import annotations

import difflib
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import attrs

log = logging.getLogger("ngb.budgets")

# Prices: USD per million tokens, except web_search and web_fetch: USD per 1000 requests.
PRICE_FIELDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "web_search", "web_fetch")
PER_REQUEST_PRICES = ("web_search", "web_fetch")
WEB_SEARCH_USD_PER_1000 = 10.0  # the API's price of server-side web searches
WEB_FETCH_USD_PER_1000 = 0.0  # web fetches cost only the tokens they add
MAX_PRICE = 100_000.0  # USD per million tokens
MAX_USD = 1_000_000_000.0
FALLBACK = "default"

# USD per million tokens: input, output, cache read, cache write (5-minute cache; 1-hour cache
# writes cost 2 x input unless a [model_prices] table says otherwise). A model name matches the longest key it equals or starts with followed by "-" (so dated snapshots such as
# claude-sonnet-4-5-20250929 match claude-sonnet-4-5); the family keys (claude-opus, ...) catch
# newer models of a family; "default" prices anything else.
DEFAULT_PRICES: dict[str, tuple[float, float, float, float]] = {
    "claude-opus-4-5": (5.0, 25.0, 0.50, 6.25),
    "claude-opus-4-1": (15.0, 75.0, 1.50, 18.75),
    "claude-opus-4-0": (15.0, 75.0, 1.50, 18.75),
    "claude-opus-4-20250514": (15.0, 75.0, 1.50, 18.75),
    "claude-3-opus": (15.0, 75.0, 1.50, 18.75),
    "claude-opus": (5.0, 25.0, 0.50, 6.25),
    "claude-sonnet-4-5": (3.0, 15.0, 0.30, 3.75),
    "claude-sonnet-4": (3.0, 15.0, 0.30, 3.75),
    "claude-3-7-sonnet": (3.0, 15.0, 0.30, 3.75),
    "claude-3-5-sonnet": (3.0, 15.0, 0.30, 3.75),
    "claude-sonnet": (3.0, 15.0, 0.30, 3.75),
    "claude-haiku-4-5": (1.0, 5.0, 0.10, 1.25),
    "claude-3-5-haiku": (0.80, 4.0, 0.08, 1.0),
    "claude-3-haiku": (0.25, 1.25, 0.03, 0.30),
    "claude-haiku": (1.0, 5.0, 0.10, 1.25),
    FALLBACK: (3.0, 15.0, 0.30, 3.75),
}


# --------------------------------------------------------------------------------------------------
# Config values


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float
            return None
    elif isinstance(value, str):
        try:
            number = float(value.strip().removeprefix("$"))
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 60 else value[:57] + "...", ensure_ascii=False)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(value)


def parse_usd(value: Any) -> float:
    """A cap in USD: a number >= 0 (0: no cap)."""
    number = _number(value)
    if number is None or number < 0 or number > MAX_USD:
        raise ValueError(f"must be an amount of US dollars >= 0 (0: no cap), like 5 or 12.50, got {_shown(value)}")
    return number


def parse_model_prices(value: Any) -> dict[str, dict[str, float]]:
    """The `[model_prices]` table: model name -> {input, output, cache_read, cache_write,
    cache_write_1h} in USD per million tokens and {web_search, web_fetch} in USD per 1000 requests.
    A model with a built-in price may give only the fields it changes; a new model needs input and
    output (cache_read then defaults to 0.1 x input, cache_write to 1.25 x input, cache_write_1h to
    2 x input, web_search to 10, web_fetch to 0). A JSON object string is accepted too (the
    NGB_MODEL_PRICES environment variable)."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise ValueError("must be a JSON object of model tables, got invalid JSON") from None
    if not isinstance(value, Mapping):
        raise ValueError(f'must be a table of [model_prices."MODEL"] tables, got {_shown(value)}')
    out: dict[str, dict[str, float]] = {}
    for raw_name, table in value.items():
        name = str(raw_name).strip().lower()
        if not name or len(name) > 200 or any(ch.isspace() or not ch.isprintable() for ch in name):
            raise ValueError(f"model names must be 1-200 characters without spaces, got {_shown(raw_name)}")
        if not isinstance(table, Mapping):
            raise ValueError(f"{name} must be a table like {{input = 3, output = 15}}, got {_shown(table)}")
        prices: dict[str, float] = {}
        for key, amount in table.items():
            if key not in PRICE_FIELDS:
                close = difflib.get_close_matches(str(key), PRICE_FIELDS, n=1, cutoff=0.5)
                hint = f' (did you mean "{close[0]}"?)' if close else f" (known: {', '.join(PRICE_FIELDS)})"
                raise ValueError(f"{name}.{key} is not a price field{hint}")
            number = _number(amount)
            if number is None or number < 0 or number > MAX_PRICE:
                unit = "USD per 1000 requests" if key in PER_REQUEST_PRICES else "USD per million tokens"
                raise ValueError(f"{name}.{key} must be a number of {unit} >= 0, got {_shown(amount)}")
            prices[key] = number
        if name not in DEFAULT_PRICES and not {"input", "output"} <= prices.keys():
            raise ValueError(f"{name} needs at least input and output (USD per million tokens)")
        out[name] = prices
    return out


# --------------------------------------------------------------------------------------------------
# The price table


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
        i, o, cr, cw, cw1h = (round(v * 1000) for v in (input, output, cache_read, cache_write, cache_write_1h))
        return cls(i, o, cr, cw, cw1h, round(web_search * 1_000_000), round(web_fetch * 1_000_000))

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
