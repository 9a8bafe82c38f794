"""WhatsApp media through the real channel and the real Node bridge process with its fake WhatsApp
socket (bridge/test/fake-socket.js). The files go through Baileys' own code both ways: a photo in is
encrypted as a phone does and put on the fake's media CDN, and the bridge downloads and decrypts it
with Baileys' downloadMediaMessage; a file out goes through Baileys' generateWAMessageContent
(encrypt, upload) and the fake downloads it back as a recipient would, so the bytes compared here
are the bytes WhatsApp's users would get.

Like tests/test_channel_whatsapp.py they need Node.js >= 20 and the bridge's packages."""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from ngb.channels.whatsapp import BRIDGE_DIR, NODE_MIN, WhatsAppChannel, WhatsAppSettings, find_node
from ngb.media.files import MediaFiles
from ngb.media.intake import MediaIntake
from ngb.media.limits import MB, MediaLimits
from ngb.records import AttachmentKind, Group, InboundMessage, OutgoingFile
from tests.test_channel_whatsapp import (  # noqa: F401 - fake_wa: the fixture, for the daemon's test
    ALICE,
    BOT,
    GROUP,
    WA_ENV,
    FakeWhatsApp,
    fake_wa,
    settled,
    wa_message,
    wait_until,
)

NODE = find_node()


@pytest.fixture(autouse=True)
def _node_and_bridge() -> None:
    if NODE is None:
        pytest.fail(f"no Node.js >= {NODE_MIN} (scripts/setup.sh installs one)", pytrace=False)
    if not (BRIDGE_DIR / "node_modules").is_dir():
        pytest.fail(f"the WhatsApp bridge's packages are not installed in {BRIDGE_DIR} (bridge/install.sh)", pytrace=False)


