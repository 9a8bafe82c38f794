"""DingTalk (钉钉): the dingtalk-stream SDK (its client, frames, handlers and acks, unchanged) over the
shared asyncio bridge, in Stream mode: the daemon opens a websocket to DingTalk, nothing has to
reach it from the internet.

A session: ``POST gateway_url`` with ``{clientId, clientSecret, subscriptions, ua}`` returns
``{endpoint, ticket}``; the websocket ``endpoint?ticket=...`` then carries JSON frames
``{specVersion, type: SYSTEM|EVENT|CALLBACK, headers: {topic, messageId, ...}, data}``. The SDK's
``open_connection`` does that POST with blocking ``requests`` (it would stall every channel on the
shared loop), so ``_StreamClient`` replaces that call with an httpx async request (and disables the
equally blocking ``get_access_token``; the channel gets its tokens with httpx in trio); frames are
routed by the SDK's own ``route_message``: SYSTEM ``ping`` is answered with its data, SYSTEM
``disconnect`` closes the socket (we reconnect), and each robot message (CALLBACK topic
``/v1.0/im/bot/messages/get``) goes to our handler, whose answer the SDK sends back as the
``AckMessage``. Frames are handled one at a time, in arrival order. A callback is acked only after
the router has stored its message; an unacked one is pushed again by DingTalk, and a message seen
twice (same ``msgId``) is stored once (the store's key on channel + platform id, and an LRU here).

Only callbacks for our robot are taken: the websocket itself is authenticated (a single-use ticket
issued for our client secret), and a callback whose ``robotCode`` is not ours (or, when
``chatbot_user_id`` is set, whose ``chatbotUserId`` is not it) is refused with a log line: acked,
so it is not pushed again, but neither stored nor answered.

Chats are ``dingtalk:<conversationId>`` (groups and 1:1 alike); a message's platform id is its
``msgId``. DingTalk pushes group messages only when they @ the robot, so a group message sets
``mentions_bot`` (unless DingTalk says ``isInAtList: false``), and so does every 1:1 message.

Replies go through the ``sessionWebhook`` of the chat's latest message while it is valid
(``sessionWebhookExpiredTime``); after that, or when the webhook refuses, through the robot API
with an access token from ``/v1.0/oauth2/accessToken``: groups by ``groupMessages/send``
(``openConversationId``), 1:1 by ``oToMessages/batchSend`` to the sender's staff id. Markdown (or
plain text), split in parts of at most 6,000 UTF-8 bytes.

What the robot API needs to reach a chat (1:1 or group, and a 1:1 chat's staff id) is kept across
restarts in ``<state_dir>/channels/dingtalk-conversations.json`` (``_ConversationFile``; mode 0600,
written atomically off the trio loop, only when a chat's facts change), so a reply still pending
after a restart reaches a 1:1 chat without waiting for the person to write again. Session webhooks
are never written anywhere: they let anyone holding one post to the chat. Configuration:
docs/channels/dingtalk.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import attrs
import httpx
import trio
import websockets
from dingtalk_stream import (
    AckMessage,
    CallbackHandler,
    CallbackMessage,
    ChatbotMessage,
    Credential,
    DingTalkStreamClient,
)
from dingtalk_stream.version import VERSION_STRING

from ..aio_bridge import BRIDGE, AsyncioBridge, Portal
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

PREFIX = "dingtalk"
GATEWAY_URL = "https://api.dingtalk.com/v1.0/gateway/connections/open"
API_BASE = "https://api.dingtalk.com"
TOPIC_ROBOT = ChatbotMessage.TOPIC  # "/v1.0/im/bot/messages/get"
MAX_CONVERSATIONS = 4096  # chats whose reply facts are kept, in memory and in the file (oldest go first)
CONVERSATIONS_FILE = Path("channels") / "dingtalk-conversations.json"  # under the daemon's state dir
PART_BYTES = 6000  # a robot message may carry 20,000 bytes; long ones are folded by the client anyway
KEYS = {"client_id", "client_secret", "client_secret_file", "robot_code", "chatbot_user_id", "gateway_url",
        "api_base", "message_type", "connect_timeout", "request_timeout", "ping_interval", "webhook_margin",
        "reconnect_base", "reconnect_cap"}
MEDIA = {"picture": "[image]", "video": "[video]", "audio": "[voice message]", "file": "[file]",
         "interactiveCard": "[card]", "chatRecord": "[chat record]"}


@attrs.frozen
class DingTalkSettings:
    client_id: str | None = None  # the app's ClientID (AppKey)
    client_secret: str | None = attrs.field(default=None, repr=False)  # ClientSecret (AppSecret)
    robot_code: str | None = None  # the robot's code; for an app's own robot, its ClientID
    chatbot_user_id: str | None = None  # when set, callbacks for another chatbotUserId are refused
    gateway_url: str = GATEWAY_URL  # the open-connection API
    api_base: str = API_BASE  # the robot API and /v1.0/oauth2/accessToken
    message_type: str = "markdown"  # or "text"
    connect_timeout: float = 15.0  # open connection + websocket handshake
    request_timeout: float = 20.0  # each HTTP call
    ping_interval: float = 20.0  # websocket ping; no pong within as long again -> reconnect
    webhook_margin: float = 30.0  # a session webhook this close to its expiry is not used
    reconnect_base: float = 1.0
    reconnect_cap: float = 60.0
    off_reason: str | None = None
    state_dir: Path | None = None  # the daemon's (build_channels sets it); None: conversations kept in memory only

    @classmethod
    def from_table(cls, table: dict[str, Any], config_file: Path | None = None) -> DingTalkSettings:
        t = ChannelTable(PREFIX, table, config_file, KEYS)
        client_id = t.string("client_id", "").strip() or None
        secret = t.secret("client_secret")
        missing = [name for name, value in (("NGB_DINGTALK_CLIENT_ID", client_id),
                                            ("NGB_DINGTALK_CLIENT_SECRET", secret)) if not value]
        return cls(
            client_id=client_id,
            client_secret=secret,
            robot_code=t.string("robot_code", "").strip() or client_id,
            chatbot_user_id=t.string("chatbot_user_id", "").strip() or None,
            gateway_url=t.url("gateway_url", GATEWAY_URL).rstrip("/"),
            api_base=t.url("api_base", API_BASE).rstrip("/"),
            message_type=t.choice("message_type", "markdown", ("markdown", "text")),
            connect_timeout=t.duration("connect_timeout", 15.0),
            request_timeout=t.duration("request_timeout", 20.0),
            ping_interval=t.duration("ping_interval", 20.0),
            webhook_margin=t.duration("webhook_margin", 30.0, allow_zero=True),
            reconnect_base=t.duration("reconnect_base", 1.0),
            reconnect_cap=t.duration("reconnect_cap", 60.0),
            off_reason=f"no credentials: set {' and '.join(missing)} (or client_secret_file)" if missing else None,
        )


def dingtalk_chat(conversation_id: str) -> str:
    return f"{PREFIX}:{conversation_id}"


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


@attrs.define
class _Conversation:
    """What sending to a chat needs, from its latest message."""

    kind: str  # "1": 1:1, "2": group
    staff_id: str | None = None  # 1:1: the other person's staff id (oToMessages/batchSend)
    webhook: str | None = None
    webhook_expires: float = 0.0  # epoch seconds
    newest: int = 0  # createAt (ms) of the message these come from


class _ConversationFile:
    """The facts the robot API needs per chat, kept across restarts: ``{"version": 1, "conversations":
    {chat: {"kind": "1"|"2", "staff_id": ...}}}``, least recently seen first. Never a session webhook
    (a credential: whoever holds one can post to the chat until it expires). Its methods block: they
    run in a worker thread."""

    VERSION = 1

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writes = 0

    def load(self) -> list[tuple[str, str, str | None]]:
        """(chat, kind, staff id), oldest first; a missing file is empty, a bad one too (one warning)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("dingtalk: cannot read %s (%s); starting without the conversations it held", self.path, exc)
            return []
        try:
            return self.parse(raw)
        except Exception as exc:  # noqa: BLE001 - whatever is in the file, the channel starts
            log.warning("dingtalk: %s is not a conversations file (%s: %s); ignored, starting without it "
                        "(it is rewritten when a chat writes)", self.path, type(exc).__name__, exc)
            return []

    @classmethod
    def parse(cls, raw: bytes) -> list[tuple[str, str, str | None]]:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("version") != cls.VERSION:
            raise ValueError(f"no version {cls.VERSION} object")
        conversations = data.get("conversations")
        if not isinstance(conversations, dict):
            raise ValueError("no conversations object")
        out: list[tuple[str, str, str | None]] = []
        for chat, facts in conversations.items():
            if not isinstance(facts, dict) or facts.get("kind") not in ("1", "2") or not chat.startswith(f"{PREFIX}:"):
                raise ValueError(f"bad entry {chat[:80]!r}")
            staff = facts.get("staff_id")
            if staff is not None and not (isinstance(staff, str) and staff):
                raise ValueError(f"bad staff id for {chat[:80]!r}")
            if facts["kind"] == "1" and staff is None:
                continue  # nothing the robot API can use (never written so; tolerated)
            out.append((chat, facts["kind"], staff if facts["kind"] == "1" else None))
        return out

    def save(self, entries: list[tuple[str, str, str | None]]) -> None:
        """Replace the file with ``entries`` (oldest first): a temp file (0600) in the same directory
        (0700), fsynced, then renamed over it, so a crash leaves the old file or the new one."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)  # whatever the umask, or an older directory's mode
        conversations = {chat: {"kind": kind, **({"staff_id": staff} if staff else {})} for chat, kind, staff in entries}
        body = json.dumps({"version": self.VERSION, "conversations": conversations}, ensure_ascii=False,
                          separators=(",", ":")).encode()
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.writes += 1


class _QuietPings(logging.Filter):
    """The SDK logs every SYSTEM ping (one a few seconds) as an 'unknown message topic' warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("unknown message topic") and record.args
                    and isinstance(record.args, tuple) and record.args[0] == "ping")


