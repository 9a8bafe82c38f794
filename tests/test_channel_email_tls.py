"""Email over TLS and without IDLE, against the real Dovecot (a throwaway certificate: STARTTLS on
its IMAP port, implicit TLS on its IMAPS port) and an aiosmtpd submission server that requires
STARTTLS: the mail is read and answered with every byte encrypted; a certificate the channel does
not trust stops it with a clear state; with ``idle = false`` the mailbox is polled, and a
connection cut mid-poll loses nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio

from ngb.records import Group
from tests.channel_helpers import stored, wait_until
from tests.mail_servers import BorderSmtp, message
from tests.test_channel_email import behind_a_cut, email_env, replies_to, start


@pytest.fixture
def submission(dovecot: Any) -> Iterator[BorderSmtp]:
    """The bot's outgoing server: STARTTLS required, the same certificate as the Dovecot's."""
    server = BorderSmtp.start(dovecot.lmtp_port, tls=(dovecot.cert, dovecot.folder / "key.pem"))
    yield server
    server.stop()


@pytest.mark.parametrize("imap", ["starttls", "tls"])
async def test_read_and_answered_over_tls(run_daemon: Any, dovecot: Any, border_smtp: Any, submission: BorderSmtp,
                                          imap: str) -> None:
    bot, alice = dovecot.add_user("bot"), dovecot.add_user("alice")
    port = dovecot.imap_port if imap == "starttls" else dovecot.imaps_port
    env = email_env(dovecot, submission, bot, [alice], imap_port=port, imap_security=imap, imap_host="localhost",
                    smtp_security="starttls", smtp_host="localhost", ca_file=str(dovecot.cert))
    d = await start(run_daemon, env)
    await d.daemon.registry.add(Group(chat=f"email:{alice}", folder="alice"))
    mail = message(alice, bot, "Secret", "is this line encrypted?")
    await trio.to_thread.run_sync(lambda: border_smtp.send(mail, login=alice))
    await wait_until(lambda: d.daemon.outbox.delivered == 1)
    (reply,) = replies_to(submission, alice)
    assert str(reply["In-Reply-To"]) == mail["Message-ID"]
    assert submission.relay.over_tls == [True]  # the reply went out over STARTTLS
    assert "TLS" in dovecot.log() and f"user=<{bot}>" in dovecot.log()
    logins = [line for line in dovecot.log().splitlines() if f"Login: user=<{bot}>" in line]
    assert logins and all("TLS" in line for line in logins), logins  # every IMAP login was encrypted


async def test_a_certificate_not_trusted_stops_the_channel_with_a_clear_state(run_daemon: Any, dovecot: Any,
                                                                            submission: BorderSmtp) -> None:
    bot = dovecot.add_user("bot")
    env = email_env(dovecot, submission, bot, [], imap_security="starttls", imap_host="localhost",
                    smtp_security="starttls", smtp_host="localhost")  # no ca_file: the system's CAs
    d = await run_daemon(None, **env)
    channel = d.daemon.channels["email"]
    await wait_until(lambda: "CERTIFICATE_VERIFY_FAILED" in str(channel.describe()))
    assert channel.state != "connected"
    assert not [line for line in dovecot.log().splitlines() if f"Login: user=<{bot}>" in line]  # never logged in


async def test_polled_without_idle_and_a_cut_mid_poll_loses_nothing(run_daemon: Any, dovecot: Any,
                                                                    border_smtp: Any) -> None:
    async with trio.open_nursery() as nursery:
        d, channel, cut, bot, alice, first = await behind_a_cut(nursery, run_daemon, dovecot, border_smtp,
                                                                "polled before the cut", idle="false",
                                                                poll_interval="0.3s")
        assert channel.mode == "poll"
        cut.refusing = True
        cut.cut()  # mid-poll: the connection dies between two searches
        await wait_until(lambda: channel.state != "connected")
        later = [message(alice, bot, f"later {i}", f"polled after the cut {i}") for i in range(2)]
        for m in later:
            await trio.to_thread.run_sync(lambda m=m: border_smtp.send(m, login=alice))
        cut.refusing = False
        await wait_until(lambda: channel.state == "connected")
        await wait_until(lambda: channel.received == 3, timeout=15)

        def echoed() -> str:
            return "\n".join(r.get_body(preferencelist=("plain",)).get_content() for r in replies_to(border_smtp, alice))

        await wait_until(lambda: "polled after the cut 1" in echoed() and "polled after the cut 0" in echoed(), timeout=15)
        inbound = [m.platform_id for m in await stored(d, f"email:{alice}") if not m.from_bot]
        assert sorted(inbound) == sorted(str(m["Message-ID"]) for m in [first, *later])
        for text in ["polled before the cut", "polled after the cut 0", "polled after the cut 1"]:
            assert echoed().count(text) == 1, echoed()
        nursery.cancel_scope.cancel()
