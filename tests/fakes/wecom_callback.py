"""A fake of WeCom for a self-built app in callback mode, both directions, on loopback:

- **WeCom -> daemon**: builds the inner message XML WeCom would send, encrypts it (AES-256-CBC,
  the real algorithm, via ngb/channels/wecom_crypto.py), signs it and POSTs it to the daemon's
  callback URL (``attach(url)``) as ``<xml><ToUserName/><Encrypt/><AgentID/></xml>``; ``verify_url``
  makes the GET check of the admin console. ``resend(req)`` repeats a request byte for byte, as
  WeCom's retries do. Forgeries on demand: another token (bad signature), another receiveid (wrong
  corp id, signed correctly), an old timestamp, broken padding.
- **daemon -> WeCom**: the app API an ``api_base`` points at: ``GET /cgi-bin/gettoken`` (corpid +
  corpsecret -> access_token, ``expires_in``), ``POST /cgi-bin/message/send`` (touser + agentid;
  an app group chat id as touser is errcode 81013, as on WeCom), ``POST /cgi-bin/appchat/send``
  (chatid of an app group chat, else 86003). Tokens can be expired (42001) or revoked (40014);
  ``fail_next(api, errcode=..)`` / ``fail_next(api, http=500)`` inject failures.
- **media**: ``GET /cgi-bin/media/get?access_token&media_id`` serves a file WeCom holds (``add_media``:
  what a user's image, voice, video or file message names by MediaId) with ``Content-Disposition``,
  or a JSON errcode (40007 for an unknown media_id); ``POST /cgi-bin/media/upload?access_token&type``
  takes the multipart field ``media`` (WeCom's limits: tests/fakes/wecom_files.py) -> ``media_id``.
  Image and file messages (``message/send`` / ``appchat/send``) name an uploaded media_id.
  ``media_message`` posts a callback for such a message.

Scripting::

    fake = await FakeWeComApp.start(nursery, corp_id=..., ...)
    fake.attach(f"http://127.0.0.1:{port}/channels/wecom/callback")
    req = await fake.user_message("hello", user="zhangsan")   # req.response.status_code == 200
    fake.sent                                                # message/send + appchat/send bodies
"""

from __future__ import annotations

import base64
import itertools
import os
import struct
import time
from typing import Any

import attrs
import httpx
import trio
from Crypto.Cipher import AES

from ngb.channels.wecom_crypto import WeComCrypto, signature

from .wecom_files import Stored, media_part, upload_refusal
from .wsserver import HttpRequest, HttpWsServer


@attrs.define
class Posted:
    """One callback request the fake made, and the daemon's answer."""

    method: str
    params: dict[str, str]
    body: bytes
    inner: str
    response: httpx.Response


