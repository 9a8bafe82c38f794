"""Discord: discord.py (its ``Client``, unchanged) over the shared asyncio bridge.

The connection is driven the way ``Client.connect()`` drives it (``DiscordWebSocket.from_client``
then ``poll_event`` until the socket ends), but the loop around it is ours: ``reconnect_forever``
(common.py) gives backoff with jitter, forever, and the state /status shows. After a lost
connection the next one RESUMEs the gateway session (Discord replays the events we missed); when
Discord refuses the resume (INVALID_SESSION) we IDENTIFY afresh.

Nothing is lost between the gateway and the store:

- A message the gateway delivered stays at the head of the channel's inbox until ``submit``
  returned (it is in the store); a connection that drops meanwhile (or a store that fails) leaves
  it there for the next session, instead of losing it off a queue whose sequence RESUME has moved
  past.
- Per chat, the newest *stored* snowflake (``NewestStored``, kept in the daemon's store) moves only
  after ``submit`` returned. After every (re)connect, a RESUME, a fresh IDENTIFY and the first
  READY after a restart alike, the REST history since that mark is read, oldest first, 100 a page,
  up to ``catch_up_pages`` pages per chat, for every chat with a mark: what was posted while the
  daemon was down or the gateway away is stored then. While a chat is being caught up, live
  messages do not move its mark (the catch-up does, as it stores); a catch-up that was cut (page
  bound), failed or was interrupted leaves the mark where it got to, and the next one goes on from
  there, so a daemon killed mid-way leaves no gap behind a newer mark.
- The store is idempotent on the message id (snowflakes are unique across Discord), so a message
  both replayed and refetched is stored and answered once.

Chats are ``discord:<channel id>`` (guild text channels, threads and DMs alike); a message's
platform id is its snowflake. Mentions of the bot (``<@id>``), a reply to one of the bot's
messages, and every DM set ``mentions_bot``. Replies reference the triggering message. Each
message the bot sends carries a ``nonce`` with ``enforce_nonce`` when the caller passes an
idempotency key (the outbox row id), so Discord drops a resend of the same row. Reading what
people write needs the privileged **Message Content** intent (docs/channels/discord.md).

Nothing the bot sends pings a crowd: every message carries ``allowed_mentions`` with an empty
``parse`` list, so ``@everyone``, ``@here``, role mentions ``<@&id>`` and user mentions ``<@id>``
in the text (the agent repeating what someone wrote, or steered into it) show as text and notify
no one. The one notification kept is Discord's usual one for a reply: the answer to a message
(``reply_to``) notifies that message's author, who asked. A message the agent sends on its own
(``send_message``) references the chat's newest trigger without notifying anyone. The client's
default is the same ``AllowedMentions.none()``, for any send that does not say.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
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
    NewestStored,
    PartialSends,
    backoff,
    reconnect_forever,
    redact_in_logs,
    split_text,
    utf16_len,
)
from .settings import ChannelTable

log = logging.getLogger(__name__)

PREFIX = "discord"
TEXT_LIMIT = 2000
PART_LIMIT = 1990
KEYS = {"token", "token_file", "api_base", "gateway_url", "message_content", "connect_timeout",
        "fetch_missed", "catch_up_pages", "reconnect_base", "reconnect_cap", "enabled"}
PAGE = 100  # messages per history request (Discord's maximum)
NONCE_MAX = 25
API_BASE = "https://discord.com/api/v10"
GATEWAY_URL = "wss://gateway.discord.gg/"  # Discord's limit on a nonce string


@attrs.frozen
class DiscordSettings:
    token: str | None = attrs.field(default=None, repr=False)
    api_base: str = API_BASE
    gateway_url: str = GATEWAY_URL
    message_content: bool = True  # ask for the privileged Message Content intent
    connect_timeout: float = 60.0
    fetch_missed: bool = True
    catch_up_pages: int = 20  # history pages (of 100) read per chat in one catch-up
    reconnect_base: float = 1.0
    reconnect_cap: float = 60.0
    off_reason: str | None = None

    @classmethod
    def from_table(cls, table: dict[str, Any], config_file: Path | None = None) -> DiscordSettings:
        t = ChannelTable(PREFIX, table, config_file, KEYS)
        token = t.secret("token")
        return cls(
            token=token,
            api_base=t.url("api_base", API_BASE).rstrip("/"),
            gateway_url=t.url("gateway_url", GATEWAY_URL, schemes=("ws", "wss")),
            message_content=t.boolean("message_content", True),
            connect_timeout=t.duration("connect_timeout", 60.0),
            fetch_missed=t.boolean("fetch_missed", True),
            catch_up_pages=t.integer("catch_up_pages", 20, lo=1, hi=10_000),
            reconnect_base=t.duration("reconnect_base", 1.0),
            reconnect_cap=t.duration("reconnect_cap", 60.0),
            off_reason=None if token else "no token: set NGB_DISCORD_TOKEN (or token_file)",
        )


def discord_chat(channel_id: int | str) -> str:
    return f"{PREFIX}:{channel_id}"


class DiscordChannel:
    name = PREFIX

    def __init__(self, settings: DiscordSettings, *, trigger: str = "", bridge: AsyncioBridge = BRIDGE,
                 memory: ChannelMemory | None = None) -> None:
        self.memory = memory  # the daemon's store: newest stored id per chat (catch-up after a restart)
        self.settings = settings
        self.trigger = trigger
        self.bridge = bridge
        self.status = ChannelStatus(PREFIX)
        self.status.secrets = [settings.token or ""]
        redact_in_logs(settings.token or "", ("discord", "aiohttp", "ngb"))
        self.client: Any = None
        self.marks = NewestStored(PREFIX, memory, order=int)  # chat -> newest stored snowflake
        self._held: dict[str, int | None] = {}  # chat awaiting its catch-up -> newest live id stored meanwhile
        self._inbox: collections.deque[Any] = collections.deque()  # gateway messages not stored yet, in order
        self._arrived: asyncio.Event | None = None
        self._ready: asyncio.Event | None = None
        self._resume: dict[str, Any] | None = None  # sequence/session/gateway of the last session
        self._resumed = False
        self._partial = PartialSends()
        self._gate = InboundGate(PREFIX, trigger)
        self._last_trigger = self._gate.last_trigger
        self._warned_content = False
        self.sessions = 0
        self.fetched = 0  # messages read from the history by catch-ups
        self.catch_ups = 0  # catch-ups that went through every marked chat

    @property
    def state(self) -> str:
        return self.status.state

    @property
    def me(self) -> Any:
        return self.client.user if self.client is not None else None

    # -- inbound -------------------------------------------------------------------------------------
    async def run(self, submit: Submit, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if not self.settings.token:
            self.status.set(OFF, self.settings.off_reason)
            task_status.started()
            await trio.sleep_forever()
        async with self.bridge.attach():
            task_status.started()
            try:
                await self.marks.load()  # where the last run's catch-up would start
                await reconnect_forever(
                    self.status,
                    lambda: self._session(submit),
                    base=self.settings.reconnect_base,
                    cap=self.settings.reconnect_cap,
                )
            finally:
                self.status.set(STOPPED)
                with trio.CancelScope(shield=True), trio.move_on_after(3):
                    client, self.client = self.client, None
                    if client is not None and self.bridge.running:
                        try:
                            await self.bridge.call(client.close)
                        except Exception:  # noqa: BLE001 - closing on the way out
                            log.debug("discord: error while closing the client", exc_info=True)

    def _make_client(self) -> Any:  # on the asyncio loop thread
        import discord
        from discord.http import Route

        Route.BASE = self.settings.api_base  # process-wide: one Discord bot per daemon
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.dm_messages = True
        intents.message_content = self.settings.message_content
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False  # no voice here: no warning
        client = discord.Client(intents=intents, chunk_guilds_at_startup=False, max_messages=None,
                                allowed_mentions=discord.AllowedMentions.none())
        inbox = self._inbox
        arrived = asyncio.Event()
        ready = asyncio.Event()

        async def on_message(message: Any) -> None:
            inbox.append(message)  # in gateway order; the trio side stores them one by one
            arrived.set()

        async def on_ready() -> None:
            self._resumed = False
            ready.set()

        async def on_resumed() -> None:
            self._resumed = True
            ready.set()

        client.event(on_message)
        client.event(on_ready)
        client.event(on_resumed)
        self._arrived, self._ready = arrived, ready
        return client

    async def _login(self) -> None:
        import discord

        if self.client is None:
            self.client = await self.bridge.call_sync(self._make_client)
        if self.client.user is None:
            try:
                await self.bridge.call(self.client.login, self.settings.token or "")
            except discord.LoginFailure as exc:
                raise AuthError(f"login: {exc}") from None

    async def _session(self, submit: Submit) -> None:
        await self._login()
        ready = self._ready
        assert ready is not None
        await self.bridge.call_sync(ready.clear)
        catch_up = self.settings.fetch_missed
        if catch_up:  # before anything is pumped: live messages do not move these marks until caught up
            self._held = dict.fromkeys((chat for chat, _ in self.marks.items()), None)

        async def when_ready() -> None:
            await self.bridge.call(ready.wait)
            self.sessions += 1
            self.status.set(CONNECTED)
            log.info("discord: %s as %s (id %s)", "resumed" if self._resumed else "connected",
                     self.me, getattr(self.me, "id", "?"))
            if catch_up:
                await self._catch_up_all(submit)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, submit)
                nursery.start_soon(when_ready)
                await self.bridge.call(self._gateway)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise leaves(group)[0] from None  # reconnect_forever must see AuthError itself
        raise ConnectionError("the gateway connection ended")

    async def _gateway(self) -> None:  # on the asyncio loop: one gateway connection, until it ends
        import aiohttp
        import yarl
        from discord.errors import ConnectionClosed
        from discord.gateway import DiscordWebSocket, ReconnectWebSocket

        client = self.client
        params: dict[str, Any] = {"initial": self.sessions == 0, "shard_id": None,
                                  "gateway": yarl.URL(self.settings.gateway_url)}
        if self._resume is not None:
            params.update(resume=True, **self._resume)
        client.ws = None
        try:
            client.ws = await asyncio.wait_for(DiscordWebSocket.from_client(client, **params),
                                               timeout=self.settings.connect_timeout)
            while True:
                await client.ws.poll_event()
        except ReconnectWebSocket as exc:
            self._keep_resume(client.ws, exc.resume)
            raise ConnectionError(f"the gateway asked to {exc.op}" if exc.resume else "the gateway session was invalidated") from None
        except ConnectionClosed as exc:
            if exc.code == 4004:
                raise AuthError("the gateway rejected the token (4004)") from None
            if exc.code == 4014:
                raise AuthError("the bot is not allowed the Message Content intent (4014): enable it in the "
                                "Developer Portal (Bot -> Privileged Gateway Intents) or set message_content = false") from None
            self._keep_resume(client.ws, exc.code not in (4007, 4009, 4010, 4011, 4012, 4013))
            raise
        except (TimeoutError, OSError, aiohttp.ClientError):
            self._keep_resume(client.ws, True)
            raise
        except asyncio.CancelledError:  # the trio side ended the session (the store failed, or shutdown)
            ws = client.ws
            self._keep_resume(ws, True)
            if ws is not None:  # stop its heartbeat thread; 4000 keeps the session resumable
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(4000), timeout=2)
            raise

    def _keep_resume(self, ws: Any, resume: bool) -> None:
        if resume and ws is not None and ws.session_id:
            self._resume = {"sequence": ws.sequence, "session": ws.session_id, "gateway": ws.gateway}
        elif not resume:
            self._resume = None

    async def _head(self) -> Any:  # on the asyncio loop: the oldest message not stored yet (left in place)
        arrived = self._arrived
        assert arrived is not None
        while not self._inbox:
            arrived.clear()
            await arrived.wait()
        return self._inbox[0]

    async def _pump(self, submit: Submit) -> None:
        """Store the gateway's messages in order. Each leaves the inbox only once ``submit`` returned:
        cancelled (the connection dropped) or failed (the store), it is the first of the next session."""
        while True:
            message = await self.bridge.call(self._head)
            inbound = self._parse(message)
            if inbound is not None:
                await self._submit(submit, inbound)
            if self._inbox and self._inbox[0] is message:
                self._inbox.popleft()  # (deque: safe against the loop thread's append)

    def _parse(self, message: Any) -> InboundMessage | None:
        try:
            return self.to_inbound(message)
        except Exception:  # noqa: BLE001 - one message we cannot read must not stall the others
            log.exception("discord: could not read message %s; skipped", getattr(message, "id", "?"))
            return None

    async def _catch_up_all(self, submit: Submit) -> None:
        """Every held chat (those with a mark when the session began), most recently active first;
        a chat whose history could not be read for now is tried again with backoff while the
        connection lasts (and anyway at the next reconnect or restart: it stays held)."""
        chats = sorted(self._held, key=lambda chat: int(self.marks.get(chat) or 0), reverse=True)
        attempt = 0
        while chats:
            again = []
            for chat in chats:
                outcome = await self._catch_up(submit, chat)
                if outcome in ("done", "gone"):  # (gone: there is nothing to catch up; live ones move it)
                    held = self._held.pop(chat, None)
                    if held is not None:
                        await self._advance(chat, str(held))  # what the live messages stored meanwhile
                elif outcome == "retry":
                    again.append(chat)
            chats = again
            if chats:
                attempt += 1
                await trio.sleep(backoff(attempt, base=self.settings.reconnect_base, cap=self.settings.reconnect_cap))
        self.catch_ups += 1

    async def _catch_up(self, submit: Submit, chat: str) -> str:
        """Read chat's history since its mark, oldest first, and store it: "done" (a short page came),
        "cut" (``catch_up_pages`` pages read; the rest at the next catch-up), "retry" (a transient
        error) or "gone" (no such chat, or no access to it: logged)."""
        import discord

        mark = self.marks.get(chat)
        try:
            channel_id = _channel_id(chat)
        except ChannelError:
            return "gone"
        if mark is None:
            return "done"
        client = self.client

        async def messageable() -> Any:  # the real channel: its guild tells a guild message from a DM
            return client.get_channel(channel_id) or await client.fetch_channel(channel_id)

        async def page(channel: Any, after: int) -> list[Any]:
            return [m async for m in channel.history(limit=PAGE, after=discord.Object(id=after), oldest_first=True)]

        async def read(fn: Any, *args: Any) -> Any:
            try:
                return await self.bridge.call(fn, *args)
            except (discord.Forbidden, discord.NotFound, discord.InvalidData) as exc:
                raise _Unreadable(f"{type(exc).__name__}: {exc}", permanent=True) from None
            except Exception as exc:  # noqa: BLE001 - network, 5xx, the bridge: try again later
                raise _Unreadable(f"{type(exc).__name__}: {exc}", permanent=False) from None

        after, fetched, pages = int(mark), 0, 0
        try:
            channel = await read(messageable)
            while pages < self.settings.catch_up_pages:
                messages = await read(page, channel, after)
                pages += 1
                for message in messages:  # (a store failure raises out of here: the session ends)
                    after = max(after, int(message.id))
                    inbound = self._parse(message)
                    if inbound is not None:
                        fetched += 1
                        self.fetched += 1
                        await self._submit(submit, inbound, catching_up=True)
                if len(messages) < PAGE:
                    if fetched:
                        log.info("discord: caught up %s: %d message(s) since %s in %d page(s)", chat, fetched, mark, pages)
                    return "done"
        except _Unreadable as exc:
            why = self.status.redact(str(exc))
            if exc.permanent:
                log.warning("discord: cannot read the history of %s (%s); not caught up", chat, why)
                return "gone"
            log.warning("discord: could not read the history of %s (%s); trying again", chat, why)
            return "retry"
        log.warning("discord: catch-up of %s stopped after %d pages (%d messages since %s; catch_up_pages); "
                    "the rest is read at the next reconnect or restart", chat, pages, fetched, mark)
        return "cut"

    async def _submit(self, submit: Submit, inbound: InboundMessage, *, catching_up: bool = False) -> None:
        await self._gate.submit(submit, inbound)  # raises when the store failed: the mark stays
        chat, newest = inbound.chat, int(inbound.platform_id)
        if chat in self._held and not catching_up:  # its catch-up is under way (or failed): the mark waits
            held = self._held[chat]
            self._held[chat] = newest if held is None else max(held, newest)
            return
        await self._advance(chat, inbound.platform_id)

    async def _advance(self, chat: str, mark: str) -> None:
        """Keep chat's mark (the message is stored): the write is not given up halfway when the
        connection drops or the daemon stops right then (bounded: the store answers in ms)."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + 5
            await self.marks.advance(chat, mark)

    @property
    def received(self) -> int:
        return self._gate.received

    def to_inbound(self, message: Any) -> InboundMessage | None:
        """A discord.Message -> InboundMessage, or None for what is not a person's message."""
        import discord

        me = self.me
        author = message.author
        if author.bot or (me is not None and author.id == me.id):
            return None  # bots, ourselves included
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return None  # joins, pins, boosts...
        text = message.clean_content if message.content else ""
        if not text.strip():
            text = " ".join(f"[file: {a.filename}]" for a in message.attachments) or (
                "[sticker]" if message.stickers else "")
            if not text:
                if message.guild is not None and not self._warned_content:
                    self._warned_content = True
                    log.warning("discord: a guild message arrived without content: turn on the Message Content "
                                "intent for the bot (docs/channels/discord.md)")
                return None
        mentions = message.guild is None  # a DM is addressed to the bot
        if me is not None and any(u.id == me.id for u in message.mentions):
            mentions = True
        ref = message.reference
        resolved = getattr(ref, "resolved", None) if ref is not None else None
        if me is not None and isinstance(resolved, discord.Message) and resolved.author.id == me.id:
            mentions = True
        return InboundMessage(
            chat=discord_chat(message.channel.id),
            sender=author.display_name or author.name,
            text=text,
            platform_id=str(message.id),
            time=message.created_at,
            sender_id=str(author.id),
            mentions_bot=mentions,
            reply_to=str(ref.message_id) if ref is not None and ref.message_id else None,
        )

    # -- outbound ------------------------------------------------------------------------------------
    async def send(self, chat: str, text: str, reply_to: str | None = None, *,
                   idempotency_key: str | None = None) -> str | None:
        """Send ``text`` (split under 2,000 characters), the first part referencing ``reply_to`` (or
        the chat's newest trigger). ``idempotency_key`` (the outbox row id) becomes each part's
        ``nonce`` with ``enforce_nonce``: Discord answers a resend with the message it already made."""
        channel_id = _channel_id(chat)
        if self.client is None or self.client.user is None:
            raise ChannelError(f"discord is {self.state}", retryable=True)
        target = reply_to or self._last_trigger.get(chat)
        reference = int(target) if target and target.isdigit() else None
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(text, PART_LIMIT, measure=utf16_len)
        for index in range(len(ids), len(parts)):
            nonce = f"{idempotency_key}.{index}"[-NONCE_MAX:] if idempotency_key else None
            message_id = await self._send_part(channel_id, parts[index], reference if index == 0 else None, nonce,
                                               ping_author=bool(reply_to))
            ids.append(message_id)
            self._partial.record(key, message_id)
        self._partial.finish(key)
        return ids[0] if ids else None

    async def _send_part(self, channel_id: int, part: str, reference: int | None, nonce: str | None, *,
                         ping_author: bool = False) -> str:
        import aiohttp
        import discord

        async def post() -> Any:
            channel = self.client.get_partial_messageable(channel_id)
            # no @everyone/@here, no roles, no users from the text; the replied-to author only for an answer
            mentions = discord.AllowedMentions(everyone=False, users=False, roles=False,
                                               replied_user=ping_author and reference is not None)
            kwargs: dict[str, Any] = {"allowed_mentions": mentions}
            if reference is not None:
                kwargs["reference"] = discord.MessageReference(message_id=reference, channel_id=channel_id,
                                                               fail_if_not_exists=False)
            if nonce is not None:
                kwargs["nonce"] = nonce  # discord.py adds enforce_nonce=true
            return await channel.send(part, **kwargs)

        try:
            sent = await self.bridge.call(post)
            return str(sent.id)
        except discord.Forbidden as exc:
            raise ChannelError(f"discord: forbidden: {exc.text} (the bot cannot write there: check its "
                               "permissions, or the user closed DMs)", retryable=False) from None
        except discord.NotFound as exc:
            raise ChannelError(f"discord: not found: {exc.text} (unknown channel)", retryable=False) from None
        except discord.DiscordServerError as exc:
            raise ChannelError(f"discord: server error {exc.status}", retryable=True) from None
        except discord.HTTPException as exc:
            if exc.status == 429 or exc.status >= 500:
                raise ChannelError(f"discord: HTTP {exc.status}", retryable=True) from None
            raise ChannelError(self.status.redact(f"discord: HTTP {exc.status}: {exc.text}"), retryable=False) from None
        except (TimeoutError, BridgeClosed, OSError, aiohttp.ClientError) as exc:
            raise ChannelError(self.status.redact(f"discord: {type(exc).__name__}: {exc}"), retryable=True) from None

    async def typing(self, chat: str) -> None:
        """Show "typing..." for ~10 seconds (best effort)."""
        if self.client is None or self.client.user is None:
            return
        try:
            channel_id = _channel_id(chat)

            async def trigger() -> None:
                await self.client.http.send_typing(channel_id)

            await self.bridge.call(trigger)
        except Exception:  # noqa: BLE001 - cosmetic
            log.debug("discord: typing indicator failed", exc_info=True)

    def describe(self) -> dict[str, Any]:
        out = self.status.describe()
        out["bot"] = str(self.me) if self.me is not None else None
        out["received"] = self.received
        return out



class _Unreadable(Exception):
    """A chat's history could not be read: for good (no access, no such channel) or for now."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def _channel_id(chat: str) -> int:
    prefix, _, raw = chat.partition(":")
    if prefix != PREFIX or not raw.isdigit():
        raise ChannelError(f"not a Discord chat: {chat!r} (expected discord:<channel id>)", retryable=False)
    return int(raw)
