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
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import trio

from ..aio_bridge import BRIDGE, AsyncioBridge, BridgeClosed
from ..errors import leaves
from ..records import InboundMessage
from .base import ChannelError, ChannelMemory, Submit
from .common import (
    CONNECTED,
    OFF,
    STOPPED,
    AuthError,
    ChannelStatus,
    InboundGate,
    Lru,
    NewestStored,
    PartialSends,
    markdown_to_slack_mrkdwn,
    reconnect_forever,
    redact_in_logs,
    split_text,
)
from .settings import ChannelTable

log = logging.getLogger(__name__)

PREFIX = "slack"
PART_LIMIT = 3900  # Slack recommends <= 4,000 characters per message (40,000 is the hard cut)
AUTH_ERRORS = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
               "not_allowed_token_type", "invalid_token"}
FATAL_SEND_ERRORS = {"channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text",
                     "restricted_action", "cannot_reply_to_message", "missing_scope", "invalid_blocks",
                     "messages_tab_disabled"}
SKIPPED_SUBTYPES = {"message_changed", "message_deleted", "message_replied", "channel_join", "channel_leave",
                    "bot_message", "group_join", "group_leave", "channel_topic", "channel_purpose",
                    "channel_name", "pinned_item", "unpinned_item", "ekm_access_denied", "channel_archive"}
BASE_URL = "https://slack.com/api/"
KEYS = {"bot_token", "app_token", "bot_token_file", "app_token_file", "base_url", "reply_in_thread",
        "ping_interval", "request_timeout", "connect_timeout", "fetch_missed", "reconnect_base",
        "reconnect_cap", "enabled", "catch_up_pages", "catch_up_time"}
PAGE_SIZE = 200  # what a catch-up asks per page (Slack may answer fewer: 15 for some apps since 2025)
CATCH_UP_THREADS = 100  # threads per conversation whose replies one catch-up fetches, newest first


@attrs.frozen
class SlackSettings:
    bot_token: str | None = attrs.field(default=None, repr=False)  # xoxb-...
    app_token: str | None = attrs.field(default=None, repr=False)  # xapp-... (connections:write)
    base_url: str = BASE_URL
    reply_in_thread: str = "auto"  # "auto": in the thread when the trigger was in one; "always"
    ping_interval: float = 5.0  # websocket ping; a socket silent for 4x this is reconnected
    request_timeout: float = 30.0
    connect_timeout: float = 15.0  # websocket connect + Slack's hello
    fetch_missed: bool = True  # conversations.history (+ .replies) after a reconnect
    catch_up_pages: int = 50  # pages per listing (history, each thread) in one catch-up
    catch_up_time: float = 120.0  # seconds one catch-up may take, rate-limit waits included
    reconnect_base: float = 1.0
    reconnect_cap: float = 60.0
    off_reason: str | None = None

    @classmethod
    def from_table(cls, table: dict[str, Any], config_file: Path | None = None) -> SlackSettings:
        t = ChannelTable(PREFIX, table, config_file, KEYS)
        bot, app = t.secret("bot_token"), t.secret("app_token")
        if app and not app.startswith("xapp-"):
            raise t.error("app_token", "must be an app-level token (xapp-...), see docs/channels/slack.md")
        missing = [name for name, value in (("NGB_SLACK_BOT_TOKEN", bot), ("NGB_SLACK_APP_TOKEN", app)) if not value]
        base_url = t.string("base_url", BASE_URL)
        return cls(
            bot_token=bot,
            app_token=app,
            base_url=base_url if base_url.endswith("/") else base_url + "/",
            reply_in_thread=t.choice("reply_in_thread", "auto", ("auto", "always")),
            ping_interval=t.duration("ping_interval", 5.0),
            request_timeout=t.duration("request_timeout", 30.0),
            connect_timeout=t.duration("connect_timeout", 15.0),
            fetch_missed=t.boolean("fetch_missed", True),
            catch_up_pages=t.integer("catch_up_pages", 50, lo=1, hi=10_000),
            catch_up_time=t.duration("catch_up_time", 120.0),
            reconnect_base=t.duration("reconnect_base", 1.0),
            reconnect_cap=t.duration("reconnect_cap", 60.0),
            off_reason=f"no token: set {' and '.join(missing)} (or *_token_file)" if missing else None,
        )


def slack_chat(channel_id: str) -> str:
    return f"{PREFIX}:{channel_id}"


