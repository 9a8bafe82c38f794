"""Rows to records and back: the one place a database row becomes an attrs record (Message,
Group, OutboxItem, Task, TaskRun) and a record becomes a row. Every query module reads rows
through these, so a column change is made here once."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from ..records import Group, Message, OutboxItem, OutboxState, Task, TaskRun, converter, parse_time

Row = Mapping[str, Any] | sqlite3.Row


def message_from_row(row: Row) -> Message:
    return Message(
        id=row["id"],
        chat=row["chat"],
        sender=row["sender"],
        text=row["text"],
        time=parse_time(row["time"]),
        from_bot=bool(row["from_bot"]),
        platform_id=row["platform_id"],
        sender_id=row["sender_id"],
        mentions_bot=bool(row["mentions_bot"]),
    )


def group_from_row(row: Row) -> Group:
    data = dict(row)
    data["allowed_senders"] = tuple(json.loads(data["allowed_senders"]))
    data["mounts"] = tuple(json.loads(data["mounts"]))
    return converter.structure(data, Group)


def group_to_row(group: Group) -> dict[str, Any]:
    row = converter.unstructure(group)
    row["is_main"] = int(group.is_main)
    row["requires_trigger"] = int(group.requires_trigger)
    row["unlisted_context"] = int(group.unlisted_context)
    row["allowed_senders"] = json.dumps(list(group.allowed_senders))
    row["mounts"] = json.dumps(list(group.mounts))
    return row


def outbox_from_row(row: Row) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        chat=row["chat"],
        text=row["text"],
        folder=row["folder"],
        created_at=parse_time(row["created_at"]),
        state=OutboxState(row["state"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        reply_to=row["reply_to"],
    )


def task_from_row(row: Row) -> Task:
    return converter.structure({k: v for k, v in dict(row).items() if v is not None}, Task)


def task_to_row(task: Task) -> dict[str, Any]:
    return converter.unstructure(task)


def task_run_from_row(row: Row) -> TaskRun:
    return converter.structure({k: v for k, v in dict(row).items() if v is not None}, TaskRun)
