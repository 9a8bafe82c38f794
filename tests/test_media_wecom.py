"""WeCom's files, in and out, in both modes: the real channels against tests/fakes/wecom.py (the
robot's websocket, with tests/fakes/wecom_files.py serving its encrypted downloads) and
tests/fakes/wecom_callback.py (the app's callbacks and API: media/get, media/upload); files are
stored by a real MediaIntake. One test runs the real daemon."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from ngb.channels.base import ChannelError
from ngb.channels.wecom import WeComChannel, WeComSettings
from ngb.channels.wecom_callback import WeComCallbackChannel, WeComCallbackSettings
from ngb.channels.wecom_media import decrypted
from ngb.media.files import MediaFiles
from ngb.media.intake import MediaIntake
from ngb.media.limits import MediaLimits
from ngb.records import AttachmentKind, InboundMessage, OutgoingFile
from tests.channel_helpers import wait_until
from tests.fakes.wecom import FakeWeCom
from tests.fakes.wecom_callback import FakeWeComApp, Posted
from tests.fakes.wecom_files import FakeWeComFiles, encrypt_file

BOT, BOT_SECRET = "aibWeComMediaBot", "wecom-secret-media"
GROUP = "wrGroupChat01"
CORP, AGENT = "wwNgbTestCorp01", 1000002
TOKEN, APP_SECRET = "cbTok3nForTests9", "corp-app-secret-0123456789abcdef"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n" + bytes(range(256)) * 40
AMR = b"#!AMR\n" + bytes(range(256)) * 8
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(range(256)) * 8


def outgoing(tmp_path: Path, name: str, data: bytes, mime: str, kind: AttachmentKind, caption: str = "") -> OutgoingFile:
    path = tmp_path / f"stored-{name}"
    path.write_bytes(data)
    return OutgoingFile(path=path, name=name, mime=mime, kind=kind, size=len(data), caption=caption)


@attrs.define
class Running:
    channel: Any
    intake: MediaIntake
    got: list[InboundMessage]

    def stored_bytes(self, index: int = 0, message: int = -1) -> bytes:
        return self.intake.files.path(self.got[message].attachments[index].sha256).read_bytes()


async def test_the_decryption_streams_and_refuses_broken_bytes() -> None:
    key = bytes(range(32))
    aeskey = base64.b64encode(key).decode().rstrip("=")  # WeCom's keys may come without padding
    for data in (b"x", b"y" * 31, b"z" * 32, PDF):
        cipher = encrypt_file(data, key)

        async def chunks(cipher: bytes = cipher) -> AsyncIterator[bytes]:
            for i in range(0, len(cipher), 7):  # pieces that cut blocks anywhere
                yield cipher[i:i + 7]

        assert b"".join([c async for c in decrypted(chunks(), aeskey)]) == data

    async def broken() -> AsyncIterator[bytes]:
        yield encrypt_file(b"hello", key)[:-1]

    with pytest.raises(ValueError, match="decrypted"):
        _ = [c async for c in decrypted(broken(), aeskey)]


# -- the robot (long connection) ------------------------------------------------------------------------
@pytest.fixture
async def robot(tmp_path: Path) -> AsyncIterator[tuple[FakeWeCom, Running]]:
    intake = MediaIntake(MediaFiles(tmp_path / "media"), MediaLimits())
    got: list[InboundMessage] = []

    async def submit(inbound: InboundMessage) -> Any:
        got.append(inbound)

    async with trio.open_nursery() as nursery:
        fake = await FakeWeCom.start(nursery, bot_id=BOT, secret=BOT_SECRET)
        settings = WeComSettings(bot_id=BOT, secret=BOT_SECRET, url=fake.url, heartbeat_interval=5,
                                 reconnect_base=0.05, reconnect_cap=0.3, request_timeout=5)
        channel = WeComChannel(settings, media=intake)
        await nursery.start(channel.run, submit)
        await wait_until(lambda: channel.state == "connected")
        yield fake, Running(channel, intake, got)
        nursery.cancel_scope.cancel()


async def test_robot_a_photo_in_is_decrypted_into_an_image_attachment(robot: Any) -> None:
    fake, running = robot
    image = png()
    await fake.media_message("image", fake.file_item(image, "x.png"))
    (inbound,) = await wait_until(lambda: running.got)
    assert inbound.text == "" and inbound.mentions_bot
    assert [(a.kind, a.mime, a.size) for a in inbound.attachments] == [(AttachmentKind.IMAGE, "image/png", len(image))]
    assert running.stored_bytes() == image  # decrypted with the message's own aeskey

    # mixed: its text, and each image
    second = png(5, 5)
    await fake.media_message("mixed", {"msg_item": [
        {"msgtype": "text", "text": {"content": "@Andy compare these"}},
        {"msgtype": "image", "image": fake.file_item(image)},
        {"msgtype": "image", "image": fake.file_item(second)}]}, chatid=GROUP, user="lisi")
    await wait_until(lambda: len(running.got) == 2)
    assert running.got[1].text == "@Andy compare these" and running.got[1].chat == f"wecom:{GROUP}"
    assert [running.stored_bytes(i) for i in (0, 1)] == [image, second]


async def test_robot_a_file_keeps_its_name_and_a_voice_is_its_recognition(robot: Any) -> None:
    fake, running = robot
    await fake.media_message("file", fake.file_item(PDF, "季度 report.pdf"))
    (inbound,) = await wait_until(lambda: running.got)
    (att,) = inbound.attachments
    assert (att.kind, att.mime, att.name) == (AttachmentKind.DOCUMENT, "application/pdf", "季度 report.pdf")
    assert running.stored_bytes() == PDF

    await fake.media_message("voice", {"content": "明天下午三点开会"})
    await wait_until(lambda: len(running.got) == 2)
    assert running.got[1].text == "明天下午三点开会" and running.got[1].attachments == ()


async def test_robot_a_failed_download_is_a_note_and_the_message_is_still_submitted(robot: Any) -> None:
    fake, running = robot
    assert fake.files is not None
    fake.files.fail_next(404)
    await fake.media_message("mixed", {"msg_item": [{"msgtype": "text", "text": {"content": "look"}},
                                                    {"msgtype": "image", "image": fake.file_item(png())}]})
    (inbound,) = await wait_until(lambda: running.got)
    assert inbound.text == "look\n[photo: the download failed (HTTP 404)]" and inbound.attachments == ()

    item = fake.file_item(png())  # a key that is not the one the file was encrypted with
    await fake.media_message("image", {**item, "aeskey": fake.file_item(b"other")["aeskey"]})
    await wait_until(lambda: len(running.got) == 2)
    assert running.got[1].text.startswith("[photo: the download failed (the file could not be decrypted")


async def test_robot_send_file_uploads_then_sends_an_image_or_a_file(robot: Any, tmp_path: Path) -> None:
    fake, running = robot
    image = png(40, 30)
    chart = outgoing(tmp_path, "chart.png", image, "image/png", AttachmentKind.IMAGE, caption="the chart")
    first = await running.channel.send_file(f"wecom:{GROUP}", chart)
    image_msg, caption = fake.sent
    assert image_msg["cmd"] == "aibot_send_msg" and image_msg["headers"]["req_id"] == first
    assert (image_msg["body"]["chatid"], image_msg["body"]["msgtype"]) == (GROUP, "image")
    uploaded = fake.media[image_msg["body"]["image"]["media_id"]]
    assert (uploaded.name, uploaded.data) == ("chart.png", image)
    assert caption["body"]["markdown"]["content"] == "the chart"

    big = PDF * 150  # about 1.5 MB: three 512 KB chunks
    doc = outgoing(tmp_path, "report.pdf", big, "application/pdf", AttachmentKind.DOCUMENT)
    await running.channel.send_file("wecom:zhangsan", doc)
    file_msg = fake.sent[-1]["body"]
    assert (file_msg["chatid"], file_msg["msgtype"]) == ("zhangsan", "file")
    assert fake.media[file_msg["file"]["media_id"]].data == big
    chunks = [f for f in fake.upload_frames if f["cmd"] == "aibot_upload_media_chunk"]
    assert len(big) > 2 * 512 * 1024 and len(chunks) == 1 + 3

    with pytest.raises(ChannelError, match="too small") as info:
        await running.channel.send_file("wecom:zhangsan", outgoing(tmp_path, "t.txt", b"hi", "text/plain",
                                                                   AttachmentKind.DOCUMENT))
    assert info.value.retryable is False


# -- the app (callback mode) ----------------------------------------------------------------------------
@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[FakeWeComApp, Running]]:
    """The app channel alone: the fake's callbacks go straight to ``handle_callback`` (the daemon's
    web server does only that with them)."""
    intake = MediaIntake(MediaFiles(tmp_path / "media"), MediaLimits())
    got: list[InboundMessage] = []

    async def submit(inbound: InboundMessage) -> Any:
        got.append(inbound)

    async with trio.open_nursery() as nursery:
        fake = await FakeWeComApp.start(nursery, corp_id=CORP, agent_id=AGENT, corp_secret=APP_SECRET, token=TOKEN,
                                        encoding_aes_key=KEY)
        settings = WeComCallbackSettings(corp_id=CORP, agent_id=AGENT, token=TOKEN, encoding_aes_key=KEY,
                                         corp_secret=APP_SECRET, api_base=fake.api_base, request_timeout=5,
                                         reconnect_base=0.05, reconnect_cap=0.3)
        channel = WeComCallbackChannel(settings, media=intake)

        async def post_raw(params: dict[str, str], body: bytes, *, inner: str = "") -> Posted:
            status, answer = await channel.handle_callback("POST", params, body, "127.0.0.1")
            return Posted("POST", params, body, inner, httpx.Response(status, content=answer))

        fake.post_raw = post_raw  # type: ignore[method-assign]
        await nursery.start(channel.run, submit)
        await wait_until(lambda: channel.state == "connected")
        yield fake, Running(channel, intake, got)
        await fake.aclose()
        nursery.cancel_scope.cancel()


async def test_app_a_photo_in_through_media_get_or_its_pic_url(app: Any) -> None:
    fake, running = app
    image = png()
    posted = await fake.media_message("image", image, "photo.png", content_type="image/png")
    assert posted.response.status_code == 200
    (inbound,) = running.got
    assert inbound.text == "" and [(a.kind, a.mime) for a in inbound.attachments] == [(AttachmentKind.IMAGE, "image/png")]
    assert running.stored_bytes() == image and len(fake.media_gets) == 1

    # no MediaId: the PicUrl (WeCom's image host; here the fake's)
    async with trio.open_nursery() as nursery:
        host = await FakeWeComFiles.start(nursery)
        other = png(4, 4)
        await fake.media_message("image", None, pic_url=host.put(other, "p.png", encrypt=False)["url"])
        nursery.cancel_scope.cancel()
    assert running.stored_bytes(message=1) == other


async def test_app_a_voice_with_recognition_is_its_file_and_the_platform_transcript(app: Any) -> None:
    fake, running = app
    await fake.media_message("voice", AMR, "voice.amr", recognition="明天下午三点开会")
    (inbound,) = running.got
    (att,) = inbound.attachments
    assert (att.kind, att.mime, att.transcript, att.transcript_source) == (
        AttachmentKind.VOICE, "audio/amr", "明天下午三点开会", "platform")
    assert running.stored_bytes() == AMR

    await fake.media_message("video", MP4, "clip.mp4")
    await fake.media_message("file", PDF, "q3.pdf")
    assert [(a.kind, a.name) for m in running.got[1:] for a in m.attachments] == [
        (AttachmentKind.VIDEO, "video.mp4"), (AttachmentKind.DOCUMENT, "q3.pdf")]
    assert running.stored_bytes(message=2) == PDF


async def test_app_a_failed_download_is_a_note_and_the_message_is_still_submitted(app: Any) -> None:
    fake, running = app
    fake.fail_next("media/get", http=500)
    posted = await fake.media_message("voice", AMR, recognition="call me back")
    assert posted.response.status_code == 200
    (inbound,) = running.got
    assert inbound.attachments == ()
    assert inbound.text == '[voice message voice.amr: the download failed (HTTP 500); its transcript: "call me back"]'

    # a MediaId WeCom no longer has: its JSON errcode is the reason, not the bytes of a file
    await fake.post_inner(fake.inner_xml("", msgtype="image", extra="<MediaId><![CDATA[gone]]></MediaId>"))
    assert running.got[1].text == "[photo: the download failed (WeCom errcode 40007: invalid media_id)]"

    fake.expire_tokens()  # a token that expired meanwhile: fetched anew, the file still comes
    await fake.media_message("image", png(), "a.png")
    assert running.got[2].attachments and fake.media_gets[-1] in fake.media


async def test_app_a_retry_while_the_file_is_still_coming_is_stored_once(app: Any) -> None:
    fake, running = app
    asked, release = trio.Event(), trio.Event()
    serve = fake.http

    async def slow(request: Any) -> Any:  # WeCom's media host, slower than its 5 s retry
        if request.path.endswith("/media/get"):
            asked.set()
            await release.wait()
        return await serve(request)

    fake.http = slow
    first: list[Posted] = []
    inner = fake.inner_xml("", msgtype="image", extra=f"<MediaId><![CDATA[{fake.add_media(png(), 'a.png')}]]></MediaId>")
    async with trio.open_nursery() as nursery:
        async def post_first() -> None:
            first.append(await fake.post_inner(inner))

        nursery.start_soon(post_first)
        await asked.wait()
        retry = await fake.post_inner(inner)  # WeCom's retry: the same message again
        assert retry.response.status_code == 503 and running.got == []
        release.set()
    assert first[0].response.status_code == 200 and len(running.got) == 1 and running.got[0].attachments
    assert (await fake.post_inner(inner)).response.status_code == 200 and len(running.got) == 1


async def test_app_send_file_uploads_then_sends_an_image_or_a_file(app: Any, tmp_path: Path) -> None:
    fake, running = app
    image = png(40, 30)
    chart = outgoing(tmp_path, "chart.png", image, "image/png", AttachmentKind.IMAGE, caption="the chart")
    await running.channel.send_file("wecom:zhangsan", chart)
    image_msg, caption = fake.sent
    assert (image_msg["api"], image_msg["touser"], image_msg["agentid"], image_msg["msgtype"]) == (
        "message/send", "zhangsan", AGENT, "image")
    uploaded = fake.media[image_msg["image"]["media_id"]]
    assert (uploaded.name, uploaded.data) == ("chart.png", image)
    assert fake.uploads == [("image", image_msg["image"]["media_id"])] and caption["markdown"]["content"] == "the chart"

    fake.app_chats.add("wrAppChat01")
    doc = outgoing(tmp_path, "report.pdf", PDF, "application/pdf", AttachmentKind.DOCUMENT)
    fake.expire_tokens()
    await running.channel.send_file("wecom:wrAppChat01", doc)
    file_msg = fake.sent[-1]
    assert (file_msg["api"], file_msg["chatid"], file_msg["msgtype"]) == ("appchat/send", "wrAppChat01", "file")
    assert fake.media[file_msg["file"]["media_id"]].data == PDF and fake.uploads[-1][0] == "file"

    gif = outgoing(tmp_path, "a.gif", b"GIF89a" + bytes(200), "image/gif", AttachmentKind.IMAGE)
    await running.channel.send_file("wecom:zhangsan", gif)  # WeCom's image messages take PNG and JPEG only
    assert fake.sent[-1]["msgtype"] == "file"


# -- through the daemon ------------------------------------------------------------------------------
async def test_through_the_daemon_a_photo_is_stored_and_a_queued_file_goes_out(run_daemon: Any, tmp_path: Path) -> None:
    """The daemon's own intake and store: the message keeps its photo; a file in the outbox goes
    out as the robot's image message."""
    import json

    from ngb.records import Group
    from tests.channel_helpers import stored

    async with trio.open_nursery() as nursery:
        fake = await FakeWeCom.start(nursery, bot_id=BOT, secret=BOT_SECRET)
        table = {"url": fake.url, "bot_id": BOT, "secret": BOT_SECRET, "reconnect_base": "0.05",
                 "reconnect_cap": "0.3", "request_timeout": "5"}
        d = await run_daemon(None, NGB_CHANNELS=json.dumps({"wecom": table}))
        channel = d.daemon.channels["wecom"]
        await wait_until(lambda: channel.state == "connected")
        chat = f"wecom:{GROUP}"
        await d.daemon.registry.add(Group(chat=chat, folder="team"))
        image = png(8, 8)
        await fake.media_message("mixed", {"msg_item": [{"msgtype": "text", "text": {"content": "@Andy the logo"}},
                                                        {"msgtype": "image", "image": fake.file_item(image)}]},
                                 chatid=GROUP)
        with trio.fail_after(10):
            while not (msgs := await stored(d, chat)):
                await trio.sleep(0.01)
        msg = msgs[0]
        assert msg.text == "@Andy the logo" and [a.kind for a in msg.attachments] == [AttachmentKind.IMAGE]
        assert d.daemon.media_files.path(msg.attachments[0].sha256).read_bytes() == image

        folder = d.daemon.config.groups_dir / "team"
        (folder / "out").mkdir(parents=True, exist_ok=True)
        chart = png(30, 20)
        (folder / "out" / "chart.png").write_bytes(chart)
        att = await d.daemon.outgoing.from_folder("team", "out/chart.png")
        await d.daemon.store.queue_file("team", chat, att, "")
        d.daemon.outbox.wake()
        sent = await wait_until(lambda: [f for f in fake.pushes if f["body"]["msgtype"] == "image"])
        assert fake.media[sent[0]["body"]["image"]["media_id"]].data == chart
        nursery.cancel_scope.cancel()
