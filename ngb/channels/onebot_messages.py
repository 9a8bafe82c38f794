"""QQ's messages (OneBot v11): CQ codes and message segments parsed, rendered to the text the agent
reads (mentions, replies, placeholders for media), the agent's Markdown turned into the plain text
QQ shows, and the chat names (``qq:group:<id>``, ``qq:private:<id>``)."""

from __future__ import annotations

import re
from typing import Any

import attrs

from .base import ChannelError
from .text import BOLD, INLINE_CODE, LINK, STRIKE

PREFIX = "qq"


_CQ = re.compile(r"\[CQ:([A-Za-z0-9_.-]+)((?:,[^,\]]*)*)\]")


def cq_unescape(text: str, *, in_param: bool = False) -> str:
    if in_param:
        text = text.replace("&#44;", ",")
    return text.replace("&#91;", "[").replace("&#93;", "]").replace("&amp;", "&")


def parse_cq(text: str) -> list[dict[str, Any]]:
    """A CQ-code string -> message segments: "hi [CQ:at,qq=1] x" -> text, at, text."""
    segments: list[dict[str, Any]] = []
    pos = 0
    for m in _CQ.finditer(text):
        if m.start() > pos:
            segments.append({"type": "text", "data": {"text": cq_unescape(text[pos:m.start()])}})
        data: dict[str, str] = {}
        for param in m.group(2).split(",")[1:]:
            key, _, value = param.partition("=")
            data[key.strip()] = cq_unescape(value, in_param=True)
        segments.append({"type": m.group(1), "data": data})
        pos = m.end()
    if pos < len(text):
        segments.append({"type": "text", "data": {"text": cq_unescape(text[pos:])}})
    return segments


def to_segments(message: Any) -> list[dict[str, Any]]:
    """An event's ``message`` (segment array, one segment, or CQ string) -> segments."""
    if isinstance(message, str):
        return parse_cq(message)
    if isinstance(message, dict):
        message = [message]
    if not isinstance(message, list):
        raise ValueError(f"message must be a list of segments or a CQ string, got {type(message).__name__}")
    out = []
    for seg in message:
        if not isinstance(seg, dict) or not isinstance(seg.get("type"), str):
            raise ValueError(f"not a message segment: {seg!r:.80}")
        data = seg.get("data") or {}
        out.append({"type": seg["type"], "data": data if isinstance(data, dict) else {}})
    return out


_PLACEHOLDERS = {"image": "[image]", "record": "[voice]", "video": "[video]", "file": "[file]", "face": "[face]",
                 "mface": "[sticker]", "dice": "[dice]", "rps": "[rock-paper-scissors]", "poke": "[poke]",
                 "location": "[location]", "contact": "[contact]", "music": "[music]", "forward": "[forwarded messages]",
                 "json": "[card]", "xml": "[card]", "share": "[link]", "markdown": "[markdown]"}


@attrs.frozen
class Rendered:
    text: str
    mentions_self: bool
    reply_id: str | None


def render(segments: list[dict[str, Any]], self_id: str, bot_name: str) -> Rendered:
    """Segments -> the text a person reads, whether the bot was @-mentioned, and the quoted message."""
    parts: list[str] = []
    mentioned = False
    reply: str | None = None
    for seg in segments:
        kind, data = seg["type"], seg["data"]
        if kind == "text":
            parts.append(str(data.get("text", "")))
        elif kind == "at":
            qq = str(data.get("qq", ""))
            if self_id and qq == self_id:
                mentioned = True
                parts.append(f"@{bot_name or qq}")
            elif qq == "all":
                parts.append("@all")
            else:
                parts.append(f"@{data.get('name') or qq}")
        elif kind == "reply":
            reply = str(data.get("id", "")) or None
        elif kind == "share" and data.get("url"):
            parts.append(f"[link: {data.get('title') or ''} {data['url']}]".replace(":  ", ": "))
        elif kind == "image" and data.get("summary"):
            parts.append(f"[image: {data['summary']}]")
        else:
            parts.append(_PLACEHOLDERS.get(kind, f"[{kind}]"))
    text = "".join(parts)
    # a leading at-mention is usually followed by a space; keep the text tidy either way
    return Rendered(re.sub(r"[ \t]{2,}", " ", text).strip(), mentioned, reply)


# -- Markdown -> plain text (QQ renders no Markdown in normal messages) ------------------------------------
# Inline code, links, bold and strike are text.py's patterns; these differ: a fence is one stray line,
# italic is *x* only (not _x_), and headings and bullets stay within their line ([ \t], not \s).
_MD_FENCE = re.compile(r"^[ \t]*```[\w+-]*[ \t]*$\n?", re.MULTILINE)
_MD_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_MD_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
_MD_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+", re.MULTILINE)


def markdown_to_plain(text: str) -> str:
    """Common Markdown -> readable plain text: markers dropped, links as "label (url)", bullets as •.
    Code (fenced or inline) is kept verbatim, only its fences and backticks go."""
    held: list[str] = []

    def hold(s: str) -> str:
        held.append(s)
        return f"\x00{len(held) - 1}\x00"

    # code first, so nothing inside it is touched
    text = re.sub(r"```[\w+-]*[ \t]*\n?(.*?)```", lambda m: hold(m.group(1).rstrip("\n")), text, flags=re.DOTALL)
    text = INLINE_CODE.sub(lambda m: hold(m.group(1)), text)
    text = LINK.sub(lambda m: m.group(1) if m.group(1) == m.group(2) else f"{m.group(1)} ({m.group(2)})", text)
    text = _MD_HEADING.sub(lambda m: m.group(1), text)
    text = _MD_BULLET.sub(lambda m: f"{m.group(1)}• ", text)
    text = BOLD.sub(lambda m: m.group(1) or m.group(2), text)
    text = _MD_ITALIC.sub(lambda m: m.group(1), text)
    text = STRIKE.sub(lambda m: m.group(1), text)
    text = _MD_FENCE.sub("", text)  # a stray, unbalanced fence line
    return re.sub(r"\x00(\d+)\x00", lambda m: held[int(m.group(1))], text)


# -- chats -----------------------------------------------------------------------------------------------
def qq_chat(kind: str, target: int | str) -> str:
    return f"{PREFIX}:{kind}:{target}"


def parse_chat(chat: str) -> tuple[str, int]:
    """"qq:group:123" -> ("group", 123); ChannelError (not retryable) for anything else."""
    prefix, _, rest = chat.partition(":")
    kind, _, target = rest.partition(":")
    if prefix != PREFIX or kind not in ("group", "private") or not target.isdigit():
        raise ChannelError(f"not a QQ chat: {chat!r} (expected qq:group:<group id> or qq:private:<user id>)",
                           retryable=False)
    return kind, int(target)
