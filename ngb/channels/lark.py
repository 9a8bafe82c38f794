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
plain text with ``@_user_N`` placeholders replaced by names; the images, files, audio and video of
a message (rich text's embedded images too) are downloaded into the media store, stickers, cards...
become a short placeholder; files go out as image or file messages (``lark_media``). Replies use
``im.v1.message.reply`` to the triggering message (``reply_in_thread`` makes them a thread), other
messages ``im.v1.message.create``; the outbox row id is the ``uuid`` idempotency key. Live
previews edit one message by ``im.v1.message.update`` (lark_preview.py). A message in a thread
(topic) carries its ``thread_id`` as ``thread``; a reply to it goes into that thread. Reactions out
and in: lark_reactions.py. Configuration:
docs/channels/lark.md.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio

from ..aio_bridge import BRIDGE, AsyncioBridge
from ..errors import one_error
from ..media.intake import MediaIntake
from .base import ChannelMemory, Submit
from .common import CONNECTED, AuthError, Lru
from .lark_events import PLACEHOLDERS, LarkEvents, post_text  # noqa: F401 - re-exported: tests import them from here
from .lark_media import LarkMedia
from .lark_preview import LarkPreviews
from .lark_reactions import LarkReactions
from .lark_sdk import TOKEN_INVALID, ApiError, import_sdk, sdk
from .lark_send import RATE_LIMITED, LarkSending
from .lark_settings import DOMAINS, KEYS, PREFIX, LarkSettings, chat_id_of, lark_chat, parse_domain  # noqa: F401
from .skeleton import PlatformChannel

log = logging.getLogger(__name__)


# Endpoint and handshake codes (lark_oapi.ws.const): transient ones; the rest mean "credentials refused".
SYSTEM_BUSY, FORBIDDEN, AUTH_FAILED = 1, 403, 514
INTERNAL_ERROR, EXCEED_CONN_LIMIT = 1000040343, 1000040350


class LarkChannel(LarkEvents, LarkMedia, LarkPreviews, LarkReactions, LarkSending, PlatformChannel):
    name = PREFIX
    uses_asyncio = True
    takes_idempotency_key = True  # base.IdempotentSend

    def __init__(self, settings: LarkSettings, *, trigger: str = "", bridge: AsyncioBridge = BRIDGE,
                 memory: ChannelMemory | None = None,
                 media: MediaIntake | None = None) -> None:
        super().__init__(settings, trigger=trigger, bridge=bridge, memory=memory, media=media)
        self.keep_secret(settings.app_secret or "", settings.verification_token or "", settings.encrypt_key or "",
                         loggers=("Lark", "httpx", "httpcore", "trio-websocket", "ngb"))
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
        self._chats = Lru(8192)  # message id -> its chat id (lark_reactions.py)
        self._reactions = Lru(4096)  # "<message id>:<emoji_type>" -> the bot's reaction_id there
        self._names = Lru(4096)  # open_id -> display name
        self._preview_edits = Lru(1024)  # live preview message id -> edits made (lark_preview.py)
        self._names_warned = False
        self.sessions = 0
        self.duplicates = 0
        self.refused = 0
        self.pongs = 0

    def details(self) -> dict[str, Any]:
        return dict(bot=self.bot_name, bot_open_id=self.bot_open_id, domain=self.settings.domain,
                    received=self.received, duplicates=self.duplicates, refused=self.refused,
                    ping_interval=self.ping_interval)

    # -- life cycle ------------------------------------------------------------------------------------
    async def close(self) -> None:
        self.client = None

    async def _load(self) -> None:
        s = await trio.to_thread.run_sync(import_sdk, self.bridge.loop)
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
            built = request() if callable(request) else request  # an upload's file is read once: built anew
            response = await self.bridge.call(call, built, await self._option(refresh=attempt == 1))
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
    async def session(self, submit: Submit) -> None:
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
        payload: bytes = frame.payload  # a protobuf bytes field: b"" when absent, never None
        total, seq = int(headers.get(s.ws_const.HEADER_SUM) or 1), int(headers.get(s.ws_const.HEADER_SEQ) or 0)
        if total > 1:
            combined = self._combine(headers.get(s.ws_const.HEADER_MESSAGE_ID, ""), total, seq, frame.payload)
            if combined is None:
                return  # wait for the other parts; the last one is acknowledged
            payload = combined
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
