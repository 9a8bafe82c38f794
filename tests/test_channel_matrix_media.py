"""Matrix files both ways through the real daemon (in-process, fake agent) against the real Synapse:
the person uploads as a client does (the content repository, then an ``m.image``/``m.file``
message; in an encrypted room the file encrypted by nio first) and downloads what the bot sent."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import trio

from ngb.aio_bridge import AsyncioBridge
from ngb.records import Attachment, AttachmentKind, Group, OutgoingFile
from tests.channel_helpers import StoppableDaemon, stored, wait_until
from tests.conftest import make_config
from tests.fakes.agent import FakeBehaviour
from tests.matrix_person import Person
from tests.matrix_server import MatrixServer, synapse  # noqa: F401 - the session fixture
from tests.test_channel_matrix import bridge, from_bot, matrix_env, room_with_bot  # noqa: F401 - the fixture
from tests.test_media_dingtalk import PDF, png


def image_message(keys: dict[str, Any], data: bytes, caption: str, name: str = "shelf.png") -> dict[str, Any]:
    return {"msgtype": "m.image", "body": caption, "filename": name,
            "info": {"mimetype": "image/png", "size": len(data)}, **keys}


async def outgoing(d: Any, data: bytes, name: str, mime: str, caption: str) -> OutgoingFile:
    kept = await d.daemon.media_files.write_bytes(data)
    kind = AttachmentKind.IMAGE if mime.startswith("image/") else AttachmentKind.DOCUMENT
    return OutgoingFile(path=d.daemon.media_files.path(kept.sha256), name=name, mime=mime, kind=kind,
                        size=len(data), caption=caption)


async def people_said(d: Any, chat: str, count: int) -> list[Any]:
    """The stored messages of people in ``chat``, once there are ``count``."""
    with trio.fail_after(20):
        while len(found := [m for m in await stored(d, chat) if not m.from_bot]) < count:
            await trio.sleep(0.05)
    return found


async def test_files_in_and_out_of_a_room(tmp_path: Path, bridge: AsyncioBridge,  # noqa: F811
                                          synapse: MatrixServer) -> None:  # noqa: F811
    bot = synapse.register("bot")
    alice = await Person(bridge, synapse.base_url, synapse.register("alice")).connect()
    photo = png(5, 4)
    async with trio.open_nursery() as nursery:
        d = await StoppableDaemon.start_with(nursery, make_config(tmp_path, **matrix_env(synapse, bot, alice.user.user_id)),
                                             FakeBehaviour(), "matrix")
        room = await room_with_bot(alice, bot, d.channel)  # two members: a DM, every message answered
        chat = f"matrix:{room}"
        await d.daemon.registry.add(Group(chat=chat, folder="alice"))
        shown = await alice.send(room, image_message(await alice.upload(photo, "image/png", "shelf.png"), photo,
                                                     "what is on this shelf?"))
        pdf_keys = await alice.upload(PDF, "application/pdf", "invoice.pdf")
        sent_pdf = await alice.send(room, {"msgtype": "m.file", "body": "invoice.pdf",
                                           "info": {"mimetype": "application/pdf", "size": len(PDF)}, **pdf_keys})
        msgs = await people_said(d, chat, 2)
        assert [m.platform_id for m in msgs] == [shown, sent_pdf]
        image, document = msgs
        assert image.text == "what is on this shelf?" and document.text == ""  # a name alone is no caption
        (a,), (b,) = image.attachments, document.attachments
        assert (a.kind, a.name, a.mime) == (AttachmentKind.IMAGE, "shelf.png", "image/png")
        assert (b.kind, b.name) == (AttachmentKind.DOCUMENT, "invoice.pdf")
        assert d.daemon.media_files.path(a.sha256).read_bytes() == photo
        assert d.daemon.media_files.path(b.sha256).read_bytes() == PDF

        chart = png(7, 3)
        event_id = await d.channel.send_file(chat, await outgoing(d, chart, "chart.png", "image/png", "The **chart**"),
                                             shown)
        (got,) = await alice.wait_for(lambda e: e.get("event_id") == event_id)
        content = got["content"]
        assert content["msgtype"] == "m.image" and content["filename"] == "chart.png"
        assert content["body"] == "The **chart**" and content["formatted_body"] == "The <b>chart</b>"
        assert content["info"] == {"mimetype": "image/png", "size": len(chart)}
        assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": shown}}
        assert await alice.download(content["url"]) == chart
        # and through the outbox, as the agent's send_file tool sends (the row's key as the transaction id)
        kept = await d.daemon.media_files.write_bytes(PDF)
        report = Attachment(kind=AttachmentKind.DOCUMENT, mime="application/pdf", size=len(PDF), name="report.pdf",
                            sha256=kept.sha256)
        await d.daemon.store.queue_file("alice", chat, report, caption="the report")
        d.daemon.outbox.wake()
        (shared,) = await alice.wait_for(lambda e: e.get("content", {}).get("filename") == "report.pdf")
        assert shared["content"]["msgtype"] == "m.file" and shared["content"]["body"] == "the report"
        assert await alice.download(shared["content"]["url"]) == PDF
        await wait_until(lambda: d.daemon.outbox.delivered >= 1)
        assert [m.platform_id for m in await stored(d, chat) if m.from_bot][-1] == shared["event_id"]
        await d.stop()
    await alice.close()


async def test_an_encrypted_room_keeps_its_files_encrypted(tmp_path: Path, bridge: AsyncioBridge,  # noqa: F811
                                                           synapse: MatrixServer) -> None:  # noqa: F811
    from nio.crypto.attachments import decrypt_attachment

    bot = synapse.register("bot")
    alice = await Person(bridge, synapse.base_url, synapse.register("alice"), store=tmp_path / "alice-keys").connect()
    photo = png(6, 2)
    async with trio.open_nursery() as nursery:
        d = await StoppableDaemon.start_with(nursery, make_config(tmp_path, **matrix_env(synapse, bot, alice.user.user_id)),
                                             FakeBehaviour(), "matrix")
        room = await alice.create_room(bot.user_id, encrypted=True)
        with trio.fail_after(15):
            while bot.user_id not in await alice.members(room):
                await trio.sleep(0.05)
        await wait_until(lambda: room in (d.channel.client.rooms if d.channel.client else {}))
        chat = f"matrix:{room}"
        await d.daemon.registry.add(Group(chat=chat, folder="alice", requires_trigger=False))
        await alice.sync()
        keys = await alice.upload(photo, "image/png", "shelf.png", encrypt=True)
        assert await alice.download(keys["file"]["url"]) != photo  # the server keeps ciphertext
        good = await alice.send(room, image_message(keys, photo, "and this one?"))
        tampered = dict(keys["file"], hashes={"sha256": "A" * 43})  # someone swapped the bytes' hash
        bad = await alice.send(room, image_message({"file": tampered}, photo, "and that?", name="other.png"))
        assert (await alice.raw_event(room, good))["type"] == "m.room.encrypted"
        first, second = await people_said(d, chat, 2)
        assert first.platform_id == good and second.platform_id == bad
        (a,) = first.attachments
        assert d.daemon.media_files.path(a.sha256).read_bytes() == photo  # decrypted on the way in
        assert second.attachments == () and "do not match the hash" in second.text, second.text

        chart = PDF
        event_id = await d.channel.send_file(chat, await outgoing(d, chart, "report.pdf", "application/pdf", ""), good)
        (got,) = await alice.wait_for(lambda e: e.get("event_id") == event_id)
        assert (await alice.raw_event(room, event_id))["type"] == "m.room.encrypted"
        content = got["content"]
        assert content["msgtype"] == "m.file" and content["body"] == "report.pdf" and "url" not in content
        secret = content["file"]
        ciphertext = await alice.download(secret["url"])
        assert ciphertext != chart and hashlib.sha256(ciphertext).digest()  # not the plaintext on the server
        plain = decrypt_attachment(ciphertext, secret["key"]["k"], secret["hashes"]["sha256"], secret["iv"])
        assert plain == chart
        await d.stop()
    await alice.close()


def test_file_events_parsing() -> None:
    from ngb.channels.matrix_media import download_urls, file_of

    found = file_of({"msgtype": "m.audio", "body": "note.ogg", "url": "mxc://localhost/abc_D-1",
                     "org.matrix.msc3245.voice": {}, "info": {"mimetype": "audio/ogg", "size": 12}})
    assert not isinstance(found, str) and found is not None
    assert (found.incoming.kind, found.incoming.size, found.caption) == (AttachmentKind.VOICE, 12, "")
    assert file_of({"msgtype": "m.text", "body": "hi"}) is None
    assert "no usable mxc" in str(file_of({"msgtype": "m.file", "body": "x", "url": "https://evil/x"}))
    assert "no usable mxc" in str(file_of({"msgtype": "m.file", "body": "x", "url": "mxc://localhost/../../x"}))
    assert "encryption info" in str(file_of({"msgtype": "m.file", "body": "x", "file": {"url": "mxc://a/b"}}))
    # the token goes to the configured homeserver only, whatever server the mxc names
    assert download_urls("https://hs.example", "mxc://evil.example/abc") == (
        "https://hs.example/_matrix/client/v1/media/download/evil.example/abc",
        "https://hs.example/_matrix/media/v3/download/evil.example/abc")
