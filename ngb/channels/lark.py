"""Feishu / Lark: the official ``lark-oapi`` SDK, long-connection (websocket) mode: the daemon
opens the connection, nothing has to reach it from the internet.

How the SDK is used, and why this way. ``lark_oapi.ws.Client`` cannot be used as it is: its
``start()`` blocks forever on a module-level asyncio loop of its own, and it fetches the websocket
URL with a blocking ``requests.post`` (which would stall every other channel on the shared asyncio
loop). So the frame loop is ours, in trio, over ``trio-websocket``, speaking the SDK's own wire
format with the SDK's own pieces: the protobuf ``Frame`` (``lark_oapi.ws.pb.pbbp2_pb2``), its
constants and ``EndpointResp``/``ClientConfig`` models, and its ``EventDispatcherHandler`` to turn
event payloads into typed ``P2ImMessageReceiveV1`` objects. Being trio-native gives structured
cancellation and lets us acknowledge an event only after the router has stored it. Every HTTP
call (tenant token, ``/callback/ws/endpoint``, ``bot/v3/info``, ``im.v1.message`` create/reply,
contact names) goes through the SDK's asyncio transport on THE shared bridge loop (``BRIDGE``);
no other loop or thread is started. ``lark_oapi`` is imported lazily, once, in a worker thread
whose current loop is the bridge's, so the SDK's import-time ``asyncio.get_event_loop()`` finds
that loop instead of creating one (and the 1.5 s import blocks neither trio nor asyncio).

The protocol: ``POST {domain}/callback/ws/endpoint`` with ``{"AppID", "AppSecret"}`` answers a
``wss://`` URL (``device_id`` and ``service_id`` in its query) and a ``ClientConfig``
(``PingInterval``, reconnect hints). Frames are binary protobuf: ``method`` 0 (control: ``type``
header ``ping``/``pong``; a pong may carry a new ``ClientConfig``) or 1 (data: ``type``
``event``/``card``, ``message_id``, ``sum``/``seq`` for payloads split over several frames,
``trace_id``). Every data frame is answered with the same frame carrying ``{"code": 200}`` (and a
``biz_rt`` header); an event that is not answered is delivered again. We ping at the server's
interval; a connection silent for three intervals is dropped; ``reconnect_forever`` reconnects
with backoff. Rejected credentials (tenant token, endpoint, handshake) set the state
``unauthorized`` and are retried slowly.

Chats are ``lark:<chat_id>`` (``oc_...``; p2p chats have one too); a message's platform id is its
``message_id`` (``om_...``), which also dedupes redeliveries (an in-memory window plus the store's
unique key). In p2p chats every message addresses the bot; in groups an @-mention of the bot (its
``open_id`` from ``bot/v3/info``, or ``bot_open_id``) does. Text and rich text (``post``) become
plain text with ``@_user_N`` placeholders replaced by names; images, files... a short placeholder.
Replies use ``im.v1.message.reply`` to the triggering message (``reply_in_thread`` makes them a
thread), other messages ``im.v1.message.create``; the outbox row id is the ``uuid`` idempotency key.
Configuration: docs/channels/lark.md.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import trio

from ..aio_bridge import BRIDGE, AsyncioBridge, BridgeClosed
from ..config import ConfigError
from ..errors import one_error
from ..records import InboundMessage
from .base import ChannelError, Submit
from .common import (
    CONNECTED,
    OFF,
    STOPPED,
    AuthError,
    ChannelStatus,
    InboundGate,
    Lru,
    PartialSends,
    reconnect_forever,
    redact_in_logs,
    split_text,
)
from .settings import ChannelTable

log = logging.getLogger(__name__)

PREFIX = "lark"
DOMAINS = {"feishu": "https://open.feishu.cn", "lark": "https://open.larksuite.com"}
PART_LIMIT = 4000  # characters per message (rich text requests are limited to 30 KB)
UUID_MAX = 50  # im.v1.message uuid (idempotency key) length limit
KEYS = {"app_id", "app_secret", "app_secret_file", "domain", "bot_open_id", "verification_token",
        "verification_token_file", "encrypt_key", "encrypt_key_file", "reply_in_thread", "format",
        "resolve_names", "request_timeout", "connect_timeout", "reconnect_base", "reconnect_cap", "enabled"}

# Endpoint and handshake codes (lark_oapi.ws.const): transient ones; the rest mean "credentials refused".
SYSTEM_BUSY, FORBIDDEN, AUTH_FAILED = 1, 403, 514
INTERNAL_ERROR, EXCEED_CONN_LIMIT = 1000040343, 1000040350
# Open API codes
TOKEN_INVALID = {99991661, 99991663, 99991664, 99991665, 99991668}  # fetch a new tenant token, retry once
RATE_LIMITED = {99991400, 230020}
REPLY_TARGET_GONE = {230011, 231003}  # the message to reply to was withdrawn / not found: post in the chat
FATAL_SEND = {230001, 230002, 230006, 230013, 230025, 230027, 99991672, 99991679}
FATAL_HINTS = {230002: " (add the bot to the chat)", 230006: " (enable the app's bot capability)",
               99991672: " (grant the im:message scopes and publish a new app version)",
               99991679: " (grant the im:message scopes and publish a new app version)"}
PLACEHOLDERS = {"image": "[image]", "audio": "[voice message]", "media": "[video]", "sticker": "[sticker]",
                "interactive": "[card]", "share_chat": "[shared chat]", "share_user": "[shared contact]",
                "merge_forward": "[forwarded messages]", "location": "[location]", "todo": "[task]",
                "calendar": "[calendar event]", "share_calendar_event": "[calendar event]", "vote": "[poll]",
                "hongbao": "[red packet]", "video_chat": "[video call]", "folder": "[folder]"}


@attrs.frozen
class LarkSettings:
    app_id: str | None = None
    app_secret: str | None = attrs.field(default=None, repr=False)
    domain: str = DOMAINS["feishu"]  # origin of the Open API (and of the websocket endpoint)
    bot_open_id: str | None = None  # None: asked with bot/v3/info at connect
    verification_token: str | None = attrs.field(default=None, repr=False)  # events carrying another are refused
    encrypt_key: str | None = attrs.field(default=None, repr=False)  # for encrypted event payloads
    reply_in_thread: bool = False  # replies open a thread on the triggering message
    format: str = "markdown"  # "markdown": rich text (post, md element); "text": plain text
    resolve_names: bool = True  # sender names via contact/v3/users (needs contact:user.base:readonly)
    request_timeout: float = 20.0
    connect_timeout: float = 15.0
    reconnect_base: float = 1.0
    reconnect_cap: float = 60.0
    off_reason: str | None = None

    @classmethod
    def from_table(cls, table: dict[str, Any], config_file: Path | None = None) -> LarkSettings:
        t = ChannelTable(PREFIX, table, config_file, KEYS)
        app_id = t.string("app_id").strip() or None
        app_secret = t.secret("app_secret")
        missing = [n for n, v in (("NGB_LARK_APP_ID", app_id), ("NGB_LARK_APP_SECRET", app_secret)) if not v]
        return cls(
            app_id=app_id,
            app_secret=app_secret,
            domain=parse_domain(t.get("domain", "feishu")),
            bot_open_id=t.string("bot_open_id").strip() or None,
            verification_token=t.secret("verification_token"),
            encrypt_key=t.secret("encrypt_key"),
            reply_in_thread=t.boolean("reply_in_thread", False),
            format=t.choice("format", "markdown", ("markdown", "text")),
            resolve_names=t.boolean("resolve_names", True),
            request_timeout=t.duration("request_timeout", 20.0),
            connect_timeout=t.duration("connect_timeout", 15.0),
            reconnect_base=t.duration("reconnect_base", 1.0),
            reconnect_cap=t.duration("reconnect_cap", 60.0),
            off_reason=f"no credentials: set {' and '.join(missing)} (or app_secret_file)" if missing else None,
        )


def parse_domain(value: Any) -> str:
    """"feishu" | "lark" | an origin URL -> the origin (https, or http on loopback for tests)."""
    text = str(value or "").strip()
    if text.lower() in DOMAINS:
        return DOMAINS[text.lower()]
    parts = urlsplit(text)
    host = (parts.hostname or "").lower()
    problem = None
    if parts.scheme not in ("https", "http") or not host:
        problem = 'must be "feishu", "lark" or a URL like https://open.feishu.cn'
    elif parts.scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
        problem = "must use https (http only for a loopback test server)"
    elif parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        problem = "must be an origin (scheme and host, optionally a port) without a path"
    if problem:
        raise ConfigError("channels.lark.domain", f"{problem}, got {text!r}")
    return f"{parts.scheme}://{parts.netloc}"


def lark_chat(chat_id: str) -> str:
    return f"{PREFIX}:{chat_id}"


# -- the SDK, imported once off both loops ---------------------------------------------------------
_SDK: SimpleNamespace | None = None
_SDK_LOCK = threading.Lock()


def _quiet_sdk_stdout_handler() -> None:
    """lark_oapi.core.log adds a handler of its own that prints to stdout ("[Lark] [time] ..."):
    under systemd each SDK line would reach the journal twice, once unstructured. Remove it; the
    records propagate to the daemon's handlers (journal/JSON/text, with secrets redacted)."""
    from lark_oapi.core import log as sdk_log

    sdk_log.logger.removeHandler(sdk_log.handler)
    sdk_log.logger.propagate = True


