"""A local fake of the Telegram Bot API on loopback, speaking its real wire format, so the real
python-telegram-bot talks to it unchanged (``Bot(token, base_url=fake.base_url)``).

HTTP/1.1 on a raw trio socket (h11), so the fake controls the connections: ``drop()`` cuts every
open connection (a long poll in flight sees the socket die) and ``down()`` / ``up()`` refuse new
ones meanwhile (accepted, then closed at once), like a network outage.

Methods: getMe, getFile, getUpdates (long poll: offset confirms, limit, timeout, allowed_updates; 409
Conflict while a webhook is set, like Telegram), sendMessage (parse_mode HTML checked like Telegram
does: unknown/unbalanced tags are "can't parse entities"; 4096-character limit after entity
parsing; reply_parameters; message_thread_id), editMessageText (of the bot's own messages, checked
like sendMessage; 400 "message to edit not found" for a deleted or unknown message, "message is not
modified" for the same text and formatting; each edit in ``edits``, every text a message showed in
``versions(chat_id, message_id)``), sendChatAction, setWebhook / deleteWebhook /
getWebhookInfo (recorded in ``webhook_calls``, secret_token included), setMyCommands,
setMessageReaction and users' ``message_reaction`` updates (delivered only when allowed_updates asks
for them: tests/fakes/telegram_reactions.py); anything else is answered ``{"ok": true, "result": true}``. A wrong token gets 401 Unauthorized like the real API.
Requests may be form-encoded (what PTB sends), JSON, or multipart/form-data (file uploads).

Files (tests/fakes/telegram_files.py): ``user_media(chat, "photo" | "document" | "voice" | "audio" |
"video" | "video_note" | "animation" | "sticker", data, caption=..., media_group_id=...)`` queues a
user's message with a file (a photo in sizes, as Telegram sends it: ``photo_sizes``); getFile answers
its ``file_path`` (400 "file is too big" past 20 MB, as the declared size says) and
``GET /file/bot<token>/<file_path>`` serves the bytes (``fail_download(status)``: the next download
fails). sendPhoto / sendDocument / sendVoice take the file as a multipart part named after the field
(or ``attach://<name>``), check the caption (1024 characters after entity parsing, HTML like
sendMessage) and record each upload in ``uploads``: method, chat_id, caption, bytes, filename, mime.

Forum topics and replies, as Telegram has them: ``create_topic(chat_id, name)`` opens a topic (its
id is the id of its ``forum_topic_created`` service message); a user's message in a topic carries
``message_thread_id``, ``is_topic_message`` and, unless it replies to something else, a
``reply_to_message`` that is the topic's creation message. ``delete_message`` deletes one. A
sendMessage/sendChatAction with a ``message_thread_id`` that is no open topic of a forum is 400
"message thread not found"; a reply to a message that does not exist (deleted) is 400 "message to be
replied not found" unless ``allow_sending_without_reply``, then it is sent as no reply. A sent
message lands in ``message_thread_id`` if given, else in the topic of the message it replies to,
else in the chat itself (a forum's General topic): ``sent[i]["topic"]``, ``actions[i]["topic"]``.

Webhook: while one is set (``webhook``), queued updates are not handed to getUpdates but POSTed,
one at a time and in order, as JSON to its URL with the ``X-Telegram-Bot-Api-Secret-Token`` header
(when a secret_token was set), like Telegram does. An update leaves the queue only on a 2xx answer;
any other answer (or no connection) is retried after ``retry_delay`` and reported by getWebhookInfo
(``last_error_message``). Every attempt is in ``deliveries``; ``lose_next_ack()`` makes the fake
act as if the next 2xx never arrived (a cut connection), so that update is delivered again.

Scripting from a test::

    fake = await FakeTelegram.start(nursery, token="123:abc")
    fake.user_message(-100123, "hi @andy_bot", chat_type="supergroup")   # queues an update
    fake.fail_next("sendMessage", 502)                                   # one failure
    fake.sent                                                            # sendMessage calls
    await fake.wait_for_sent(lambda s: len(s) >= 2)
    fake.drop(); fake.down(); ...; fake.up()
    fake.webhook                     # {"url", "secret_token", ...} once setWebhook was called, else None
    fake.deliveries                  # webhook POSTs: update_id, status (None: no connection), secret
    fake.lose_next_ack()             # the next delivered update is delivered once more

Run by hand: ``python -m tests.fakes.telegram --port 8081 --token 123:abc``; it then also serves
``POST /_fake/message`` (JSON: chat_id, text, chat_type, user_id, first_name) and ``GET /_fake/sent``.
"""

