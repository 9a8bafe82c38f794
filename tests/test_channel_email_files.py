"""Email attachments in and out, through the real daemon (in-process, fake agent) against the real
Dovecot and the aiosmtpd border MTA (tests/mail_servers.py): a mail's attached files reach the
store as attachments with the same bytes, the body stays the text; the agent's file goes back as
a mail in the thread with the file attached."""

from __future__ import annotations

from typing import Any

import trio

from ngb.records import AttachmentKind, Group, OutgoingFile
from tests.channel_helpers import stored, wait_until
from tests.mail_servers import message
from tests.test_channel_email import email_env, replies_to, start
from tests.test_media_dingtalk import PDF, png


async def test_attachments_in_and_a_file_out_in_the_thread(run_daemon: Any, dovecot: Any, border_smtp: Any) -> None:
    bot, alice = dovecot.add_user("bot"), dovecot.add_user("alice")
    d = await start(run_daemon, email_env(dovecot, border_smtp, bot, [alice]))
    chat = f"email:{alice}"
    await d.daemon.registry.add(Group(chat=chat, folder="alice"))
    photo = png(4, 3)
    mail = message(alice, bot, "The invoice", "Can you check the attached invoice and photo?")
    mail.add_attachment(PDF, maintype="application", subtype="pdf", filename="invoice.pdf")
    mail.add_attachment(photo, maintype="image", subtype="png", filename="shelf.png")
    await trio.to_thread.run_sync(lambda: border_smtp.send(mail, login=alice))
    await wait_until(lambda: d.daemon.outbox.delivered == 1)  # the reply to it sent and stored
    (taken, _reply) = await stored(d, chat)
    assert taken.text == "The invoice\n\nCan you check the attached invoice and photo?"  # no file bytes in the text
    files = {a.name: a for a in taken.attachments}
    assert set(files) == {"invoice.pdf", "shelf.png"}, files
    assert files["invoice.pdf"].kind is AttachmentKind.DOCUMENT and files["shelf.png"].kind is AttachmentKind.IMAGE
    assert d.daemon.media_files.path(files["invoice.pdf"].sha256).read_bytes() == PDF
    assert d.daemon.media_files.path(files["shelf.png"].sha256).read_bytes() == photo

    stored_chart = await d.daemon.media_files.write_bytes(photo)
    out = OutgoingFile(path=d.daemon.media_files.path(stored_chart.sha256), name="chart.png", mime="image/png",
                       kind=AttachmentKind.IMAGE, size=len(photo), caption="Here is the chart")
    channel = d.daemon.channels["email"]
    sent_id = await channel.send_file(chat, out, mail["Message-ID"])
    sent = await wait_until(lambda: [m for m in replies_to(border_smtp, alice) if str(m["Message-ID"]) == sent_id])
    assert str(sent[0]["In-Reply-To"]) == mail["Message-ID"] and str(sent[0]["Subject"]) == "Re: The invoice"
    (attached,) = list(sent[0].iter_attachments())
    assert attached.get_filename() == "chart.png" and attached.get_content_type() == "image/png"
    assert attached.get_payload(decode=True) == photo
    assert sent[0].get_body(preferencelist=("plain",)).get_content().strip() == "Here is the chart"
