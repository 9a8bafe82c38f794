"""Requests and events over one websocket of JSON frames, for the channels that speak such a protocol
without an SDK (OneBot v11 for QQ, WeCom's intelligent robot).

A request goes out as one JSON frame carrying an id and waits for the frame that answers it; the reader
routes every incoming frame either to the request it answers or, in arrival order, to the event queue;
when the socket closes, every request still waiting is woken with no answer. What stays with each
channel: the frame's field names (OneBot's ``echo``, WeCom's ``headers.req_id``), which frames are
events, how an answer maps to a result or an error, and the wording of its log lines.
"""

from __future__ import annotations

import enum
import itertools
import json
import math
from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import trio


class Waiter:
    """One request's place in PendingRequests: ``done`` is set when its answer came (``response``) or
    the connection closed first (``response`` stays None)."""

    __slots__ = ("done", "response")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.response: dict[str, Any] | None = None


class PendingRequests:
    """The requests of one connection still waiting for their answers, by key (the id the answer
    echoes). An answer for a key nobody waits for (never asked, or given up on after a timeout) is
    not delivered: resolve() says False."""

    def __init__(self) -> None:
        self._waiting: dict[Hashable, Waiter] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._waiting

    def keys(self) -> list[Hashable]:
        return list(self._waiting)

    @contextmanager
    def expect(self, key: Hashable) -> Iterator[Waiter]:
        """Wait for the answer to ``key`` inside the block; the key is forgotten when it ends
        (answered, timed out, cancelled or failed)."""
        waiter = Waiter()
        self._waiting[key] = waiter
        try:
            yield waiter
        finally:
            if self._waiting.get(key) is waiter:
                del self._waiting[key]

    def resolve(self, key: Hashable, response: dict[str, Any]) -> bool:
        """Hand ``response`` to the request waiting on ``key``; False when none is."""
        waiter = self._waiting.get(key)
        if waiter is None:
            return False
        waiter.response = response
        waiter.done.set()
        return True

    def fail_all(self) -> None:
        """The connection is gone: wake every waiting request with no answer."""
        for waiter in self._waiting.values():
            waiter.done.set()


class Route(enum.Enum):
    """What route() makes of a frame that is not the answer to a waiting request."""

    EVENT = "event"  # to the event queue
    LATE = "late"  # an answer nobody waits for: dropped, late_response() notes it
    UNEXPECTED = "unexpected"  # neither: counted as malformed, unexpected_frame() notes it


class JsonRpcSocket:
    """One open websocket of JSON objects: requests matched to their answers by key, events handed to
    ``events_in`` (read from ``events_out``) in arrival order. ``closed`` is set when the reader ends
    (or a watchdog gives the connection up); ``malformed`` counts frames that were ignored.

    A protocol subclasses it with route() and the three log hooks, and runs reader() in a task."""

    def __init__(self, ws: Any, label: str) -> None:
        self.ws = ws
        self.label = label  # in errors: "<label> closed: <reason>"
        self.pending = PendingRequests()
        self.closed = trio.Event()
        self.events_in, self.events_out = trio.open_memory_channel[dict[str, Any]](math.inf)
        self.malformed = 0
        self._serials = itertools.count(1)

    async def run_beside(self, nursery: trio.Nursery, *tasks: Callable[[], Awaitable[None]]) -> None:
        """Run ``tasks`` in ``nursery`` (the reader's) until the socket closes, then cancel them all."""
        for task in tasks:
            nursery.start_soon(task)
        await self.closed.wait()
        nursery.cancel_scope.cancel()

    def next_serial(self) -> int:
        """1, 2, 3, ... for ids unique on this connection."""
        return next(self._serials)

    # -- the protocol's part -----------------------------------------------------------------------------
    def route(self, frame: dict[str, Any]) -> Hashable:
        """The key of the request ``frame`` answers, or a Route. ValueError: malformed."""
        raise NotImplementedError

    def malformed_frame(self, raw: Any, reason: ValueError) -> None:
        raise NotImplementedError

    def unexpected_frame(self, raw: Any) -> None:
        raise NotImplementedError

    def late_response(self, raw: Any) -> None:
        raise NotImplementedError

    # -- requests ------------------------------------------------------------------------------------------
    async def request(self, key: Hashable, frame: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """Send ``frame`` and wait for the frame route() gives ``key``: that frame, or None when the
        connection closed first. ConnectionError when it is closed before the frame is sent;
        trio.TooSlowError after ``timeout`` seconds (an answer coming later is dropped as late)."""
        from trio_websocket import ConnectionClosed

        with self.pending.expect(key) as waiter:
            if self.closed.is_set():
                raise ConnectionError(f"{self.label} closed")
            try:
                await self.ws.send_message(json.dumps(frame, ensure_ascii=False))
            except ConnectionClosed as exc:
                raise ConnectionError(f"{self.label} closed: {exc.reason}") from None
            with trio.fail_after(timeout):
                await waiter.done.wait()
        return waiter.response

    async def give_up(self) -> None:
        """Close the socket (a second at most) and mark the connection closed, e.g. after a missed
        heartbeat; the reader then ends and fails the waiting requests."""
        with trio.move_on_after(1):
            await self.ws.aclose()
        self.closed.set()

    # -- reading -------------------------------------------------------------------------------------------
    async def reader(self) -> None:
        """Until the socket closes: answers to their requests, events to events_in. Then ``closed`` is
        set, events_in is closed and every waiting request is woken with no answer."""
        from trio_websocket import ConnectionClosed

        try:
            while True:
                try:
                    raw = await self.ws.get_message()
                except ConnectionClosed:
                    return
                self._dispatch(raw)
        finally:
            self.closed.set()
            self.events_in.close()
            self.pending.fail_all()

    def _dispatch(self, raw: Any) -> None:
        try:
            frame = json.loads(raw)
            if not isinstance(frame, dict):
                raise ValueError("not a JSON object")
            route = self.route(frame)
        except ValueError as exc:
            self.malformed += 1
            self.malformed_frame(raw, exc)
            return
        if route is Route.EVENT:
            self.events_in.send_nowait(frame)
        elif route is Route.UNEXPECTED:
            self.malformed += 1
            self.unexpected_frame(raw)
        elif route is Route.LATE or not self.pending.resolve(route, frame):
            self.late_response(raw)


@contextmanager
def handshake_errors(refused: str) -> Iterator[None]:
    """A websocket that could not be opened -> AuthError (``refused``, HTTP 401/403: the token was
    refused) or ConnectionError (anything else): what reconnect_forever needs to tell them apart.
    Also folds a nursery's single error into that error (errors.one_error)."""
    from trio_websocket import ConnectionRejected, HandshakeError

    from ..errors import one_error
    from .status import AuthError

    try:
        with one_error():
            yield
    except ConnectionRejected as exc:
        if exc.status_code in (401, 403):
            raise AuthError(f"{refused} (HTTP {exc.status_code})") from None
        raise ConnectionError(f"handshake refused with HTTP {exc.status_code}") from None
    except HandshakeError as exc:
        raise ConnectionError(f"websocket handshake failed: {type(exc).__name__}: {exc}") from None

