"""A local fake of DingTalk's Stream mode and robot APIs on one loopback port, speaking their wire
formats, so the dingtalk-stream SDK (and our channel around it) talk to it unchanged.

* Open connection: ``POST /v1.0/gateway/connections/open`` with ``{clientId, clientSecret,
  subscriptions, ua}`` -> ``{endpoint, ticket}`` (wrong credentials: HTTP 401 ``authFailed``). A
  ticket is good for one websocket, within ``ticket_ttl`` seconds.
* Gateway: the websocket ``endpoint?ticket=...``. An unknown, reused or expired ticket is refused
  before the upgrade (HTTP 401, recorded in ``refused`` and logged). Frames are JSON
  ``{specVersion, type, headers: {topic, messageId, contentType, time, appId, connectionId}, data}``
  with ``data`` a JSON string. Robot messages are CALLBACK frames on ``/v1.0/im/bot/messages/get``;
  one counts as delivered when the client acks it (``{code: 200, headers: {messageId}, ...}``).
  Unacked ones are pushed again on the next connection, with a new header messageId and the same
  ``msgId``. ``ping()`` sends a SYSTEM ping and records the reply; ``system_disconnect()`` asks the
  client to reconnect; ``drop_websockets()`` cuts them (RST); ``gateway_down()``/``gateway_up()``
  refuse websockets and open-connection calls meanwhile (the HTTP APIs stay up).
* ``POST /v1.0/oauth2/accessToken`` ``{appKey, appSecret}`` -> ``{accessToken, expireIn}``.
* Robot API (header ``x-acs-dingtalk-access-token``; unknown token: HTTP 401
  ``InvalidAuthentication``): ``/v1.0/robot/groupMessages/send`` (``openConversationId`` of a known
  group) and ``/v1.0/robot/oToMessages/batchSend`` (``userIds``; unknown ones come back in
  ``invalidStaffIdList``), both -> ``{processQueryKey}``; ``robotCode`` must be ours.
* Files (tests/fakes/dingtalk_files.py): ``messageFiles/download`` (download code -> signed URL),
  the signed URL itself, ``/media/upload`` (the oapi host, on the same port: ``oapi_base``), and
  the robot's ``sampleImageMsg`` / ``sampleFile`` messages. ``picture(...)``, ``voice(...)`` and
  ``file_message(...)`` push the users' ones.
* Session webhooks ``/robot/sendBySession?session=...`` (one per pushed message, valid until its
  ``sessionWebhookExpiredTime``): ``{errcode: 0}`` or ``{errcode: 300001, errmsg: "session 不存在"}``;
  ``expire_webhooks()`` ends them all at once.

Every robot message that reached a chat is in ``sent`` (``via`` webhook / group / batch).

    fake = await FakeDingTalk.start(nursery, client_id="dingapp", client_secret="s3cret")
    fake.group_message("cidGroup1", "hello")      # an @robot message in a group
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import RejectConnection, RejectData, Request

from .dingtalk_files import FakeFiles, FileMessages
from .wsserver import HttpRequest, HttpWsServer, WebSocket

log = logging.getLogger("tests.fakes.dingtalk")

TOPIC_ROBOT = "/v1.0/im/bot/messages/get"
BODY_LIMIT = 20_000


class FakeDingTalk(FileMessages, HttpWsServer):
    def __init__(self, *, client_id: str = "dingtestapp", client_secret: str = "test-secret",
                 robot_code: str | None = None, chatbot_user_id: str = "$:LWCP_v1:$robot0001",
                 corp_id: str = "dingcorp0001", webhook_ttl: float = 5400.0, ticket_ttl: float = 90.0) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.robot_code = robot_code or client_id
        self.chatbot_user_id = chatbot_user_id
        self.corp_id = corp_id
        self.webhook_ttl = webhook_ttl
        self.ticket_ttl = ticket_ttl
        self.app_id = "app-0001"
        self.open_requests: list[dict[str, Any]] = []  # open-connection bodies (secret masked)
        self.tickets: dict[str, float] = {}  # issued, unused -> expiry (trio clock)
        self.refused: list[str] = []  # why websockets were refused
        self.connections = 0  # websockets accepted
        self.tokens: dict[str, float] = {}  # access token -> expiry (time.time())
        self.token_requests = 0
        self.api_calls: list[dict[str, Any]] = []  # robot API calls: path, body
        self.webhook_posts: list[dict[str, Any]] = []  # session webhook calls: session, body, errcode
        self.sent: list[dict[str, Any]] = []  # delivered robot messages, in order
        self.pending: list[dict[str, Any]] = []  # robot messages not acked yet: {"data": ..., ...}
        self.acks: list[dict[str, Any]] = []  # ack frames for callbacks
        self.pongs: list[dict[str, Any]] = []  # replies to SYSTEM pings
        self.deliveries = 0  # CALLBACK frames written
        self.lose_ack_of: set[str] = set()  # msgIds whose ack gets "lost": the connection drops instead
        self.open_delay = 0.0  # seconds the open-connection API takes to answer
        self.gateway_is_down = False
        self.groups: set[str] = set()
        self.users: set[str] = set()  # staff ids
        self._sessions: dict[str, dict[str, Any]] = {}  # session webhook id -> chat, expiry
        self._failures: dict[str, list[tuple[int, str]]] = {}
        self._ws_scopes: set[trio.CancelScope] = set()
        self._ws: WebSocket | None = None
        self._pings: set[str] = set()
        self._ids = itertools.count(1)
        self._changed = trio.Event()
        self.files = FakeFiles("")  # its base is known once the server listens

    @classmethod
    async def start(cls, nursery: trio.Nursery, **kw: Any) -> FakeDingTalk:
        fake = cls(**kw)
        await nursery.start(fake.serve)
        fake.files.base = fake.http_base
        return fake

    @property
    def gateway_url(self) -> str:
        return f"{self.http_base}/v1.0/gateway/connections/open"

    @property
    def api_base(self) -> str:
        return self.http_base

    @property
    def oapi_base(self) -> str:
        return self.http_base

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def fail_next(self, path: str, status: int, code: str = "", times: int = 1, after: int = 0) -> None:
        """The next ``times`` calls to ``path`` (e.g. "/v1.0/robot/groupMessages/send") answer ``status``
        (after ``after`` calls that are answered as usual)."""
        self._failures.setdefault(path, []).extend([(0, "")] * after + [(status, code)] * times)

    def clear_failures(self) -> None:
        """Forget the injected failures not used yet."""
        self._failures.clear()

    def expire_webhooks(self) -> None:
        """Every session webhook handed out so far is gone (``300001 session 不存在``)."""
        self._sessions.clear()

    # -- users' traffic ------------------------------------------------------------------------------
    def group_message(self, conversation_id: str, text: str = "", **kw: Any) -> dict[str, Any]:
        """Someone @s the robot in a group (DingTalk pushes only those): the @robot part is not in
        the text DingTalk sends, so it starts with the blank that followed it."""
        kw.setdefault("at_users", [{"dingtalkId": self.chatbot_user_id}])
        return self.push(conversation_id, "2", text=f" {text}" if text else text, **kw)

    def direct_message(self, conversation_id: str, text: str = "", *, staff_id: str = "user0001",
                       **kw: Any) -> dict[str, Any]:
        return self.push(conversation_id, "1", text=text, staff_id=staff_id, **kw)

    def push(self, conversation_id: str, conversation_type: str, *, text: str = "", msgtype: str = "text",
             content: Any = None, staff_id: str = "user0001", nick: str = "Alice", title: str = "Team",
             at_users: list[dict[str, str]] | None = None, in_at_list: bool | None = True,
             webhook_ttl: float | None = None, robot_code: str | None = None, chatbot_user_id: str | None = None,
             msg_id: str | None = None) -> dict[str, Any]:
        """Queue a robot message (CALLBACK) for the client; returns its data."""
        now = time.time()
        session = uuid.uuid4().hex
        expires = now + (self.webhook_ttl if webhook_ttl is None else webhook_ttl)
        self._sessions[session] = {"chat": conversation_id, "expires": expires}
        if conversation_type == "2":
            self.groups.add(conversation_id)
        if staff_id:
            self.users.add(staff_id)
        data: dict[str, Any] = {
            "conversationId": conversation_id,
            "chatbotCorpId": self.corp_id,
            "chatbotUserId": chatbot_user_id or self.chatbot_user_id,
            "msgId": msg_id or f"msg{next(self._ids):04d}{uuid.uuid4().hex[:12]}",
            "senderNick": nick,
            "isAdmin": False,
            "senderStaffId": staff_id,
            "sessionWebhookExpiredTime": int(expires * 1000),
            "createAt": int(now * 1000),
            "senderCorpId": self.corp_id,
            "conversationType": conversation_type,
            "senderId": f"$:LWCP_v1:${staff_id}",
            "sessionWebhook": f"{self.http_base}/robot/sendBySession?session={session}",
            "robotCode": robot_code or self.robot_code,
            "msgtype": msgtype,
        }
        if conversation_type == "2":
            data["conversationTitle"] = title
            data["atUsers"] = at_users or []
            if in_at_list is not None:
                data["isInAtList"] = in_at_list
        if msgtype == "text":
            data["text"] = {"content": text}
        else:
            data["content"] = content or {}
        self.pending.append({"data": data, "written": set()})
        self._notify()
        return data

    def redeliver(self, data: dict[str, Any]) -> None:
        """Push a message again (as the gateway does when it saw no ack in time)."""
        self.pending.append({"data": data, "written": set()})
        self._notify()

    # -- gateway controls ----------------------------------------------------------------------------
    def drop_websockets(self) -> None:
        for scope in list(self._ws_scopes):
            scope.cancel()

    def gateway_down(self) -> None:
        self.gateway_is_down = True
        self.drop_websockets()

    def gateway_up(self) -> None:
        self.gateway_is_down = False

    def expire_tickets(self) -> None:
        self.tickets.clear()

    async def ping(self) -> str:
        """A SYSTEM ping on the open websocket; the reply lands in ``pongs``."""
        assert self._ws is not None, "no websocket"
        mid = uuid.uuid4().hex
        self._pings.add(mid)
        await self._ws.send_json(self._frame("SYSTEM", "ping", mid, {"opaque": mid}))
        return mid

    async def system_disconnect(self) -> None:
        assert self._ws is not None, "no websocket"
        await self._ws.send_json(self._frame("SYSTEM", "disconnect", uuid.uuid4().hex,
                                             {"reason": "the gateway is restarting"}))

    def _frame(self, kind: str, topic: str, message_id: str, data: Any) -> dict[str, Any]:
        return {"specVersion": "1.0", "type": kind,
                "headers": {"appId": self.app_id, "connectionId": f"conn-{self.connections}",
                            "contentType": "application/json", "messageId": message_id,
                            "time": str(int(time.time() * 1000)), "topic": topic},
                "data": json.dumps(data, ensure_ascii=False)}

    # -- websockets ----------------------------------------------------------------------------------
    async def _serve_websocket(self, stream: trio.SocketStream, head: bytes) -> None:
        check = WSConnection(ConnectionType.SERVER)
        check.receive_data(head)
        request = next((e for e in check.events() if isinstance(e, Request)), None)
        if request is None:
            return
        url = urlsplit(request.target)
        ticket = dict(parse_qsl(url.query)).get("ticket")
        why = None
        if self.gateway_is_down:
            why = "the gateway is down"
        elif url.path != "/connect":
            why = f"no gateway at {url.path}"
        elif not ticket:
            why = "no ticket"
        elif ticket not in self.tickets:
            why = "unknown or already used ticket"
        elif self.tickets.pop(ticket) < trio.current_time():
            why = "expired ticket"
        if why is not None:
            self.refused.append(why)
            log.warning("fake dingtalk: refused a websocket: %s", why)
            body = json.dumps({"code": "invalidTicket", "message": why}).encode()
            await stream.send_all(check.send(RejectConnection(
                status_code=503 if self.gateway_is_down else 401, has_body=True,
                headers=[(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())])))
            await stream.send_all(check.send(RejectData(data=body)))
            return
        with trio.CancelScope() as scope:
            self._ws_scopes.add(scope)
            try:
                await super()._serve_websocket(stream, head)
            finally:
                self._ws_scopes.discard(scope)

    async def websocket(self, ws: WebSocket) -> None:
        self.connections += 1
        previous, self._ws = self._ws, ws
        if previous is not None:
            await previous.close(1000)
        in_flight: dict[str, dict[str, Any]] = {}  # header messageId -> pending entry
        conn = self.connections
        try:
            await self._serve_frames(ws, conn, in_flight)
        finally:
            if self._ws is ws:
                self._ws = None

    async def _serve_frames(self, ws: WebSocket, conn: int, in_flight: dict[str, dict[str, Any]]) -> None:
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                while (raw := await ws.receive()) is not None:
                    frame = json.loads(raw)
                    mid = (frame.get("headers") or {}).get("messageId", "")
                    if mid in self._pings:
                        self._pings.discard(mid)
                        self.pongs.append(frame)
                    elif mid in in_flight:
                        entry = in_flight.pop(mid)
                        msg_id = entry["data"]["msgId"]
                        if frame.get("code") == 200 and msg_id in self.lose_ack_of:
                            self.lose_ack_of.discard(msg_id)
                            log.info("fake dingtalk: the ack of %s is lost; dropping the connection", msg_id)
                            nursery.cancel_scope.cancel()
                            self.drop_websockets()
                            return
                        self.acks.append({**frame, "msgId": msg_id})
                        if frame.get("code") == 200 and entry in self.pending:
                            self.pending.remove(entry)
                    self._notify()
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            while not ws.closed and self._ws is ws:
                for entry in list(self.pending):
                    if conn in entry["written"]:
                        continue
                    entry["written"].add(conn)
                    mid = uuid.uuid4().hex
                    in_flight[mid] = entry
                    await ws.send_json(self._frame("CALLBACK", TOPIC_ROBOT, mid, entry["data"]))
                    self.deliveries += 1
                with trio.move_on_after(0.5):
                    await self._changed.wait()
            nursery.cancel_scope.cancel()

    # -- HTTP ----------------------------------------------------------------------------------------
    async def http(self, request: HttpRequest) -> tuple[int, Any]:
        path = request.path
        failures = self._failures.get(path)
        if failures:
            status, code = failures.pop(0)
            if status:  # (0: this call is answered as usual)
                return status, {"requestid": uuid.uuid4().hex, "code": code or "ServiceUnavailable",
                                "message": "injected failure"}
        if path.startswith("/oss/"):
            return self.files.serve(request)
        if path == "/media/upload":
            return self.files.upload(request, self.tokens.get(request.query.get("access_token", ""), 0) > time.time())
        body = request.json() if request.body else {}
        if path == "/v1.0/robot/messageFiles/download":
            return self._download_code(request.headers.get("x-acs-dingtalk-access-token", ""), body)
        if path == "/v1.0/gateway/connections/open":
            return await self._open_connection(body)
        if path == "/v1.0/oauth2/accessToken":
            return self._access_token(body)
        if path == "/robot/sendBySession":
            return self._session_webhook(request.query.get("session", ""), body)
        if path in ("/v1.0/robot/groupMessages/send", "/v1.0/robot/oToMessages/batchSend"):
            return self._robot_api(path, request.headers.get("x-acs-dingtalk-access-token", ""), body)
        return 404, {"code": "NotFound", "message": f"no API at {path}"}

    async def _open_connection(self, body: dict[str, Any]) -> tuple[int, Any]:
        self.open_requests.append({**body, "clientSecret": "***"})
        if self.open_delay:
            await trio.sleep(self.open_delay)
        if self.gateway_is_down:
            return 503, {"code": "ServiceUnavailable", "message": "the gateway is down"}
        if body.get("clientId") != self.client_id or body.get("clientSecret") != self.client_secret:
            return 401, {"requestid": uuid.uuid4().hex, "code": "authFailed", "message": "鉴权失败"}
        ticket = uuid.uuid4().hex
        self.tickets[ticket] = trio.current_time() + self.ticket_ttl
        return 200, {"endpoint": f"{self.ws_base}/connect", "ticket": ticket}

    def _access_token(self, body: dict[str, Any]) -> tuple[int, Any]:
        self.token_requests += 1
        if body.get("appKey") != self.client_id or body.get("appSecret") != self.client_secret:
            return 400, {"requestid": uuid.uuid4().hex, "code": "invalidClientIdOrSecret",
                         "message": "无效的clientId或者clientSecret"}
        token = uuid.uuid4().hex
        self.tokens[token] = time.time() + 7200
        return 200, {"accessToken": token, "expireIn": 7200}

    def _download_code(self, token: str, body: dict[str, Any]) -> tuple[int, Any]:
        if self.tokens.get(token, 0) < time.time():
            return 401, {"requestid": uuid.uuid4().hex, "code": "InvalidAuthentication", "message": "不合法的access_token"}
        return self.files.exchange(body, self.robot_code)

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def _content(self, msgtype: str, param: dict[str, Any]) -> tuple[str, str | None]:
        if msgtype == "markdown":
            return str(param.get("text") or ""), str(param.get("title") or "")
        return str(param.get("content") or ""), None

    def _session_webhook(self, session: str, body: dict[str, Any]) -> tuple[int, Any]:
        info = self._sessions.get(session)
        record = {"session": session, "body": body}
        self.webhook_posts.append(record)
        if info is None or info["expires"] < time.time():
            record["errcode"] = 300001
            return 200, {"errcode": 300001, "errmsg": "session 不存在"}
        if len(json.dumps(body, ensure_ascii=False).encode()) > BODY_LIMIT:
            record["errcode"] = 460101
            return 200, {"errcode": 460101, "errmsg": "message too long, exceed 20000 bytes"}
        msgtype = body.get("msgtype")
        if msgtype not in ("text", "markdown") or not isinstance(body.get(msgtype), dict):
            record["errcode"] = 40035
            return 200, {"errcode": 40035, "errmsg": "缺少参数 msgtype"}
        text, title = self._content(msgtype, body[msgtype])
        record["errcode"] = 0
        self.sent.append({"via": "webhook", "chat": info["chat"], "msgtype": msgtype, "text": text, "title": title})
        self._notify()
        return 200, {"errcode": 0, "errmsg": "ok"}

    def _robot_api(self, path: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
        self.api_calls.append({"path": path, "body": body})
        if self.tokens.get(token, 0) < time.time():
            return 401, {"requestid": uuid.uuid4().hex, "code": "InvalidAuthentication", "message": "不合法的access_token"}
        if body.get("robotCode") != self.robot_code:
            return 400, {"code": "invalidParameter.robotCode", "message": "robotCode 不存在"}
        key = body.get("msgKey")
        try:
            param = json.loads(body.get("msgParam") or "")
        except ValueError:
            return 400, {"code": "invalidParameter.msgParam", "message": "msgParam 不是 JSON"}
        if key not in ("sampleText", "sampleMarkdown", "sampleImageMsg", "sampleFile") or not isinstance(param, dict):
            return 400, {"code": "invalidParameter.msgKey", "message": f"unknown msgKey {key}"}
        extra: dict[str, Any] = {}
        if key in ("sampleImageMsg", "sampleFile"):
            found, why = self.files.message(key, param)
            if found is None:
                return 400, {"code": "invalidParameter.msgParam", "message": why}
            extra, msgtype, text, title = found, found["msgtype"], "", None
        else:
            text, title = self._content("markdown" if key == "sampleMarkdown" else "text", param)
            msgtype = "markdown" if key == "sampleMarkdown" else "text"
        query_key = f"pqk{next(self._ids):04d}"
        if path.endswith("groupMessages/send"):
            chat = body.get("openConversationId")
            if chat not in self.groups:
                return 400, {"code": "resource.not.found", "message": "群不存在"}
            self.sent.append({**extra, "via": "group", "chat": chat, "msgtype": msgtype, "text": text, "title": title,
                              "processQueryKey": query_key})
            self._notify()
            return 200, {"processQueryKey": query_key}
        users = list(body.get("userIds") or [])
        valid = [u for u in users if u in self.users]
        for user in valid:
            self.sent.append({**extra, "via": "batch", "user": user, "msgtype": msgtype, "text": text, "title": title,
                              "processQueryKey": query_key})
        self._notify()
        return 200, {"processQueryKey": query_key, "invalidStaffIdList": [u for u in users if u not in valid],
                     "flowControlledStaffIdList": []}
