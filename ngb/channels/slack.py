"""Slack: slack-sdk (``AsyncWebClient`` + its aiohttp ``SocketModeClient``, unchanged) over the
shared asyncio bridge, in Socket Mode: the daemon opens a websocket to Slack, nothing has to reach
it from the internet.

Events arrive as ``events_api`` envelopes. The SDK's listener only queues them (on the asyncio
loop, in arrival order); a trio task takes them one by one, stores the message through the router
and only then acknowledges the envelope (``{"envelope_id": ...}``). An envelope that was not acked
(connection lost, daemon killed) is sent again by Slack; the store's key on (channel, platform id)
keeps it exactly once. Slack sends both ``message`` and ``app_mention`` for a message that mentions
the bot: same platform id, stored once.

After a reconnect, and at the first connection after a restart, messages posted meanwhile are caught
up in every conversation with a mark: the newest ``ts`` stored there, kept in the daemon's store
(``common.NewestStored``; moved only after the message is stored, so a message lost with a killed
daemon is before the mark). ``conversations.history`` since that mark, page by page (``cursor`` /
``response_metadata.next_cursor``) until ``has_more`` is false, then ``conversations.replies`` of
the threads the bot is in (it posted or was mentioned there) and of the threads started meanwhile,
since the same point. Each listing stops at ``catch_up_pages`` pages and the whole catch-up at
``catch_up_time`` seconds (a rate limit is waited out inside that time); one log line per
conversation says what was fetched and whether a bound cut it short. Everything fetched is stored
oldest first; what was also delivered as an event is stored once (the store's key). While a
conversation is being caught up its mark moves only with the catch-up (oldest first); what the live
events stored meanwhile moves it when the catch-up has finished, so a daemon killed mid-catch-up
starts the next one where this one got to, not past a gap.

The connection is ours to manage: the SDK's own auto-reconnect is off and each session is one
fresh ``SocketModeClient``; ``reconnect_forever`` (common.py) does backoff and keeps the state
visible. The SDK still follows Slack's ``disconnect`` messages (refresh) by itself.

Chats are ``slack:<conversation id>`` (``C...`` channels, ``G...`` private, ``D...`` DMs); a
message's platform id is ``<conversation id>:<ts>``. DMs, ``app_mention`` events and ``<@bot>`` in
the text set ``mentions_bot``. A reply goes into the thread when the message that triggered it was
in a thread (``reply_in_thread = "always"``: always threaded). Slack has no idempotency key for
``chat.postMessage`` (``client_msg_id`` exists only on messages users post): see
docs/channels/slack.md for the one duplicate window. Configuration: docs/channels/slack.md.

Files: a message's files are downloaded with the bot token into the media store before the message
is stored (or become a note each); files out go up as files_upload_v2 does it (slack_media.py).
Live previews (a reply growing in one message by chat.update, then updated to the final text):
slack_preview.py. A message's ``thread`` is the ``thread_ts`` of a reply in a thread ("" for one in
the conversation itself, a thread's parent included). Reactions (the bot's by reactions.add/remove;
people's, from ``reaction_added`` events, as context): slack_reactions.py.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from datetime import UTC, datetime
from typing import Any

import attrs
import trio

from ..aio_bridge import BRIDGE, AsyncioBridge
from ..errors import leaves
from ..media.intake import MediaIntake
from ..records import InboundMessage
from .base import ChannelError, ChannelMemory, Submit
from .common import CONNECTED, AuthError, Lru, NewestStored, markdown_to_slack_mrkdwn, split_text
from .skeleton import PlatformChannel
from .slack_catchup import SlackCatchUp, error_code
from .slack_media import SlackFiles
from .slack_once import SlackSendOnce, reply_metadata, web_retry_handlers
from .slack_preview import PART_LIMIT, SlackPreviews
from .slack_reactions import SlackReactions
from .slack_settings import (  # noqa: F401 - re-exported: tests import them from here
    BASE_URL,
    KEYS,
    PREFIX,
    SlackSettings,
    channel_id_of,
    slack_chat,
)

log = logging.getLogger(__name__)

AUTH_ERRORS = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
               "not_allowed_token_type", "invalid_token"}
SKIPPED_SUBTYPES = {"message_changed", "message_deleted", "message_replied", "channel_join", "channel_leave",
                    "bot_message", "group_join", "group_leave", "channel_topic", "channel_purpose",
                    "channel_name", "pinned_item", "unpinned_item", "ekm_access_denied", "channel_archive"}


class SlackChannel(SlackReactions, SlackCatchUp, SlackPreviews, SlackFiles, SlackSendOnce, PlatformChannel):
    name = PREFIX
    uses_asyncio = True
    takes_idempotency_key = True  # base.IdempotentSend
    looks_before_resend = True  # base.LooksBeforeResend: no key on Slack, a post is looked for (slack_once.py)
    mark_order = float  # chat -> newest stored ts (kept in the daemon's store)
    marks: NewestStored  # never None: mark_order is set

    def __init__(self, settings: SlackSettings, *, trigger: str = "", bridge: AsyncioBridge = BRIDGE,
                 memory: ChannelMemory | None = None,
                 media: MediaIntake | None = None) -> None:
        super().__init__(settings, trigger=trigger, bridge=bridge, memory=memory, media=media)
        self._held: dict[str, str | None] = {}  # chat being caught up -> newest ts the live events stored meanwhile
        self.keep_secret(settings.bot_token or "", settings.app_token or "", loggers=("slack_sdk", "aiohttp", "ngb"))
        self.web: Any = None  # AsyncWebClient (bot token)
        self.socket: Any = None  # the current session's SocketModeClient
        self.me: dict[str, Any] | None = None  # auth.test: user_id, bot_id, user, team
        self._queue: asyncio.Queue[Any] | None = None  # SocketModeRequests, on the asyncio loop
        self._hello: asyncio.Event | None = None
        self._threads: Lru = Lru(8192)  # platform id -> thread_ts of the thread it is in ("" if none)
        self._bot_threads: Lru = Lru(4096)  # "<conversation>:<thread_ts>" of threads the bot is in
        self._users: Lru = Lru(4096)  # user id -> display name
        self._files_taken: Lru = Lru(4096)  # platform ids whose files were taken (stored) in this run
        self._failed_posts: Lru = Lru(1024)  # reply part key -> when a post of it failed (slack_once.py)
        self._failed_shares: Lru = Lru(256)  # file row key -> the file a lost share answer was about (slack_media.py)
        self.sessions = 0
        self.fetched = 0  # messages a catch-up found (stored, or already there)
        self.catch_ups = 0  # catch-ups finished

    # -- inbound -------------------------------------------------------------------------------------
    async def prepare(self) -> None:
        await super().prepare()  # where the last run's catch-up would start
        self.web = await self.bridge.call_sync(self._make_web)

    async def close(self) -> None:
        await self._close_socket()
        self.web = None

    def _make_web(self) -> Any:  # on the asyncio loop thread
        from slack_sdk.web.async_client import AsyncWebClient

        return AsyncWebClient(token=self.settings.bot_token, base_url=self.settings.base_url,
                              timeout=int(self.settings.request_timeout), retry_handlers=web_retry_handlers())

    def _make_socket(self) -> Any:  # on the asyncio loop thread
        from slack_sdk.socket_mode.aiohttp import SocketModeClient

        queue: asyncio.Queue[Any] = asyncio.Queue()
        hello = asyncio.Event()
        client = SocketModeClient(
            app_token=self.settings.app_token or "",
            web_client=self.web,
            auto_reconnect_enabled=False,  # reconnect_forever decides, with backoff and visible state
            ping_interval=self.settings.ping_interval,
            logger=logging.getLogger("slack_sdk.socket_mode"),
        )

        async def on_message(_client: Any, message: dict[str, Any], _raw: str | None) -> None:
            if message.get("type") == "hello":
                hello.set()

        async def on_request(_client: Any, request: Any) -> None:
            queue.put_nowait(request)  # synchronous: keeps arrival order; the trio side acks

        client.message_listeners.append(on_message)
        client.socket_mode_request_listeners.append(on_request)
        self._queue, self._hello = queue, hello
        return client

    async def _api(self, method: str, **kwargs: Any) -> Any:
        """A Web API call; SlackApiError with an auth error -> AuthError (token rejected)."""
        from slack_sdk.errors import SlackApiError

        try:
            return await self.bridge.call(getattr(self.web, method), **kwargs)
        except SlackApiError as exc:
            error = error_code(exc)
            if error in AUTH_ERRORS:
                raise AuthError(f"{method}: {error}") from None
            raise

    async def session(self, submit: Submit) -> None:
        from slack_sdk.errors import SlackApiError

        auth = await self._api("auth_test")
        self.me = {"user_id": auth["user_id"], "bot_id": auth.get("bot_id"), "user": auth.get("user"),
                   "team": auth.get("team")}
        await self._close_socket()
        self.socket = await self.bridge.call_sync(self._make_socket)
        socket = self.socket
        try:
            url = await self.bridge.call(socket.issue_new_wss_url)
        except SlackApiError as exc:
            error = error_code(exc)
            if error in AUTH_ERRORS:
                raise AuthError(f"apps.connections.open (app token): {error}") from None
            raise
        socket.wss_uri = url
        with trio.fail_after(self.settings.connect_timeout):
            await self.bridge.call(socket.connect)
            await self.bridge.call(self._hello.wait)  # type: ignore[union-attr]
        self.sessions += 1
        self.status.set(CONNECTED)
        log.info("slack: connected as @%s (%s) in %s", self.me["user"], self.me["user_id"], self.me["team"])
        try:
            async with trio.open_nursery() as nursery:
                if self.settings.fetch_missed and (self.sessions > 1 or self.marks.items()):
                    self._hold(chat for chat, _ in self.marks.items())  # before the first event is pumped
                    nursery.start_soon(self._fetch_missed, submit)
                nursery.start_soon(self._pump, submit)
                await self.bridge.call(self._wait_closed, socket)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise leaves(group)[0] from None  # reconnect_forever must see the error itself
        raise ConnectionError("the Socket Mode connection was lost")

    async def _wait_closed(self, socket: Any) -> None:  # on the asyncio loop: until the socket is gone
        lost_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(0.2, self.settings.ping_interval))
            if await socket.is_connected():
                lost_since = None
                continue
            if socket.connect_operation_lock.locked():  # following a "disconnect" (refresh) message
                lost_since = lost_since or loop.time()
                if loop.time() - lost_since < self.settings.connect_timeout:
                    continue
            return

    async def _close_socket(self) -> None:
        socket, self.socket = self.socket, None
        await self.close_on_loop(socket and socket.close, "the socket")

    async def _pump(self, submit: Submit) -> None:
        """Queued envelopes -> store -> ack, one at a time, in arrival order."""
        from slack_sdk.socket_mode.response import SocketModeResponse

        queue, socket = self._queue, self.socket
        assert queue is not None
        while True:
            request = await self.bridge.call(queue.get)
            event = ((request.payload or {}).get("event") or {}) if request.type == "events_api" else {}
            if event.get("type") == "reaction_added":
                await self.take_reaction(submit, event)  # slack_reactions.py
            elif (inbound := self.to_inbound(event)) is not None:
                await self._submit(submit, inbound, event)
            try:
                await self.bridge.call(socket.send_socket_mode_response,
                                       SocketModeResponse(envelope_id=request.envelope_id))
            except Exception as exc:  # noqa: BLE001 - not acked: Slack sends it again, stored once
                log.info("slack: could not ack envelope %s (%s); Slack will redeliver it", request.envelope_id, exc)

    async def _submit(self, submit: Submit, inbound: InboundMessage, event: dict[str, Any], *,
                      catching_up: bool = False) -> None:
        user = event.get("user") or ""
        if user and user not in self._users:
            self._users.put(user, await self._user_name(user))
        if user:
            inbound = attrs.evolve(inbound, sender=self._users[user])
        inbound = await self.with_files(inbound, event)  # attachments, or a note each (slack_media.py)
        await self._gate.submit(submit, inbound)  # raises when the store failed: the mark stays
        self.files_done(inbound, event)
        ts = event["ts"]
        if inbound.chat in self._held and not catching_up:  # a catch-up of this chat is under way
            held = self._held[inbound.chat]
            if held is None or float(ts) > float(held):
                self._held[inbound.chat] = ts
            return
        await self.marks.advance(inbound.chat, ts)

    async def _user_name(self, user: str) -> str:
        try:
            answer = await self._api("users_info", user=user)
        except Exception as exc:  # noqa: BLE001 - users:read missing or Slack busy: the id will do
            log.debug("slack: users.info %s failed: %s", user, exc)
            return user
        info = answer.get("user") or {}
        profile = info.get("profile") or {}
        return profile.get("display_name") or profile.get("real_name") or info.get("real_name") or info.get("name") or user

    def to_inbound(self, event: dict[str, Any]) -> InboundMessage | None:
        """A message/app_mention event -> InboundMessage, or None for what is not a user's message."""
        kind = event.get("type")
        if kind not in ("message", "app_mention"):
            return None
        subtype = event.get("subtype")
        if subtype in SKIPPED_SUBTYPES or event.get("hidden"):
            return None
        me = self.me or {}
        user = event.get("user")
        if not user or event.get("bot_id") or user == me.get("user_id"):
            return None  # bots (ourselves included)
        channel, ts = event.get("channel"), event.get("ts")
        if not channel or not ts:
            return None
        raw = event.get("text") or ""
        text = self.plain_text(raw)
        if not text.strip() and not event.get("files"):  # the files become attachments in _submit
            return None
        thread_ts = event.get("thread_ts")
        in_thread = bool(thread_ts) and thread_ts != ts
        platform_id = f"{channel}:{ts}"
        self._threads.put(platform_id, thread_ts if in_thread else "")
        bot_user = me.get("user_id")
        mentions = (kind == "app_mention" or event.get("channel_type") == "im" or channel.startswith("D")
                    or (bool(bot_user) and f"<@{bot_user}" in raw))
        if in_thread and mentions:
            self._bot_threads.put(f"{channel}:{thread_ts}", None)
        return InboundMessage(
            chat=slack_chat(channel),
            sender=self._users.get(user, user),
            text=text,
            platform_id=platform_id,
            time=datetime.fromtimestamp(float(ts), UTC),
            sender_id=user,
            mentions_bot=mentions,
            reply_to=f"{channel}:{thread_ts}" if in_thread else None,
            direct=event.get("channel_type") == "im" or channel.startswith("D"),
            thread=str(thread_ts) if in_thread else "",
        )

    def plain_text(self, text: str) -> str:
        """Slack's markup -> what a person reads: <@U1> -> @name, <#C1|general> -> #general,
        <https://x|label> -> label (https://x), entities unescaped."""
        me = self.me or {}

        def link(m: re.Match[str]) -> str:
            target, _, label = m.group(1).partition("|")
            if target.startswith("@"):
                uid = target[1:]
                name = me.get("user") if uid == me.get("user_id") else self._users.get(uid)
                return f"@{label or name or uid}"
            if target.startswith("#"):
                return f"#{label or target[1:]}"
            if target.startswith("!"):
                return f"@{label or target[1:].split('^')[0]}"  # <!here>, <!channel>
            return f"{label} ({target})" if label and label != target else target

        return html.unescape(re.sub(r"<([^<>\n]+)>", link, text))

    # -- outbound ------------------------------------------------------------------------------------
    async def send(self, chat: str, text: str, reply_to: str | None = None, *, idempotency_key: str | None = None,
                   maybe_sent_since: float | None = None) -> str | None:
        """Post ``text`` (split under 4,000 characters). chat.postMessage has no idempotency key:
        each part carries ``idempotency_key`` in its metadata instead, so a retry finds a post whose
        answer was lost, in this run or (``maybe_sent_since``) before it (slack_once.py)."""
        channel = channel_id_of(chat)
        if self.web is None:
            raise ChannelError(f"slack is {self.state}", retryable=True)
        thread_ts = await self._reply_thread(chat, reply_to)
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(text, PART_LIMIT)
        for index in range(len(ids), len(parts)):
            part_key = f"{idempotency_key}.{index}" if idempotency_key else None
            ts = await self._post_once(channel, parts[index], thread_ts, part_key, maybe_sent_since)
            ids.append(f"{channel}:{ts}")
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return ids[0] if ids else None

    async def _reply_thread(self, chat: str, reply_to: str | None) -> str | None:
        """The thread_ts a reply (or a file) to chat goes to: that of reply_to, else of the last trigger."""
        channel = channel_id_of(chat)
        trigger = reply_to or self._last_trigger.get(chat)
        thread_ts = await self._thread_of(channel, trigger) if trigger else None
        if thread_ts:
            self._bot_threads.put(f"{channel}:{thread_ts}", None)
        return thread_ts

    async def _thread_of(self, channel: str, platform_id: str) -> str | None:
        """The thread_ts a reply to this message goes to (None: the channel itself)."""
        chan, _, ts = platform_id.rpartition(":")
        if chan != channel or not ts:
            return None
        thread = await self._thread_ts(channel, ts)  # slack_reactions.py
        if self.settings.reply_in_thread == "always":
            return thread or ts
        return thread or None

    async def _post(self, channel: str, part: str, thread_ts: str | None, key: str | None = None) -> str:
        kwargs: dict[str, Any] = {"channel": channel, "text": markdown_to_slack_mrkdwn(part), "mrkdwn": True}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        if key:
            kwargs["metadata"] = reply_metadata(key)
        answer = await self._sending("chat_postMessage", **kwargs)
        self._threads.put(f"{channel}:{answer['ts']}", thread_ts or "")  # a reaction on it is in its thread
        return str(answer["ts"])

    def details(self) -> dict[str, Any]:
        return {"bot": f"@{self.me['user']}" if self.me else None, "received": self.received, "caught_up": self.fetched}
