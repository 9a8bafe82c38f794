"""WhatsApp: the Node.js bridge (bridge/, Baileys) holds the WhatsApp Web session; this channel
starts and supervises it and talks to it over one local websocket (bridge/PROTOCOL.md).

The daemon side is the websocket *server* on 127.0.0.1 (an ephemeral port unless ``port`` is set);
the bridge connects with ``Authorization: Bearer <token>`` (a fresh random token per start when
the daemon runs the bridge). The bridge writes every inbound message to disk before offering it
and forgets it only when this side acks it, and this side acks only after the router stored the
message: a bridge or daemon that dies at any point loses nothing, and the redelivery hits the
store's key on (channel, platform id), so nothing is doubled. A message the store refuses (disk full,
I/O error) is not acked: this side closes the connection (code 4000) and the bridge offers it again
after a pause; nothing else in the daemon notices.

Chats are ``whatsapp:<jid>`` (``whatsapp:120363041234567890@g.us`` for a group,
``whatsapp:4915112345678@s.whatsapp.net`` for a person); a message's platform id is WhatsApp's
message id. Mentions of the bot, replies quoting the bot and every private chat set
``mentions_bot``. Replies quote the triggering message. Photos, voice notes, audio, video and
documents in become attachments, files out go as image or document messages (whatsapp_media.py).
Configuration: docs/channels/whatsapp.md.
"""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import math
import os
import secrets
from collections import OrderedDict
from datetime import UTC, datetime
from functools import partial
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from ..media.intake import MediaIntake
from ..records import Attachment, InboundMessage, OutgoingFile
from .base import ChannelError, ChannelMemory, Submit
from .chats import chat_name, platform_id_of
from .common import CONNECTED, CONNECTING, DISCONNECTED, STOPPED, backoff, split_text
from .skeleton import PlatformChannel
from .whatsapp_media import discard, file_frame, media_of, take
from .whatsapp_settings import (  # noqa: F401 - re-exported: tests and the doctor import them from here
    BRIDGE_DIR,
    NODE_CHECK,
    NODE_MIN,
    WhatsAppSettings,
    find_node,
    node_version,
    run_bridge,
    settings_from_config,
    wheel_node,
)

log = logging.getLogger(__name__)

PREFIX = "whatsapp"
PART_LIMIT = 4000  # WhatsApp takes ~65k characters, but long walls of text read badly on a phone
QR = "qr"  # waiting for the phone to scan the QR code
LOGGED_OUT = "logged_out"  # the phone unlinked this device: pairing again needs a human
STORE_FAILED = 4000  # the close code that tells the bridge "not stored: offer it again, after a pause"
# the bridge's WhatsApp states -> the channel state /status shows
_STATES = {"open": CONNECTED, "connecting": CONNECTING, "qr": QR, "closed": DISCONNECTED, "logged_out": LOGGED_OUT}


def from_config(config: Any) -> WhatsAppChannel | None:
    """The channel when ``[channels.whatsapp]`` exists (and is not ``enabled = false``) or
    NGB_WHATSAPP=1; None otherwise (with one log line)."""
    settings = settings_from_config(config)
    return None if settings is None else WhatsAppChannel(settings, trigger=getattr(config, "trigger", ""))


whatsapp_chat = partial(chat_name, PREFIX)  # platform id -> chat


