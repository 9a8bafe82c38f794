"""Reply text for the platforms: splitting a long reply into parts that fit (code fences kept
whole), and converting the agent's Markdown to Telegram HTML and Slack mrkdwn."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

# -- splitting ---------------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"[.!?。！？…](?:[\"')\]»]*)\s+")


def split_text(text: str, limit: int, *, measure: Callable[[str], int] = len) -> list[str]:
    """Cut ``text`` into parts of at most ``limit`` (by ``measure``), preferring, in order: a blank
    line, a line end, a sentence end, a space; a hard cut only when a single word is longer than the
    limit. A code fence cut in two is closed at the end of one part and reopened in the next. Parts
    keep their order and, joined back, hold all of the text (whitespace at the cuts aside)."""
    if limit < 16:
        raise ValueError("limit too small")
    text = text.strip("\n")
    parts: list[str] = []
    reopen = ""
    while text:
        room = limit - measure(reopen) - 4  # room for a closing "\n```"
        if measure(reopen + text) <= limit:
            parts.append(reopen + text)
            break
        cut = _best_cut(text, fit_prefix(text, room, measure))
        head, text = text[:cut].rstrip(), text[cut:].lstrip("\n ")
        if not head.strip():  # pathological: nothing fits before the first break
            head, text = text[:cut], text[cut:]
        chunk = reopen + head
        fence = _open_fence(chunk)
        if fence is not None:
            chunk += "\n```"
            reopen = fence + "\n"
        else:
            reopen = ""
        parts.append(chunk)
    return [p for p in parts if p.strip()]


def fit_prefix(text: str, room: int, measure: Callable[[str], int]) -> int:
    """The largest prefix length whose measure is within room (measure is monotone), at least 1."""
    if measure is len:
        return min(len(text), room)
    lo, hi = 1, min(len(text), room)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if measure(text[:mid]) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _best_cut(text: str, end: int) -> int:
    window = text[:end]
    floor = end // 3  # never make a tiny part just to hit a nice boundary
    for finder in (
        lambda: window.rfind("\n\n"),
        lambda: window.rfind("\n"),
        lambda: max((m.end() for m in _SENTENCE_END.finditer(window)), default=-1),
        lambda: window.rfind(" "),
    ):
        pos = finder()
        if pos > floor:
            return pos
    return end


def _open_fence(chunk: str) -> str | None:
    """The opening fence line (e.g. "```python") when chunk ends inside a code block."""
    fence = None
    for line in chunk.split("\n"):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped
    return fence


def utf16_len(text: str) -> int:
    """Telegram counts message length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


# -- Markdown conversion -----------------------------------------------------------------------------
# (onebot_messages.py's plain-text rendering shares INLINE_CODE, LINK, BOLD and STRIKE)
FENCE = re.compile(r"```([\w+-]*)\n?(.*?)```", re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__", re.DOTALL)
ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])|(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
BULLET = re.compile(r"^(\s*)[-*+]\s+", re.MULTILINE)


def _protect(text: str, store: list[str], pattern: re.Pattern[str], render: Callable[[re.Match[str]], str]) -> str:
    def sub(m: re.Match[str]) -> str:
        store.append(render(m))
        return f"\x00{len(store) - 1}\x00"

    return pattern.sub(sub, text)


def _restore(text: str, store: list[str]) -> str:
    return re.sub(r"\x00(\d+)\x00", lambda m: store[int(m.group(1))], text)


def markdown_to_telegram_html(text: str) -> str:
    """Common Markdown (what the agent writes) -> the HTML subset Telegram renders
    (parse_mode="HTML"): b, i, s, code, pre, a. Everything else is escaped text."""
    held: list[str] = []
    esc = html.escape
    text = _protect(
        text,
        held,
        FENCE,
        lambda m: (
            f'<pre><code class="language-{esc(m.group(1))}">{esc(m.group(2).rstrip(chr(10)))}</code></pre>'
            if m.group(1)
            else f"<pre>{esc(m.group(2).rstrip(chr(10)))}</pre>"
        ),
    )
    text = _protect(text, held, INLINE_CODE, lambda m: f"<code>{esc(m.group(1))}</code>")
    text = _protect(text, held, LINK, lambda m: f'<a href="{esc(m.group(2), quote=True)}">{esc(m.group(1))}</a>')
    text = esc(text, quote=False)
    text = HEADING.sub(lambda m: f"<b>{m.group(1)}</b>", text)
    text = BULLET.sub(lambda m: f"{m.group(1)}• ", text)
    text = BOLD.sub(lambda m: f"<b>{m.group(1) or m.group(2)}</b>", text)
    text = ITALIC.sub(lambda m: f"<i>{m.group(1) or m.group(2)}</i>", text)
    text = STRIKE.sub(lambda m: f"<s>{m.group(1)}</s>", text)
    return _restore(text, held)


def markdown_to_slack_mrkdwn(text: str) -> str:
    """Common Markdown -> Slack mrkdwn (*bold*, _italic_, ~strike~, <url|text>, ```code```)."""
    held: list[str] = []

    def esc(s: str) -> str:
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    text = _protect(text, held, FENCE, lambda m: f"```{esc(m.group(2).rstrip(chr(10)))}```")
    text = _protect(text, held, INLINE_CODE, lambda m: f"`{esc(m.group(1))}`")
    text = _protect(text, held, LINK, lambda m: f"<{m.group(2)}|{esc(m.group(1))}>")
    text = esc(text)
    text = HEADING.sub(lambda m: f"\x01{m.group(1)}\x01", text)
    text = BULLET.sub(lambda m: f"{m.group(1)}• ", text)
    text = ITALIC.sub(lambda m: f"_{m.group(1) or m.group(2)}_", text)
    text = BOLD.sub(lambda m: f"\x01{m.group(1) or m.group(2)}\x01", text)
    text = STRIKE.sub(lambda m: f"~{m.group(1)}~", text)
    return _restore(text.replace("\x01", "*"), held)


def markdown_to_html(text: str) -> str:
    """Common Markdown -> HTML for a rich text body (Matrix's ``formatted_body``, an email's HTML
    part): the subset of ``markdown_to_telegram_html`` with line breaks as <br> outside <pre>."""
    out = markdown_to_telegram_html(text)
    parts = re.split(r"(<pre>.*?</pre>)", out, flags=re.DOTALL)
    return "".join(part if part.startswith("<pre>") else part.replace("\n", "<br>") for part in parts)
