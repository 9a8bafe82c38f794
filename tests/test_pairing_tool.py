"""The main group's agent sees and decides strangers' pairing codes (docs/conversations.md,
ngb/sandbox/tools.py list_pairings / approve_pairing / deny_pairing): through the same
ngb.pairing.Pairings as the CLI and the API, authorized on the host (main group only), a wrong or
used code refused with Pairings' one line. With a real Store and GroupRegistry, no daemon."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from ngb.config import load_config
from ngb.groups import GroupRegistry
from ngb.pairing import Pairings
from ngb.records import Group, InboundMessage
from ngb.sandbox.tools import Refused, ToolContext, ToolService
from ngb.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from ngb_agent import host_tools  # noqa: E402

STRANGER = "telegram:5150"


@attrs.define
class Desk:
    store: Store
    registry: GroupRegistry
    pairings: Pairings
    tools: ToolService
    main: Group
    other: Group
    notices: list[int]  # [notices queued through the nursery and not yet in the outbox]

    async def dm(self, chat: str = STRANGER, sender: str = "Zoe", sender_id: str = "5150") -> str:
        """A stranger writes the bot: the code it got, as shown."""
        assert await self.pairings.direct_message(InboundMessage(
            chat=chat, sender=sender, sender_id=sender_id, text="hi", platform_id="m1", direct=True)) is False
        pairing = await self.store.pairing_for_chat(chat)
        assert pairing is not None
        return f"{pairing.code[:4]}-{pairing.code[4:]}"

    async def refused(self, caller: Group, tool: str, args: dict[str, Any]) -> str:
        with pytest.raises(Refused) as info:
            await self.tools.call(caller, tool, args)
        return str(info.value)

    async def queued(self, chat: str) -> list[str]:
        with trio.fail_after(5):
            while self.notices[0]:  # the notices go to the outbox from the nursery, as the daemon's
                await trio.sleep(0.01)
        return [item.text for item in await self.store.outbox_items(chat)]


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[Desk]:
    config = load_config(env={"NGB_STATE_DIR": str(tmp_path / "state")})
    store = Store(tmp_path / "ngb.db")
    await store.open()
    registry = GroupRegistry(store, tmp_path / "groups", tmp_path / "global")
    await registry.load()
    main = await registry.add(Group(chat="local:main", folder="main", is_main=True))
    other = await registry.add(Group(chat="local:other", folder="other"))
    notices = [0]

    async def queue(chat: str, text: str) -> None:
        await store.queue_message("", chat, text)
        notices[0] -= 1

    try:
        async with trio.open_nursery() as nursery:
            def notify(chat: str, text: str) -> None:  # as the daemon's: through the outbox
                notices[0] += 1
                nursery.start_soon(queue, chat, text)

            pairings = Pairings(store, registry, notify=notify, config=config)
            tools = ToolService(ToolContext(store, registry, lambda: None, "@Andy", pairings=pairings))
            yield Desk(store, registry, pairings, tools, main, other, notices)
            nursery.cancel_scope.cancel()
    finally:
        await store.close()


async def test_main_lists_and_approves_a_code_and_the_chat_is_welcomed(desk: Desk) -> None:
    code = await desk.dm()
    assert (await desk.queued(STRANGER))[0].startswith("Hi! I'm a private assistant")

    listed = (await desk.tools.call(desk.main, "list_pairings", {}))["pairings"]
    assert len(listed) == 1
    [row] = listed
    assert (row["code"], row["chat"], row["sender"], row["sender_id"]) == (code, STRANGER, "Zoe", "5150")
    assert row["state"] == "pending" and row["expired"] is False
    assert row["created"].endswith("+00:00") and row["expires"] > row["created"]  # ISO, UTC

    answer = await desk.tools.call(desk.main, "approve_pairing", {"code": code.lower().replace("-", " ")})
    assert answer == {"chat": STRANGER, "folder": "dm-telegram-5150"}
    group = desk.registry.get(STRANGER)
    assert group is not None and (group.folder, group.requires_trigger, group.allowed_senders) == (
        "dm-telegram-5150", False, ("5150",))
    assert (await desk.queued(STRANGER))[-1] == "You're connected: write me anything."

    assert await desk.refused(desk.main, "approve_pairing", {"code": code}) == (
        f"the code {code} was approved already ({STRANGER})")
    assert (await desk.tools.call(desk.main, "list_pairings", {}))["pairings"] == []  # nothing waits
    [done] = (await desk.tools.call(desk.main, "list_pairings", {"all": True}))["pairings"]
    assert (done["code"], done["state"], done["folder"]) == (code, "approved", "dm-telegram-5150")


async def test_a_non_main_group_may_not_see_or_decide_codes(desk: Desk) -> None:
    code = await desk.dm()
    for tool, args, what in (("list_pairings", {}, "list pairing codes"),
                             ("approve_pairing", {"code": code}, "approve pairing codes"),
                             ("deny_pairing", {"code": code}, "deny pairing codes")):
        assert await desk.refused(desk.other, tool, args) == f"only the main group may {what}"
    assert desk.registry.get(STRANGER) is None
    pairing = await desk.store.pairing_for_chat(STRANGER)
    assert pairing is not None and str(pairing.state) == "pending"
    assert len(await desk.queued(STRANGER)) == 1  # the code's reply only: no welcome


async def test_wrong_codes_and_bad_args_are_refused_with_one_line(desk: Desk) -> None:
    await desk.dm()
    assert await desk.refused(desk.main, "approve_pairing", {"code": "WRNG-KEYS"}) == (
        "no pairing has the code WRNG-KEYS")
    assert "is not a pairing code" in await desk.refused(desk.main, "deny_pairing", {"code": "hello"})
    assert await desk.refused(desk.main, "approve_pairing", {}) == "missing 'code'"
    assert await desk.refused(desk.main, "approve_pairing", {"code": 12345678}) == "'code' must be a string"
    assert await desk.refused(desk.main, "list_pairings", {"all": "yes"}) == "'all' must be true or false"
    assert desk.registry.get(STRANGER) is None


async def test_deny_keeps_the_chat_out(desk: Desk) -> None:
    code = await desk.dm()
    assert await desk.tools.call(desk.main, "deny_pairing", {"code": code}) == {"chat": STRANGER, "state": "denied"}
    assert desk.registry.get(STRANGER) is None
    assert await desk.refused(desk.main, "approve_pairing", {"code": code}) == (
        f"the code {code} was denied already ({STRANGER})")
    [row] = (await desk.tools.call(desk.main, "list_pairings", {"all": True}))["pairings"]
    assert row["state"] == "denied"


async def test_without_pairings_the_tools_refuse(desk: Desk) -> None:
    tools = ToolService(attrs.evolve(desk.tools.ctx, pairings=None))
    for tool, args in (("list_pairings", {}), ("approve_pairing", {"code": "ABCD-EFGH"}),
                       ("deny_pairing", {"code": "ABCD-EFGH"})):
        with pytest.raises(Refused, match="pairing is not available"):
            await tools.call(desk.main, tool, args)


def test_the_runner_offers_the_pairing_tools_to_the_main_group_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import claude_agent_sdk

    monkeypatch.setattr(claude_agent_sdk, "create_sdk_mcp_server", lambda name, version, tools: tools)
    names: dict[bool, list[str]] = {True: [], False: []}
    for is_main in names:
        names[is_main] = [t.name for t in host_tools.build_mcp_server(None, is_main)]
    pairing_tools = ["list_pairings", "approve_pairing", "deny_pairing"]
    assert all(name in names[True] for name in pairing_tools), names[True]
    assert not any(name in names[False] for name in pairing_tools), names[False]
    # every built-in tool the runner offers has a handler on the host
    assert all(hasattr(ToolService, f"_tool_{name}") for name in names[True])
