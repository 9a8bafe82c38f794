"""systemd's notify protocol (sd_notify) and watchdog, as one trio task.

systemd starts a ``Type=notify`` service with ``NOTIFY_SOCKET`` set to a unix datagram socket (a
path, or ``@name`` for the abstract namespace). The service sends newline-separated
``KEY=VALUE`` assignments to it: ``READY=1`` once it is up, ``STATUS=...`` for `systemctl status`,
``STOPPING=1`` on the way down. With ``WatchdogSec=`` set, systemd also passes ``WATCHDOG_USEC``
(and ``WATCHDOG_PID``) and kills and restarts the service when no ``WATCHDOG=1`` arrives within
that time.

`run_notifier` pings from a plain trio task. A trio loop that stalls (a blocking call on the loop
thread, a deadlock, a busy loop) runs no task, so the pings stop and systemd restarts the daemon:
the ping itself is the liveness test. Pinging from a thread would keep a dead loop "alive".

Without ``NOTIFY_SOCKET`` (not under systemd) the task does nothing. A failing send is logged once
and never raised: notifications are advice to systemd, not a reason to stop the daemon.

This module reads ``os.environ`` itself (not through ngb/config/): ``NOTIFY_SOCKET``,
``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are systemd's protocol, set per start by the service manager,
not settings a user writes.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

import trio

log = logging.getLogger(__name__)

__all__ = ["Notifier", "notify_address", "watchdog_interval", "run_notifier"]


def notify_address(env: Mapping[str, str] | None = None) -> str | bytes | None:
    """The address of ``NOTIFY_SOCKET``: a filesystem path, or bytes for an abstract socket
    (``@name`` -> ``b"\\0name"``). None when unset or not a unix socket address."""
    env = os.environ if env is None else env
    value = env.get("NOTIFY_SOCKET", "")
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value:
        log.warning("sdnotify: ignoring NOTIFY_SOCKET=%r (only unix socket paths and @abstract are supported)", value)
    return None


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The watchdog timeout in seconds from ``WATCHDOG_USEC``, or None when there is no watchdog
    for this process (unset, not a positive integer, or ``WATCHDOG_PID`` names another process)."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "").strip()
    if not usec.isdigit() or int(usec) <= 0:
        return None
    wpid = env.get("WATCHDOG_PID", "").strip()
    if wpid and wpid != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 1_000_000


class Notifier:
    """Sends sd_notify datagrams. ``send`` never blocks and never raises (it returns False)."""

    def __init__(self, address: str | bytes) -> None:
        self.address = address
        self.sent = 0
        self.failed = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    def send(self, *assignments: str) -> bool:
        message = "\n".join(assignments).encode()
        try:
            self._sock.sendto(message, self.address)
        except OSError as exc:  # ENOENT/ECONNREFUSED (systemd gone), EAGAIN (queue full)
            if self.failed == 0:
                log.warning("sdnotify: cannot send to NOTIFY_SOCKET %r: %s", self.address, exc)
            self.failed += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._sock.close()


async def run_notifier(
    ready: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    env: Mapping[str, str] | None = None,
    healthy: Callable[[], bool] | None = None,
) -> None:
    """Tell systemd when the daemon is ready and keep its watchdog fed, until cancelled.

    Sends ``READY=1`` (with a STATUS line) once ``ready`` is set, ``WATCHDOG=1`` every half
    ``WATCHDOG_USEC`` from the start (systemd ignores pings before READY), and ``STOPPING=1`` when
    cancelled. ``healthy``, when given, is asked before each ping: False skips the ping, so a
    daemon that is alive but wedged gets restarted too. Returns at once when ``NOTIFY_SOCKET`` is
    unset. ``env`` defaults to ``os.environ`` (tests pass their own).
    """
    address = notify_address(env)
    if address is None:
        task_status.started()
        return
    interval = watchdog_interval(env)
    notifier = Notifier(address)
    try:
        notifier.send("STATUS=starting")
        async with trio.open_nursery() as nursery:
            if interval is not None:
                nursery.start_soon(_watchdog, notifier, interval / 2, healthy)
            task_status.started()
            await ready.wait()
            notifier.send("READY=1", f"STATUS=ready (pid {os.getpid()})", f"MAINPID={os.getpid()}")
            log.info(
                "sdnotify: READY sent%s",
                f"; watchdog ping every {interval / 2:g}s" if interval is not None else "",
            )
            await trio.sleep_forever()  # STOPPING=1 is sent when the daemon cancels us
    finally:
        notifier.send("STOPPING=1", "STATUS=stopping")
        notifier.close()


async def _watchdog(notifier: Notifier, period: float, healthy: Callable[[], bool] | None) -> None:
    while True:
        ok = True
        if healthy is not None:
            try:
                ok = bool(healthy())
            except Exception as exc:  # noqa: BLE001 - a broken health hook means "not healthy"
                log.warning("sdnotify: health check raised %s: skipping the watchdog ping", exc)
                ok = False
        if ok:
            notifier.send("WATCHDOG=1")
        await trio.sleep(period)
