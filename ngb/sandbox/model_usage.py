"""Token counting for the model proxy: `Usage` (one response's share, or a group's running totals)
and `UsageMeter`, which watches a response body go by (server-sent events or JSON) and extracts its
usage without holding the body whole: input and output tokens, cache reads, cache writes (with the
1-hour share of ``cache_creation``) and server tool uses (web search / web fetch)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import attrs

JSON_USAGE_CAP = 16 * 1024 * 1024  # bigger JSON bodies are passed through but not parsed for usage
SSE_LINE_CAP = 1024 * 1024


@attrs.define
class Usage:
    """Token counts. Per group: running totals; passed to ``on_usage``: one response's share."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    # Cache writes of both lifetimes; the 1-hour ones (priced higher) are also in the next field.
    cache_creation_input_tokens: int = 0
    requests: int = 0
    # The model that answered (response ``model``, else the request's); "" in running totals.
    model: str = attrs.field(default="", eq=False)
    cache_creation_1h_input_tokens: int = 0  # usage.cache_creation.ephemeral_1h_input_tokens
    web_search_requests: int = 0  # usage.server_tool_use.web_search_requests
    web_fetch_requests: int = 0  # usage.server_tool_use.web_fetch_requests

    def add(self, other: Usage) -> None:
        for name in COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
CACHE_CREATION_FIELDS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")  # usage.cache_creation
SERVER_TOOL_FIELDS = ("web_search_requests", "web_fetch_requests")  # usage.server_tool_use
COUNT_FIELDS = (*USAGE_FIELDS, "requests", "cache_creation_1h_input_tokens", *SERVER_TOOL_FIELDS)
MODEL_RE = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')


def request_model(body: bytes) -> str:
    """The request's ``model`` (a fallback for responses that do not name theirs)."""
    m = MODEL_RE.search(body)
    return m.group(1).decode("utf-8", "replace") if m else ""


def _model_from(obj: Any) -> str | None:
    return obj[:200] if isinstance(obj, str) and obj else None


def _copy_counts(obj: Any, names: Iterable[str], into: dict[str, int]) -> None:
    if not isinstance(obj, dict):
        return
    for name in names:
        value = obj.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            into[name] = value


def _usage_from(obj: Any, into: dict[str, int]) -> None:
    """Copy the billable fields of a ``usage`` object (later values win: message_delta is
    cumulative): the token counts, the ``cache_creation`` split by lifetime and the
    ``server_tool_use`` request counts."""
    if not isinstance(obj, dict):
        return
    _copy_counts(obj, USAGE_FIELDS, into)
    _copy_counts(obj.get("cache_creation"), CACHE_CREATION_FIELDS, into)
    _copy_counts(obj.get("server_tool_use"), SERVER_TOOL_FIELDS, into)


def _usage_of(counts: dict[str, int], model: str) -> Usage:
    """One response's Usage from the fields seen. Cache writes: the total the API reports, or the
    sum of the per-lifetime split if that is larger (the total then includes the 1-hour share)."""
    split_5m = counts.get("ephemeral_5m_input_tokens", 0)
    split_1h = counts.get("ephemeral_1h_input_tokens", 0)
    creation = max(counts.get("cache_creation_input_tokens", 0), split_5m + split_1h)
    return Usage(
        input_tokens=counts.get("input_tokens", 0),
        output_tokens=counts.get("output_tokens", 0),
        cache_read_input_tokens=counts.get("cache_read_input_tokens", 0),
        cache_creation_input_tokens=creation,
        cache_creation_1h_input_tokens=split_1h,
        web_search_requests=counts.get("web_search_requests", 0),
        web_fetch_requests=counts.get("web_fetch_requests", 0),
        requests=1,
        model=model,
    )


class UsageMeter:
    """Watches a response body go by and extracts its token usage, without holding it whole."""

    def __init__(self, content_type: str, content_length: int | None = None) -> None:
        ct = content_type.split(";", 1)[0].strip().lower()
        self.mode = "sse" if ct == "text/event-stream" else "json" if ct.endswith("json") else None
        self.counts: dict[str, int] = {}
        self.model = ""
        self.complete = False  # the usage is final (JSON body all here, or SSE message_stop seen)
        self._expected = content_length
        self._buf = bytearray()
        self._skip_line = False
        self._event = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        if self.mode == "sse":
            self._feed_sse(chunk)
        elif self.mode == "json":
            if len(self._buf) + len(chunk) > JSON_USAGE_CAP:
                self.mode = None
                self._buf = bytearray()
            else:
                self._buf += chunk
                if self._expected is not None and len(self._buf) >= self._expected:
                    self.complete = True

    def finish(self) -> Usage:
        if self.mode == "json" and self._buf:
            try:
                body = json.loads(bytes(self._buf))
            except (ValueError, RecursionError):
                body = None
            if isinstance(body, dict):
                _usage_from(body.get("usage"), self.counts)
                self.model = _model_from(body.get("model")) or self.model
            self._buf = bytearray()
        return _usage_of(self.counts, self.model)

    def _feed_sse(self, chunk: bytes) -> None:
        buf = self._buf
        buf += chunk
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[start:nl])
            start = nl + 1
            if self._skip_line:
                self._skip_line = False
                continue
            self._sse_line(line[:-1] if line.endswith(b"\r") else line)
        del buf[:start]
        if len(buf) > SSE_LINE_CAP:  # an absurd line: forget it, resync at the next newline
            buf.clear()
            self._skip_line = True

    def _sse_line(self, line: bytes) -> None:
        if not line:
            self._dispatch()
        elif line.startswith(b"event:"):
            self._event = line[6:].strip()
        elif line.startswith(b"data:"):
            data = line[5:]
            self._data.append(data[1:] if data.startswith(b" ") else data)

    def _dispatch(self) -> None:
        event, data = self._event, self._data
        self._event, self._data = b"", []
        if event == b"message_stop":
            self.complete = True
            return
        if not data or event not in (b"message_start", b"message_delta", b""):
            return
        payload = b"\n".join(data)
        if b'"usage"' not in payload and b"message_stop" not in payload:
            return
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError):
            return
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if kind == "message_stop":
            self.complete = True
        elif kind == "message_start" and isinstance(obj.get("message"), dict):
            _usage_from(obj["message"].get("usage"), self.counts)
            self.model = _model_from(obj["message"].get("model")) or self.model
        elif kind == "message_delta":
            _usage_from(obj.get("usage"), self.counts)


def finish_usage(meter: UsageMeter, request_body: bytes) -> Usage:
    """The meter's final Usage; the model named by the request when the response named none."""
    usage = meter.finish()
    if not usage.model and request_body:
        usage.model = request_model(request_body)
    return usage