from __future__ import annotations

import argparse
import contextlib
import html.parser
import itertools
import json
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import httpx
import trio

from .telegram_files import FilesMixin, parse_multipart
from .telegram_reactions import FakeReactions

TEXT_LIMIT = 4096
ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "tg-spoiler",
                "span", "blockquote", "tg-emoji"}
_JSON_KEYS = {"chat_id", "offset", "limit", "timeout", "allowed_updates", "reply_parameters", "entities",
              "message_thread_id", "reply_to_message_id", "disable_notification", "reply_markup",
              "link_preview_options", "allow_sending_without_reply", "drop_pending_updates", "commands", "reaction"}


class _EntityChecker(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.error: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS and self.error is None:
            self.error = f'Unsupported start tag "{tag}"'
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if (not self.stack or self.stack[-1] != tag) and self.error is None:
            self.error = f'Unexpected end tag "{tag}"'
        elif self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(text: str) -> tuple[str, str | None]:
    """The plain text Telegram would show, and the parse error it would give (or None)."""
    p = _EntityChecker()
    p.feed(text)
    p.close()
    error = p.error or (f'Can\'t find end tag corresponding to start tag "{p.stack[-1]}"' if p.stack else None)
    if re.search(r"<(?![a-zA-Z/])", text) or re.search(r"&(?![a-zA-Z]+;|#\d+;|#x[0-9a-fA-F]+;)", text):
        error = error or "Unsupported start tag / unescaped entity"
    return "".join(p.text), error


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class FakeTelegram(FakeReactions, FilesMixin):
    def __init__(self, *, token: str = "123456:TEST-token", username: str = "andy_bot", host: str = "127.0.0.1") -> None:
        self.token = token
        self.bot = {"id": int(token.split(":")[0]) if token.split(":")[0].isdigit() else 999,
                    "is_bot": True, "first_name": "Andy", "username": username,
                    "can_join_groups": True, "can_read_all_group_messages": False,
                    "supports_inline_queries": False}
        self.host = host
        self.port = 0
        self.updates: list[dict[str, Any]] = []  # not yet confirmed
        self.sent: list[dict[str, Any]] = []  # every successful sendMessage (params + the message)
        self.actions: list[dict[str, Any]] = []  # sendChatAction calls ("typing...")
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (method, params)
        self.poll_count = 0
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count] = {}
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}  # (chat, message id) -> message, not deleted
        self.edits: list[dict[str, Any]] = []  # every successful editMessageText: chat_id, message_id, text, params
        self._shown: dict[tuple[int, int], tuple[str, str | None]] = {}  # bot message -> (text, HTML source)
        self.topics: dict[int, dict[int, str]] = {}  # forum chat -> topic id -> name
        self._changed = trio.Event()
        self._failures: dict[str, list[tuple[int, str]]] = {}
        self._pass_first: dict[str, int] = {}
        self._conns: set[trio.SocketStream] = set()
        self._conn_scopes: set[trio.CancelScope] = set()
        self._down = False
        self._cancel: trio.CancelScope | None = None
        self.connections_accepted = 0
        self.webhook: dict[str, Any] | None = None  # what setWebhook set (url, secret_token, ...)
        self.webhook_calls: list[tuple[str, dict[str, Any]]] = []  # setWebhook / deleteWebhook, in order
        self.deliveries: list[dict[str, Any]] = []  # each webhook POST: update_id, status, error, secret
        self.retry_delay = 0.05  # seconds before a failed webhook delivery is tried again
        self.webhook_error: tuple[int, str] | None = None  # (unix time, message) of the last failed delivery
        self._lose_acks = 0
        self._init_files()
        self._init_reactions()

    # -- life cycle ----------------------------------------------------------------------------------
    @classmethod
    async def start(cls, nursery: trio.Nursery, **kw: Any) -> FakeTelegram:
        fake = cls(**kw)
        await nursery.start(fake.serve)
        return fake

    @classmethod
    @contextlib.asynccontextmanager
    async def serving(cls, **kw: Any) -> AsyncIterator[FakeTelegram]:
        """The fake, served for the length of the block (what a test fixture yields)."""
        async with trio.open_nursery() as nursery:
            yield await cls.start(nursery, **kw)
            nursery.cancel_scope.cancel()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/bot"

    async def serve(self, *, port: int = 0, task_status: trio.TaskStatus[FakeTelegram] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        with trio.CancelScope() as scope:
            self._cancel = scope
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver_webhooks)
                task_status.started(self)
                await trio.serve_listeners(self._connection, listeners, handler_nursery=nursery)

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    # -- outages -------------------------------------------------------------------------------------
    def drop(self) -> None:
        """Cut every open connection now (long polls in flight included)."""
        for scope in list(self._conn_scopes):
            scope.cancel()

    def down(self) -> None:
        """Cut every connection and refuse new ones until `up()`."""
        self._down = True
        self.drop()

    def up(self) -> None:
        self._down = False

    def fail_next(self, method: str, status: int, description: str = "", times: int = 1, after: int = 0) -> None:
        """The next ``times`` calls of ``method`` fail with ``status``, once ``after`` calls went through."""
        self._pass_first[method] = after
        for _ in range(times):
            self._failures.setdefault(method, []).append((status, description))

    # -- inbound traffic -----------------------------------------------------------------------------
    def user_message(
        self,
        chat_id: int,
        text: str,
        *,
        chat_type: str | None = None,
        user_id: int = 1001,
        first_name: str = "Alice",
        last_name: str | None = None,
        username: str | None = "alice",
        chat_title: str | None = None,
        reply_to: dict[str, Any] | None = None,
        thread_id: int | None = None,
        content: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Queue a user's message as an update (entities for @mentions and /commands filled in, in
        UTF-16 offsets as Telegram does). With ``content`` (a photo, a document...), ``text`` is
        its caption. Returns the Message object."""
        chat_type = chat_type or ("private" if chat_id > 0 else "supergroup")
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat.update(first_name=first_name, username=username)
        else:
            chat["title"] = chat_title or f"Group {chat_id}"
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if last_name:
            user["last_name"] = last_name
        if username:
            user["username"] = username
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat_id),
            "from": user,
            "chat": chat,
            "date": int(time.time()),
        }
        if content is not None:
            message.update(content)
            if text:
                message["caption"] = text
        else:
            message["text"] = text
        text = text or ""
        entities = []
        for m in re.finditer(r"(?<![\w@])(@[A-Za-z0-9_]{3,32}|/[A-Za-z0-9_]+(?:@[A-Za-z0-9_]+)?)", text):
            entities.append({
                "type": "mention" if m.group(1).startswith("@") else "bot_command",
                "offset": utf16_len(text[: m.start(1)]),
                "length": utf16_len(m.group(1)),
            })
        if entities:
            message["caption_entities" if content is not None else "entities"] = entities
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
            if reply_to is None:  # Telegram: a topic's messages "reply" to its creation message
                reply_to = self.messages.get((chat_id, thread_id))
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        self.messages[(chat_id, message["message_id"])] = message
        self.push_update({"message": message})
        return message

    def create_topic(self, chat_id: int, name: str) -> int:
        """A forum topic in chat_id (made a forum): returns its id (message_thread_id)."""
        topic_id = self._next_message_id(chat_id)
        self.topics.setdefault(chat_id, {})[topic_id] = name
        self.messages[(chat_id, topic_id)] = {
            "message_id": topic_id, "message_thread_id": topic_id, "is_topic_message": True,
            "from": {"id": 1001, "is_bot": False, "first_name": "Alice"}, "date": int(time.time()),
            "chat": {"id": chat_id, "type": "supergroup", "title": f"Group {chat_id}", "is_forum": True},
            "forum_topic_created": {"name": name, "icon_color": 7322096},
        }
        return topic_id

    def delete_message(self, chat_id: int, message_id: int) -> None:
        self.messages.pop((chat_id, message_id), None)

    def _topic_error(self, chat_id: int, params: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        topic = params.get("message_thread_id")
        if topic is not None and int(topic) not in self.topics.get(chat_id, {}):
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message thread not found"}
        return None
    def push_update(self, update: dict[str, Any]) -> int:
        update_id = next(self._update_ids)
        self.updates.append({"update_id": update_id, **update})
        self._notify()
        return update_id

    def _next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_sent(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        while not predicate(self.sent):
            await self._changed.wait()
        return self.sent

    async def wait_for_polls(self, count: int) -> None:
        while self.poll_count < count:
            await self._changed.wait()

    # -- webhook delivery ------------------------------------------------------------------------------
    def lose_next_ack(self, times: int = 1) -> None:
        """The next ``times`` 2xx answers to a webhook POST are treated as lost: redelivered."""
        self._lose_acks += times

    def delivered(self, update_id: int) -> list[dict[str, Any]]:
        """The webhook POSTs of one update so far."""
        return [d for d in self.deliveries if d["update_id"] == update_id]

    async def _deliver_webhooks(self) -> None:
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            while True:
                hook = self.webhook
                if hook is not None:
                    self.drop_unwanted(hook.get("allowed_updates"))
                if hook is None or not self.updates:
                    await self._changed.wait()
                    continue
                update = self.updates[0]
                headers = {"Content-Type": "application/json"}
                if hook.get("secret_token"):
                    headers["X-Telegram-Bot-Api-Secret-Token"] = str(hook["secret_token"])
                attempt: dict[str, Any] = {"update_id": update["update_id"], "status": None, "error": None,
                                           "secret": hook.get("secret_token"), "url": hook["url"]}
                self.deliveries.append(attempt)
                try:
                    response = await client.post(hook["url"], content=json.dumps(update).encode(), headers=headers)
                    attempt["status"] = response.status_code
                except httpx.HTTPError as exc:
                    attempt["error"] = f"{type(exc).__name__}: {exc}"
                ok = attempt["status"] is not None and 200 <= attempt["status"] < 300
                if ok and self._lose_acks:
                    self._lose_acks -= 1
                    attempt["ack_lost"] = True
                    ok = False
                if ok:
                    if self.updates and self.updates[0] is update:
                        self.updates.pop(0)
                else:
                    why = attempt["error"] or f"Wrong response from the webhook: {attempt['status']}"
                    self.webhook_error = (int(time.time()), "Connection lost" if attempt.get("ack_lost") else why)
                self._notify()
                if not ok:
                    await trio.sleep(self.retry_delay)

    # -- HTTP ------------------------------------------------------------------------------------------
    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections_accepted += 1
        try:
            if not self._down:
                await self._serve_connection(stream)
        finally:
            # dropped, refused or done: close abruptly (RST), so a client sees a dead connection
            with contextlib.suppress(OSError):
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await trio.aclose_forcefully(stream)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        with trio.CancelScope() as scope:
            self._conn_scopes.add(scope)
            try:
                while True:
                    request, body = await self._read_request(stream, conn)
                    if request is None:
                        return
                    status, payload = await self._dispatch(request, body)
                    if isinstance(payload, bytes):  # a file download
                        data, kind = payload, "application/octet-stream"
                    else:
                        data, kind = json.dumps(payload).encode(), "application/json"
                    headers = [("content-type", kind), ("content-length", str(len(data)))]
                    await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                    await stream.send_all(conn.send(h11.Data(data=data)))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
            except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
                return
            finally:
                self._conn_scopes.discard(scope)

    async def _read_request(self, stream: trio.SocketStream, conn: h11.Connection) -> tuple[h11.Request | None, bytes]:
        request = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return None, b""
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, body
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    async def _dispatch(self, request: h11.Request, body: bytes) -> tuple[int, dict[str, Any] | bytes]:
        url = urlsplit(request.target.decode())
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        params: dict[str, Any] = dict(parse_qsl(url.query))
        if url.path.startswith("/file/bot"):
            return self._download(url.path)
        if body:
            content_type = headers.get("content-type", "")
            if content_type.startswith("application/json"):
                params.update(json.loads(body))
            elif content_type.startswith("multipart/form-data"):
                fields, files = parse_multipart(content_type, body)
                params.update(fields)
                params["_files"] = files
            else:
                params.update(parse_qsl(body.decode()))
        for key in list(params):
            if key in _JSON_KEYS and isinstance(params[key], str):
                try:
                    params[key] = json.loads(params[key])
                except ValueError:
                    pass
        if url.path.startswith("/_fake/"):
            return self._control(url.path, params)
        m = re.fullmatch(r"/bot([^/]+)/(\w+)", url.path)
        if not m:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        token, method = m.group(1), m.group(2)
        if token != self.token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        self.requests.append((method, params))
        failures = self._failures.get(method)
        if failures and self._pass_first.get(method, 0) > 0:
            self._pass_first[method] -= 1
        elif failures:
            status, description = failures.pop(0)
            payload: dict[str, Any] = {"ok": False, "error_code": status,
                                       "description": description or f"fake failure {status}"}
            if status == 429:
                payload["parameters"] = {"retry_after": 1}
            return status, payload
        handler = getattr(self, "_m_" + method, None)
        if handler is None:
            return 200, {"ok": True, "result": True}
        return await handler(params)

    def _control(self, path: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/_fake/message":
            msg = self.user_message(int(params["chat_id"]), str(params["text"]), chat_type=params.get("chat_type"),
                                    user_id=int(params.get("user_id", 1001)),
                                    first_name=str(params.get("first_name", "Alice")))
            return 200, {"ok": True, "result": msg}
        if path == "/_fake/sent":
            return 200, {"ok": True, "result": self.sent}
        return 404, {"ok": False, "error_code": 404, "description": "Not Found"}

    # -- Bot API methods ---------------------------------------------------------------------------------
    async def _m_getMe(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, {"ok": True, "result": self.bot}

    async def _m_getUpdates(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.webhook is not None:
            return 409, {"ok": False, "error_code": 409, "description": "Conflict: can't use getUpdates method while "
                         "webhook is active; use deleteWebhook to delete the webhook first"}
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        if "allowed_updates" in params:  # else the previous setting holds, as on Telegram
            self.allowed_updates = list(params["allowed_updates"] or [])
        if offset:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        self.poll_count += 1
        self._notify()
        with trio.move_on_after(timeout):
            while True:
                self.drop_unwanted(self.allowed_updates)
                if self.updates:
                    break
                await self._changed.wait()
        return 200, {"ok": True, "result": self.updates[:limit]}

    async def _m_sendMessage(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        chat_id = int(params["chat_id"])
        text = str(params.get("text", ""))
        plain = text
        if params.get("parse_mode") == "HTML":
            plain, error = parse_html(text)
            if error:
                return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: can't parse entities: {error}"}
        if not plain.strip():
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
        if (refused := self._topic_error(chat_id, params)) is not None:
            return refused
        if utf16_len(plain) > TEXT_LIMIT:
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}
        message = self._bot_message(chat_id, text=plain)
        if (refused := self._place(chat_id, params, message)) is not None:
            return refused
        self.sent.append({"params": params, "message": message, "text": plain,
                          "reply_to": message.get("reply_to_message", {}).get("message_id"),
                          "topic": message.get("message_thread_id")})
        self._shown[(chat_id, message["message_id"])] = _shown(plain, text, params)
        self._notify()
        return 200, {"ok": True, "result": message}

    async def _m_editMessageText(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """As Telegram: only the bot's own messages; the same text and formatting is "not modified"."""
        chat_id, message_id = int(params["chat_id"]), int(params["message_id"])
        text = str(params.get("text", ""))
        plain = text
        if params.get("parse_mode") == "HTML":
            plain, error = parse_html(text)
            if error:
                return _bad(f"can't parse entities: {error}")
        message = self.messages.get((chat_id, message_id))
        if message is None:
            return _bad("message to edit not found")
        if message.get("from", {}).get("id") != self.bot["id"]:
            return _bad("message can't be edited")
        if not plain.strip():
            return _bad("message text is empty")
        if utf16_len(plain) > TEXT_LIMIT:
            return _bad("MESSAGE_TOO_LONG")
        shown = _shown(plain, text, params)
        if self._shown.get((chat_id, message_id)) == shown:
            return _bad("message is not modified: specified new message content and reply markup are exactly the "
                        "same as a current content and reply markup of the message")
        self._shown[(chat_id, message_id)] = shown
        message.update(text=plain, edit_date=int(time.time()))
        self.edits.append({"chat_id": chat_id, "message_id": message_id, "text": plain, "params": params})
        self._notify()
        return 200, {"ok": True, "result": message}

    def versions(self, chat_id: int, message_id: int) -> list[str]:
        """Every text the bot's message showed, the first (sendMessage) and each edit's, in order."""
        first = [s["text"] for s in self.sent if s["message"]["chat"]["id"] == chat_id
                 and s["message"]["message_id"] == message_id]
        return first + [e["text"] for e in self.edits if (e["chat_id"], e["message_id"]) == (chat_id, message_id)]

    def _bot_message(self, chat_id: int, **content: Any) -> dict[str, Any]:
        return {"message_id": self._next_message_id(chat_id),
                "from": {k: self.bot[k] for k in ("id", "is_bot", "first_name", "username")},
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"},
                "date": int(time.time()), **content}

    def _place(self, chat_id: int, params: dict[str, Any], message: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """A sent message's reply and topic, as Telegram has them (an error, or None: stored)."""
        reply = params.get("reply_parameters") or (
            {"message_id": params["reply_to_message_id"],
             "allow_sending_without_reply": params.get("allow_sending_without_reply")}
            if params.get("reply_to_message_id") else None
        )
        target = self.messages.get((chat_id, int(reply["message_id"]))) if reply else None
        if reply and target is None:
            if not reply.get("allow_sending_without_reply"):
                return 400, {"ok": False, "error_code": 400, "description": "Bad Request: message to be replied not found"}
            reply = None  # sent, as no reply
        if reply and target is not None:
            message["reply_to_message"] = target
        topic = params.get("message_thread_id") or (target or {}).get("message_thread_id")
        if topic and chat_id in self.topics:
            message["message_thread_id"] = int(topic)
            message["is_topic_message"] = True
        self.messages[(chat_id, message["message_id"])] = message
        return None

    async def _m_sendChatAction(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if (error := self._topic_error(int(params["chat_id"]), params)) is not None:
            return error
        topic = params.get("message_thread_id")
        self.actions.append({"chat_id": int(params["chat_id"]), "action": params.get("action"), "at": trio.current_time(),
                             "sent_before": len(self.sent), "topic": int(topic) if topic is not None else None})
        return 200, {"ok": True, "result": True}

    async def _m_setWebhook(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.webhook_calls.append(("setWebhook", dict(params)))
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        if not url:  # Telegram's way of deleting it
            return await self._m_deleteWebhook(params, record=False)
        if not url.startswith(("https://", "http://127.", "http://localhost")):
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: bad webhook: HTTPS url must be provided for webhook"}
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            return 400, {"ok": False, "error_code": 400, "description": "Bad Request: secret token contains unallowed characters"}
        if params.get("drop_pending_updates"):
            self.updates.clear()
        self.webhook = {"url": url, "secret_token": None if secret is None else str(secret),
                        "allowed_updates": params.get("allowed_updates"), "max_connections": params.get("max_connections")}
        self.webhook_error = None
        self._notify()
        return 200, {"ok": True, "result": True, "description": "Webhook was set"}

    async def _m_deleteWebhook(self, params: dict[str, Any], *, record: bool = True) -> tuple[int, dict[str, Any]]:
        if record:
            self.webhook_calls.append(("deleteWebhook", dict(params)))
        if params.get("drop_pending_updates"):
            self.updates.clear()
        self.webhook = None
        self._notify()
        return 200, {"ok": True, "result": True, "description": "Webhook was deleted"}

    async def _m_getWebhookInfo(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        info: dict[str, Any] = {"url": self.webhook["url"] if self.webhook else "", "has_custom_certificate": False,
                                "pending_update_count": len(self.updates)}
        if self.webhook is not None:
            info["allowed_updates"] = self.webhook.get("allowed_updates") or []
            if self.webhook_error is not None:
                info["last_error_date"], info["last_error_message"] = self.webhook_error
        return 200, {"ok": True, "result": info}


def _bad(description: str) -> tuple[int, dict[str, Any]]:
    return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: {description}"}


def _shown(plain: str, text: str, params: dict[str, Any]) -> tuple[str, str | None]:
    """What Telegram compares for "not modified": the text, and its formatting (the HTML source when
    it has any tag)."""
    return plain, text if params.get("parse_mode") == "HTML" and "<" in text else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", default="123456:TEST-token")
    parser.add_argument("--username", default="andy_bot")
    args = parser.parse_args()

    async def run() -> None:
        fake = FakeTelegram(token=args.token, username=args.username, host=args.host)
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: fake.serve(port=args.port, task_status=task_status))
            print(f"fake Telegram Bot API: NGB_CHANNELS='{{\"telegram\": {{\"base_url\": \"{fake.base_url}\"}}}}' "
                  f"NGB_TELEGRAM_TOKEN={fake.token}", flush=True)

    trio.run(run)


if __name__ == "__main__":
    main()