def _import_sdk(loop: asyncio.AbstractEventLoop | None) -> SimpleNamespace:
    """Import what we use of lark_oapi (in a worker thread). lark_oapi.ws.client calls
    asyncio.get_event_loop() at import time: with the bridge's loop as this thread's current loop it
    gets that one instead of creating a loop of its own."""
    global _SDK
    with _SDK_LOCK:
        if _SDK is not None:
            return _SDK
        if loop is not None:
            asyncio.set_event_loop(loop)
        try:
            import lark_oapi
            from lark_oapi.core.const import UTF_8
            from lark_oapi.core.enum import AccessTokenType, HttpMethod
            from lark_oapi.core.http import Transport
            from lark_oapi.core.model import BaseRequest, RequestOption
            from lark_oapi.core.utils import AESCipher
            from lark_oapi.event.dispatcher_handler import EventDispatcherHandler
            from lark_oapi.ws import const as ws_const
            from lark_oapi.ws.enum import FrameType, MessageType
            from lark_oapi.ws.model import ClientConfig, EndpointResp
            from lark_oapi.ws.pb.pbbp2_pb2 import Frame
        finally:
            if loop is not None:
                asyncio.set_event_loop(None)
        _quiet_sdk_stdout_handler()
        _SDK = SimpleNamespace(
            lark=lark_oapi, UTF_8=UTF_8, AccessTokenType=AccessTokenType, HttpMethod=HttpMethod, Transport=Transport,
            BaseRequest=BaseRequest, RequestOption=RequestOption, AESCipher=AESCipher,
            EventDispatcherHandler=EventDispatcherHandler, ws_const=ws_const, FrameType=FrameType,
            MessageType=MessageType, ClientConfig=ClientConfig, EndpointResp=EndpointResp, Frame=Frame,
        )
        return _SDK


