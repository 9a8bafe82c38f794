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

Chats are ``discord:<channel id>`` (guild text channels and DMs; a thread is its own chat when it is
registered, else its messages are in its parent channel's chat with ``thread`` the thread's id:
discord_threads.py); a message's platform id is its snowflake (``<thread id>:<snowflake>`` in a
thread under its parent's chat). Mentions of the bot (``<@id>``), a reply to one of the bot's
messages, and every DM set ``mentions_bot``. Replies reference the triggering message. Each
message the bot sends carries a ``nonce`` with ``enforce_nonce`` when the caller passes an
idempotency key (the outbox row id), so Discord drops a resend of the same row. Reading what
people write needs the privileged **Message Content** intent (docs/channels/discord.md). Files in
and out (attachments from the CDN into the media store, ``send_file`` as a multipart upload):
discord_media.py. Live previews (a reply growing in one message by edits, then edited to the
final text): discord_preview.py. Reactions out and in: discord_reactions.py.

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
from typing import Any

import attrs
import trio

from ..aio_bridge import BRIDGE, AsyncioBridge, BridgeClosed
from ..errors import leaves
from ..media.intake import MediaIntake, with_notes
from ..records import InboundMessage
from .base import ChannelError, ChannelMemory, Submit
from .common import CONNECTED, AuthError, NewestStored, split_text, utf16_len
from .discord_catchup import DiscordCatchUp
from .discord_media import NONCE_MAX, PART_LIMIT, DiscordFiles, take_attachments
from .discord_preview import DiscordPreviews
from .discord_reactions import DiscordReactions
from .discord_settings import (  # noqa: F401 - re-exported: tests import them from here
    API_BASE,
    GATEWAY_URL,
    KEYS,
    PREFIX,
    DiscordSettings,
    channel_id_of,
    discord_chat,
)
from .discord_threads import DiscordThreads, locate, platform_id_in
from .skeleton import PlatformChannel

log = logging.getLogger(__name__)


