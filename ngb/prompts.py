"""What the agent is handed for a batch of chat messages: which of them it sees, and the prompt."""

from __future__ import annotations

import html

from .records import Group, Message
from .triggers import sender_allowed


def format_prompt(messages: list[Message], unlisted: frozenset[int] = frozenset()) -> str:
    """The batch handed to the agent: every message since it last answered, oldest first; those
    whose id is in `unlisted` are marked as from a sender not on the group's allow-list."""
    lines = ["<messages>"]
    for m in messages:
        mark = ' unlisted="true"' if m.id in unlisted else ""
        lines.append(
            f'<message sender="{html.escape(m.sender, quote=True)}"{mark} time="{m.time.isoformat(timespec="seconds")}">'
            f"{html.escape(m.text, quote=False)}</message>"
        )
    lines.append("</messages>")
    return "\n".join(lines)


def prompt_messages(group: Group, pending: list[Message]) -> tuple[list[Message], frozenset[int]]:
    """What of `pending` reaches the agent: by default only messages of allowed senders (a sender
    not on the allow-list never reaches the prompt, even riding along with an allowed one's); with
    the group's `unlisted_context` on, theirs too, marked. Returns (shown, ids marked unlisted)."""
    unlisted = frozenset(m.id for m in pending if not sender_allowed(group, m))
    if group.unlisted_context:
        return pending, unlisted
    return [m for m in pending if m.id not in unlisted], frozenset()