class FakeWeComApp(HttpWsServer):
    def __init__(self, *, corp_id: str, agent_id: int, corp_secret: str, token: str, encoding_aes_key: str) -> None:
        super().__init__()
        self.corp_id = corp_id
        self.agent_id = agent_id
        self.corp_secret = corp_secret
        self.crypto = WeComCrypto(token, encoding_aes_key, corp_id)
        self.callback_url = ""
        self.headers: dict[str, str] = {}  # sent with every callback (e.g. what a reverse proxy adds)
        self.expires_in = 7200
        self.tokens: dict[str, bool] = {}  # token -> still valid
        self.expired: set[str] = set()
        self.app_chats: set[str] = set()
        self.strangers: set[str] = set()  # user ids the app cannot reach (81013)
        self.sent: list[dict[str, Any]] = []  # accepted message/send and appchat/send bodies (+ "api")
        self.calls: list[tuple[str, int]] = []  # (api, errcode) for every API call
        self.gettoken_calls = 0
        self.media: dict[str, Stored] = {}  # media_id -> file (a user's, or one uploaded)
        self.uploads: list[tuple[str, str]] = []  # (type, media_id) of every upload taken
        self.media_gets: list[str] = []
        self._failures: dict[str, list[dict[str, int]]] = {}
        self._ids = itertools.count(1)
        self._http: httpx.AsyncClient | None = None

    @classmethod
    async def start(cls, nursery: trio.Nursery, **kwargs: Any) -> FakeWeComApp:
        fake = cls(**kwargs)
        await nursery.start(fake.serve)
        return fake

    @property
    def api_base(self) -> str:
        return self.http_base

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    # -- the app API -------------------------------------------------------------------------------
    def fail_next(self, api: str, *, errcode: int = 0, http: int = 0, times: int = 1) -> None:
        self._failures.setdefault(api, []).extend([{"errcode": errcode, "http": http}] * times)

    def expire_tokens(self) -> None:
        self.expired.update(self.tokens)

    def revoke_tokens(self) -> None:
        for token in self.tokens:
            self.tokens[token] = False

    def texts(self) -> list[str]:
        return [body[body["msgtype"]]["content"] for body in self.sent if body["msgtype"] in ("text", "markdown")]

    def add_media(self, data: bytes, name: str, content_type: str = "application/octet-stream") -> str:
        media_id = f"1G6nrLmr5EC3MMb_-zK1dDdzmd0p7cNliYu9V5w{next(self._ids):06d}"
        self.media[media_id] = Stored(data, name, content_type)
        return media_id

    async def http(self, request: HttpRequest) -> tuple[int, Any]:
        api = request.path.removeprefix("/cgi-bin/")
        queue = self._failures.get(api)
        failure = queue.pop(0) if queue else None
        if failure and failure["http"]:
            self.calls.append((api, -failure["http"]))
            return failure["http"], b"upstream trouble"
        status, payload = self._api(api, request, failure["errcode"] if failure else 0)
        self.calls.append((api, int(payload.get("errcode", 0)) if isinstance(payload, dict) else 0))
        return status, payload

    def _api(self, api: str, request: HttpRequest, forced: int) -> tuple[int, Any]:
        def err(code: int, msg: str) -> tuple[int, dict[str, Any]]:
            return 200, {"errcode": code, "errmsg": msg}

        if api == "gettoken" and request.method == "GET":
            self.gettoken_calls += 1
            if forced:
                return err(forced, "injected")
            if request.query.get("corpid") != self.corp_id:
                return err(40013, "invalid corpid")
            if request.query.get("corpsecret") != self.corp_secret:
                return err(40001, "invalid credential, hint: [secret]")
            token = f"tok{next(self._ids):04d}" + base64.b32encode(os.urandom(10)).decode().lower()
            self.tokens[token] = True
            return 200, {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": self.expires_in}
        methods = {"message/send": "POST", "appchat/send": "POST", "media/upload": "POST", "media/get": "GET"}
        if methods.get(api) != request.method:
            return 404, {"errcode": 404, "errmsg": "not served by the fake"}
        token = request.query.get("access_token", "")
        if token in self.expired:
            return err(42001, "access_token expired")
        if not self.tokens.get(token):
            return err(40014, "invalid access_token")
        if forced:
            return err(forced, "injected")
        if api.startswith("media/"):
            return self._media(api, request)
        body = request.json()
        kind = body.get("msgtype")
        if kind in ("image", "file", "voice", "video"):
            if (body.get(kind) or {}).get("media_id") not in self.media:
                return err(40007, "invalid media_id")
        else:
            content = (body.get(kind) or {}).get("content") if kind in ("text", "markdown") else None
            if not isinstance(content, str) or not content:
                return err(44004, "empty content")
            if len(content.encode()) > 2048:
                return err(45002, "content size out of limit")
        if api == "message/send":
            if body.get("agentid") != self.agent_id:
                return err(40056, "invalid agentid")
            if not body.get("touser") or body["touser"] in self.app_chats | self.strangers:
                return err(81013, "user & party & tag all invalid")
            self.sent.append({**body, "api": api})
            return 200, {"errcode": 0, "errmsg": "ok", "invaliduser": "", "msgid": f"msg{next(self._ids):06d}"}
        if body.get("chatid") not in self.app_chats:
            return err(86003, "chat not exist")
        self.sent.append({**body, "api": api})
        return 200, {"errcode": 0, "errmsg": "ok"}

    def _media(self, api: str, request: HttpRequest) -> tuple[int, Any]:
        if api == "media/get":
            stored = self.media.get(request.query.get("media_id", ""))
            if stored is None:
                return 200, {"errcode": 40007, "errmsg": "invalid media_id"}
            self.media_gets.append(request.query["media_id"])
            return 200, (stored.data, [("content-type", stored.content_type),
                                       ("content-disposition", f'attachment; filename="{stored.name}"')])
        kind = request.query.get("type", "")
        stored = media_part(request)
        if stored is None:
            return 200, {"errcode": 41006, "errmsg": "media data missing"}  # no "media" part
        refusal = upload_refusal(kind, stored)
        if refusal:
            return 200, {"errcode": refusal[0], "errmsg": refusal[1]}
        media_id = self.add_media(stored.data, stored.name, stored.content_type)
        self.uploads.append((kind, media_id))
        return 200, {"errcode": 0, "errmsg": "", "type": kind, "media_id": media_id, "created_at": str(int(time.time()))}

    async def media_message(self, msgtype: str, data: bytes | None, name: str = "file", *,
                            content_type: str = "application/octet-stream", recognition: str | None = None,
                            pic_url: str | None = None, **kwargs: Any) -> Posted:
        """A user sends an image / voice / video / file to the app: WeCom holds the file (MediaId)."""
        fields = []
        if data is not None:
            fields.append(f"<MediaId><![CDATA[{self.add_media(data, name, content_type)}]]></MediaId>")
        if pic_url:
            fields.append(f"<PicUrl><![CDATA[{pic_url}]]></PicUrl>")
        if msgtype == "voice":
            fields.append("<Format><![CDATA[amr]]></Format>")
        if recognition is not None:
            fields.append(f"<Recognition><![CDATA[{recognition}]]></Recognition>")
        if msgtype == "video":
            fields.append("<ThumbMediaId><![CDATA[thumb0001]]></ThumbMediaId>")
        return await self.post_inner(self.inner_xml("", msgtype=msgtype, extra="".join(fields), **kwargs))

    # -- callbacks to the daemon -------------------------------------------------------------------
    def attach(self, url: str) -> None:
        self.callback_url = url

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10, trust_env=False)
        return self._http

    def inner_xml(self, content: str, *, user: str = "zhangsan", msgtype: str = "text", msgid: str | None = None,
                  chat_id: str | None = None, agent_id: int | None = None, extra: str = "") -> str:
        msgid = msgid or str(4561255354251345000 + next(self._ids))
        parts = [f"<ToUserName><![CDATA[{self.corp_id}]]></ToUserName>",
                 f"<FromUserName><![CDATA[{user}]]></FromUserName>",
                 f"<CreateTime>{int(time.time())}</CreateTime>",
                 f"<MsgType><![CDATA[{msgtype}]]></MsgType>"]
        if msgtype == "text":
            parts.append(f"<Content><![CDATA[{content}]]></Content>")
        if msgtype != "event":
            parts.append(f"<MsgId>{msgid}</MsgId>")
        if chat_id:
            parts.append(f"<ChatId><![CDATA[{chat_id}]]></ChatId>")
        parts.append(f"<AgentID>{self.agent_id if agent_id is None else agent_id}</AgentID>{extra}")
        return "<xml>" + "".join(parts) + "</xml>"

    async def user_message(self, content: str, **kwargs: Any) -> Posted:
        """A user writes to the app: the encrypted, signed callback, posted; returns it and the answer."""
        return await self.post_inner(self.inner_xml(content, **kwargs))

    async def post_inner(self, inner: str, *, token: str | None = None, receive_id: str | None = None,
                         timestamp: str | None = None, bad_padding: bool = False) -> Posted:
        nonce = str(int.from_bytes(os.urandom(4), "big"))
        timestamp = timestamp or str(int(time.time()))
        encrypted = _badly_padded(self.crypto.key, inner) if bad_padding else \
            self.crypto.encrypt(inner, receive_id=receive_id)
        body = (f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt>"
                f"<AgentID><![CDATA[{self.agent_id}]]></AgentID></xml>").encode()
        params = {"msg_signature": signature(token or self.crypto.token, timestamp, nonce, encrypted),
                  "timestamp": timestamp, "nonce": nonce}
        return await self.post_raw(params, body, inner=inner)

    async def post_raw(self, params: dict[str, str], body: bytes, *, inner: str = "") -> Posted:
        response = await self._client().post(self.callback_url, params=params, content=body,
                                             headers={"Content-Type": "text/xml", **self.headers})
        return Posted("POST", params, body, inner, response)

    async def resend(self, posted: Posted) -> Posted:
        """WeCom's retry of a callback it got no answer to in time: the same request again."""
        return await self.post_raw(posted.params, posted.body, inner=posted.inner)

    async def verify_url(self, *, token: str | None = None, headers: dict[str, str] | None = None) -> tuple[str, httpx.Response]:
        """The admin console's URL check: (the echostr plaintext expected, the daemon's answer)."""
        plain = str(int.from_bytes(os.urandom(8), "big"))
        echostr = self.crypto.encrypt(plain)
        timestamp, nonce = str(int(time.time())), str(next(self._ids))
        params = {"msg_signature": signature(token or self.crypto.token, timestamp, nonce, echostr), "timestamp": timestamp,
                  "nonce": nonce, "echostr": echostr}
        response = await self._client().get(self.callback_url, params=params, headers={**self.headers, **(headers or {})})
        return plain, response


def _badly_padded(key: bytes, message: str) -> str:
    """A ciphertext whose last block does not end in valid PKCS#7 padding (signed correctly)."""
    body = message.encode()
    plain = os.urandom(16) + struct.pack(">I", len(body)) + body
    plain += b"\x00" * (32 - len(plain) % 32)  # pad byte 0 is never valid
    return base64.b64encode(AES.new(key, AES.MODE_CBC, key[:16]).encrypt(plain)).decode()
