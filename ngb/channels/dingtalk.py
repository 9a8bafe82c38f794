"""DingTalk (钉钉): the dingtalk-stream SDK (its client, frames, handlers and acks, unchanged) over the
shared asyncio bridge, in Stream mode: the daemon opens a websocket to DingTalk, nothing has to
reach it from the internet.

A session: ``POST gateway_url`` with ``{clientId, clientSecret, subscriptions, ua}`` returns
``{endpoint, ticket}``; the websocket ``endpoint?ticket=...`` then carries JSON frames
``{specVersion, type: SYSTEM|EVENT|CALLBACK, headers: {topic, messageId, ...}, data}``. The SDK's
``open_connection`` does that POST with blocking ``requests`` (it would stall every channel on the
shared loop), so ``StreamClient`` replaces that call with an httpx async request (and disables the
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
plain text), split in parts of at most 6,000 UTF-8 bytes. Files in and out: dingtalk_media.py
(pictures, files, voice with DingTalk's recognition, video and rich text's pictures in; images and
files out as the robot's image and file messages).

What the robot API needs to reach a chat (1:1 or group, and a 1:1 chat's staff id) is kept across
restarts in ``<state_dir>/channels/dingtalk-conversations.json`` (``ConversationFile``; mode 0600,
written atomically off the trio loop, only when a chat's facts change), so a reply still pending
after a restart reaches a 1:1 chat without waiting for the person to write again. Session webhooks
are never written anywhere: they let anyone holding one post to the chat. Configuration:
docs/channels/dingtalk.md.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from dingtalk_stream import AckMessage, ChatbotMessage

from ..aio_bridge import BRIDGE, AsyncioBridge, Portal
from ..media.intake import MediaIntake, with_notes
from ..records import InboundMessage
from .base import ChannelMemory, Submit
from .common import CONNECTED, Lru
from .dingtalk_conversations import Conversation, ConversationFile, lasting_facts
from .dingtalk_media import DingTalkFiles, files_of
from .dingtalk_send import PART_BYTES, DingTalkSending, utf8_len  # noqa: F401 - re-exported
from .dingtalk_settings import (  # noqa: F401 - re-exported: tests import them from here
    API_BASE,
    GATEWAY_URL,
    KEYS,
    PREFIX,
    DingTalkSettings,
    conversation_id_of,
    dingtalk_chat,
)
from .dingtalk_stream import HideSessions, QuietPings, RobotHandler, StreamClient
from .skeleton import PlatformChannel

log = logging.getLogger(__name__)

TOPIC_ROBOT = ChatbotMessage.TOPIC  # "/v1.0/im/bot/messages/get"
MAX_CONVERSATIONS = 4096  # chats whose reply facts are kept, in memory and in the file (oldest go first)
CONVERSATIONS_FILE = Path("channels") / "dingtalk-conversations.json"  # under the daemon's state dir
MEDIA = {"picture": "[image]", "video": "[video]", "audio": "[voice message]", "file": "[file]",
         "interactiveCard": "[card]", "chatRecord": "[chat record]"}




class DingTalkChannel(DingTalkSending, DingTalkFiles, PlatformChannel):
    name = PREFIX
    uses_asyncio = True

    def __init__(self, settings: DingTalkSettings, *, trigger: str = "", bridge: AsyncioBridge = BRIDGE,
                 memory: ChannelMemory | None = None,
                 media: MediaIntake | None = None) -> None:
        super().__init__(settings, trigger=trigger, bridge=bridge, memory=memory, media=media)
        self.keep_secret(settings.client_secret or "",
                         loggers=("dingtalk_stream", "httpx", "httpcore", "websockets", "ngb"))
        httpx_log = logging.getLogger("httpx")
        if not any(isinstance(f, HideSessions) for f in httpx_log.filters):
            httpx_log.addFilter(HideSessions())
        self.client: StreamClient | None = None
        self.http: httpx.AsyncClient | None = None
        self._seen: Lru = Lru(4096)  # msgIds stored in this run
        self._convs: Lru = Lru(MAX_CONVERSATIONS)  # chat -> Conversation
        self._conv_file = ConversationFile(settings.state_dir / CONVERSATIONS_FILE) if settings.state_dir else None
        self._conv_lock = trio.Lock()
        self._conv_save_failed = False
        self._token: tuple[str, float] | None = None  # access token, expiry (monotonic)
        self._token_lock = trio.Lock()
        self.sessions = 0
        self.duplicates = 0
        self.refused = 0
        self.sent_by_webhook = 0
        self.sent_by_api = 0

    # -- inbound -------------------------------------------------------------------------------------
    async def enter(self, stack: AsyncExitStack) -> None:
        if self._conv_file is not None:  # before sends can start (they need self.http)
            self._restore(self._conv_file.path, await trio.to_thread.run_sync(self._conv_file.load))
        await super().enter(stack)  # the asyncio bridge
        self.http = await stack.enter_async_context(httpx.AsyncClient(timeout=self.settings.request_timeout))

    async def prepare(self) -> None:
        self.client = await self.bridge.call_sync(self._make_client, self.portal)

    async def close(self) -> None:
        self.http = None

    def _make_client(self, portal: Portal) -> StreamClient:  # on the asyncio loop thread
        logger = logging.getLogger("dingtalk_stream.client")
        if not any(isinstance(f, QuietPings) for f in logger.filters):
            logger.addFilter(QuietPings())
        client = StreamClient(self.settings, logger)
        client.register_callback_handler(TOPIC_ROBOT, RobotHandler(portal, self._on_callback))
        client.pre_start()
        return client

    async def session(self, submit: Submit) -> None:
        client = self.client
        assert client is not None
        with trio.fail_after(self.settings.connect_timeout * 2):
            connection = await self.bridge.call(client.open_connection_async)
        await self.bridge.call(client.serve, connection, self._on_open)

    async def _on_open(self) -> None:  # on the asyncio side, once the websocket is open
        assert self.portal is not None
        await self.portal.run(self._connected)

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
        taken = await self.take_files(inbound.chat, message)  # a file that cannot be had is a note
        if taken.attachments or taken.notes:
            inbound = attrs.evolve(inbound, text=with_notes(inbound.text, taken.notes), attachments=taken.attachments)
        assert self.submit_to is not None
        await self._gate.submit(self.submit_to, inbound)
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
        new = Conversation(kind=kind, staff_id=staff if kind == "1" else None, webhook=message.session_webhook,
                            webhook_expires=expires, newest=created)
        self._convs.put(chat, new)
        return lasting_facts(conv) != lasting_facts(new)

    def _restore(self, path: Path, entries: list[tuple[str, str, str | None]]) -> None:
        """Conversations from the file, older than any seen in this run."""
        if not entries:
            return
        seen = list(self._convs.items())
        self._convs.clear()
        for chat, kind, staff in entries:
            self._convs.put(chat, Conversation(kind=kind, staff_id=staff))
        for chat, conv in seen:
            self._convs.put(chat, conv)
        log.info("dingtalk: %d conversation(s) known from %s", len(entries), path)

    async def _save_conversations(self) -> None:
        """Write every chat's kind and staff id (no webhooks) to the file, in a worker thread."""
        if self._conv_file is None:
            return
        async with self._conv_lock:  # one write at a time, each with what is known when it starts
            entries = [(chat, *kept) for chat, conv in self._convs.items() if (kept := lasting_facts(conv)) is not None]
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
        """A robot message -> InboundMessage, without its files (``take_files`` adds them); None
        when it carries nothing to read."""
        if not message.conversation_id or not message.message_id:
            return None
        text = self.plain_text(message)
        if not text.strip() and not files_of(message):
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
            direct=direct,
        )

    @staticmethod
    def plain_text(message: ChatbotMessage) -> str:
        """What a person reads, without the files taken as attachments: text; rich text's text runs
        joined; nothing for a picture, voice, video or file message; placeholders for other kinds
        (and for a file DingTalk gave no download code for). The @robot part is not in the text
        DingTalk sends (a group message starts with the blank that followed it)."""
        kind = message.message_type
        if kind == "text" and message.text is not None:
            return (message.text.content or "").strip()
        if kind == "richText" and message.rich_text_content is not None:
            parts = [str(item["text"]) for item in message.rich_text_content.rich_text_list or []
                     if isinstance(item, dict) and "text" in item]
            return "\n".join(p.strip() for p in parts if p.strip())
        if kind in ("picture", "audio", "video", "file") and files_of(message):
            return ""
        content = message.extensions.get("content") or {}
        if kind == "audio" and isinstance(content, dict) and content.get("recognition"):
            return f"{MEDIA['audio']} {content['recognition']}".strip()
        if kind == "file" and isinstance(content, dict) and content.get("fileName"):
            return f"[file: {content['fileName']}]"
        if kind in MEDIA:
            return MEDIA[kind]
        return f"[{kind} message]" if kind else ""

    def details(self) -> dict[str, Any]:
        return dict(robot=self.settings.robot_code, received=self.received, duplicates=self.duplicates,
                    refused=self.refused, sent_by_webhook=self.sent_by_webhook, sent_by_api=self.sent_by_api)
