"""Telegram media: files in (getFile + download into the media store, albums as one message, notes
for what cannot be had) and files out (sendPhoto / sendDocument / sendVoice multipart uploads), the
real python-telegram-bot against tests/fakes/telegram.py, the channel run on its own."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from PIL import Image

from ngb.channels.base import ChannelError
from ngb.channels.telegram import TelegramChannel, TelegramSettings
from ngb.media.files import MediaFiles
from ngb.media.intake import MediaIntake
from ngb.media.limits import MB, MediaLimits
from ngb.records import AttachmentKind, InboundMessage, Message, OutgoingFile
from tests.channel_helpers import wait_until
from tests.fakes.telegram import FakeTelegram

TOKEN = "123456:TEST-token"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def image(fmt: str, size: tuple[int, int], color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


@attrs.define
class Running:
    channel: TelegramChannel
    fake: FakeTelegram
    intake: MediaIntake
    received: list[InboundMessage]

    def stored_bytes(self, sha256: str) -> bytes:
        return self.intake.files.path(sha256).read_bytes()


    async def submit(self, inbound: InboundMessage) -> Message:
        """The router's part: the message is "stored" when this returns."""
        self.received.append(inbound)
        return Message(id=len(self.received), chat=inbound.chat, sender=inbound.sender, text=inbound.text,
                       time=inbound.time, platform_id=inbound.platform_id)


def channel_for(fake: FakeTelegram, tmp_path: Path, **table: Any) -> Running:
    settings = TelegramSettings.from_table({"token": TOKEN, "base_url": fake.base_url, "poll_timeout": 1,
                                            "album_wait": "0.3", "reconnect_base": "0.05", **table})
    intake = MediaIntake(MediaFiles(tmp_path / "media"), MediaLimits(max_file_bytes=20 * MB))
    return Running(TelegramChannel(settings, media=intake), fake, intake, [])


@pytest.fixture
async def tg(tmp_path: Path) -> AsyncIterator[Running]:
    async with FakeTelegram.serving(token=TOKEN) as fake, trio.open_nursery() as nursery:
        running = channel_for(fake, tmp_path)
        await nursery.start(running.channel.run, running.submit)
        await wait_until(lambda: running.channel.state == "connected")
        yield running
        nursery.cancel_scope.cancel()


# -- in ---------------------------------------------------------------------------------------------
async def test_photo_in_is_an_image_attachment_of_the_largest_size_that_fits(tg: Running) -> None:
    small, large = image("JPEG", (90, 60)), image("JPEG", (1280, 960), "blue")
    # three sizes, as Telegram sends them; the largest declares 30 MB: over the limit, never fetched
    sent = tg.fake.user_media(4242, "photo", photo_sizes=[small, large, b"\xff\xd8\xff never"],
                              declared_size=30 * MB, caption="what is this?")
    (m,) = await wait_until(lambda: tg.received)
    assert (m.text, m.platform_id, m.chat) == ("what is this?", f"4242:{sent['message_id']}", "telegram:4242")
    (a,) = m.attachments
    assert (a.kind, a.mime, a.size) == (AttachmentKind.IMAGE, "image/jpeg", len(large))
    assert tg.stored_bytes(a.sha256) == large
    assert [status for _, status in tg.fake.downloads] == [200]  # one download: the size chosen


async def test_voice_and_document_in(tg: Running) -> None:
    ogg = b"OggS\x00\x02" + b"\x00" * 200
    tg.fake.user_media(4242, "voice", ogg, mime_type="audio/ogg")
    tg.fake.user_media(4242, "document", PDF, file_name="../../report.pdf", mime_type="application/pdf",
                       caption="the report")
    voice, doc = await wait_until(lambda: len(tg.received) == 2 and tg.received)
    assert voice.text == "" and [(a.kind, a.mime) for a in voice.attachments] == [(AttachmentKind.VOICE, "audio/ogg")]
    assert tg.stored_bytes(voice.attachments[0].sha256) == ogg
    (a,) = doc.attachments
    assert (doc.text, a.kind, a.mime, a.name) == ("the report", AttachmentKind.DOCUMENT, "application/pdf", "report.pdf")
    assert tg.stored_bytes(a.sha256) == PDF


async def test_album_of_two_is_one_message_with_both_files(tg: Running) -> None:
    photo = image("JPEG", (640, 480))
    first = tg.fake.user_media(-100123, "photo", photo, media_group_id="1357", caption="@andy_bot both pages")
    tg.fake.user_media(-100123, "document", PDF, media_group_id="1357", file_name="page2.pdf")
    (m,) = await wait_until(lambda: tg.received)
    assert m.platform_id == f"-100123:{first['message_id']}" and m.mentions_bot
    assert m.text == "@andy_bot both pages"
    assert [(a.kind, tg.stored_bytes(a.sha256)) for a in m.attachments] == [
        (AttachmentKind.IMAGE, photo), (AttachmentKind.DOCUMENT, PDF)]
    await wait_until(lambda: not tg.fake.updates)  # confirmed to Telegram once the album was taken
    tg.fake.user_message(-100123, "next")
    await wait_until(lambda: len(tg.received) == 2)
    assert [m.text for m in tg.received] == ["@andy_bot both pages", "next"]  # no part twice, none lost


