"""The records every part of the daemon speaks: attrs classes, (un)structured by one cattrs converter.

Times are timezone-aware UTC datetimes in memory and ISO-8601 strings at every boundary (DB rows,
JSON, wire frames). Booleans are 0/1 in SQLite and true/false in JSON.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import cattrs


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


class AttachmentKind(enum.StrEnum):
    """What a file is, for the prompt and for the platforms (a photo or a document out)."""

    IMAGE = "image"
    AUDIO = "audio"
    VOICE = "voice"  # a voice note (audio the platform marks as spoken)
    VIDEO = "video"
    DOCUMENT = "document"
    OTHER = "other"


@attrs.frozen
class Attachment:
    """A file a message carries. The bytes live in the media store (ngb/media/files.py) under their
    sha256; ``mime`` is sniffed from the bytes, never taken from the name; ``name`` is sanitised
    (ngb/media/names.py). ``id`` is the stored row (None before the message is stored)."""

    kind: AttachmentKind
    mime: str
    size: int
    name: str
    sha256: str
    id: int | None = None
    transcript: str | None = None  # voice/audio: what was said
    transcript_source: str | None = None  # "platform" (its own recognition) | "service" (ours)
    gone: bool = False  # removed by retention: the record stays, the bytes do not


@attrs.frozen
class OutgoingFile:
    """A file a channel is asked to send (``FileSend.send_file``): the stored bytes at ``path``
    (read them, never move or change them), as an image or a document by ``kind``."""

    path: Path
    name: str
    mime: str
    kind: AttachmentKind
    size: int
    caption: str = ""

    @property
    def is_image(self) -> bool:
        return self.kind is AttachmentKind.IMAGE


@attrs.frozen
class InboundMessage:
    """What a channel hands to the router: one platform event, before it is stored."""

    chat: str  # "<channel>:<platform chat id>", e.g. "local:main", "telegram:-100123"
    sender: str  # display name
    text: str
    platform_id: str  # the platform's message id; (channel, platform_id) is unique
    time: datetime = attrs.field(factory=utcnow)
    sender_id: str = ""  # platform user id ("" when the platform has none)
    mentions_bot: bool = False  # the platform says the bot was mentioned directly
    reply_to: str | None = None
    attachments: tuple[Attachment, ...] = ()  # already in the media store (ngb/media/intake.py)
    # A one-to-one chat between the sender and the bot (a DM), as the platform says; a DM from a
    # chat nobody registered gets a pairing code (ngb/pairing.py, docs/conversations.md)
    direct: bool = False
    # The thread or topic within the chat ("" = the chat's own timeline): Slack thread_ts, Telegram
    # forum topic, Discord thread channel, Lark thread (docs/conversations.md)
    thread: str = ""
    # A reaction, not a message: ``text`` is the emoji and this the platform id of the message it is
    # on. Stored and shown to the agent as context with its next turn; never a trigger.
    reaction_to: str | None = None

    @property
    def channel(self) -> str:
        return channel_of(self.chat)


def channel_of(chat: str) -> str:
    return chat.split(":", 1)[0]


@attrs.frozen
class Message:
    """A stored message (inbound or written by the bot)."""

    id: int
    chat: str
    sender: str
    text: str
    time: datetime
    from_bot: bool = False
    platform_id: str | None = None
    sender_id: str = ""
    mentions_bot: bool = False
    attachments: tuple[Attachment, ...] = ()
    thread: str = ""  # as InboundMessage.thread
    reaction_to: str | None = None  # as InboundMessage.reaction_to


@attrs.frozen
class ChatPreview:
    """A reply the agent is still writing, as the local chat shows it (server-sent ``preview``
    events): ``id`` names the preview (its later versions carry the same id), ``text`` is all of
    it so far. Never stored; the stored reply replaces it."""

    chat: str
    id: str
    text: str


class WebMode(enum.StrEnum):
    """How much of the web a group's agent may reach through the egress door."""

    OFF = "off"
    ALLOWLIST = "allowlist"  # only hosts on an allow list (the group's or the daemon's)
    OPEN = "open"  # any public host not on a deny list


class WebVerdict(enum.StrEnum):
    ALLOWED = "allowed"
    REFUSED = "refused"


@attrs.frozen
class WebRequest:
    """One request through a group's egress door, as logged and shown: where it went, what the door
    decided (and by which rule), and how many bytes went each way."""

    folder: str
    time: datetime
    host: str
    port: int
    method: str  # CONNECT for HTTPS (a tunnel), else the HTTP method of a plain-HTTP request
    verdict: WebVerdict
    rule: str = ""  # why it was refused, or why a tunnel was cut ("" when it simply ended)
    address: str = ""  # the address connected to ("" when refused before connecting)
    bytes_up: int = 0  # agent -> site
    bytes_down: int = 0  # site -> agent
    duration_ms: int = 0


