"""What sending to a DingTalk chat needs (its kind, the other person's staff id, the session webhook of
its latest message), and the file that keeps the lasting part of it across restarts."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

import attrs

from .dingtalk_settings import PREFIX

log = logging.getLogger("ngb.channels.dingtalk")


@attrs.define
class Conversation:
    """What sending to a chat needs, from its latest message."""

    kind: str  # "1": 1:1, "2": group
    staff_id: str | None = None  # 1:1: the other person's staff id (oToMessages/batchSend)
    webhook: str | None = None
    webhook_expires: float = 0.0  # epoch seconds
    newest: int = 0  # createAt (ms) of the message these come from


class ConversationFile:
    """The facts the robot API needs per chat, kept across restarts: ``{"version": 1, "conversations":
    {chat: {"kind": "1"|"2", "staff_id": ...}}}``, least recently seen first. Never a session webhook
    (a credential: whoever holds one can post to the chat until it expires). Its methods block: they
    run in a worker thread."""

    VERSION = 1

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writes = 0

    def load(self) -> list[tuple[str, str, str | None]]:
        """(chat, kind, staff id), oldest first; a missing file is empty, a bad one too (one warning)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("dingtalk: cannot read %s (%s); starting without the conversations it held", self.path, exc)
            return []
        try:
            return self.parse(raw)
        except Exception as exc:  # noqa: BLE001 - whatever is in the file, the channel starts
            log.warning("dingtalk: %s is not a conversations file (%s: %s); ignored, starting without it "
                        "(it is rewritten when a chat writes)", self.path, type(exc).__name__, exc)
            return []

    @classmethod
    def parse(cls, raw: bytes) -> list[tuple[str, str, str | None]]:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("version") != cls.VERSION:
            raise ValueError(f"no version {cls.VERSION} object")
        conversations = data.get("conversations")
        if not isinstance(conversations, dict):
            raise ValueError("no conversations object")
        out: list[tuple[str, str, str | None]] = []
        for chat, facts in conversations.items():
            if not isinstance(facts, dict) or facts.get("kind") not in ("1", "2") or not chat.startswith(f"{PREFIX}:"):
                raise ValueError(f"bad entry {chat[:80]!r}")
            staff = facts.get("staff_id")
            if staff is not None and not (isinstance(staff, str) and staff):
                raise ValueError(f"bad staff id for {chat[:80]!r}")
            if facts["kind"] == "1" and staff is None:
                continue  # nothing the robot API can use (never written so; tolerated)
            out.append((chat, facts["kind"], staff if facts["kind"] == "1" else None))
        return out

    def save(self, entries: list[tuple[str, str, str | None]]) -> None:
        """Replace the file with ``entries`` (oldest first): a temp file (0600) in the same directory
        (0700), fsynced, then renamed over it, so a crash leaves the old file or the new one."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)  # whatever the umask, or an older directory's mode
        conversations = {chat: {"kind": kind, **({"staff_id": staff} if staff else {})} for chat, kind, staff in entries}
        body = json.dumps({"version": self.VERSION, "conversations": conversations}, ensure_ascii=False,
                          separators=(",", ":")).encode()
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.writes += 1


def lasting_facts(conv: Conversation | None) -> tuple[str, str | None] | None:
    """What the conversations file keeps of a chat: (kind, staff id). None for a 1:1 chat without a
    staff id (someone from outside the organization): the robot API cannot reach them, so after a
    restart a reply to them waits for their next message (and its webhook), as for an unknown chat."""
    if conv is None or (conv.kind == "1" and not conv.staff_id):
        return None
    return conv.kind, conv.staff_id
