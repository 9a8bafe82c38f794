"""The email channel: a mailbox read over IMAP, replies sent over SMTP (docs/channels/email.md).

Each correspondent is a chat, ``email:<address>``; every mail in it addresses the bot (it was
written to the bot), so each one triggers. The platform id of a mail is its ``Message-ID``, so a
mail seen twice (a reconnect before it was marked seen, a UIDVALIDITY change, a copy) is stored
and answered once: the store is idempotent on (channel, platform id).

A session: connect and log in (email_imap.Mailbox, on the asyncio bridge), then forever: take
every unseen message (fetched without marking it), parse it (email_parse), refuse it or hand it
to the router, and only then mark it ``\\Seen``; wait for news (IDLE, or a poll). A connection that
dies between the store and the mark leaves the mail unseen: it is taken again next session and
the store recognises it.

Who may trigger: only ``allowed_senders``, and, when ``authserv_id`` names our receiving server,
only a From address its Authentication-Results header proves (DKIM, SPF or DMARC pass for the
From's domain). A refused mail (a stranger, a forged From, an auto-reply, the bot's own mail) is
logged, stored nowhere, and marked seen so it is not read again.

A reply (email_send) answers the message it threads to (the outbox's reply_to, else the chat's
last trigger): ``In-Reply-To``, ``References`` and "Re: " its subject. The newest mails of each
correspondent (KEPT_PER_CHAT of them) are kept in the daemon's store too (the channel's mark for the
chat: their Message-IDs, subjects and references, newest last), so a reply sent after a restart,
to the newest mail or to an older one, stays in its thread."""

from __future__ import annotations

import json
import logging
import secrets
from email.message import EmailMessage
from typing import Any

import trio

from ..media.intake import Fetch, Incoming, with_notes
from ..media.sniff import kind_of
from ..records import InboundMessage, OutgoingFile
from .base import ChannelError, Submit
from .common import CONNECTED, Lru
from .email_imap import Mailbox
from .email_parse import MailFile, ParsedMail, parse_mail
from .email_send import ThreadHead, build_reply, row_message_id, smtp_send
from .email_settings import EmailSettings, address_of, email_chat, sender_allowed
from .skeleton import PlatformChannel

log = logging.getLogger(__name__)

KEPT_PER_CHAT = 20  # thread heads kept in the store per correspondent, for replies after a restart
SALT_MARK = "message-id-salt"  # the installation's part of the Message-IDs of outbox rows (no chat has this name)


