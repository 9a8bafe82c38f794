"""Registered groups: the in-memory registry the router reads on every message, kept in step
with the store, and the group folders on disk."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import attrs

from .folders import validate_folder
from .hostperms import DEFAULT_AGENT_UID, share_dir, share_file
from .identity import invalid_sender_ids, normalise_sender_ids
from .records import Group
from .store import Store

log = logging.getLogger(__name__)

DEFAULT_MEMORY = """# {folder}

This file is this group's memory. The assistant reads it at the start of every conversation;
write down what it should remember about this group (people, preferences, ongoing work).
"""


class GroupRegistry:
    def __init__(self, store: Store, groups_dir: Path, global_dir: Path, *, agent_uid: int = DEFAULT_AGENT_UID) -> None:
        self.store = store
        self.agent_uid = agent_uid  # who owns the group folders (ngb/hostperms.py)
        self.groups_dir = groups_dir
        self.global_dir = global_dir
        self._by_chat: dict[str, Group] = {}
        self.on_added: list[Callable[[Group], None]] = []
        self.on_removed: list[Callable[[Group], None]] = []
        self.on_updated: list[Callable[[Group], None]] = []

    async def load(self) -> None:
        self._by_chat = {g.chat: g for g in await self.store.groups()}
        self.global_dir.mkdir(parents=True, exist_ok=True)
        for group in self._by_chat.values():
            self.ensure_folder(group.folder)
            for _entry, reason in invalid_sender_ids(group):
                log.error("group %s: %s; this entry matches nobody until it is replaced by an id", group.chat, reason)

    def get(self, chat: str) -> Group | None:
        return self._by_chat.get(chat)

    def folder_of(self, chat: str) -> str | None:
        """The folder of the chat's group, None for a chat nobody registered."""
        group = self._by_chat.get(chat)
        return None if group is None else group.folder

    def by_folder(self, folder: str) -> Group | None:
        for group in self._by_chat.values():
            if group.folder.lower() == folder.lower():
                return group
        return None

    def all(self) -> list[Group]:
        return list(self._by_chat.values())

    def main(self) -> Group | None:
        return next((g for g in self._by_chat.values() if g.is_main), None)

    def folder_path(self, folder: str) -> Path:
        validate_folder(folder)
        path = (self.groups_dir / folder).resolve()
        if path.parent != self.groups_dir.resolve():
            raise ValueError(f"folder {folder!r} escapes the groups directory")
        return path

    def ensure_folder(self, folder: str) -> Path:
        """Create the group's folder and its CLAUDE.md, opened to the agent's uid only. The agent can
        replace anything inside with a symlink, so nothing here follows one."""
        path = self.folder_path(folder)
        path.mkdir(parents=True, exist_ok=True)
        share_dir(path, self.agent_uid)
        memory = path / "CLAUDE.md"
        try:
            fd = os.open(memory, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            return path
        with os.fdopen(fd, "w") as fh:
            fh.write(DEFAULT_MEMORY.format(folder=folder))
            share_file(fh.fileno(), self.agent_uid)
        return path

    async def add(self, group: Group) -> Group:
        validate_folder(group.folder)
        if not group.chat or ":" not in group.chat:
            raise ValueError(f"chat {group.chat!r} must look like <channel>:<id>, e.g. local:family")
        group = attrs.evolve(group, allowed_senders=normalise_sender_ids(group.chat, group.allowed_senders))
        await self.store.add_group(group)
        self.ensure_folder(group.folder)
        if group.is_main:
            for chat, other in list(self._by_chat.items()):
                if other.is_main:
                    self._by_chat[chat] = attrs.evolve(other, is_main=False)
        self._by_chat[group.chat] = group
        log.info("group registered: %s -> folder %s%s", group.chat, group.folder, " (main)" if group.is_main else "")
        for callback in self.on_added:
            callback(group)
        return group

    async def update(self, group: Group) -> Group:
        """Store a registered group's new settings (same chat and folder) and use them at once: the
        router reads the registry on every message; ``on_updated`` tells the running actor."""
        await self.store.update_group(group)
        self._by_chat[group.chat] = group
        for callback in self.on_updated:
            callback(group)
        return group

    async def remove(self, chat: str) -> Group | None:
        group = await self.store.remove_group(chat)
        self._by_chat.pop(chat, None)
        if group is not None:
            log.info("group removed: %s (folder %s kept on disk)", chat, group.folder)
            for callback in self.on_removed:
                callback(group)
        return group