class WhatsAppChannel(PlatformChannel):
    """Runs no reconnect loop of its own: the bridge process (restarted with backoff) keeps the
    WhatsApp connection and connects to this channel's websocket endpoint."""

    name = PREFIX

    def __init__(self, settings: WhatsAppSettings, *, trigger: str = "", memory: ChannelMemory | None = None,
                 media: MediaIntake | None = None) -> None:
        super().__init__(settings, trigger=trigger, memory=memory, media=media)
        self.token = settings.token or secrets.token_urlsafe(32)
        self.status.secrets = [self.token]
        self.port: int | None = None
        self.qr: str | None = None  # the latest QR payload while pairing (for the dashboard)
        self.me: dict[str, Any] | None = None
        self.bridge_pid: int | None = None
        self.bridge_starts = 0
        self.bridge_connected = False
        self.acked = 0
        self.store_failures = 0  # messages the router could not store (not acked: the bridge offers them again)
        self._ws: WebSocketConnection | None = None
        self._pending: dict[str, tuple[trio.Event, list[Any]]] = {}
        self._req = itertools.count(1)
        self._quotable: OrderedDict[str, tuple[str, str]] = OrderedDict()  # id -> (sender jid, text)
        self._wa_state = "closed"
        self.media_dir = settings.state_dir / "media"  # the bridge's downloads, until taken (whatsapp_media.py)

    # -- lifecycle -----------------------------------------------------------------------------------
    async def run(self, submit: Submit, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.submit_to = submit
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(s.state_dir, 0o700)
        self.media_dir.mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.media_dir, 0o700)
        self.status.set(CONNECTING)
        try:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    partial(serve_websocket, self._serve, s.host, s.port, None, handler_nursery=nursery,
                            message_queue_size=64, max_message_size=8 * 1024 * 1024)
                )
                self.port = server.port
                log.info("whatsapp: bridge endpoint ws://%s:%d/whatsapp", s.host, self.port)
                if s.manage_bridge:
                    nursery.start_soon(self._supervise_bridge)
                task_status.started()
        finally:
            self.status.set(STOPPED)

    async def _supervise_bridge(self) -> None:
        attempt = 0
        while True:
            started = trio.current_time()
            try:
                reason = await self._run_bridge()
            except OSError as exc:  # node missing, bridge dir missing...
                reason = (f"could not be started with {self.settings.node!r}: {exc} (needs Node.js >= {NODE_MIN}: "
                          "scripts/setup.sh installs one, or set [channels.whatsapp] node)")
            if trio.current_time() - started >= self.settings.stable_after:
                attempt = 0
            attempt += 1
            delay = backoff(attempt, base=self.settings.restart_base, cap=self.settings.restart_cap)
            self.bridge_connected = False
            if self.state not in (LOGGED_OUT,):
                self.status.set(DISCONNECTED, f"bridge {reason}")
            log.warning("whatsapp: bridge %s; restarting in %.1fs", reason, delay)
            await trio.sleep(delay)

    async def _run_bridge(self) -> str:
        limits = self.media.limits
        return await run_bridge(self.settings, self._bridge_started, {
            "NGB_WA_DAEMON_URL": f"ws://127.0.0.1:{self.port}/whatsapp",
            "NGB_WA_TOKEN": self.token,
            "NGB_WA_STATE_DIR": str(self.settings.state_dir),
            "NGB_WA_EXIT_ON_STDIN_EOF": "1",
            "NGB_WA_MEDIA_DIR": str(self.media_dir),  # inbound files: where, how large, how long
            "NGB_WA_MEDIA_MAX_BYTES": str(limits.max_file_bytes),
            "NGB_WA_MEDIA_TIMEOUT_MS": str(int(limits.download_timeout * 1000)),
        })

    def _bridge_started(self, pid: int | None) -> None:
        self.bridge_pid = pid
        if pid is not None:
            self.bridge_starts += 1
            log.info("whatsapp: bridge started (pid %d)", pid)

    # -- the websocket ---------------------------------------------------------------------------------
    async def _serve(self, request: WebSocketRequest) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        given = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if request.path != "/whatsapp" or not hmac.compare_digest(given.encode(), self.token.encode()):
            log.warning("whatsapp: refused a bridge connection (bad token or path)")
            await request.reject(401, body=b"bad token\n")
            return
        ws = await request.accept()
        old, self._ws = self._ws, ws
        if old is not None:
            await old.aclose(1000, "replaced by a newer bridge connection")
        self.bridge_connected = True
        log.info("whatsapp: bridge connected")
        # Inbound messages are handled in order by one worker, so a slow store never holds up
        # the control frames (send answers, state) read here.
        inbound_in, inbound_out = trio.open_memory_channel[dict[str, Any]](math.inf)
        why = "the bridge connection closed"
        closed_by_us: list[str] = []  # why the inbound worker closed the connection
        try:
            async with trio.open_nursery() as conn:
                conn.start_soon(self._inbound_worker, ws, inbound_out, closed_by_us)
                while True:
                    try:
                        frame = json.loads(await ws.get_message())
                    except ConnectionClosed:
                        break
                    except ValueError:
                        log.warning("whatsapp: a bridge frame that is not JSON")
                        continue
                    if isinstance(frame, dict) and frame.get("type") == "message":
                        inbound_in.send_nowait(frame)
                    elif isinstance(frame, dict):
                        self._frame(frame)
                conn.cancel_scope.cancel()  # unacked messages are offered again on the next connection
        except Exception as exc:  # noqa: BLE001 - one connection's failure never takes the daemon down
            why = f"the bridge connection failed: {exc!r}"
            log.exception("whatsapp: %s; the bridge connects again and offers what is unacked", why)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await ws.aclose(1011, "daemon error")
        finally:
            why = closed_by_us[0] if closed_by_us else why
            if self._ws is ws:
                self._ws = None
                self.bridge_connected = False
                self._fail_pending(why)
                if self.state not in (LOGGED_OUT,):
                    self.status.set(DISCONNECTED, why)

    async def _inbound_worker(self, ws: WebSocketConnection, frames: trio.MemoryReceiveChannel[dict[str, Any]],
                              closed_by_us: list[str]) -> None:
        async for frame in frames:
            try:
                await self._inbound(ws, frame)
            except Exception as exc:  # noqa: BLE001 - the store failed (disk full, I/O error...)
                # Not stored, so not acked. Closing the connection makes the bridge connect again
                # and offer every unacked message from its disk buffer, in order: this one and
                # the ones queued behind it. The bridge backs off while this repeats.
                self.store_failures += 1
                why = f"could not store message {frame.get('id')}: {exc!r}"[:200]
                log.warning("whatsapp: %s; not acked, closing the bridge connection (the bridge offers it again)", why)
                closed_by_us.append(why)
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await ws.aclose(STORE_FAILED, why.encode()[:120].decode(errors="ignore"))  # a close frame's limit
                return

    def _frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind in ("sent", "send_error"):
            pending = self._pending.get(str(frame.get("req")))
            if pending is not None:
                pending[1].append(frame)
                pending[0].set()
        elif kind in ("state", "hello"):
            self._set_wa_state(str(frame.get("state") or "connecting"), frame.get("reason"), frame.get("me"))
            if kind == "hello":
                log.info("whatsapp: %s (%s), %s buffered", frame.get("bridge"), frame.get("adapter"), frame.get("pending"))
        elif kind == "qr":
            self.qr = str(frame.get("qr") or "") or None
            self._set_wa_state("qr", None, None)
            log.warning("whatsapp: waiting for pairing: scan the QR code printed by the bridge "
                        "(WhatsApp > Settings > Linked devices > Link a device)")
        elif kind == "pong":
            pass
        else:
            log.debug("whatsapp: unknown frame %r", kind)

    def _set_wa_state(self, state: str, reason: Any, me: Any) -> None:
        self._wa_state = state
        if isinstance(me, dict) and me.get("id"):
            self.me = me
        if state != "qr":
            self.qr = None if state == "open" else self.qr
        self.status.set(_STATES.get(state, DISCONNECTED), str(reason) if reason else None)

    async def _inbound(self, ws: WebSocketConnection, frame: dict[str, Any]) -> None:
        media = media_of(frame)
        text = frame.get("text")
        attachments: tuple[Attachment, ...] = ()
        if media is not None and frame.get("chat") and frame.get("id"):
            # the bridge's download into the media store (or the note); a message not stored keeps
            # the file for the bridge's redelivery, so it is deleted only once stored (or dropped)
            text, attachments = await take(self.media, whatsapp_chat(str(frame["chat"])), media, self.media_dir)
        inbound = self.to_inbound(frame, text=text, attachments=attachments)
        if inbound is None:
            discard(media, self.media_dir)
            await self._ack(ws, str(frame.get("id")))
            return
        self._quotable[inbound.platform_id] = (str(frame.get("sender") or ""), inbound.text[:200])
        while len(self._quotable) > 4096:
            self._quotable.popitem(last=False)
        await self._gate.submit(self._deliver, inbound)
        discard(media, self.media_dir)
        await self._ack(ws, inbound.platform_id)

    async def _deliver(self, inbound: InboundMessage) -> None:
        """Hand the message to the router (stored when this returns)."""
        assert self.submit_to is not None
        await self.submit_to(inbound)

    async def _ack(self, ws: WebSocketConnection, message_id: str) -> None:
        try:
            await ws.send_message(json.dumps({"type": "ack", "id": message_id}))
            self.acked += 1
        except ConnectionClosed:
            pass  # not acked: the bridge offers it again and the store drops the repeat

    def to_inbound(self, frame: dict[str, Any], *, text: Any = None,
                   attachments: tuple[Attachment, ...] = ()) -> InboundMessage | None:
        """The frame as a message; ``text`` and ``attachments`` replace its text when its file was taken."""
        chat, msg_id = frame.get("chat"), frame.get("id")
        text = frame.get("text") if text is None else text
        if not chat or not msg_id or not isinstance(text, str) or not (text or attachments):
            return None
        try:
            when = datetime.fromtimestamp(float(frame.get("time") or 0), UTC) if frame.get("time") else datetime.now(UTC)
        except (TypeError, ValueError, OverflowError):
            when = datetime.now(UTC)
        sender = str(frame.get("sender") or "")
        return InboundMessage(
            chat=whatsapp_chat(str(chat)),
            sender=str(frame.get("sender_name") or sender.split("@")[0] or "unknown"),
            text=text,
            platform_id=str(msg_id),
            time=when,
            sender_id=sender,
            mentions_bot=bool(frame.get("mentions_bot")),
            reply_to=str(frame["quoted_id"]) if frame.get("quoted_id") else None,
            attachments=attachments,
            direct=str(chat).endswith(("@s.whatsapp.net", "@lid")),  # a person (a group: @g.us)
        )

    # -- outbound ------------------------------------------------------------------------------------
    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        jid = _jid(chat)
        quote = reply_to or self._last_trigger.get(chat)
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(text, PART_LIMIT)
        for index in range(len(ids), len(parts)):
            ids.append(await self._send_part(jid, parts[index], quote if index == 0 else None))
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return ids[0] if ids else None

    async def send_file(self, chat: str, file: OutgoingFile, reply_to: str | None = None) -> str | None:
        """An image message for an image, a document message otherwise, with the caption; quoting
        like ``send``. The bridge reads the stored bytes from ``file.path``."""
        jid = _jid(chat)
        quote = reply_to or self._last_trigger.get(chat)
        return await self._request(file_frame(str(next(self._req)), jid, file), quote)

    async def _send_part(self, jid: str, text: str, quote: str | None) -> str:
        return await self._request({"type": "send", "req": str(next(self._req)), "chat": jid, "text": text}, quote)

    async def _request(self, frame: dict[str, Any], quote: str | None) -> str:
        """Send one send/send_file command and wait for its ``sent`` (the id) or ``send_error``."""
        ws = self._ws
        if ws is None or self._wa_state != "open":
            raise ChannelError(f"whatsapp is {self.state}", retryable=True)
        req = str(frame["req"])
        if quote:
            sender, quoted_text = self._quotable.get(quote, ("", ""))
            frame.update(quoted_id=quote, quoted_sender=sender or None, quoted_text=quoted_text)
        done = trio.Event()
        result: list[Any] = []
        self._pending[req] = (done, result)
        try:
            try:
                await ws.send_message(json.dumps(frame))
            except ConnectionClosed:
                raise ChannelError("whatsapp: the bridge connection closed", retryable=True) from None
            with trio.move_on_after(self.settings.send_timeout):
                await done.wait()
        finally:
            self._pending.pop(req, None)
        if not result:
            raise ChannelError("whatsapp: no answer from the bridge in time", retryable=True)
        answer = result[0]
        if answer.get("type") == "closed":
            raise ChannelError(f"whatsapp: {answer.get('error')}", retryable=True)
        if answer.get("type") != "sent" or not answer.get("id"):
            raise ChannelError(f"whatsapp: {answer.get('error') or 'send failed'}",
                               retryable=bool(answer.get("retryable", True)))
        return str(answer["id"])

    def _fail_pending(self, why: str) -> None:
        for done, result in list(self._pending.values()):
            result.append({"type": "closed", "error": why})
            done.set()

    async def typing(self, chat: str) -> None:
        """Show "typing..." (best effort)."""
        ws = self._ws
        if ws is None:
            return
        try:
            await ws.send_message(json.dumps({"type": "presence", "chat": _jid(chat), "state": "composing"}))
        except (ConnectionClosed, ChannelError):
            log.debug("whatsapp: typing indicator failed", exc_info=True)

    def details(self) -> dict[str, Any]:
        return dict(
            qr=self.qr,
            me=(self.me or {}).get("id"),
            bridge_pid=self.bridge_pid,
            bridge_connected=self.bridge_connected,
            bridge_starts=self.bridge_starts,
            received=self.received,
            acked=self.acked,
            store_failures=self.store_failures,
        )


def _jid(chat: str) -> str:
    return platform_id_of(chat, PREFIX, lambda jid: "@" in jid, "WhatsApp chat: {chat} (expected whatsapp:<jid>)")