async def test_album_is_complete_when_another_message_follows(tg: Running) -> None:
    tg.fake.user_media(-100123, "photo", image("PNG", (20, 20)), media_group_id="a", caption="first")
    tg.fake.user_media(-100123, "photo", image("PNG", (30, 30)), media_group_id="a", caption="second")
    tg.fake.user_message(-100123, "plain text after")
    tg.fake.user_media(-100123, "photo", image("PNG", (40, 40)), media_group_id="b")
    await wait_until(lambda: len(tg.received) == 3)
    assert [(m.text, len(m.attachments)) for m in tg.received] == [
        ("first\nsecond", 2), ("plain text after", 0), ("", 1)]


async def test_too_large_declared_file_is_a_note_and_never_downloaded(tg: Running) -> None:
    tg.fake.user_media(4242, "document", PDF, file_name="big.pdf", declared_size=31 * MB, caption="see this")
    (m,) = await wait_until(lambda: tg.received)
    assert m.text == "see this\n[file big.pdf: too large, 31 MB > 20 MB]" and m.attachments == ()
    assert tg.fake.downloads == [] and "getFile" not in [method for method, _ in tg.fake.requests]


@pytest.mark.parametrize("status", [404, 500])
async def test_failed_download_leaves_the_message_with_a_note(tg: Running, status: int) -> None:
    tg.fake.fail_download(status)
    tg.fake.user_media(4242, "photo", image("JPEG", (50, 50)))
    (m,) = await wait_until(lambda: tg.received)
    assert m.text == f"[photo: the download failed (HTTP {status})]" and m.attachments == ()
    assert TOKEN not in m.text


async def test_sticker_keeps_its_placeholder(tg: Running) -> None:
    tg.fake.user_media(4242, "sticker", b"RIFF....WEBP")
    (m,) = await wait_until(lambda: tg.received)
    assert (m.text, m.attachments) == ("[sticker]", ())


# -- out --------------------------------------------------------------------------------------------
def outgoing(tmp_path: Path, name: str, data: bytes, mime: str, kind: AttachmentKind, caption: str = "") -> OutgoingFile:
    path = tmp_path / f"stored-{name}"
    path.write_bytes(data)
    return OutgoingFile(path=path, name=name, mime=mime, kind=kind, size=len(data), caption=caption)


async def test_send_png_is_a_photo_with_its_bytes_and_caption(tg: Running, tmp_path: Path) -> None:
    png = image("PNG", (64, 48))
    trigger = tg.fake.user_message(4242, "draw it")
    await wait_until(lambda: tg.received)
    pid = await tg.channel.send_file("telegram:4242", outgoing(tmp_path, "chart.png", png, "image/png",
                                                              AttachmentKind.IMAGE, "the **chart**"))
    (up,) = tg.fake.uploads
    assert (up["method"], up["chat_id"], up["bytes"], up["caption"]) == ("sendPhoto", 4242, png, "the chart")
    assert up["reply_to"] == trigger["message_id"]  # threaded to the trigger, like send
    assert pid == f"4242:{up['message']['message_id']}"


async def test_send_pdf_is_a_document(tg: Running, tmp_path: Path) -> None:
    await tg.channel.send_file("telegram:-100123", outgoing(tmp_path, "report.pdf", PDF, "application/pdf",
                                                           AttachmentKind.DOCUMENT))
    (up,) = tg.fake.uploads
    assert (up["method"], up["chat_id"], up["bytes"], up["filename"], up["caption"]) == (
        "sendDocument", -100123, PDF, "report.pdf", "")


async def test_send_ogg_is_a_voice_note(tg: Running, tmp_path: Path) -> None:
    ogg = b"OggS\x00\x02" + bytes(range(256)) * 4
    await tg.channel.send_file("telegram:4242", outgoing(tmp_path, "reply.ogg", ogg, "audio/ogg", AttachmentKind.VOICE))
    (up,) = tg.fake.uploads
    assert (up["method"], up["bytes"]) == ("sendVoice", ogg)


async def test_long_caption_follows_as_a_text_message(tg: Running, tmp_path: Path) -> None:
    caption = "word " * 400  # 2000 characters: over Telegram's 1024 for a caption
    await tg.channel.send_file("telegram:4242", outgoing(tmp_path, "a.pdf", PDF, "application/pdf",
                                                        AttachmentKind.DOCUMENT, caption))
    (up,) = tg.fake.uploads
    assert up["caption"] == "" and [s["text"] for s in tg.fake.sent] == [caption.strip()]


