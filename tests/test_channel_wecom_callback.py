"""WeCom callback mode (self-built app): the message crypto against WeCom's own published sample
values, then the real daemon (in-process, fake agent) with the real channel code, fed by
tests/fakes/wecom_callback.py: encrypted, signed callbacks POSTed to the daemon's web server, and
the app API (gettoken, message/send, appchat/send) on loopback."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from Crypto.Cipher import AES

import ngb.daemon as daemon_module
from ngb.channels import build_channels, wecom
from ngb.channels.base import ChannelError
from ngb.channels.wecom_callback import CALLBACK_PATH, WeComCallbackChannel
from ngb.channels.wecom_crypto import CallbackRefused, WeComCrypto, decode_aes_key, signature
from ngb.config import ConfigError, load_config
from ngb.records import Group
from tests.channel_helpers import echo_each, wait_until
from tests.fakes.agent import FakeBehaviour
from tests.fakes.wecom_callback import FakeWeComApp, _badly_padded

CORP, AGENT = "wwNgbTestCorp01", 1000002
TOKEN, SECRET = "cbTok3nForTests9", "corp-app-secret-0123456789abcdef"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
SECRETS = {"NGB_WECOM_TOKEN": TOKEN, "NGB_WECOM_ENCODING_AES_KEY": KEY, "NGB_WECOM_CORP_SECRET": SECRET}
USER_CHAT = "wecom:zhangsan"

# WeCom's published WXBizMsgCrypt sample (Sample.py of its Python 3 callback library).
SAMPLE = {
    "token": "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo",
    "key": "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
    "corp": "ww1436e0e65a779aee",
    "verify": ("012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb", "1476416373", "47744683",
               "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA=="),
    "echo": "1288432023552776189",
    "message": ("0c3914025cb4b4d68103f6bfc8db550f79dcf48e", "1476422779", "1597212914",
                "Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2"
                "AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010w"
                "sHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPG"
                "jUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+"),
    "inner": "<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName>"
             "<CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content>"
             "<MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>",
}


# -- the crypto ------------------------------------------------------------------------------------
def test_official_sample_vectors() -> None:
    crypto = WeComCrypto(SAMPLE["token"], SAMPLE["key"], SAMPLE["corp"])
    sig, ts, nonce, echostr = SAMPLE["verify"]
    assert signature(SAMPLE["token"], ts, nonce, echostr) == sig
    assert crypto.verify_url(sig, ts, nonce, echostr) == SAMPLE["echo"]
    sig, ts, nonce, encrypted = SAMPLE["message"]
    body = (f"<xml><ToUserName><![CDATA[{SAMPLE['corp']}]]></ToUserName>\n<Encrypt><![CDATA[{encrypted}]]></Encrypt>\n"
            "<AgentID><![CDATA[1000002]]></AgentID>\n</xml>")
    assert crypto.decrypt_message(sig, ts, nonce, body) == SAMPLE["inner"]
    # The form decoding of a query string turns an unescaped "+" into a space: still accepted.
    sig, ts, nonce, echostr = SAMPLE["verify"]
    assert crypto.verify_url(sig, ts, nonce, echostr.replace("+", " ")) == SAMPLE["echo"]


def test_round_trip_and_known_answer() -> None:
    crypto = WeComCrypto(SAMPLE["token"], SAMPLE["key"], SAMPLE["corp"])
    # Known answer: the sample's ciphertext starts with a 16-byte random prefix; re-encrypting the
    # decrypted message with that same prefix must give the sample's ciphertext back exactly.
    key = decode_aes_key(SAMPLE["key"])
    raw = base64.b64decode(SAMPLE["message"][3])
    prefix = AES.new(key, AES.MODE_CBC, key[:16]).decrypt(raw)[:16]
    assert crypto.encrypt(SAMPLE["inner"], prefix=prefix) == SAMPLE["message"][3]
    for text in ("", "a", "x" * 31, "y" * 32, "你好，世界" * 300, "<xml>&amp;</xml>"):
        encrypted = crypto.encrypt(text)
        assert len(base64.b64decode(encrypted)) % 32 == 0
        assert crypto.decrypt(encrypted) == text
    sig, ts, body = crypto.encrypt_message("<xml><MsgType>text</MsgType></xml>", nonce="42")
    assert crypto.decrypt_message(sig, ts, "42", body) == "<xml><MsgType>text</MsgType></xml>"


def test_refusals() -> None:
    crypto = WeComCrypto(TOKEN, KEY, CORP)
    other_corp = crypto.encrypt("hello", receive_id="wwSomeoneElse")
    with pytest.raises(CallbackRefused) as exc:
        crypto.decrypt(other_corp)
    assert exc.value.status == 403 and "corp id" in exc.value.reason
    sig, ts, body = crypto.encrypt_message("<xml/>", nonce="1")
    with pytest.raises(CallbackRefused) as exc:
        crypto.decrypt_message(sig.replace(sig[0], "0" if sig[0] != "0" else "1", 1), ts, "1", body)
    assert exc.value.status == 403 and exc.value.reason == "bad signature"
    with pytest.raises(CallbackRefused) as exc:
        crypto.decrypt_message(sig, ts, "2", body)  # the nonce is signed too
    assert exc.value.status == 403
    tampered = crypto.encrypt("hello")
    tampered = ("A" if tampered[0] != "A" else "B") + tampered[1:]
    with pytest.raises(CallbackRefused):
        crypto.decrypt(tampered)  # garbage after decryption: padding, length or corp id fails
    with pytest.raises(CallbackRefused) as exc:
        crypto.decrypt(_badly_padded(crypto.key, "hello"))
    assert exc.value.status == 400 and "padding" in exc.value.reason
    for bad in ("not base64!", "QUJD", ""):
        with pytest.raises(CallbackRefused) as exc:
            crypto.decrypt(bad)
        assert exc.value.status == 400
    for bad_body in (b"not xml", b'<!DOCTYPE x [<!ENTITY a "b">]><xml><Encrypt>&a;</Encrypt></xml>', b"<xml/>"):
        with pytest.raises(CallbackRefused) as exc:
            crypto.decrypt_message(sig, ts, "1", bad_body)
        assert exc.value.status == 400
    for bad_key in ("short", KEY + "A", KEY[:-1] + "!"):
        with pytest.raises(ValueError):
            decode_aes_key(bad_key)
    assert KEY not in repr(crypto) and TOKEN not in repr(crypto)


# -- through the daemon ------------------------------------------------------------------------------
@pytest.fixture
async def fake() -> AsyncIterator[FakeWeComApp]:
    async with trio.open_nursery() as nursery:
        app = await FakeWeComApp.start(nursery, corp_id=CORP, agent_id=AGENT, corp_secret=SECRET, token=TOKEN,
                                       encoding_aes_key=KEY)
        yield app
        await app.aclose()
        nursery.cancel_scope.cancel()


async def start(run_daemon: Any, monkeypatch: pytest.MonkeyPatch, fake: FakeWeComApp,
                behaviour: FakeBehaviour | None = None, *, secret: str = SECRET, wait: str = "connected",
                daemon_env: dict[str, str] | None = None, **table: Any) -> Any:
    table = {"mode": "callback", "corp_id": CORP, "agent_id": AGENT, "api_base": fake.api_base,
             "reconnect_base": "0.05", "reconnect_cap": "0.3", "request_timeout": "3", **table}
    original = daemon_module.build_channels

    def build(config: Any, memory: Any = None, media: Any = None, **kw: Any) -> dict[str, Any]:
        channels = original(config, memory=memory, media=media, **kw)
        channel = wecom.from_config(config, env={**SECRETS, "NGB_WECOM_CORP_SECRET": secret}, memory=memory)
        assert isinstance(channel, WeComCallbackChannel)
        channels[channel.name] = channel
        return channels

    monkeypatch.setattr(daemon_module, "build_channels", build)
    d = await run_daemon(behaviour, NGB_CHANNELS=json.dumps({"wecom": table}), **(daemon_env or {}))
    fake.attach(f"http://127.0.0.1:{d.daemon.config.web_port}{CALLBACK_PATH}")
    await wait_until(lambda: d.daemon.channels["wecom"].state == wait)
    return d


async def settled(d: Any, folder: str, chat: str) -> None:
    """Wait until the group has nothing left to answer and nothing waits in the outbox: no turn can
    follow, so what was sent by now is all that will be sent."""
    with trio.fail_after(10):
        while await d.daemon.store.pending_input(folder, chat) or await d.daemon.store.outbox_depth():
            await trio.sleep(0.02)


async def outbox_row(d: Any, chat: str, index: int, state: str, timeout: float = 15) -> Any:
    """Wait until the chat's outbox row number ``index`` (oldest first) is in ``state``
    ("sent", or "failed": given up); returns it."""
    with trio.fail_after(timeout):
        while True:
            rows = await d.daemon.store.outbox_items(chat)
            if len(rows) > index and rows[index].state == state:
                return rows[index]
            await trio.sleep(0.02)


async def test_url_verification_also_behind_a_reverse_proxy(run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, fake, daemon_env={"NGB_API_TOKEN": "api-token-" + "z" * 32})
    plain, response = await fake.verify_url()
    assert response.status_code == 200 and response.text == plain
    # A proxy passes the public Host and no API token: the callback still answers, the API does not.
    proxied = {"Host": "bot.example.com", "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    plain, response = await fake.verify_url(headers=proxied)
    assert response.status_code == 200 and response.text == plain
    assert (await d.http.get("/status", headers={"Host": "bot.example.com"})).status_code == 401
    _, response = await fake.verify_url(token="not-the-token")
    assert response.status_code == 403 and response.text == ""
    channel: WeComCallbackChannel = d.daemon.channels["wecom"]
    assert channel.url_checks == 2 and channel.refused == {"bad signature": 1}


async def test_message_gets_exactly_one_reply(run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, fake)  # no API token: the API answers loopback names only
    await d.daemon.registry.add(Group(chat=USER_CHAT, folder="zs"))
    fake.headers = {"Host": "bot.example.com", "X-Forwarded-For": "203.0.113.9"}  # through a reverse proxy
    assert (await d.http.get("/status", headers={"Host": "bot.example.com"})).status_code == 421
    plain, response = await fake.verify_url()
    assert response.status_code == 200 and response.text == plain
    posted = await fake.user_message("hello there", user="zhangsan")
    assert posted.response.status_code == 200 and posted.response.content == b""
    await wait_until(lambda: fake.sent)
    await settled(d, "zs", USER_CHAT)
    assert fake.texts() == ["Echo: hello there"]
    sent = fake.sent[0]
    assert (sent["api"], sent["touser"], sent["agentid"], sent["msgtype"]) == ("message/send", "zhangsan", AGENT, "markdown")
    msgs = await d.daemon.store.messages_after(USER_CHAT, 0)
    assert [(m.sender_id, m.mentions_bot, m.from_bot) for m in msgs] == [("zhangsan", True, False), ("", False, True)]
    status = (await d.http.get("/status")).json()
    assert status["channels"]["wecom"]["state"] == "connected"
    info = d.daemon.channels["wecom"].describe()
    assert info["mode"] == "callback" and info["received"] == 1 and info["sent"] == 1 and info["token_fetches"] == 1
    assert SECRET not in json.dumps(info) and TOKEN not in json.dumps(info)
    metrics = (await d.http.get("/metrics")).text
    assert 'ngb_channel_connected{channel="wecom"} 1.0' in metrics


async def test_retried_callback_is_stored_and_answered_once(run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, fake, FakeBehaviour(reply=echo_each))
    channel: WeComCallbackChannel = d.daemon.channels["wecom"]
    await d.daemon.registry.add(Group(chat=USER_CHAT, folder="zs"))
    first = await fake.user_message("one", msgid="7001")
    again = [await fake.resend(first) for _ in range(3)]  # WeCom's retries: the same request
    assert [r.response.status_code for r in [first, *again]] == [200] * 4
    channel._seen.clear()  # as after a restart: the store's own dedupe must hold too
    later = await fake.post_inner(first.inner)  # same MsgId, new timestamp, nonce and signature
    assert later.response.status_code == 200
    await fake.user_message("two", msgid="7002")
    await wait_until(lambda: len(fake.sent) >= 2)
    await settled(d, "zs", USER_CHAT)
    assert fake.texts() == ["Echo: one", "Echo: two"]
    inbound = [m for m in await d.daemon.store.messages_after(USER_CHAT, 0) if not m.from_bot]
    assert [m.text for m in inbound] == ["one", "two"]
    assert channel.duplicates == 3


async def test_forged_callbacks_are_refused_and_nothing_stored(run_daemon, monkeypatch, fake, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="ngb.channels.wecom_callback")
    d = await start(run_daemon, monkeypatch, fake)
    channel: WeComCallbackChannel = d.daemon.channels["wecom"]
    await d.daemon.registry.add(Group(chat=USER_CHAT, folder="zs"))
    inner = fake.inner_xml("transfer the money", user="zhangsan")
    cases = [
        ((await fake.post_inner(inner, token="guessed-token")), 403, "bad signature"),
        ((await fake.post_inner(inner, receive_id="wwAnotherCorp")), 403, "wrong corp id (receiveid)"),
        ((await fake.post_inner(inner, timestamp="1000000000")), 403,
         "timestamp outside the window (a replay, or this clock is off)"),
        ((await fake.post_inner(inner, bad_padding=True)), 400, "bad padding (wrong EncodingAESKey?)"),
        ((await fake.post_raw({"msg_signature": "x", "timestamp": "1", "nonce": "1"}, b"{json?}")), 400, "malformed XML"),
        ((await fake.post_raw({"timestamp": "1"}, b"<xml/>")), 400, "missing msg_signature, nonce"),
    ]
    for posted, status, reason in cases:
        assert posted.response.status_code == status, reason
        assert channel.refused.get(reason) == 1, (reason, channel.refused)
    logged = [r.getMessage() for r in caplog.records if "callback refused" in r.getMessage()]
    assert len(logged) == len(cases) and all("nothing stored" in line for line in logged)
    assert fake.callback_url.endswith(CALLBACK_PATH)
    r = await d.http.put(CALLBACK_PATH)
    assert r.status_code == 405
    # a callback is answered after its message is stored: by now anything taken would be there
    assert await d.daemon.store.messages_after(USER_CHAT, 0) == [] and fake.sent == []
    assert channel.received == 0
    # Authentic, but for another app of the corp (AgentID): not stored, and no WeCom retries.
    other = await fake.post_inner(fake.inner_xml("hi", agent_id=AGENT + 1))
    assert other.response.status_code == 200 and channel.received == 0
    # Events are authentic but no message: answered, not stored.
    event = await fake.post_inner(fake.inner_xml("", msgtype="event", extra="<Event>enter_agent</Event>"))
    assert event.response.status_code == 200 and channel.events == 1
    # The real thing still works, and is the only thing stored and answered.
    await fake.user_message("hello", user="zhangsan")
    await wait_until(lambda: fake.sent)
    await settled(d, "zs", USER_CHAT)
    assert fake.texts() == ["Echo: hello"]
    assert [m.text for m in await d.daemon.store.messages_after(USER_CHAT, 0) if not m.from_bot] == ["hello"]
    assert channel.received == 1


async def test_token_cached_and_refreshed_on_expiry(run_daemon, monkeypatch, fake, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ngb.channels.wecom_callback")
    d = await start(run_daemon, monkeypatch, fake, FakeBehaviour(reply=echo_each))
    channel: WeComCallbackChannel = d.daemon.channels["wecom"]
    await d.daemon.registry.add(Group(chat=USER_CHAT, folder="zs"))
    for n in range(2):
        await fake.user_message(f"m{n}")
        await wait_until(lambda n=n: len(fake.sent) == n + 1)
    assert fake.gettoken_calls == 1  # the session's token serves every send until it expires
    fake.expire_tokens()  # 42001 on the next send: a new token, the same send again
    await fake.user_message("after expiry")
    await wait_until(lambda: len(fake.sent) == 3)
    fake.revoke_tokens()  # 40014
    await fake.user_message("after revoke")
    await wait_until(lambda: len(fake.sent) == 4)
    await settled(d, "zs", USER_CHAT)
    assert fake.texts() == ["Echo: m0", "Echo: m1", "Echo: after expiry", "Echo: after revoke"]
    assert fake.gettoken_calls == 3 and channel.token_fetches == 3
    assert [c for c in fake.calls if c[0] == "message/send"] == [
        ("message/send", 0), ("message/send", 0), ("message/send", 42001), ("message/send", 0),
        ("message/send", 40014), ("message/send", 0)]
    assert d.daemon.outbox.retries == 0 and channel.state == "connected"
    assert any("access token expired" in r.getMessage() for r in caplog.records)
    assert not any(any(t in r.getMessage() for t in fake.tokens) for r in caplog.records)


async def test_send_failure_retried_by_the_outbox(run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, fake)
    await d.daemon.registry.add(Group(chat=USER_CHAT, folder="zs"))
    fake.fail_next("message/send", errcode=-1)  # "system busy"
    fake.fail_next("message/send", http=502)  # a proxy on the way
    await fake.user_message("are you there?")
    row = await outbox_row(d, USER_CHAT, 0, "sent")
    await settled(d, "zs", USER_CHAT)
    assert fake.texts() == ["Echo: are you there?"] and row.attempts == 3
    assert [c[1] for c in fake.calls if c[0] == "message/send"] == [-1, -502, 0]
    assert d.daemon.outbox.retries == 2 and d.daemon.outbox.delivered == 1
    # A refusal that retrying cannot fix is given up at once (and the next reply goes through).
    fake.fail_next("message/send", errcode=40003)  # invalid userid
    await fake.user_message("again")
    row = await outbox_row(d, USER_CHAT, 1, "failed")
    assert row.attempts == 1 and "40003" in (row.last_error or "") and d.daemon.outbox.retries == 3
    await fake.user_message("and again")
    await wait_until(lambda: len(fake.sent) == 2)
    await settled(d, "zs", USER_CHAT)
    assert fake.texts() == ["Echo: are you there?", "Echo: and again"] and d.daemon.outbox.retries == 3


async def test_long_reply_split_by_bytes(run_daemon, monkeypatch, fake) -> None:
    paragraphs = [f"第{i}段。" + "".join(f"这是第{i}.{j}句话，说了一些内容。" for j in range(12)) for i in range(12)]
    long_text = "\n\n".join(paragraphs)
    d = await start(run_daemon, monkeypatch, fake, FakeBehaviour(reply=lambda p: [long_text]), msgtype="text")
    await d.daemon.registry.add(Group(chat=USER_CHAT, folder="zs"))
    await fake.user_message("everything please")
    await wait_until(lambda: d.daemon.outbox.delivered >= 1)
    texts = fake.texts()
    assert len(texts) >= 4 and all(len(t.encode()) <= 2000 for t in texts)
    assert all(b["msgtype"] == "text" and b["touser"] == "zhangsan" for b in fake.sent)
    assert "\n\n".join(texts) == long_text


async def test_app_group_chats(run_daemon, monkeypatch, fake) -> None:
    fake.app_chats.update({"wrAppChat01", "wrAppChat02"})
    d = await start(run_daemon, monkeypatch, fake, FakeBehaviour(reply=echo_each))
    await d.daemon.registry.add(Group(chat="wecom:wrAppChat01", folder="team", requires_trigger=False))
    await fake.user_message("group hello", user="lisi", chat_id="wrAppChat01")
    await wait_until(lambda: fake.sent)
    assert fake.sent[0]["api"] == "appchat/send" and fake.sent[0]["chatid"] == "wrAppChat01"
    msgs = await d.daemon.store.messages_after("wecom:wrAppChat01", 0)
    assert (msgs[0].sender_id, msgs[0].mentions_bot) == ("lisi", False)
    # A chat the channel has not seen in a callback (e.g. after a restart): message/send says 81013,
    # the same part goes to appchat/send.
    await d.daemon.channels["wecom"].send("wecom:wrAppChat02", "announcement")
    assert fake.sent[-1]["api"] == "appchat/send" and fake.sent[-1]["chatid"] == "wrAppChat02"
    assert ("message/send", 81013) in fake.calls
    fake.strangers.add("nobody")
    with pytest.raises(ChannelError) as exc:
        await d.daemon.channels["wecom"].send("wecom:nobody", "hi")
    assert not exc.value.retryable and "neither a user" in str(exc.value)
    assert fake.calls[-2:] == [("message/send", 81013), ("appchat/send", 86003)]


async def test_refused_secret_is_unauthorized_and_callbacks_still_stored(run_daemon, monkeypatch, fake) -> None:
    d = await start(run_daemon, monkeypatch, fake, secret="wrong-secret-value", wait="unauthorized")
    channel: WeComCallbackChannel = d.daemon.channels["wecom"]
    assert "wrong-secret-value" not in json.dumps(channel.describe())
    await d.daemon.registry.add(Group(chat=USER_CHAT, folder="zs"))
    posted = await fake.user_message("stored anyway")
    assert posted.response.status_code == 200
    msgs = await d.daemon.store.messages_after(USER_CHAT, 0)
    assert [m.text for m in msgs][:1] == ["stored anyway"]
    await d.post("main", "still here")
    assert (await d.wait_bot_replies("main", 1))[0]["text"] == "Echo: still here"


def test_from_config(tmp_path: Path, caplog, monkeypatch) -> None:
    def config(table: dict[str, Any] | None) -> Any:
        env = {"NGB_STATE_DIR": str(tmp_path)}
        if table is not None:
            env["NGB_CHANNELS"] = json.dumps({"wecom": table})
        return load_config(None, env=env)

    base = {"mode": "callback", "corp_id": CORP, "agent_id": AGENT}
    with caplog.at_level(logging.WARNING):
        assert wecom.from_config(config(base), env={}) is None
    assert any("callback mode; set NGB_WECOM_TOKEN" in r.getMessage() for r in caplog.records)
    ch = wecom.from_config(config(base), env=SECRETS)
    assert isinstance(ch, WeComCallbackChannel) and ch.settings.agent_id == AGENT
    assert ch.settings.api_base == "https://qyapi.weixin.qq.com" and ch.settings.part_bytes == 2000
    assert all(s not in repr(ch.settings) for s in (TOKEN, KEY, SECRET))
    # Everything from the environment (corp id and agent id too).
    ch = wecom.from_config(config({"mode": "callback"}),
                           env={**SECRETS, "NGB_WECOM_CORP_ID": "wwEnv", "NGB_WECOM_AGENT_ID": "7"})
    assert ch is not None and (ch.settings.corp_id, ch.settings.agent_id) == ("wwEnv", 7)
    # Secrets from files (mode 600), relative to nothing here: absolute paths.
    files = {}
    for key, value in (("token", TOKEN), ("encoding_aes_key", KEY), ("corp_secret", SECRET)):
        path = tmp_path / f"{key}.secret"
        path.write_text(value + "\n")
        path.chmod(0o600)
        files[f"{key}_file"] = str(path)
    ch = wecom.from_config(config({**base, **files}), env={})
    assert ch is not None and (ch.settings.token, ch.settings.corp_secret) == (TOKEN, SECRET)
    # Robot mode stays the default.
    robot = wecom.from_config(config({"bot_id": "b"}), env={"NGB_WECOM_SECRET": "unit-secret-xyz"})
    assert robot is not None and not isinstance(robot, WeComCallbackChannel)
    for bad, key in (({**base, "bot_id": "b"}, "bot_id"), ({**base, "agent_id": "one"}, "agent_id"),
                     ({**base, "api_base": "ftp://x"}, "api_base"), ({**base, "msgtype": "news"}, "msgtype"),
                     ({**base, "part_bytes": 4000}, "part_bytes"), ({**base, "mode": "webhook"}, "mode"),
                     ({"bot_id": "b", "corp_id": CORP}, "corp_id")):
        with pytest.raises(ConfigError) as exc:
            wecom.from_config(config(bad), env={**SECRETS, "NGB_WECOM_SECRET": "unit-secret-xyz"})
        assert exc.value.key == f"channels.wecom.{key}"
    with pytest.raises(ConfigError) as exc:
        wecom.from_config(config(base), env={**SECRETS, "NGB_WECOM_ENCODING_AES_KEY": "too-short"})
    assert exc.value.key == "channels.wecom.encoding_aes_key" and "too-short" not in str(exc.value)
    assert wecom.from_config(config({**base, "enabled": False}), env=SECRETS) is None
    # The daemon's own build reads the variables from the environment.
    for var, value in SECRETS.items():
        monkeypatch.setenv(var, value)
    assert isinstance(build_channels(config(base))["wecom"], WeComCallbackChannel)