class SlackChannel:
    name = PREFIX

    def __init__(self, settings: SlackSettings, *, trigger: str = "", bridge: AsyncioBridge = BRIDGE,
                 memory: ChannelMemory | None = None) -> None:
        self.memory = memory  # the daemon's store: newest stored ts per conversation (catch-up after a restart)
        self.marks = NewestStored(PREFIX, memory, order=float)  # chat -> newest stored ts
        self._held: dict[str, str | None] = {}  # chat being caught up -> newest ts the live events stored meanwhile
        self.settings = settings
        self.trigger = trigger
        self.bridge = bridge
        self.status = ChannelStatus(PREFIX)
        self.status.secrets = [settings.bot_token or "", settings.app_token or ""]
        for token in self.status.secrets:
            redact_in_logs(token, ("slack_sdk", "aiohttp", "ngb"))
        self.web: Any = None  # AsyncWebClient (bot token)
        self.socket: Any = None  # the current session's SocketModeClient
        self.me: dict[str, Any] | None = None  # auth.test: user_id, bot_id, user, team
        self._queue: asyncio.Queue[Any] | None = None  # SocketModeRequests, on the asyncio loop
        self._hello: asyncio.Event | None = None
        self._partial = PartialSends()
        self._gate = InboundGate(PREFIX, trigger)
        self._last_trigger = self._gate.last_trigger
        self._threads: Lru = Lru(8192)  # platform id -> thread_ts of the thread it is in ("" if none)
        self._bot_threads: Lru = Lru(4096)  # "<conversation>:<thread_ts>" of threads the bot is in
        self._users: Lru = Lru(4096)  # user id -> display name
        self.sessions = 0
        self.fetched = 0  # messages a catch-up found (stored, or already there)
        self.catch_ups = 0  # catch-ups finished

    @property
    def state(self) -> str:
        return self.status.state

    # -- inbound -------------------------------------------------------------------------------------
    async def run(self, submit: Submit, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.settings.off_reason:
            self.status.set(OFF, self.settings.off_reason)
            task_status.started()
            await trio.sleep_forever()
        async with self.bridge.attach():
            task_status.started()
            try:
                await self.marks.load()  # where the last run's catch-up would start
                self.web = await self.bridge.call_sync(self._make_web)
                await reconnect_forever(
                    self.status,
                    lambda: self._session(submit),
                    base=self.settings.reconnect_base,
                    cap=self.settings.reconnect_cap,
                )
            finally:
                self.status.set(STOPPED)
                with trio.CancelScope(shield=True), trio.move_on_after(3):
                    await self._close_socket()
                self.web = None

    def _make_web(self) -> Any:  # on the asyncio loop thread
        from slack_sdk.web.async_client import AsyncWebClient

        return AsyncWebClient(token=self.settings.bot_token, base_url=self.settings.base_url,
                              timeout=int(self.settings.request_timeout))

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
            error = _error_code(exc)
            if error in AUTH_ERRORS:
                raise AuthError(f"{method}: {error}") from None
            raise

    async def _session(self, submit: Submit) -> None:
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
            error = _error_code(exc)
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
        if socket is not None and self.bridge.running:
            try:
                await self.bridge.call(socket.close)
            except Exception:  # noqa: BLE001 - closing a dead connection
                log.debug("slack: error while closing the socket", exc_info=True)

    async def _pump(self, submit: Submit) -> None:
        """Queued envelopes -> store -> ack, one at a time, in arrival order."""
        from slack_sdk.socket_mode.response import SocketModeResponse

        queue, socket = self._queue, self.socket
        assert queue is not None
        while True:
            request = await self.bridge.call(queue.get)
            if request.type == "events_api":
                event = (request.payload or {}).get("event") or {}
                inbound = self.to_inbound(event)
                if inbound is not None:
                    await self._submit(submit, inbound, event)
            try:
                await self.bridge.call(socket.send_socket_mode_response,
                                       SocketModeResponse(envelope_id=request.envelope_id))
            except Exception as exc:  # noqa: BLE001 - not acked: Slack sends it again, stored once
                log.info("slack: could not ack envelope %s (%s); Slack will redeliver it", request.envelope_id, exc)

    async def _fetch_missed(self, submit: Submit) -> None:
        """Messages posted while we were away (a reconnect, or a restart), in every conversation
        with a mark, most recently active first (bounded)."""
        deadline = trio.current_time() + self.settings.catch_up_time
        try:
            for chat, oldest in sorted(self.marks.items(), key=lambda item: float(item[1]), reverse=True):
                caught_up = False
                try:
                    if trio.current_time() >= deadline:
                        log.warning("slack: catch-up out of time (%.0fs): %s not caught up",
                                    self.settings.catch_up_time, chat)
                        continue
                    await self._catch_up(submit, _channel_id(chat), oldest, deadline)
                    caught_up = True
                except AuthError:
                    raise
                except Exception as exc:  # noqa: BLE001 - best effort: Slack also redelivers unacked events
                    log.warning("slack: could not fetch missed messages of %s: %s", chat,
                                self.status.redact(str(exc)))
                finally:
                    await self._release(chat, caught_up)
        finally:
            for chat in list(self._held):  # cancelled (connection lost): the next catch-up starts at the mark
                await self._release(chat, False)
            self.catch_ups += 1

    def _hold(self, chats: Any) -> None:
        for chat in chats:
            self._held.setdefault(chat, None)

    async def _release(self, chat: str, caught_up: bool) -> None:
        """The catch-up of chat is over: when it got everything, what the live events stored
        meanwhile moves the mark; when not, the mark stays where the catch-up got to."""
        if chat not in self._held:
            return
        held = self._held.pop(chat)
        if caught_up and held is not None:
            with trio.CancelScope(shield=True):
                await self.marks.advance(chat, held)

    async def _catch_up(self, submit: Submit, channel: str, oldest: str, deadline: float) -> None:
        started = trio.current_time()
        found: dict[str, dict[str, Any]] = {}  # ts -> message
        history, pages, cut = await self._listing("conversations_history", deadline, channel=channel, oldest=oldest)
        for message in history:
            found[message["ts"]] = message
        # Thread replies are not in the history: the threads the bot is in, and those started meanwhile.
        roots = {m["ts"] for m in history if m.get("reply_count") and m.get("thread_ts") == m["ts"]}
        roots.update(key.partition(":")[2] for key in self._bot_threads if key.partition(":")[0] == channel)
        threads = sorted(roots, key=float, reverse=True)[:CATCH_UP_THREADS]
        for root in threads:
            if trio.current_time() >= deadline:
                cut = cut or f"out of time ({self.settings.catch_up_time:.0f}s) before thread {root}"
                break
            replies, more, thread_cut = await self._listing("conversations_replies", deadline, channel=channel,
                                                            ts=root, oldest=oldest)
            pages += more
            cut = cut or (f"thread {root}: {thread_cut}" if thread_cut else None)
            for message in replies:
                if float(message["ts"]) > float(oldest):  # every page starts with the parent
                    found.setdefault(message["ts"], message)
        fetched = 0
        for message in sorted(found.values(), key=lambda m: float(m["ts"])):
            event = {**message, "channel": channel, "channel_type": "im" if channel.startswith("D") else "channel"}
            inbound = self.to_inbound(event)
            if inbound is not None:
                fetched += 1
                await self._submit(submit, inbound, event, catching_up=True)
        self.fetched += fetched
        line = (f"slack: caught up {channel} since {oldest}: {fetched} message(s) in {pages} page(s), "
                f"{len(threads)} thread(s) read, {trio.current_time() - started:.1f}s")
        if cut:
            log.warning("%s; stopped early (%s): older messages of that listing were not fetched", line, cut)
        else:
            log.info("%s", line)

    async def _listing(self, method: str, deadline: float, **kwargs: Any) -> tuple[list[dict[str, Any]], int, str | None]:
        """Every page of conversations.history/.replies after ``oldest`` (exclusive), within
        catch_up_pages pages and the deadline: (messages, pages read, why it stopped early or None)."""
        from slack_sdk.errors import SlackApiError

        messages: list[dict[str, Any]] = []
        cursor: str | None = None
        pages = 0
        while True:
            if pages >= self.settings.catch_up_pages:
                return messages, pages, f"page limit ({pages} pages)"
            answer = None
            with trio.move_on_at(deadline):
                try:
                    answer = await self._api(method, inclusive=False, limit=PAGE_SIZE, cursor=cursor, **kwargs)
                except SlackApiError as exc:
                    if _error_code(exc) != "ratelimited":
                        raise
                    wait = float(_header(exc, "retry-after") or 1)
                    if trio.current_time() + wait >= deadline:
                        return messages, pages, f"rate limited for {wait:.0f}s"
                    log.info("slack: %s rate limited; waiting %.0fs", method.replace("_", "."), wait)
                    await trio.sleep(wait)
                    continue
            if answer is None:
                return messages, pages, f"out of time ({self.settings.catch_up_time:.0f}s)"
            pages += 1
            messages.extend(answer.get("messages") or [])
            cursor = ((answer.get("response_metadata") or {}).get("next_cursor") or None) if answer.get("has_more") else None
            if not cursor:
                return messages, pages, None

    async def _submit(self, submit: Submit, inbound: InboundMessage, event: dict[str, Any], *,
                      catching_up: bool = False) -> None:
        user = event.get("user") or ""
        if user and user not in self._users:
            self._users.put(user, await self._user_name(user))
        if user:
            inbound = attrs.evolve(inbound, sender=self._users[user])
        await self._gate.submit(submit, inbound)  # raises when the store failed: the mark stays
        ts = event["ts"]
        if inbound.chat in self._held and not catching_up:  # a catch-up of this chat is under way
            held = self._held[inbound.chat]
            if held is None or float(ts) > float(held):
                self._held[inbound.chat] = ts
            return
        await self.marks.advance(inbound.chat, ts)

    @property
    def received(self) -> int:
        return self._gate.received

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
        if not text.strip():
            files = event.get("files") or []
            text = " ".join(f"[file: {f.get('name') or f.get('title') or 'file'}]" for f in files)
            if not text:
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
    async def send(self, chat: str, text: str, reply_to: str | None = None, *,
                   idempotency_key: str | None = None) -> str | None:
        """Post ``text`` (split under 4,000 characters). ``idempotency_key`` is accepted for a uniform
        interface and unused: chat.postMessage has no idempotency key (docs/channels/slack.md)."""
        channel = _channel_id(chat)
        if self.web is None:
            raise ChannelError(f"slack is {self.state}", retryable=True)
        trigger = reply_to or self._last_trigger.get(chat)
        thread_ts = await self._thread_of(channel, trigger) if trigger else None
        if thread_ts:
            self._bot_threads.put(f"{channel}:{thread_ts}", None)
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(text, PART_LIMIT)
        for index in range(len(ids), len(parts)):
            ts = await self._post(channel, parts[index], thread_ts)
            ids.append(f"{channel}:{ts}")
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return ids[0] if ids else None

    async def _thread_of(self, channel: str, platform_id: str) -> str | None:
        """The thread_ts a reply to this message goes to (None: the channel itself)."""
        chan, _, ts = platform_id.rpartition(":")
        if chan != channel or not ts:
            return None
        thread = self._threads.get(platform_id)
        if thread is None:  # not seen in this run (a restart): ask Slack
            thread = ""
            try:
                answer = await self._api("conversations_replies", channel=channel, ts=ts, limit=1)
                msgs = answer.get("messages") or []
                if msgs and msgs[0].get("thread_ts") and msgs[0]["thread_ts"] != ts:
                    thread = msgs[0]["thread_ts"]
            except Exception as exc:  # noqa: BLE001 - then it goes to the channel
                log.debug("slack: conversations.replies failed: %s", exc)
            self._threads.put(platform_id, thread)
        if self.settings.reply_in_thread == "always":
            return thread or ts
        return thread or None

    async def _post(self, channel: str, part: str, thread_ts: str | None) -> str:
        from slack_sdk.errors import SlackApiError

        kwargs: dict[str, Any] = {"channel": channel, "text": markdown_to_slack_mrkdwn(part), "mrkdwn": True}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        for attempt in range(3):
            try:
                answer = await self.bridge.call(self.web.chat_postMessage, **kwargs)
                return str(answer["ts"])
            except SlackApiError as exc:
                error = _error_code(exc)
                if error == "ratelimited":
                    wait = float(_header(exc, "retry-after") or 1)
                    if wait > 10 or attempt == 2:
                        raise ChannelError(f"slack: rate limited, retry in {wait:.0f}s", retryable=True) from None
                    await trio.sleep(wait)
                    continue
                if error in FATAL_SEND_ERRORS:
                    hint = " (invite the bot to the channel: /invite @bot)" if error == "not_in_channel" else ""
                    raise ChannelError(f"slack: chat.postMessage: {error}{hint}", retryable=False) from None
                raise ChannelError(self.status.redact(f"slack: chat.postMessage: {error}"), retryable=True) from None
            except (TimeoutError, BridgeClosed, OSError) as exc:
                raise ChannelError(self.status.redact(f"slack: {type(exc).__name__}: {exc}"), retryable=True) from None
            except Exception as exc:  # noqa: BLE001 - aiohttp.ClientError and friends: network trouble
                if type(exc).__module__.startswith("aiohttp"):
                    raise ChannelError(self.status.redact(f"slack: {type(exc).__name__}: {exc}"), retryable=True) from None
                raise
        raise ChannelError("slack: could not send", retryable=True)

    async def typing(self, chat: str) -> None:
        """Slack's Web API has no typing indicator for apps (only the retired RTM API had one)."""

    def describe(self) -> dict[str, Any]:
        out = self.status.describe()
        out["bot"] = f"@{self.me['user']}" if self.me else None
        out["received"] = self.received
        out["caught_up"] = self.fetched
        return out


def _error_code(exc: Any) -> str:
    try:
        return str(exc.response.get("error") or "")
    except Exception:  # noqa: BLE001
        return ""


def _header(exc: Any, name: str) -> str | None:
    try:
        headers = exc.response.headers or {}
        return next((v for k, v in headers.items() if k.lower() == name), None)
    except Exception:  # noqa: BLE001
        return None



def _channel_id(chat: str) -> str:
    prefix, _, raw = chat.partition(":")
    if prefix != PREFIX or not re.fullmatch(r"[A-Z0-9]+", raw):
        raise ChannelError(f"not a Slack chat: {chat!r} (expected slack:<conversation id>, e.g. slack:C0123ABC)",
                           retryable=False)
    return raw
