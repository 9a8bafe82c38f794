"""QQ over OneBot v11 (go-cqhttp, NapCat, Lagrange.OneBot, LLOneBot, ...): plain JSON over a
websocket, spoken with trio-websocket; no SDK.

Two ways to connect, one per configuration:

- **forward** (``url = "ws://127.0.0.1:3001/"``): the daemon connects to the implementation's
  websocket server (the "universal" endpoint, events and API calls on one socket) and reconnects
  with backoff and jitter forever. The access token goes in ``Authorization: Bearer <token>``; a
  401/403 handshake is a rejected token: state ``unauthorized``, retried slowly, never fatal.
- **reverse** (``listen = "127.0.0.1:6700"``): the daemon serves a websocket at ``path`` (default
  ``/onebot/v11/ws``) and the implementation connects to it (and reconnects by itself). A connection
  without the right token (``Authorization: Bearer``/``Token`` or ``?access_token=``) is refused
  with 401/403 before the upgrade; a newer accepted connection replaces the older one.

Events: ``meta_event`` (lifecycle, heartbeat) are noted; ``message`` events (group and private;
``message`` as a segment array or a CQ-code string) become InboundMessage records, in arrival order,
stored before anything else. Chats are ``qq:group:<group id>`` and ``qq:private:<user id>``; a
message's platform id is ``group:<group id>:<message id>`` / ``private:<user id>:<message id>``. An
``at`` of the bot (``[CQ:at,qq=<self_id>]``), a reply to one of the bot's messages and every private
message set ``mentions_bot``.

OneBot v11 does not redeliver events a disconnected client missed, and has no ack. The channel
keeps, per chat, the newest message it has *stored* in the daemon's store (``NewestStored``, moved
only after the store) and, after every connect, a reconnect or the first one after a restart, asks
the history of every chat with such a mark where the implementation can (``get_group_msg_history``
/ ``get_friend_msg_history``, extensions of NapCat, go-cqhttp, Lagrange), paging back with
``message_seq`` until it reaches the mark (bounded by ``catch_up_pages``). What is newer is
submitted oldest first; the store's key on (channel, platform id) keeps every message exactly once.
An implementation that answers these actions as unsupported is logged once and the channel goes on.

Files: image, record, video and file segments are stored as attachments, and ``send_file`` sends an
image inline or a file by upload (onebot_media.py).

Replies: ``send_msg`` with a ``reply`` segment quoting the trigger on the first part; Markdown is
flattened to plain text (QQ renders none); long replies are split at ``part_limit`` at paragraph and
sentence boundaries and a retried reply resumes at the part that failed. See docs/channels/qq-onebot.md.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import trio

from ..media.intake import MediaIntake
from ..records import InboundMessage
from .base import ChannelError, ChannelMemory, Submit
from .common import CONNECTED, DISCONNECTED, UNAUTHORIZED, Lru, NewestStored, says_off, split_text
from .onebot_actions import OneBotConnection
from .onebot_catchup import (  # noqa: F401 - re-exported: tests import them from here
    FATAL_RETCODES,
    ActionFailed,
    OneBotCatchUp,
    chat_order,
    event_mark,
    mark_order,
)
from .onebot_media import OneBotFiles
from .onebot_messages import (  # noqa: F401 - re-exported
    PREFIX,
    Rendered,
    cq_unescape,
    markdown_to_plain,
    parse_chat,
    parse_cq,
    qq_chat,
    render,
    to_segments,
)
from .onebot_settings import (  # noqa: F401 - re-exported
    DEFAULT_PART_LIMIT,
    DEFAULT_PATH,
    KEYS,
    TABLE,
    TOKEN_ENV,
    OneBotSettings,
    settings_from_config,
)
from .skeleton import PlatformChannel
from .ws_rpc import handshake_errors

log = logging.getLogger(__name__)



def from_config(config: Any, env: Mapping[str, str] | None = None, *,
                memory: ChannelMemory | None = None) -> OneBotChannel | None:
    """The QQ channel this configuration asks for, or None (one log line when it is off: no token, or
    no url/listen). The token: NGB_ONEBOT_ACCESS_TOKEN, or ``access_token`` put into the table by the
    environment, or ``access_token_file`` (mode 600)."""
    settings = settings_from_config(config, env)
    if settings is None or says_off(settings, "qq", log):
        return None
    return OneBotChannel(settings, trigger=getattr(config, "trigger", ""), memory=memory)


class OneBotChannel(OneBotCatchUp, OneBotFiles, PlatformChannel):
    name = PREFIX
    mark_order = mark_order  # chat -> newest stored "<time>:<id>" (kept in the daemon's store)
    marks: NewestStored  # never None: mark_order is set

    def __init__(self, settings: OneBotSettings, *, trigger: str = "", memory: ChannelMemory | None = None,
                 media: MediaIntake | None = None) -> None:
        super().__init__(settings, trigger=trigger, memory=memory, media=media)
        self.keep_secret(settings.access_token, loggers=("trio-websocket", "trio_websocket", "ngb"))
        self._conn: OneBotConnection | None = None
        self.self_id: str = ""
        self.nickname: str = ""
        self.sessions = 0
        self.fetched = 0  # messages submitted from history answers (some may have been stored already)
        self.catch_ups = 0  # catch-ups finished (one per connect that had chats with a mark)
        self.malformed = 0
        self.rejected = 0  # reverse mode: connections refused for a bad token
        self.listening_port: int | None = None  # reverse mode: the bound port (listen = "host:0" in tests)
        # platform ids of the bot's own messages (a reply to one is a mention): a cache of what the
        # store knows (memory.sent_by_bot), which also holds those of earlier runs
        self._ours = Lru(4096)
        self._history_unsupported: set[str] = set()  # actions answered as unsupported (logged once)

    def details(self) -> dict[str, Any]:
        live = self._conn.malformed if self._conn is not None else 0
        return dict(mode=self.settings.mode, self_id=self.self_id or None, received=self.received,
                    fetched=self.fetched, catch_ups=self.catch_ups, malformed=self.malformed + live,
                    rejected=self.rejected)

    # -- connecting ------------------------------------------------------------------------------------
    async def session(self, submit: Submit) -> None:
        await (self._forward if self.settings.mode == "forward" else self._reverse)(submit)

    async def close(self) -> None:
        self._conn = None

    async def _forward(self, submit: Submit) -> None:
        from trio_websocket import open_websocket_url

        url = self.settings.url or ""
        headers = [(b"Authorization", f"Bearer {self.settings.access_token}".encode())]
        with handshake_errors("the OneBot implementation refused the access token"):
            async with open_websocket_url(url, extra_headers=headers, connect_timeout=self.settings.connect_timeout,
                                          disconnect_timeout=2, max_message_size=16 * 1024 * 1024) as ws:
                await self._serve(ws, submit, url)
        raise ConnectionError("the OneBot implementation closed the connection")

    async def _reverse(self, submit: Submit) -> None:
        from trio_websocket import serve_websocket

        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(
                serve_websocket, partial(self._accept, submit), self.settings.host, self.settings.port, None,
                handler_nursery=nursery, connect_timeout=self.settings.connect_timeout, disconnect_timeout=2,
                max_message_size=16 * 1024 * 1024))
            self.listening_port = server.port
            log.info("qq: waiting for the OneBot implementation on ws://%s:%d%s", self.settings.host, server.port,
                     self.settings.path)
            await trio.sleep_forever()

    def _token_ok(self, request: Any) -> bool | None:
        """True: right token; False: wrong one; None: none given."""
        given: str | None = None
        for key, value in request.headers:
            if key.decode("latin-1").lower() == "authorization":
                scheme, _, rest = value.decode("latin-1").strip().partition(" ")
                given = rest.strip() if scheme.lower() in ("bearer", "token") else value.decode("latin-1").strip()
        if given is None:
            query = dict(parse_qsl(urlsplit(request.path).query))
            given = query.get("access_token")
        if given is None:
            return None
        return hmac.compare_digest(given.encode(), self.settings.access_token.encode())

    async def _accept(self, submit: Submit, request: Any) -> None:
        """Reverse mode: one connection from the implementation."""
        path = urlsplit(request.path).path
        if path.rstrip("/") != self.settings.path.rstrip("/"):
            await request.reject(404, body=b"not found")
            return
        ok = self._token_ok(request)
        if not ok:
            self.rejected += 1
            code = 401 if ok is None else 403
            await request.reject(code, body=b"bad access token")
            reason = "no access token" if ok is None else "a wrong access token"
            log.error("qq: refused a OneBot connection with %s (HTTP %d)", reason, code)
            if self._conn is None:
                self.status.set(UNAUTHORIZED, f"the OneBot implementation connected with {reason}")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        role = headers.get("x-client-role", "Universal")
        if role.lower() != "universal":
            await request.reject(400, body=b"only the Universal client role is supported")
            log.error("qq: refused a OneBot connection with X-Client-Role %s (configure one universal reverse "
                      "websocket)", role)
            return
        ws = await request.accept()
        old = self._conn
        if old is not None:
            log.info("qq: a new OneBot connection replaces the old one")
            with trio.move_on_after(1):
                await old.ws.aclose()
        try:
            await self._serve(ws, submit, f"reverse connection (self id {headers.get('x-self-id', '?')})")
        except Exception as exc:  # noqa: BLE001 - one connection's failure is not the listener's
            log.warning("qq: reverse connection ended: %s", self.status.redact(f"{type(exc).__name__}: {exc}"))
        finally:
            if self._conn is None:
                self.status.set(DISCONNECTED, "the OneBot implementation disconnected; waiting for it to reconnect")

    async def _serve(self, ws: Any, submit: Submit, label: str) -> None:
        """One live connection: read, learn who we are, catch up on missed messages, pump events."""
        conn = OneBotConnection(ws, label)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.reader)
                try:
                    login = await conn.call("get_login_info", {}, self.settings.api_timeout) or {}
                except ActionFailed as exc:
                    log.warning("qq: get_login_info failed (%s); learning the bot's id from events", exc)
                    login = {}
                if login.get("user_id"):
                    self.self_id = str(login["user_id"])
                    self.nickname = str(login.get("nickname") or "")
                self.sessions += 1
                self._conn = conn
                self.status.set(CONNECTED)
                log.info("qq: connected to OneBot (%s) as %s (%s)", label, self.nickname or "?", self.self_id or "?")
                if self.settings.fetch_missed and self.marks.items():
                    # after a reconnect or a restart; the events that arrive meanwhile wait in
                    # conn.events_out, so no live message moves a mark past what is yet to fetch
                    await self._fetch_missed(conn, submit)
                await conn.run_beside(nursery, partial(self._pump, conn, submit), partial(self._keepalive, conn))
        finally:
            self.malformed += conn.malformed
            if self._conn is conn:
                self._conn = None

    async def _keepalive(self, conn: OneBotConnection) -> None:
        while True:
            await trio.sleep(self.settings.ping_interval)
            try:
                with trio.fail_after(self.settings.ping_interval):
                    await conn.ws.ping()
            except Exception as exc:  # noqa: BLE001 - TooSlowError, ConnectionClosed: the socket is dead
                log.warning("qq: no pong from %s (%s); reconnecting", conn.label, type(exc).__name__)
                await conn.give_up()
                return

    # -- inbound ---------------------------------------------------------------------------------------
    async def _pump(self, conn: OneBotConnection, submit: Submit) -> None:
        async for event in conn.events_out:
            await self._event(event, submit)

    async def _event(self, event: dict[str, Any], submit: Submit, *, fetched: bool = False) -> None:
        kind = event.get("post_type")
        if kind == "meta_event":
            if event.get("meta_event_type") == "lifecycle" and event.get("self_id") and not self.self_id:
                self.self_id = str(event["self_id"])
            return
        if kind != "message":
            return  # notice, request, message_sent (our own messages echoed back)
        try:
            inbound = self.to_inbound(event)
        except (KeyError, TypeError, ValueError) as exc:
            self.malformed += 1
            log.warning("qq: malformed message event ignored (%s): %.300r", exc, event)
            return
        if inbound is None:
            return
        if inbound.reply_to and not inbound.mentions_bot and await self.sent_by_bot(inbound.reply_to):
            inbound = attrs.evolve(inbound, mentions_bot=True)  # quoting the bot (maybe of an earlier run)
        inbound = await self.take_media(inbound, event)  # its files stored, or a note each
        await self._submit(submit, inbound, event_mark(event), fetched=fetched)

    async def _submit(self, submit: Submit, inbound: InboundMessage, mark: str | None, *,
                      fetched: bool = False) -> None:
        if fetched:
            self.fetched += 1
        await self._gate.submit(submit, inbound)  # raises when the store failed: the mark stays
        if mark is not None:
            await self.marks.advance(inbound.chat, mark)

    async def sent_by_bot(self, platform_id: str) -> bool:
        """Whether ``platform_id`` ("group:<id>:<message id>") is a message the bot sent, in this run
        or an earlier one (the outbox stores each delivered reply with the id send() returned)."""
        if platform_id in self._ours:
            return True
        if self.memory is None:
            return False
        try:
            ours = await self.memory.sent_by_bot(PREFIX, platform_id)
        except Exception as exc:  # noqa: BLE001 - not known as ours: only @-mentions trigger then
            log.warning("qq: could not look up whether %s is the bot's message: %s", platform_id, exc)
            return False
        if ours:
            self._ours.put(platform_id, True)
        return ours

    def to_inbound(self, event: dict[str, Any]) -> InboundMessage | None:
        """A OneBot v11 message event -> InboundMessage (None: not a user's message we keep)."""
        mtype = event.get("message_type")
        if mtype not in ("group", "private"):
            return None
        self_id = str(event.get("self_id") or self.self_id or "")
        user_id = str(event["user_id"])
        if self_id and user_id == self_id:
            return None  # our own message (history, or a message_sent reported as message)
        message_id = str(event["message_id"])
        target = str(event["group_id"]) if mtype == "group" else user_id
        if not target.lstrip("-").isdigit() or not message_id.lstrip("-").isdigit():
            raise ValueError("group_id/user_id/message_id must be numbers")
        segments = to_segments(event.get("message", event.get("raw_message", "")))
        rendered = render(segments, self_id, self.nickname)
        if not rendered.text:
            return None
        raw_sender = event.get("sender")
        sender_info: dict[str, Any] = raw_sender if isinstance(raw_sender, dict) else {}
        anonymous = event.get("anonymous") if isinstance(event.get("anonymous"), dict) else None
        if anonymous:
            sender = str(anonymous.get("name") or "anonymous")
        else:
            sender = str(sender_info.get("card") or sender_info.get("nickname") or user_id)
        chat = qq_chat(mtype, target)
        platform_id = f"{mtype}:{target}:{message_id}"
        reply_to = f"{mtype}:{target}:{rendered.reply_id}" if rendered.reply_id else None
        mentions = mtype == "private" or rendered.mentions_self or (reply_to is not None and reply_to in self._ours)
        stamp = event.get("time")
        when = datetime.fromtimestamp(float(stamp), UTC) if isinstance(stamp, int | float) else datetime.now(UTC)
        return InboundMessage(chat=chat, sender=sender, text=rendered.text, platform_id=platform_id, time=when,
                              sender_id=user_id, mentions_bot=mentions, reply_to=reply_to, direct=mtype == "private")

    # -- outbound --------------------------------------------------------------------------------------
    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        kind, target = parse_chat(chat)
        conn = self._conn
        if conn is None:
            raise ChannelError(f"qq is {self.state}", retryable=True)
        quote = self._quote(chat, kind, target, reply_to)
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(markdown_to_plain(text), self.settings.part_limit)
        for index in range(len(ids), len(parts)):
            message: list[dict[str, Any]] = []
            if index == 0 and quote:
                message.append({"type": "reply", "data": {"id": quote}})
            message.append({"type": "text", "data": {"text": parts[index]}})
            ids.append(await self._send_msg(conn, kind, target, message))
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return next((i for i in ids if i), None)

    def _quote(self, chat: str, kind: str, target: int, reply_to: str | None) -> str | None:
        """The message id a reply quotes: ``reply_to``'s, else the chat's newest trigger's."""
        return _message_id_in(reply_to or self._last_trigger.get(chat), kind, target)

    async def _send_msg(self, conn: OneBotConnection, kind: str, target: int, message: list[dict[str, Any]]) -> str:
        """One ``send_msg``; the platform id of the message sent ("" when the answer names none)."""
        params: dict[str, Any] = {"message_type": kind, "message": message}
        params["group_id" if kind == "group" else "user_id"] = target
        try:
            data = await conn.call("send_msg", params, self.settings.api_timeout)
        except ActionFailed as exc:
            raise ChannelError(f"qq: {exc}", retryable=exc.retcode not in FATAL_RETCODES) from None
        except (TimeoutError, trio.TooSlowError):
            raise ChannelError("qq: send_msg got no answer in time", retryable=True) from None
        except ConnectionError as exc:
            raise ChannelError(f"qq: {exc}", retryable=True) from None
        message_id = data.get("message_id") if isinstance(data, dict) else None
        platform_id = f"{kind}:{target}:{message_id}" if message_id is not None else ""
        if platform_id:
            self._ours.put(platform_id, True)
        return platform_id


def _message_id_in(platform_id: str | None, kind: str, target: int) -> str | None:
    """The message id inside "group:<id>:<message id>" when it belongs to this chat."""
    if not platform_id:
        return None
    pkind, _, rest = platform_id.partition(":")
    ptarget, _, message_id = rest.partition(":")
    if pkind != kind or ptarget != str(target) or not message_id.lstrip("-").isdigit():
        return None
    return message_id
