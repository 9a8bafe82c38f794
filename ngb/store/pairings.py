"""Direct messages from strangers waiting for the operator (ngb/pairing.py, docs/conversations.md):
one row per chat, keyed by its code."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

from ..records import Pairing, PairingState, format_time, utcnow
from .core import StoreCore
from .rows import pairing_from_row, pairing_to_row

MAX_LISTED = 500
FORGET_AFTER = timedelta(days=30)  # a code nobody approved is forgotten this long after it expired


class PairingsMixin(StoreCore):
    """The Store's pairings."""

    async def save_pairing(self, pairing: Pairing) -> None:
        """Insert or replace the chat's pairing (a chat has one: its newest code); codes that
        expired unapproved more than FORGET_AFTER ago go (strangers come and go)."""
        row = pairing_to_row(pairing)
        cols = list(row)

        def q(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM pairings WHERE state = 'pending' AND expires < ?",
                      (format_time(utcnow() - FORGET_AFTER),))
            c.execute("DELETE FROM pairings WHERE chat = ? OR code = ?", (pairing.chat, pairing.code))
            c.execute(f"INSERT INTO pairings ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                      tuple(row[k] for k in cols))

        await self.run(q)

    async def pairing_for_chat(self, chat: str) -> Pairing | None:
        rows = await self.select(pairing_from_row, "SELECT * FROM pairings WHERE chat = ?", (chat,))
        return rows[0] if rows else None

    async def pairing_by_code(self, code: str) -> Pairing | None:
        rows = await self.select(pairing_from_row, "SELECT * FROM pairings WHERE code = ?", (code,))
        return rows[0] if rows else None

    async def pairings(self, state: PairingState | None = None) -> list[Pairing]:
        """Newest first; one state's, or all."""
        if state is None:
            return await self.select(pairing_from_row, "SELECT * FROM pairings ORDER BY created DESC LIMIT ?",
                                     (MAX_LISTED,))
        return await self.select(pairing_from_row,
                                 "SELECT * FROM pairings WHERE state = ? ORDER BY created DESC LIMIT ?",
                                 (str(state), MAX_LISTED))