def sdk() -> SimpleNamespace:
    """The SDK (importing it here when no bridge is involved: tests, tools)."""
    return _SDK or _import_sdk(None)


class ApiError(Exception):
    def __init__(self, what: str, code: Any, msg: str, status: int = 200) -> None:
        super().__init__(f"{what}: code {code}: {msg}" + (f" (HTTP {status})" if status != 200 else ""))
        self.code = code
        self.status = status


class LarkChannel:
    name = PREFIX

    def __init__(self, settings: LarkSettings, *, trigger: str = "", bridge: AsyncioBridge = BRIDGE) -> None:
        self.settings = settings
        self.trigger = trigger
        self.bridge = bridge
        self.status = ChannelStatus(PREFIX)
        self.status.secrets = [settings.app_secret or "", settings.verification_token or "",
                               settings.encrypt_key or ""]
        for secret in self.status.secrets:
            redact_in_logs(secret, ("Lark", "httpx", "httpcore", "trio-websocket", "ngb"))
        self.client: Any = None  # lark_oapi.Client (set_token mode: we hand it our tenant token)
        self.bot_open_id = settings.bot_open_id
        self.bot_name: str | None = None
        self.ping_interval = 120.0  # the server's ClientConfig.PingInterval
        self.server_config: dict[str, Any] = {}
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = trio.Lock()
        self._send_lock = trio.Lock()
        self._dispatcher: Any = None
        self._decoded: list[Any] = []
        self._chunks: dict[str, tuple[float, list[bytes | None]]] = {}
        self._seen = Lru(8192)  # message ids already stored (redeliveries are acked, not resubmitted)
        self._threads = Lru(8192)  # message id -> its thread id ("" when not in a thread)
        self._names = Lru(4096)  # open_id -> display name
        self._names_warned = False
        self._partial = PartialSends()
        self._gate = InboundGate(PREFIX, trigger)
        self._last_trigger = self._gate.last_trigger
        self.sessions = 0
        self.duplicates = 0
        self.refused = 0
        self.pings = 0
        self.pongs = 0

    @property
    def state(self) -> str:
        return self.status.state

    @property
    def received(self) -> int:
        return self._gate.received

    def describe(self) -> dict[str, Any]:
        out = self.status.describe()
        out.update(bot=self.bot_name, bot_open_id=self.bot_open_id, domain=self.settings.domain,
                   received=self.received, duplicates=self.duplicates, refused=self.refused,
                   ping_interval=self.ping_interval)
        return out

    # -- life cycle ------------------------------------------------------------------------------------
    async def run(self, submit: Submit, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.settings.off_reason:
            self.status.set(OFF, self.settings.off_reason)
            task_status.started()
            await trio.sleep_forever()
        async with self.bridge.attach():
            task_status.started()
            try:
                await reconnect_forever(
                    self.status,
                    lambda: self._session(submit),
                    base=self.settings.reconnect_base,
                    cap=self.settings.reconnect_cap,
                )
            finally:
                self.status.set(STOPPED)
                self.client = None

    async def _load(self) -> None:
        s = await trio.to_thread.run_sync(_import_sdk, self.bridge.loop)
        self.client = (s.lark.Client.builder().app_id(self.settings.app_id or "")
                       .app_secret(self.settings.app_secret or "").domain(self.settings.domain)
                       .enable_set_token(True).timeout(self.settings.request_timeout).build())
        logging.getLogger("Lark").setLevel(logging.WARNING)  # the builder sets the SDK logger's level
        self._dispatcher = (s.EventDispatcherHandler.builder("", "")
                            .register_p2_im_message_receive_v1(self._decoded.append).build())

    # -- HTTP through the SDK, on the bridge -----------------------------------------------------------
    async def _execute(self, request: Any, option: Any = None) -> tuple[int, dict[str, Any]]:
        s = sdk()
        raw = await self.bridge.call(s.Transport.aexecute, self.client.config, request, option)
        try:
            body = json.loads(raw.content or b"{}")
        except ValueError:
            body = {}
        return int(raw.status_code), body if isinstance(body, dict) else {}

    def _request(self, method: str, uri: str, body: Any = None, *, tenant: bool = False) -> Any:
        s = sdk()
        req = s.BaseRequest()
        req.http_method = getattr(s.HttpMethod, method)
        req.uri = uri
        req.body = body
        req.headers = {"locale": "zh"} if uri == s.ws_const.GEN_ENDPOINT_URI else {}
        req.token_types = {s.AccessTokenType.TENANT} if tenant else set()
        return req

    async def _option(self, *, refresh: bool = False) -> Any:
        option = sdk().RequestOption()
        option.tenant_access_token = await self._tenant_token(refresh=refresh)
        return option

    async def _tenant_token(self, *, refresh: bool = False) -> str:
        async with self._token_lock:
            if self._token and not refresh and time.monotonic() < self._token_expires:
                return self._token
            request = self._request("POST", "/open-apis/auth/v3/tenant_access_token/internal",
                                    {"app_id": self.settings.app_id, "app_secret": self.settings.app_secret})
            status, body = await self._execute(request)
            code = body.get("code")
            if code == 0 and body.get("tenant_access_token"):
                self._token = str(body["tenant_access_token"])
                self._token_expires = time.monotonic() + max(60, int(body.get("expire") or 7200) - 300)
                return self._token
            self._token = None
            msg = str(body.get("msg") or f"HTTP {status}")
            if status >= 500 or status == 429 or code in RATE_LIMITED:
                raise ConnectionError(f"tenant_access_token: {msg} (HTTP {status})")
            raise AuthError(f"tenant_access_token refused app {self.settings.app_id}: code {code}: {msg}")

    async def _api(self, what: str, call: Any, request: Any) -> Any:
        """An im/contact call through the SDK; a rejected tenant token is refreshed once."""
        for attempt in (0, 1):
            response = await self.bridge.call(call, request, await self._option(refresh=attempt == 1))
            if response.code in TOKEN_INVALID and attempt == 0:
                continue
            if not response.success():
                status = getattr(getattr(response, "raw", None), "status_code", 200) or 200
                raise ApiError(what, response.code, str(response.msg or ""), int(status))
            return response
        raise AssertionError("unreachable")

    async def _whoami(self) -> None:
        if self.bot_open_id and self.bot_name:
            return
        for attempt in (0, 1):
            status, body = await self._execute(self._request("GET", "/open-apis/bot/v3/info", tenant=True),
                                               await self._option(refresh=attempt == 1))
            if body.get("code") in TOKEN_INVALID and attempt == 0:
                continue
            break
        bot = body.get("bot") or (body.get("data") or {}).get("bot") or {}
        if body.get("code") == 0 and bot.get("open_id"):
            self.bot_open_id = self.bot_open_id or str(bot["open_id"])
            self.bot_name = str(bot.get("app_name") or "") or None
        elif not self.bot_open_id:
            log.warning("lark: bot/v3/info failed (code %s: %s); @-mentions of the bot cannot be recognised "
                        "until it works (or set channels.lark.bot_open_id)", body.get("code"), body.get("msg"))

    async def _endpoint(self) -> tuple[str, dict[str, Any]]:
        s = sdk()
        request = self._request("POST", s.ws_const.GEN_ENDPOINT_URI,
                                {"AppID": self.settings.app_id, "AppSecret": self.settings.app_secret})
        status, body = await self._execute(request)
        resp = s.EndpointResp(body)
        code, msg = resp.code, str(resp.msg or f"HTTP {status}")
        if status >= 500 or code in (SYSTEM_BUSY, INTERNAL_ERROR):
            raise ConnectionError(f"websocket endpoint: {msg} (code {code}, HTTP {status})")
        if code == EXCEED_CONN_LIMIT:
            raise ConnectionError(f"websocket endpoint: too many connections for this app ({msg})")
        if code != 0 or resp.data is None or not resp.data.URL:
            raise AuthError(f"websocket endpoint refused app {self.settings.app_id}: code {code}: {msg}")
        config = vars(resp.data.ClientConfig) if resp.data.ClientConfig is not None else {}
        return str(resp.data.URL), {k: v for k, v in config.items() if v is not None}

    def _configure(self, config: dict[str, Any]) -> None:
        self.server_config.update(config)
        interval = config.get("PingInterval")
        if isinstance(interval, int | float) and interval > 0:
            self.ping_interval = float(interval)

    # -- the connection ----------------------------------------------------------------------------------
    async def _session(self, submit: Submit) -> None:
        from trio_websocket import ConnectionRejected, HandshakeError, open_websocket_url

        if self.client is None:
            await self._load()  # here, so that even a failure to set the SDK up is a visible, retried error
        await self._tenant_token(refresh=True)
        await self._whoami()
        url, config = await self._endpoint()
        self._configure(config)
        query = parse_qs(urlsplit(url).query)
        service_id = int((query.get("service_id") or ["0"])[0] or 0)
        where = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}{urlsplit(url).path}"  # the query holds tickets
        try:
            with one_error():
                async with open_websocket_url(url, connect_timeout=self.settings.connect_timeout,
                                              disconnect_timeout=2, max_message_size=16 * 1024 * 1024) as ws:
                    self.sessions += 1
                    self.status.set(CONNECTED)
                    log.info("lark: connected to %s as %s (%s), ping every %.0fs", where,
                             self.bot_name or "the bot", self.bot_open_id or "open_id unknown", self.ping_interval)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pinger, ws, service_id)
                        await self._reader(ws, submit)
                        nursery.cancel_scope.cancel()
        except ConnectionRejected as exc:
            headers = {k.decode().lower(): v.decode() for k, v in exc.headers or ()}
            code = int(headers.get("handshake-status") or exc.status_code or 0)
            msg = headers.get("handshake-msg") or f"HTTP {exc.status_code}"
            auth_code = int(headers.get("handshake-autherrcode") or 0)
            if code in (AUTH_FAILED, FORBIDDEN, 401) and auth_code != EXCEED_CONN_LIMIT:
                raise AuthError(f"websocket handshake refused: {code}: {msg}") from None
            raise ConnectionError(f"websocket handshake refused: {code}: {msg}") from None
        except HandshakeError as exc:
            raise ConnectionError(f"websocket handshake failed: {type(exc).__name__}: {exc}") from None
        raise ConnectionError("the Lark connection ended")

    async def _send_frame(self, ws: Any, frame: Any) -> None:
        async with self._send_lock:
            await ws.send_message(frame.SerializeToString())

    async def _pinger(self, ws: Any, service_id: int) -> None:
        s = sdk()
        while True:
            frame = s.Frame()
            header = frame.headers.add()
            header.key, header.value = s.ws_const.HEADER_TYPE, s.MessageType.PING.value
            frame.service, frame.method, frame.SeqID, frame.LogID = service_id, s.FrameType.CONTROL.value, 0, 0
            try:
                await self._send_frame(ws, frame)
                self.pings += 1
            except Exception as exc:  # noqa: BLE001 - the reader sees the closed connection
                log.debug("lark: ping failed: %s", exc)
            await trio.sleep(self.ping_interval)

    async def _reader(self, ws: Any, submit: Submit) -> None:
        from trio_websocket import ConnectionClosed

        while True:
            silent_limit = max(3 * self.ping_interval, 10.0)
            with trio.move_on_after(silent_limit) as scope:
                try:
                    raw = await ws.get_message()
                except ConnectionClosed as exc:
                    raise ConnectionError(f"the websocket closed ({exc.reason})") from None
            if scope.cancelled_caught:
                raise ConnectionError(f"nothing received for {silent_limit:.0f}s")
            if isinstance(raw, str):
                raw = raw.encode()
            await self._on_frame(ws, raw, submit)

    async def _on_frame(self, ws: Any, raw: bytes, submit: Submit) -> None:
        s = sdk()
        frame = s.Frame()
        try:
            frame.ParseFromString(raw)
        except Exception as exc:  # noqa: BLE001 - protobuf DecodeError
            log.warning("lark: undecodable frame ignored (%s)", exc)
            return
        headers = {h.key: h.value for h in frame.headers}
        kind = headers.get(s.ws_const.HEADER_TYPE, "")
        if frame.method == s.FrameType.CONTROL.value:
            if kind == s.MessageType.PONG.value:
                self.pongs += 1
                if frame.payload:
                    try:
                        self._configure(json.loads(frame.payload))
                    except ValueError:
                        log.debug("lark: pong with an unreadable ClientConfig")
            return
        if frame.method != s.FrameType.DATA.value:
            return
        payload: bytes | None = frame.payload
        total, seq = int(headers.get(s.ws_const.HEADER_SUM) or 1), int(headers.get(s.ws_const.HEADER_SEQ) or 0)
        if total > 1:
            payload = self._combine(headers.get(s.ws_const.HEADER_MESSAGE_ID, ""), total, seq, frame.payload)
            if payload is None:
                return  # wait for the other parts; the last one is acknowledged
        started = time.monotonic()
        code = 200
        if kind == s.MessageType.EVENT.value:
            try:
                await self._on_event(payload, submit)
            except (trio.Cancelled, KeyboardInterrupt):
                raise
            except Exception:  # noqa: BLE001 - answered 500: the platform sends it again
                log.exception("lark: event %s could not be handled", headers.get(s.ws_const.HEADER_MESSAGE_ID))
                code = 500
        header = frame.headers.add()
        header.key, header.value = s.ws_const.HEADER_BIZ_RT, str(int((time.monotonic() - started) * 1000))
        frame.payload = json.dumps({"code": code}).encode()
        await self._send_frame(ws, frame)

    def _combine(self, msg_id: str, total: int, seq: int, part: bytes) -> bytes | None:
        now = time.monotonic()
        for key in [k for k, (deadline, _) in self._chunks.items() if deadline < now]:
            del self._chunks[key]
        if not 0 <= seq < total or total > 1024:
            log.warning("lark: bad chunk %s/%s of frame %s ignored", seq, total, msg_id)
            return None
        _, parts = self._chunks.setdefault(msg_id, (now + 30, [None] * total))
        if len(parts) != total:
            return None
        parts[seq] = part
        if any(p is None for p in parts):
            return None
        del self._chunks[msg_id]
        return b"".join(p for p in parts if p is not None)

    # -- inbound events ----------------------------------------------------------------------------------
    async def _on_event(self, payload: bytes, submit: Submit) -> None:

        data = json.loads(payload)
        if isinstance(data, dict) and data.get("encrypt"):
            if not self.settings.encrypt_key:
                log.error("lark: an encrypted event arrived; set channels.lark.encrypt_key (the app's Encrypt Key)")
                self.refused += 1
                return
            payload = sdk().AESCipher(self.settings.encrypt_key).decrypt_str(data["encrypt"]).encode()
            data = json.loads(payload)
        header = data.get("header") or {}
        event_type = header.get("event_type") or (data.get("event") or {}).get("type")
        token = header.get("token") if data.get("schema") else data.get("token")
        expected = self.settings.verification_token
        if expected and not hmac.compare_digest(str(token or "").encode(), expected.encode()):
            self.refused += 1
            log.warning("lark: event %s refused: its verification token does not match channels.lark.verification_token",
                        header.get("event_id") or data.get("uuid") or "?")
            return
        if event_type != "im.message.receive_v1":
            log.debug("lark: event %s ignored", event_type)
            return
        self._decoded.clear()
        self._dispatcher._do_without_validation(payload)  # the SDK's decoder (as its own ws client uses)
        if not self._decoded:
            return
        event = self._decoded.pop()
        inbound = self.to_inbound(event)
        if inbound is None:
            return
        if inbound.platform_id in self._seen:
            self.duplicates += 1
            log.debug("lark: message %s delivered again; already stored", inbound.platform_id)
            return
        sender_id = inbound.sender_id
        if self.settings.resolve_names and sender_id:
            inbound = attrs.evolve(inbound, sender=await self._name(sender_id))
        await self._gate.submit(submit, inbound)
        self._seen.put(inbound.platform_id, True)

    async def _name(self, open_id: str) -> str:
        if open_id in self._names:
            return str(self._names[open_id])
        name = open_id
        try:
            from lark_oapi.api.contact.v3 import GetUserRequest

            request = GetUserRequest.builder().user_id(open_id).user_id_type("open_id").build()
            with trio.fail_after(3):  # the event is acknowledged after this: Lark expects that within seconds
                response = await self._api("contact.v3.user.get", self.client.contact.v3.user.aget, request)
            user = getattr(response.data, "user", None)
            name = getattr(user, "name", None) or open_id
        except Exception as exc:  # noqa: BLE001 - a missing scope or a busy API: the id will do
            if not self._names_warned:
                self._names_warned = True
                log.warning("lark: cannot read sender names (%s); grant contact:user.base:readonly or set "
                            "channels.lark.resolve_names = false", self.status.redact(str(exc)))
        self._names.put(open_id, name)
        return name

    def to_inbound(self, event: Any) -> InboundMessage | None:
        """A P2ImMessageReceiveV1 -> InboundMessage (None for what is not a user's message)."""
        body = getattr(event, "event", None)
        message, sender = getattr(body, "message", None), getattr(body, "sender", None)
        if message is None or not message.message_id or not message.chat_id:
            return None
        sender_ids = getattr(sender, "sender_id", None)
        open_id = (getattr(sender_ids, "open_id", None) or getattr(sender_ids, "user_id", None) or "") if sender_ids else ""
        if getattr(sender, "sender_type", "user") not in (None, "user") or (open_id and open_id == self.bot_open_id):
            return None  # apps and bots, ourselves included
        mentions = list(message.mentions or [])
        text = self.message_text(message.message_type or "text", message.content or "{}", mentions)
        if not text.strip():
            return None
        mentions_bot = message.chat_type == "p2p" or any(
            self.bot_open_id and getattr(m.id, "open_id", None) == self.bot_open_id for m in mentions)
        self._threads.put(message.message_id, message.thread_id or "")
        try:
            when = datetime.fromtimestamp(int(message.create_time) / 1000, UTC)
        except (TypeError, ValueError):
            when = datetime.now(UTC)
        return InboundMessage(
            chat=lark_chat(message.chat_id),
            sender=self._names.get(open_id, open_id) if open_id else "unknown",
            text=text,
            platform_id=message.message_id,
            time=when,
            sender_id=open_id,
            mentions_bot=bool(mentions_bot),
            reply_to=message.parent_id or None,
        )

    def message_text(self, message_type: str, content: str, mentions: list[Any]) -> str:
        """A message's content JSON -> plain text; @_user_N placeholders -> @name."""
        try:
            data = json.loads(content)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        names = {m.key: (m.name or getattr(m.id, "open_id", None) or "someone") for m in mentions if m.key}

        def resolve(text: str) -> str:
            text = re.sub(r"@_user_\d+", lambda m: "@" + names.get(m.group(0), m.group(0)[1:]), text)
            return text.replace("@_all", "@all")

        if message_type == "text":
            return resolve(str(data.get("text") or ""))
        if message_type == "post":
            return resolve(post_text(data, names))
        if message_type == "file":
            return f"[file: {data.get('file_name') or 'file'}]"
        if message_type == "system":
            return ""
        return PLACEHOLDERS.get(message_type, f"[{message_type}]")

    # -- outbound ----------------------------------------------------------------------------------------
    async def send(self, chat: str, text: str, reply_to: str | None = None, *,
                   idempotency_key: str | None = None) -> str | None:
        """Send ``text`` (split under 4,000 characters): a reply to ``reply_to`` (or the chat's newest
        trigger), else a new message. ``idempotency_key`` becomes each part's ``uuid``: Lark sends a
        repeated uuid only once (within an hour)."""
        chat_id = _chat_id(chat)
        if self.client is None:
            raise ChannelError(f"lark is {self.state}", retryable=True)
        target = reply_to or self._last_trigger.get(chat)
        threaded = bool(target) and (self.settings.reply_in_thread or bool(self._threads.get(target or "")))
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(text, PART_LIMIT)
        for index in range(len(ids), len(parts)):
            uuid = f"{idempotency_key}.{index}"[-UUID_MAX:] if idempotency_key else None
            to = target if (index == 0 or threaded) else None
            ids.append(await self._send_part(chat_id, parts[index], to, uuid))
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return ids[0] if ids else None

    def _content(self, part: str) -> tuple[str, str]:
        if self.settings.format == "markdown":
            return "post", json.dumps({"zh_cn": {"content": [[{"tag": "md", "text": part}]]}}, ensure_ascii=False)
        return "text", json.dumps({"text": part}, ensure_ascii=False)

    async def _send_part(self, chat_id: str, part: str, reply_to: str | None, uuid: str | None) -> str:
        from lark_oapi.api.im.v1 import (
            CreateMessageRequest,
            CreateMessageRequestBody,
            ReplyMessageRequest,
            ReplyMessageRequestBody,
        )

        msg_type, content = self._content(part)
        for attempt in range(3):
            try:
                if reply_to:
                    body = ReplyMessageRequestBody.builder().msg_type(msg_type).content(content) \
                        .reply_in_thread(self.settings.reply_in_thread)
                    request = ReplyMessageRequest.builder().message_id(reply_to) \
                        .request_body((body.uuid(uuid) if uuid else body).build()).build()
                    response = await self._api("im.v1.message.reply", self.client.im.v1.message.areply, request)
                else:
                    body = CreateMessageRequestBody.builder().receive_id(chat_id).msg_type(msg_type).content(content)
                    request = CreateMessageRequest.builder().receive_id_type("chat_id") \
                        .request_body((body.uuid(uuid) if uuid else body).build()).build()
                    response = await self._api("im.v1.message.create", self.client.im.v1.message.acreate, request)
                return str(response.data.message_id)
            except ApiError as exc:
                if reply_to and exc.code in REPLY_TARGET_GONE:
                    log.info("lark: the message to reply to is gone (%s); posting in the chat", exc)
                    reply_to = None
                    continue
                if exc.code in RATE_LIMITED or exc.status == 429:
                    if attempt == 2:
                        raise ChannelError(f"lark: rate limited ({exc})", retryable=True) from None
                    await trio.sleep(1.0 + attempt)
                    continue
                if exc.code in FATAL_SEND:
                    raise ChannelError(f"lark: {exc}{FATAL_HINTS.get(exc.code, '')}", retryable=False) from None
                raise ChannelError(self.status.redact(f"lark: {exc}"), retryable=True) from None
            except AuthError as exc:
                raise ChannelError(self.status.redact(f"lark: credentials refused: {exc}"), retryable=True) from None
            except (BridgeClosed, OSError, TimeoutError, ConnectionError, ValueError) as exc:
                raise ChannelError(self.status.redact(f"lark: {type(exc).__name__}: {exc}"), retryable=True) from None
            except Exception as exc:  # noqa: BLE001 - httpx errors: network trouble
                if type(exc).__module__.startswith(("httpx", "httpcore")):
                    raise ChannelError(self.status.redact(f"lark: {type(exc).__name__}: {exc}"), retryable=True) from None
                raise
        raise ChannelError("lark: could not send", retryable=True)

    async def typing(self, chat: str) -> None:
        """Lark's Open API has no typing indicator for bots."""


