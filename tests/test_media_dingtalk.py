"""DingTalk's files, in and out: the real channel (and dingtalk-stream SDK) against
tests/fakes/dingtalk.py, whose robot API exchanges download codes for signed URLs, serves them, takes
media uploads and records the robot's image and file messages; files are stored by a real
MediaIntake."""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from ngb.channels.base import ChannelError
from ngb.channels.dingtalk import DingTalkChannel, DingTalkSettings
from ngb.media.files import MediaFiles
from ngb.media.intake import MediaIntake
from ngb.media.limits import MediaLimits
from ngb.records import AttachmentKind, InboundMessage, OutgoingFile
from tests.channel_helpers import wait_until
from tests.fakes.dingtalk import FakeDingTalk

CLIENT_ID, SECRET = "dingapp0001", "s3cret-DT-0001"
GROUP, DM = "cidGroupTeam0001==", "cidDirectAlice01=="


def png(width: int = 3, height: int = 2) -> bytes:
    """A real (tiny, grey) PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n" + bytes(range(256)) * 40
AMR = b"#!AMR\n" + bytes(range(200)) * 3  # DingTalk's voice messages are AMR


@attrs.define
class Running:
    fake: FakeDingTalk
    channel: DingTalkChannel
    intake: MediaIntake
    got: list[InboundMessage]

    def stored_bytes(self, index: int = 0, message: int = -1) -> bytes:
        return self.intake.files.path(self.got[message].attachments[index].sha256).read_bytes()


@pytest.fixture
async def fake_dt() -> AsyncIterator[FakeDingTalk]:
    async with trio.open_nursery() as nursery:
        fake = await FakeDingTalk.start(nursery, client_id=CLIENT_ID, client_secret=SECRET)
        yield fake
        nursery.cancel_scope.cancel()


def settings_for(fake: FakeDingTalk) -> DingTalkSettings:
    return DingTalkSettings(client_id=CLIENT_ID, client_secret=SECRET, robot_code=CLIENT_ID,
                            gateway_url=fake.gateway_url, api_base=fake.api_base, oapi_base=fake.oapi_base,
                            ping_interval=2, reconnect_base=0.05, reconnect_cap=0.3, connect_timeout=3)


@pytest.fixture
async def running(fake_dt: FakeDingTalk, tmp_path: Path) -> AsyncIterator[Running]:
    """The channel alone (no daemon), connected to the fake; what it submits lands in ``got``."""
    intake = MediaIntake(MediaFiles(tmp_path / "media"), MediaLimits())
    channel = DingTalkChannel(settings_for(fake_dt), media=intake)
    got: list[InboundMessage] = []

    async def submit(inbound: InboundMessage) -> Any:
        got.append(inbound)

    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run, submit)
        await wait_until(lambda: channel.state == "connected")
        yield Running(fake_dt, channel, intake, got)
        nursery.cancel_scope.cancel()


# -- in ---------------------------------------------------------------------------------------------------
async def test_a_picture_in_is_an_image_attachment_with_its_bytes(running: Running) -> None:
    fake, image = running.fake, png()
    data = fake.picture(GROUP, image)
    (inbound,) = await wait_until(lambda: running.got)
    assert inbound.text == "" and inbound.mentions_bot and inbound.platform_id == data["msgId"]
    (att,) = inbound.attachments
    assert (att.kind, att.mime, att.size) == (AttachmentKind.IMAGE, "image/png", len(image))
    assert running.stored_bytes() == image
    # the code went through the robot API with our robotCode; the signed URL was fetched without a token
    assert fake.files.exchanges == [{"downloadCode": data["content"]["downloadCode"], "robotCode": CLIENT_ID}]
    assert len(fake.files.downloads) == 1
    assert not fake.pending  # acked after it was stored


async def test_rich_text_is_its_text_runs_with_its_pictures(running: Running) -> None:
    fake, first, second = running.fake, png(4, 4), png(5, 3)
    fake.rich_text(GROUP, "look at these", first, "and this one", second)
    (inbound,) = await wait_until(lambda: running.got)
    assert inbound.text == "look at these\nand this one"
    assert [a.kind for a in inbound.attachments] == [AttachmentKind.IMAGE, AttachmentKind.IMAGE]
    assert [running.stored_bytes(i) for i in (0, 1)] == [first, second]


async def test_a_voice_message_is_voice_with_dingtalks_transcript(running: Running) -> None:
    running.fake.voice(DM, AMR, "明天下午三点开会")
    (inbound,) = await wait_until(lambda: running.got)
    (att,) = inbound.attachments
    assert (att.kind, att.transcript, att.transcript_source) == (AttachmentKind.VOICE, "明天下午三点开会", "platform")
    assert inbound.text == "" and running.stored_bytes() == AMR


async def test_a_file_message_keeps_its_name(running: Running) -> None:
    running.fake.file_message(DM, "Q3 report.pdf", PDF)
    (inbound,) = await wait_until(lambda: running.got)
    assert [(a.kind, a.mime, a.name) for a in inbound.attachments] == [
        (AttachmentKind.DOCUMENT, "application/pdf", "Q3 report.pdf")]
    assert running.stored_bytes() == PDF


async def test_a_failed_download_is_a_note_and_the_message_is_still_submitted(running: Running) -> None:
    fake = running.fake
    fake.files.fail_download(500)
    data = fake.voice(DM, AMR, "call Bob at five")
    (inbound,) = await wait_until(lambda: running.got)
    assert inbound.attachments == ()
    assert inbound.text == '[voice message: the download failed (HTTP 500); its transcript: "call Bob at five"]'
    assert not fake.pending and fake.acks[-1]["msgId"] == data["msgId"]  # stored, then acked

    fake.fail_next("/v1.0/robot/messageFiles/download", 400, "invalidParameter.downloadCode")
    fake.file_message(DM, "a.pdf", PDF)
    await wait_until(lambda: len(running.got) == 2)
    assert running.got[1].text == "[file a.pdf: the download failed (download code refused: HTTP 400 " \
                                  "invalidParameter.downloadCode)]"


# -- out --------------------------------------------------------------------------------------------------
def outgoing(tmp_path: Path, name: str, data: bytes, mime: str, kind: AttachmentKind, caption: str = "") -> OutgoingFile:
    path = tmp_path / f"stored-{name}"
    path.write_bytes(data)
    return OutgoingFile(path=path, name=name, mime=mime, kind=kind, size=len(data), caption=caption)


async def test_send_file_png_is_an_image_message_of_the_uploaded_bytes(running: Running, tmp_path: Path) -> None:
    fake, image = running.fake, png(40, 30)
    fake.group_message(GROUP, "draw me a chart")
    await wait_until(lambda: running.got)
    chart = outgoing(tmp_path, "chart.png", image, "image/png", AttachmentKind.IMAGE, caption="here is the chart")
    key = await running.channel.send_file(f"dingtalk:{GROUP}", chart)
    image_msg, caption = fake.sent
    assert (image_msg["via"], image_msg["chat"], image_msg["msgtype"]) == ("group", GROUP, "image")
    assert key == image_msg["processQueryKey"]
    assert fake.files.media_bytes(image_msg["media_id"]) == image  # photoURL names the upload
    assert fake.files.uploads == [{"type": "image", "filename": "chart.png", "errcode": 0}]
    assert caption["text"] == "here is the chart"  # after it, as text (the session webhook)


async def test_send_file_pdf_is_a_file_message(running: Running, tmp_path: Path) -> None:
    fake = running.fake
    fake.direct_message(DM, "the report please", staff_id="alice01", webhook_ttl=0)
    await wait_until(lambda: running.got)
    doc = outgoing(tmp_path, "report", PDF, "application/pdf", AttachmentKind.DOCUMENT)
    await running.channel.send_file(f"dingtalk:{DM}", doc)
    (sent,) = fake.sent
    assert (sent["via"], sent["user"], sent["msgtype"]) == ("batch", "alice01", "file")
    assert (sent["file_name"], sent["file_type"], sent["bytes"]) == ("report.pdf", "pdf", PDF)
    assert fake.files.uploads[0]["type"] == "file"


async def test_where_no_file_message_can_go_an_image_is_markdown(running: Running, tmp_path: Path) -> None:
    """A 1:1 chat with someone outside the organisation: no staff id, so only its session webhook
    reaches it, and that takes markdown (with the uploaded image), not image messages."""
    fake, image = running.fake, png(8, 8)
    fake.direct_message(DM, "a picture please", staff_id="")
    await wait_until(lambda: running.got)
    await running.channel.send_file(f"dingtalk:{DM}", outgoing(tmp_path, "cat.png", image, "image/png",
                                                                AttachmentKind.IMAGE, caption="a cat"))
    (sent,) = fake.sent
    assert (sent["via"], sent["msgtype"]) == ("webhook", "markdown")
    (media_id,) = re.findall(r"!\[cat\.png\]\((@[^)]+)\)", sent["text"])
    assert fake.files.media_bytes(media_id) == image and sent["text"].endswith("\n\na cat")
    # a file type DingTalk robots cannot send is named instead
    await running.channel.send_file(f"dingtalk:{DM}", outgoing(tmp_path, "notes.txt", b"plain notes\n", "text/plain",
                                                                AttachmentKind.DOCUMENT))
    assert "notes.txt" in fake.sent[1]["text"] and "not sent" in fake.sent[1]["text"]
    assert len(fake.files.uploads) == 1


async def test_send_file_errors_and_the_outbox_retry(running: Running, tmp_path: Path) -> None:
    fake = running.fake
    fake.picture(GROUP, png())  # its download takes a token
    await wait_until(lambda: running.got)
    fake.expire_webhooks()  # the caption goes through the robot API too
    doc = outgoing(tmp_path, "report.pdf", PDF, "application/pdf", AttachmentKind.DOCUMENT, caption="the report")
    fake.revoke_tokens()  # the upload's token is refused: a new one, once
    fake.fail_next("/v1.0/robot/groupMessages/send", 500)  # the file message
    with pytest.raises(ChannelError) as info:
        await running.channel.send_file(f"dingtalk:{GROUP}", doc)
    assert info.value.retryable and fake.sent == []
    assert [u["errcode"] for u in fake.files.uploads] == [40014, 0] and fake.token_requests == 2

    fake.fail_next("/v1.0/robot/groupMessages/send", 503, after=1)  # the file goes, its caption does not
    with pytest.raises(ChannelError):
        await running.channel.send_file(f"dingtalk:{GROUP}", doc)  # the outbox's retry
    assert [s["msgtype"] for s in fake.sent] == ["file"]
    await running.channel.send_file(f"dingtalk:{GROUP}", doc)  # and again: only the caption is left
    assert [s["msgtype"] for s in fake.sent] == ["file", "markdown"] and fake.sent[1]["text"] == "the report"

    big = attrs.evolve(doc, size=21 * 1024 * 1024)
    with pytest.raises(ChannelError, match="larger than DingTalk takes") as info:
        await running.channel.send_file(f"dingtalk:{GROUP}", big)
    assert info.value.retryable is False and len(fake.sent) == 2


# -- through the daemon -----------------------------------------------------------------------------------
async def test_through_the_daemon_a_picture_reaches_the_model_and_an_image_goes_back(
    run_daemon: Any, fake_dt: FakeDingTalk
) -> None:
    """The daemon's own intake and store: the message keeps its picture, the model gets it as an
    image block, and the agent's markdown image goes out through the outbox as an image message."""
    from ngb.records import Group
    from tests.channel_helpers import stored
    from tests.fakes.agent import FakeBehaviour

    chart = png(16, 12)
    table = {"gateway_url": fake_dt.gateway_url, "api_base": fake_dt.api_base, "oapi_base": fake_dt.oapi_base,
             "ping_interval": "2", "reconnect_base": "0.05", "reconnect_cap": "0.3", "connect_timeout": "3"}
    d = await run_daemon(FakeBehaviour(reply=lambda prompt: ["Here it is:\n![chart](out/chart.png)"]),
                         NGB_DINGTALK_CLIENT_ID=CLIENT_ID, NGB_DINGTALK_CLIENT_SECRET=SECRET,
                         NGB_CHANNELS=json.dumps({"dingtalk": table}))
    channel = d.daemon.channels["dingtalk"]
    await wait_until(lambda: channel.state == "connected")
    chat = f"dingtalk:{GROUP}"
    await d.daemon.registry.add(Group(chat=chat, folder="team"))
    out = d.daemon.config.groups_dir / "team" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "chart.png").write_bytes(chart)

    photo = png(8, 8)
    fake_dt.picture(GROUP, photo)
    with trio.fail_after(10):
        while not (msgs := await stored(d, chat)):
            await trio.sleep(0.01)
    assert [(a.kind, a.size) for a in msgs[0].attachments] == [(AttachmentKind.IMAGE, len(photo))]
    assert d.daemon.media_files.path(msgs[0].attachments[0].sha256).read_bytes() == photo

    images = await wait_until(lambda: [s for s in fake_dt.sent if s["msgtype"] == "image"], timeout=15)
    assert [image["media_id"] for image in images] and fake_dt.files.media_bytes(images[0]["media_id"]) == chart
    assert [s["text"] for s in fake_dt.sent if s["msgtype"] == "markdown"] == ["Here it is:"]
    [frame] = d.launcher.inputs
    assert [i["media_type"] for i in frame["images"]] == ["image/png"]  # the photo, as an image block
