"""Matrix's reactions (base.Reactions), mixed into MatrixChannel: the bot's own (``m.reaction``
annotations, taken off by redacting them) and people's as context.

Out: ``react`` sends an ``m.reaction`` whose ``m.relates_to`` is an ``m.annotation`` of the message
with the emoji as its key (any emoji: Matrix has no fixed set), encrypted in an encrypted room
(matrix-nio would send it in the clear: matrix_crypto.send_encrypted), and remembers the reaction's
event id; ``unreact`` redacts that event. A reaction this run does not remember (one made before a
restart) is found among the message's relations (``/relations``, the bot's annotations with that
key) and redacted all the same; putting on a reaction that is already on (the homeserver's
``M_DUPLICATE_ANNOTATION``) is success, its id learnt the same way. Else a restart mid-turn would
leave the 👀 on the message for good.

In: an ``m.reaction`` from someone other than the bot becomes one InboundMessage: its text the
emoji, ``reaction_to`` the message's event id, ``thread`` that message's thread as seen,
``platform_id`` ``react:<reaction event id>``. It goes through the inbound gate like a message and
never triggers (ngb/triggers.py); it is caught up after a restart like the messages around it (the
sync position moves only after both are stored). A redaction is not reported; one of the bot's own
messages is noted (``gone``: a live preview a person redacted is not edited any more)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..records import InboundMessage
from .base import ChannelError
from .matrix_crypto import send_encrypted
from .matrix_settings import matrix_chat, room_id_of

if TYPE_CHECKING:
    from .base import Submit
    from .common import InboundGate, Lru

log = logging.getLogger("ngb.channels.matrix")


async def reactions_of(client: Any, room_id: str, event_id: str, sender: str, key: str, scan: int = 500) -> list[str]:
    """On the asyncio loop: the ids of ``sender``'s ``m.annotation`` reactions ``key`` on the event
    (looked for among its newest ``scan`` annotations; an encrypted reaction keeps its
    ``m.relates_to`` outside the ciphertext, so it is found too)."""
    found: list[str] = []
    seen = 0
    # every relation, filtered here (asked for m.annotation alone, Synapse 1.163 answered none)
    async for event in client.room_get_event_relations(room_id, event_id, limit=100):
        source = getattr(event, "source", None) or {}
        relates = (source.get("content") or {}).get("m.relates_to") or {}
        if source.get("sender") == sender and relates.get("rel_type") == "m.annotation" \
                and relates.get("key") == key and source.get("event_id"):
            found.append(str(source["event_id"]))
        seen += 1
        if seen >= scan:
            break
    return found


class MatrixReactions:
    """The reactions half of MatrixChannel (a mixin: it shares the channel's client and gate)."""

    me: str
    client: Any
    bridge: Any
    _gate: InboundGate
    _threads: Lru  # event id -> its thread's root
    _sent: Lru  # the bot's own event ids
    gone: Lru  # the bot's own event ids that were redacted
    reactions: Lru  # "<message event id> <emoji>" -> the bot's reaction event id

    async def _api(self, method: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    async def _send_event(self, room_id: str, content: dict[str, Any], tx_id: str | None,
                          event_type: str = "m.room.message") -> str:
        raise NotImplementedError

    # -- out -------------------------------------------------------------------------------------------
    async def react(self, chat: str, platform_id: str, emoji: str) -> None:
        if not platform_id.startswith("$"):
            raise ChannelError(f"matrix: {platform_id} is not an event id", retryable=False)
        key = f"{platform_id} {emoji}"
        if key in self.reactions:
            return  # on already
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": platform_id, "key": emoji}}
        room_id = room_id_of(chat)
        room = (self.client.rooms if self.client is not None else {}).get(room_id)
        if room is None or not room.encrypted:
            try:
                self.reactions.put(key, await self._send_event(room_id, content, None, "m.reaction"))
            except ChannelError as exc:
                if "M_DUPLICATE_ANNOTATION" not in str(exc):
                    raise
                found = await self._bots_reactions(room_id, platform_id, emoji)  # on already (an earlier run's)
                if found:
                    self.reactions.put(key, found[0])
            return
        if self.client.olm is None:
            raise ChannelError("matrix: the room is encrypted and the channel's encryption is off", retryable=False)
        try:
            sent = await self.bridge.call(send_encrypted, self.client, room_id, "m.reaction", content)
        except ConnectionError as exc:
            raise ChannelError(f"matrix: {exc}", retryable="M_FORBIDDEN" not in str(exc)) from None
        except (OSError, TimeoutError) as exc:
            raise ChannelError(f"matrix: {type(exc).__name__}: {exc}", retryable=True) from None
        self.reactions.put(key, sent)

    async def unreact(self, chat: str, platform_id: str, emoji: str) -> None:
        room_id = room_id_of(chat)
        known = self.reactions.get(f"{platform_id} {emoji}")
        reactions = [known] if known is not None else await self._bots_reactions(room_id, platform_id, emoji)
        for reaction in reactions:
            try:
                await self._api("room_redact", room_id, reaction)
            except ConnectionError as exc:
                raise ChannelError(f"matrix: taking {emoji} off {platform_id}: {exc}",
                                   retryable="M_FORBIDDEN" not in str(exc)) from None
        self.reactions.pop(f"{platform_id} {emoji}", None)

    async def _bots_reactions(self, room_id: str, platform_id: str, emoji: str) -> list[str]:
        """The bot's reactions ``emoji`` on the message, as its relations list them (none when the
        homeserver cannot say: one log line)."""
        if self.client is None:
            return []
        try:
            return await self.bridge.call(reactions_of, self.client, room_id, platform_id, self.me, emoji)
        except Exception as exc:  # noqa: BLE001 - best effort, as every reaction
            log.info("matrix: could not list the reactions on %s: %s", platform_id, exc)
            return []

    # -- in --------------------------------------------------------------------------------------------
    def note_redaction(self, redacts: str | None) -> None:
        """A redaction in a room: the bot's own message redacted is noted as gone."""
        if redacts and redacts in self._sent:
            self.gone.put(redacts, None)

    async def take_reaction(self, submit: Submit, room_id: str, event_id: str, sender: str,
                            content: dict[str, Any], timestamp_ms: int) -> None:
        """An ``m.reaction`` event -> the router (stored when this returns), or nothing."""
        relates = content.get("m.relates_to") or {}
        if not isinstance(relates, dict) or relates.get("rel_type") != "m.annotation":
            return
        target, emoji = relates.get("event_id"), relates.get("key")
        if sender == self.me or not isinstance(target, str) or not isinstance(emoji, str) or not emoji.strip():
            return
        room = (self.client.rooms if self.client is not None else {}).get(room_id)
        inbound = InboundMessage(
            chat=matrix_chat(room_id),
            sender=(room.user_name(sender) if room is not None else None) or sender,
            text=emoji[:64],
            platform_id=f"react:{event_id}",
            time=datetime.fromtimestamp(timestamp_ms / 1000, UTC),
            sender_id=sender,
            thread=str(self._threads.get(target) or ""),
            reaction_to=target,
        )
        await self._gate.submit(submit, inbound, triggered=False)
