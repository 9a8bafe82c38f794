"""A fake WeCom intelligent-robot long-connection gateway (openws.work.weixin.qq.com) on loopback:
JSON frames over a websocket (trio-websocket). The client must ``aibot_subscribe`` first with the
right bot_id/secret (else errcode 853000 and the socket is closed); every command is acked with
``{"headers": {"req_id": ...}, "errcode": 0, "errmsg": "ok"}``. ``user_message`` pushes an
``aibot_msg_callback``; replies arrive as ``aibot_respond_msg`` / ``aibot_send_msg``. Like the real
gateway it does not keep messages for a disconnected robot (the protocol has no history and no ack
of a callback). ``drop()`` cuts connections. The client may leave at any moment: its session then
ends quietly, never raising into the test's nursery.

Files: ``media_message`` pushes an image / file / mixed message whose files ``files`` (a
tests/fakes/wecom_files.py host) serves encrypted under the per-message ``aeskey``. Uploads take the
protocol's three commands: ``aibot_upload_media_init`` (type, filename, total_size, total_chunks,
md5 -> ``upload_id``), ``aibot_upload_media_chunk`` (upload_id, chunk_index, base64_data; at most 512
KB a chunk) and ``aibot_upload_media_finish`` (upload_id -> ``media_id``, once every chunk is there
and the bytes match the size and md5); ``aibot_send_msg`` takes an image or file message by that
media_id (an unknown one is errcode 40007). ``media[media_id]`` holds what was uploaded.

Streams: a callback may be answered several times with the same ``stream.id``, each frame the whole
content so far, ``finish: false`` until the last (WeCom shows one message growing). ``streams[id]``
keeps every frame of a stream in order ({"req_id", "finish", "content"}); ``texts()`` counts a
stream once, when it is finished."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
from functools import partial
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from .wecom_files import FakeWeComFiles, Stored, upload_refusal

# What a peer that went away raises under the fake (trio-websocket turns most into ConnectionClosed).
PEER_GONE = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)


class FakeWeCom:
    def __init__(self, *, bot_id: str, secret: str) -> None:
        self.bot_id = bot_id
        self.secret = secret
        self.port = 0
        self.clients: list[WebSocketConnection] = []  # subscribed ones
        self._scopes: set[trio.CancelScope] = set()
        self._ids = itertools.count(1)
        self.responses: list[dict[str, Any]] = []  # aibot_respond_msg frames
        self.streams: dict[str, list[dict[str, Any]]] = {}  # stream id -> its frames, in order
        self.pushes: list[dict[str, Any]] = []  # aibot_send_msg frames
        self.sent: list[dict[str, Any]] = []  # both, in arrival order
        self.pings = 0
        self.auth_failures = 0
        self.subscriptions = 0
        self.callback_req_ids: set[str] = set()
        self.files: FakeWeComFiles | None = None  # the download host (started with the gateway)
        self.uploads: dict[str, dict[str, Any]] = {}  # upload_id -> init body + chunks
        self.media: dict[str, Stored] = {}  # media_id -> the uploaded file (.name, .data)
        self.upload_frames: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, nursery: trio.Nursery, **kwargs: Any) -> FakeWeCom:
        fake = cls(**kwargs)
        server = await nursery.start(partial(serve_websocket, fake._handle, "127.0.0.1", 0, None,
                                             handler_nursery=nursery, disconnect_timeout=1))
        fake.port = server.port
        fake.files = await FakeWeComFiles.start(nursery)
        return fake

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def drop(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()

    async def _handle(self, request: WebSocketRequest) -> None:
        try:
            ws = await request.accept()
        except PEER_GONE:
            return  # the client left during the handshake
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                await self._serve(ws)
            except PEER_GONE:
                pass
            finally:
                self._scopes.discard(scope)
                if ws in self.clients:
                    self.clients.remove(ws)
        with contextlib.suppress(Exception), trio.move_on_after(0.2) as cleanup:
            cleanup.shield = True
            await ws.aclose()

    async def _serve(self, ws: WebSocketConnection) -> None:
        first = json.loads(await ws.get_message())
        ack = {"headers": {"req_id": first.get("headers", {}).get("req_id", "")}}
        body = first.get("body") or {}
        if first.get("cmd") != "aibot_subscribe" or body.get("bot_id") != self.bot_id or \
                body.get("secret") != self.secret:
            self.auth_failures += 1
            await ws.send_message(json.dumps({**ack, "errcode": 853000, "errmsg": "invalid bot_id or secret"}))
            await ws.aclose()
            return
        self.subscriptions += 1
        await ws.send_message(json.dumps({**ack, "errcode": 0, "errmsg": "ok"}))
        self.clients.append(ws)
        while True:
            frame = json.loads(await ws.get_message())
            cmd, req_id = frame.get("cmd"), frame.get("headers", {}).get("req_id")
            if cmd == "ping":
                self.pings += 1
            elif cmd == "aibot_respond_msg":
                if req_id not in self.callback_req_ids:
                    await ws.send_message(json.dumps({"headers": {"req_id": req_id}, "errcode": 40058,
                                                      "errmsg": "invalid req_id"}))
                    continue
                self.responses.append(frame)
                self.sent.append(frame)
                stream = (frame.get("body") or {}).get("stream")
                if isinstance(stream, dict):
                    self.streams.setdefault(str(stream.get("id")), []).append(
                        {"req_id": req_id, "finish": stream.get("finish"), "content": stream.get("content")})
            elif cmd == "aibot_send_msg":
                body = frame.get("body") or {}
                kind = body.get("msgtype")
                if kind in ("image", "file", "voice", "video") and (body.get(kind) or {}).get("media_id") not in self.media:
                    await self._ack(ws, req_id, 40007, "invalid media_id")
                    continue
                self.pushes.append(frame)
                self.sent.append(frame)
            elif cmd in ("aibot_upload_media_init", "aibot_upload_media_chunk", "aibot_upload_media_finish"):
                self.upload_frames.append(frame)
                errcode, errmsg, body = self._upload(cmd, frame.get("body") or {})
                await self._ack(ws, req_id, errcode, errmsg, body)
                continue
            else:
                await ws.send_message(json.dumps({"headers": {"req_id": req_id}, "errcode": 40003,
                                                  "errmsg": f"unknown cmd {cmd}"}))
                continue
            await ws.send_message(json.dumps({"headers": {"req_id": req_id}, "errcode": 0, "errmsg": "ok"}))

    async def _ack(self, ws: WebSocketConnection, req_id: Any, errcode: int, errmsg: str,
                   body: dict[str, Any] | None = None) -> None:
        ack: dict[str, Any] = {"headers": {"req_id": req_id}, "errcode": errcode, "errmsg": errmsg}
        if body is not None:
            ack["body"] = body
        await ws.send_message(json.dumps(ack))

    def _upload(self, cmd: str, body: dict[str, Any]) -> tuple[int, str, dict[str, Any] | None]:
        if cmd == "aibot_upload_media_init":
            chunks, size = body.get("total_chunks"), body.get("total_size")
            if not isinstance(chunks, int) or not 1 <= chunks <= 100 or not isinstance(size, int) or not body.get("md5"):
                return 40058, "invalid upload init", None
            upload_id = f"up{next(self._ids):06d}"
            self.uploads[upload_id] = {**body, "chunks": {}}
            return 0, "ok", {"upload_id": upload_id}
        upload = self.uploads.get(str(body.get("upload_id")))
        if upload is None:
            return 40058, "invalid upload_id", None
        if cmd == "aibot_upload_media_chunk":
            index, data = body.get("chunk_index"), base64.b64decode(str(body.get("base64_data") or ""))
            if not isinstance(index, int) or not 0 <= index < upload["total_chunks"] or len(data) > 512 * 1024:
                return 40058, "invalid chunk", None
            upload["chunks"][index] = data
            return 0, "ok", None
        if sorted(upload["chunks"]) != list(range(upload["total_chunks"])):
            return 40058, "chunks missing", None
        data = b"".join(upload["chunks"][i] for i in range(upload["total_chunks"]))
        if len(data) != upload["total_size"] or hashlib.md5(data).hexdigest() != upload["md5"]:
            return 40058, "size or md5 mismatch", None
        stored = Stored(data, str(upload.get("filename") or ""))
        refusal = upload_refusal(str(upload.get("type")), stored)
        if refusal:
            return refusal[0], refusal[1], None
        media_id = f"media{next(self._ids):06d}"
        self.media[media_id] = stored
        return 0, "ok", {"type": upload["type"], "media_id": media_id, "created_at": "1380000000"}

    def file_item(self, data: bytes, name: str = "file", *, encrypt: bool = True) -> dict[str, str]:
        """A file on the download host -> the callback's {"url", "aeskey"}."""
        assert self.files is not None
        return self.files.put(data, name, encrypt=encrypt)

    async def media_message(self, msgtype: str, payload: dict[str, Any], *, user: str = "zhangsan",
                            chatid: str | None = None) -> dict[str, Any]:
        """A user sends an image / file / voice / mixed message (``payload`` is its msgtype's object)."""
        n = next(self._ids)
        body: dict[str, Any] = {"msgid": f"msg{n:06d}", "aibotid": self.bot_id,
                                "chattype": "group" if chatid else "single", "from": {"userid": user},
                                "msgtype": msgtype, msgtype: payload}
        if chatid:
            body["chatid"] = chatid
        frame = {"cmd": "aibot_msg_callback", "headers": {"req_id": f"cb{n:06d}"}, "body": body}
        await self.push(frame)
        return frame

    async def user_message(self, content: str, *, user: str = "zhangsan", chatid: str | None = None,
                           msgid: str | None = None) -> dict[str, Any]:
        """A user writes to the robot (in a group when chatid is given: an @-mention of it)."""
        n = next(self._ids)
        body: dict[str, Any] = {"msgid": msgid or f"msg{n:06d}", "aibotid": self.bot_id,
                                "chattype": "group" if chatid else "single", "from": {"userid": user},
                                "msgtype": "text", "text": {"content": content}}
        if chatid:
            body["chatid"] = chatid
        frame = {"cmd": "aibot_msg_callback", "headers": {"req_id": f"cb{n:06d}"}, "body": body}
        await self.push(frame)
        return frame

    async def push(self, frame: dict[str, Any]) -> None:
        self.callback_req_ids.add(frame.get("headers", {}).get("req_id", ""))
        await self.send_raw(json.dumps(frame, ensure_ascii=False))

    async def send_raw(self, text: str) -> None:
        for ws in list(self.clients):
            with contextlib.suppress(*PEER_GONE):
                await ws.send_message(text)

    def texts(self) -> list[str]:
        """Every text the robot sent, in order (finished stream answers and pushes; a stream's
        unfinished frames are its previews: see ``streams``)."""
        out = []
        for frame in self.sent:
            body = frame["body"]
            if body["msgtype"] == "stream" and body["stream"].get("finish"):
                out.append(body["stream"]["content"])
            elif body["msgtype"] == "markdown":
                out.append(body["markdown"]["content"])
        return out