def png(width: int = 3, height: int = 2) -> bytes:
    """A real (tiny) PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    rows = b"".join(b"\x00" + bytes([200, 30, 30] * width) for _ in range(height))
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n" + os.urandom(3000)
OGG = b"OggS\x00\x02" + os.urandom(4000)  # the start of an Opus voice note, as sniffing sees it


class Media(FakeWhatsApp):
    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.files = folder / "plain"
        self.files.mkdir(parents=True, exist_ok=True)

    def media(self, chat: str, kind: str, data: bytes, *, content: dict[str, Any], cdn: str | None = None,
              sender: str = ALICE) -> dict[str, Any]:
        """A phone sending ``data`` as an ``<kind>Message`` with ``content`` (mimetype, caption...)."""
        message = wa_message(chat, "", sender=sender)
        message["message"] = {f"{kind}Message": content}
        source = self.files / f"{message['key']['id']}.bin"
        source.write_bytes(data)
        item: dict[str, Any] = {"op": "media", "file": str(source), "message": message}
        if cdn:
            item["cdn"] = cdn
        return item


@pytest.fixture
async def wa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[WhatsAppChannel, Media, list[InboundMessage]]]:
    fake = Media(tmp_path / "fake-wa")
    monkeypatch.setenv("NGB_WA_FAKE", "1")
    monkeypatch.setenv("NGB_WA_FAKE_DIR", str(fake.folder))
    monkeypatch.setenv("NGB_WA_FAKE_ME", f"{BOT}:7@s.whatsapp.net")
    intake = MediaIntake(MediaFiles(tmp_path / "media"), MediaLimits(max_file_bytes=1 * MB))
    settings = WhatsAppSettings(state_dir=tmp_path / "whatsapp", node=NODE or "node", restart_base=0.05, restart_cap=0.3,
                                send_timeout=10)
    channel = WhatsAppChannel(settings, media=intake)
    received: list[InboundMessage] = []

    async def submit(inbound: InboundMessage) -> None:
        received.append(inbound)

    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run, submit)
        await wait_until(lambda: channel.state == "connected")
        yield channel, fake, received
        nursery.cancel_scope.cancel()


def downloads(channel: WhatsAppChannel) -> list[str]:
    """What the bridge downloaded and nobody took yet."""
    return sorted(p.name for p in channel.media_dir.iterdir())


async def test_photo_document_and_voice_in_become_attachments_with_the_same_bytes(wa: Any) -> None:
    channel, fake, received = wa
    photo, pdf = png(), PDF
    fake.push(
        fake.media(GROUP, "image", photo, content={"mimetype": "image/png", "caption": f"@{BOT} what is this?"}),
        fake.media(GROUP, "document", pdf, content={"mimetype": "application/pdf", "fileName": "../../report.pdf"}),
        fake.media(ALICE, "audio", OGG, content={"mimetype": "audio/ogg; codecs=opus", "ptt": True, "seconds": 3}),
        wa_message(GROUP, "and this is after them"),
    )
    await wait_until(lambda: channel.acked >= 4)
    first, doc, voice, text = received
    intake = channel.media
    assert first.text == f"@{BOT} what is this?" and first.chat == f"whatsapp:{GROUP}"
    [image] = first.attachments
    assert (image.kind, image.mime, image.size) == (AttachmentKind.IMAGE, "image/png", len(photo))
    assert intake.files.path(image.sha256).read_bytes() == photo
    [document] = doc.attachments
    assert (document.kind, document.mime, document.name) == (AttachmentKind.DOCUMENT, "application/pdf", "report.pdf")
    assert intake.files.path(document.sha256).read_bytes() == pdf
    [note] = voice.attachments
    assert note.kind == AttachmentKind.VOICE and intake.files.path(note.sha256).read_bytes() == OGG
    assert text.text == "and this is after them" and not text.attachments  # in order behind the downloads
    assert downloads(channel) == []  # every download deleted once the message was stored


async def test_too_large_and_failed_downloads_become_notes_and_the_message_is_kept(wa: Any) -> None:
    channel, fake, received = wa
    fake.push(
        fake.media(ALICE, "document", PDF, content={"mimetype": "application/pdf", "fileName": "huge.pdf",
                                                     "caption": "the big one", "fileLength": 31 * MB}),
        fake.media(ALICE, "image", png(), content={"mimetype": "image/jpeg"}, cdn="missing"),
    )
    await wait_until(lambda: channel.acked >= 2)
    big, lost = received
    assert big.text == "the big one\n[file huge.pdf: too large, 31 MB > 1 MB]" and not big.attachments
    assert lost.text.startswith("[photo: the download failed (") and not lost.attachments
    assert "404" in lost.text
    cdn = [json.loads(line) for line in (fake.folder / "cdn.jsonl").read_text().splitlines()]
    assert [c["found"] for c in cdn] == [False]  # the one declared too large was never downloaded
    assert downloads(channel) == []


async def test_a_file_cut_off_at_the_limit_is_a_note(wa: Any) -> None:
    channel, fake, received = wa
    fake.push(fake.media(ALICE, "document", PDF + os.urandom(MB), content={"mimetype": "application/pdf",
                                                                            "fileLength": 1000}))  # declared small
    await wait_until(lambda: channel.acked >= 1)
    assert received[0].text == "[file: too large, over 1 MB]" and not received[0].attachments
    assert downloads(channel) == []


def outgoing(tmp_path: Path, name: str, data: bytes, mime: str, kind: AttachmentKind, caption: str = "") -> OutgoingFile:
    path = tmp_path / "stored" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return OutgoingFile(path=path, name=name, mime=mime, kind=kind, size=len(data), caption=caption)


async def test_send_file_png_is_an_image_message_and_pdf_a_document(wa: Any, tmp_path: Path) -> None:
    channel, fake, received = wa
    photo = png(16, 16)
    chat = f"whatsapp:{GROUP}"
    trigger = fake.say(GROUP, f"@{BOT} draw me something", mention_bot=True)
    await wait_until(lambda: channel.acked >= 1)
    image_id = await channel.send_file(chat, outgoing(tmp_path, "chart.png", photo, "image/png", AttachmentKind.IMAGE,
                                                      caption="here it is"), reply_to=trigger["key"]["id"])
    doc_id = await channel.send_file(chat, outgoing(tmp_path, "report.pdf", PDF, "application/pdf",
                                                    AttachmentKind.DOCUMENT))
    image, doc = fake.sent
    assert (image["id"], image["type"], image["caption"], image["mimetype"]) == (image_id, "image", "here it is", "image/png")
    assert image["quoted_id"] == trigger["key"]["id"] and image["jid"] == GROUP
    assert Path(image["file"]).read_bytes() == photo  # what a recipient downloads and decrypts
    assert (doc["id"], doc["type"], doc["fileName"], doc["mimetype"]) == (doc_id, "document", "report.pdf", "application/pdf")
    assert Path(doc["file"]).read_bytes() == PDF


async def test_send_file_of_a_missing_file_is_not_retried(wa: Any, tmp_path: Path) -> None:
    from ngb.channels.base import ChannelError

    channel, fake, received = wa
    gone = OutgoingFile(path=tmp_path / "nothing.pdf", name="x.pdf", mime="application/pdf",
                        kind=AttachmentKind.DOCUMENT, size=1)
    with pytest.raises(ChannelError) as err:
        await channel.send_file(f"whatsapp:{ALICE}", gone)
    assert not err.value.retryable and fake.sent == []



async def test_through_the_daemon_a_photo_is_stored_with_its_attachment_and_answered(run_daemon: Any,
                                                                                     fake_wa: FakeWhatsApp) -> None:  # noqa: F811
    d = await run_daemon(None, **WA_ENV)
    channel = d.daemon.channels["whatsapp"]
    await wait_until(lambda: channel.state == "connected")
    chat = f"whatsapp:{GROUP}"
    await d.daemon.registry.add(Group(chat=chat, folder="family", requires_trigger=False))
    photo = png(8, 8)
    fake_wa.push(Media(fake_wa.folder).media(GROUP, "image", photo, content={"mimetype": "image/png", "caption": "what is this?"}))
    await wait_until(lambda: fake_wa.sent)
    await settled(d.daemon, "family", chat)
    [stored, reply] = await d.daemon.store.messages_after(chat, 0)
    assert stored.text == "what is this?" and [a.kind for a in stored.attachments] == [AttachmentKind.IMAGE]
    assert d.daemon.media_files.path(stored.attachments[0].sha256).read_bytes() == photo
    assert reply.from_bot and fake_wa.sent[0]["text"].startswith("Echo")
    assert downloads(channel) == []
