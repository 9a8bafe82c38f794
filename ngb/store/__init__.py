"""SQLite state behind one owner: every SQL statement of the daemon lives in this package.

`Store` is the daemon's only door to the database. It is one class assembled from one mixin per
concern, each in its own module over the shared connection of `core.StoreCore` (one connection on
a worker thread behind a one-token limiter; every public coroutine is one transaction):

* `schema` - the numbered migrations; `copy` - consistent copies (backup, pre-migration);
* `rows` - rows to records and back; `messages` - history, chats, channel marks, cursors;
* `groups` - groups and sessions; `outbox` - the transactional outbox; `tasks` - tasks and runs;
* `attachments` - the files messages carry (their bytes: ngb/media);
* `usage` - token usage, budget caps and notices; `views` - the web API's read views;
* `web` - the egress door's request log and per-day web usage; `pairings` - strangers' DMs
  waiting for the operator; `threads` - per-thread cursors and sessions of per_thread groups;
* `activity` - messages, turns, reply latency and spend per hour and group (the dashboard's charts).
"""

from __future__ import annotations

from .activity import ActivityMixin
from .attachments import AttachmentsMixin
from .core import RETRYABLE, StoreCore, StoreUnavailable
from .groups import GroupsMixin, StoredSession
from .messages import MessagesMixin
from .outbox import OutboxMixin
from .pairings import PairingsMixin
from .rows import task_to_row
from .schema import MIGRATIONS
from .tasks import TasksMixin
from .threads import ThreadsMixin
from .usage import UsageMixin
from .views import ViewsMixin
from .web import WebMixin

__all__ = ["MIGRATIONS", "RETRYABLE", "Store", "StoreCore", "StoreUnavailable", "StoredSession"]

_task_row = task_to_row  # kept for bench/bench_scheduler.py (imports it by its old private name)


class Store(
    MessagesMixin, AttachmentsMixin, GroupsMixin, OutboxMixin, TasksMixin, UsageMixin, ViewsMixin, WebMixin,
    PairingsMixin, ThreadsMixin, ActivityMixin,
):
    """The daemon's only door to SQLite."""
