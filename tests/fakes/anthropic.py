"""A local fake of the Anthropic Messages API that the real Claude Code CLI accepts.

Serves ``POST /v1/messages`` (streaming server-sent events and plain JSON),
``POST /v1/messages/count_tokens`` and answers anything else the CLI asks for
sensibly. Every request is recorded (method, path, query, headers, parsed JSON).

Scripting, three ways:

* From Python (pytest-trio)::

      async with trio.open_nursery() as nursery:
          fake = await FakeAnthropic.start(nursery)        # free port on 127.0.0.1
          fake.script(text_reply("hi"), tool_call("mcp__ngb__send_message", {"text": "x"}))
          ... point ANTHROPIC_BASE_URL at fake.url ...
          fake.requests  # list[RecordedRequest]; .message_requests, .agent_requests
          with trio.fail_after(10):
              await fake.wait_for(lambda r: "hello" in r.last_user_text())
          nursery.cancel_scope.cancel()   # or fake.stop()

* Over HTTP (another process): ``POST /_fake/script`` with a JSON list of response
  specs (or ``{"responses": [...]}``), ``GET /_fake/requests``, ``POST /_fake/reset``.

* In-band, in the text of the last user message:
  ``[[tool:NAME {json}]]`` answer with a tool_use of NAME with that input; once the
  tool_result comes back the reply is ``Done: NAME``.
  ``[[sleep:SECONDS]]`` pause that long before the stream's content.
  ``[[status:CODE]]`` answer with that HTTP error (Anthropic error JSON) every time;
  ``[[status:CODExN]]`` only the first N times this exact marker is seen, then normally.

With no script and no directive the reply is ``Echo: <last user text>`` (cut at 400
characters), so a whole daemon run gives a deterministic reply. "Last user text" is the
last text block of the last user message, skipping the ``<system-reminder>`` blocks the
CLI adds; a last user message holding tool_result blocks is answered ``Done: NAME``.

Response specs (dicts, also what the helper functions below build)::

    {"kind": "text", "text": str, "delay": float, "chunk": int}
    {"kind": "tool_use", "name": str, "input": dict, "text": str|None, "delay": float}
    {"kind": "error", "status": int, "error_type": str|None, "message": str|None,
     "retry_after": float|None}
    {"kind": "stall", "seconds": float|None, "text": str}   # headers + message_start, then nothing
    {"kind": "drop", "text": str, "after_events": int}      # connection cut mid-stream
    {"kind": "stream_error", "error_type": str, "message": str, "after_events": int}

A spec may carry ``"match": "substring"``: it is then only used by a request whose last
user text (or tool_result content) contains that substring. Requests that are not
main-agent turns (no ``tools`` in the body, e.g. title generation or quota probes)
never consume scripted responses unless the spec says ``"any_request": true``.

Any spec may also carry ``"sleep": seconds`` (wait before answering).

What Claude Code 2.1.331 (claude-agent-sdk 0.2.188) sends with
CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1: only ``POST /v1/messages?beta=true`` (streaming,
with tools). Without it, also ``HEAD /api/hello`` and a tool-less ``/v1/messages`` per prompt
for a session title. ``/api/*`` get an empty 200, ``/v1/models`` a model list, anything else
a 404 ``not_found_error``.

Run by hand: ``python -m tests.fakes.anthropic --port 8788 [--host 127.0.0.1] [--log]``.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

MODEL_DEFAULT = "claude-sonnet-4-5-20250929"
ECHO_LIMIT = 400
TOOL_RE = re.compile(r"\[\[tool:([A-Za-z0-9_\-]+)")
SLEEP_RE = re.compile(r"\[\[sleep:([0-9.]+)\]\]")
STATUS_RE = re.compile(r"\[\[status:(\d{3})(?:x(\d+))?\]\]")

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
ERROR_MESSAGES = {
    400: "Invalid request (scripted by the fake)",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "The requested resource could not be found.",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    529: "Overloaded",
}


# ---------------------------------------------------------------- response specs


def text_reply(
    text: str, *, delay: float = 0.0, chunk: int = 16, match: str | None = None, usage: dict | None = None
) -> dict:
    """A plain text answer, streamed in ``chunk``-character deltas ``delay`` seconds apart.

    ``usage``: fields merged into the answer's ``usage`` object (e.g. ``cache_creation`` by
    lifetime, ``cache_read_input_tokens``, ``server_tool_use``), as the API reports them: in a
    JSON body; streamed, the input-side fields in ``message_start`` and all of them (the final,
    cumulative counts) in ``message_delta``."""
    spec = _spec({"kind": "text", "text": text, "delay": delay, "chunk": chunk}, match)
    if usage is not None:
        spec["usage"] = usage
    return spec


def tool_call(
    name: str,
    input: dict | None = None,  # noqa: A002 - mirrors the API field name
    *,
    then: str | None = None,
    text: str | None = None,
    match: str | None = None,
) -> list[dict]:
    """A tool_use of ``name``; if ``then`` is given, that text answers the tool_result."""
    specs = [_spec({"kind": "tool_use", "name": name, "input": input or {}, "text": text}, match)]
    if then is not None:
        specs.append({"kind": "text", "text": then})
    return specs


def slow_reply(text: str, *, delay: float = 0.3, chunk: int = 4, match: str | None = None) -> dict:
    return text_reply(text, delay=delay, chunk=chunk, match=match)


def stall(seconds: float | None = None, *, text: str = "", match: str | None = None) -> dict:
    """Send headers and message_start, then nothing for ``seconds`` (None: until the client goes)."""
    return _spec({"kind": "stall", "seconds": seconds, "text": text}, match)


def error_reply(
    status: int,
    *,
    error_type: str | None = None,
    message: str | None = None,
    retry_after: float | None = None,
    match: str | None = None,
) -> dict:
    return _spec(
        {
            "kind": "error",
            "status": status,
            "error_type": error_type,
            "message": message,
            "retry_after": retry_after,
        },
        match,
    )


def drop(
    text: str = "partial answer that never ends", *, after_events: int = 3, match: str | None = None
) -> dict:
    """Start a stream and cut the connection after ``after_events`` SSE events."""
    return _spec({"kind": "drop", "text": text, "after_events": after_events}, match)


def stream_error(
    error_type: str = "overloaded_error",
    message: str = "Overloaded",
    *,
    text: str = "partial answer",
    after_events: int = 4,
    match: str | None = None,
) -> dict:
    """Start a 200 stream, then send an SSE ``error`` event (as the API does when overloaded mid-stream)."""
    return _spec(
        {
            "kind": "stream_error",
            "error_type": error_type,
            "message": message,
            "text": text,
            "after_events": after_events,
        },
        match,
    )


def _spec(d: dict, match: str | None) -> dict:
    if match is not None:
        d["match"] = match
    return d


# ---------------------------------------------------------------- records


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    json: Any
    time: float
    status: int | None = None
    reply: str | None = None  # what the fake answered with (kind / text), for debugging

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def last_user_text(self) -> str:
        return last_user_text(self.json) if isinstance(self.json, dict) else ""

    @property
    def is_messages(self) -> bool:
        return self.method == "POST" and self.path == "/v1/messages"

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- request inspection


def _blocks(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _is_reminder(text: str) -> bool:
    return text.lstrip().startswith("<system-reminder>")


def last_user_text(body: dict) -> str:
    """Text of the last user message's last text block (system reminders skipped)."""
    messages = body.get("messages") or []
    for msg in reversed(messages):
        if not isinstance(msg, dict) or msg.get("role") != "user":
            continue
        texts = [b.get("text", "") for b in _blocks(msg.get("content")) if b.get("type") == "text"]
        real = [t for t in texts if not _is_reminder(t)]
        if real:
            return real[-1]
        if texts:
            return texts[-1]
        return ""
    return ""


