"""Matrix: matrix-nio's ``AsyncClient`` over the shared asyncio bridge, logged in with the bot
account's access token (``whoami`` says who and which device it is), receiving by ``/sync`` long
polls driven from trio.

Catch-up without loss or duplicates: the sync position (``next_batch``) is kept in the daemon's
store (the channel's mark ``next_batch``) and moved only after every event of the sync answer that
carried it has been stored. A daemon stopped or killed in between syncs again from the older
position at its next start; what it stored already is stored once (the store's key on channel +
event id). A sync whose timeline for a room is ``limited`` (more events than ``timeline_limit``) is
completed by paging ``/messages`` back from its ``prev_batch`` to the position synced from. The
first start (no position stored) only takes the position: what was said before the bot ran is not
answered.

Chats are ``matrix:<room id>``; a message's platform id is its event id (``$...``). Triggers: a
mention (``m.mentions``, a pill, the bot's display name or user id), a reply to one of the bot's
messages, and every message of a room of two (a DM). A reply goes out as an ``m.in_reply_to``
reply to the trigger, in the trigger's thread (``m.thread``) when it was in one; Markdown goes as
``formatted_body`` HTML beside the plain body. Sends carry the outbox row's key as the transaction
id, so a retried send is deduplicated by the homeserver. Invites are accepted from
``invites_from`` only (others: one log line). Files both ways: matrix_media.py; live previews as
edits (``m.replace``): matrix_preview.py; reactions (the bot's ``m.reaction``, and people's as
context): matrix_reactions.py. Configuration: docs/channels/matrix.md.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from ..aio_bridge import BRIDGE, AsyncioBridge
from ..media.intake import MediaIntake, with_notes
from ..records import InboundMessage, OutgoingFile
from .base import ChannelError, ChannelMemory, Submit
from .common import CONNECTED, AuthError, Lru, split_text
from .matrix_crypto import encryption_available, pickle_key, store_dir
from .matrix_events import (
    HTML_FORMAT,
    markdown_to_matrix_html,
    mentions,
    relation_of,
    reply_relation,
    strip_reply_fallback,
    text_content,
)
from .matrix_login import MatrixLogin
from .matrix_media import MatrixFiles, file_content
from .matrix_preview import PART_LIMIT, MatrixPreviews
from .matrix_reactions import MatrixReactions
from .matrix_settings import PREFIX, MatrixSettings, matrix_chat, room_id_of
from .skeleton import PlatformChannel

log = logging.getLogger(__name__)
# nio logs every response body at DEBUG: a login's fresh access token (before anything can redact
# it) and every synced message. Never, even when the daemon logs at DEBUG.
logging.getLogger("nio.responses").setLevel(logging.INFO)

SYNC_MARK = "next_batch"  # the mark (in the daemon's store) that holds the sync position
AUTH_ERRORS = {"M_UNKNOWN_TOKEN", "M_MISSING_TOKEN", "M_FORBIDDEN", "M_USER_DEACTIVATED"}
PAGE = 100  # events per /messages page of a catch-up


class MatrixChannel(MatrixLogin, MatrixFiles, MatrixPreviews, MatrixReactions, PlatformChannel):
    name = PREFIX
    uses_asyncio = True
    takes_idempotency_key = True  # base.IdempotentSend: the transaction id

    def __init__(self, settings: MatrixSettings, *, trigger: str = "", bridge: AsyncioBridge = BRIDGE,
                 memory: ChannelMemory | None = None, media: MediaIntake | None = None) -> None:
        super().__init__(settings, trigger=trigger, bridge=bridge, memory=memory, media=media)
        self.token = settings.access_token or ""  # configured, else the stored password login's
        self.keep_secret(*self._secrets(), loggers=("nio", "aiohttp", "ngb"))
        self.client: Any = None  # nio.AsyncClient
        self.me = ""  # the bot's user id
        self.device = ""
        self.names: tuple[str, ...] = ()  # what the bot is called in a message: display name, localpart
        self.since: str | None = None  # the stored sync position
        self._threads = Lru(8192)  # event id -> its thread's root ("" = none)
        self._sent = Lru(4096)  # event ids of the bot's own messages
        self.gone = Lru(1024)  # those of them that were redacted (matrix_preview.py)
        self.reactions = Lru(4096)  # "<event id> <emoji>" -> the bot's reaction on it (matrix_reactions.py)
        self.syncs = 0
        self.fetched = 0  # events a catch-up paged back for
        self.crypto_store: Path | None = None  # set when end-to-end encryption is on
        self._pickle_key = ""
        self.undecryptable = 0

    # -- life cycle -------------------------------------------------------------------------------
    async def prepare(self) -> None:
        self._load_login()
        if self.memory is not None:
            try:
                self.since = (await self.memory.channel_marks(PREFIX)).get(SYNC_MARK)
            except Exception as exc:  # noqa: BLE001 - no position: this run starts from now
                log.warning("matrix: could not read the stored sync position (%s)", exc)
        self._crypto_setup()
        self.client = await self.bridge.call_sync(self._make_client)

    def _crypto_setup(self) -> None:
        """The encryption store and its key, when encryption is asked for and possible (one log line if not)."""
        self.crypto_store = None
        if not self.settings.encryption:
            return
        why = encryption_available() or (None if self.settings.state_dir else "no state dir for its store")
        if why is not None:
            log.warning("matrix: end-to-end encryption is off: %s", why)
            return
        assert self.settings.state_dir is not None
        self.crypto_store = store_dir(self.settings.state_dir)
        self._pickle_key = pickle_key(self.crypto_store)
        self.keep_secret(self._pickle_key, loggers=("nio", "ngb"))

    def _make_client(self) -> Any:  # on the asyncio loop thread
        from nio import AsyncClient, AsyncClientConfig

        encrypted = self.crypto_store is not None
        config = AsyncClientConfig(encryption_enabled=encrypted, store_sync_tokens=False, max_timeouts=2,
                                   max_limit_exceeded=5, request_timeout=self.settings.request_timeout,
                                   pickle_key=self._pickle_key or "DEFAULT_KEY")
        client = AsyncClient(self.settings.homeserver, config=config,
                             store_path=str(self.crypto_store) if encrypted else "")
        client.access_token = self.token
        return client

    async def close(self) -> None:
        client, self.client = self.client, None
        await self.close_on_loop(client and client.close, "the client")

    async def _api(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A client call; an error answer raises (AuthError for a rejected token)."""
        from nio import ErrorResponse

        if self.client is None:
            raise ChannelError(f"matrix is {self.state}", retryable=True)
        answer = await self.bridge.call(getattr(self.client, method), *args, **kwargs)
        if isinstance(answer, ErrorResponse):
            if answer.status_code in AUTH_ERRORS and method in ("whoami", "sync", "login"):
                raise AuthError(f"{method}: {answer.status_code} {answer.message}")
            raise ConnectionError(f"{method}: {answer.status_code} {answer.message}")
        return answer

    async def session(self, submit: Submit) -> None:
        who = await self._whoami()
        self.me, self.device = who.user_id, who.device_id or ""
        if self.crypto_store is not None and self.client.olm is None:
            # the store of this account and device (made on the first start): needs who we are
            await self.bridge.call_sync(self.client.restore_login, self.me, self.device, self.token)
        self.client.user_id, self.client.device_id = self.me, self.device
        localpart = self.me[1:].partition(":")[0]
        if self.settings.display_name:
            await self._api("set_displayname", self.settings.display_name)
        profile = await self.bridge.call(self.client.get_displayname, self.me)
        display = getattr(profile, "displayname", None) or ""
        self.names = tuple(n for n in (display, localpart) if n)
        self.status.set(CONNECTED)
        log.info("matrix: connected as %s (device %s) on %s; end-to-end encryption %s", self.me, self.device,
                 self.settings.homeserver, "on" if self.crypto_store is not None else "off")
        first = True
        while True:
            await self._sync(submit, first=first)
            first = False

    async def _sync(self, submit: Submit, *, first: bool) -> None:
        """One /sync: its events stored, its invites answered, then its position kept."""
        timeline: dict[str, Any] = {"limit": 1 if self.since is None else self.settings.timeline_limit}
        sync_filter = {"room": {"timeline": timeline, "state": {"lazy_load_members": False}},
                       "presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}}
        answer = await self._api("sync", timeout=0 if first else int(self.settings.sync_timeout * 1000),
                                 sync_filter=sync_filter, since=self.since, full_state=first)
        self.syncs += 1
        if self.since is not None:
            for room_id, room in answer.rooms.join.items():
                events = list(room.timeline.events)
                if room.timeline.limited and room.timeline.prev_batch:
                    events = await self._older(room_id, room.timeline.prev_batch, self.since) + events
                for event in events:
                    await self._take(submit, room_id, event)
        for room_id, room in answer.rooms.invite.items():
            await self._invited(room_id, room.invite_state)
        self.since = answer.next_batch
        if self.memory is not None:
            await self.memory.set_channel_mark(PREFIX, SYNC_MARK, answer.next_batch)
        await self._keys()

    async def _keys(self) -> None:
        """The encryption's bookkeeping after a sync: our keys up, others' device keys fetched."""
        client = self.client
        if self.crypto_store is None or client is None or client.olm is None:
            return
        if client.should_upload_keys:
            await self._api("keys_upload")
        if client.should_query_keys:
            await self._api("keys_query")
        if client.should_claim_keys:
            await self._api("keys_claim", client.get_users_for_key_claiming())

    async def _older(self, room_id: str, start: str, until: str) -> list[Any]:
        """The events a limited sync left out: /messages back from ``start`` to ``until``, oldest first."""
        from nio import MessageDirection

        found: list[Any] = []
        token: str | None = start
        while token:
            page = await self._api("room_messages", room_id, start=token, end=until,
                                   direction=MessageDirection.back, limit=PAGE)
            found.extend(page.chunk)
            token = page.end if page.chunk and page.end != token else None
        self.fetched += len(found)
        log.info("matrix: caught up %d older events in %s", len(found), room_id)
        return found[::-1]

    async def _invited(self, room_id: str, state: list[Any]) -> None:
        inviter = next((e.sender for e in state if getattr(e, "state_key", None) == self.me
                        and getattr(e, "membership", None) == "invite"), None)
        if inviter is None or not self.settings.may_invite(inviter):
            log.info("matrix: ignoring the invite to %s from %s (not in invites_from)", room_id, inviter or "?")
            return
        try:
            await self._api("join", room_id)
            log.info("matrix: joined %s (invited by %s)", room_id, inviter)
        except ConnectionError as exc:
            log.warning("matrix: could not join %s: %s", room_id, exc)

    # -- inbound ----------------------------------------------------------------------------------
    async def _take(self, submit: Submit, room_id: str, event: Any) -> None:
        from nio import MegolmEvent, RoomEncryptedMedia, RoomMessageMedia, RoomMessageText

        if isinstance(event, MegolmEvent):  # encrypted, and no key to read it (yet)
            self.undecryptable += 1
            log.warning("matrix: cannot decrypt %s in %s from %s (%s): not answered", event.event_id, room_id,
                        event.sender, "encryption is off" if self.crypto_store is None else "no room key for it")
            return
        source = getattr(event, "source", None) or {}
        event_id = source.get("event_id") or getattr(event, "event_id", None)
        content = source.get("content") or {}
        if event_id:
            self._threads.put(event_id, relation_of(content).thread)
        kind = source.get("type")
        if kind == "m.room.redaction":
            self.note_redaction(getattr(event, "redacts", None) or content.get("redacts"))
            return
        if kind == "m.reaction" and event_id:
            await self.take_reaction(submit, room_id, event_id, event.sender, content, event.server_timestamp)
            return
        if not isinstance(event, RoomMessageText | RoomMessageMedia | RoomEncryptedMedia) or event.sender == self.me \
                or event_id is None:
            return
        if content.get("msgtype") == "m.notice" or isinstance((content.get("m.relates_to") or {}).get("rel_type"), str) \
                and content["m.relates_to"]["rel_type"] == "m.replace":
            return  # notices are bots' messages; an edit is not a new message
        inbound = await self.to_inbound(room_id, event_id, event.sender, content, event.server_timestamp)
        await self._gate.submit(submit, inbound)

    async def to_inbound(self, room_id: str, event_id: str, sender: str, content: dict[str, Any],
                         timestamp_ms: int) -> InboundMessage:
        relation = relation_of(content)
        room = (self.client.rooms if self.client is not None else {}).get(room_id)
        direct = room is not None and room.member_count == 2
        to_bot = relation.reply_to is not None and await self._is_bots(relation.reply_to)
        name = room.user_name(sender) if room is not None else None
        chat = matrix_chat(room_id)
        attachments, notes, caption = await self.take_file(chat, content)
        text = caption if attachments or notes else str(content.get("body") or "")
        return InboundMessage(
            chat=chat,
            sender=name or sender,
            text=with_notes(strip_reply_fallback(text) if relation.reply_to else text, notes),
            attachments=attachments,
            platform_id=event_id,
            time=datetime.fromtimestamp(timestamp_ms / 1000, UTC),
            sender_id=sender,
            mentions_bot=direct or to_bot or mentions({**content, "body": text}, self.me, self.names),
            reply_to=relation.reply_to,
            direct=direct,
            thread=relation.thread,
        )

    async def _is_bots(self, event_id: str) -> bool:
        if event_id in self._sent:
            return True
        if self.memory is None:
            return False
        try:
            return await self.memory.sent_by_bot(PREFIX, event_id)
        except Exception:  # noqa: BLE001 - unknown: not a trigger by itself
            return False

    # -- outbound ---------------------------------------------------------------------------------
    async def send(self, chat: str, text: str, reply_to: str | None = None, *,
                   idempotency_key: str | None = None) -> str | None:
        """Post ``text`` (split under PART_LIMIT) as a reply to the trigger, in its thread; the first
        part replies, the others follow in the thread (or the room)."""
        room_id = room_id_of(chat)
        trigger, thread = await self._reply_place(chat, reply_to)
        key = self._partial.key(chat, text, reply_to)
        ids = list(self._partial.done(key))
        parts = split_text(text, PART_LIMIT)
        for index in range(len(ids), len(parts)):
            content = text_content(parts[index])
            relates = reply_relation(trigger if index == 0 else None, thread)
            if relates is not None:
                content["m.relates_to"] = relates
            tx_id = f"{idempotency_key}.{index}" if idempotency_key else None
            ids.append(await self._send_event(room_id, content, tx_id))
            self._partial.record(key, ids[-1])
        self._partial.finish(key)
        return ids[0] if ids else None

    async def _send_event(self, room_id: str, content: dict[str, Any], tx_id: str | None,
                          event_type: str = "m.room.message") -> str:
        try:
            # encrypted rooms: to every device of the members, verified or not (matrix_crypto.py)
            answer = await self._api("room_send", room_id, event_type, content, tx_id=tx_id,
                                     ignore_unverified_devices=True)
        except ConnectionError as exc:
            retryable = "M_FORBIDDEN" not in str(exc) and "M_NOT_FOUND" not in str(exc)
            raise ChannelError(f"matrix: {exc}", retryable=retryable) from None
        except (OSError, trio.TooSlowError) as exc:
            raise ChannelError(f"matrix: {exc}", retryable=True) from None
        self._sent.put(answer.event_id, None)
        return str(answer.event_id)

    async def send_file(self, chat: str, file: OutgoingFile, reply_to: str | None = None, *,
                        idempotency_key: str | None = None) -> str | None:
        """Upload ``file`` (encrypted in an encrypted room) and post it as a reply to the trigger in
        its thread, the caption as its body; ``idempotency_key`` (the outbox row's) is the event's
        transaction id, so a retry whose first post reached the homeserver is not posted twice."""
        room_id = room_id_of(chat)
        if self.client is None:
            raise ChannelError(f"matrix is {self.state}", retryable=True)
        room = self.client.rooms.get(room_id)
        encrypted = room is not None and bool(room.encrypted)
        if encrypted and self.crypto_store is None:
            raise ChannelError("matrix: the room is encrypted and the channel's encryption is off", retryable=False)
        mxc, encryptor = await self.upload(file, encrypted=encrypted)
        content = file_content(file, mxc, encryptor)
        if file.caption.strip():
            content.update(format=HTML_FORMAT, formatted_body=markdown_to_matrix_html(file.caption.strip()))
        relates = reply_relation(*await self._reply_place(chat, reply_to))
        if relates is not None:
            content["m.relates_to"] = relates
        return await self._send_event(room_id, content, idempotency_key)

    async def _reply_place(self, chat: str, reply_to: str | None) -> tuple[str | None, str]:
        """Where a reply goes: the message it replies to (``reply_to``, else the chat's newest
        trigger) and the thread it goes into ("" = the room's timeline)."""
        trigger = reply_to or self._last_trigger.get(chat)
        return trigger, await self._thread_for(room_id_of(chat), trigger)

    async def _thread_for(self, room_id: str, trigger: str | None) -> str:
        """The thread a reply to ``trigger`` goes into ("" = the room's timeline)."""
        if not trigger:
            return ""
        thread = self._threads.get(trigger)
        if thread is None:
            try:
                answer = await self._api("room_get_event", room_id, trigger)
                thread = relation_of(answer.event.source.get("content") or {}).thread
            except Exception as exc:  # noqa: BLE001 - unknown: a plain reply will do
                log.debug("matrix: could not read %s: %s", trigger, exc)
                thread = ""
            self._threads.put(trigger, thread)
        if not thread and self.settings.reply_in_thread == "always":
            return trigger
        return str(thread)

    async def typing(self, chat: str) -> None:
        """"typing..." for a few seconds (best effort)."""
        if self.client is None:
            return
        try:
            await self._api("room_typing", room_id_of(chat), True, 8000)
        except Exception as exc:  # noqa: BLE001 - best effort
            log.debug("matrix: typing in %s failed: %s", chat, exc)

    def details(self) -> dict[str, Any]:
        return {"user": self.me or None, "device": self.device or None, "received": self.received,
                "syncs": self.syncs, "caught_up": self.fetched, "undecryptable": self.undecryptable}

    def status_details(self) -> dict[str, Any]:
        return {"encryption": self.crypto_store is not None}
