"""Discord's files, in and out: the real discord.py (through the asyncio bridge) against
tests/fakes/discord.py, whose CDN serves the attachments and whose REST takes multipart creates;
files are stored by a real MediaIntake."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from ngb.channels.base import ChannelError
from ngb.channels.discord import DiscordChannel, DiscordSettings
from ngb.media.files import MediaFiles
from ngb.media.intake import MediaIntake
from ngb.media.limits import MB, MediaLimits
from ngb.records import AttachmentKind, InboundMessage, OutgoingFile
from tests.channel_helpers import wait_until
from tests.fakes.discord import BOT_ID, IS_VOICE_MESSAGE, FakeDiscord

TOKEN = "TEST.discord.token"
CHAN = 920000000000000001
CHAT = f"discord:{CHAN}"


def png(width: int = 3, height: int = 2) -> bytes:
    """A real (tiny, grey) PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n" + bytes(range(256)) * 40
OGG = b"OggS\x00\x02" + b"\x00" * 20 + b"OpusHead" + bytes(range(200))


@attrs.define
class Running:
    fake: FakeDiscord
    channel: DiscordChannel
    intake: MediaIntake
    got: list[InboundMessage]

    def stored_bytes(self, index: int = 0, message: int = -1) -> bytes:
        return self.intake.files.path(self.got[message].attachments[index].sha256).read_bytes()


@pytest.fixture
async def fake_dc() -> AsyncIterator[FakeDiscord]:
    async with trio.open_nursery() as nursery:
        fake = await FakeDiscord.start(nursery, token=TOKEN, heartbeat_ms=300)
        yield fake
        nursery.cancel_scope.cancel()


@pytest.fixture
async def running(fake_dc: FakeDiscord, tmp_path: Path, request: Any) -> AsyncIterator[Running]:
    """The channel alone (no daemon), connected to the fake; what it submits lands in ``got``."""
    limits = getattr(request, "param", None) or MediaLimits()
    intake = MediaIntake(MediaFiles(tmp_path / "media"), limits)
    settings = DiscordSettings(token=TOKEN, api_base=fake_dc.api_base, gateway_url=fake_dc.gateway_url,
                               reconnect_base=0.05, reconnect_cap=0.3, connect_timeout=10)
    channel = DiscordChannel(settings, media=intake)
    got: list[InboundMessage] = []

    async def submit(inbound: InboundMessage) -> Any:
        got.append(inbound)

    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run, submit)
        await wait_until(lambda: channel.state == "connected")
        yield Running(fake_dc, channel, intake, got)
        nursery.cancel_scope.cancel()


async def test_a_photo_in_is_an_image_attachment_with_its_bytes(running: Running) -> None:
    fake, image = running.fake, png()
    fake.user_message(CHAN, f"<@{BOT_ID}> what is this?",
                      attachments=[fake.attachment(CHAN, "cat photo.png", image, content_type="image/png")])
    (inbound,) = await wait_until(lambda: running.got)
    assert inbound.text == "@Andy what is this?" and inbound.mentions_bot
    (att,) = inbound.attachments
    assert (att.kind, att.mime, att.size, att.name) == (AttachmentKind.IMAGE, "image/png", len(image), "cat_photo.png")
    assert running.stored_bytes() == image
    assert len(fake.downloads) == 1  # from the CDN path, signed; no token needed

    # a file alone (no text): the message is its file; the type comes from the bytes, not the name
    fake.user_message(CHAN, "", attachments=[fake.attachment(CHAN, "notes.txt", PDF, content_type="text/plain")])
    await wait_until(lambda: len(running.got) == 2)
    assert running.got[1].text == "" and "[file" not in running.got[1].text
    assert [(a.kind, a.mime) for a in running.got[1].attachments] == [(AttachmentKind.DOCUMENT, "application/pdf")]
    assert running.stored_bytes(message=1) == PDF


async def test_a_voice_message_is_voice(running: Running) -> None:
    fake = running.fake
    fake.user_message(CHAN, "", attachments=[fake.attachment(CHAN, "voice-message.ogg", OGG, content_type="audio/ogg",
                                                             voice=True)], flags=IS_VOICE_MESSAGE)
    (inbound,) = await wait_until(lambda: running.got)
    assert [(a.kind, a.mime) for a in inbound.attachments] == [(AttachmentKind.VOICE, "audio/ogg")]
    assert running.stored_bytes() == OGG


@pytest.mark.parametrize("running", [MediaLimits(max_file_bytes=1 * MB)], indirect=True)
async def test_a_file_declared_too_large_is_a_note_and_never_downloaded(running: Running) -> None:
    fake = running.fake
    big = fake.attachment(CHAN, "big.png", png(), content_type="image/png", size=31 * MB)
    fake.user_message(CHAN, "look at this", attachments=[big])
    (inbound,) = await wait_until(lambda: running.got)
    assert inbound.text == "look at this\n[photo big.png: too large, 31 MB > 1 MB]"
    assert inbound.attachments == () and fake.downloads == []


async def test_a_failed_download_is_a_note_and_the_message_is_still_submitted(running: Running) -> None:
    fake, image = running.fake, png()
    fake.fail_next("GET /attachments", 500)  # the first of the two files
    fake.user_message(CHAN, "the report and a chart", attachments=[
        fake.attachment(CHAN, "report.pdf", PDF, content_type="application/pdf"),
        fake.attachment(CHAN, "chart.png", image, content_type="image/png")])
    (inbound,) = await wait_until(lambda: running.got)
    assert inbound.text == "the report and a chart\n[file report.pdf: the download failed (HTTP 500)]"
    assert [a.name for a in inbound.attachments] == ["chart.png"] and running.stored_bytes() == image


