"""What the web layer may use of the running daemon: a narrow, read-mostly face.

The web server sits above the daemon's services and below the daemon that starts it, so it never
imports ``ngb.daemon``: every route module takes a :class:`WebBackend`, which the ``Daemon``
satisfies by shape. A route that needs something new adds it here first, in plain sight.
"""

from __future__ import annotations

from typing import Protocol

import trio

from ..activity import Activity
from ..api_token import WebToken
from ..budgets import Budgets
from ..channels.base import Channel
from ..config import Config
from ..events import ChatEvents
from ..groups import GroupRegistry
from ..media.files import MediaFiles
from ..media.intake import MediaIntake
from ..metrics import Metrics
from ..outbox import OutboxSender
from ..pairing import Pairings
from ..plugins import PluginManager
from ..router import Router
from ..sandbox.tools import ToolService
from ..store import Store
from ..supervisor import Supervisor
from ..tasks.scheduler import Scheduler


class WebBackend(Protocol):
    """The daemon as the web sees it (ngb/daemon.py ``Daemon`` is the one implementation)."""

    config: Config
    store: Store
    registry: GroupRegistry
    supervisor: Supervisor
    router: Router
    outbox: OutboxSender
    scheduler: Scheduler
    budgets: Budgets
    activity: Activity
    tools: ToolService
    channels: dict[str, Channel]
    plugins: PluginManager
    pairings: Pairings
    events: ChatEvents
    media: MediaIntake
    media_files: MediaFiles
    metrics: Metrics
    slots: trio.CapacityLimiter
    web_token: WebToken | None
    started_at: float
    last_error: str | None
    shutting_down: bool

    def turn_running_since(self, folder: str) -> float | None: ...
