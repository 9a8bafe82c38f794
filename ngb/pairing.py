"""DM pairing (docs/conversations.md): what a direct message from a chat nobody registered gets.

Per channel (``dm_policy``, ``dm_policies``):

* ``pairing`` (default): the chat gets a short reply with a code, at most once per
  ``pairing_code_ttl`` (a day); the operator approves it (``ngb pair approve CODE``, the API, the
  dashboard), which registers the chat as its own group (folder ``dm-<channel>-<id>``, no trigger
  needed, its sender on the allow-list) and tells the chat; or denies it. A code expires after
  ``pairing_code_ttl``; the next DM then gets a new one. Wrong codes are rate limited.
* ``open``: the chat is registered at once, the same way, and its message answered.
* ``closed``: nothing; the message is stored within the unregistered quota like any other.

The router asks before it stores the message (so a chat registered at once has it after its
cursor and answers it) and stores it either way, so an approved chat's first words are in its
history."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import attrs

from .folders import validate_folder
from .groups import GroupRegistry
from .identity import SenderIdError
from .records import DmPolicy, Group, InboundMessage, Pairing, PairingState, channel_of, utcnow
from .store import Store
from .triggers import RateLimiter

log = logging.getLogger(__name__)

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed
CODE_LENGTH = 8
WRONG_CODES_PER_MINUTE = 10


class PairingError(ValueError):
    """A code that cannot be approved or denied; the message says why, in one line."""


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def shown(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def normalize_code(text: str) -> str:
    """What a user typed (any case, with or without the dash or spaces) as a stored code."""
    code = re.sub(r"[\s-]", "", text).upper()
    if len(code) != CODE_LENGTH or any(ch not in ALPHABET for ch in code):
        raise PairingError(f"{text[:40]!r} is not a pairing code (8 letters and digits, like ABCD-EFGH)")
    return code


def dm_folder(chat: str, taken: Callable[[str], bool]) -> str:
    """A folder for a DM chat: dm-<channel>-<its id, made safe>, numbered when taken."""
    channel, _, ident = chat.partition(":")
    slug = re.sub(r"[^a-z0-9]+", "-", ident.lower()).strip("-")[:40] or "chat"
    base = f"dm-{channel}-{slug}"[:56].rstrip("-")
    name, n = base, 2
    while taken(name):
        name, n = f"{base}-{n}", n + 1
    validate_folder(name)
    return name


@attrs.define
class Pairings:
    store: Store
    registry: GroupRegistry
    notify: Callable[[str, str], None]  # (chat, text): a message to a chat, through the outbox
    config: Any
    now: Callable[[], datetime] = utcnow
    wrong_codes: RateLimiter = attrs.Factory(lambda: RateLimiter(WRONG_CODES_PER_MINUTE, window=60.0))

    def policy(self, chat: str) -> DmPolicy:
        channel = channel_of(chat)
        return DmPolicy(self.config.dm_policies.get(channel, self.config.dm_policy))

    async def direct_message(self, inbound: InboundMessage) -> bool:
        """A direct message from a chat nobody registered, about to be stored: True when the chat
        is now registered (``open``) and the message is to be routed as its group's."""
        policy = self.policy(inbound.chat)
        if policy is DmPolicy.CLOSED:
            return False
        if policy is DmPolicy.OPEN:
            group = await self._register(inbound.chat, inbound.sender_id)
            log.info("pairing: %s registered at once (dm_policy open) as %s", inbound.chat, group.folder)
            return True
        await self._offer(inbound)
        return False

    async def _offer(self, inbound: InboundMessage) -> None:
        now = self.now()
        ttl = timedelta(seconds=self.config.pairing_code_ttl)
        current = await self.store.pairing_for_chat(inbound.chat)
        if current is not None and current.state is PairingState.DENIED:
            return  # the operator said no: silence (ngb pair list shows it; approve still works)
        if current is not None and current.state is PairingState.PENDING and current.expires > now:
            if current.notified is not None and now - current.notified < ttl:
                return  # told already today
            pairing = attrs.evolve(current, notified=now)
        else:
            pairing = Pairing(code=new_code(), chat=inbound.chat, sender=inbound.sender, sender_id=inbound.sender_id,
                              created=now, expires=now + ttl, notified=now)
        await self.store.save_pairing(pairing)
        log.info("pairing: %s (%s, id %s) asked to talk; code %s (ngb pair approve %s)", inbound.chat,
                 inbound.sender, inbound.sender_id or "-", shown(pairing.code), shown(pairing.code))
        hours = max(1, round(self.config.pairing_code_ttl / 3600))
        self.notify(inbound.chat, (
            "Hi! I'm a private assistant and I don't know this chat yet. To talk to me, ask my operator "
            f"to approve the code {shown(pairing.code)} (valid {hours} h)."
        ))

    async def approve(self, code_text: str) -> Group:
        pairing = await self._find(code_text)
        group = await self._register(pairing.chat, pairing.sender_id)
        await self.store.save_pairing(attrs.evolve(pairing, state=PairingState.APPROVED, folder=group.folder))
        log.info("pairing: %s approved as group %s", pairing.chat, group.folder)
        self.notify(pairing.chat, "You're connected: write me anything.")
        return group

    async def deny(self, code_text: str) -> Pairing:
        pairing = await self._find(code_text)
        denied = attrs.evolve(pairing, state=PairingState.DENIED)
        await self.store.save_pairing(denied)
        log.info("pairing: %s denied", pairing.chat)
        return denied

    async def listed(self, everything: bool = False) -> list[Pairing]:
        """The codes waiting, newest first (``everything``: approved and denied ones too)."""
        return await self.store.pairings(None if everything else PairingState.PENDING)

    async def _find(self, code_text: str) -> Pairing:
        if not self.wrong_codes.allow("*"):
            raise PairingError("too many wrong pairing codes in the last minute; wait a minute")
        code = normalize_code(code_text)
        pairing = await self.store.pairing_by_code(code)
        if pairing is None:
            raise PairingError(f"no pairing has the code {shown(code)}")
        self.wrong_codes = RateLimiter(WRONG_CODES_PER_MINUTE, window=60.0)  # a right one: the count starts again
        if pairing.state is not PairingState.PENDING:
            raise PairingError(f"the code {shown(code)} was {pairing.state} already ({pairing.chat})")
        if pairing.expires <= self.now():
            raise PairingError(f"the code {shown(code)} expired at {pairing.expires:%Y-%m-%d %H:%M} UTC; "
                               "the chat gets a new one with its next message")
        return pairing

    async def _register(self, chat: str, sender_id: str) -> Group:
        existing = self.registry.get(chat)
        if existing is not None:
            return existing
        folder = dm_folder(chat, lambda name: self.registry.by_folder(name) is not None)
        group = Group(chat=chat, folder=folder, requires_trigger=False, allowed_senders=(sender_id,) if sender_id else ())
        try:
            return await self.registry.add(group)
        except SenderIdError as exc:  # a DM is one person's chat anyway: registered without the list
            log.warning("pairing: %s registered without an allow-list (%s)", chat, exc)
            return await self.registry.add(attrs.evolve(group, allowed_senders=()))