async def test_files_a_resume_does_not_replay_are_taken_from_the_history(running: Running) -> None:
    fake = running.fake
    fake.user_message(CHAN, "first")
    await wait_until(lambda: running.got)  # the chat now has a mark: it is caught up after a reconnect
    fake.replay_on_resume = False
    fake.down()
    await wait_until(lambda: running.channel.state != "connected")
    fake.user_message(CHAN, "while away", attachments=[fake.attachment(CHAN, "away.pdf", PDF,
                                                                       content_type="application/pdf")])
    fake.up()
    await wait_until(lambda: len(running.got) == 2)
    assert running.got[1].text == "while away" and running.stored_bytes(message=1) == PDF
    assert any(query for channel, query in fake.history_queries if channel == CHAN)


def outgoing(tmp_path: Path, name: str, data: bytes, mime: str, kind: AttachmentKind, caption: str = "") -> OutgoingFile:
    path = tmp_path / f"stored-{name}"
    path.write_bytes(data)
    return OutgoingFile(path=path, name=name, mime=mime, kind=kind, size=len(data), caption=caption)


async def test_send_file_posts_a_png_and_a_pdf_as_multipart(running: Running, tmp_path: Path) -> None:
    fake, image = running.fake, png(40, 30)
    trigger = fake.user_message(CHAN, f"<@{BOT_ID}> draw me a chart")
    await wait_until(lambda: running.got)

    chart = outgoing(tmp_path, "chart.png", image, "image/png", AttachmentKind.IMAGE, caption="here is the chart")
    first = await running.channel.send_file(CHAT, chart, reply_to=trigger["id"])
    (sent,) = fake.sent
    assert first == sent["message"]["id"]
    assert (sent["channel_id"], sent["content"]) == (CHAN, "here is the chart")
    assert [(f["filename"], f["bytes"]) for f in sent["files"]] == [("chart.png", image)]
    assert str(sent["message_reference"]["message_id"]) == trigger["id"] and sent["pinged"] == {"user:930000000000000001"}
    assert sent["body"]["attachments"] == [{"id": 0, "filename": "chart.png"}]  # payload_json names files[0]

    doc = outgoing(tmp_path, "report.pdf", PDF, "application/pdf", AttachmentKind.DOCUMENT)
    await running.channel.send_file(CHAT, doc)
    second = fake.sent[1]
    assert second["content"] == "" and [(f["filename"], f["bytes"]) for f in second["files"]] == [("report.pdf", PDF)]
    assert second["reply_to"] == int(trigger["id"]) and second["pinged"] == set()  # the chat's trigger, no ping


async def test_a_long_caption_follows_the_file_and_a_resend_is_harmless(running: Running, tmp_path: Path) -> None:
    fake = running.fake
    caption = "word " * 600  # 3,000 characters: over Discord's 2,000
    doc = outgoing(tmp_path, "notes.pdf", PDF, "application/pdf", AttachmentKind.DOCUMENT, caption=caption)
    first = await running.channel.send_file(CHAT, doc, idempotency_key="41")
    assert [bool(s["files"]) for s in fake.sent] == [True, False, False]
    assert fake.sent[0]["content"] == "" and fake.sent[0]["files"][0]["bytes"] == PDF
    assert " ".join(s["content"] for s in fake.sent[1:]).split() == caption.split()

    again = await running.channel.send_file(CHAT, doc, idempotency_key="41")  # the outbox's retry
    assert again == first and len(fake.messages[CHAN]) == 3  # the nonces: nothing posted twice


async def test_a_file_over_discords_upload_limit_is_refused_for_good(running: Running, tmp_path: Path) -> None:
    running.fake.upload_limit = 1000
    doc = outgoing(tmp_path, "report.pdf", PDF, "application/pdf", AttachmentKind.DOCUMENT)
    with pytest.raises(ChannelError, match="larger than Discord takes") as info:
        await running.channel.send_file(CHAT, doc)
    assert info.value.retryable is False and running.fake.sent == []


async def test_through_the_daemon_a_photo_is_stored_with_the_message(run_daemon: Any, fake_dc: FakeDiscord) -> None:
    """The daemon's own intake (its media store) and store: the message keeps its photo."""
    import json

    from ngb.records import Group
    from tests.channel_helpers import stored

    settings = {"api_base": fake_dc.api_base, "gateway_url": fake_dc.gateway_url, "reconnect_base": "0.05",
                "reconnect_cap": "0.3", "connect_timeout": "10"}
    d = await run_daemon(None, NGB_DISCORD_TOKEN=TOKEN, NGB_CHANNELS=json.dumps({"discord": settings}))
    channel = d.daemon.channels["discord"]
    await wait_until(lambda: channel.state == "connected")
    await d.daemon.registry.add(Group(chat=CHAT, folder="guild"))
    image = png(8, 8)
    fake_dc.user_message(CHAN, "the new logo", attachments=[fake_dc.attachment(CHAN, "logo.png", image,
                                                                               content_type="image/png")])
    with trio.fail_after(10):
        while not (msgs := await stored(d, CHAT)):
            await trio.sleep(0.01)
    (msg,) = msgs
    assert msg.text == "the new logo" and [(a.kind, a.name) for a in msg.attachments] == [(AttachmentKind.IMAGE, "logo.png")]
    assert d.daemon.media_files.path(msg.attachments[0].sha256).read_bytes() == image
