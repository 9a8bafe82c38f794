"""Slack files both ways: the real slack-sdk and SlackChannel against tests/fakes/slack.py, with a
real media store. In: a message's files downloaded with the bot token (Slack's sign-in page and
failed downloads become notes, the message is submitted anyway), in live events and in catch-up.
Out: send_file through files.getUploadURLExternal, the upload URL and files.completeUploadExternal."""

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
from ngb.channels.slack import SlackChannel, SlackSettings
from ngb.media.files import MediaFiles
from ngb.media.intake import MediaIntake
from ngb.media.limits import MediaLimits
from ngb.records import AttachmentKind, InboundMessage, OutgoingFile
from tests.channel_helpers import wait_until
from tests.fakes.slack import FakeSlack

BOT, APP = "xoxb-1-TEST", "xapp-1-TEST"
CHAN = "C0123"


def png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n" + bytes(range(256)) * 40


@attrs.define
class Running:
    fake: FakeSlack
    channel: SlackChannel
    intake: MediaIntake
    got: list[InboundMessage]
    nursery: trio.Nursery

    def stored(self, attachment: Any) -> bytes:
        return self.intake.files.path(attachment.sha256).read_bytes()

    async def outgoing(self, data: bytes, name: str, mime: str, kind: AttachmentKind,
                       caption: str = "") -> OutgoingFile:
        stored = await self.intake.files.write_bytes(data)
        return OutgoingFile(path=self.intake.files.path(stored.sha256), name=name, mime=mime, kind=kind,
                            size=len(data), caption=caption)


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[Running]:
    async with trio.open_nursery() as nursery:
        fake = await FakeSlack.start(nursery, bot_token=BOT, app_token=APP)
        intake = MediaIntake(MediaFiles(tmp_path / "media"), MediaLimits(max_file_bytes=2 * 1024 * 1024))
        settings = SlackSettings.from_table({"bot_token": BOT, "app_token": APP, "base_url": fake.base_url,
                                             "ping_interval": "0.5", "reconnect_base": "0.05",
                                             "reconnect_cap": "0.3", "connect_timeout": "3"})
        channel = SlackChannel(settings, media=intake)
        got: list[InboundMessage] = []

        async def submit(inbound: InboundMessage) -> None:
            got.append(inbound)

        await nursery.start(channel.run, submit)
        await wait_until(lambda: channel.state == "connected")
        yield Running(fake, channel, intake, got, nursery)
        nursery.cancel_scope.cancel()


async def test_a_photo_in_is_an_image_attachment_with_the_same_bytes(slack: Running) -> None:
    data = png()
    photo = slack.fake.add_file(data, "screenshot.png", "image/png")
    slack.fake.user_message(CHAN, "what is on this?", files=[photo])
    (inbound,) = await wait_until(lambda: slack.got)
    assert inbound.text == "what is on this?"
    (attachment,) = inbound.attachments
    assert (attachment.kind, attachment.mime, attachment.name, attachment.size) == (
        AttachmentKind.IMAGE, "image/png", "screenshot.png", len(data))
    assert slack.stored(attachment) == data
    assert slack.fake.downloads == [(photo["id"], True)]  # with the bot token, once


async def test_files_without_text_and_the_app_mention_twin_download_once(slack: Running) -> None:
    doc = slack.fake.add_file(PDF, "report.pdf", "application/pdf")
    slack.fake.user_message(CHAN, "<@UBOT>", files=[doc])  # message + app_mention events
    await wait_until(lambda: len(slack.got) == 2 and not slack.fake.pending)
    first, second = slack.got
    assert first.attachments[0].kind is AttachmentKind.DOCUMENT and slack.stored(first.attachments[0]) == PDF
    assert second.platform_id == first.platform_id and second.attachments == ()  # the store keeps the first
    assert len(slack.fake.downloads) == 1


async def test_slacks_sign_in_page_is_a_note_not_an_attachment(slack: Running) -> None:
    photo = slack.fake.add_file(png(), "cat.png", "image/png")
    slack.channel.settings = attrs.evolve(slack.channel.settings, bot_token="xoxb-no-files-read")  # Slack won't take it
    slack.fake.user_message(CHAN, "look", files=[photo])
    (inbound,) = await wait_until(lambda: slack.got)
    assert inbound.attachments == ()
    assert inbound.text == "look\n[photo cat.png: the download needs the files:read scope (Slack answered with its sign-in page)]"
    assert slack.fake.downloads == [(photo["id"], False)]


async def test_a_failed_download_is_a_note_and_the_message_is_submitted(slack: Running) -> None:
    good, bad = png(), PDF
    photo = slack.fake.add_file(good, "ok.png", "image/png")
    doc = slack.fake.add_file(bad, "notes.pdf", "application/pdf")
    slack.fake.fail_download(doc["id"], 500)
    slack.fake.user_message(CHAN, "two files", files=[photo, doc])
    (inbound,) = await wait_until(lambda: slack.got)
    assert inbound.text == "two files\n[file notes.pdf: the download failed (HTTP 500)]"
    assert [slack.stored(a) for a in inbound.attachments] == [good]
    await wait_until(lambda: not slack.fake.pending)  # submitted, so acked


async def test_declared_size_over_the_limit_is_not_downloaded(slack: Running) -> None:
    big = slack.fake.add_file(b"x" * 100, "huge.pdf", "application/pdf")
    big["size"] = 31 * 1024 * 1024  # what Slack declares
    slack.fake.user_message(CHAN, "", files=[big])
    (inbound,) = await wait_until(lambda: slack.got)
    assert inbound.text == "[file huge.pdf: too large, 31 MB > 2 MB]" and inbound.attachments == ()
    assert slack.fake.downloads == []


