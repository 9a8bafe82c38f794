"""WeCom (WeChat Work) intelligent robot (智能机器人) over its long connection: JSON frames over a
websocket the daemon opens to ``wss://openws.work.weixin.qq.com`` (trio-websocket; no SDK, no
public callback URL, no AES).

Frames are ``{"cmd": ..., "headers": {"req_id": ...}, "body": {...}}``; every command we send is
acknowledged with ``{"headers": {"req_id": <same>}, "errcode": 0, "errmsg": "ok"}``.

- ``aibot_subscribe`` (bot_id + secret) first; a non-zero errcode (853000: invalid bot_id or secret)
  is a rejected credential: state ``unauthorized``, retried slowly, never fatal.
- ``ping`` every ``heartbeat_interval``; no ack in time -> reconnect (backoff + jitter, forever).
- ``aibot_msg_callback``: a user's message (single chat, or a group message that @-mentions the
  robot: WeCom pushes only those). Stored first, in arrival order, keyed on ``msgid``, so a pushed-
  again message is stored and answered once. Its images and files are downloaded and decrypted
  first (ngb/channels/wecom_media.py); a voice message is its recognition text.
- ``aibot_event_callback``: ``enter_chat``, ``disconnected_event`` (another connection took over).
- Replies: the first part answers the triggering callback (``aibot_respond_msg`` with its
  ``req_id``, a finished ``stream``: WeCom shows it as the answer to that message) while that
  req_id is fresh; other parts and later messages are pushed with ``aibot_send_msg`` (markdown).
  Live previews: that stream grows while the agent writes (wecom_preview.py).
- Files out (``send_file``): uploaded over the connection, then an ``aibot_send_msg`` image or file.

Chats are ``wecom:<chatid>``: a group's chatid, or the user's userid for a single chat (the id
``aibot_send_msg`` takes). See docs/channels/wecom.md.

Reliability: the protocol has no history to catch up from and no ack of a callback (the client
answers nothing to ``aibot_msg_callback``), so a message pushed while no connection is subscribed,
or read but not yet stored when the daemon stops, is lost; nothing here pretends otherwise. What it
has, ``msgid``, is the platform id in the store: a callback pushed again (a new ``req_id``), in this
run or the next, is stored and answered once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import trio

from ..media.intake import MediaIntake
from ..records import InboundMessage, OutgoingFile
from .base import ChannelError, ChannelMemory, Submit
from .chats import chat_name
from .common import CONNECTED, AuthError, Lru, says_off, split_text
from .skeleton import PlatformChannel
from .wecom_media import robot_downloads, robot_items, robot_upload, take_downloads, upload_type
from .wecom_preview import STREAMS, WeComPreviews, utf8_len
from .wecom_settings import (  # noqa: F401 - re-exported: tests and the doctor import them from here
    BOT_ID_ENV,
    DEFAULT_PART_BYTES,
    DEFAULT_URL,
    KEYS,
    PREFIX,
    SECRET_ENV,
    WeComCallbackSettings,
    WeComSettings,
    settings_from_config,
)
from .ws_rpc import JsonRpcSocket, Route, handshake_errors

if TYPE_CHECKING:
    from .wecom_callback import WeComCallbackChannel

log = logging.getLogger(__name__)

AUTH_ERRCODES = {853000, 40001, 40014, 42001, 41001}


def from_config(config: Any, env: Mapping[str, str] | None = None, *,
                memory: ChannelMemory | None = None) -> WeComChannel | WeComCallbackChannel | None:
    """The WeCom channel (``mode = "callback"``: the self-built app's, wecom_callback.py), or None
    (one log line when it is off: its bot id or secret is missing). Secret: NGB_WECOM_SECRET,
    ``secret`` put into the table by the environment, or ``secret_file``."""
    settings = settings_from_config(config, env)
    if settings is None or says_off(settings, "wecom", log):
        return None
    if isinstance(settings, WeComCallbackSettings):  # the self-built app's mode
        from .wecom_callback import WeComCallbackChannel

        return WeComCallbackChannel(settings, memory=memory)
    return WeComChannel(settings, memory=memory)


wecom_chat = partial(chat_name, PREFIX)  # platform id -> chat


def _channel_error(exc: Exception) -> ChannelError:
    if isinstance(exc, CommandFailed):
        return ChannelError(f"wecom: {exc}", retryable=exc.errcode not in (40003, 40007, 40058, 93006))
    if isinstance(exc, TimeoutError | trio.TooSlowError):
        return ChannelError("wecom: no acknowledgement in time", retryable=True)
    return ChannelError(f"wecom: {exc}", retryable=True)


class CommandFailed(Exception):
    def __init__(self, cmd: str, errcode: Any, errmsg: str) -> None:
        super().__init__(f"{cmd}: errcode {errcode}: {errmsg}")
        self.errcode = errcode


class _Connection(JsonRpcSocket):
    """The long connection: commands matched to their acks by ``headers.req_id`` (and ``cmd``),
    callbacks handed to a memory channel in arrival order."""

    def __init__(self, ws: Any) -> None:
        super().__init__(ws, "the WeCom connection")

    def req_id(self, prefix: str) -> str:
        return f"{prefix}_{int(time.time() * 1000)}_{self.next_serial()}"

    async def command(self, cmd: str, body: dict[str, Any] | None, timeout: float, req_id: str | None = None) -> Any:
        """Send a command and wait for its ack (matched on req_id); CommandFailed on errcode != 0."""
        req_id = req_id or self.req_id(cmd)
        frame: dict[str, Any] = {"cmd": cmd, "headers": {"req_id": req_id}}
        if body is not None:
            frame["body"] = body
        ack = await self.request((cmd, req_id), frame, timeout)
        if ack is None:
            raise ConnectionError(f"the WeCom connection closed before {cmd} was acknowledged")
        errcode = ack.get("errcode", 0)
        if errcode not in (0, None):
            raise CommandFailed(cmd, errcode, str(ack.get("errmsg") or ""))
        return ack.get("body")

    def route(self, frame: dict[str, Any]) -> Hashable:
        if not isinstance(frame.get("headers", {}), dict):
            raise ValueError("not a JSON object with headers")
        cmd = frame.get("cmd")
        if cmd in ("aibot_msg_callback", "aibot_event_callback"):
            return Route.EVENT
        # An ack: it echoes our req_id (and sometimes our cmd).
        req_id = str((frame.get("headers") or {}).get("req_id", ""))
        for key in self.pending.keys():
            pending_cmd, pending_req_id = cast(tuple[str, str], key)  # request() keys are (cmd, req_id)
            if pending_req_id == req_id and (not cmd or pending_cmd == cmd):
                return key
        return Route.LATE if "errcode" in frame else Route.UNEXPECTED

    def malformed_frame(self, raw: Any, reason: ValueError) -> None:
        log.warning("wecom: malformed frame ignored (%s): %.200r", reason, raw)

    def unexpected_frame(self, raw: Any) -> None:
        log.warning("wecom: unexpected frame ignored: %.200r", raw)

    def late_response(self, raw: Any) -> None:
        log.debug("wecom: ack for an unknown or late command: %.200r", raw)


class WeComChannel(WeComPreviews, PlatformChannel):
    name = PREFIX

    def __init__(self, settings: WeComSettings, *, trigger: str = "", memory: ChannelMemory | None = None,
                 media: MediaIntake | None = None) -> None:
        super().__init__(settings, memory=memory, media=media)  # (no trigger word: the AI bot is always addressed)
        self.keep_secret(settings.secret, loggers=("trio-websocket", "ngb"))
        self._conn: _Connection | None = None
        self._callbacks = Lru(4096)  # msgid -> (req_id, monotonic time received)
        self._streams = Lru(STREAMS)  # stream id -> (callback req_id, time received, chat): previews
        self.sessions = 0
        self.malformed = 0
        self.kicked = 0

    def details(self) -> dict[str, Any]:
        live = self._conn.malformed if self._conn is not None else 0
        return dict(bot_id=self.settings.bot_id, received=self.received, malformed=self.malformed + live,
                    kicked=self.kicked)

    async def close(self) -> None:
        self._conn = None

    async def session(self, submit: Submit) -> None:
        from trio_websocket import open_websocket_url

        with handshake_errors("WeCom refused the connection"):
            async with open_websocket_url(self.settings.url, connect_timeout=self.settings.connect_timeout,
                                          disconnect_timeout=2, max_message_size=16 * 1024 * 1024) as ws:
                conn = _Connection(ws)
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(conn.reader)
                        try:
                            await conn.command("aibot_subscribe", {"bot_id": self.settings.bot_id,
                                                                   "secret": self.settings.secret},
                                               self.settings.request_timeout)
                        except CommandFailed as exc:
                            if exc.errcode in AUTH_ERRCODES:
                                raise AuthError(f"WeCom refused the bot id or secret ({exc})") from None
                            raise ConnectionError(str(exc)) from None
                        self.sessions += 1
                        self._conn = conn
                        self.status.set(CONNECTED)
                        log.info("wecom: subscribed as robot %s", self.settings.bot_id)
                        await conn.run_beside(nursery, partial(self._pump, conn, submit),
                                              partial(self._heartbeat, conn))
                finally:
                    self.malformed += conn.malformed
                    if self._conn is conn:
                        self._conn = None
        raise ConnectionError("the WeCom connection ended")

    async def _heartbeat(self, conn: _Connection) -> None:
        while True:
            await trio.sleep(self.settings.heartbeat_interval)
            try:
                await conn.command("ping", None, self.settings.heartbeat_interval)
            except Exception as exc:  # noqa: BLE001 - no ack: the connection is dead
                log.warning("wecom: heartbeat failed (%s); reconnecting", type(exc).__name__)
                await conn.give_up()
                return

    async def _pump(self, conn: _Connection, submit: Submit) -> None:
        async for frame in conn.events_out:
            try:
                if frame.get("cmd") == "aibot_event_callback":
                    await self._event(conn, frame)
                    continue
                inbound = self.to_inbound(frame)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                self.malformed += 1
                log.warning("wecom: malformed callback ignored (%s): %.300r", exc, frame)
                continue
            if inbound is not None:
                inbound = await take_downloads(self.media, inbound, robot_downloads(self.media, frame["body"]))
                await self._submit(submit, inbound)

    async def _event(self, conn: _Connection, frame: dict[str, Any]) -> None:
        event = (frame.get("body") or {}).get("event") or {}
        kind = event.get("eventtype") or (frame.get("body") or {}).get("eventtype")
        if kind == "disconnected_event":
            self.kicked += 1
            log.warning("wecom: WeCom closed this connection because another one subscribed as robot %s "
                        "(only one connection per robot)", self.settings.bot_id)
            await conn.give_up()
        else:
            log.debug("wecom: event %s", kind)

    def to_inbound(self, frame: dict[str, Any]) -> InboundMessage | None:
        body = frame["body"]
        req_id = str(frame["headers"]["req_id"])
        msgid = str(body["msgid"])
        user = str((body.get("from") or {})["userid"])
        chattype = body.get("chattype", "single")
        chatid = str(body.get("chatid") or "") if chattype == "group" else user
        if not chatid:
            raise ValueError("group callback without chatid")
        msgtype = body.get("msgtype")
        if msgtype == "text":
            text = str((body.get("text") or {}).get("content", ""))
        elif msgtype == "voice":
            text = str((body.get("voice") or {}).get("content", "")) or "[voice]"
        elif msgtype == "mixed":  # its images are attachments (wecom_media.py)
            items = (body.get("mixed") or {}).get("msg_item") or []
            text = " ".join(str((i.get("text") or {}).get("content", "")) for i in items if i.get("msgtype") == "text")
        elif robot_items(body):  # image, file, video: the file is the message
            text = ""
        else:
            text = f"[{msgtype}]"
        quote = body.get("quote")
        if isinstance(quote, dict) and quote.get("msgtype") == "text":
            text = f"> {(quote.get('text') or {}).get('content', '')}\n{text}"
        if not text.strip() and not robot_items(body):
            return None
        self._callbacks.put(msgid, (req_id, time.monotonic()))
        return InboundMessage(chat=wecom_chat(chatid), sender=user, text=text.strip(), platform_id=msgid,
                              sender_id=user, mentions_bot=True,  # WeCom pushes only messages for the robot
                              direct=chattype != "group")

    async def _submit(self, submit: Submit, inbound: InboundMessage) -> None:
        await self._gate.submit(submit, inbound, triggered=True)  # WeCom pushes only messages for the robot

    # -- outbound --------------------------------------------------------------------------------------
    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        chatid = self._chatid(chat)
        self._connection()  # not connected: a retryable ChannelError before anything is sent
        callback = self._fresh_callback(chat, reply_to)
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(text, self.settings.part_bytes, measure=utf8_len)
        for index in range(len(ids), len(parts)):
            if index == 0 and callback is not None:
                platform_id = self._new_stream_id()
                await self._stream(callback[0], platform_id, parts[index], finish=True)
            else:
                platform_id = await self._push(chatid, parts[index])
            ids.append(platform_id)
            self._partial.record(key, platform_id)
        self._partial.finish(key)
        return ids[0] if ids else None

    # -- the steps of send and of the previews (wecom_preview.py) ------------------------------------------
    def _chatid(self, chat: str) -> str:
        prefix, _, chatid = chat.partition(":")
        if prefix != PREFIX or not chatid:
            raise ChannelError(f"not a WeCom chat: {chat!r} (expected wecom:<chatid or userid>)", retryable=False)
        return chatid

    def _connection(self) -> _Connection:
        conn = self._conn
        if conn is None:
            raise ChannelError(f"wecom is {self.state}", retryable=True)
        return conn

    def _fresh_callback(self, chat: str, reply_to: str | None) -> tuple[str, float] | None:
        """The callback (req_id, time received) of the trigger (``reply_to`` or the chat's newest)
        while it can still be answered; None otherwise (then: aibot_send_msg)."""
        trigger = reply_to or self._last_trigger.get(chat)
        callback = self._callbacks.get(trigger) if trigger else None
        return callback if callback is not None and self._fresh(callback[1]) else None

    def _fresh(self, received: float) -> bool:
        return time.monotonic() - received < self.settings.reply_window

    def _new_stream_id(self) -> str:
        return self._connection().req_id("stream")

    async def _stream(self, req_id: str, stream_id: str, content: str, *, finish: bool) -> None:
        """A frame of the stream ``stream_id`` answering the callback ``req_id`` (the whole content)."""
        conn = self._connection()
        try:
            await conn.command("aibot_respond_msg", {"msgtype": "stream", "stream": {
                "id": stream_id, "finish": finish, "content": content}}, self.settings.request_timeout, req_id=req_id)
        except (CommandFailed, TimeoutError, trio.TooSlowError, ConnectionError) as exc:
            raise _channel_error(exc) from None

    async def _push(self, chatid: str, content: str) -> str:
        """``content`` pushed to the chat as an aibot_send_msg markdown message; its id."""
        conn = self._connection()
        platform_id = conn.req_id("send")
        try:
            await conn.command("aibot_send_msg", {"chatid": chatid, "msgtype": "markdown", "markdown": {
                "content": content}}, self.settings.request_timeout, req_id=platform_id)
        except (CommandFailed, TimeoutError, trio.TooSlowError, ConnectionError) as exc:
            raise _channel_error(exc) from None
        return platform_id

    async def send_file(self, chat: str, file: OutgoingFile, reply_to: str | None = None) -> str | None:
        """Upload ``file`` over the connection and push it as an image or file message; a caption
        follows as text (WeCom's image and file messages have none). A retry after the file went
        sends only the caption."""
        chatid = self._chatid(chat)
        kind = upload_type(file)
        key = self._partial.key(chat, f"file:{file.path}\n{file.caption}", reply_to)
        ids = list(self._partial.done(key))
        if not ids:
            conn = self._connection()
            timeout = self.settings.request_timeout

            async def command(cmd: str, body: dict[str, Any]) -> Any:
                return await conn.command(cmd, body, timeout)

            try:
                media_id = await robot_upload(command, file, kind)
                platform_id = conn.req_id("send")
                await conn.command("aibot_send_msg", {"chatid": chatid, "msgtype": kind, kind: {"media_id": media_id}},
                                   timeout, req_id=platform_id)
            except (CommandFailed, TimeoutError, trio.TooSlowError, ConnectionError) as exc:
                raise _channel_error(exc) from None
            ids.append(platform_id)
            self._partial.record(key, platform_id)
        if file.caption.strip() and len(ids) == 1:
            ids.append(await self.send(chat, file.caption, reply_to) or "")
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return ids[0]
