"""The daemon's local chat API as the terminal client sees it (ngb/cli/chat.py): one chat's
messages, posting, the server-sent event stream, and a follower that delivers every new message
once (over the stream, or by polling while the stream is unavailable).

- ``POST /api/chats/{chat}/messages`` ``{"sender", "text"}`` -> 202 ``{"id"}``; with files, the same
  as ``multipart/form-data`` (fields ``sender``, ``text``, one ``file`` part per file)
- ``GET  /api/files/{id}`` -> an attachment's bytes (message JSON names them in ``attachments``)
- ``GET  /api/chats/{chat}/messages?after=ID`` -> list of messages, oldest first
- ``GET  /api/chats/{chat}/events?after=ID`` -> server-sent events, one message per event
- ``GET  /api/chats`` and ``GET /api/info``
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

import httpx
import trio

from .chat_files import FileToSend, multipart_files

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NO_REPLY = 3

DEFAULT_WAIT = 60.0
DEFAULT_SETTLE = 2.0
DEFAULT_HISTORY = 20
POLL_INTERVAL = 1.0
# After the event stream failed, poll for this long before trying the stream again.
SSE_RETRY_AFTER = 30.0
# The server sends a ": ping" comment every 15 s; a stream silent for longer is dead.
SSE_READ_TIMEOUT = 45.0
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 15.0
UPLOAD_TIMEOUT = 300.0  # writing a large file, and the daemon storing it

Message = dict[str, Any]
OnMessage = Callable[[Message], Awaitable[None] | None]


class ChatError(Exception):
    """A problem worth one line on stderr and a non-zero exit.

    ``kind`` is one of "unreachable", "auth", "unknown_chat", "too_large", "file", "http", "protocol".
    """

    def __init__(self, message: str, kind: str = "http"):
        super().__init__(message)
        self.kind = kind


class StreamUnavailable(Exception):
    """The event stream can't be used right now; poll instead."""


