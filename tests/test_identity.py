"""Who a sender is: allow-lists match the platform's user id, never a display name; senders not on
the list never reach the prompt (unless the group lets them in, marked); an allow-list takes ids
only; unregistered chats cannot grow the database without bound."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from ngb.identity import SenderIdError, normalise_sender_id, normalise_sender_ids
from ngb.records import Group, InboundMessage
from tests.conftest import Running

TG = "telegram:-1001234"


def tg(text: str, *, sender: str, sender_id: str, n: int) -> InboundMessage:
    """A message as the Telegram channel builds it: sender = full name, sender_id = from_user.id."""
    return InboundMessage(chat=TG, sender=sender, text=text, platform_id=f"{n}", sender_id=sender_id)


async def wait_prompts(d: Running, count: int) -> list[str]:
    with trio.fail_after(10):
        while len(d.launcher.prompts) < count:
            await trio.sleep(0.02)
    return [p[2] for p in d.launcher.prompts]


@pytest.mark.parametrize(
    ("chat", "entry", "expected"),
    [
        ("telegram:1", "123456789", "123456789"),
        ("discord:1", "80351110224678912", "80351110224678912"),
        ("slack:C1", "U0123ABCD", "U0123ABCD"),
        ("whatsapp:1@g.us", "+491701234567", "491701234567@s.whatsapp.net"),
        ("whatsapp:1@g.us", "491701234567@lid", "491701234567@lid"),
        ("qq:group:1", "10001", "10001"),
        ("lark:oc_1", "ou_7d8a6e6df7621556ce0d21922b676706", "ou_7d8a6e6df7621556ce0d21922b676706"),
        ("local:family", "Bob Smith", "Bob Smith"),  # the local chat has no accounts: names are its ids
    ],
)
def test_allow_list_entries_are_platform_ids(chat: str, entry: str, expected: str) -> None:
    assert normalise_sender_id(chat, entry) == expected


@pytest.mark.parametrize(
    ("chat", "entry"),
    [
        ("telegram:1", "Alice"),
        ("telegram:1", "@alice"),
        ("discord:1", "alice#1234"),
        ("slack:C1", "alice"),
        ("whatsapp:1@g.us", "Alice"),
        ("qq:group:1", "小明"),
        ("lark:oc_1", "Alice Wang"),
        ("dingtalk:cid1", "张三"),
        ("wecom:chat1", "Zhang San"),
        ("telegram:1", "  "),
    ],
)
def test_a_name_is_refused_as_an_allow_list_entry(chat: str, entry: str) -> None:
    with pytest.raises(SenderIdError) as err:
        normalise_sender_ids(chat, ["123456789", entry] if chat.startswith("telegram") else [entry])
    assert "user id" in str(err.value) or "empty" in str(err.value)


async def test_display_name_spoof_does_not_pass_the_allow_list(run_daemon) -> None:
    d = await run_daemon(NGB_IDLE_TIMEOUT="5")
    await d.daemon.registry.add(Group(chat=TG, folder="team", allowed_senders=("111",)))
    # Mallory (id 999) names herself after the allowed user's id, then after her name: neither wakes.
    await d.daemon.router.handle(tg("@Andy do as I say (spoof by id)", sender="111", sender_id="999", n=1))
    await d.daemon.router.handle(tg("@Andy do as I say (spoof by name)", sender="Alice", sender_id="999", n=2))
    # The real Alice (id 111) wakes the agent; her message is the first prompt the agent sees.
    await d.daemon.router.handle(tg("@Andy hello from alice", sender="Alice", sender_id="111", n=3))
    prompts = await wait_prompts(d, 1)
    assert d.launcher.started == 1 and len(prompts) == 1
    # Row 2: the strangers' text did not ride along into the prompt with the allowed sender's.
    assert "hello from alice" in prompts[0]
    assert "do as I say" not in prompts[0]
    metrics = (await d.http.get("/metrics")).text
    assert 'ngb_messages_routed_total{outcome="context"} 2.0' in metrics


async def test_unlisted_senders_as_marked_context_when_the_group_allows(run_daemon) -> None:
    d = await run_daemon(NGB_IDLE_TIMEOUT="5")
    await d.daemon.registry.add(Group(chat=TG, folder="team", allowed_senders=("111",), unlisted_context=True))
    await d.daemon.router.handle(tg("the meeting moved to 3pm", sender="Bob", sender_id="222", n=1))
    await d.daemon.router.handle(tg("@Andy what did Bob say?", sender="Alice", sender_id="111", n=2))
    prompts = await wait_prompts(d, 1)
    lines = {line for line in prompts[0].splitlines() if "<message " in line}
    assert any('sender="Bob" unlisted="true"' in line and "moved to 3pm" in line for line in lines)
    assert any('sender="Alice" time=' in line and "what did Bob say" in line for line in lines)


async def test_api_refuses_a_name_in_an_allow_list_and_lists_senders(run_daemon) -> None:
    d = await run_daemon()
    r = await d.http.post("/api/groups", json={"chat": TG, "folder": "team", "allowed_senders": ["Alice"]})
    assert r.status_code == 400 and "not a numeric Telegram user id" in r.json()["error"]
    assert d.daemon.registry.get(TG) is None
    r = await d.http.post("/api/groups", json={"chat": TG, "folder": "team", "allowed_senders": ["111"]})
    assert r.status_code == 201, r.text
    r = await d.http.patch(f"/api/groups/{TG}", json={"allowed_senders": ["111", "Bob"]})
    assert r.status_code == 400 and d.daemon.registry.get(TG).allowed_senders == ("111",)
    await d.daemon.router.handle(tg("hi", sender="Bob", sender_id="222", n=1))
    await d.daemon.router.handle(tg("hello", sender="Alice", sender_id="111", n=2))
    await d.daemon.router.handle(tg("me again", sender="Bobby", sender_id="222", n=3))
    r = await d.http.get("/api/senders", params={"chat": TG})
    assert r.status_code == 200, r.text
    rows = [(s["sender_id"], s["name"], s["messages"], s["allowed"]) for s in r.json()]
    assert rows == [("222", "Bobby", 2, False), ("111", "Alice", 1, True)]


async def test_stored_name_entries_are_named_at_start_and_match_nobody(run_daemon, tmp_path: Path, caplog) -> None:
    d = await run_daemon()
    # An allow-list written before names were refused (as older versions stored them).
    old = Group(chat=TG, folder="team", allowed_senders=("Alice",))
    await d.daemon.store.add_group(old)
    await d.daemon.registry.load()
    assert any("'Alice' is not a numeric Telegram user id" in r.getMessage() for r in caplog.records)
    await d.daemon.router.handle(tg("@Andy hi", sender="Alice", sender_id="999", n=1))
    assert (await d.daemon.store.pending_input("team", TG))  # stored, and not triggered: the name matches nobody
    metrics = (await d.http.get("/metrics")).text
    assert 'ngb_messages_routed_total{outcome="context"} 1.0' in metrics


def test_cli_groups_senders_and_allow(tmp_path: Path) -> None:
    env = {"NGB_STATE_DIR": str(tmp_path / "state"), "NGB_WEB_PORT": "1", "PATH": "/usr/bin:/bin"}

    def ngb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ngb", *args], env=env, capture_output=True, text=True, timeout=60)

    r = ngb("groups", "add", TG, "--folder", "team", "--allow", "Alice")
    assert r.returncode != 0 and "not a numeric Telegram user id" in r.stderr + r.stdout
    assert ngb("groups", "add", TG, "--folder", "team", "--allow", "111").returncode == 0
    from ngb.store import Store

    async def seed() -> None:
        store = Store(tmp_path / "state" / "ngb.db")
        await store.open()
        await store.ingest(tg("hi", sender="Bob", sender_id="222", n=1))
        await store.close()

    trio.run(seed)
    r = ngb("groups", "senders", TG, "--json")
    assert r.returncode == 0, r.stderr
    assert [(s["sender_id"], s["name"], s["allowed"]) for s in json.loads(r.stdout)] == [("222", "Bob", False)]
    r = ngb("groups", "allow", TG, "222")
    assert r.returncode == 0 and "111, 222" in r.stdout
    r = ngb("groups", "disallow", TG, "111", "222")
    assert r.returncode == 0 and "everyone" in r.stdout


async def test_flood_from_unregistered_chats_leaves_the_db_bounded(run_daemon) -> None:
    d = await run_daemon(
        NGB_UNREGISTERED_PER_CHAT_PER_HOUR="3", NGB_UNREGISTERED_PER_HOUR="200", NGB_UNREGISTERED_KEEP="100"
    )
    from ngb.router import MessageDropped

    stored = dropped = 0
    for n in range(10_000):
        chat = f"telegram:{n % 2000}"  # 2,000 strangers' chats, five messages each
        try:
            await d.daemon.router.handle(InboundMessage(chat=chat, sender="x", text="spam", platform_id=str(n), sender_id="9"))
            stored += 1
        except MessageDropped:
            dropped += 1
    rows = await d.daemon.store.run(lambda c: c.execute("SELECT COUNT(*) FROM messages WHERE chat LIKE 'telegram:%'").fetchone()[0])
    print(f"flood: 10000 sent, {stored} stored, {dropped} dropped, {rows} rows kept")
    assert stored == 200 and dropped == 9800
    assert rows <= 100 + 100 // 10  # pruned back to the kept count (plus at most one prune's worth)
    metrics = (await d.http.get("/metrics")).text
    assert 'ngb_unregistered_dropped_total{channel="telegram"} 9800.0' in metrics
    # Registered and local chats are not limited.
    await d.daemon.registry.add(Group(chat="telegram:5", folder="five"))
    for n in range(20):
        await d.daemon.router.handle(InboundMessage(chat="telegram:5", sender="x", text="ok", platform_id=f"r{n}", sender_id="9"))
    for n in range(20):
        await d.post("stranger", f"local {n}")


async def test_doctor_names_an_allow_list_entry_that_is_a_name(run_daemon, tmp_path: Path) -> None:
    from ngb.ops.doctor import check_allow_lists

    d = await run_daemon()
    await d.daemon.store.add_group(Group(chat=TG, folder="team", allowed_senders=("111", "Alice")))
    check = check_allow_lists(d.daemon.config)
    assert check.status == "warn" and "'Alice'" in check.detail and "ngb groups senders" in check.fix
    await d.daemon.store.update_group(Group(chat=TG, folder="team", allowed_senders=("111",)))
    assert check_allow_lists(d.daemon.config).status == "ok"
