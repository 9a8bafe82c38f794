"""The browser tools: a second in-process MCP server, ``browser`` (mcp__browser__browser_open, ...),
over one headless Chromium per runner (browser.py). Unlike the ``ngb`` tools they are not requests
to the host: the browser runs in this container and reaches the web only through the egress door.

agent_cli.py registers the server (``browser_server``) and the end-of-turn hook (``browser_hooks``:
the CLI's Stop hook closes the browser when the agent has finished its answer).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .browser import TEXT_LIMIT, Browser
from .cdp_pipe import BrowserError

BROWSER_SERVER = "browser"
SCREENSHOT_DIR = "screenshots"

_TARGET = {
    "type": "string",
    "description": "A CSS selector ('#send', 'button.primary') or the element's visible text ('Sign in').",
}
TOOLS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "browser_open",
        "Open a web page in a headless browser (Chromium, JavaScript on) and return its title, final "
        "address and readable text, with the page's form fields and buttons. Use it for pages that need "
        "JavaScript, forms or clicks; WebFetch is cheaper for plain pages. The page stays open for the "
        "other browser_* tools until your answer ends.",
        {"type": "object", "properties": {"url": {"type": "string", "description": "http(s) address"}},
         "required": ["url"]},
    ),  # fmt: skip
    (
        "browser_read",
        "The readable text of the page open in the browser (after clicks, typing or scripts changed it). "
        f"Long pages come in pieces of {TEXT_LIMIT} characters: pass offset to read further.",
        {"type": "object", "properties": {"offset": {"type": "integer", "minimum": 0}}},
    ),
    (
        "browser_click",
        "Click an element of the open page (a real mouse click at its place); waits for a page it opens.",
        {"type": "object", "properties": {"target": _TARGET}, "required": ["target"]},
    ),
    (
        "browser_fill",
        "Type text into a field of the open page (replacing what it holds); a <select> gets the option "
        "with that value or text. submit=true presses Enter afterwards.",
        {
            "type": "object",
            "properties": {
                "target": {**_TARGET, "description": "A CSS selector, or the field's name, label or placeholder."},
                "text": {"type": "string"},
                "submit": {"type": "boolean", "description": "press Enter after typing (default false)"},
            },
            "required": ["target", "text"],
        },
    ),
    (
        "browser_scroll",
        "Scroll the open page and return the text now in view.",
        {
            "type": "object",
            "properties": {
                "direction": {"type": "string", "enum": ["down", "up", "top", "bottom"]},
                "pixels": {"type": "integer", "minimum": 1, "description": "default: most of a screen"},
            },
            "required": ["direction"],
        },
    ),
    (
        "browser_screenshot",
        "Save a PNG of the open page in your group folder and return its path (send it to the chat with "
        "mcp__ngb__send_file).",
        {
            "type": "object",
            "properties": {
                "path": {
                    "type": "string",
                    "description": f"relative to your group folder, ending in .png; default {SCREENSHOT_DIR}/<time>.png",
                },
                "full_page": {"type": "boolean", "description": "the whole page, not just the view (default false)"},
            },
        },
    ),
]


def cut(text: str, offset: int = 0, limit: int = TEXT_LIMIT) -> str:
    """``text`` from ``offset``, at most ``limit`` characters, with a note saying what is left."""
    total = len(text)
    piece = text[offset : offset + limit]
    if offset + limit < total:
        piece += (
            f"\n\n[text cut: characters {offset}-{offset + len(piece)} of {total}; "
            f"browser_read with offset={offset + limit} for more]"
        )
    elif offset:
        piece = f"[characters {offset}-{total} of {total}]\n" + piece
    return piece


def describe(page: dict[str, Any], offset: int = 0) -> str:
    lines = [f"Title: {page.get('title') or '(none)'}", f"URL: {page.get('url') or ''}"]
    if page.get("status") not in (None, 200):
        lines.append(f"HTTP status: {page.get('status')}")
    controls = page.get("controls") or []
    if controls:
        lines.append("Fields and buttons: " + "; ".join(str(c) for c in controls))
    text = str(page.get("text") or "").strip()
    lines += ["", cut(text, offset) if text else "(the page has no text)"]
    return "\n".join(lines)


def screenshot_path(workdir: Path, path: str | None) -> tuple[Path, str]:
    """Where a screenshot goes (inside ``workdir``, parents made) and how to name it to the agent."""
    root = workdir.resolve()
    rel = path or f"{SCREENSHOT_DIR}/{time.strftime('%Y%m%d-%H%M%S')}.png"
    p = Path(rel)
    if p.is_absolute():
        try:
            p = p.relative_to(workdir)
        except ValueError:
            raise BrowserError(f"{rel} is not inside your group folder {workdir}") from None
    if not p.name.lower().endswith(".png"):
        raise BrowserError(f"{rel}: a screenshot is a PNG, name it *.png")
    dest = (root / p).resolve()
    if not dest.is_relative_to(root) or dest == root:
        raise BrowserError(f"{rel} is not inside your group folder {workdir}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.parent.resolve().is_relative_to(root):
        raise BrowserError(f"{rel} is not inside your group folder {workdir}")
    return dest, str(workdir / dest.relative_to(root))


class BrowserTools:
    """The tools' handlers over one Browser."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser

    async def call(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        why = self.browser.unavailable()
        if why:
            return error(why)
        try:
            text = await self.browser.run(lambda: self._do(name, args))
        except BrowserError as exc:
            return error(str(exc))
        return {"content": [{"type": "text", "text": text}]}

    async def _do(self, name: str, args: dict[str, Any]) -> str:
        b = self.browser
        if name == "browser_open":
            return describe(await b.open(str(args.get("url") or "")))
        if name == "browser_read":
            return describe(await b.read(), max(0, int(args.get("offset") or 0)))
        if name == "browser_click":
            what = await b.click(str(args.get("target") or ""))
            return f"clicked {what}\n\n" + describe(await b.read())
        if name == "browser_fill":
            what = await b.fill(str(args.get("target") or ""), str(args.get("text") or ""), bool(args.get("submit")))
            done = f"typed into {what}" + (" and pressed Enter" if args.get("submit") else "")
            return done + "\n\n" + describe(await b.read())
        if name == "browser_scroll":
            pos = await b.scroll(str(args.get("direction") or "down"), args.get("pixels"))
            head = f"scrolled to {pos.get('y')} of {pos.get('height')} px (view {pos.get('view')} px)"
            return head + "\n\n" + cut(str(pos.get("visible") or ""))
        if name == "browser_screenshot":
            dest, shown = screenshot_path(b.workdir, args.get("path"))
            size = await b.screenshot(dest, bool(args.get("full_page")))
            return json.dumps({"path": shown, "bytes": size})
        raise BrowserError(f"unknown browser tool {name}")


def error(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": f"error: {text}"}], "is_error": True}


def browser_server(browser: Browser) -> Any:
    """The ``browser`` MCP server (the SDK's in-process kind)."""
    from claude_agent_sdk import create_sdk_mcp_server, tool

    tools = BrowserTools(browser)
    made = []
    for name, description, schema in TOOLS:

        def make(name: str = name) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
            async def handler(args: dict[str, Any]) -> dict[str, Any]:
                return await tools.call(name, dict(args or {}))

            return handler

        made.append(tool(name, description, schema)(make()))
    return create_sdk_mcp_server(name=BROWSER_SERVER, version="1.0.0", tools=made)


def browser_hooks(browser: Browser) -> dict[str, list[Any]]:
    """The CLI's Stop hook (the agent finished its answer: the turn is over) closes the browser."""
    from claude_agent_sdk import HookMatcher

    async def stop(_input: Any, _tool_use_id: str | None, _context: Any) -> dict[str, Any]:
        if browser.pipe is not None:
            await browser.close()
        return {}

    return {"Stop": [HookMatcher(matcher=None, hooks=[stop])]}  # type: ignore[list-item]


def merge_hooks(*parts: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
    out: dict[str, list[Any]] = {}
    for part in parts:
        for event, matchers in (part or {}).items():
            out.setdefault(event, []).extend(matchers)
    return out or None
