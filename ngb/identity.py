"""Who a sender is: the platform's stable user id, never a display name.

Every trust decision (a group's allow-list, rate limits) uses `Message.sender_id`; the display name
(`Message.sender`) is only shown. Anyone can set their display name to an allowed user's name, or
to an allowed user's numeric id, so a name is never compared with the allow-list.

An allow-list entry must look like an id of the group's platform. An entry that looks like a name
is refused when it is set (API, CLI) and, for entries stored before this rule, named in one log
line at start; such an entry matches nobody (a list is never widened by dropping an entry).
"""

from __future__ import annotations

import re
from typing import overload

from .records import Group, Message, channel_of

# What each platform's user ids look like, and where docs/channels/ says how to find them.
_ID_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "telegram": (re.compile(r"\d{1,20}"), "a numeric Telegram user id, e.g. 123456789"),
    "discord": (re.compile(r"\d{15,21}"), "a Discord user id (snowflake), e.g. 80351110224678912"),
    "slack": (re.compile(r"[UW][A-Z0-9]{2,20}"), "a Slack member id, e.g. U0123ABCD"),
    "whatsapp": (
        re.compile(r"\d{5,20}@(s\.whatsapp\.net|lid)"),
        "a WhatsApp id, e.g. 491701234567@s.whatsapp.net (or the phone number in international form)",
    ),
    "qq": (re.compile(r"\d{5,12}"), "a QQ number, e.g. 10001"),
    "lark": (re.compile(r"ou_[0-9a-zA-Z]{8,64}"), "a Feishu/Lark open_id, e.g. ou_7d8a6e6df7621556ce0d21922b676706"),
    "dingtalk": (re.compile(r"[A-Za-z0-9_$:.+/=-]{1,80}"), "a DingTalk staffId (ASCII, no spaces), e.g. manager4291"),
    "matrix": (re.compile(r"@[^:\s]+:[A-Za-z0-9.:\[\]-]+"), "a Matrix user id, e.g. @alice:example.org"),
    "wecom": (re.compile(r"[A-Za-z0-9_.@-]{1,64}"), "a WeCom userid (ASCII, no spaces), e.g. ZhangSan"),
    "email": (re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+"), "an email address, e.g. alice@example.com"),
}
_LOCAL_MAX = 200  # the local chat has no accounts: its sender id is the name the API was given


class SenderIdError(ValueError):
    """An allow-list entry that is not a user id of the group's platform."""


def normalise_sender_id(chat: str, entry: str) -> str:
    """The canonical form of one allow-list entry for `chat`'s platform, or SenderIdError."""
    channel = channel_of(chat)
    value = entry.strip()
    if not value:
        raise SenderIdError("an allowed sender is empty")
    if channel == "whatsapp" and re.fullmatch(r"\+?\d{5,20}", value):
        value = value.lstrip("+") + "@s.whatsapp.net"  # a phone number is the user part of the id
    if channel == "email":
        value = value.lower()  # the email channel's sender ids are lower-case addresses
    spec = _ID_FORMATS.get(channel)
    if spec is None:  # the local chat, or a plugin's channel: any single token up to the limit
        if len(value) > _LOCAL_MAX:
            raise SenderIdError(f"allowed sender {value[:40]!r}... is longer than {_LOCAL_MAX} characters")
        return value
    pattern, example = spec
    if not pattern.fullmatch(value):
        raise SenderIdError(
            f"allowed sender {value!r} is not {example}: allow-lists take the platform's user id, never a "
            f"display name (docs/channels/ says how to find it; `ngb groups senders {chat}` lists recent ones)"
        )
    return value


def normalise_sender_ids(chat: str, entries: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Every entry checked and made canonical (first error raised); duplicates dropped, order kept."""
    out: list[str] = []
    for entry in entries:
        value = normalise_sender_id(chat, entry)
        if value not in out:
            out.append(value)
    return tuple(out)


def invalid_sender_ids(group: Group) -> list[tuple[str, str]]:
    """Stored entries that are not ids of the group's platform, with the reason (for the start log)."""
    bad = []
    for entry in group.allowed_senders:
        try:
            if normalise_sender_id(group.chat, entry) != entry:
                raise SenderIdError(f"allowed sender {entry!r} is not in canonical form")
        except SenderIdError as exc:
            bad.append((entry, str(exc)))
    return bad


def sender_allowed(group: Group, message: Message) -> bool:
    """May this message's sender wake the group's agent and reach its prompt? By id only."""
    return id_allowed(group, message.sender_id)


@overload
def id_allowed(group: Group, sender_id: str) -> bool: ...
@overload
def id_allowed(group: Group | None, sender_id: str) -> bool | None: ...
def id_allowed(group: Group | None, sender_id: str) -> bool | None:
    """Is this sender id on the group's allow-list (an empty list allows everyone)? None: no group."""
    if group is None:
        return None
    if not group.allowed_senders:
        return True
    return bool(sender_id) and sender_id in group.allowed_senders
