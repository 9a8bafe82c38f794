"""What an actor's inbox carries: typed commands, applied inside the actor's own loop.

The store is the truth for work (messages, queued runs); a Wake only says "look", so wakes may be
coalesced or dropped without losing anything. GroupChanged carries a group's new settings and is
never dropped (the supervisor waits for room in the inbox).
"""

from __future__ import annotations

import enum

import attrs

from .records import Group


class WakeReason(enum.Enum):
    MESSAGE = "message"  # a message was stored for the group
    TASK = "task"  # the scheduler queued a run
    START = "start"  # the actor started: look for work left by an earlier run
    RESTART = "restart"  # the actor was restarted after a crash
    GROUP_CHANGED = "group_changed"  # a looser trigger may make stored messages answerable


@attrs.frozen
class Wake:
    """Look at the store."""

    reason: WakeReason = WakeReason.MESSAGE
    message_id: int | None = None


@attrs.frozen
class GroupChanged:
    """The group's settings changed: its trigger check and the next container's mounts use them."""

    group: Group


Command = Wake | GroupChanged