def post_text(data: dict[str, Any], names: dict[str, str] | None = None) -> str:
    """A ``post`` (rich text) content -> plain text: the title, then one line per paragraph. Events
    carry ``{"title", "content"}``; sent posts wrap that in a locale (``{"zh_cn": {...}}``)."""
    names = names or {}
    doc = data
    if "content" not in doc:
        doc = next((v for v in data.values() if isinstance(v, dict) and "content" in v), {})
    lines: list[str] = []
    title = str(doc.get("title") or "").strip()
    if title:
        lines.append(title)
    for paragraph in doc.get("content") or []:
        chunk: list[str] = []
        for el in paragraph or []:
            if not isinstance(el, dict):
                continue
            tag = el.get("tag")
            if tag in ("text", "md"):
                chunk.append(str(el.get("text") or ""))
            elif tag == "a":
                label, href = str(el.get("text") or ""), str(el.get("href") or "")
                chunk.append(f"{label} ({href})" if label and href and label != href else label or href)
            elif tag == "at":
                uid = str(el.get("user_id") or "")
                name = el.get("user_name") or names.get(uid) or ("all" if uid in ("all", "@_all") else uid.lstrip("@"))
                chunk.append(f"@{name}")
            elif tag == "emotion":
                chunk.append(f":{el.get('emoji_type') or ''}:")
            elif tag == "img":
                chunk.append("[image]")
            elif tag == "media":
                chunk.append("[video]")
            elif tag == "code_block":
                chunk.append(f"```{str(el.get('language') or '').lower()}\n{el.get('text') or ''}\n```")
            elif tag == "hr":
                chunk.append("---")
        lines.append("".join(chunk))
    return "\n".join(lines).strip()


def _chat_id(chat: str) -> str:
    prefix, _, raw = chat.partition(":")
    if prefix != PREFIX or not re.fullmatch(r"[A-Za-z0-9_-]+", raw):
        raise ChannelError(f"not a Lark chat: {chat!r} (expected lark:<chat_id>, e.g. lark:oc_0123abcd)",
                           retryable=False)
    return raw