@attrs.frozen
class WebUsageDay:
    """A group's web use over one UTC day."""

    folder: str
    day: str  # YYYY-MM-DD
    requests: int
    refused: int
    bytes_up: int
    bytes_down: int


class ThreadMode(enum.StrEnum):
    """How a group's threads map to agent sessions (docs/conversations.md)."""

    SHARED = "shared"  # one session for the whole chat; replies still go to the thread they answer
    PER_THREAD = "per_thread"  # one session per thread (the chat's own timeline is one more)


class DmPolicy(enum.StrEnum):
    """What a direct message from a chat nobody registered gets (per channel: dm_policy)."""

    PAIRING = "pairing"  # a pairing code the operator approves (ngb pair approve CODE)
    OPEN = "open"  # registered at once, as its own group
    CLOSED = "closed"  # nothing (stored within the unregistered quota, as any unregistered chat)


class PairingState(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"


@attrs.frozen
class Pairing:
    """A stranger's direct message waiting for the operator: its code and what it becomes."""

    code: str  # 8 characters of PAIRING_ALPHABET, shown as ABCD-EFGH
    chat: str
    sender: str  # display name (shown only)
    sender_id: str  # the platform's user id: the group's allow-list once approved
    created: datetime
    expires: datetime
    notified: datetime | None = None  # when the code was last sent to the chat
    state: PairingState = PairingState.PENDING
    folder: str = ""  # the group's folder once approved


@attrs.frozen
class Group:
    """A registered chat: it has a folder, a session and an agent."""

    chat: str
    folder: str
    is_main: bool = False
    requires_trigger: bool = True
    trigger: str | None = None  # None: the daemon's trigger
    allowed_senders: tuple[str, ...] = ()  # platform user ids (ngb/identity.py); empty: everyone
    mounts: tuple[dict[str, Any], ...] = ()  # MountRequest fields, validated at container start
    added_at: datetime = attrs.field(factory=utcnow)
    sender_rate_per_minute: int | None = None  # None: the daemon's default; 0: no limit
    group_rate_per_minute: int | None = None
    # Messages of senders not on allowed_senders reach the prompt, marked as unlisted (never wake it)
    unlisted_context: bool = False
    # The web through the egress door (docs/web-access.md): None takes the daemon's default
    # (web_main for the main group, web_default for the others); the lists add to the daemon's own
    web: WebMode | None = None
    web_allow: tuple[str, ...] = ()  # host patterns: example.com, *.example.com
    web_deny: tuple[str, ...] = ()
    # Live previews (docs/conversations.md): the reply grows in the chat while the agent writes it.
    # None takes the daemon's ``previews`` setting
    previews: bool | None = None
    threads: ThreadMode | None = None  # None: the daemon's ``threads`` setting


@attrs.frozen
class SenderSummary:
    """One sender seen in a chat: the id an allow-list takes, and the name they showed last."""

    sender_id: str
    name: str
    messages: int
    last_time: datetime


class OutboxState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


@attrs.frozen
class OutboxItem:
    id: int
    chat: str
    text: str
    folder: str
    created_at: datetime
    state: OutboxState = OutboxState.PENDING
    attempts: int = 0
    last_error: str | None = None
    reply_to: str | None = None
    attachments: tuple[Attachment, ...] = ()  # a file to send (one per row), ``text`` its caption
    # The live preview this reply replaces: the platform id of the message that showed it growing;
    # the outbox edits that message to the final text instead of sending a new one
    preview_id: str | None = None
    thread: str = ""  # the thread the reply answers in (InboundMessage.thread), kept in the history


class TaskStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class ScheduleKind(enum.StrEnum):
    CRON = "cron"
    INTERVAL = "interval"
    ONCE = "once"


@attrs.frozen
class Task:
    id: str
    folder: str
    chat: str
    prompt: str
    schedule_kind: ScheduleKind
    schedule_value: str
    timezone: str = "UTC"
    context_mode: str = "group"  # "group" | "isolated"
    status: TaskStatus = TaskStatus.ACTIVE
    next_run: datetime | None = None
    last_run: datetime | None = None
    last_result: str | None = None
    pre_script: str | None = None
    created_by: str = ""
    created_at: datetime = attrs.field(factory=utcnow)


@attrs.frozen
class TaskRun:
    id: int
    task_id: str
    started_at: datetime
    ended_at: datetime | None = None
    outcome: str = "running"  # running | ok | error | skipped
    error: str | None = None
    tokens: int | None = None


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_unstructure_hook(datetime, format_time)
    conv.register_structure_hook(datetime, lambda v, _: parse_time(v))
    conv.register_structure_hook(bool, lambda v, _: bool(v))
    return conv


converter = _make_converter()


def to_json(record: Any) -> Any:
    return converter.unstructure(record)