class DiscordChannel(DiscordCatchUp, DiscordFiles, DiscordPreviews, DiscordReactions, DiscordThreads, PlatformChannel):
    name = PREFIX
    uses_asyncio = True
    token_field = "token"
    takes_idempotency_key = True  # base.IdempotentSend
    mark_order = int  # chat -> newest stored snowflake (kept in the daemon's store)
    marks: NewestStored  # never None: mark_order is set

    def __init__(self, settings: DiscordSettings, *, trigger: str = "", bridge: AsyncioBridge = BRIDGE,
                 memory: ChannelMemory | None = None,
                 media: MediaIntake | None = None) -> None:
        super().__init__(settings, trigger=trigger, bridge=bridge, memory=memory, media=media)
        self.keep_secret(settings.token or "", loggers=("discord", "aiohttp", "ngb"))
        self.client: Any = None
        self._held: dict[str, int | None] = {}  # chat awaiting its catch-up -> newest live id stored meanwhile
        self._inbox: collections.deque[Any] = collections.deque()  # gateway messages not stored yet, in order
        self._arrived: asyncio.Event | None = None
        self._ready: asyncio.Event | None = None
        self._resume: dict[str, Any] | None = None  # sequence/session/gateway of the last session
        self._resumed = False
        self._warned_content = False
        self.sessions = 0
        self.fetched = 0  # messages read from the history by catch-ups
        self.catch_ups = 0  # catch-ups that went through every marked chat
        self._init_threads()
        self._init_reactions()

    @property
    def me(self) -> Any:
        return self.client.user if self.client is not None else None

    # -- inbound -------------------------------------------------------------------------------------
    async def close(self) -> None:
        client, self.client = self.client, None
        await self.close_on_loop(client and client.close, "the client")

    def _make_client(self) -> Any:  # on the asyncio loop thread
        import discord
        from discord.http import Route

        Route.BASE = self.settings.api_base  # process-wide: one Discord bot per daemon
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.dm_messages = True
        intents.message_content = self.settings.message_content
        intents |= discord.Intents(guild_reactions=True, dm_reactions=True)  # people's reactions, as context
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False  # no voice here: no warning
        client = discord.Client(intents=intents, chunk_guilds_at_startup=False, max_messages=None,
                                allowed_mentions=discord.AllowedMentions.none())
        inbox = self._inbox
        arrived = asyncio.Event()
        ready = asyncio.Event()

        async def on_message(message: Any) -> None:
            inbox.append(message)  # in gateway order; the trio side stores them one by one
            arrived.set()

        async def on_raw_reaction_add(payload: Any) -> None:
            inbox.append(payload)  # with the messages, in gateway order
            arrived.set()

        async def on_ready() -> None:
            self._resumed = False
            ready.set()

        async def on_resumed() -> None:
            self._resumed = True
            ready.set()

        client.event(on_message)
        client.event(on_raw_reaction_add)
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

    async def session(self, submit: Submit) -> None:
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
        from discord import RawReactionActionEvent

        while True:
            message = await self.bridge.call(self._head)
            reaction = isinstance(message, RawReactionActionEvent)
            inbound = await (self.reaction_in(message) if reaction else self._parse(message))
            if inbound is not None:
                await self._submit(submit, inbound)
            if self._inbox and self._inbox[0] is message:
                self._inbox.popleft()  # (deque: safe against the loop thread's append)

    async def _parse(self, message: Any) -> InboundMessage | None:
        """The message as stored: in its chat and thread, its text, and its files in the media store
        (or a note each: a file that could not be had never holds the message back)."""
        try:
            inbound = self.to_inbound(message)
        except Exception:  # noqa: BLE001 - one message we cannot read must not stall the others
            log.exception("discord: could not read message %s; skipped", getattr(message, "id", "?"))
            return None
        if inbound is None:
            return None
        inbound = await self.in_thread(inbound, message)  # (a store failure raises: the session ends)
        if not message.attachments:
            return inbound
        taken = await take_attachments(self.media, inbound.chat, message)
        return attrs.evolve(inbound, text=with_notes(inbound.text, taken.notes), attachments=taken.attachments)

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
        if not text.strip() and not message.attachments:  # (files: _parse takes them, or notes them)
            text = "[sticker]" if message.stickers else ""
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
        sender = author.display_name or author.name
        self._names.put(str(author.id), sender)
        return InboundMessage(
            chat=discord_chat(message.channel.id),
            sender=sender,
            text=text,
            platform_id=str(message.id),
            time=message.created_at,
            sender_id=str(author.id),
            mentions_bot=mentions,
            reply_to=str(ref.message_id) if ref is not None and ref.message_id else None,
            direct=message.guild is None,
        )

    # -- outbound ------------------------------------------------------------------------------------
    async def send(self, chat: str, text: str, reply_to: str | None = None, *,
                   idempotency_key: str | None = None) -> str | None:
        """Send ``text`` (split under 2,000 characters), the first part referencing ``reply_to`` (or
        the chat's newest trigger). ``idempotency_key`` (the outbox row id) becomes each part's
        ``nonce`` with ``enforce_nonce``: Discord answers a resend with the message it already made."""
        if self.client is None or self.client.user is None:
            raise ChannelError(f"discord is {self.state}", retryable=True)
        channel_id, reference = locate(chat, reply_to or self._last_trigger.get(chat))  # (in its thread)
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(text, PART_LIMIT, measure=utf16_len)
        for index in range(len(ids), len(parts)):
            nonce = f"{idempotency_key}.{index}"[-NONCE_MAX:] if idempotency_key else None
            message_id = await self._send_part(channel_id, parts[index], reference if index == 0 else None, nonce,
                                               ping_author=bool(reply_to))
            ids.append(platform_id_in(chat, channel_id, message_id))
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return ids[0] if ids else None

    async def _send_part(self, channel_id: int, part: str, reference: int | None, nonce: str | None, *,
                         ping_author: bool = False) -> str:
        return await self._post(channel_id, part, reference, nonce, ping_author=ping_author)

    async def _post(self, channel_id: int, content: str | None, reference: int | None, nonce: str | None, *,
                    ping_author: bool = False, file: tuple[Any, str] | None = None) -> str:
        """Create one message: ``content``, and ``file`` (an open binary file, its name) as its
        multipart attachment; the id Discord gave it, or ChannelError."""
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
            if file is not None:  # read by aiohttp on this (asyncio) loop as it uploads
                kwargs["file"] = discord.File(file[0], filename=file[1], spoiler=False)
            return await channel.send(content, **kwargs)

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
            if exc.status == 413:
                raise ChannelError("discord: the file is larger than Discord takes here (413: its upload limit "
                                   "depends on the server's boost level)", retryable=False) from None
            if exc.status == 429 or exc.status >= 500:
                raise ChannelError(f"discord: HTTP {exc.status}", retryable=True) from None
            raise ChannelError(self.status.redact(f"discord: HTTP {exc.status}: {exc.text}"), retryable=False) from None
        except (TimeoutError, BridgeClosed, OSError, aiohttp.ClientError) as exc:
            raise ChannelError(self.status.redact(f"discord: {type(exc).__name__}: {exc}"), retryable=True) from None

    def details(self) -> dict[str, Any]:
        return {"bot": str(self.me) if self.me is not None else None, "received": self.received}