class ChatApi:
    """Thin wrapper around the daemon's HTTP API that turns failures into ChatError."""

    def __init__(
        self, client: httpx.AsyncClient, base_url: str, chat: str, token: str | None, token_hint: str | None = None
    ):
        self.client = client
        self.base_url = base_url
        self.chat = chat
        self.token = token
        self.token_hint = token_hint  # why no token was found, when none was
        self.chat_path = f"/api/chats/{quote(chat, safe='')}"

    def unreachable(self) -> ChatError:
        return ChatError(f'cannot reach the daemon at {self.base_url}: is "ngb run" running?', "unreachable")

    def check(self, resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        detail = _error_detail(resp)
        if resp.status_code == 401:
            if self.token:
                raise ChatError(
                    f"the daemon at {self.base_url} rejected the API token: check NGB_API_TOKEN ({detail})",
                    "auth",
                )
            if self.token_hint:
                raise ChatError(f"the daemon at {self.base_url} needs its API token: {self.token_hint}", "auth")
            raise ChatError(
                f"the daemon at {self.base_url} needs its API token: run ngb as the daemon's user "
                "(it reads the token from the state dir), or set NGB_API_TOKEN (or pass --token)",
                "auth",
            )
        if resp.status_code == 403:
            raise ChatError(f"the daemon refused access: {detail}", "auth")
        if resp.status_code == 413:
            raise ChatError(f"the daemon refused the message as too large: {detail}", "too_large")
        if resp.status_code == 404 and resp.url.path.startswith("/api/chats/"):
            raise ChatError(f'unknown chat "{self.chat}": {detail}', "unknown_chat")
        raise ChatError(f"the daemon answered {resp.status_code} for {resp.url.path}: {detail}")

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = await self.client.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise self.unreachable() from exc
        self.check(resp)
        try:
            return resp.json()
        except ValueError as exc:
            raise ChatError(f"the daemon sent a reply that is not JSON for {path}", "protocol") from exc

    async def info(self) -> dict[str, Any]:
        """``/api/info``, or defaults if an older daemon lacks it (auth errors still raise)."""
        try:
            data = await self.request("GET", "/api/info")
        except ChatError as exc:
            if exc.kind in ("auth", "unreachable"):
                raise
            data = {}
        return data if isinstance(data, dict) else {}

    async def chat_entry(self) -> dict[str, Any] | None:
        try:
            chats = await self.request("GET", "/api/chats")
        except ChatError:
            return None
        for entry in chats if isinstance(chats, list) else []:
            if isinstance(entry, dict) and entry.get("name") == self.chat:
                return entry
        return None

    async def messages(self, after: int) -> list[Message]:
        data = await self.request("GET", f"{self.chat_path}/messages", params={"after": after})
        if not isinstance(data, list):
            raise ChatError("the daemon sent an unexpected message list", "protocol")
        return [m for m in data if _valid(m)]

    async def post(self, sender: str, text: str, files: Sequence[FileToSend] = ()) -> int:
        """Post a message; with files as multipart/form-data, else as JSON. Returns its id."""
        path = f"{self.chat_path}/messages"
        if not files:
            data = await self.request("POST", path, json={"sender": sender, "text": text})
        else:
            timeout = httpx.Timeout(UPLOAD_TIMEOUT, connect=CONNECT_TIMEOUT)
            try:
                with multipart_files(files) as parts:
                    data = await self.request(
                        "POST", path, data={"sender": sender, "text": text}, files=parts, timeout=timeout,
                        # X-Requested-With: as the page sends its form posts; Connection: close: a
                        # daemon that refuses the body unread (413) leaves no half-read connection
                        headers={"X-Requested-With": "ngb-chat", "Connection": "close"},
                    )
            except OSError as exc:  # the file went away or became unreadable since it was checked
                raise ChatError(f"cannot read {exc.filename or 'a file'}: {exc.strerror or exc}", "file") from exc
            except ChatError as exc:
                # A daemon that refuses a body past its limit may close the connection mid-upload.
                if exc.kind == "unreachable" and isinstance(exc.__cause__, httpx.WriteError | httpx.RemoteProtocolError):
                    raise ChatError(
                        "the daemon closed the connection during the upload (a file over its size limit?)",
                        "too_large",
                    ) from exc
                raise
        try:
            return int(data["id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ChatError("the daemon accepted the message but sent no id", "protocol") from exc

    async def events(self, after: int) -> AsyncGenerator[Message, None]:
        """Yield messages from the SSE stream. Ends when the server closes the stream.

        Raises StreamUnavailable if the stream can't be opened or breaks, ChatError when
        the daemon refuses the token (401/403).
        """
        timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT, read=SSE_READ_TIMEOUT)
        try:
            async with self.client.stream(
                "GET",
                f"{self.chat_path}/events",
                params={"after": after},
                headers={"Accept": "text/event-stream"},
                timeout=timeout,
            ) as resp:
                if resp.status_code in (401, 403):
                    await resp.aread()
                    self.check(resp)
                # Anything else unusual (404 from a daemon without the stream, 5xx, a proxy
                # answering HTML) means "poll instead"; polling reports real errors.
                ctype = resp.headers.get("content-type", "")
                if resp.status_code != 200 or "text/event-stream" not in ctype:
                    raise StreamUnavailable(f"events answered {resp.status_code} {ctype}")
                data_lines: list[str] = []
                event = ""
                async for line in resp.aiter_lines():
                    if line == "":
                        kind, event = event, ""
                        if data_lines and kind not in ("", "message"):
                            data_lines = []  # a live preview (event: preview) is not a message
                        if data_lines:
                            payload = "\n".join(data_lines)
                            data_lines = []
                            try:
                                msg = json.loads(payload)
                            except ValueError:
                                continue
                            if _valid(msg):
                                yield msg
                        continue
                    if line.startswith(":"):
                        continue  # comment, e.g. ": ping"
                    field, _, value = line.partition(":")
                    if value.startswith(" "):
                        value = value[1:]
                    if field == "data":
                        data_lines.append(value)
                    elif field == "event":
                        event = value
        except httpx.TransportError as exc:
            raise StreamUnavailable(str(exc) or type(exc).__name__) from exc


def _valid(msg: Any) -> bool:
    return isinstance(msg, dict) and isinstance(msg.get("id"), int) and not isinstance(msg.get("id"), bool)


def _error_detail(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    text = resp.text.strip().splitlines()
    return text[0][:200] if text else resp.reason_phrase or str(resp.status_code)


class Follower:
    """Delivers every message with id > last_id exactly once, via SSE or polling."""

    def __init__(self, api: ChatApi, last_id: int, on_message: OnMessage, notice: Callable[[str], None]):
        self.api = api
        self.last_id = last_id
        self.on_message = on_message
        self.notice = notice
        self.mode = "none"
        self._lost = False

    async def _deliver(self, msg: Message) -> None:
        if msg["id"] <= self.last_id:
            return
        self.last_id = msg["id"]
        if self._lost:
            self._lost = False
            self.notice("reconnected")
        result = self.on_message(msg)
        if result is not None:
            await result

    def _connection_lost(self) -> None:
        if not self._lost:
            self._lost = True
            self.notice("lost the connection to the daemon, retrying...")

    async def poll_once(self) -> None:
        try:
            batch = await self.api.messages(self.last_id)
        except ChatError as exc:
            if exc.kind != "unreachable":
                raise
            self._connection_lost()
            return
        if self._lost:
            self._lost = False
            self.notice("reconnected")
        for msg in batch:
            await self._deliver(msg)

    async def run(self) -> None:
        """Follow the chat forever (cancel to stop). Raises ChatError for fatal problems."""
        while True:
            try:
                self.mode = "sse"
                async with aclosing(self.api.events(self.last_id)) as stream:
                    async for msg in stream:
                        await self._deliver(msg)
                # Server closed the stream normally: catch up and reconnect.
                await self.poll_once()
                await trio.sleep(0.2)
                continue
            except StreamUnavailable:
                pass
            self.mode = "poll"
            with trio.move_on_after(SSE_RETRY_AFTER):
                while True:
                    await self.poll_once()
                    await trio.sleep(POLL_INTERVAL)


def make_client(base_url: str, token: str | None) -> httpx.AsyncClient:
    headers = {"User-Agent": "ngb-chat"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
        trust_env=False,  # loopback: never go through a proxy from the environment
    )
