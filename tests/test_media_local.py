"""Files on the local chat, through the real daemon (fake launcher): posted as multipart, stored
with the message, served back, handed to the agent in its folder and as image blocks, transcribed,
and every bad file a note while the message is answered anyway."""

from __future__ import annotations

import io
import os
from pathlib import Path

import trio
from PIL import Image

from tests.fakes.transcription import FakeTranscription


def png(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def ogg_voice() -> bytes:
    return b"OggS\x00\x02" + bytes(range(200)) * 20


async def post_files(d, files: list[tuple[str, bytes, str]], text: str = "", chat: str = "main") -> dict:
    r = await d.http.post(
        f"/api/chats/{chat}/messages",
        data={"sender": "alice", "text": text},
        files=[("file", f) for f in files],
    )
    assert r.status_code == 202, r.text
    rows = [m for m in await d.history(chat) if m["id"] == r.json()["id"]]
    return rows[0]


async def test_a_photo_is_stored_served_and_handed_to_the_agent(run_daemon) -> None:
    d = await run_daemon()
    data = png()
    msg = await post_files(d, [("cat.png", data, "image/png")], text="what is this?")
    [att] = msg["attachments"]
    assert att["kind"] == "image" and att["mime"] == "image/png" and att["size"] == len(data)
    assert att["name"] == "cat.png"
    # served back, the same bytes, inline with nosniff and a sandboxing CSP
    r = await d.http.get(att["url"])
    assert r.status_code == 200 and r.content == data
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"].startswith("inline")
    assert "sandbox" in r.headers["content-security-policy"]
    # stored content-addressed, 0600, not executable
    stored = d.daemon.media_files.path(__import__("hashlib").sha256(data).hexdigest())
    assert stored.read_bytes() == data and stored.stat().st_mode & 0o777 == 0o600
    await d.wait_bot_replies("main", 1)
    # the agent got the path in the prompt, the file in its folder, and the image for the model
    frame = d.launcher.inputs[-1]
    path = f"/workspace/group/attachments/{att['id']}-cat.png"
    assert f'path="{path}"' in frame["prompt"] and 'shown="as an image"' in frame["prompt"]
    group_dir = d.daemon.config.groups_dir / "main"
    assert (group_dir / "attachments" / f"{att['id']}-cat.png").read_bytes() == data
    [image] = frame["images"]
    assert image["media_type"] == "image/png"
    model_copy = group_dir / Path(image["path"]).relative_to("/workspace/group")
    assert Image.open(model_copy).size == (64, 48)


async def test_a_large_photo_is_resized_for_the_model(run_daemon) -> None:
    d = await run_daemon()
    await post_files(d, [("big.png", png(3000, 2000), "image/png")])
    await d.wait_bot_replies("main", 1)
    [image] = d.launcher.inputs[-1]["images"]
    model_copy = d.daemon.config.groups_dir / "main" / Path(image["path"]).relative_to("/workspace/group")
    assert max(Image.open(model_copy).size) == 1568


async def test_bad_files_become_notes_and_the_message_is_answered(run_daemon) -> None:
    d = await run_daemon(NGB_MEDIA_MAX_FILE_MB="1", NGB_MEDIA_MAX_FILES="3")
    big = b"%PDF-1.4\n" + os.urandom(1024 * 1024 + 10)
    elf = b"\x7fELF" + os.urandom(100)
    unknown = os.urandom(2048)
    msg = await post_files(d, [("big.pdf", big, "application/pdf"), ("run", elf, "application/octet-stream"),
                               ("blob.dat", unknown, "application/octet-stream"),
                               ("../../x\x07.txt", b"fine text", "text/plain")], text="look")
    text = msg["text"]
    assert "[file big.pdf: too large, over 1 MB]" in text
    assert "[file run: executable files are not taken]" in text
    assert "[1 more files not taken: at most 3 per message]" in text
    assert "unknown file type" in text
    assert msg["attachments"] == []
    msg2 = await post_files(d, [("../../x\x07.txt", b"fine text", "text/plain")])
    [att] = msg2["attachments"]
    assert att["name"] == "x_07.txt" and att["kind"] == "document"  # httpx sends \x07 as %07
    replies = await d.wait_bot_replies("main", 1)
    assert replies  # answered anyway
    assert not (d.daemon.config.groups_dir / "x_.txt").exists()
    with trio.fail_after(10):  # the operator sees them counted (gauges refresh every 5 s)
        while 'ngb_media_files{outcome="refused"} 4.0' not in (await d.http.get("/metrics")).text:
            await trio.sleep(0.2)
    assert 'ngb_media_files{outcome="taken"} 1.0' in (await d.http.get("/metrics")).text


async def test_an_upload_over_the_body_limit_is_refused_before_it_is_read(run_daemon) -> None:
    d = await run_daemon(NGB_MEDIA_MAX_FILE_MB="1", NGB_MEDIA_MAX_FILES="1")
    r = await d.http.post("/api/chats/main/messages", data={"sender": "a", "text": "x"},
                          files=[("file", ("a.bin", b"\0" * (3 * 1024 * 1024), "application/octet-stream"))])
    assert r.status_code == 413
    # and JSON posts keep the small body limit
    r = await d.http.post("/api/chats/main/messages", json={"sender": "a", "text": "y" * 200_000})
    assert r.status_code == 413


async def test_files_are_served_safely(run_daemon) -> None:
    d = await run_daemon()
    msg = await post_files(d, [("page.html", b"<html><script>alert(1)</script></html>", "text/html")])
    [att] = msg["attachments"]
    r = await d.http.get(att["url"])
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith("attachment;")
    assert (await d.http.get("/api/files/99999")).status_code == 404
    async with d.anonymous() as anon:
        assert (await anon.get(att["url"])).status_code == 401


async def test_a_symlink_planted_in_the_folder_is_not_followed(run_daemon, tmp_path: Path) -> None:
    d = await run_daemon()
    await d.post("main", "hello")
    await d.wait_bot_replies("main", 1)
    outside = tmp_path / "outside"
    outside.mkdir()
    (d.daemon.config.groups_dir / "main" / "attachments").symlink_to(outside)
    await post_files(d, [("notes.txt", b"secret plan", "text/plain")], text="read it")
    await d.wait_bot_replies("main", 2)
    assert list(outside.iterdir()) == []
    assert "could not be put in your folder" in d.launcher.inputs[-1]["prompt"]


async def test_a_voice_note_is_transcribed_once(run_daemon) -> None:
    fake = FakeTranscription(text="remind me to buy oat milk")
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        d = await run_daemon(NGB_TRANSCRIBE_URL=fake.url, NGB_TRANSCRIBE_API_KEY="k-123456", NGB_TRANSCRIBE_MODEL="whisper-large-v3")
        msg = await post_files(d, [("voice.ogg", ogg_voice(), "audio/ogg")])
        assert msg["attachments"][0]["kind"] == "audio"
        await d.wait_bot_replies("main", 1)
        prompt = d.launcher.inputs[-1]["prompt"]
        assert '<transcript source="service">remind me to buy oat milk</transcript>' in prompt
        [call] = fake.calls
        assert call.model == "whisper-large-v3" and call.authorization == "Bearer k-123456"
        assert call.data == ogg_voice()
        [row] = [m for m in await d.history() if m["id"] == msg["id"]]
        assert row["attachments"][0]["transcript"] == "remind me to buy oat milk"
        nursery.cancel_scope.cancel()


async def test_without_transcription_the_agent_is_told_and_gets_the_file(run_daemon) -> None:
    d = await run_daemon()
    await post_files(d, [("voice.ogg", ogg_voice(), "audio/ogg")])
    await d.wait_bot_replies("main", 1)
    prompt = d.launcher.inputs[-1]["prompt"]
    assert "no transcription service is set up" in prompt and "/workspace/group/attachments/" in prompt
