"""QQ's files over OneBot v11, in and out: the real channel against tests/fakes/onebot.py, whose
media host serves the segments' URLs and which answers get_image/get_record/get_file and the
upload actions as NapCat and go-cqhttp do; files are stored by a real MediaIntake."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from ngb.channels.onebot import OneBotChannel, OneBotSettings
from ngb.channels.onebot_media import shared_path
from ngb.media.files import MediaFiles
from ngb.media.intake import MediaIntake
from ngb.records import AttachmentKind, Group, InboundMessage, OutgoingFile
from tests.channel_helpers import stored, wait_until
from tests.fakes.onebot import FakeOneBot, at, text
from tests.test_media_discord import PDF, png

TOKEN = "onebot-media-token"
SELF = 10000
GROUP = 123456
USER = 777
CHAT = f"qq:group:{GROUP}"
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + bytes(range(256)) * 8


@attrs.define
class Running:
    fake: FakeOneBot
    channel: OneBotChannel
    intake: MediaIntake
    got: list[InboundMessage]
    shared: Path | None

    def stored_bytes(self, index: int = 0, message: int = -1) -> bytes:
        return self.intake.files.path(self.got[message].attachments[index].sha256).read_bytes()


@pytest.fixture
async def fake() -> AsyncIterator[FakeOneBot]:
    async with trio.open_nursery() as nursery:
        bot = await FakeOneBot.start(nursery, access_token=TOKEN, self_id=SELF, nickname="Andy", heartbeat_interval=0.5)
        yield bot
        nursery.cancel_scope.cancel()


@pytest.fixture
async def qq(fake: FakeOneBot, tmp_path: Path, request: Any) -> AsyncIterator[Running]:
    """The channel alone, connected to the fake; ``shared`` (param): a folder both sides see, the
    fake seeing it as /napcat/shared (it runs in a container)."""
    shared = None
    if getattr(request, "param", None) == "shared":
        shared = tmp_path / "shared"
        shared.mkdir()
        fake.files.folder = shared
    intake = MediaIntake(MediaFiles(tmp_path / "media"))
    settings = OneBotSettings(mode="forward", url=fake.url, access_token=TOKEN, reconnect_base=0.05,
                              reconnect_cap=0.3, api_timeout=5, media_dir=shared,
                              media_dir_onebot="/napcat/shared" if shared else None)
    channel = OneBotChannel(settings, media=intake)
    got: list[InboundMessage] = []

    async def submit(inbound: InboundMessage) -> Any:
        got.append(inbound)

    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run, submit)
        await wait_until(lambda: channel.state == "connected")
        yield Running(fake, channel, intake, got, shared)
        nursery.cancel_scope.cancel()


def actions(fake: FakeOneBot, name: str) -> list[dict[str, Any]]:
    return [params for action, params in fake.actions if action == name]


# -- in ----------------------------------------------------------------------------------------------------
async def test_a_photo_with_a_url_is_an_image_attachment_with_its_bytes(qq: Running) -> None:
    fake, image = qq.fake, png(5, 4)
    await fake.group_message(GROUP, [at(SELF), text(" what is this?"), fake.files.image(image)])
    (inbound,) = await wait_until(lambda: qq.got)
    assert inbound.text == "@Andy what is this?" and inbound.mentions_bot  # no "[image]" placeholder
    (att,) = inbound.attachments
    assert (att.kind, att.mime, att.size) == (AttachmentKind.IMAGE, "image/png", len(image))
    assert qq.stored_bytes() == image
    assert len(fake.media_host.downloads) == 1 and actions(fake, "get_image") == []  # the URL was enough


async def test_a_voice_message_comes_through_get_record_as_voice(qq: Running) -> None:
    fake = qq.fake
    await fake.private_message(USER, [fake.files.record(MP3, answer="base64")])
    (inbound,) = await wait_until(lambda: qq.got)
    assert inbound.text == ""
    assert [(a.kind, a.mime) for a in inbound.attachments] == [(AttachmentKind.VOICE, "audio/mpeg")]
    assert qq.stored_bytes() == MP3  # the converted file, not the SILK its URL serves
    (asked,) = actions(fake, "get_record")
    assert asked["out_format"] == "mp3" and fake.media_host.downloads == []


async def test_a_voice_message_whose_get_record_fails_is_not_stored_as_silk(qq: Running) -> None:
    fake = qq.fake
    await fake.private_message(USER, [fake.files.record(MP3, answer="unsupported")])
    (inbound,) = await wait_until(lambda: qq.got)
    assert inbound.attachments == () and fake.media_host.downloads  # the URL was tried: SILK
    assert inbound.text == ("[voice message: the download failed (get_record: retcode 1404: unsupported action "
                            "get_record; QQ's raw SILK audio, which nothing reads)]")


async def test_a_failed_download_is_a_note_and_the_message_is_still_submitted(qq: Running) -> None:
    fake, image = qq.fake, png()
    gone = fake.files.image(image, answer="unsupported")  # go-cqhttp-like: no get_image for it
    fake.files.fail_download(gone)
    await fake.group_message(GROUP, [text("look"), gone])
    (inbound,) = await wait_until(lambda: qq.got)
    assert inbound.attachments == ()
    assert inbound.text == ("look\n[photo: the download failed (HTTP 404; get_image: retcode 1404: "
                            "unsupported action get_image)]")


async def test_without_a_shared_folder_a_local_path_is_a_note(qq: Running) -> None:
    fake = qq.fake
    await fake.group_message(GROUP, [fake.files.file(PDF, "q3 report.pdf", answer="path")])
    (inbound,) = await wait_until(lambda: qq.got)
    assert inbound.attachments == ()
    assert inbound.text == ("[file q3 report.pdf: the download failed (get_file gave a path on the OneBot host "
                            "that is not shared (set channels.qq.media_dir))]")


async def test_a_photo_sent_while_away_is_taken_from_the_history(qq: Running) -> None:
    fake, image = qq.fake, png(6, 6)
    await fake.group_message(GROUP, [text("first")])
    await wait_until(lambda: qq.got)  # the chat has a mark now: it is caught up after a reconnect
    fake.down()
    await wait_until(lambda: qq.channel.state != "connected")
    await fake.group_message(GROUP, [text("while away"), fake.files.image(image)])  # only in the history
    fake.up()
    # (the catch-up submits the mark's second again: "first" too, which the daemon's store drops)
    away = await wait_until(lambda: [m for m in qq.got if m.text == "while away"])
    assert qq.stored_bytes(message=qq.got.index(away[0])) == image
    assert actions(fake, "get_group_msg_history")


@pytest.mark.parametrize("qq", ["shared"], indirect=True)
async def test_with_a_shared_folder_get_file_and_get_image_paths_are_read(qq: Running) -> None:
    fake, image = qq.fake, png(7, 7)
    await fake.group_message(GROUP, [text("both"), fake.files.file(PDF, "q3 report.pdf"),
                                     fake.files.image(image, url=False)])
    (inbound,) = await wait_until(lambda: qq.got)
    assert inbound.text == "both"
    assert [(a.kind, a.name) for a in inbound.attachments] == [(AttachmentKind.DOCUMENT, "q3 report.pdf"),
                                                               (AttachmentKind.IMAGE, "photo.png")]
    assert [qq.stored_bytes(i) for i in (0, 1)] == [PDF, image]
    assert actions(fake, "get_file")[0]["file_id"] and actions(fake, "get_image")[0]["file"].endswith(".jpg")


def test_a_path_outside_the_shared_folder_is_never_read(tmp_path: Path) -> None:
    shared, outside = tmp_path / "shared", tmp_path / "secret.txt"
    shared.mkdir()
    outside.write_text("token")
    (shared / "ok.pdf").write_bytes(PDF)
    (shared / "link.pdf").symlink_to(outside)
    remote = "/napcat/shared"
    assert shared_path("/napcat/shared/ok.pdf", shared, remote) == (shared / "ok.pdf").resolve()
    assert shared_path("file:///napcat/shared/ok.pdf", shared, remote) == (shared / "ok.pdf").resolve()
    for given in ("/napcat/shared/link.pdf", "/napcat/shared/../secret.txt", str(outside), "ok.pdf",
                  "/napcat/sharedx/ok.pdf", "/napcat/shared"):
        assert shared_path(given, shared, remote) is None, given


# -- out ---------------------------------------------------------------------------------------------------
def outgoing(tmp_path: Path, name: str, data: bytes, mime: str, kind: AttachmentKind, caption: str = "") -> OutgoingFile:
    path = tmp_path / f"stored-{name}"
    path.write_bytes(data)
    return OutgoingFile(path=path, name=name, mime=mime, kind=kind, size=len(data), caption=caption)


async def test_send_file_png_is_a_base64_image_segment_quoting_the_trigger(qq: Running, tmp_path: Path) -> None:
    fake, image = qq.fake, png(40, 30)
    trigger = await fake.group_message(GROUP, [at(SELF), text(" draw me a chart")])
    await wait_until(lambda: qq.got)
    chart = outgoing(tmp_path, "chart.png", image, "image/png", AttachmentKind.IMAGE, caption="here is **the** chart")
    pid = await qq.channel.send_file(CHAT, chart, reply_to=qq.got[0].platform_id)
    (sent,) = fake.sent
    assert pid == f"group:{GROUP}:{sent['message_id']}" and sent["target"] == GROUP
    assert [s["type"] for s in sent["message"]] == ["reply", "image", "text"]
    assert sent["message"][0]["data"]["id"] == str(trigger["message_id"])
    encoded = sent["message"][1]["data"]["file"]
    assert encoded.startswith("base64://") and base64.b64decode(encoded.removeprefix("base64://")) == image
    assert sent["message"][2]["data"]["text"] == "here is the chart"


@pytest.mark.parametrize("qq", ["shared"], indirect=True)
async def test_send_file_pdf_is_uploaded_as_a_group_file(qq: Running, tmp_path: Path) -> None:
    fake = qq.fake
    doc = outgoing(tmp_path, "report.pdf", PDF, "application/pdf", AttachmentKind.DOCUMENT, caption="the report")
    await qq.channel.send_file(CHAT, doc)
    (up,) = fake.files.uploads
    assert (up["kind"], up["target"], up["name"], up["data"]) == ("group", GROUP, "report.pdf", PDF)
    assert up["file"].startswith("/napcat/shared/outgoing/")  # the path as the implementation sees it
    assert fake.texts_sent() == ["the report"]  # the caption after the file
    assert qq.shared is not None and list((qq.shared / "outgoing").iterdir()) == []  # the staged copy is gone

    await qq.channel.send_file(f"qq:private:{USER}", outgoing(tmp_path, "r2.pdf", PDF, "application/pdf",
                                                               AttachmentKind.DOCUMENT))
    assert (fake.files.uploads[1]["kind"], fake.files.uploads[1]["target"]) == ("private", USER)


async def test_send_file_pdf_without_a_shared_folder_is_a_line_naming_it(qq: Running, tmp_path: Path) -> None:
    fake = qq.fake
    doc = outgoing(tmp_path, "report.pdf", PDF, "application/pdf", AttachmentKind.DOCUMENT, caption="the report")
    await qq.channel.send_file(CHAT, doc)
    assert fake.files.uploads == [] and actions(fake, "upload_group_file") == []
    assert fake.texts_sent() == ["the report\n[file report.pdf, 10 KB: not sent, QQ file uploads are not set up]"]


async def test_an_image_over_the_inline_limit_is_named_without_a_shared_folder(qq: Running, tmp_path: Path) -> None:
    fake, image = qq.fake, png(40, 30)
    qq.channel.settings = attrs.evolve(qq.channel.settings, image_max_bytes=len(image) - 1)
    await qq.channel.send_file(CHAT, outgoing(tmp_path, "chart.png", image, "image/png", AttachmentKind.IMAGE))
    (line,) = fake.texts_sent()
    assert line.startswith("[image chart.png, ") and "images over" in line and "not set up]" in line
    assert not [s for sent in fake.sent for s in sent["message"] if s["type"] == "image"]


@pytest.mark.parametrize("qq", ["shared"], indirect=True)
async def test_an_implementation_without_uploads_gets_the_line(qq: Running, tmp_path: Path) -> None:
    fake = qq.fake
    fake.files.uploads_supported = False
    await qq.channel.send_file(CHAT, outgoing(tmp_path, "report.pdf", PDF, "application/pdf", AttachmentKind.DOCUMENT))
    assert fake.texts_sent() == ["[file report.pdf, 10 KB: not sent, this QQ connection cannot upload files]"]
    assert qq.shared is not None and list((qq.shared / "outgoing").iterdir()) == []


# -- through the daemon ----------------------------------------------------------------------------------------
async def test_through_the_daemon_a_photo_is_stored_and_an_image_reply_goes_out(run_daemon: Any, fake: FakeOneBot) -> None:
    """The daemon's own intake and store keep the photo; the agent's Markdown image goes out through
    the outbox as a base64 image segment with the same bytes."""
    from tests.fakes.agent import FakeBehaviour

    table = {"url": fake.url, "access_token": TOKEN, "reconnect_base": "0.05", "reconnect_cap": "0.3"}
    behaviour = FakeBehaviour(reply=lambda prompt: ["here: ![chart](chart.png)"])
    d = await run_daemon(behaviour, NGB_CHANNELS=json.dumps({"qq": table}))
    channel = d.daemon.channels["qq"]
    await wait_until(lambda: channel.state == "connected")
    await d.daemon.registry.add(Group(chat=CHAT, folder="qqfamily"))
    chart = png(12, 9)
    folder = d.daemon.config.groups_dir / "qqfamily"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "chart.png").write_bytes(chart)
    os.chmod(folder / "chart.png", 0o644)

    image = png(8, 8)
    await fake.group_message(GROUP, [at(SELF), text(" the new logo"), fake.files.image(image)])
    with trio.fail_after(10):
        while not (msgs := await stored(d, CHAT)):
            await trio.sleep(0.01)
    msg = msgs[0]
    assert msg.text == "@Andy the new logo" and [a.kind for a in msg.attachments] == [AttachmentKind.IMAGE]
    assert d.daemon.media_files.path(msg.attachments[0].sha256).read_bytes() == image

    images = await wait_until(lambda: [s for sent in fake.sent for s in sent["message"] if s["type"] == "image"])
    assert base64.b64decode(images[0]["data"]["file"].removeprefix("base64://")) == chart