class _HideSessions(logging.Filter):
    """httpx logs each request's URL; a session webhook's ``session=`` lets anyone post to the chat."""

    _SESSION = re.compile(r"([?&]session=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "session=" in text:
            record.msg, record.args = self._SESSION.sub(r"\1<redacted>", text), None
        return True


class _RobotHandler(CallbackHandler):
    """The SDK's callback handler for robot messages: hands each one to the trio side and answers
    with what it says (``raw_process`` wraps that in the AckMessage the SDK sends)."""

    def __init__(self, portal: Portal, on_message: Callable[[dict[str, Any]], Awaitable[tuple[int, str]]]) -> None:
        super().__init__()
        self.portal = portal
        self.on_message = on_message

    async def process(self, message: CallbackMessage) -> tuple[int, str]:
        data = message.data if isinstance(message.data, dict) else {}
        return await self.portal.run(self.on_message, data)


class _StreamClient(DingTalkStreamClient):
    """``DingTalkStreamClient`` with its one blocking call replaced: ``open_connection`` (``requests``
    on the event loop) becomes ``open_connection_async`` (httpx), and ``serve`` is one connection of
    the SDK's ``start()`` loop; reconnecting is ours. Routing, handlers and acks are the SDK's."""

    def __init__(self, settings: DingTalkSettings, logger: logging.Logger) -> None:
        super().__init__(Credential(settings.client_id, settings.client_secret), logger=logger)
        self.settings = settings

    def open_connection(self) -> Any:  # the SDK's version blocks the shared loop
        raise RuntimeError("use open_connection_async")

    def get_access_token(self) -> Any:  # blocking too; the channel gets its tokens itself
        raise RuntimeError("DingTalkChannel._access_token gets the tokens")

    async def open_connection_async(self) -> dict[str, str]:
        s = self.settings
        topics: list[dict[str, str]] = []
        if self._is_event_required:
            topics.append({"type": "EVENT", "topic": "*"})
        topics += [{"type": "CALLBACK", "topic": topic} for topic in self.callback_handler_map]
        body = {"clientId": s.client_id, "clientSecret": s.client_secret, "subscriptions": topics,
                "ua": f"dingtalk-sdk-python/v{VERSION_STRING}-union"}
        headers = {"Accept": "application/json",
                   "User-Agent": f"DingTalkStream/1.0 SDK/{VERSION_STRING} Python/{platform.python_version()} ngb"}
        async with httpx.AsyncClient(timeout=s.connect_timeout) as http:
            response = await http.post(s.gateway_url, json=body, headers=headers)
        answer = _json(response)
        code = str(answer.get("code") or "")
        low = code.lower()
        if response.status_code in (401, 403) or "auth" in low or "clientid" in low or "secret" in low:
            raise AuthError(f"open connection: HTTP {response.status_code} {code} {answer.get('message') or ''}".strip())
        if response.status_code != 200:
            raise ConnectionError(f"open connection: HTTP {response.status_code} {code or response.text[:200]}")
        endpoint, ticket = answer.get("endpoint"), answer.get("ticket")
        if not isinstance(endpoint, str) or not isinstance(ticket, str) or not endpoint.startswith(("ws://", "wss://")):
            raise ConnectionError(f"open connection: no endpoint and ticket in the answer ({sorted(answer)})")
        return {"endpoint": endpoint, "ticket": ticket}

    async def serve(self, connection: dict[str, str], on_open: Callable[[], Awaitable[None]]) -> None:
        """One websocket session: frames are routed by the SDK in arrival order, one at a time."""
        s = self.settings
        uri = f'{connection["endpoint"]}?ticket={quote_plus(connection["ticket"])}'  # as the SDK builds it
        async with websockets.connect(uri, open_timeout=s.connect_timeout, ping_interval=s.ping_interval,
                                      ping_timeout=s.ping_interval, close_timeout=3,
                                      max_size=4 * 1024 * 1024) as websocket:
            self.websocket = websocket
            try:
                await on_open()
                async for raw in websocket:
                    try:
                        frame = json.loads(raw)
                    except ValueError:
                        self.logger.warning("a frame that is not JSON (%d bytes) was ignored", len(raw))
                        continue
                    if isinstance(frame, dict):
                        await self.background_task(frame)  # route_message + ack; closes on "disconnect"
            finally:
                self.websocket = None


class DingTalkChannel:
    name = PREFIX

    def __init__(self, settings: DingTalkSettings, *, trigger: str = "", bridge: AsyncioBridge = BRIDGE) -> None:
        self.settings = settings
        self.trigger = trigger
        self.bridge = bridge
        self.status = ChannelStatus(PREFIX)
        self.status.secrets = [settings.client_secret or ""]
        redact_in_logs(settings.client_secret or "", ("dingtalk_stream", "httpx", "httpcore", "websockets", "ngb"))
        httpx_log = logging.getLogger("httpx")
        if not any(isinstance(f, _HideSessions) for f in httpx_log.filters):
            httpx_log.addFilter(_HideSessions())
        self.client: _StreamClient | None = None
        self.http: httpx.AsyncClient | None = None
        self._submit: Submit | None = None
        self._portal: Portal | None = None
        self._seen: Lru = Lru(4096)  # msgIds stored in this run
        self._convs: Lru = Lru(MAX_CONVERSATIONS)  # chat -> _Conversation
        self._conv_file = _ConversationFile(settings.state_dir / CONVERSATIONS_FILE) if settings.state_dir else None
        self._conv_lock = trio.Lock()
        self._conv_save_failed = False
        self._gate = InboundGate(PREFIX, trigger)
        self._partial = PartialSends()
        self._token: tuple[str, float] | None = None  # access token, expiry (monotonic)
        self._token_lock = trio.Lock()
        self.sessions = 0
        self.duplicates = 0
        self.refused = 0
        self.sent_by_webhook = 0
        self.sent_by_api = 0

    @property
    def state(self) -> str:
        return self.status.state

    @property
    def received(self) -> int:
        return self._gate.received

    # -- inbound -------------------------------------------------------------------------------------
    async def run(self, submit: Submit, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.settings.off_reason:
            self.status.set(OFF, self.settings.off_reason)
            task_status.started()
            await trio.sleep_forever()
        self._submit = submit
        if self._conv_file is not None:  # before sends can start (they need self.http)
            self._restore(self._conv_file.path, await trio.to_thread.run_sync(self._conv_file.load))
        async with self.bridge.attach() as portal, httpx.AsyncClient(timeout=self.settings.request_timeout) as http:
            self.http, self._portal = http, portal
            task_status.started()
            try:
                self.client = await self.bridge.call_sync(self._make_client, portal)
                await reconnect_forever(
                    self.status,
                    self._session,
                    base=self.settings.reconnect_base,
                    cap=self.settings.reconnect_cap,
                )
            finally:
                self.status.set(STOPPED)
                self.http = None

    def _make_client(self, portal: Portal) -> _StreamClient:  # on the asyncio loop thread
        logger = logging.getLogger("dingtalk_stream.client")
        if not any(isinstance(f, _QuietPings) for f in logger.filters):
            logger.addFilter(_QuietPings())
        client = _StreamClient(self.settings, logger)
        client.register_callback_handler(TOPIC_ROBOT, _RobotHandler(portal, self._on_callback))
        client.pre_start()
        return client

    async def _session(self) -> None:
        client = self.client
        assert client is not None
        with trio.fail_after(self.settings.connect_timeout * 2):
            connection = await self.bridge.call(client.open_connection_async)
        await self.bridge.call(client.serve, connection, self._on_open)

    async def _on_open(self) -> None:  # on the asyncio side, once the websocket is open
        assert self._portal is not None
        await self._portal.run(self._connected)

    async def _connected(self) -> None:
        self.sessions += 1
        self.status.set(CONNECTED)
        log.info("dingtalk: connected (stream mode, robot %s)", self.settings.robot_code)

    async def _on_callback(self, data: dict[str, Any]) -> tuple[int, str]:
        """A robot message (trio side): check it is ours, store it, then tell the SDK to ack it."""

        robot = data.get("robotCode")
        if robot is not None and robot != self.settings.robot_code:
            return self._refuse(data, f"robotCode {robot!r} is not ours ({self.settings.robot_code!r})")
        bot_user = data.get("chatbotUserId")
        if self.settings.chatbot_user_id and bot_user != self.settings.chatbot_user_id:
            return self._refuse(data, f"chatbotUserId {bot_user!r} is not ours")
        msg_id = str(data.get("msgId") or "")
        if not msg_id:
            return self._refuse(data, "no msgId")
        try:
            message = ChatbotMessage.from_dict(data)
            inbound = self.to_inbound(message)
        except Exception as exc:  # noqa: BLE001 - a malformed message is not pushed again
            return self._refuse(data, f"malformed ({type(exc).__name__}: {exc})")
        if self.remember(message):
            await self._save_conversations()  # before the ack: a restart finds what replying needs
        if msg_id in self._seen:
            self.duplicates += 1
            log.debug("dingtalk: message %s again (redelivered); already stored", msg_id)
            return AckMessage.STATUS_OK, "OK"
        if inbound is None:
            return AckMessage.STATUS_OK, "OK"
        assert self._submit is not None
        await self._gate.submit(self._submit, inbound)
        self._seen.put(msg_id, True)
        return AckMessage.STATUS_OK, "OK"

    def _refuse(self, data: dict[str, Any], why: str) -> tuple[int, str]:
        self.refused += 1
        log.warning("dingtalk: refused a robot callback (msgId %s, conversation %s): %s",
                    data.get("msgId"), data.get("conversationId"), why)
        return AckMessage.STATUS_OK, "refused"  # acked: pushing it again would not change the answer

    def remember(self, message: ChatbotMessage) -> bool:
        """Keep what replying to this chat needs (the newest message's session webhook). True when
        what the robot API needs (kind, staff id) changed, or the chat is new: it is to be saved."""
        if not message.conversation_id:
            return False
        chat = dingtalk_chat(message.conversation_id)
        created = int(message.create_at or 0)
        conv = self._convs.get(chat)
        if conv is not None and created < conv.newest:
            return False
        kind = "1" if str(message.conversation_type) == "1" else "2"
        expires = (message.session_webhook_expired_time or 0) / 1000
        staff = message.sender_staff_id or (conv.staff_id if conv else None)
        new = _Conversation(kind=kind, staff_id=staff if kind == "1" else None, webhook=message.session_webhook,
                            webhook_expires=expires, newest=created)
        self._convs.put(chat, new)
        return _kept(conv) != _kept(new)

    def _restore(self, path: Path, entries: list[tuple[str, str, str | None]]) -> None:
        """Conversations from the file, older than any seen in this run."""
        if not entries:
            return
        seen = list(self._convs.items())
        self._convs.clear()
        for chat, kind, staff in entries:
            self._convs.put(chat, _Conversation(kind=kind, staff_id=staff))
        for chat, conv in seen:
            self._convs.put(chat, conv)
        log.info("dingtalk: %d conversation(s) known from %s", len(entries), path)

    async def _save_conversations(self) -> None:
        """Write every chat's kind and staff id (no webhooks) to the file, in a worker thread."""
        if self._conv_file is None:
            return
        async with self._conv_lock:  # one write at a time, each with what is known when it starts
            entries = [(chat, *kept) for chat, conv in self._convs.items() if (kept := _kept(conv)) is not None]
            try:
                await trio.to_thread.run_sync(self._conv_file.save, entries)
            except OSError as exc:  # replies still work in this run; a restart may have to wait for a message
                if not self._conv_save_failed:
                    log.warning("dingtalk: cannot write %s (%s); conversations are kept in memory only until it works",
                                self._conv_file.path, exc)
                self._conv_save_failed = True
                return
            if self._conv_save_failed:
                log.info("dingtalk: %s written again", self._conv_file.path)
            self._conv_save_failed = False

    def to_inbound(self, message: ChatbotMessage) -> InboundMessage | None:
        """A robot message -> InboundMessage (None when it carries nothing to read)."""
        if not message.conversation_id or not message.message_id:
            return None
        text = self.plain_text(message)
        if not text.strip():
            return None
        direct = str(message.conversation_type) == "1"
        at_ids = {u.dingtalk_id for u in message.at_users or [] if u.dingtalk_id}
        mentioned = (direct or message.is_in_at_list is not False
                     or (bool(message.chatbot_user_id) and message.chatbot_user_id in at_ids))
        created = message.create_at
        when = datetime.fromtimestamp(int(created) / 1000, UTC) if created else datetime.now(UTC)
        return InboundMessage(
            chat=dingtalk_chat(message.conversation_id),
            sender=message.sender_nick or message.sender_staff_id or "someone",
            text=text,
            platform_id=str(message.message_id),
            time=when,
            sender_id=message.sender_staff_id or message.sender_id or "",
            mentions_bot=mentioned,
        )

    @staticmethod
    def plain_text(message: ChatbotMessage) -> str:
        """What a person reads: text; rich text (its text runs joined, pictures as [image]); a
        voice message's transcript; placeholders for other media. The @robot part is not in the
        text DingTalk sends (a group message starts with the blank that followed it)."""
        kind = message.message_type
        if kind == "text" and message.text is not None:
            return (message.text.content or "").strip()
        if kind == "richText" and message.rich_text_content is not None:
            parts: list[str] = []
            for item in message.rich_text_content.rich_text_list or []:
                if not isinstance(item, dict):
                    continue
                if "text" in item:
                    parts.append(str(item["text"]))
                elif item.get("type") == "picture" or "downloadCode" in item or "pictureDownloadCode" in item:
                    parts.append(MEDIA["picture"])
            return "\n".join(p.strip() for p in parts if p.strip())
        content = message.extensions.get("content") or {}
        if kind == "audio" and isinstance(content, dict) and content.get("recognition"):
            return f"{MEDIA['audio']} {content['recognition']}".strip()
        if kind == "file" and isinstance(content, dict) and content.get("fileName"):
            return f"[file: {content['fileName']}]"
        if kind in MEDIA:
            return MEDIA[kind]
        return f"[{kind} message]" if kind else ""

    # -- outbound ------------------------------------------------------------------------------------
    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        """Deliver ``text`` (split under 6,000 bytes): the chat's session webhook while valid, else the
        robot API. Returns the robot API's processQueryKey of the first part (None: webhook only)."""
        conversation_id = _conversation_id(chat)
        if self.http is None:
            raise ChannelError(f"dingtalk is {self.state}", retryable=True)
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(text, PART_BYTES, measure=utf8_len)
        for index in range(len(ids), len(parts)):
            ids.append(await self._send_part(chat, conversation_id, parts[index]) or "")
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return next((i for i in ids if i), None)

    async def typing(self, chat: str) -> None:
        """DingTalk robots have no typing indicator."""

    async def _send_part(self, chat: str, conversation_id: str, part: str) -> str | None:
        conv: _Conversation | None = self._convs.get(chat)
        if conv is not None and conv.webhook and time.time() < conv.webhook_expires - self.settings.webhook_margin:
            try:
                await self._post_webhook(conv.webhook, part)
                self.sent_by_webhook += 1
                return None
            except ChannelError as exc:
                log.info("dingtalk: session webhook of %s failed (%s); using the robot API", chat, exc)
                conv.webhook = None
        key = await self._post_robot_api(chat, conversation_id, conv, part)
        self.sent_by_api += 1
        return key

    def _message(self, part: str) -> tuple[str, dict[str, str]]:
        if self.settings.message_type == "text":
            return "text", {"content": part}
        return "markdown", {"title": _title(part), "text": part}

    async def _post_webhook(self, url: str, part: str) -> None:
        assert self.http is not None
        kind, body = self._message(part)
        try:
            response = await self.http.post(url, json={"msgtype": kind, kind: body})
        except httpx.HTTPError as exc:
            raise ChannelError(f"dingtalk: session webhook: {type(exc).__name__}: {exc}", retryable=True) from None
        answer = _json(response)
        errcode = answer.get("errcode", 0 if response.status_code == 200 else response.status_code)
        if response.status_code == 200 and errcode == 0:
            return
        raise ChannelError(f"dingtalk: session webhook: {errcode} {answer.get('errmsg') or ''}".strip(), retryable=True)

    async def _post_robot_api(self, chat: str, conversation_id: str, conv: _Conversation | None, part: str) -> str:
        kind, body = self._message(part)
        msg = {"robotCode": self.settings.robot_code, "msgKey": "sampleText" if kind == "text" else "sampleMarkdown",
               "msgParam": json.dumps(body, ensure_ascii=False)}
        if conv is not None and conv.kind == "1":
            if not conv.staff_id:
                raise ChannelError(f"dingtalk: no staff id for the 1:1 chat {chat} (an external user?)", retryable=False)
            answer = await self._api("/v1.0/robot/oToMessages/batchSend", {**msg, "userIds": [conv.staff_id]}, chat, conv)
            if conv.staff_id in (answer.get("invalidStaffIdList") or []):
                raise ChannelError(f"dingtalk: the robot cannot write to {conv.staff_id}", retryable=False)
            if conv.staff_id in (answer.get("flowControlledStaffIdList") or []):
                raise ChannelError(f"dingtalk: rate limited for {conv.staff_id}", retryable=True)
        else:
            answer = await self._api("/v1.0/robot/groupMessages/send", {**msg, "openConversationId": conversation_id},
                                     chat, conv)
        return str(answer.get("processQueryKey") or "")

    async def _api(self, path: str, body: dict[str, Any], chat: str, conv: _Conversation | None) -> dict[str, Any]:
        assert self.http is not None
        for attempt in range(2):
            token = await self._access_token()
            try:
                response = await self.http.post(self.settings.api_base + path, json=body,
                                                 headers={"x-acs-dingtalk-access-token": token})
            except httpx.HTTPError as exc:
                raise ChannelError(f"dingtalk: {path}: {type(exc).__name__}: {exc}", retryable=True) from None
            answer = _json(response)
            status, code = response.status_code, str(answer.get("code") or "")
            if status == 200:
                return answer
            if status == 401 and attempt == 0:  # the token expired early or was revoked: get a new one
                self._token = None
                continue
            what = f"dingtalk: {path}: HTTP {status} {code} {answer.get('message') or ''}".strip()
            if status == 429 or "throttl" in code.lower() or "flowcontrol" in code.lower() or status >= 500:
                raise ChannelError(what, retryable=True)
            if status == 403:
                raise ChannelError(what + " (grant the app the robot message permission, see docs/channels/dingtalk.md)",
                                   retryable=False)
            if conv is None:  # a chat never seen (or not kept): perhaps 1:1, whose staff id we do not know
                raise ChannelError(what + f" (no message from {chat} seen yet; held until one arrives)",
                                   retryable=True)
            raise ChannelError(what, retryable=False)
        raise ChannelError(f"dingtalk: {path}: the access token was refused twice", retryable=True)

    async def _access_token(self) -> str:
        async with self._token_lock:
            if self._token is not None and trio.current_time() < self._token[1]:
                return self._token[0]
            assert self.http is not None
            s = self.settings
            try:
                response = await self.http.post(s.api_base + "/v1.0/oauth2/accessToken",
                                                 json={"appKey": s.client_id, "appSecret": s.client_secret})
            except httpx.HTTPError as exc:
                raise ChannelError(f"dingtalk: access token: {type(exc).__name__}: {exc}", retryable=True) from None
            answer = _json(response)
            token = answer.get("accessToken")
            if response.status_code != 200 or not isinstance(token, str):
                raise ChannelError(self.status.redact(
                    f"dingtalk: access token refused: HTTP {response.status_code} {answer.get('code') or ''} "
                    f"{answer.get('message') or ''}").strip(), retryable=True)
            lifetime = float(answer.get("expireIn") or 7200)
            self._token = (token, trio.current_time() + max(60.0, lifetime - 300))
            return token

    def describe(self) -> dict[str, Any]:
        out = self.status.describe()
        out.update(robot=self.settings.robot_code, received=self.received, duplicates=self.duplicates,
                   refused=self.refused, sent_by_webhook=self.sent_by_webhook, sent_by_api=self.sent_by_api)
        return out


def _kept(conv: _Conversation | None) -> tuple[str, str | None] | None:
    """What the conversations file keeps of a chat: (kind, staff id). None for a 1:1 chat without a
    staff id (someone from outside the organization): the robot API cannot reach them, so after a
    restart a reply to them waits for their next message (and its webhook), as for an unknown chat."""
    if conv is None or (conv.kind == "1" and not conv.staff_id):
        return None
    return conv.kind, conv.staff_id


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _title(part: str) -> str:
    """A markdown message's title (what notifications show): its first line, as plain text."""
    for line in part.splitlines():
        plain = line.strip().lstrip("#>-*+ ").replace("**", "").replace("`", "").strip()
        if plain:
            return plain[:30]
    return "reply"


def _conversation_id(chat: str) -> str:
    prefix, _, raw = chat.partition(":")
    if prefix != PREFIX or not raw or any(c.isspace() for c in raw):
        raise ChannelError(f"not a DingTalk chat: {chat!r} (expected dingtalk:<conversationId>)", retryable=False)
    return raw
