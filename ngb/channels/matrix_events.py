"""Matrix events -> what the daemon stores: the text a person wrote (a reply's quoted fallback
removed), whether the bot is addressed (``m.mentions``, a pill linking to the bot, its display name
or user id in the text), the thread (``m.thread``) and the message replied to (``m.in_reply_to``);
and the other way, the ``m.relates_to`` a reply of the bot carries. Pure functions over the event's
JSON (``event.source``), so they are tested without a homeserver."""

from __future__ import annotations

import re
from typing import Any

import attrs

from .text import markdown_to_html

HTML_FORMAT = "org.matrix.custom.html"


@attrs.frozen
class Relation:
    """Where a message sits: its thread's root ("" = the room's timeline) and what it replies to."""

    thread: str = ""
    reply_to: str | None = None


def relation_of(content: dict[str, Any]) -> Relation:
    relates = content.get("m.relates_to") or {}
    if not isinstance(relates, dict):
        return Relation()
    in_reply = relates.get("m.in_reply_to") or {}
    reply_to = in_reply.get("event_id") if isinstance(in_reply, dict) else None
    if relates.get("rel_type") == "m.thread" and isinstance(relates.get("event_id"), str):
        # in a thread, m.in_reply_to is a real reply only when is_falling_back is not set
        return Relation(relates["event_id"], None if relates.get("is_falling_back") else reply_to)
    return Relation("", reply_to if isinstance(reply_to, str) else None)


def strip_reply_fallback(body: str) -> str:
    """A reply's body may begin with the quoted message ("> <@a:b> text" lines, then a blank line)."""
    if not body.startswith("> "):
        return body
    lines = body.split("\n")
    index = 0
    while index < len(lines) and lines[index].startswith(">"):
        index += 1
    return "\n".join(lines[index:]).lstrip("\n")


def mentions(content: dict[str, Any], me: str, names: tuple[str, ...]) -> bool:
    """Whether this message addresses ``me``: in ``m.mentions``, as a pill (a matrix.to link) in the
    formatted body, or by user id or one of ``names`` (display name, localpart) as a word."""
    listed = content.get("m.mentions")
    if isinstance(listed, dict) and me in (listed.get("user_ids") or []):
        return True
    formatted = str(content.get("formatted_body") or "")
    if f"matrix.to/#/{me}" in formatted or f"matrix.to/#/{me.replace('@', '%40').replace(':', '%3A')}" in formatted:
        return True
    body = strip_reply_fallback(str(content.get("body") or ""))
    for name in (me, *names):
        if name and re.search(rf"(?<![\w@]){re.escape(name)}(?!\w)", body, re.IGNORECASE):
            return True
    return False


def reply_relation(trigger: str | None, thread: str) -> dict[str, Any] | None:
    """The ``m.relates_to`` of a message of the bot: in ``thread`` when given (a reply to
    ``trigger`` within it), else a plain reply to ``trigger``; None when neither."""
    if thread:
        relates: dict[str, Any] = {"rel_type": "m.thread", "event_id": thread}
        if trigger:
            relates["is_falling_back"] = False
            relates["m.in_reply_to"] = {"event_id": trigger}
        else:
            relates["is_falling_back"] = True
            relates["m.in_reply_to"] = {"event_id": thread}
        return relates
    if trigger:
        return {"m.in_reply_to": {"event_id": trigger}}
    return None


markdown_to_matrix_html = markdown_to_html  # what Matrix clients render in ``formatted_body``


def text_content(text: str) -> dict[str, Any]:
    """An ``m.text`` message of Markdown ``text``: the text itself as the body, HTML beside it."""
    return {"msgtype": "m.text", "body": text, "format": HTML_FORMAT, "formatted_body": markdown_to_matrix_html(text)}
