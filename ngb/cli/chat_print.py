"""How the terminal chat (ngb/cli/chat.py) prints a message: ``[HH:MM] sender: text``, then its
attachments as ``[image: name (size) url]`` lines (ngb/cli/chat_files.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .chat_api import Message
from .chat_files import attachment_lines


def format_time(value: Any) -> str:
    """ISO-8601 -> local ``HH:MM``. Times without an offset are taken as UTC."""
    if not isinstance(value, str) or not value:
        return "--:--"
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        return "--:--"
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone().strftime("%H:%M")


def format_message(msg: Message, base_url: str = "") -> str:
    """``[HH:MM] sender: text``; bot messages read ``[HH:MM] Andy (bot): text``.

    Continuation lines of multi-line text are indented under the first, then one
    ``[image: name (size) url]`` line per attachment (urls made absolute with ``base_url``).
    """
    sender = str(msg.get("sender") or "?")
    if msg.get("from_bot"):
        sender += " (bot)"
    text = str(msg.get("text") or "")
    files = attachment_lines(msg, base_url)
    lines = (text.split("\n") if text or not files else []) + files
    head = f"[{format_time(msg.get('time'))}] {sender}: {lines[0]}"
    if len(lines) == 1:
        return head
    pad = " " * len("[HH:MM] ")
    return "\n".join([head] + [pad + line for line in lines[1:]])
