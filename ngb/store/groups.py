"""The registered groups (chat -> folder, trigger, allow-list, mounts, limits) and what the daemon
keeps per group besides its messages: the agent's session id."""

from __future__ import annotations

import sqlite3

import attrs

from ..records import Group, channel_of, format_time, utcnow
from .core import StoreCore
from .rows import group_from_row, group_to_row


@attrs.frozen
class StoredSession:
    """A group's agent session as stored (updated_at: the stored ISO text, as /api/sessions shows it)."""

    folder: str
    session_id: str
    updated_at: str


class GroupsMixin(StoreCore):
    """The Store's groups and sessions."""

    async def groups(self) -> list[Group]:
        return await self.run(
            lambda c: [group_from_row(dict(r)) for r in c.execute("SELECT * FROM groups ORDER BY added_at")]
        )

    async def group(self, chat: str) -> Group | None:
        def q(c: sqlite3.Connection) -> Group | None:
            row = c.execute("SELECT * FROM groups WHERE chat = ?", (chat,)).fetchone()
            return group_from_row(dict(row)) if row else None

        return await self.run(q)

    async def add_group(self, group: Group) -> None:
        """Register a chat. Raises ValueError when the chat or folder is taken."""

        def q(c: sqlite3.Connection) -> None:
            if c.execute("SELECT 1 FROM groups WHERE chat = ?", (group.chat,)).fetchone():
                raise ValueError(f"chat {group.chat} is already registered")
            if c.execute("SELECT 1 FROM groups WHERE folder = ?", (group.folder,)).fetchone():
                raise ValueError(f"folder {group.folder!r} is already used by another group")
            if group.is_main:
                c.execute("UPDATE groups SET is_main = 0")
            row = group_to_row(group)
            cols = ", ".join(row)
            c.execute(
                f"INSERT INTO groups ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
            )
            # The agent answers what arrives from now on, not the chat's whole past.
            last = c.execute(
                "SELECT COALESCE(MAX(id), 0) FROM messages WHERE chat = ?", (group.chat,)
            ).fetchone()[0]
            c.execute(
                "INSERT INTO cursors (folder, last_message_id) VALUES (?, ?)"
                " ON CONFLICT(folder) DO UPDATE SET last_message_id = excluded.last_message_id",
                (group.folder, last),
            )
            c.execute(
                "INSERT INTO chats (chat, channel) VALUES (?, ?) ON CONFLICT(chat) DO NOTHING",
                (group.chat, channel_of(group.chat)),
            )

        await self.run(q)

    async def update_group(self, group: Group) -> None:
        def q(c: sqlite3.Connection) -> None:
            row = group_to_row(group)
            sets = ", ".join(f"{k} = ?" for k in row if k != "chat")
            c.execute(
                f"UPDATE groups SET {sets} WHERE chat = ?",
                (*[v for k, v in row.items() if k != "chat"], group.chat),
            )

        await self.run(q)

    async def group_folders(self) -> set[str]:
        """The folders of every registered group."""
        return await self.run(lambda c: {str(r[0]) for r in c.execute("SELECT folder FROM groups")})

    async def group_exists(self, folder: str) -> bool:
        """Whether a registered group has this folder (folders compare without case)."""

        def q(c: sqlite3.Connection) -> bool:
            return c.execute("SELECT 1 FROM groups WHERE folder = ?", (folder,)).fetchone() is not None

        return await self.run(q)

    async def remove_group(self, chat: str) -> Group | None:
        def q(c: sqlite3.Connection) -> Group | None:
            row = c.execute("SELECT * FROM groups WHERE chat = ?", (chat,)).fetchone()
            if row is None:
                return None
            c.execute("DELETE FROM groups WHERE chat = ?", (chat,))
            return group_from_row(dict(row))

        return await self.run(q)

    # -- sessions --------------------------------------------------------------------------
    async def chat_registered(self, chat: str) -> bool:
        """Whether a group is registered for this chat (a channel asks: a Discord thread of a
        registered channel joins that channel's group unless it is registered itself)."""
        return await self.run(lambda c: c.execute("SELECT 1 FROM groups WHERE chat = ?", (chat,)).fetchone() is not None)

    async def session_id(self, folder: str) -> str | None:
        def q(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT session_id FROM sessions WHERE folder = ?", (folder,)).fetchone()
            return str(row[0]) if row else None

        return await self.run(q)

    async def set_session(self, folder: str, session_id: str | None) -> None:
        def q(c: sqlite3.Connection) -> None:
            if session_id is None:
                c.execute("DELETE FROM sessions WHERE folder = ?", (folder,))
            else:
                c.execute(
                    "INSERT INTO sessions (folder, session_id, updated_at) VALUES (?, ?, ?) ON CONFLICT(folder)"
                    " DO UPDATE SET session_id = excluded.session_id, updated_at = excluded.updated_at",
                    (folder, session_id, format_time(utcnow())),
                )

        await self.run(q)

    async def sessions(self) -> list[StoredSession]:
        """Every stored session, by folder."""

        def q(c: sqlite3.Connection) -> list[StoredSession]:
            rows = c.execute("SELECT folder, session_id, updated_at FROM sessions ORDER BY folder")
            return [StoredSession(str(r[0]), str(r[1]), str(r[2])) for r in rows]

        return await self.run(q)
