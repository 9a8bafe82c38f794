"""WeCom (企业微信) callback mode: a self-built app (自建应用) whose messages WeCom POSTs, encrypted,
to a URL of the daemon's web server, answered through the app message API.

Inbound (``handle_callback``, served at ``CALLBACK_PATH`` by ngb/web/app.py before its API guard:
WeCom cannot send the API token, every request proves itself with WeCom's signature instead):

- ``GET ?msg_signature&timestamp&nonce&echostr``: the URL check WeCom makes when the callback is
  saved in the admin console: signature, decrypt, answer the plain echostr.
- ``POST ?msg_signature&timestamp&nonce`` with ``<xml><Encrypt>..</Encrypt></xml>``: signature over
  the ciphertext, timestamp within ``timestamp_window``, decrypt (padding, corp id), parse the inner
  XML (MsgType text/image/voice/video/file/location/link/event, FromUserName, MsgId, AgentID,
  ChatId when WeCom gives one); its file is fetched through the media API (wecom_media.py). Stored
  (keyed on MsgId) *before* the empty 200 goes back; WeCom retries after 5 s up to 3 times: a retry
  is stored and answered once (a 503 while the first one's file is still coming).
- Forged or broken requests (bad signature, wrong corp id, stale timestamp, bad padding, not XML)
  are refused with 403/400 and a log line (throttled per reason); nothing is stored.

Outbound (``send``): ``gettoken`` (corp id + the app's Secret; cached until shortly before
``expires_in``, refetched at once on errcode 40014/42001), then ``message/send`` (``touser`` + the
app's ``agentid``) for a user, or ``appchat/send`` for a group chat the app created (a chat id seen
in a callback's ChatId, or one ``message/send`` refuses as a user with 81013). Markdown (or text)
parts of at most ``part_bytes`` UTF-8 bytes; a retry resumes at the part that failed. Files out
(``send_file``): ``media/upload``, then an image or file message the same way.

State: ``connected`` once a gettoken succeeded (replies can go out), ``unauthorized`` when WeCom
refuses the corp id / Secret / server IP (retried slowly), ``disconnected`` when the API cannot be
reached. Callbacks are accepted in every state. Crypto: ngb/channels/wecom_crypto.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

import trio

from ..logs import REDACT
from ..media.intake import MediaIntake
from ..records import InboundMessage
from .base import ChannelError, ChannelMemory, Submit
from .common import CONNECTED, AuthError, Lru, redact_in_logs, split_text
from .skeleton import PlatformChannel
from .wecom_crypto import CallbackRefused, WeComCrypto, parse_xml
from .wecom_media import (
    TOKEN_ERRCODES,
    ApiFailed,
    WeComAppFiles,
    app_downloads,
    take_downloads,
)
from .wecom_settings import (  # noqa: F401 - re-exported: tests and the doctor import them from here
    CALLBACK_PART_BYTES,
    CALLBACK_PATH,
    DEFAULT_API,
    ENV,
    PREFIX,
    SECRETS,
    WeComCallbackSettings,
)

log = logging.getLogger(__name__)

NOT_A_USER = 81013  # message/send: no valid recipient (the id may be an app group chat)
NO_SUCH_CHAT = 86003  # appchat/send: no such app group chat
LOG_EVERY = 10.0  # seconds between two log lines for the same refusal reason


class WeComCallbackChannel(WeComAppFiles, PlatformChannel):
    name = PREFIX
    mode = "callback"

    def __init__(self, settings: WeComCallbackSettings, *, trigger: str = "",
                 memory: ChannelMemory | None = None,
                 media: MediaIntake | None = None) -> None:
        super().__init__(settings, memory=memory, media=media)  # (no trigger word: an app chat is always addressed)
        off = bool(settings.off_reason)
        # Served by the web server only when the channel can run at all.
        self.callback_path: str | None = None if off else CALLBACK_PATH
        self.crypto = None if off else WeComCrypto(settings.token, settings.encoding_aes_key, settings.corp_id)
        self.keep_secret(settings.token, settings.encoding_aes_key, settings.corp_secret,
                         loggers=("httpx", "httpcore", "ngb"))
        self._http: Any = None  # httpx.AsyncClient while running
        self._token: str | None = None
        self._token_until = 0.0
        self._token_lock = trio.Lock()
        self._trouble = trio.Event()
        self._trouble_error: Exception | None = None
        self._seen = Lru(4096)  # MsgIds stored (a WeCom retry is answered from here)
        self._taking: set[str] = set()  # MsgIds whose files are being fetched
        self._app_chats: set[str] = set()  # ids that are app group chats (appchat/send), not users
        self._last_refusal_log: dict[str, float] = {}
        self.duplicates = 0
        self.events = 0
        self.malformed = 0
        self.refused: dict[str, int] = {}
        self.sent = 0
        self.token_fetches = 0
        self.url_checks = 0

    def details(self) -> dict[str, Any]:
        return dict(mode=self.mode, corp_id=self.settings.corp_id, agent_id=self.settings.agent_id,
                    callback_path=self.callback_path, received=self.received, duplicates=self.duplicates,
                    events=self.events, malformed=self.malformed, refused=dict(self.refused), sent=self.sent,
                    token_fetches=self.token_fetches, url_checks=self.url_checks)

    # -- life cycle: the API client and the credential check ----------------------------------------
    async def enter(self, stack: AsyncExitStack) -> None:
        import httpx

        # HTTPS_PROXY is honoured: WeCom only answers API calls from the app's trusted IPs (企业可信IP),
        # which may mean a proxy with a fixed address.
        self._http = await stack.enter_async_context(httpx.AsyncClient(timeout=self.settings.request_timeout))

    async def close(self) -> None:
        self._http = None

    async def session(self, submit: Submit) -> None:
        """Fetch a token (are the corp id, Secret and this server's IP accepted?), then stay
        connected until a send reports that WeCom refused or could not be reached."""
        self._trouble = trio.Event()
        self._trouble_error = None
        try:
            await self._access_token(force=True)
        except ApiFailed as exc:
            if exc.auth:
                raise AuthError(f"WeCom refused the corp id or app Secret ({exc})") from None
            raise ConnectionError(str(exc)) from None
        self.status.set(CONNECTED)
        log.info("wecom: callback mode, app %s of corp %s; WeCom must reach %s", self.settings.agent_id,
                 self.settings.corp_id, self.callback_path)
        await self._trouble.wait()
        assert self._trouble_error is not None
        raise self._trouble_error

    def _flag(self, error: Exception) -> None:
        if self.status.state == CONNECTED and not self._trouble.is_set():
            self._trouble_error = error
            self._trouble.set()

    # -- inbound ------------------------------------------------------------------------------------
    async def handle_callback(self, method: str, args: Mapping[str, str], body: bytes, remote: str | None = None,
                              headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """One HTTP request to the callback URL -> (status, body). Never raises. ``headers`` is not
        used: WeCom's signature is in the query."""
        try:
            if method == "GET":
                return self._verify_url(args)
            if method == "POST":
                return await self._message(args, body)
            return 405, b"method not allowed"
        except CallbackRefused as exc:
            self._refuse(exc.reason, remote)
            return exc.status, b""
        except Exception:  # noqa: BLE001 - e.g. the store is down: WeCom retries what is not a 200
            log.exception("wecom: callback failed; WeCom will retry it")
            return 500, b""

    def _refuse(self, reason: str, remote: str | None) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._last_refusal_log.get(reason, -1e9) >= LOG_EVERY:
            self._last_refusal_log[reason] = now
            log.warning("wecom: callback refused from %s: %s (%d so far); nothing stored", remote or "?", reason,
                        self.refused[reason])

    @staticmethod
    def _params(args: Mapping[str, str], *names: str) -> list[str]:
        values = [str(args.get(n) or "") for n in names]
        missing = [n for n, v in zip(names, values, strict=True) if not v]
        if missing:
            raise CallbackRefused(400, f"missing {', '.join(missing)}")
        return values

    def _check_time(self, timestamp: str) -> None:
        try:
            sent = int(timestamp)
        except ValueError:
            raise CallbackRefused(400, "timestamp is not a number") from None
        if abs(time.time() - sent) > self.settings.timestamp_window:
            raise CallbackRefused(403, "timestamp outside the window (a replay, or this clock is off)")

    def _verify_url(self, args: Mapping[str, str]) -> tuple[int, bytes]:
        sig, timestamp, nonce, echostr = self._params(args, "msg_signature", "timestamp", "nonce", "echostr")
        assert self.crypto is not None  # (no callback_path while off)
        plain = self.crypto.verify_url(sig, timestamp, nonce, echostr)
        self._check_time(timestamp)
        self.url_checks += 1
        log.info("wecom: callback URL verified by WeCom")
        return 200, plain.encode("utf-8")

    async def _message(self, args: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        sig, timestamp, nonce = self._params(args, "msg_signature", "timestamp", "nonce")
        assert self.crypto is not None
        inner = self.crypto.decrypt_message(sig, timestamp, nonce, body)  # signature first, then decrypt
        self._check_time(timestamp)
        try:
            xml = parse_xml(inner)
        except CallbackRefused as exc:  # signed by WeCom but unreadable: retrying will not help
            self.malformed += 1
            log.warning("wecom: signed callback ignored (%s): %.300r", exc.reason, inner)
            return 200, b""
        agent = (xml.findtext("AgentID") or "").strip()
        if agent and agent != str(self.settings.agent_id):
            self._refuse("for another app (its AgentID is not agent_id)", None)
            return 200, b""  # authentic, just not ours: do not make WeCom retry
        msgtype = (xml.findtext("MsgType") or "").strip()
        if msgtype == "event":
            self.events += 1
            log.debug("wecom: event %s from %s", xml.findtext("Event"), xml.findtext("FromUserName"))
            return 200, b""
        inbound = self.to_inbound(xml)
        if inbound is None:
            self.malformed += 1
            log.warning("wecom: callback without sender or MsgId ignored: %.300r", inner)
            return 200, b""
        if inbound.platform_id in self._seen:
            self.duplicates += 1
            log.info("wecom: message %s delivered again (a WeCom retry); already stored", inbound.platform_id)
            return 200, b""
        submit = self.submit_to
        if submit is None or inbound.platform_id in self._taking:
            return 503, b""  # not running yet, or its file is still coming: WeCom retries
        self._taking.add(inbound.platform_id)
        try:
            files = app_downloads(self.media, self._http, self.settings.api_base, self._access_token,
                                  self._drop_token, xml)
            await self._store(submit, await take_downloads(self.media, inbound, files))
        finally:
            self._taking.discard(inbound.platform_id)
        self._seen.put(inbound.platform_id, None)
        return 200, b""

    def to_inbound(self, xml: Any) -> InboundMessage | None:
        def field(name: str) -> str:
            return (xml.findtext(name) or "").strip()

        user, msgid, msgtype = field("FromUserName"), field("MsgId"), field("MsgType")
        if not user or not msgid:
            return None
        chat_id = field("ChatId")
        if chat_id:
            self._app_chats.add(chat_id)
        if msgtype == "text":
            text = xml.findtext("Content") or ""
        elif msgtype in ("image", "voice", "video", "file"):  # the file is the message (wecom_media.py)
            text = ""
        elif msgtype == "location":
            text = f"[location] {field('Label')} ({field('Location_X')}, {field('Location_Y')})"
        elif msgtype == "link":
            text = f"[link] {field('Title')} {field('Url')}".rstrip()
        else:
            text = f"[{msgtype or 'message'}]"
        return InboundMessage(chat=f"{PREFIX}:{chat_id or user}", sender=user, text=text.strip(),
                              platform_id=msgid, sender_id=user,
                              mentions_bot=not chat_id,  # a 1:1 message to the app is addressed to it
                              direct=not chat_id)

    async def _store(self, submit: Submit, inbound: InboundMessage) -> None:
        # stored when this returns; a failure (not a refusal) answers 500 and WeCom retries
        await self._gate.submit(submit, inbound)

    # -- the app API ------------------------------------------------------------------------------
    async def _call(self, what: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        import httpx

        http = self._http
        if http is None:
            raise ApiFailed(what, None, f"wecom is {self.state}")
        try:
            response = await http.request(method, self.settings.api_base + path, **kwargs)
        except httpx.TimeoutException:
            raise ApiFailed(what, None, "no answer in time") from None
        except httpx.HTTPError as exc:  # the text of some of these quotes the URL (and its token)
            raise ApiFailed(what, None, f"cannot reach {self.settings.api_base} ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise ApiFailed(what, None, f"HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ApiFailed(what, None, "not a JSON object")
        return data

    async def _access_token(self, *, force: bool = False) -> str:
        async with self._token_lock:
            now = trio.current_time()
            if self._token and not force and now < self._token_until:
                return self._token
            data = await self._call("gettoken", "GET", "/cgi-bin/gettoken",
                                    params={"corpid": self.settings.corp_id, "corpsecret": self.settings.corp_secret})
            errcode = int(data.get("errcode") or 0)
            token = str(data.get("access_token") or "")
            if errcode or not token:
                raise ApiFailed("gettoken", errcode, self.status.redact(str(data.get("errmsg") or "")))
            self.token_fetches += 1
            try:
                expires_in = max(1.0, float(data.get("expires_in") or 7200))
            except (TypeError, ValueError):
                expires_in = 7200.0
            if token != self._token:
                if self._token:
                    REDACT.secrets.discard(self._token)  # the filter keeps the live token only
                redact_in_logs(token, ("httpx", "httpcore", "ngb"))
            self.status.secrets = self.status.secrets[:3] + [token]
            self._token = token
            self._token_until = now + expires_in - min(300.0, expires_in / 10)  # refresh a little early
            return token

    def _drop_token(self, token: str) -> None:
        if self._token == token:
            self._token = None

    async def _post(self, what: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with a token; on 40014/42001 once more with a fresh one. ApiFailed on errcode != 0."""
        for attempt in (1, 2):
            token = await self._access_token()
            data = await self._call(what, "POST", path, params={"access_token": token}, json=body)
            errcode = int(data.get("errcode") or 0)
            if errcode in TOKEN_ERRCODES and attempt == 1:
                log.info("wecom: access token %s (errcode %d); fetching a new one",
                         "expired" if errcode == 42001 else "refused", errcode)
                self._drop_token(token)
                continue
            if errcode:
                raise ApiFailed(what, errcode, str(data.get("errmsg") or ""))
            return data
        raise AssertionError("unreachable")

    async def _send_part(self, target: str, content: str) -> str:
        return await self._deliver(target, self.settings.msgtype, {"content": content})

    async def _deliver(self, target: str, kind: str, payload: dict[str, Any]) -> str:
        """One message (text/markdown, or an image or file by media_id) to a user or app group chat."""
        if target not in self._app_chats:
            body = {"touser": target, "agentid": self.settings.agent_id, "msgtype": kind, kind: payload, "safe": 0}
            try:
                data = await self._post("message/send", "/cgi-bin/message/send", body)
            except ApiFailed as exc:
                if exc.errcode != NOT_A_USER:
                    raise
                data = None
            if data is not None and target not in str(data.get("invaliduser") or "").split("|"):
                return str(data.get("msgid") or "")
            log.info("wecom: %s is not a user of the app; sending to it as an app group chat", target)
        try:
            data = await self._post("appchat/send", "/cgi-bin/appchat/send",
                                    {"chatid": target, "msgtype": kind, kind: payload, "safe": 0})
        except ApiFailed as exc:
            if exc.errcode == NO_SUCH_CHAT and target not in self._app_chats:
                raise ApiFailed("message/send", NOT_A_USER, f"{target!r} is neither a user who can see the app "
                                "nor a group chat the app created") from None
            raise
        self._app_chats.add(target)
        return str(data.get("msgid") or "")

    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        prefix, _, target = chat.partition(":")
        if prefix != PREFIX or not target:
            raise ChannelError(f"not a WeCom chat: {chat!r} (expected wecom:<userid or chatid>)", retryable=False)
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(text, self.settings.part_bytes, measure=lambda t: len(t.encode()))
        for index in range(len(ids), len(parts)):
            try:
                platform_id = await self._send_part(target, parts[index])
            except ApiFailed as exc:
                raise self._api_error(exc) from None
            self.sent += 1
            ids.append(platform_id)
            self._partial.record(key, platform_id)
        self._partial.finish(key)
        return next((i for i in ids if i), None)

    def _api_error(self, exc: Exception) -> ChannelError:  # a send's ApiFailed; WeCom gone or refusing: flagged
        assert isinstance(exc, ApiFailed)
        error = self.status.redact(str(exc))
        if exc.errcode is None:
            self._flag(ConnectionError(error))
        elif exc.auth:
            self._flag(AuthError(f"WeCom refused the app's credentials or this server ({error})"))
        return ChannelError(f"wecom: {error}", retryable=exc.retryable)
