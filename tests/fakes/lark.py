"""A local fake of Feishu/Lark's Open Platform on one loopback port, speaking the real wire
formats, so lark-oapi (its transport, models and protobuf frames) talks to it unchanged
(``domain = fake.domain``).

HTTP (JSON; errors as Lark sends them: ``{"code": N, "msg": ...}``, HTTP 400 for auth errors):
``POST /open-apis/auth/v3/tenant_access_token/internal`` (app_id + app_secret),
``GET /open-apis/bot/v3/info``, ``POST /callback/ws/endpoint`` (``{"AppID", "AppSecret"}`` ->
``data.URL`` + ``data.ClientConfig``), ``POST /open-apis/im/v1/messages?receive_id_type=chat_id``,
``POST /open-apis/im/v1/messages/{id}/reply`` (both record their calls in ``sent`` and honour the
``uuid`` idempotency key), ``PUT /open-apis/im/v1/messages/{id}`` (an edit of a text or post
message: 230011 "withdrawn" after ``recall(id)``, 230001 for an id Lark never gave; each edit in
``edits``, every text a message showed in ``versions(id)``), ``GET
/open-apis/contact/v3/users/{open_id}``, and the files calls (message resources, image and file
uploads: tests/fakes/lark_files.py), the reactions calls and ``GET /open-apis/im/v1/messages/{id}``
(tests/fakes/lark_reactions.py). Calls other than the
token's need ``Authorization: Bearer <a token this fake issued>``.

Websocket (``/ws/v2?device_id=..&service_id=..``): binary protobuf ``Frame``s (lark_oapi's
pbbp2). Events go out as data frames (``type=event``, ``message_id``, ``sum``/``seq``,
``trace_id``), optionally split over several frames; each must be answered with a data frame with
the same ``message_id`` and payload ``{"code": 200}``; events not answered stay pending and are
sent again on the next connection (as Lark redelivers). Client pings (control, ``type=ping``) are
answered with a pong carrying the ``ClientConfig``. ``drop()`` cuts connections (RST),
``down()``/``up()`` refuse new ones, ``reject_handshake`` answers the upgrade with Lark's
``handshake-status`` headers.

Scripting::

    fake = await FakeLark.start(nursery)
    fake.user_message("oc_group", "@_user_1 hi", mention_bot=True)
    fake.sent        # messages the bot created or replied
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import RejectConnection, Request

from .lark_files import LarkFiles, keys_in
from .lark_reactions import FakeLarkReactions
from .wsserver import HttpRequest, HttpWsServer, WebSocket


def _frame_cls() -> Any:
    from lark_oapi.ws.pb.pbbp2_pb2 import Frame

    return Frame


class FakeLark(FakeLarkReactions, LarkFiles, HttpWsServer):
    def __init__(self, *, app_id: str = "cli_test", app_secret: str = "secret-test",
                 bot_open_id: str = "ou_bot", bot_name: str = "Andy", ping_interval: int = 1,
                 verification_token: str = "vtoken") -> None:
        super().__init__()
        self.app_id = app_id
        self.app_secret = app_secret
        self.bot_open_id = bot_open_id
        self.bot_name = bot_name
        self.ping_interval = ping_interval
        self.verification_token = verification_token
        self.tenant_key = "tenant-1"
        self.service_id = 33554678
        self.tokens: set[str] = set()
        self.tickets: set[str] = set()
        self.users: dict[str, str] = {"ou_alice": "Alice", "ou_bob": "Bob"}
        self.messages: dict[str, dict[str, Any]] = {}  # message id -> {"chat_id", "thread_id"}
        self.sent: list[dict[str, Any]] = []
        self.edits: list[dict[str, Any]] = []  # every successful message update: message_id, msg_type, content, text
        self.withdrawn: set[str] = set()  # message ids a person recalled
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.pending: list[dict[str, Any]] = []  # events not yet acked, in order
        self.acks: list[tuple[str, int]] = []  # (frame message id, code)
        self.pings = 0
        self.bad_pings = 0
        self.bad_acks = 0
        self.connections = 0
        self.delivered = 0  # event deliveries written (a chunked one counts once)
        self.reject_handshake: tuple[int, str, int] | None = None  # (handshake-status, msg, autherrcode)
        self._uuids: dict[str, str] = {}
        self._failures: dict[str, list[int]] = {}
        self._ids = itertools.count(1)
        self._changed = trio.Event()
        self._ws: WebSocket | None = None
        self._init_files()
        self.init_reactions()

    @classmethod
    async def start(cls, nursery: trio.Nursery, **kw: Any) -> FakeLark:
        fake = cls(**kw)
        await nursery.start(fake.serve)
        return fake

    @property
    def domain(self) -> str:
        return self.http_base

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def fail_next(self, kind: str, code: int, times: int = 1) -> None:
        """Make the next ``kind`` ("create", "reply", "update", "token", "endpoint", "resource") call fail with
        ``code`` (a 5xx one with HTTP 500)."""
        self._failures.setdefault(kind, []).extend([code] * times)

    # -- users' traffic --------------------------------------------------------------------------
    def event(self, chat_id: str, content: dict[str, Any], *, message_type: str = "text", chat_type: str = "group",
              sender: str = "ou_alice", mentions: list[dict[str, Any]] | None = None, parent_id: str = "",
              thread_id: str = "", token: str | None = None) -> dict[str, Any]:
        """An im.message.receive_v1 event (schema 2.0), as Lark builds it."""
        n = next(self._ids)
        message_id = f"om_{n:08d}{uuid.uuid4().hex[:8]}"
        now_ms = str(int(time.time() * 1000))
        self.messages[message_id] = {"chat_id": chat_id, "thread_id": thread_id, "keys": keys_in(content)}
        message: dict[str, Any] = {
            "message_id": message_id, "root_id": parent_id, "parent_id": parent_id, "create_time": now_ms,
            "update_time": now_ms, "chat_id": chat_id, "chat_type": chat_type, "message_type": message_type,
            "content": json.dumps(content, ensure_ascii=False), "user_agent": "Mozilla/5.0 Lark/7.0",
        }
        if thread_id:
            message["thread_id"] = thread_id
        if mentions:
            message["mentions"] = mentions
        return {
            "schema": "2.0",
            "header": {"event_id": uuid.uuid4().hex, "token": self.verification_token if token is None else token,
                       "create_time": now_ms, "event_type": "im.message.receive_v1", "tenant_key": self.tenant_key,
                       "app_id": self.app_id},
            "event": {"sender": {"sender_id": {"union_id": "on_" + sender[3:], "user_id": sender[3:], "open_id": sender},
                                 "sender_type": "user", "tenant_key": self.tenant_key},
                      "message": message},
        }

    def mention(self, n: int, open_id: str, name: str) -> dict[str, Any]:
        return {"key": f"@_user_{n}", "id": {"union_id": "on_" + open_id[3:], "user_id": open_id[3:], "open_id": open_id},
                "name": name, "tenant_key": self.tenant_key}

    def user_message(self, chat_id: str, text: str, *, mention_bot: bool = False, chunks: int = 1,
                     **kw: Any) -> dict[str, Any]:
        """A user posts a text message; ``mention_bot`` puts ``@_user_1`` (the bot) in front."""
        mentions = list(kw.pop("mentions", None) or [])
        if mention_bot:
            mentions.insert(0, self.mention(1, self.bot_open_id, self.bot_name))
            text = f"@_user_1 {text}"
        event = self.event(chat_id, {"text": text}, mentions=mentions or None, **kw)
        self.push(event, chunks=chunks)
        return event

    def push(self, event: dict[str, Any], *, chunks: int = 1) -> str:
        """Queue an event for delivery (split over ``chunks`` frames); returns its frame message id."""
        frame_id = uuid.uuid4().hex
        self.pending.append({"id": frame_id, "payload": json.dumps(event, ensure_ascii=False).encode(),
                             "chunks": chunks, "event": event})
        self._notify()
        return frame_id

    def redeliver(self, event: dict[str, Any]) -> str:
        """Send an event again (as Lark does when it saw no answer in time)."""
        return self.push(event)

    # -- websocket -------------------------------------------------------------------------------
    def _frames(self, item: dict[str, Any], service: int) -> list[bytes]:
        Frame = _frame_cls()
        payload: bytes = item["payload"]
        n = max(1, int(item["chunks"]))
        size = -(-len(payload) // n)
        trace = uuid.uuid4().hex
        out = []
        for seq in range(n):
            frame = Frame()
            frame.SeqID, frame.LogID, frame.service, frame.method = seq, next(self._ids), service, 1
            for key, value in (("type", "event"), ("message_id", item["id"]), ("sum", str(n)), ("seq", str(seq)),
                               ("trace_id", trace)):
                header = frame.headers.add()
                header.key, header.value = key, value
            frame.payload = payload[seq * size:(seq + 1) * size]
            out.append(frame.SerializeToString())
        return out

    def _client_config(self) -> dict[str, Any]:
        return {"ReconnectCount": -1, "ReconnectInterval": 120, "ReconnectNonce": 30, "PingInterval": self.ping_interval}

    async def _serve_websocket(self, stream: trio.SocketStream, head: bytes) -> None:
        if self.reject_handshake is not None:
            status, msg, autherr = self.reject_handshake
            conn = WSConnection(ConnectionType.SERVER)
            conn.receive_data(head)
            if next((e for e in conn.events() if isinstance(e, Request)), None) is not None:
                headers = [(b"handshake-status", str(status).encode()), (b"handshake-msg", msg.encode()),
                           (b"handshake-autherrcode", str(autherr).encode()), (b"content-length", b"0")]
                await stream.send_all(conn.send(RejectConnection(status_code=400, headers=headers, has_body=False)))
            return
        await super()._serve_websocket(stream, head)

    async def websocket(self, ws: WebSocket) -> None:
        if ws.path != "/ws/v2" or ws.query.get("ticket") not in self.tickets:
            await ws.close(1008, "bad ticket")
            return
        service = int(ws.query["service_id"])
        previous, self._ws = self._ws, ws
        if previous is not None:
            await previous.close(1000)
        self.connections += 1
        written: set[str] = set()
        Frame = _frame_cls()
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                while (raw := await ws.receive()) is not None:
                    if isinstance(raw, str):
                        continue
                    frame = Frame()
                    frame.ParseFromString(raw)
                    headers = {h.key: h.value for h in frame.headers}
                    if frame.method == 0 and headers.get("type") == "ping":
                        if frame.service != service:
                            self.bad_pings += 1
                        self.pings += 1
                        pong = Frame()
                        pong.SeqID, pong.LogID, pong.service, pong.method = 0, 0, service, 0
                        header = pong.headers.add()
                        header.key, header.value = "type", "pong"
                        pong.payload = json.dumps(self._client_config()).encode()
                        await ws.send_bytes(pong.SerializeToString())
                    elif frame.method == 1:
                        code = int(json.loads(frame.payload or b"{}").get("code") or 0)
                        frame_id = headers.get("message_id", "")
                        if headers.get("type") != "event" or "biz_rt" not in headers or frame.service != service:
                            self.bad_acks += 1  # the SDK answers with the event's own frame + biz_rt
                        self.acks.append((frame_id, code))
                        if code == 200:
                            self.pending = [p for p in self.pending if p["id"] != frame_id]
                    self._notify()
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            while not ws.closed and self._ws is ws:
                for item in list(self.pending):
                    if item["id"] in written:
                        continue
                    written.add(item["id"])
                    for data in self._frames(item, service):
                        await ws.send_bytes(data)
                    self.delivered += 1
                with trio.move_on_after(0.5):
                    await self._changed.wait()
            nursery.cancel_scope.cancel()
        if self._ws is ws:
            self._ws = None

    # -- HTTP --------------------------------------------------------------------------------------
    async def http(self, request: HttpRequest) -> tuple[int, Any]:
        path = request.path
        self.requests.append((request.method, path))
        is_json = request.headers.get("content-type", "").startswith("application/json")
        body = request.json() if request.body and is_json else {}
        if path == "/open-apis/auth/v3/tenant_access_token/internal":
            if self._failures.get("token"):
                return 500, {"code": self._failures["token"].pop(0), "msg": "internal error"}
            if body.get("app_id") != self.app_id or body.get("app_secret") != self.app_secret:
                return 400, {"code": 10014, "msg": "app secret invalid"}
            token = "t-" + uuid.uuid4().hex
            self.tokens.add(token)
            return 200, {"code": 0, "msg": "ok", "tenant_access_token": token, "expire": 7200}
        if path == "/callback/ws/endpoint":
            if self._failures.get("endpoint"):
                code = self._failures["endpoint"].pop(0)
                return 200, {"code": code, "msg": "system busy" if code == 1 else "refused"}
            if body.get("AppID") != self.app_id or body.get("AppSecret") != self.app_secret:
                return 200, {"code": 514, "msg": "auth failed: app secret invalid"}
            ticket = uuid.uuid4().hex
            self.tickets.add(ticket)
            url = (f"{self.ws_base}/ws/v2?fpid=493&aid=552564&device_id={uuid.uuid4().int % 10**19}"
                   f"&access_key={uuid.uuid4().hex}&service_id={self.service_id}&ticket={ticket}")
            return 200, {"code": 0, "msg": "ok", "data": {"URL": url, "ClientConfig": self._client_config()}}
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if token not in self.tokens:
            return 400, {"code": 99991663, "msg": "Invalid access token for authorization. Please make a request with token attached."}
        if path == "/open-apis/bot/v3/info":
            return 200, {"code": 0, "msg": "ok", "bot": {"activate_status": 2, "app_name": self.bot_name,
                                                         "avatar_url": "", "ip_white_list": [],
                                                         "open_id": self.bot_open_id}}
        files = self.files_http(request)
        if files is not None:
            return files
        if path.startswith("/open-apis/contact/v3/users/"):
            open_id = path.rsplit("/", 1)[1]
            if open_id not in self.users:
                return 400, {"code": 41050, "msg": "no user authority error"}
            return 200, {"code": 0, "msg": "success", "data": {"user": {"open_id": open_id, "name": self.users[open_id]}}}
        if path == "/open-apis/im/v1/messages" and request.method == "POST":
            if request.query.get("receive_id_type") != "chat_id":
                return 400, {"code": 230001, "msg": "invalid receive_id_type"}
            return self._post_message("create", str(body.get("receive_id") or ""), body, None)
        if path.startswith("/open-apis/im/v1/messages/") and path.endswith("/reply") and request.method == "POST":
            target = path.split("/")[-2]
            if target not in self.messages:
                return 400, {"code": 230011, "msg": "The message was withdrawn."}
            return self._post_message("reply", self.messages[target]["chat_id"], body, target)
        if path.startswith("/open-apis/im/v1/messages/") and path.count("/") == 5 and request.method == "PUT":
            return self._update_message(path.rsplit("/", 1)[1], body)
        reactions = self.reactions_http(request, body)
        if reactions is not None:
            return reactions
        return 404, {"code": 404, "msg": "not found"}

    def recall(self, message_id: str) -> None:
        """A person withdraws (recalls) a message."""
        self.messages.pop(message_id, None)
        self.withdrawn.add(message_id)

    def versions(self, message_id: str) -> list[str]:
        """Every text the bot's message showed, as sent and after each edit, in order."""
        first = [s["text"] for s in self.sent if s["message_id"] == message_id]
        return first + [e["text"] for e in self.edits if e["message_id"] == message_id]

    def _update_message(self, message_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        failures = self._failures.get("update")
        if failures:
            code = failures.pop(0)
            return (500 if 500 <= code < 600 else 400), {"code": code, "msg": f"fake failure {code}"}
        if message_id in self.withdrawn:
            return 400, {"code": 230011, "msg": "The message was withdrawn."}
        message = self.messages.get(message_id)
        if message is None:
            return 400, {"code": 230001, "msg": "Your request contains an invalid request parameter, ext=invalid message_id."}
        msg_type, content = str(body.get("msg_type")), json.loads(body.get("content") or "{}")
        if msg_type not in ("text", "post"):
            return 400, {"code": 230001, "msg": "Your request contains an invalid request parameter, ext=invalid msg_type."}
        text = _text_of(msg_type, content)
        message.update(msg_type=msg_type, text=text)
        self.edits.append({"message_id": message_id, "msg_type": msg_type, "content": content, "text": text})
        self._notify()
        now = str(int(time.time() * 1000))
        return 200, {"code": 0, "msg": "success",
                     "data": {"message_id": message_id, "msg_type": msg_type, "chat_id": message["chat_id"],
                              "update_time": now, "updated": True, "deleted": False,
                              "sender": {"id": self.app_id, "id_type": "app_id", "sender_type": "app"},
                              "body": {"content": body.get("content")}}}

    def _post_message(self, kind: str, chat_id: str, body: dict[str, Any], reply_to: str | None) -> tuple[int, Any]:
        failures = self._failures.get(kind)
        if failures:
            code = failures.pop(0)
            status = 500 if code >= 500 and code < 600 else 400
            return status, {"code": code, "msg": f"fake failure {code}"}
        if not chat_id:
            return 400, {"code": 230001, "msg": "invalid receive_id"}
        key = str(body.get("uuid") or "")
        if key and key in self._uuids:  # the same uuid within an hour: sent once
            message_id = self._uuids[key]
            return 200, {"code": 0, "msg": "success", "data": {"message_id": message_id, "chat_id": chat_id}}
        msg_type, content = body.get("msg_type"), json.loads(body.get("content") or "{}")
        refused = self.content_error(str(msg_type), content)
        if refused is not None:
            return refused
        text = _text_of(str(msg_type), content)
        message_id = f"om_bot{next(self._ids):08d}"
        in_thread = bool(body.get("reply_in_thread"))
        thread_id = ""
        if reply_to:
            thread_id = self.messages[reply_to].get("thread_id") or (f"omt_{reply_to[3:]}" if in_thread else "")
        self.messages[message_id] = {"chat_id": chat_id, "thread_id": thread_id, "msg_type": msg_type, "text": text}
        if key:
            self._uuids[key] = message_id
        self.sent.append({"kind": kind, "chat_id": chat_id, "msg_type": msg_type, "content": content, "text": text,
                          "reply_to": reply_to, "reply_in_thread": in_thread, "uuid": key or None,
                          "message_id": message_id})
        self._notify()
        return 200, {"code": 0, "msg": "success",
                     "data": {"message_id": message_id, "root_id": reply_to or "", "parent_id": reply_to or "",
                              "thread_id": thread_id, "msg_type": msg_type, "chat_id": chat_id,
                              "create_time": str(int(time.time() * 1000)),
                              "sender": {"id": self.app_id, "id_type": "app_id", "sender_type": "app"},
                              "body": {"content": body.get("content")}}}


def _text_of(msg_type: str, content: dict[str, Any]) -> str:
    """What a text or rich-text (post) message reads."""
    if msg_type == "post":
        doc = content.get("zh_cn") or content.get("en_us") or {}
        return "\n".join("".join(el.get("text", "") for el in para) for para in doc.get("content", []))
    return str(content.get("text", ""))
