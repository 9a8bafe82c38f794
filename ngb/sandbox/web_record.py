"""The egress door's decisions on their way to the store (``web_log``, ``web_usage``): each one is
counted at once (``on_request``: the metrics), queued, and written in batches by ``run`` so that a
slow store never slows a tunnel down; ``flush`` writes what is left when the daemon stops. Past
``RECORD_QUEUE`` waiting, a request is counted but not stored (one warning now and then)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from ..records import WebRequest

log = logging.getLogger(__name__)

RECORD_BATCH = 200  # WebRequests written per store transaction at most
RECORD_QUEUE = 2000  # kept while the store is slow

Write = Callable[[list[WebRequest]], Awaitable[None]]


class WebRecorder:
    def __init__(self, on_request: Callable[[WebRequest], None] = lambda request: None) -> None:
        self._on_request = on_request
        self._in, self._out = trio.open_memory_channel[WebRequest](RECORD_QUEUE)
        self.unrecorded = 0

    def record(self, request: WebRequest) -> None:
        self._on_request(request)
        try:
            self._in.send_nowait(request)
        except trio.WouldBlock:
            self.unrecorded += 1
            if self.unrecorded in (1, 100) or self.unrecorded % 1000 == 0:
                log.warning("web: the store is behind; %d web requests were counted but not stored", self.unrecorded)

    async def run(self, write: Write) -> None:
        """Write the requests to the store in batches, until cancelled."""
        async for first in self._out:
            batch = [first]
            while len(batch) < RECORD_BATCH:
                try:
                    batch.append(self._out.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._write(write, batch)

    async def flush(self, write: Write) -> int:
        """Write what is still queued (the daemon's last step before the store closes); how many."""
        batch: list[WebRequest] = []
        while True:
            try:
                batch.append(self._out.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        if batch:
            await self._write(write, batch)
        return len(batch)

    @staticmethod
    async def _write(write: Write, batch: list[WebRequest]) -> None:
        try:
            await write(batch)
        except Exception as exc:  # noqa: BLE001 - a store error loses the log rows, never the web
            log.warning("web: %d requests could not be stored: %s", len(batch), exc)
