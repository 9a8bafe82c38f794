"""Telegram in webhook mode, through the real daemon (in-process, fake agent), its real web server
and the real python-telegram-bot: tests/fakes/telegram.py records setWebhook and POSTs updates to
the daemon's webhook path with the secret header, retrying what is not answered 2xx, like Telegram."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from ngb.channels import build_channels
from ngb.channels.telegram import DEFAULT_WEBHOOK_PATH, TelegramChannel, TelegramSettings
from ngb.config import ConfigError, load_config
from ngb.records import Group
from tests.channel_helpers import echo_each, stored, wait_until
from tests.conftest import free_port
from tests.fakes.agent import FakeBehaviour
from tests.fakes.telegram import FakeTelegram

TOKEN = "123456:TEST-token"
GROUP = -100123
SECRET = "Webhook_secret-0123456789abcdefXYZ"
HEADER = "X-Telegram-Bot-Api-Secret-Token"


@pytest.fixture
async def fake_tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram.serving(token=TOKEN) as fake:
        yield fake


async def start(run_daemon: Any, fake: FakeTelegram, behaviour: FakeBehaviour | None = None,
                **table: Any) -> tuple[Any, TelegramChannel]:
    port = free_port()
    settings = {"base_url": fake.base_url, "mode": "webhook",
                "webhook_url": f"http://127.0.0.1:{port}{DEFAULT_WEBHOOK_PATH}",
                "reconnect_base": "0.05", "reconnect_cap": "0.3", **table}
    d = await run_daemon(behaviour, NGB_TELEGRAM_TOKEN=TOKEN, NGB_WEB_PORT=str(port),
                         NGB_CHANNELS=json.dumps({"telegram": settings}))
    channel = d.daemon.channels["telegram"]
    await wait_until(lambda: channel.state == "connected")
    return d, channel


async def settled(d: Any, folder: str, chat: str) -> None:
    """Wait until the group has nothing left to answer and nothing waits in the outbox: no turn can
    follow, so what was sent by now is all that will be sent."""
    with trio.fail_after(10):
        while await d.daemon.store.pending_input(folder, chat) or await d.daemon.store.outbox_depth():
            await trio.sleep(0.02)


def set_webhook_calls(fake: FakeTelegram) -> list[dict[str, Any]]:
    return [params for method, params in fake.webhook_calls if method == "setWebhook"]


def queued(fake: FakeTelegram, message: dict[str, Any]) -> int:
    """The update id of the message just queued (call before any await)."""
    (update,) = [u for u in fake.updates if u.get("message") is message]
    return int(update["update_id"])


def update_json(update_id: int, chat_id: int, text: str) -> bytes:
    return json.dumps({"update_id": update_id, "message": {
        "message_id": 10_000 + update_id, "date": int(time.time()), "text": text,  # clear of the fake's ids
        "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup", "title": "x"},
        "from": {"id": 666, "is_bot": False, "first_name": "Mallory"},
        "entities": [{"type": "mention", "offset": 0, "length": 9}] if text.startswith("@andy_bot") else [],
    }}).encode()


async def test_group_trigger_via_webhook_gets_one_threaded_reply(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d, channel = await start(run_daemon, fake_tg)
    await d.daemon.registry.add(Group(chat=f"telegram:{GROUP}", folder="family"))
    (params,) = set_webhook_calls(fake_tg)
    assert params["url"] == channel.settings.webhook_url == f"{channel.settings.webhook_url}"
    assert params["url"].endswith(DEFAULT_WEBHOOK_PATH) and channel.callback_path == DEFAULT_WEBHOOK_PATH
    secret = params["secret_token"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,256}", secret)  # none configured: a random one for this start
    assert params["allowed_updates"] == ["message", "message_reaction"] and params["drop_pending_updates"] is False

    context = fake_tg.user_message(GROUP, "the meeting moved to 3pm", first_name="Bob", user_id=7)
    context_id = queued(fake_tg, context)
    await wait_until(lambda: [a["status"] for a in fake_tg.delivered(context_id)] == [200])
    trigger = fake_tg.user_message(GROUP, "@andy_bot when is the meeting?")
    sent = await wait_until(lambda: fake_tg.sent)
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    await settled(d, "family", f"telegram:{GROUP}")
    assert len(fake_tg.sent) == 1  # exactly one reply
    assert sent[0]["reply_to"] == trigger["message_id"]  # threaded to the triggering message
    assert sent[0]["text"] == "Echo: @andy_bot when is the meeting?"
    assert "the meeting moved to 3pm" in d.launcher.prompts[-1][2]  # the untriggered one went as context
    assert [a["status"] for a in fake_tg.deliveries] == [200, 200]
    assert all(a["secret"] == secret for a in fake_tg.deliveries)
    assert "getUpdates" not in [method for method, _ in fake_tg.requests]  # no polling in webhook mode
    msgs = await stored(d, f"telegram:{GROUP}")
    assert [(m.text, m.sender_id, m.mentions_bot, m.from_bot) for m in msgs] == [
        ("the meeting moved to 3pm", "7", False, False),
        ("@andy_bot when is the meeting?", "1001", True, False),
        ("Echo: @andy_bot when is the meeting?", "", False, True),
    ]

    info = channel.describe()
    assert info["mode"] == "webhook" and info["webhook_url"] == params["url"] and info["webhook_updates"] == 2
    api = (await d.http.get("/api/channels")).json()["telegram"]
    assert api["mode"] == "webhook" and api["webhook_url"] == params["url"] and api["state"] == "connected"
    status = (await d.http.get("/status")).json()
    assert status["channels"]["telegram"]["state"] == "connected"
    assert secret not in json.dumps(info) + json.dumps(api) + json.dumps(status)


async def test_a_reaction_comes_by_webhook_too_and_is_stored_once(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d, _ = await start(run_daemon, fake_tg)
    message = fake_tg.user_message(GROUP, "lunch at noon?")
    await wait_until(lambda: not fake_tg.updates)
    fake_tg.lose_next_ack()  # Telegram sends the reaction's update twice
    update_id = fake_tg.user_reaction(GROUP, message["message_id"], ["👍"], first_name="Bob", user_id=7)
    await wait_until(lambda: [a["status"] for a in fake_tg.delivered(update_id)] == [200, 200])
    assert fake_tg.withheld == 0  # setWebhook asked for message_reaction
    msgs = await stored(d, f"telegram:{GROUP}")
    assert [(m.text, m.sender, m.reaction_to) for m in msgs] == [
        ("lunch at noon?", "Alice", None), ("👍", "Bob", f"{GROUP}:{message['message_id']}")]


async def test_forged_posts_are_refused_and_nothing_stored(
    run_daemon: Any, fake_tg: FakeTelegram, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("NGB_TELEGRAM_WEBHOOK_SECRET", SECRET)
    d, channel = await start(run_daemon, fake_tg)
    assert fake_tg.webhook is not None and fake_tg.webhook["secret_token"] == SECRET
    await d.daemon.registry.add(Group(chat="telegram:4242", folder="alice"))
    await d.daemon.registry.add(Group(chat=f"telegram:{GROUP}", folder="family"))
    path = channel.callback_path
    assert path == DEFAULT_WEBHOOK_PATH
    forged = [
        (update_json(900, 4242, "send me the files"), {}, 401),
        (update_json(901, GROUP, "@andy_bot wire the money"), {HEADER: "guessed"}, 403),
        (update_json(902, 4242, "hi"), {HEADER: SECRET[:-1] + ("x" if SECRET[-1] != "x" else "y")}, 403),
        (update_json(903, 4242, "hi"), {HEADER: SECRET + "0"}, 403),
        (update_json(904, 4242, "hi"), {HEADER: "", "X-Forwarded-For": "203.0.113.9"}, 403),
        (update_json(905, 4242, "hi"), {HEADER.lower(): SECRET.lower()}, 403),
    ]
    for body, headers, code in forged:
        r = await d.http.post(path, content=body, headers={"Content-Type": "application/json", **headers})
        assert r.status_code == code, (headers, r.text)
    assert (await d.http.get(path)).status_code == 405
    # each refusal was answered before anything could be stored (and see the end of the test)
    assert await stored(d, "telegram:4242") == [] and await stored(d, f"telegram:{GROUP}") == []
    assert fake_tg.sent == [] and channel.received == 0 and d.launcher.prompts == []
    assert channel.webhook_refused == {"no secret token header": 1, "wrong secret token": 5}
    refused = [r.getMessage() for r in caplog.records if "webhook POST refused" in r.getMessage()]
    assert len(refused) == len(forged)  # one line per refusal
    assert all("from 127.0.0.1" in line and "nothing stored" in line for line in refused)
    assert sum("203.0.113.9" in line for line in refused) == 1
    assert not any(SECRET in r.getMessage() for r in caplog.records)
    # The same update with the right header is taken (so the refusals were about the header alone).
    r = await d.http.post(path, content=update_json(906, 4242, "genuine"), headers={HEADER: SECRET})
    assert r.status_code == 200
    await wait_until(lambda: fake_tg.sent)
    await settled(d, "alice", "telegram:4242")
    assert [s["text"] for s in fake_tg.sent] == ["Echo: genuine"]
    assert [m.text for m in await stored(d, "telegram:4242") if not m.from_bot] == ["genuine"]
    assert await stored(d, f"telegram:{GROUP}") == [] and channel.received == 1


async def test_redelivered_update_is_stored_and_answered_once(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    d, channel = await start(run_daemon, fake_tg, FakeBehaviour(reply=echo_each))
    await d.daemon.registry.add(Group(chat="telegram:4242", folder="alice"))
    fake_tg.lose_next_ack()  # our 200 "never reaches Telegram": it delivers the update again
    first = fake_tg.user_message(4242, "only once", user_id=4242)
    first_id = queued(fake_tg, first)
    await wait_until(lambda: [a["status"] for a in fake_tg.delivered(first_id)] == [200, 200])
    assert fake_tg.delivered(first_id)[0].get("ack_lost") and not fake_tg.updates
    assert channel.webhook_duplicates == 1
    # After a restart the update id is forgotten: the store's own key holds.
    channel._seen_updates.clear()
    again = await d.http.post(channel.callback_path, headers={HEADER: channel.webhook_secret},
                              content=json.dumps({"update_id": first_id, "message": first}).encode())
    assert again.status_code == 200
    fake_tg.push_update({"message": first})  # the same message in a new update
    second = fake_tg.user_message(4242, "two", user_id=4242)
    await wait_until(lambda: len(fake_tg.sent) >= 2)
    await wait_until(lambda: d.daemon.outbox.delivered >= 2)
    await settled(d, "alice", "telegram:4242")
    assert [s["text"] for s in fake_tg.sent] == ["Echo: only once", "Echo: two"]
    assert fake_tg.sent[1]["reply_to"] == second["message_id"]
    inbound = [m.text for m in await stored(d, "telegram:4242") if not m.from_bot]
    assert inbound == ["only once", "two"]


async def test_answered_only_after_store_and_a_failed_store_is_redelivered(
    run_daemon: Any, fake_tg: FakeTelegram
) -> None:
    d, channel = await start(run_daemon, fake_tg)
    await d.daemon.registry.add(Group(chat="telegram:4242", folder="alice"))
    router = channel.submit_to
    assert router is not None
    release = trio.Event()
    calls: list[str] = []

    async def flaky_store(inbound: Any) -> Any:
        calls.append(inbound.text)
        if len(calls) == 1:
            raise RuntimeError("database is locked")  # not stored: Telegram must try again
        if len(calls) == 2:
            await release.wait()  # storing is slow: the answer has to wait for it
        return await router(inbound)

    channel.submit_to = flaky_store
    message = fake_tg.user_message(4242, "keep me", user_id=4242)
    update_id = queued(fake_tg, message)
    await wait_until(lambda: len(calls) == 2)
    # The one fixed wait here: it shows an answer that has NOT come while the store is held. No
    # later event can stand for it (the fake delivers one update at a time, so nothing follows an
    # unanswered POST but time); a product that answered before storing fails this at once, and a
    # correct one passes however slow the machine.
    await trio.sleep(0.3)
    attempts = fake_tg.delivered(update_id)
    assert [(a["status"], a["error"]) for a in attempts] == [(500, None), (None, None)]  # 2nd: still unanswered
    assert await stored(d, "telegram:4242") == []
    release.set()
    await wait_until(lambda: fake_tg.delivered(update_id)[-1]["status"] == 200)
    assert [m.text for m in await stored(d, "telegram:4242") if not m.from_bot] == ["keep me"]
    await wait_until(lambda: fake_tg.sent)
    await settled(d, "alice", "telegram:4242")
    assert [s["text"] for s in fake_tg.sent] == ["Echo: keep me"] and len(fake_tg.delivered(update_id)) == 2


async def test_malformed_bodies_get_400_and_the_daemon_keeps_answering(
    run_daemon: Any, fake_tg: FakeTelegram, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="ngb.channels.telegram")
    d, channel = await start(run_daemon, fake_tg, webhook_secret=SECRET)
    await d.daemon.registry.add(Group(chat="telegram:4242", folder="alice"))
    bad = [b"{not json", b"\xff\xfe\x00", b"[1, 2]", b"null", b'{"message": {"text": "no update_id"}}',
           b'{"update_id": "7"}', b'{"update_id": 8, "message": {"chat": 1}}', b'{"update_id": 9, "message": "x"}']
    for body in bad:
        r = await d.http.post(channel.callback_path, content=body, headers={HEADER: SECRET})
        assert r.status_code == 400, body
    assert channel.webhook_malformed == len(bad)
    lines = [r.getMessage() for r in caplog.records if "is not a Telegram update" in r.getMessage()]
    assert len(lines) == len(bad) and all("from 127.0.0.1" in line for line in lines)
    big = b'{"update_id": 10, "x": "' + b"a" * d.daemon.config.max_body_bytes + b'"}'
    r = await d.http.post(channel.callback_path, content=big, headers={HEADER: SECRET})
    assert r.status_code == 413  # the web server's own body limit
    assert (await d.http.get("/healthz")).status_code == 200
    fake_tg.user_message(4242, "still there?", user_id=4242)
    await wait_until(lambda: fake_tg.sent)
    assert [s["text"] for s in fake_tg.sent] == ["Echo: still there?"]
    assert [m.text for m in await stored(d, "telegram:4242") if not m.from_bot] == ["still there?"]
    assert channel.state == "connected"


async def test_webhook_changed_elsewhere_is_set_again_and_delivery_errors_reported(
    run_daemon: Any, fake_tg: FakeTelegram, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="ngb.channels.telegram")
    d, channel = await start(run_daemon, fake_tg, webhook_check_interval="0.1")
    await d.daemon.registry.add(Group(chat="telegram:4242", folder="alice"))
    assert len(set_webhook_calls(fake_tg)) == 1
    fake_tg.webhook = None  # another program deleted it
    await wait_until(lambda: len(set_webhook_calls(fake_tg)) == 2)
    assert set_webhook_calls(fake_tg)[1]["secret_token"] == channel.webhook_secret
    assert any("setting it again" in r.getMessage() for r in caplog.records)
    fake_tg.user_message(4242, "hello", user_id=4242)
    await wait_until(lambda: fake_tg.sent)
    fake_tg.webhook_error = (int(time.time()), "Wrong response from the webhook: 502 Bad Gateway")
    await wait_until(lambda: "502 Bad Gateway" in (channel.webhook_last_error or ""))
    assert channel.describe()["webhook_last_error"] == channel.webhook_last_error
    assert sum("could not deliver" in r.getMessage() for r in caplog.records) == 1  # once per error


async def test_polling_again_deletes_the_webhook_and_keeps_its_updates(run_daemon: Any, fake_tg: FakeTelegram) -> None:
    # A webhook left by an earlier run in webhook mode, pointing at a port nobody listens on.
    fake_tg.webhook = {"url": f"http://127.0.0.1:{free_port()}{DEFAULT_WEBHOOK_PATH}", "secret_token": "old"}
    fake_tg.user_message(4242, "sent while the webhook was set", user_id=4242)
    await wait_until(lambda: len(fake_tg.deliveries) >= 1)  # Telegram could not deliver it
    d = await run_daemon(NGB_TELEGRAM_TOKEN=TOKEN, NGB_CHANNELS=json.dumps(
        {"telegram": {"base_url": fake_tg.base_url, "poll_timeout": 2, "reconnect_base": "0.05"}}))
    channel = d.daemon.channels["telegram"]
    assert channel.callback_path is None and channel.describe()["mode"] == "polling"
    await d.daemon.registry.add(Group(chat="telegram:4242", folder="alice"))
    await wait_until(lambda: fake_tg.sent)
    assert [s["text"] for s in fake_tg.sent] == ["Echo: sent while the webhook was set"]
    assert fake_tg.webhook is None
    assert [(m, bool(p.get("drop_pending_updates"))) for m, p in fake_tg.webhook_calls] == [("deleteWebhook", False)]
    assert (await d.http.post(DEFAULT_WEBHOOK_PATH, content=b"{}")).status_code != 200  # not served when polling


def test_webhook_settings_and_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NGB_TELEGRAM_WEBHOOK_SECRET", raising=False)
    base = {"token": "1:abc", "mode": "webhook"}

    def error(table: dict[str, Any], environ: dict[str, str] | None = None) -> ConfigError:
        with pytest.raises(ConfigError) as exc:
            TelegramSettings.from_table(table, environ=environ or {})
        return exc.value

    assert TelegramSettings.from_table({"token": "1:abc"}).mode == "polling"
    assert TelegramChannel(TelegramSettings.from_table({"token": "1:abc"})).callback_path is None
    e = error(base)
    assert e.key == "channels.telegram.webhook_url" and 'required with mode = "webhook"' in e.message
    e = error({**base, "webhook_url": "http://bot.example.org/channels/telegram/webhook"})
    assert e.key == "channels.telegram.webhook_url" and "https://" in e.message and "loopback" in e.message
    assert error({**base, "webhook_url": "ftp://bot.example.org/x"}).key == "channels.telegram.webhook_url"
    assert error({**base, "webhook_url": "bot.example.org/x"}).key == "channels.telegram.webhook_url"
    e = error({**base, "webhook_url": "https://bot.example.org/api/chats"})
    assert "daemon's own routes" in e.message
    assert error({**base, "mode": "hook", "webhook_url": "https://b.example.org/x"}).key == "channels.telegram.mode"
    for bad in ("has space", "semi;colon", "x" * 257, "ünïcode"):
        e = error({**base, "webhook_url": "https://b.example.org/x", "webhook_secret": bad})
        assert e.key == "channels.telegram.webhook_secret" and bad not in str(e)
    e = error({**base, "webhook_url": "https://b.example.org/x"}, environ={"NGB_TELEGRAM_WEBHOOK_SECRET": "bad secret!"})
    assert e.key == "NGB_TELEGRAM_WEBHOOK_SECRET" and "bad secret!" not in str(e)
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text("not/allowed\n")
    secret_file.chmod(0o600)
    e = error({**base, "webhook_url": "https://b.example.org/x", "webhook_secret_file": str(secret_file)})
    assert e.key == "channels.telegram.webhook_secret_file" and "not/allowed" not in str(e)

    # Good ones: a URL without a path gets the default one; loopback http for tests; secrets.
    s = TelegramSettings.from_table({**base, "webhook_url": "https://bot.example.org"}, environ={})
    assert s.webhook_url == "https://bot.example.org" + DEFAULT_WEBHOOK_PATH and s.webhook_path == DEFAULT_WEBHOOK_PATH
    assert s.webhook_secret is None
    s = TelegramSettings.from_table({**base, "webhook_url": "https://bot.example.org:8443/tg/hook%20x?a=1"}, environ={})
    assert s.webhook_path == "/tg/hook x"
    for url in ("http://127.0.0.1:8080/x", "http://[::1]:9/x", "http://localhost/x"):
        assert TelegramSettings.from_table({**base, "webhook_url": url}, environ={}).webhook_url == url
    secret_file.write_text(SECRET + "\n")
    s = TelegramSettings.from_table({**base, "webhook_url": "https://b.example.org/x", "webhook_secret_file": str(secret_file)})
    assert s.webhook_secret == SECRET and SECRET not in repr(s)
    s = TelegramSettings.from_table({**base, "webhook_url": "https://b.example.org/x"},
                                    environ={"NGB_TELEGRAM_WEBHOOK_SECRET": "from-env_1"})
    assert s.webhook_secret == "from-env_1"
    channel = TelegramChannel(s)
    assert channel.callback_path == "/x" and channel.webhook_secret == "from-env_1"
    assert "from-env_1" not in json.dumps(channel.describe())
    two = [TelegramChannel(TelegramSettings.from_table({**base, "webhook_url": "https://b.example.org/x"}, environ={}))
           for _ in range(2)]
    assert two[0].webhook_secret != two[1].webhook_secret  # generated per start

    # Through the daemon's own loading: the same errors, and no secret in the config file.
    env = {"NGB_STATE_DIR": str(tmp_path), "NGB_TELEGRAM_TOKEN": "1:abc",
           "NGB_CHANNELS": json.dumps({"telegram": {"mode": "webhook"}})}
    with pytest.raises(ConfigError, match="channels.telegram.webhook_url: is required"):
        build_channels(load_config(None, env=env))
    toml = tmp_path / "ngb.toml"
    toml.write_text('[channels.telegram]\nmode = "webhook"\nwebhook_url = "https://b.example.org/x"\n'
                    'webhook_secret = "in-the-file"\n')
    with pytest.raises(ConfigError, match="webhook_secret_file"):
        load_config(toml, env={"NGB_STATE_DIR": str(tmp_path)})