async def test_slacks_transcript_of_an_audio_clip_is_the_transcript(slack: Running) -> None:
    ogg = b"OggS\x00\x02" + bytes(200)
    clip = slack.fake.add_file(ogg, "audio_message.ogg", "audio/ogg", subtype="slack_audio",
                               transcription={"status": "complete", "locale": "en-US",
                                              "preview": {"content": "remind me to call Bob", "has_more": False}})
    slack.fake.user_message("D42", "", files=[clip])
    (inbound,) = await wait_until(lambda: slack.got)
    (attachment,) = inbound.attachments
    assert attachment.kind is AttachmentKind.VOICE and attachment.transcript == "remind me to call Bob"
    assert attachment.transcript_source == "platform" and slack.stored(attachment) == ogg


async def test_files_in_caught_up_messages_are_taken(slack: Running) -> None:
    slack.fake.user_message(CHAN, "seen live")
    await wait_until(lambda: slack.got and not slack.fake.pending)
    slack.fake.lose_events_while_disconnected = True
    slack.fake.down()
    await wait_until(lambda: slack.channel.state in ("disconnected", "connecting"))
    data = png(5, 5)
    slack.fake.user_message(CHAN, "posted while away", files=[slack.fake.add_file(data, "away.png", "image/png")])
    slack.fake.up()
    await wait_until(lambda: slack.channel.catch_ups == 1, timeout=15)
    caught = slack.got[-1]
    assert caught.text == "posted while away" and [slack.stored(a) for a in caught.attachments] == [data]


async def test_send_file_png_into_the_thread_with_its_comment(slack: Running) -> None:
    parent = slack.fake.user_message(CHAN, "a thread")
    slack.fake.user_message(CHAN, "<@UBOT> draw it", thread_ts=parent["ts"])
    await wait_until(lambda: len(slack.got) >= 2)
    data = png(40, 30)
    file = await slack.outgoing(data, "chart.png", "image/png", AttachmentKind.IMAGE, "Here is **the** chart")
    await slack.channel.send_file(f"slack:{CHAN}", file)
    (upload,) = slack.fake.uploads
    assert upload["bytes"] == data and upload["filename"] == "chart.png"
    assert upload["content_length"] == str(len(data))  # the size declared, streamed (not chunked)
    assert (upload["channel"], upload["thread_ts"], upload["initial_comment"]) == (CHAN, parent["ts"], "Here is *the* chart")
    shared = slack.fake.history[CHAN][-1]
    assert shared["files"][0]["id"] and shared["thread_ts"] == parent["ts"] and shared["user"] == "UBOT"


async def test_send_file_pdf_to_the_channel(slack: Running) -> None:
    file = await slack.outgoing(PDF, "report.pdf", "application/pdf", AttachmentKind.DOCUMENT, "the report")
    await slack.channel.send_file(f"slack:{CHAN}", file)
    (upload,) = slack.fake.uploads
    assert upload["bytes"] == PDF and upload["filename"] == "report.pdf" and upload["title"] == "report.pdf"
    assert (upload["channel"], upload["thread_ts"], upload["initial_comment"]) == (CHAN, None, "the report")


async def test_send_file_errors_are_mapped_like_send(slack: Running) -> None:
    file = await slack.outgoing(PDF, "report.pdf", "application/pdf", AttachmentKind.DOCUMENT)
    slack.fake.fail_next("files.completeUploadExternal", "not_in_channel")
    with pytest.raises(ChannelError, match="not_in_channel") as refused:
        await slack.channel.send_file(f"slack:{CHAN}", file)
    assert not refused.value.retryable
    slack.fake.fail_next("files.getUploadURLExternal", "500")
    with pytest.raises(ChannelError) as failed:
        await slack.channel.send_file(f"slack:{CHAN}", file)
    assert failed.value.retryable
    await slack.channel.send_file(f"slack:{CHAN}", file)  # and then it goes
    assert [u["bytes"] for u in slack.fake.uploads] == [PDF]


async def test_the_bot_token_goes_to_slacks_file_host_only(slack: Running) -> None:
    elsewhere = slack.fake.add_file(png(), "x.png", "image/png", url_private="https://files.example.org/x.png",
                                    url_private_download="https://files.example.org/x.png")
    drive = slack.fake.add_file(b"", "plan.gdoc", "application/vnd.google-apps.document", is_external=True,
                                external_type="gdrive", mode="external")
    slack.fake.user_message(CHAN, "links", files=[elsewhere, drive])
    (inbound,) = await wait_until(lambda: slack.got)
    assert inbound.attachments == ()
    assert inbound.text == ("links\n[photo x.png: not on Slack's file host, not downloaded] "
                            "[file plan.gdoc: an external file (gdrive), not downloaded]")


async def test_a_slack_connect_file_is_looked_up_with_files_info(slack: Running) -> None:
    data = png(7, 7)
    shared = slack.fake.add_file(data, "shared.png", "image/png")
    slack.fake.user_message(CHAN, "from the other org", files=[{"id": shared["id"], "file_access": "check_file_info"}])
    (inbound,) = await wait_until(lambda: slack.got)
    assert [slack.stored(a) for a in inbound.attachments] == [data]
    assert ("files.info", {"file": shared["id"]}) in [(m, {k: v for k, v in p.items() if k == "file"})
                                                     for m, p in slack.fake.requests]
