"""Media retention: files older than ``retention_days`` are removed, their rows kept and marked gone
(a message still says it had a file; /api/files answers 410), and bytes no row needs any more are
deleted. A file written in the last hour is never deleted, even when no row names it yet (a file
between the intake and its message's commit), and neither is anything the agent's folder holds:
the copies in ``attachments/`` are the group's own files."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import attrs
import trio

from ..records import utcnow
from .files import MediaFiles

log = logging.getLogger(__name__)

GRACE = 3600.0  # seconds a file may exist with no row naming it
EVERY = 6 * 3600.0  # how often the daemon sweeps


@attrs.frozen
class Swept:
    expired: int  # rows marked gone
    deleted: int  # files deleted
    freed: int  # bytes


def _unneeded(files: MediaFiles, needed: set[str], now: float) -> tuple[int, int]:
    deleted = freed = 0
    if not files.root.is_dir():
        return 0, 0
    for sub in files.root.iterdir():
        if not sub.is_dir():
            continue
        for path in sub.iterdir():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if now - st.st_mtime < GRACE:
                continue
            if sub.name == "tmp" or path.name not in needed:
                _remove(path)
                deleted += 1
                freed += st.st_size
    return deleted, freed


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


async def sweep(files: MediaFiles, retention_days: int, *, expire: Callable[..., Awaitable[int]],
                needed: Callable[[], Awaitable[set[str]]]) -> Swept:
    """One pass: expire old rows (``retention_days`` 0: none), then delete what no row needs."""
    expired = 0
    if retention_days > 0:
        expired = await expire(utcnow() - timedelta(days=retention_days))
    hashes = await needed()
    deleted, freed = await trio.to_thread.run_sync(_unneeded, files, hashes, time.time())
    if expired or deleted:
        log.info("media retention: %d files expired, %d deleted (%d bytes freed)", expired, deleted, freed)
    return Swept(expired, deleted, freed)


async def sweep_forever(files: MediaFiles, retention_days: int, *, expire: Callable[..., Awaitable[int]],
                        needed: Callable[[], Awaitable[set[str]]], every: float = EVERY) -> None:
    while True:
        try:
            await sweep(files, retention_days, expire=expire, needed=needed)
        except Exception:  # noqa: BLE001 - the next pass tries again; nothing else depends on it
            log.exception("media retention: the sweep failed")
        await trio.sleep(every)
