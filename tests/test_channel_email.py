"""Email through the real daemon (in-process, fake agent) against real mail servers on loopback
(tests/mail_servers.py): Debian's Dovecot for IMAP (IDLE) and LMTP, aiosmtpd in this process as
the border MTA that stamps Authentication-Results and as the bot's SMTP server."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from ngb.channels.email_parse import parse_mail, trim_quoted
from ngb.records import Group
from tests.channel_helpers import StoppableDaemon, echo_each, stored, wait_until
from tests.fakes.agent import FakeBehaviour
from tests.mail_servers import AUTHSERV_ID, PASSWORD, TcpCut, mailbox_iter, message


def email_env(dovecot: Any, smtp: Any, bot: str, allowed: list[str], imap_port: int | None = None,
              **table: Any) -> dict[str, str]:
    settings = {"address": bot, "imap_host": "127.0.0.1", "imap_port": imap_port or dovecot.imap_port,
                "imap_security": "none", "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_security": "none",
                "allowed_senders": allowed, "authserv_id": AUTHSERV_ID, "reconnect_base": "0.05",
                "reconnect_cap": "0.3", "connect_timeout": "5", **table}
    return {"NGB_EMAIL_PASSWORD": PASSWORD, "NGB_CHANNELS": json.dumps({"email": settings})}


async def start(run_daemon: Any, env: dict[str, str], behaviour: FakeBehaviour | None = None) -> Any:
    d = await run_daemon(behaviour, **env)
    channel = d.daemon.channels["email"]
    await wait_until(lambda: channel.state == "connected")
    return d


def replies_to(smtp: Any, address: str) -> list[Any]:
    return [m for m in smtp.received if address in str(m["To"])]


async def behind_a_cut(nursery: Any, run_daemon: Any, dovecot: Any, border_smtp: Any, first_text: str,
                       **table: Any) -> tuple[Any, Any, TcpCut, str, str, Any]:
    """A daemon reading the bot's mailbox through a TcpCut (the connection can be cut), alice
    allowed; her first mail answered. (running daemon, channel, cut, bot, alice, first mail)"""
    bot, alice = dovecot.add_user("bot"), dovecot.add_user("alice")
    cut = TcpCut(dovecot.imap_port)
    await nursery.start(cut.serve)
    d = await start(run_daemon, email_env(dovecot, border_smtp, bot, [alice], imap_port=cut.port, **table),
                    FakeBehaviour(reply=echo_each))
    await d.daemon.registry.add(Group(chat=f"email:{alice}", folder="alice"))
    first = message(alice, bot, "one", first_text)
    await trio.to_thread.run_sync(lambda: border_smtp.send(first, login=alice))
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    return d, d.daemon.channels["email"], cut, bot, alice, first


async def test_allowed_sender_gets_one_reply_in_the_thread(run_daemon: Any, dovecot: Any, border_smtp: Any) -> None:
    bot, alice = dovecot.add_user("bot"), dovecot.add_user("alice")
    d = await start(run_daemon, email_env(dovecot, border_smtp, bot, [alice]))
    await d.daemon.registry.add(Group(chat=f"email:{alice}", folder="alice"))
    mail = message(alice, bot, "Lunch plans", "Where shall we eat?\n\n-- \nAlice, sent from a phone",
                   References="<older@example.test>")
    t0 = trio.current_time()
    await trio.to_thread.run_sync(lambda: border_smtp.send(mail, login=alice))
    await wait_until(lambda: replies_to(border_smtp, alice))
    took = trio.current_time() - t0
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    reply = replies_to(border_smtp, alice)[0]
    assert str(reply["Subject"]) == "Re: Lunch plans"
    assert str(reply["In-Reply-To"]) == mail["Message-ID"]
    assert str(reply["References"]).split() == ["<older@example.test>", mail["Message-ID"]]
    assert str(reply["From"]) == bot
    plain = reply.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n").strip()
    assert plain == "Echo: Lunch plans\n\nWhere shall we eat?"  # signature trimmed
    html = reply.get_body(preferencelist=("html",)).get_content()  # and the same as HTML beside it
    assert "<body>Echo: Lunch plans<br><br>Where shall we eat?</body>" in html, html
    msgs = await stored(d, f"email:{alice}")
    assert [(m.from_bot, m.platform_id) for m in msgs] == [(False, mail["Message-ID"]), (True, reply["Message-ID"])]
    assert msgs[0].sender_id == alice
    status = (await d.http.get("/status")).json()["channels"]["email"]
    assert status["state"] == "connected" and status["mode"] == "idle", status
    assert took < 5, took
    await trio.sleep(0.5)
    assert len(replies_to(border_smtp, alice)) == 1


async def test_forged_from_does_not_trigger(run_daemon: Any, dovecot: Any, border_smtp: Any) -> None:
    bot, alice, mallory = dovecot.add_user("bot"), dovecot.add_user("alice"), dovecot.add_user("mallory")
    d = await start(run_daemon, email_env(dovecot, border_smtp, bot, [alice]))
    channel = d.daemon.channels["email"]
    await d.daemon.registry.add(Group(chat=f"email:{alice}", folder="alice"))
    forged = message(alice, bot, "wire the money", "now please")
    # unauthenticated submission claiming alice, with a look-alike header of our server below ours
    fake_ar = f"Authentication-Results: {AUTHSERV_ID}; spf=pass smtp.mailfrom={alice}\r\n"
    await trio.to_thread.run_sync(lambda: border_smtp.send(forged, extra_top=fake_ar))
    stranger = message(mallory, bot, "hello", "I am not on the list")
    await trio.to_thread.run_sync(lambda: border_smtp.send(stranger, login=mallory))
    await wait_until(lambda: channel.refused == 2)
    genuine = message(alice, bot, "real", "this one is me")
    await trio.to_thread.run_sync(lambda: border_smtp.send(genuine, login=alice))
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    assert [m.platform_id for m in await stored(d, f"email:{alice}") if not m.from_bot] == [genuine["Message-ID"]]
    assert await stored(d, f"email:{mallory}") == []
    assert [str(m["In-Reply-To"]) for m in replies_to(border_smtp, alice)] == [genuine["Message-ID"]]


async def test_connection_cut_mid_idle_loses_nothing_and_answers_once(run_daemon: Any, dovecot: Any,
                                                                     border_smtp: Any) -> None:
    async with trio.open_nursery() as nursery:
        d, channel, cut, bot, alice, first = await behind_a_cut(nursery, run_daemon, dovecot, border_smtp, "before the cut")

        await trio.sleep(0.2)  # back in IDLE
        cut.cut()  # the connection dies mid-IDLE; mail arrives while it is down
        await wait_until(lambda: channel.state != "connected")
        during = [message(alice, bot, f"during {i}", f"written during the cut {i}") for i in range(3)]
        for m in during:
            await trio.to_thread.run_sync(lambda m=m: border_smtp.send(m, login=alice))
        await wait_until(lambda: channel.state == "connected")
        await wait_until(lambda: d.daemon.outbox.delivered >= 2, timeout=15)
        await wait_until(lambda: len({str(m["In-Reply-To"]) for m in replies_to(border_smtp, alice)}) >= 2)
        wanted = sorted(str(m["Message-ID"]) for m in [first, *during])
        with trio.fail_after(15):  # every mail stored (under load the last ones can come a turn later)
            while sorted(m.platform_id for m in await stored(d, f"email:{alice}") if not m.from_bot) != wanted:
                await trio.sleep(0.1)
        await wait_until(lambda: all(any(f"cut {i}" in r.get_body(preferencelist=("plain",)).get_content()
                                         for r in replies_to(border_smtp, alice)) for i in range(3)), timeout=15)
        await trio.sleep(1)  # a second answer to any of them would be here by now
        echoed = "\n".join(r.get_body(preferencelist=("plain",)).get_content() for r in replies_to(border_smtp, alice))
        for i in range(3):
            assert echoed.count(f"written during the cut {i}") == 1, echoed
        assert echoed.count("before the cut") == 1
        assert channel.sessions >= 2
        nursery.cancel_scope.cancel()


def test_mail_told_of_during_a_fetch_ends_the_next_wait(dovecot: Any, border_smtp: Any) -> None:
    """Mail delivered after the search: Dovecot tells of it (EXISTS) at the end of the next answer
    (the FETCH's or the STORE's) and not again in the IDLE after it, so the wait must return at once,
    not after its whole timeout (the channel's next poll, a minute later by default). The CI saw
    this as mail that came during a reconnect answered a minute late."""
    import asyncio
    import time

    from ngb.channels.email_imap import Mailbox
    from ngb.channels.email_settings import EmailSettings

    bot, alice = dovecot.add_user("bot"), dovecot.add_user("alice")
    settings = EmailSettings.from_table({"address": bot, "imap_host": "127.0.0.1", "imap_port": dovecot.imap_port,
                                         "imap_security": "none", "password": PASSWORD, "connect_timeout": "5"})

    async def scene() -> tuple[list[str], float, list[str]]:
        box = Mailbox(settings)
        await box.connect()
        assert box.idle
        border_smtp.send(message(alice, bot, "one", "first"), login=alice)
        first = await box.unseen()
        while not first:  # Dovecot tells of it at the end of the search: found by the next one
            await box.wait(20)
            first = await box.unseen()
        border_smtp.send(message(alice, bot, "two", "second"), login=alice)  # after the search
        await box.fetch(first[0])
        await box.mark_seen(first[0])
        t0 = time.monotonic()
        await box.wait(20)
        waited = time.monotonic() - t0
        second = await box.unseen()
        await box.logout()
        return first, waited, second

    first, waited, second = asyncio.run(asyncio.wait_for(scene(), 45))
    assert len(first) == 1 and len(second) == 1 and second != first
    assert waited < 10, f"the wait sat out {waited:.1f} s of its 20 s with a mail unread"


def test_parse_html_and_trim() -> None:
    m = message("Bob <Bob@Example.Test>", "bot@example.test", "Hi", "plain is ignored here",
                html="<p>Hello <b>there</b></p><blockquote>old stuff</blockquote><div>bye</div>")
    parsed = parse_mail(m.as_bytes())  # the plain part wins when both exist
    assert parsed.sender == "bob@example.test" and parsed.sender_name == "Bob"
    assert parsed.text == "plain is ignored here" and parsed.authenticated is None
    html = message("bob@example.test", "bot@example.test", "Hi", "x")
    html.set_content("<p>Hello <b>there</b></p><blockquote>old stuff</blockquote><div>bye</div>", subtype="html")
    assert parse_mail(html.as_bytes()).text == "Hello there\n\nbye"
    assert trim_quoted("new words\n\nOn Mon, 1 Jan 2024, Alice <a@x.y> wrote:\n> old\n> older") == "new words"
    assert trim_quoted("top\n> quoted\nbottom\n--\nsig") == "top\nbottom"


@pytest.mark.parametrize("header,expected", [
    (f"{AUTHSERV_ID}; dkim=pass header.d=example.test; spf=fail", True),
    (f"{AUTHSERV_ID}; dkim=pass header.d=evil.test; spf=softfail smtp.mailfrom=a@example.test", False),
    (f"{AUTHSERV_ID} (comment); dmarc=pass (p=reject) header.from=example.test", True),
    ("other.host; spf=pass smtp.mailfrom=a@example.test", False),
])
def test_authentication_results(header: str, expected: bool) -> None:
    m = message("a@example.test", "bot@example.test", "s", "b")
    m["Authentication-Results"] = header
    assert parse_mail(m.as_bytes(), AUTHSERV_ID).authenticated is expected


def test_doctor_checks_the_logins(tmp_path: Any, dovecot: Any, border_smtp: Any) -> None:
    from ngb.ops.channel_checks import check_channels
    from tests.conftest import make_config

    bot = dovecot.add_user("bot")
    [ok] = check_channels(make_config(tmp_path, **email_env(dovecot, border_smtp, bot, [])))
    assert ok.status == "ok" and "INBOX has 0 messages (IDLE)" in ok.detail, ok
    env = email_env(dovecot, border_smtp, bot, [])
    env["NGB_EMAIL_PASSWORD"] = "wrong-password-9"
    [bad] = check_channels(make_config(tmp_path, **env))
    assert bad.status == "fail" and "refused the login" in bad.detail and "wrong-password-9" not in bad.detail, bad


async def test_the_same_mail_again_is_answered_once(run_daemon: Any, dovecot: Any, border_smtp: Any) -> None:
    """A mail seen again (a copy, a resend, a mailbox whose UIDVALIDITY changed) is recognised by its
    Message-ID: stored and answered once."""
    bot, alice = dovecot.add_user("bot"), dovecot.add_user("alice")
    d = await start(run_daemon, email_env(dovecot, border_smtp, bot, [alice]))
    channel = d.daemon.channels["email"]
    await d.daemon.registry.add(Group(chat=f"email:{alice}", folder="alice"))
    mail = message(alice, bot, "once", "only once please")
    await trio.to_thread.run_sync(lambda: border_smtp.send(mail, login=alice))
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    await trio.to_thread.run_sync(lambda: border_smtp.send(mail, login=alice))  # the very same mail again
    await wait_until(lambda: channel.received == 2)
    await trio.sleep(0.5)
    assert [m.platform_id for m in await stored(d, f"email:{alice}") if not m.from_bot] == [mail["Message-ID"]]
    assert len(replies_to(border_smtp, alice)) == 1


async def test_a_uidvalidity_change_reads_the_mailbox_again_without_duplicates(
        run_daemon: Any, dovecot: Any, border_smtp: Any, caplog: Any) -> None:
    """The mailbox is rebuilt while the daemon is away (its UID list and indexes lost, as after a
    restore or a server move): UIDVALIDITY changes and every UID is new. An answered mail that comes
    back unseen is recognised by its Message-ID; the new mail is answered once."""
    import logging

    caplog.set_level(logging.WARNING, "ngb.channels.email")
    async with trio.open_nursery() as nursery:
        d, channel, cut, bot, alice, first = await behind_a_cut(nursery, run_daemon, dovecot, border_smtp,
                                                                "answered before the rebuild")
        before = channel.uidvalidity
        assert before

        cut.refusing = True
        cut.cut()
        await wait_until(lambda: channel.state != "connected")
        await trio.sleep(1.1)  # Dovecot's new UIDVALIDITY is the clock's second
        box = dovecot.folder / "mail" / bot / "Maildir"
        for index in [*box.glob("dovecot.index*"), box / "dovecot-uidlist"]:
            index.unlink(missing_ok=True)
        for path in list(mailbox_iter(dovecot.folder, bot)):  # the answered mail is unseen again
            if ":2," in path.name:
                path.rename(path.with_name(path.name.split(":2,")[0] + ":2,"))
        second = message(alice, bot, "two", "written after the rebuild")
        await trio.to_thread.run_sync(lambda: border_smtp.send(second, login=alice))
        cut.refusing = False

        await wait_until(lambda: d.daemon.outbox.delivered == 2, timeout=15)
        await wait_until(lambda: channel.received == 3)  # the first mail read again, and the new one
        assert channel.uidvalidity not in (None, before)
        inbound = [m.platform_id for m in await stored(d, f"email:{alice}") if not m.from_bot]
        assert inbound == [first["Message-ID"], second["Message-ID"]]
        echoed = [r.get_body(preferencelist=("plain",)).get_content() for r in replies_to(border_smtp, alice)]
        assert len(echoed) == 2 and "answered before the rebuild" in echoed[0] and "written after" in echoed[1]
        assert any("UIDVALIDITY changed" in r.getMessage() for r in caplog.records)
        assert all(":2,S" in p.name for p in mailbox_iter(dovecot.folder, bot))  # both marked seen again
        nursery.cancel_scope.cancel()


def restartable(tmp_path: Any, dovecot: Any, border_smtp: Any) -> tuple[str, str, str, Any]:
    """For a daemon a test stops and starts again: (bot, alice, alice's chat, the config)."""
    from tests.conftest import make_config

    bot, alice = dovecot.add_user("bot"), dovecot.add_user("alice")
    return bot, alice, f"email:{alice}", make_config(tmp_path, **email_env(dovecot, border_smtp, bot, [alice]))


async def test_a_reply_after_a_restart_stays_in_its_thread(tmp_path: Any, dovecot: Any, border_smtp: Any) -> None:
    """A correspondent's newest mails are kept in the store: after a restart, an answer to the
    older one (the outbox's reply_to) goes out as "Re: <its subject>" with its In-Reply-To and
    References, and a message with nothing to reply to (a scheduled task's) answers the newest."""
    bot, alice, chat, config = restartable(tmp_path, dovecot, border_smtp)
    async with trio.open_nursery() as nursery:
        d = await StoppableDaemon.start_with(nursery, config, FakeBehaviour(), "email")
        await d.daemon.registry.add(Group(chat=chat, folder="alice"))
        mail = message(alice, bot, "The plan for Friday", "what do we do?", References="<older@example.test>")
        await trio.to_thread.run_sync(lambda: border_smtp.send(mail, login=alice))
        await wait_until(lambda: d.daemon.outbox.delivered == 1)
        newer = message(alice, bot, "Another thing", "and the car?")
        await trio.to_thread.run_sync(lambda: border_smtp.send(newer, login=alice))
        await wait_until(lambda: d.daemon.outbox.delivered == 2)
        await d.stop()

        d = await StoppableDaemon.start_with(nursery, config, FakeBehaviour(), "email")
        answer_id = await d.channel.send(chat, "the late answer", mail["Message-ID"])
        task_id = await d.channel.send(chat, "a reminder from a task")
        sent = {str(m["Message-ID"]): m for m in replies_to(border_smtp, alice)}
        late, reminder = sent[answer_id], sent[task_id]
        assert str(late["Subject"]) == "Re: The plan for Friday"
        assert str(late["In-Reply-To"]) == mail["Message-ID"]
        assert str(late["References"]).split() == ["<older@example.test>", mail["Message-ID"]]
        assert str(reminder["Subject"]) == "Re: Another thing"
        assert str(reminder["In-Reply-To"]) == newer["Message-ID"]
        await d.stop()


async def test_a_reply_whose_smtp_answer_was_lost_goes_again_as_the_same_message(
    tmp_path: Any, dovecot: Any, border_smtp: Any
) -> None:
    """SMTP has no idempotency key: when the server took a reply but its "250" was lost, the outbox
    sends it again. The second copy is the same message (the same Message-ID, made of the outbox
    row's key and the installation's salt, kept across restarts), so a mail client shows it once,
    and the stored reply names that Message-ID."""
    bot, alice, chat, config = restartable(tmp_path, dovecot, border_smtp)
    async with trio.open_nursery() as nursery:
        d = await StoppableDaemon.start_with(nursery, config, FakeBehaviour(), "email")
        await d.daemon.registry.add(Group(chat=chat, folder="alice"))
        border_smtp.relay.lose_answers_from.append(bot)
        mail = message(alice, bot, "Once", "answer me once")
        await trio.to_thread.run_sync(lambda: border_smtp.send(mail, login=alice))
        await wait_until(lambda: d.daemon.outbox.delivered == 1, timeout=20)
        copies = replies_to(border_smtp, alice)
        assert len(copies) == 2 and d.daemon.outbox.retries >= 1  # the lost answer's copy, and the resend
        assert copies[0]["Message-ID"] == copies[1]["Message-ID"]
        bot_rows = [m for m in await stored(d, chat) if m.from_bot]
        assert [m.platform_id for m in bot_rows] == [copies[0]["Message-ID"]]
        before = await d.channel.send(chat, "a keyed note", idempotency_key="ngb999")
        await d.stop()

        d = await StoppableDaemon.start_with(nursery, config, FakeBehaviour(), "email")
        assert await d.channel.send(chat, "a keyed note", idempotency_key="ngb999") == before  # the salt was kept
        assert await d.channel.send(chat, "another", idempotency_key="ngb1000") != before
        await d.stop()


def test_the_kept_threads_survive_an_upgrade_and_a_damaged_mark() -> None:
    """The mark an earlier version kept (one head, no list) is still read after an upgrade; a mark
    that cannot be read keeps nothing rather than stopping the channel."""
    from ngb.channels.email import heads_of, mark_of
    from ngb.channels.email_send import ThreadHead

    earlier = json.dumps({"id": "<a@example.test>", "subject": "Lunch", "references": ["<r@example.test>"]})
    assert heads_of(earlier) == [ThreadHead("<a@example.test>", "Lunch", ("<r@example.test>",))]
    heads = [ThreadHead("<a@example.test>", "Lunch"), ThreadHead("<b@example.test>", "Dinner", ("<a@example.test>",))]
    assert heads_of(mark_of(heads)) == heads
    assert heads_of("{not json") == [] and heads_of(json.dumps({"heads": [{"id": 1}]})) == []
