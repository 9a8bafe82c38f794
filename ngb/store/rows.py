"""Rows to records and back: the one place a database row becomes an attrs record (Message,
Group, OutboxItem, Task, TaskRun, WebRequest, WebUsageDay) and a record becomes a row. Every query module reads rows
through these, so a column change is made here once."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs

from ..records import (
    Group,
    Message,
    OutboxItem,
    OutboxState,
    Pairing,
    PairingState,
    Task,
    TaskRun,
    WebRequest,
    WebUsageDay,
    WebVerdict,
    converter,
    format_time,
    parse_time,
)

Row = Mapping[str, Any] | sqlite3.Row
R = TypeVar("R", bound=attrs.AttrsInstance)


def _from_row(cls: type[R], row: Row, **converted: Any) -> R:
    """A record from the row's columns of the same names as its fields (every one must be there),
    with the values that need a conversion given as `converted`."""
    return cls(**{field.name: row[field.name] for field in attrs.fields(cls) if field.name not in converted}, **converted)


def message_from_row(row: Row) -> Message:
    return _from_row(
        Message,
        row,
        time=parse_time(row["time"]),
        from_bot=bool(row["from_bot"]),
        mentions_bot=bool(row["mentions_bot"]),
        attachments=(),  # read with them where needed: attachments.with_attachments
    )


def group_from_row(row: Row) -> Group:
    data = dict(row)
    data["allowed_senders"] = tuple(json.loads(data["allowed_senders"]))
    data["mounts"] = tuple(json.loads(data["mounts"]))
    for key in ("web_allow", "web_deny"):
        data[key] = tuple(json.loads(data[key]))
    for key in ("previews", "threads"):
        if data.get(key) is None:
            data.pop(key, None)
    return converter.structure(data, Group)


def group_to_row(group: Group) -> dict[str, Any]:
    row = converter.unstructure(group)
    row["is_main"] = int(group.is_main)
    row["requires_trigger"] = int(group.requires_trigger)
    row["unlisted_context"] = int(group.unlisted_context)
    row["allowed_senders"] = json.dumps(list(group.allowed_senders))
    row["mounts"] = json.dumps(list(group.mounts))
    row["web"] = None if group.web is None else str(group.web)
    row["web_allow"] = json.dumps(list(group.web_allow))
    row["web_deny"] = json.dumps(list(group.web_deny))
    row["previews"] = None if group.previews is None else int(group.previews)
    row["threads"] = None if group.threads is None else str(group.threads)
    return row


def outbox_from_row(row: Row) -> OutboxItem:
    return _from_row(OutboxItem, row, created_at=parse_time(row["created_at"]), state=OutboxState(row["state"]),
                     attachments=())


def task_from_row(row: Row) -> Task:
    return converter.structure({k: v for k, v in dict(row).items() if v is not None}, Task)


def task_to_row(task: Task) -> dict[str, Any]:
    return converter.unstructure(task)


def task_run_from_row(row: Row) -> TaskRun:
    return converter.structure({k: v for k, v in dict(row).items() if v is not None}, TaskRun)


def web_request_from_row(row: Row) -> WebRequest:
    return _from_row(WebRequest, row, time=parse_time(row["time"]), verdict=WebVerdict(row["verdict"]))


def web_request_to_row(request: WebRequest) -> dict[str, Any]:
    row = attrs.asdict(request)
    row["time"] = format_time(request.time)
    row["verdict"] = str(request.verdict)
    return row


def web_usage_from_row(row: Row) -> WebUsageDay:
    return _from_row(WebUsageDay, row)


def pairing_from_row(row: Row) -> Pairing:
    notified = row["notified"]
    return _from_row(Pairing, row, created=parse_time(row["created"]), expires=parse_time(row["expires"]),
                     notified=parse_time(notified) if notified else None, state=PairingState(row["state"]))


def pairing_to_row(pairing: Pairing) -> dict[str, Any]:
    row = attrs.asdict(pairing)
    row["created"] = format_time(pairing.created)
    row["expires"] = format_time(pairing.expires)
    row["notified"] = format_time(pairing.notified) if pairing.notified else None
    row["state"] = str(pairing.state)
    return row
