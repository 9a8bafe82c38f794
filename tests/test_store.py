"""The store package (ngb/store/): the methods other layers use in place of their own SQL."""

from __future__ import annotations

from pathlib import Path

from ngb.records import Group
from ngb.store import Store


async def test_group_folders_and_group_exists_name_the_registered_groups(tmp_path: Path) -> None:
    store = Store(tmp_path / "ngb.db")
    await store.open()
    try:
        assert await store.group_folders() == set()
        assert not await store.group_exists("family")
        await store.add_group(Group(chat="local:family", folder="family"))
        await store.add_group(Group(chat="telegram:-100", folder="ops"))
        assert await store.group_folders() == {"family", "ops"}
        assert await store.group_exists("family")
        assert await store.group_exists("FAMILY"), "folders compare without case, as the groups table does"
        assert not await store.group_exists("other")
        await store.remove_group("local:family")
        assert await store.group_folders() == {"ops"}
        assert not await store.group_exists("family")
    finally:
        await store.close()


async def test_sessions_lists_every_stored_session_by_folder(tmp_path: Path) -> None:
    store = Store(tmp_path / "ngb.db")
    await store.open()
    try:
        await store.set_session("b", "s-2")
        await store.set_session("a", "s-1")
        rows = await store.sessions()
        assert [(r.folder, r.session_id) for r in rows] == [("a", "s-1"), ("b", "s-2")]
        assert all(r.updated_at for r in rows)
        await store.ping()  # /healthz's probe answers on an open store
    finally:
        await store.close()