def _pending_tool_results(body: dict) -> list[tuple[str, str]]:
    """(tool name, result text) for tool_result blocks in the last user message."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    turns = [m for m in messages if m.get("role") in ("user", "assistant")]
    if not turns or turns[-1].get("role") != "user":
        return []
    results = [b for b in _blocks(turns[-1].get("content")) if b.get("type") == "tool_result"]
    if not results:
        return []
    names: dict[str, str] = {}
    for msg in messages:
        if msg.get("role") == "assistant":
            for b in _blocks(msg.get("content")):
                if b.get("type") == "tool_use":
                    names[b.get("id", "")] = b.get("name", "?")
    out = []
    for r in results:
        content = r.get("content")
        if isinstance(content, list):
            text = " ".join(b.get("text", "") for b in content if isinstance(b, dict))
        else:
            text = str(content or "")
        out.append((names.get(r.get("tool_use_id", ""), "?"), text))
    return out


def parse_tool_directive(text: str) -> tuple[str, dict] | None:
    """``[[tool:NAME {json}]]`` -> (NAME, input); the JSON may nest. None if there is none."""
    m = TOOL_RE.search(text)
    if not m:
        return None
    rest = text[m.end() :].lstrip()
    args: Any = {}
    if rest.startswith("{"):
        try:
            args, _ = json.JSONDecoder().raw_decode(rest)
        except ValueError:
            end = rest.find("]]")
            args = {"_raw": rest[: end if end >= 0 else None]}
    if not isinstance(args, dict):
        args = {"_value": args}
    return m.group(1), args


def _estimate_tokens(obj: Any) -> int:
    try:
        n = len(json.dumps(obj))
    except (TypeError, ValueError):
        n = len(str(obj))
    return max(1, n // 4)


_CHAT_MESSAGE_RE = re.compile(r"<message\b[^>]*>(.*?)</message>", re.DOTALL)


def _truncate(text: str, limit: int = ECHO_LIMIT) -> str:
    # The daemon wraps chat messages as <messages><message sender=...>text</message>...</messages>:
    # echo the text of the newest one, so replies read naturally.
    chat = _CHAT_MESSAGE_RE.findall(text)
    if chat:
        text = html.unescape(chat[-1])
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[: limit - 3].rstrip() + "..."


# ---------------------------------------------------------------- the fake


class _Drop(Exception):
    """Raised inside the ASGI app to make hypercorn cut the connection mid-body."""


Send = Callable[[dict], Awaitable[None]]
Receive = Callable[[], Awaitable[dict]]


class FakeAnthropic:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.url = ""
        self.requests: list[RecordedRequest] = []
        self.queue: list[dict] = []
        self._status_counts: dict[str, int] = {}
        self._changed = trio.Event()
        self._cancel: trio.CancelScope | None = None

    # -- lifecycle -------------------------------------------------------------

    @classmethod
    async def start(cls, nursery: trio.Nursery, host: str = "127.0.0.1", port: int = 0) -> FakeAnthropic:
        fake = cls(host, port)
        await nursery.start(fake.serve)
        return fake

    async def serve(self, *, task_status: trio.TaskStatus[FakeAnthropic] = trio.TASK_STATUS_IGNORED) -> None:
        config = Config()
        config.bind = [f"{self.host}:{self.port}"]
        config.accesslog = None
        config.errorlog = None
        config.keep_alive_timeout = 60
        config.graceful_timeout = 0.5
        with trio.CancelScope() as scope:
            self._cancel = scope

            async def _started(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
                await serve(self.app, config, task_status=task_status)

            async with trio.open_nursery() as nursery:
                binds = await nursery.start(_started)
                self.url = binds[0]
                self.port = int(self.url.rsplit(":", 1)[1])
                task_status.started(self)

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    # -- scripting -------------------------------------------------------------

    def script(self, *items: dict | list[dict]) -> None:
        """Queue responses (dicts from the helpers; a list is flattened)."""
        for item in items:
            if isinstance(item, list):
                self.queue.extend(item)
            else:
                self.queue.append(item)

    def reset(self) -> None:
        self.queue.clear()
        self.requests.clear()
        self._status_counts.clear()
        self._notify()

    @property
    def message_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.is_messages]

    @property
    def agent_requests(self) -> list[RecordedRequest]:
        """/v1/messages requests that carry tools (main-agent turns, not side calls)."""
        return [r for r in self.message_requests if isinstance(r.json, dict) and r.json.get("tools")]

    async def wait_for(self, predicate: Callable[[RecordedRequest], bool]) -> RecordedRequest:
        """Wait until a recorded request satisfies ``predicate`` (wrap in ``trio.fail_after``)."""
        while True:
            for r in self.requests:
                if predicate(r):
                    return r
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _take(self, body: dict | None, is_agent: bool) -> dict | None:
        haystack = ""
        if isinstance(body, dict):
            haystack = last_user_text(body) + " " + " ".join(t for _, t in _pending_tool_results(body))
        for i, spec in enumerate(self.queue):
            if not is_agent and not spec.get("any_request"):
                continue
            m = spec.get("match")
            if m is not None and m not in haystack:
                continue
            return self.queue.pop(i)
        return None

    def _default(self, body: dict) -> dict:
        """What to answer with when nothing is scripted: directives, tool results, echo."""
        results = _pending_tool_results(body)
        if results:
            names = ", ".join(name for name, _ in results)
            return {"kind": "text", "text": f"Done: {names}"}
        text = last_user_text(body)
        spec: dict[str, Any] | None = None
        m = STATUS_RE.search(text)
        if m:
            code, times = int(m.group(1)), m.group(2)
            key = m.group(0) + "\0" + text
            seen = self._status_counts.get(key, 0)
            self._status_counts[key] = seen + 1
            if times is None or seen < int(times):
                return {"kind": "error", "status": code}
            text = text.replace(m.group(0), "")
        directive = parse_tool_directive(text)
        if directive is not None:
            spec = {"kind": "tool_use", "name": directive[0], "input": directive[1]}
        if spec is None:
            clean = SLEEP_RE.sub("", text)
            spec = {"kind": "text", "text": "Echo: " + _truncate(clean)}
        m = SLEEP_RE.search(text)
        if m:
            spec["sleep"] = float(m.group(1))
        return spec

    # -- ASGI ------------------------------------------------------------------

    async def app(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = {"_raw": body[:2000].decode("utf-8", "replace")}
        path = scope["path"]
        rec = RecordedRequest(
            method=scope["method"],
            path=path,
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            json=parsed,
            time=time.time(),
        )
        if not path.startswith("/_fake/"):
            self.requests.append(rec)
            self._notify()
        try:
            await self._route(rec, send, receive)
        finally:
            self._notify()

    async def _route(self, rec: RecordedRequest, send: Send, receive: Receive) -> None:
        path, method = rec.path.rstrip("/") or "/", rec.method
        if path == "/_fake/requests" and method == "GET":
            return await _send_json(send, 200, [r.to_dict() for r in self.requests])
        if path == "/_fake/script" and method == "POST":
            items = rec.json.get("responses") if isinstance(rec.json, dict) else rec.json
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                return await _send_json(send, 400, {"error": "expected a list of response specs"})
            self.script(*items)
            return await _send_json(send, 200, {"queued": len(self.queue)})
        if path == "/_fake/reset" and method == "POST":
            self.reset()
            return await _send_json(send, 200, {"ok": True})
        if path == "/_fake/queue" and method == "GET":
            return await _send_json(send, 200, self.queue)
        if path == "/v1/messages" and method == "POST":
            return await self._messages(rec, send, receive)
        if path == "/v1/messages/count_tokens" and method == "POST":
            rec.status = 200
            body = rec.json if isinstance(rec.json, dict) else {}
            n = _estimate_tokens([body.get("system"), body.get("messages"), body.get("tools")])
            return await _send_json(send, 200, {"input_tokens": n})
        if path in ("/", "/healthz", "/v1") and method in ("GET", "HEAD"):
            rec.status = 200
            return await _send_json(send, 200, {"ok": True, "fake": "anthropic"})
        if path == "/v1/models" and method == "GET":
            rec.status = 200
            return await _send_json(
                send,
                200,
                {
                    "data": [_model_info(MODEL_DEFAULT)],
                    "has_more": False,
                    "first_id": MODEL_DEFAULT,
                    "last_id": MODEL_DEFAULT,
                },
            )
        if path.startswith("/v1/models/") and method == "GET":
            rec.status = 200
            return await _send_json(send, 200, _model_info(path.rsplit("/", 1)[1]))
        if path.startswith("/api/") and method in ("GET", "HEAD"):
            # Claude.ai / console side endpoints (settings, feature flags, roles...): empty is "nothing".
            rec.status = 200
            return await _send_json(send, 200, {})
        if path.startswith("/api/") and method == "POST":
            rec.status = 200
            return await _send_json(send, 200, {"ok": True})
        rec.status = 404
        await _send_error(send, 404, "not_found_error", f"{method} {path} is not served by the fake")

    async def _messages(self, rec: RecordedRequest, send: Send, receive: Receive) -> None:
        body = rec.json if isinstance(rec.json, dict) else None
        if body is None or not isinstance(body.get("messages"), list):
            rec.status = 400
            return await _send_error(send, 400, "invalid_request_error", "messages: field required")
        is_agent = bool(body.get("tools"))
        spec = self._take(body, is_agent) or self._default(body)
        rec.reply = (
            spec.get("kind") + ":" + str(spec.get("text") or spec.get("name") or spec.get("status") or "")
        )
        if spec.get("sleep"):
            await trio.sleep(float(spec["sleep"]))
        if spec["kind"] == "error":
            status = int(spec["status"])
            rec.status = status
            extra = []
            if spec.get("retry_after") is not None:
                extra.append((b"retry-after", str(spec["retry_after"]).encode()))
            elif status == 429:
                extra.append((b"retry-after", b"0"))
            return await _send_error(
                send,
                status,
                spec.get("error_type") or ERROR_TYPES.get(status, "api_error"),
                spec.get("message") or ERROR_MESSAGES.get(status, f"HTTP {status}"),
                extra,
            )
        model = str(body.get("model") or MODEL_DEFAULT)
        input_tokens = _estimate_tokens([body.get("system"), body.get("messages"), body.get("tools")])
        content, stop_reason = _content_for(spec)
        output_tokens = max(1, sum(_estimate_tokens(b) for b in content))
        msg_id = "msg_fake_" + uuid.uuid4().hex[:20]
        rec.status = 200
        if not body.get("stream"):
            return await _send_json(
                send,
                200,
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": {**_usage(input_tokens, output_tokens), **(spec.get("usage") or {})},
                },
            )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"request-id", ("req_fake_" + uuid.uuid4().hex[:16]).encode()),
                    (b"anthropic-organization-id", b"00000000-0000-0000-0000-000000000000"),
                ],
            }
        )
        events = _stream_events(
            msg_id,
            model,
            content,
            stop_reason,
            input_tokens,
            output_tokens,
            chunk=int(spec.get("chunk") or 16),
            extra_usage=spec.get("usage"),
        )
        delay = float(spec.get("delay") or 0)
        for n, (name, data) in enumerate(events):
            if spec["kind"] == "drop" and n >= int(spec.get("after_events", 3)):
                raise _Drop("fake: dropping the connection mid-stream")
            if spec["kind"] == "stream_error" and n >= int(spec.get("after_events", 4)):
                err = {
                    "type": "error",
                    "error": {
                        "type": spec.get("error_type") or "overloaded_error",
                        "message": spec.get("message") or "Overloaded",
                    },
                }
                await send({"type": "http.response.body", "body": _sse("error", err), "more_body": False})
                return
            await send({"type": "http.response.body", "body": _sse(name, data), "more_body": True})
            if spec["kind"] == "stall" and name == "message_start":
                secs = spec.get("seconds")
                with trio.move_on_after(float(secs) if secs is not None else math.inf):
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    return  # the client gave up
                spec = {"kind": "text"}  # after a bounded stall, finish normally
            elif delay and name in ("content_block_delta", "content_block_start"):
                await trio.sleep(delay)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _model_info(model_id: str) -> dict:
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": "2025-01-01T00:00:00Z"}


def _usage(input_tokens: int, output_tokens: int) -> dict:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }


def _content_for(spec: dict) -> tuple[list[dict], str]:
    kind = spec["kind"]
    if kind == "tool_use":
        content: list[dict] = []
        if spec.get("text"):
            content.append({"type": "text", "text": spec["text"]})
        content.append(
            {
                "type": "tool_use",
                "id": "toolu_fake_" + uuid.uuid4().hex[:20],
                "name": spec["name"],
                "input": spec.get("input") or {},
            }
        )
        return content, "tool_use"
    text = spec.get("text") or ("" if kind in ("stall", "drop") else "OK")
    return [{"type": "text", "text": text or "..."}], "end_turn"


def _stream_events(
    msg_id: str,
    model: str,
    content: list[dict],
    stop_reason: str,
    input_tokens: int,
    output_tokens: int,
    chunk: int = 16,
    extra_usage: dict | None = None,
) -> list[tuple[str, dict]]:
    extra_usage = extra_usage or {}
    start_usage = {k: v for k, v in extra_usage.items() if k not in ("server_tool_use", "output_tokens")}
    events: list[tuple[str, dict]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {**_usage(input_tokens, 1), **start_usage},
                },
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    chunk = max(1, chunk)
    for i, block in enumerate(content):
        if block["type"] == "text":
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            text = block["text"]
            for j in range(0, len(text), chunk):
                events.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "text_delta", "text": text[j : j + chunk]},
                        },
                    )
                )
        else:
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {
                            "type": "tool_use",
                            "id": block["id"],
                            "name": block["name"],
                            "input": {},
                        },
                    },
                )
            )
            raw = json.dumps(block["input"])
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": ""},
                    },
                )
            )
            for j in range(0, len(raw), max(chunk, 8)):
                events.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": raw[j : j + max(chunk, 8)]},
                        },
                    )
                )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    **extra_usage,
                },
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _sse(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _send_json(
    send: Send, status: int, obj: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(obj).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += extra or []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


async def _send_error(
    send: Send, status: int, error_type: str, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    extra = list(extra or [])
    extra.append((b"request-id", ("req_fake_" + uuid.uuid4().hex[:16]).encode()))
    if status in (429, 529, 500):
        extra.append((b"x-should-retry", b"true"))
    await _send_json(
        send, status, {"type": "error", "error": {"type": error_type, "message": message}}, extra
    )


# ---------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Anthropic Messages API for tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8788)
    parser.add_argument("--log", action="store_true", help="print each request as it arrives")
    args = parser.parse_args(argv)

    async def run() -> None:
        fake = FakeAnthropic(args.host, args.port)
        async with trio.open_nursery() as nursery:
            await nursery.start(fake.serve)
            print(f"fake anthropic listening on {fake.url}", flush=True)
            if args.log:
                seen = 0
                while True:
                    await fake._changed.wait()
                    for r in fake.requests[seen:]:
                        print(f"{r.method} {r.path}?{r.query} -> {r.status} {r.reply or ''}", flush=True)
                    seen = len(fake.requests)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
