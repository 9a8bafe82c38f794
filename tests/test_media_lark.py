"""Lark's files, in and out: the real lark-oapi (its transport, request models and multipart
uploads, through the asyncio bridge) against tests/fakes/lark.py, whose message-resources API
serves the files users sent (tenant token checked) and whose image and file uploads take multipart;
files are stored by a real MediaIntake."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from ngb.channels.lark import LarkChannel, LarkSettings, sdk
from ngb.media.files import MediaFiles
from ngb.media.intake import MediaIntake
from ngb.records import AttachmentKind, Group, InboundMessage, OutgoingFile
from tests.channel_helpers import stored, wait_until
from tests.fakes.lark import FakeLark
from tests.test_media_discord import OGG, PDF, png

APP_ID, SECRET = "cli_test", "secret-test"
P2P, GROUP = "oc_p2p1", "oc_group1"


@attrs.define
class Running:
    fake: FakeLark
    channel: LarkChannel
    intake: MediaIntake
    got: list[InboundMessage]

    def stored_bytes(self, index: int = 0, message: int = -1) -> bytes:
        return self.intake.files.path(self.got[message].attachments[index].sha256).read_bytes()


@pytest.fixture
async def fake_lark() -> AsyncIterator[FakeLark]:
    await trio.to_thread.run_sync(sdk)  # the SDK's import (seconds of CPU) outside any test's wait
    async with trio.open_nursery() as nursery:
        fake = await FakeLark.start(nursery, app_id=APP_ID, app_secret=SECRET)
        yield fake
        nursery.cancel_scope.cancel()


@pytest.fixture
async def running(fake_lark: FakeLark, tmp_path: Path) -> AsyncIterator[Running]:
    """The channel alone (no daemon), connected to the fake; what it submits lands in ``got``."""
    intake = MediaIntake(MediaFiles(tmp_path / "media"))
    settings = LarkSettings(app_id=APP_ID, app_secret=SECRET, domain=fake_lark.domain, resolve_names=False,
                            reconnect_base=0.05, reconnect_cap=0.3, connect_timeout=5)
    channel = LarkChannel(settings, media=intake)
    got: list[InboundMessage] = []

    async def submit(inbound: InboundMessage) -> Any:
        got.append(inbound)

    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run, submit)
        await wait_until(lambda: channel.state == "connected")
        yield Running(fake_lark, channel, intake, got)
        nursery.cancel_scope.cancel()


def send(fake: FakeLark, content: dict[str, Any], message_type: str, chat: str = P2P) -> dict[str, Any]:
    event = fake.event(chat, content, message_type=message_type, chat_type="p2p" if chat == P2P else "group")
    fake.push(event)
    return event


async def test_a_photo_a_file_and_a_voice_message_in(running: Running) -> None:
    fake, image = running.fake, png()
    event = send(fake, {"image_key": fake.add_file(image)}, "image")
    (inbound,) = await wait_until(lambda: running.got)
    assert inbound.text == "" and inbound.mentions_bot
    (att,) = inbound.attachments
    assert (att.kind, att.mime, att.size) == (AttachmentKind.IMAGE, "image/png", len(image))
    assert running.stored_bytes() == image
    assert fake.downloads == [(event["event"]["message"]["message_id"], json.loads(
        event["event"]["message"]["content"])["image_key"], "image")]  # the image's key, as type=image

    fake.tokens.clear()  # the tenant token was revoked: the download gets a new one and goes on
    send(fake, {"file_key": fake.add_file(PDF, "Q3 report.pdf"), "file_name": "Q3 report.pdf"}, "file")
    send(fake, {"file_key": fake.add_file(OGG, "voice.opus"), "duration": 2000}, "audio")
    await wait_until(lambda: len(running.got) == 3)
    assert [(a.kind, a.mime, a.name) for m in running.got[1:] for a in m.attachments] == [
        (AttachmentKind.DOCUMENT, "application/pdf", "Q3 report.pdf"), (AttachmentKind.VOICE, "audio/ogg", "voice-message.ogg")]
    assert running.stored_bytes(message=1) == PDF and running.stored_bytes(message=2) == OGG
    assert [kind for _, _, kind in fake.downloads[1:]] == ["file", "file"]


async def test_a_rich_text_post_brings_its_text_and_its_images(running: Running) -> None:
    fake, first, second = running.fake, png(4, 4), png(9, 5)
    post = {"title": "Layouts", "content": [
        [{"tag": "text", "text": "which one is better?"}],
        [{"tag": "img", "image_key": fake.add_file(first)}, {"tag": "img", "image_key": fake.add_file(second)}],
    ]}
    send(fake, post, "post")
    (inbound,) = await wait_until(lambda: running.got)
    assert inbound.text == "Layouts\nwhich one is better?"
    assert [a.kind for a in inbound.attachments] == [AttachmentKind.IMAGE, AttachmentKind.IMAGE]
    assert running.stored_bytes(0) == first and running.stored_bytes(1) == second


async def test_a_failed_download_is_a_note_and_the_message_is_still_submitted(running: Running) -> None:
    fake, image = running.fake, png()
    fake.fail_next("resource", 500)  # the first of the two images
    post = {"title": "", "content": [[{"tag": "text", "text": "before and after"}],
                                     [{"tag": "img", "image_key": fake.add_file(png(2, 2))},
                                      {"tag": "img", "image_key": fake.add_file(image)}]]}
    send(fake, post, "post")
    send(fake, {"image_key": "img_v3_not_this_messages"}, "image")  # a key the message does not carry
    await wait_until(lambda: len(running.got) == 2)
    first, second = running.got
    assert first.text == "before and after\n[photo: the download failed (code 500: fake failure 500)]"
    assert len(first.attachments) == 1 and running.stored_bytes(message=0) == image
    assert second.text == "[photo: the download failed (code 234003: File not in msg.)]" and second.attachments == ()


def outgoing(tmp_path: Path, name: str, data: bytes, mime: str, kind: AttachmentKind, caption: str = "") -> OutgoingFile:
    path = tmp_path / f"stored-{name}"
    path.write_bytes(data)
    return OutgoingFile(path=path, name=name, mime=mime, kind=kind, size=len(data), caption=caption)


async def test_send_file_a_png_is_an_image_message_a_pdf_a_file_message(running: Running, tmp_path: Path) -> None:
    fake, image = running.fake, png(40, 30)
    trigger = fake.user_message(GROUP, "draw me a chart", mention_bot=True)
    trigger_id = trigger["event"]["message"]["message_id"]
    await wait_until(lambda: running.got)

    chart = outgoing(tmp_path, "chart.png", image, "image/png", AttachmentKind.IMAGE, caption="here is the chart")
    first = await running.channel.send_file(f"lark:{GROUP}", chart, reply_to=trigger_id, idempotency_key="ngb7")
    (upload,) = fake.uploads
    assert (upload["kind"], upload["bytes"], upload["filename"]) == ("image", image, "chart.png")
    photo, caption = fake.sent
    assert (photo["kind"], photo["reply_to"], photo["msg_type"]) == ("reply", trigger_id, "image")
    assert photo["content"] == {"image_key": upload["key"]} and photo["message_id"] == first
    assert (caption["msg_type"], caption["text"]) == ("post", "here is the chart") and photo["uuid"] != caption["uuid"]

    report = outgoing(tmp_path, "report.pdf", PDF, "application/pdf", AttachmentKind.DOCUMENT)
    await running.channel.send_file(f"lark:{GROUP}", report)
    doc = fake.uploads[1]
    assert (doc["kind"], doc["bytes"], doc["fields"]) == ("file", PDF, {"file_type": "pdf", "file_name": "report.pdf"})
    assert fake.sent[2]["msg_type"] == "file" and fake.sent[2]["content"] == {"file_key": doc["key"]}
    assert fake.sent[2]["reply_to"] == trigger_id and len(fake.sent) == 3  # the chat's trigger; no caption


async def test_through_the_daemon_a_photo_is_stored_and_a_queued_file_goes_out(run_daemon: Any,
                                                                               fake_lark: FakeLark) -> None:
    """The daemon's own intake, store and outbox: the message keeps its photo, and a file queued
    for the chat (as the agent's send_file queues it) is uploaded and sent as an image message."""
    settings = {"domain": fake_lark.domain, "reconnect_base": "0.05", "reconnect_cap": "0.3", "connect_timeout": "5"}
    d = await run_daemon(None, NGB_LARK_APP_ID=APP_ID, NGB_LARK_APP_SECRET=SECRET,
                         NGB_CHANNELS=json.dumps({"lark": settings}))
    channel = d.daemon.channels["lark"]
    await wait_until(lambda: channel.state == "connected")
    chat = f"lark:{GROUP}"
    await d.daemon.registry.add(Group(chat=chat, folder="team"))
    image = png(8, 8)
    fake_lark.push(fake_lark.event(GROUP, {"image_key": fake_lark.add_file(image)}, message_type="image"))
    with trio.fail_after(10):
        while not (msgs := await stored(d, chat)):
            await trio.sleep(0.01)
    (msg,) = msgs
    assert msg.text == "" and [a.kind for a in msg.attachments] == [AttachmentKind.IMAGE]
    assert d.daemon.media_files.path(msg.attachments[0].sha256).read_bytes() == image

    await d.daemon.store.queue_file("team", chat, msg.attachments[0], "the same, back")
    d.daemon.outbox.wake()
    sent = await wait_until(lambda: [s for s in fake_lark.sent if s["msg_type"] == "image"])
    assert sent[0]["content"] == {"image_key": fake_lark.uploads[0]["key"]} and fake_lark.uploads[0]["bytes"] == image
    await wait_until(lambda: any(s["text"] == "the same, back" for s in fake_lark.sent))
