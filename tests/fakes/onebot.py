"""A fake OneBot v11 implementation (think go-cqhttp / NapCat) on loopback, speaking the real wire
protocol over trio-websocket: JSON events (``meta_event`` lifecycle + heartbeat, ``message`` with the
message as a segment array or a CQ-code string) and API calls with ``echo`` answered
``{"status": "ok", "retcode": 0, "data": ..., "echo": ...}``.

Both connection styles:
- forward: ``await fake.serve()`` -> a websocket server at ``fake.url``; the access token is checked
  before the upgrade (``Authorization: Bearer <token>`` or ``?access_token=``): 401 when missing,
  403 when wrong, as the OneBot v11 spec says.
- reverse: ``fake.connect_reverse(url)`` -> the fake connects to the daemon with ``X-Self-ID``,
  ``X-Client-Role: Universal`` and ``Authorization: Bearer <token>``, reconnecting every
  ``reconnect_interval`` like a real implementation.

Like a real implementation it does not buffer events for a disconnected client, but it keeps each
chat's history for ``get_group_msg_history`` / ``get_friend_msg_history`` (go-cqhttp/NapCat
extensions), paged as NapCat does: ``message_seq`` names the newest message of the page (the
``message_seq`` of a message it gave, here its message id), ``count`` how many, oldest first;
``page_cap`` caps a page as go-cqhttp does (20). Message ids are hashes like NapCat's and
go-cqhttp's (not ordered); every message has ``time`` in seconds. ``drop()`` cuts every connection,
``down()``/``up()`` refuse connections meanwhile.

Files (tests/fakes/onebot_files.py): ``fake.files`` makes media segments whose URLs
``fake.media_host`` serves, answers get_image/get_record/get_file, and records uploads.

The peer may leave at any moment: a connection that closes under the fake ends its session
quietly, never raising into the test's nursery.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import time
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

from .onebot_files import FILE_ACTIONS, Failed, FakeOneBotFiles, FakeQQMediaHost

# What a peer that went away raises under the fake (trio-websocket turns most into ConnectionClosed).
PEER_GONE = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)


class FakeOneBot:
    def __init__(self, *, access_token: str = "", self_id: int = 10000, nickname: str = "Andy",
                 heartbeat_interval: float = 0.5, history: bool = True, page_cap: int = 100) -> None:
        self.access_token = access_token
        self.self_id = self_id
        self.nickname = nickname
        self.heartbeat_interval = heartbeat_interval
        self.history_supported = history
        self.page_cap = page_cap
        self.now: int | None = None  # the time messages get (seconds); None: the clock's
        self.port = 0
        self.clients: list[WebSocketConnection] = []
        self._scopes: set[trio.CancelScope] = set()
        self._down = False
        self._serials = itertools.count(1)
        self.history: dict[tuple[str, int], list[dict[str, Any]]] = {}  # (kind, id) -> events, oldest first
        self.sent: list[dict[str, Any]] = []  # send_msg & co: params + the message_id given
        self.actions: list[tuple[str, dict[str, Any]]] = []
        self.rejected: list[int] = []  # HTTP statuses of refused handshakes (forward) or seen (reverse)
        self.connections = 0
        self.fail_sends: int = 0  # answer the next N sends with status "failed" (retcode 100)
        self.reverse_error: str | None = None
        self._nursery: trio.Nursery | None = None
        self.media_host = FakeQQMediaHost()  # serves the media URLs (started by start())
        self.files = FakeOneBotFiles(self.media_host)  # media segments, get_image & co, uploads

    # -- life cycle ------------------------------------------------------------------------------------
    @classmethod
    async def start(cls, nursery: trio.Nursery, **kwargs: Any) -> FakeOneBot:
        fake = cls(**kwargs)
        fake._nursery = nursery
        server = await nursery.start(partial(serve_websocket, fake._handle, "127.0.0.1", 0, None,
                                             handler_nursery=nursery, disconnect_timeout=1))
        fake.port = server.port
        await nursery.start(fake.media_host.serve)
        return fake

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def connect_reverse(self, url: str, *, token: str | None = None, reconnect_interval: float = 0.1) -> None:
        """Run a reverse-websocket client to ``url`` (in the background, reconnecting forever)."""
        assert self._nursery is not None
        self._nursery.start_soon(self._reverse_loop, url, self.access_token if token is None else token,
                                 reconnect_interval)

    def drop(self) -> None:
        """Cut every open connection now."""
        for scope in list(self._scopes):
            scope.cancel()

    def down(self) -> None:
        self._down = True
        self.drop()

    def up(self) -> None:
        self._down = False

    # -- forward: the daemon connects here ------------------------------------------------------------
    async def _handle(self, request: WebSocketRequest) -> None:
        try:
            await self._handshake(request)
        except* PEER_GONE:
            pass  # the client went away during the handshake or the session

    async def _handshake(self, request: WebSocketRequest) -> None:
        if self._down:
            await request.reject(503)
            return
        given = None
        for key, value in request.headers:
            if key.decode().lower() == "authorization":
                given = value.decode().partition(" ")[2]
        if given is None:
            given = dict(parse_qsl(urlsplit(request.path).query)).get("access_token")
        if self.access_token and given is None:
            self.rejected.append(401)
            await request.reject(401)
            return
        if self.access_token and given != self.access_token:
            self.rejected.append(403)
            await request.reject(403)
            return
        ws = await request.accept()
        await self._session(ws)

    # -- reverse: the fake connects to the daemon -----------------------------------------------------
    async def _reverse_loop(self, url: str, token: str, interval: float) -> None:
        headers = [(b"X-Self-ID", str(self.self_id).encode()), (b"X-Client-Role", b"Universal"),
                   (b"User-Agent", b"FakeOneBot/11")]
        if token:
            headers.append((b"Authorization", f"Bearer {token}".encode()))
        while True:
            if not self._down:
                try:
                    async with open_websocket_url(url, extra_headers=headers, connect_timeout=2,
                                                  disconnect_timeout=1) as ws:
                        self.reverse_error = None
                        await self._session(ws)
                except* ConnectionRejected as group:
                    status = next(e.status_code for e in group.exceptions if isinstance(e, ConnectionRejected))
                    self.rejected.append(status)
                    self.reverse_error = f"HTTP {status}"
                except* (HandshakeError, OSError, *PEER_GONE) as group:
                    self.reverse_error = type(group.exceptions[0]).__name__
            await trio.sleep(interval)

    # -- one connection ------------------------------------------------------------------------------
    async def _session(self, ws: WebSocketConnection) -> None:
        """One connection until the peer leaves (or drop()): never raises because the peer left."""
        self.connections += 1
        self.clients.append(ws)
        try:
            with trio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._heartbeats, ws)
                        await self._serve_actions(ws)
                        nursery.cancel_scope.cancel()  # the peer left: stop the heartbeats too
                finally:
                    self._scopes.discard(scope)
        finally:
            self.clients.remove(ws)
            with contextlib.suppress(Exception), trio.move_on_after(0.2) as cleanup:
                cleanup.shield = True
                await ws.aclose()

    async def _serve_actions(self, ws: WebSocketConnection) -> None:
        try:
            await ws.send_message(json.dumps(self._meta("lifecycle", sub_type="connect")))
            while True:
                raw = await ws.get_message()
                await self._action(ws, raw)
        except PEER_GONE:
            return

    def _meta(self, kind: str, **extra: Any) -> dict[str, Any]:
        return {"time": int(time.time()), "self_id": self.self_id, "post_type": "meta_event",
                "meta_event_type": kind, **extra}

    async def _heartbeats(self, ws: WebSocketConnection) -> None:
        try:
            while True:
                await trio.sleep(self.heartbeat_interval)
                await ws.send_message(json.dumps(self._meta(
                    "heartbeat", status={"online": True, "good": True}, interval=int(self.heartbeat_interval * 1000))))
        except PEER_GONE:
            return  # _serve_actions notices too and ends the session

    async def _action(self, ws: WebSocketConnection, raw: str | bytes) -> None:
        request = json.loads(raw)
        action, params, echo = request.get("action"), request.get("params") or {}, request.get("echo")
        self.actions.append((action, params))

        def ok(data: Any) -> dict[str, Any]:
            return {"status": "ok", "retcode": 0, "data": data, "message": "", "wording": "", "echo": echo}

        def failed(retcode: int, wording: str) -> dict[str, Any]:
            return {"status": "failed", "retcode": retcode, "data": None, "message": wording, "wording": wording,
                    "echo": echo}

        if action == "get_login_info":
            answer = ok({"user_id": self.self_id, "nickname": self.nickname})
        elif action in ("send_msg", "send_group_msg", "send_private_msg"):
            kind = params.get("message_type") or ("group" if action == "send_group_msg" or "group_id" in params
                                                  else "private")
            target = params.get("group_id") if kind == "group" else params.get("user_id")
            if target is None or "message" not in params:
                answer = failed(1400, "missing group_id/user_id or message")
            elif self.fail_sends > 0:
                self.fail_sends -= 1
                answer = failed(100, "send failed (risk control)")
            else:
                message_id = self._new_id()
                self.sent.append({"kind": kind, "target": int(target), "message": params["message"],
                                  "message_id": message_id})
                self._remember(kind, int(target), self._event(kind, int(target), params["message"], self.self_id,
                                                              self.nickname, message_id))
                answer = ok({"message_id": message_id})
        elif action in ("get_group_msg_history", "get_friend_msg_history") and self.history_supported:
            key = ("group", int(params["group_id"])) if action == "get_group_msg_history" else (
                "private", int(params["user_id"]))
            count = min(int(params.get("count", 20)), self.page_cap)
            history = self.history.get(key, [])
            end = len(history)
            if params.get("message_seq") not in (None, "", 0, "0"):
                end = next((i + 1 for i, e in enumerate(history) if str(e["message_seq"]) == str(params["message_seq"])),
                           0)
            page = history[max(0, end - count):end]
            if page or end == len(history):
                answer = ok({"messages": page})
            else:  # NapCat: "消息<seq>不存在"
                answer = failed(200, f"message {params.get('message_seq')} not found")
        elif action in FILE_ACTIONS:
            result = self.files.answer(action, params)
            answer = failed(result.retcode, result.wording) if isinstance(result, Failed) else ok(result)
        else:
            answer = failed(1404, f"unsupported action {action}")
        await ws.send_message(json.dumps(answer, ensure_ascii=False))

    # -- what users do ---------------------------------------------------------------------------------
    def _new_id(self) -> int:
        """A message id as NapCat makes them: an MD5-derived positive 31-bit number (not ordered)."""
        digest = hashlib.md5(f"fake-{id(self)}-{next(self._serials)}".encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF

    def _event(self, kind: str, target: int, message: Any, user_id: int, nickname: str, message_id: int,
               card: str = "") -> dict[str, Any]:
        event: dict[str, Any] = {
            "time": int(time.time()) if self.now is None else self.now, "self_id": self.self_id,
            "post_type": "message", "message_type": kind,
            "sub_type": "normal" if kind == "group" else "friend", "message_id": message_id,
            "message_seq": message_id, "real_seq": str(len(self.history.get((kind, target), [])) + 1),
            "user_id": user_id,
            "message": message, "raw_message": message if isinstance(message, str) else _to_cq(message), "font": 0,
            "sender": {"user_id": user_id, "nickname": nickname, "card": card, "role": "member"},
        }
        if kind == "group":
            event["group_id"] = target
            event["anonymous"] = None
        return event

    def _remember(self, kind: str, target: int, event: dict[str, Any]) -> None:
        self.history.setdefault((kind, target), []).append(event)

    async def group_message(self, group_id: int, message: Any, *, user_id: int = 20001, nickname: str = "bob",
                            card: str = "") -> dict[str, Any]:
        """A user writes in a group; ``message``: segment list or CQ string."""
        event = self._event("group", group_id, message, user_id, nickname, self._new_id(), card)
        self._remember("group", group_id, event)
        await self.push(event)
        return event

    async def private_message(self, user_id: int, message: Any, *, nickname: str = "carol") -> dict[str, Any]:
        event = self._event("private", user_id, message, user_id, nickname, self._new_id())
        self._remember("private", user_id, event)
        await self.push(event)
        return event

    async def push(self, event: dict[str, Any]) -> None:
        """Send an event to every connected client (none connected: it is only in the history)."""
        await self.send_raw(json.dumps(event, ensure_ascii=False))

    async def send_raw(self, text: str) -> None:
        for ws in list(self.clients):
            with contextlib.suppress(*PEER_GONE):
                await ws.send_message(text)

    def texts_sent(self, kind: str | None = None, target: int | None = None) -> list[str]:
        return ["".join(s["data"].get("text", "") for s in sent["message"] if s["type"] == "text")
                for sent in self.sent if (kind is None or sent["kind"] == kind) and (target is None or
                                                                                  sent["target"] == target)]


def _to_cq(message: list[dict[str, Any]]) -> str:
    out = []
    for seg in message:
        if seg["type"] == "text":
            out.append(seg["data"]["text"].replace("&", "&amp;").replace("[", "&#91;").replace("]", "&#93;"))
        else:
            params = "".join(f",{k}={v}" for k, v in seg.get("data", {}).items())
            out.append(f"[CQ:{seg['type']}{params}]")
    return "".join(out)


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "data": {"text": value}}


def at(qq: int | str) -> dict[str, Any]:
    return {"type": "at", "data": {"qq": str(qq)}}


def reply(message_id: int | str) -> dict[str, Any]:
    return {"type": "reply", "data": {"id": str(message_id)}}