async def test_send_file_errors_are_channel_errors(tg: Running, tmp_path: Path) -> None:
    f = outgoing(tmp_path, "a.pdf", PDF, "application/pdf", AttachmentKind.DOCUMENT)
    tg.fake.fail_next("sendDocument", 403, "Forbidden: bot was blocked by the user")
    with pytest.raises(ChannelError) as blocked:
        await tg.channel.send_file("telegram:4242", f)
    assert not blocked.value.retryable
    tg.fake.fail_next("sendDocument", 502, "Bad Gateway")
    with pytest.raises(ChannelError) as gateway:
        await tg.channel.send_file("telegram:4242", f)
    assert gateway.value.retryable
    assert tg.fake.uploads == []
    await tg.channel.send_file("telegram:4242", f)  # the outbox's retry
    assert len(tg.fake.uploads) == 1


def test_fake_reads_multipart_like_the_bot_api() -> None:
    from tests.fakes.telegram_files import parse_multipart

    body = (b'--XyZ\r\nContent-Disposition: form-data; name="chat_id"\r\n\r\n42\r\n'
            b'--XyZ\r\nContent-Disposition: form-data; name="reply_parameters"\r\n\r\n' + json.dumps({"message_id": 3}).encode()
            + b'\r\n--XyZ\r\nContent-Disposition: form-data; name="photo"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n\r\n\x00\r\n--XyZ--\r\n")
    fields, files = parse_multipart('multipart/form-data; boundary="XyZ"', body)
    assert fields == {"chat_id": "42", "reply_parameters": '{"message_id": 3}'}
    assert files == {"photo": {"filename": "a.png", "mime": "image/png", "bytes": b"\x89PNG\r\n\x1a\n\r\n\x00"}}


async def test_album_held_when_the_connection_drops_comes_again_and_is_stored_once(tg: Running) -> None:
    await tg.fake.wait_for_polls(1)  # a long poll is in flight
    tg.fake.fail_next("getUpdates", 502, "Bad Gateway")  # the poll after it fails: the session ends
    first = tg.fake.user_media(-100123, "photo", image("PNG", (20, 20)), media_group_id="g", caption="one")
    tg.fake.user_media(-100123, "photo", image("PNG", (30, 30)), media_group_id="g")
    (m,) = await wait_until(lambda: tg.received)
    assert tg.channel.status.reconnects >= 1  # the parts held were never confirmed: Telegram sent them again
    assert (m.platform_id, m.text, len(m.attachments)) == (f"-100123:{first['message_id']}", "one", 2)
    await wait_until(lambda: not tg.fake.updates)
    tg.fake.user_message(-100123, "two")
    await wait_until(lambda: len(tg.received) == 2)
    assert [m.text for m in tg.received] == ["one", "two"]


# -- webhook mode -------------------------------------------------------------------------------------
SECRET = "Webhook_secret-0123456789"


async def post_updates(running: Running) -> list[int]:
    """Deliver the queued updates to the channel's webhook handler, as Telegram POSTs them."""
    updates, running.fake.updates[:] = list(running.fake.updates), []
    statuses = []
    for update in updates:
        status, _ = await running.channel.handle_callback(
            "POST", {}, json.dumps(update).encode(), headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
        statuses.append(status)
    return statuses


@pytest.mark.parametrize("album_wait", ["0.3", "1h"])
async def test_webhook_album_is_one_message_once_quiet_or_when_the_session_ends(tmp_path: Path, album_wait: str) -> None:
    async with FakeTelegram.serving(token=TOKEN) as fake:
        fake.retry_delay = 3600  # the test delivers the updates itself
        running = channel_for(fake, tmp_path, mode="webhook", webhook_secret=SECRET, album_wait=album_wait,
                              webhook_url="http://127.0.0.1:9/channels/telegram/webhook")
        async with trio.open_nursery() as nursery:
            await nursery.start(running.channel.run, running.submit)
            await wait_until(lambda: running.channel.state == "connected")
            first = fake.user_media(-100123, "photo", image("PNG", (20, 20)), media_group_id="w", caption="hi")
            fake.user_media(-100123, "document", PDF, media_group_id="w", file_name="x.pdf")
            assert await post_updates(running) == [200, 200]
            if album_wait == "0.3":
                await wait_until(lambda: running.received)  # no new part came: complete
            else:
                assert running.received == []  # held (answered 200), stored when the session ends
            nursery.cancel_scope.cancel()
    (m,) = running.received
    assert (m.platform_id, m.text) == (f"-100123:{first['message_id']}", "hi")
    assert [a.kind for a in m.attachments] == [AttachmentKind.IMAGE, AttachmentKind.DOCUMENT]
