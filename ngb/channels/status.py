"""A channel's visible state and its reconnect-forever loop: the states /status shows, the
details behind them (last error, reconnects, secrets redacted from every error text), and the
loop that runs a platform session again, with backoff, whenever it ends."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..backoff import backoff_delay
from ..logs import MIN_SECRET, REDACT, add_secret
from ..logs import redact as redact_known

log = logging.getLogger(__name__)

# -- channel states (what /status shows as channels[name].state) -----------------------------------
CONNECTING = "connecting"
CONNECTED = "connected"
DISCONNECTED = "disconnected"  # lost; reconnecting with backoff
UNAUTHORIZED = "unauthorized"  # the platform rejected the token; retried slowly
STOPPED = "stopped"
OFF = "off"  # configured but no token


class AuthError(Exception):
    """The platform rejected the credentials (retrying fast will not help)."""


class ChannelStatus:
    """State plus the details behind it, for /status, /metrics and logs."""

    def __init__(self, name: str, on_change: Callable[[str, str], None] | None = None, *,
                 extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self.name = name
        self._extra = extra  # more details for describe() (Telegram: its mode and webhook)
        self.state = STOPPED
        self.last_error: str | None = None
        self.connected_since: float | None = None
        self.reconnects = 0
        self._on_change = on_change
        self.secrets: list[str] = []  # redacted from every error text (SDKs quote tokens in errors)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "<redacted>")
        return redact_known(text)

    def set(self, state: str, error: str | None = None) -> None:
        if error is not None:
            error = self.redact(error)
            self.last_error = error
        if state == self.state:
            return
        if state == CONNECTED:
            self.connected_since = time.time()
        elif self.state == CONNECTED:
            self.connected_since = None
        log.info("channel %s: %s%s", self.name, state, f" ({error})" if error else "")
        self.state = state
        if self._on_change is not None:
            try:
                self._on_change(self.name, state)
            except Exception:  # noqa: BLE001 - a listener must not break the channel
                log.exception("channel %s: state listener failed", self.name)

    def describe(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "last_error": self.last_error,
            "connected_since": self.connected_since,
            "reconnects": self.reconnects,
        } | (self._extra() if self._extra is not None else {})


# The daemon's redaction lives in ngb.logs (every formatter redacts its whole output, exception
# text and tracebacks included); channels register their tokens through redact_in_logs.
_REDACT = REDACT
MIN_REDACTED = MIN_SECRET


def redact_in_logs(secret: str, loggers: tuple[str, ...] = ("httpx", "httpcore", "telegram", "ngb")) -> None:
    """Never let ``secret`` reach a log line: the daemon's formatters (text, JSON, journal) redact it
    from every line, exception text and traceback; the filter on these loggers and on the root
    handlers also redacts the record itself, for handlers with formatters of their own.

    Secrets shorter than MIN_REDACTED characters are not redacted: no real token is that short,
    and replacing every "s" or "ab" in every log line would make the logs useless."""
    if len(secret) < MIN_REDACTED:
        return
    add_secret(secret)
    for name in loggers:
        logger = logging.getLogger(name)
        if REDACT not in logger.filters:
            logger.addFilter(REDACT)
    for handler in logging.getLogger().handlers:
        if REDACT not in handler.filters:
            handler.addFilter(REDACT)


def backoff(attempt: int, *, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None) -> float:
    """ngb.backoff.backoff_delay with a channel's defaults (1 s doubling up to a minute): between half
    and all of min(cap, base * 2**(attempt-1)); ``rng`` makes the jitter repeatable in tests."""
    return backoff_delay(attempt, base=base, cap=cap, jitter=None if rng is None else rng.random)


async def reconnect_forever(
    status: ChannelStatus,
    session: Callable[[], Awaitable[None]],
    *,
    base: float = 1.0,
    cap: float = 60.0,
    auth_cap: float = 600.0,
    stable_after: float = 30.0,
    is_auth_error: Callable[[BaseException], bool] = lambda e: isinstance(e, AuthError),
) -> None:
    """Run ``session()`` forever: whenever it fails (or returns), mark the channel disconnected (or
    unauthorized), wait with backoff and jitter, and run it again. ``session`` sets CONNECTED itself
    once it really is. A session that stayed up ``stable_after`` seconds resets the backoff.
    Only cancellation ends this."""
    attempt = 0
    while True:
        status.set(CONNECTING)
        started = trio.current_time()
        try:
            await session()
            error: str = "the connection ended"
            auth = False
        except Exception as exc:  # noqa: BLE001 - every failure means: reconnect later
            auth = is_auth_error(exc)
            error = status.redact(f"{type(exc).__name__}: {exc}")
        if trio.current_time() - started >= stable_after:
            attempt = 0
        attempt += 1
        status.reconnects += 1
        if auth:
            status.set(UNAUTHORIZED, "the platform rejected the token: " + error)
            delay = backoff(attempt, base=max(base, 30.0), cap=auth_cap)
            log.error("channel %s: token rejected (%s); retrying in %.0fs", status.name, error, delay)
        else:
            status.set(DISCONNECTED, error)
            delay = backoff(attempt, base=base, cap=cap)
            log.warning("channel %s: disconnected (%s); reconnecting in %.1fs", status.name, error, delay)
        await trio.sleep(delay)
