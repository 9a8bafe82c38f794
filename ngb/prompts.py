"""What the agent is handed for a batch of chat messages: which of them it sees, and the prompt."""

from __future__ import annotations

import html
from collections.abc import Mapping

from .media.handoff import Placed, PlacedFile
from .media.limits import megabytes
from .records import Attachment, Group, Message
from .triggers import sender_allowed


def _q(value: str) -> str:
    return html.escape(value, quote=True)


def format_attachment(att: Attachment, placed: PlacedFile | None) -> str:
    """One file of a message: what it is, where it is in the container, its transcript or a note."""
    fields = f'kind="{att.kind}" name="{_q(att.name)}" type="{_q(att.mime)}" size="{megabytes(att.size)}"'
    if placed is not None and placed.path:
        fields += f' path="{_q(placed.path)}"'
    if placed is not None and placed.shown:
        fields += ' shown="as an image"'
    inner = []
    transcript = placed.transcript if placed is not None else att.transcript
    source = placed.transcript_source if placed is not None else att.transcript_source
    if transcript:
        inner.append(f'<transcript source="{_q(source or "platform")}">{html.escape(transcript, quote=False)}</transcript>')
    if placed is not None and placed.note:
        inner.append(f"<note>{html.escape(placed.note, quote=False)}</note>")
    if not inner:
        return f"<attachment {fields}/>"
    return f"<attachment {fields}>{''.join(inner)}</attachment>"


def format_prompt(messages: list[Message], unlisted: frozenset[int] = frozenset(), placed: Placed | None = None,
                  reacted: Mapping[str, str] | None = None) -> str:
    """The batch handed to the agent: every message since it last answered, oldest first; those
    whose id is in `unlisted` are marked as from a sender not on the group's allow-list. A message's
    files follow its text (``placed``: where the hand-off put them, ngb/media/handoff.py). A
    reaction is a ``<reaction>`` with the start of the message it is on (``reacted``: platform id ->
    that message's text)."""
    lines = ["<messages>"]
    files = placed.files if placed is not None else {}
    for m in messages:
        mark = ' unlisted="true"' if m.id in unlisted else ""
        if m.thread:  # the thread or topic it was written in (docs/conversations.md)
            mark += f' thread="{_q(m.thread)}"'
        if m.reaction_to is not None:
            on = (reacted or {}).get(m.reaction_to)
            target = f' on="{_q(_excerpt(on))}"' if on is not None else ' on="(a message not in the history)"'
            lines.append(f'<reaction sender="{_q(m.sender)}"{mark}{target} time="{m.time.isoformat(timespec="seconds")}">'
                         f'{html.escape(m.text, quote=False)}</reaction>')
            continue
        body = html.escape(m.text, quote=False)
        if m.attachments:
            body += "".join("\n" + format_attachment(a, files.get(a.id or 0)) for a in m.attachments)
        lines.append(
            f'<message sender="{_q(m.sender)}"{mark} time="{m.time.isoformat(timespec="seconds")}">{body}</message>'
        )
    lines.append("</messages>")
    return "\n".join(lines)


def _excerpt(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def prompt_messages(group: Group, pending: list[Message]) -> tuple[list[Message], frozenset[int]]:
    """What of `pending` reaches the agent: by default only messages of allowed senders (a sender
    not on the allow-list never reaches the prompt, even riding along with an allowed one's); with
    the group's `unlisted_context` on, theirs too, marked. Returns (shown, ids marked unlisted)."""
    unlisted = frozenset(m.id for m in pending if not sender_allowed(group, m))
    if group.unlisted_context:
        return pending, unlisted
    return [m for m in pending if m.id not in unlisted], frozenset()