class EmailChannel(PlatformChannel):
    name = "email"
    uses_asyncio = True
    takes_idempotency_key = True  # base.IdempotentSend: the row's key names the mail (its Message-ID)
    settings: EmailSettings

    def __init__(self, settings: EmailSettings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self._threads: Lru = Lru(4096)  # Message-ID -> ThreadHead of mails taken in
        self._kept: dict[str, list[ThreadHead]] = {}  # chat -> its newest mails' heads, newest last
        self._salt = secrets.token_hex(6)  # replaced by the kept one at prepare
        self.mode = ""  # "idle" or "poll", once connected
        self.uidvalidity: str | None = None
        self.refused = 0
        self.sessions = 0
        if settings.password:
            self.keep_secret(*(p for p in {settings.password, settings.smtp_password or ""} if len(p) >= 6))

    def details(self) -> dict[str, Any]:
        return {"received": self.received, "refused": self.refused}

    def status_details(self) -> dict[str, Any]:
        return {"address": self.settings.address, "mailbox": self.settings.mailbox, "mode": self.mode,
                "uidvalidity": self.uidvalidity}

    async def prepare(self) -> None:
        await super().prepare()
        if self.memory is not None:
            try:
                marks = await self.memory.channel_marks(self.name)
                self._kept = {chat: heads_of(mark) for chat, mark in marks.items() if chat.startswith("email:")}
                if SALT_MARK in marks:
                    self._salt = marks[SALT_MARK]
                else:
                    await self.memory.set_channel_mark(self.name, SALT_MARK, self._salt)
            except Exception as exc:  # noqa: BLE001 - replies thread by In-Reply-To alone then
                log.warning("email: could not read or keep the channel's marks (threads, Message-ID salt): %s", exc)

    # -- receiving -----------------------------------------------------------------------------------
    async def session(self, submit: Submit) -> None:
        box = Mailbox(self.settings)
        try:
            await self.bridge.call(box.connect)
            self.sessions += 1
            self.mode = "idle" if box.idle else "poll"
            if self.uidvalidity is not None and box.uidvalidity != self.uidvalidity:
                log.warning("email: %s's UIDVALIDITY changed (%s -> %s): unseen mail is read again, and "
                            "what is already stored is recognised by its Message-ID",
                            self.settings.mailbox, self.uidvalidity, box.uidvalidity)
            self.uidvalidity = box.uidvalidity
            self.status.set(CONNECTED)
            # with IDLE, a search every poll_interval all the same: a push lost in a race is caught
            wait = min(self.settings.idle_renew, self.settings.poll_interval) if box.idle else self.settings.poll_interval
            while True:
                await self._take_unseen(box, submit)
                await self.bridge.call(box.wait, wait)
        finally:
            await self.close_on_loop(box.logout, "the IMAP connection")

    async def _take_unseen(self, box: Mailbox, submit: Submit) -> None:
        for uid in await self.bridge.call(box.unseen):
            raw = await self.bridge.call(box.fetch, uid)
            if raw is not None:
                await self._take(parse_mail(raw, self.settings.authserv_id), submit)
            await self.bridge.call(box.mark_seen, uid)  # only after the store has it (or it was refused)

    async def _take(self, mail: ParsedMail, submit: Submit) -> None:
        why = self.refusal(mail)
        if why is not None:
            self.refused += 1
            log.warning("email: mail %s from %s refused: %s", mail.message_id, mail.sender or "?", why)
            return
        head = ThreadHead(mail.message_id, mail.subject, mail.references)
        self._threads.put(mail.message_id, head)
        text = mail.text if not mail.subject else f"{mail.subject}\n\n{mail.text}".strip()
        chat = email_chat(mail.sender)
        taken = await self.media.take_all(chat, [(incoming_of(f), fetch_of(f)) for f in mail.files])
        inbound = InboundMessage(
            chat=chat, sender=mail.sender_name, sender_id=mail.sender, text=with_notes(text, taken.notes),
            platform_id=mail.message_id, time=mail.time, mentions_bot=True, direct=True,
            reply_to=mail.in_reply_to, attachments=taken.attachments,
        )
        await self._gate.submit(submit, inbound)  # raises when the store failed: the mail stays unseen
        await self._keep(chat, head)

    async def _keep(self, chat: str, head: ThreadHead) -> None:
        """The chat's newest mails, for replies after a restart (one row per correspondent)."""
        heads = [h for h in self._kept.get(chat, []) if h.message_id != head.message_id]
        heads = [*heads, head][-KEPT_PER_CHAT:]
        self._kept[chat] = heads
        if self.memory is not None:
            try:
                await self.memory.set_channel_mark(self.name, chat, mark_of(heads))
            except Exception as exc:  # noqa: BLE001 - the mail is stored; only its subject would be lost
                log.warning("email: could not keep the thread of %s (%s)", chat, exc)

    def refusal(self, mail: ParsedMail) -> str | None:
        """Why this mail may not reach the agent (None: it may)."""
        if not mail.sender:
            return "no From address"
        if mail.sender == self.settings.address:
            return "written by the bot's own address"
        if mail.automatic:
            return "an automatic mail (Auto-Submitted, Precedence or List-Id)"
        if not sender_allowed(self.settings, mail.sender):
            return "the sender is not in channels.email.allowed_senders"
        if mail.authenticated is False:
            return (f"the From address is not proven: no DKIM/SPF/DMARC pass for its domain in the "
                    f"Authentication-Results of {self.settings.authserv_id}")
        return None

    # -- sending -------------------------------------------------------------------------------------
    async def send(self, chat: str, text: str, reply_to: str | None = None, *,
                   idempotency_key: str | None = None) -> str | None:
        """Send ``text`` as one mail answering ``reply_to`` (else the chat's last trigger); returns
        its Message-ID, which ``idempotency_key`` (the outbox row's) fixes: SMTP has no key of its
        own, and a resend after a lost answer is then the same message, not a second one."""
        msg = build_reply(self.settings, address_of(chat), text, self._head(chat, reply_to),
                          self._message_id(idempotency_key))
        return await self._send_mail(msg)

    async def send_file(self, chat: str, file: OutgoingFile, reply_to: str | None = None, *,
                        idempotency_key: str | None = None) -> str | None:
        """A mail in the thread with ``file`` attached, its caption (or its name) as the text."""
        msg = build_reply(self.settings, address_of(chat), file.caption or file.name, self._head(chat, reply_to),
                          self._message_id(idempotency_key))
        data = await trio.to_thread.run_sync(file.path.read_bytes)
        maintype, _, subtype = file.mime.partition("/")
        msg.add_attachment(data, maintype=maintype or "application", subtype=subtype or "octet-stream",
                           filename=file.name)
        return await self._send_mail(msg)

    def _message_id(self, key: str | None) -> str | None:
        return row_message_id(self.settings, key, self._salt) if key else None

    def _head(self, chat: str, reply_to: str | None) -> ThreadHead | None:
        """What a reply threads to: ``reply_to``, else the chat's last trigger."""
        kept = self._kept.get(chat, [])
        trigger = reply_to or self._last_trigger.get(chat) or (kept[-1].message_id if kept else None)
        head = self._threads.get(trigger) if trigger else None
        if head is None:
            head = next((h for h in kept if h.message_id == trigger), None)  # from before a restart
        if head is None and trigger:
            head = ThreadHead(trigger, "")  # threaded all the same; the subject was not kept
        return head

    async def _send_mail(self, msg: EmailMessage) -> str:
        if not self.bridge.running:
            raise ChannelError("the email channel is not running")
        await self.bridge.call(smtp_send, self.settings, msg)
        return str(msg["Message-ID"])


def mark_of(heads: list[ThreadHead]) -> str:
    """The chat's mark in the store: its kept heads as JSON, newest last."""
    return json.dumps({"heads": [{"id": h.message_id, "subject": h.subject, "references": list(h.references[-20:])}
                                 for h in heads]})


def heads_of(mark: str | None) -> list[ThreadHead]:
    """The heads a mark keeps; a mark an earlier version wrote (one head, no list) is read too, and
    one that cannot be read keeps nothing (replies thread by In-Reply-To alone then)."""
    try:
        data = json.loads(mark) if mark else {}
        items = data["heads"] if "heads" in data else [data] if data else []
        return [ThreadHead(str(d["id"]), str(d["subject"]), tuple(map(str, d["references"]))) for d in items]
    except (ValueError, KeyError, TypeError):
        log.warning("email: a kept thread could not be read; replies to it thread by In-Reply-To alone")
        return []


def incoming_of(file: MailFile) -> Incoming:
    return Incoming(kind_of(file.mime), name=file.name, mime=file.mime, size=len(file.data))


def fetch_of(file: MailFile) -> Fetch:
    async def fetch() -> bytes:
        return file.data

    return fetch
