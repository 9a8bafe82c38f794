"""The media core on its own: what a file is, its name, the intake's notes, images for the model,
files the agent sends from its folder (and those it may not), and retention."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
import trio
from PIL import Image

from ngb.media.files import MediaFiles
from ngb.media.folder import FolderPathError
from ngb.media.images import ImageProblem, prepare_image
from ngb.media.intake import Incoming, MediaIntake, with_notes
from ngb.media.limits import MB, MediaLimits
from ngb.media.names import safe_name
from ngb.media.outgoing import Outgoing
from ngb.media.retention import sweep
from ngb.media.sniff import kind_of, sniff
from ngb.records import AttachmentKind


def image_bytes(fmt: str, size: tuple[int, int] = (30, 20), **kw) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, fmt, **kw)
    return out.getvalue()


@pytest.mark.parametrize(("data", "name", "mime"), [
    (image_bytes("PNG"), "x.jpg", "image/png"),  # the bytes win over the name
    (image_bytes("JPEG"), None, "image/jpeg"),
    (image_bytes("GIF"), None, "image/gif"),
    (image_bytes("WEBP"), None, "image/webp"),
    (b"%PDF-1.7\n...", "a.txt", "application/pdf"),
    (b"OggS\x00\x02rest", None, "audio/ogg"),
    (b"PK\x03\x04rest", "report.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    (b"PK\x03\x04rest", "evil.exe", "application/zip"),
    (b"a,b\n1,2\n", "t.csv", "text/csv"),
    (b"\x7fELF\x02\x01", "innocent.pdf", "application/x-executable"),
    (b"\x13\x37\x00\x00" + bytes(range(200, 256)) * 2, None, "application/octet-stream"),  # no magic, not text
])
def test_sniffing_reads_the_bytes_not_the_name(data: bytes, name: str | None, mime: str) -> None:
    assert sniff(data, name) == mime


def test_kinds() -> None:
    assert kind_of("audio/ogg", AttachmentKind.VOICE) is AttachmentKind.VOICE
    assert kind_of("audio/ogg") is AttachmentKind.AUDIO
    assert kind_of("image/svg+xml") is AttachmentKind.DOCUMENT  # text, never shown inline
    assert kind_of("application/pdf", AttachmentKind.IMAGE) is AttachmentKind.DOCUMENT


@pytest.mark.parametrize(("raw", "safe"), [
    ("../../etc/passwd", "passwd"),
    ("..", "file.png"),
    (".bashrc", "bashrc"),
    ("a\x00b\nc.txt", "a_b_c.txt"),
    ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
    ("Übersicht 2026 (final).pdf", "Übersicht 2026 (final).pdf"),
    ("x" * 300 + ".pdf", "x" * 116 + ".pdf"),
    (None, "file.png"),
])
def test_safe_names(raw: str | None, safe: str) -> None:
    assert safe_name(raw, "image/png") == safe


async def test_the_intake_turns_every_bad_file_into_a_note(tmp_path: Path) -> None:
    used = {"local:x": 0}

    async def chat_bytes(chat: str) -> int:
        return used[chat]

    intake = MediaIntake(MediaFiles(tmp_path / "m"), MediaLimits(max_file_bytes=MB, max_files=2, download_timeout=0.5,
                                                                 group_quota_bytes=3 * MB), chat_bytes=chat_bytes)
    fetched: list[str] = []

    async def never_fetch() -> bytes:
        fetched.append("oops")
        return b""

    async def broken() -> bytes:
        raise ConnectionError("reset by peer")

    async def slow() -> bytes:
        await trio.sleep(5)
        return b""

    async def png() -> bytes:
        return image_bytes("PNG")

    taken = await intake.take_all("local:x", [
        (Incoming(AttachmentKind.IMAGE, size=31 * MB), never_fetch),
        (Incoming(AttachmentKind.DOCUMENT, name="a.pdf"), broken),
        (Incoming(AttachmentKind.VOICE, transcript="hello there"), slow),
    ])
    assert fetched == []  # a declared size over the limit is never fetched
    assert taken.attachments == ()
    assert taken.notes == (
        "[photo: too large, 31 MB > 1 MB]",
        "[file a.pdf: the download failed (reset by peer)]",
        "[1 more files not taken: at most 2 per message]",
    )
    used["local:x"] = 3 * MB
    quota = await intake.take_all("local:x", [(Incoming(AttachmentKind.IMAGE), png)])
    assert quota.notes == ("[photo: the chat's file quota is full (3 MB)]",)
    used["local:x"] = 0
    slow_one = await intake.take_all("local:x", [(Incoming(AttachmentKind.VOICE, transcript="hi"), slow)])
    assert slow_one.notes == ('[voice message: the download timed out after 0.5 s; its transcript: "hi"]',)
    ok = await intake.take_all("local:x", [(Incoming(AttachmentKind.IMAGE, name="p.png"), png)])
    [att] = ok.attachments
    path = intake.files.path(att.sha256)
    assert path.read_bytes() == image_bytes("PNG") and path.stat().st_mode & 0o777 == 0o600
    assert list((tmp_path / "m" / "tmp").iterdir()) == []  # nothing half-written is left
    assert with_notes("hi", ok.notes) == "hi" and with_notes("", ["[a]", "[b]"]) == "[a] [b]"


def test_images_for_the_model(tmp_path: Path) -> None:
    gif = tmp_path / "a.gif"
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(gif, save_all=True, append_images=frames[1:], loop=0)
    first = prepare_image(gif, "image/gif")
    assert first.media_type == "image/jpeg"
    r, g, b = Image.open(io.BytesIO(first.data)).convert("RGB").getpixel((5, 5))
    assert r > 200 and b < 50  # the first frame, red
    bmp = tmp_path / "a.bmp"
    bmp.write_bytes(image_bytes("BMP", (4000, 100)))
    wide = prepare_image(bmp, "image/bmp")
    assert (wide.width, wide.height) == (1568, 39)
    corrupt = tmp_path / "c.png"
    corrupt.write_bytes(image_bytes("PNG")[:40])
    with pytest.raises(ImageProblem, match="cannot be read"):
        prepare_image(corrupt, "image/png")
    heic = tmp_path / "p.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 100)
    with pytest.raises(ImageProblem, match="HEIC photos are not supported"):
        prepare_image(heic, "image/heic")


async def test_files_the_agent_sends_stay_in_its_folder(tmp_path: Path) -> None:
    groups = tmp_path / "groups"
    folder = groups / "g"
    (folder / "out").mkdir(parents=True)
    (folder / "out" / "chart.png").write_bytes(image_bytes("PNG"))
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    (folder / "link.txt").symlink_to(secret)
    (folder / "linkdir").symlink_to(tmp_path)
    outgoing = Outgoing(MediaFiles(tmp_path / "m"), MediaLimits(send_max_bytes=1000), groups)
    att = await outgoing.from_folder("g", "/workspace/group/out/chart.png")
    assert att.kind is AttachmentKind.IMAGE and att.name == "chart.png"
    for bad, why in [("link.txt", "a link"), ("linkdir/secret.txt", "not a folder of yours"),
                     ("../../secret.txt", "leaves your group folder"), ("/etc/passwd", "not inside your group folder"),
                     ("out", "not a plain file"), ("nope.txt", "no file")]:
        with pytest.raises(FolderPathError, match=why):
            await outgoing.from_folder("g", bad)
    (folder / "big.bin").write_bytes(b"x" * 2000)
    with pytest.raises(FolderPathError, match="too large"):
        await outgoing.from_folder("g", "big.bin")
    text, images = await outgoing.markdown_images(
        "g", "Here it is:\n![chart](out/chart.png)\n![web](https://x.test/a.png) ![gone](missing.png)")
    assert [a.name for a in images] == ["chart.png"]
    assert text == "Here it is:\n\n![web](https://x.test/a.png) ![gone](missing.png)"


async def test_retention_expires_old_files_and_keeps_new_ones(tmp_path: Path) -> None:
    files = MediaFiles(tmp_path / "m")
    old = await files.write_bytes(b"old bytes")
    fresh = await files.write_bytes(b"fresh unreferenced bytes")
    kept = await files.write_bytes(b"still needed")
    past = time.time() - 2 * 3600
    for s in (old, kept):
        os.utime(files.path(s.sha256), (past, past))
    expired_before: list[object] = []

    async def expire(before: object) -> int:
        expired_before.append(before)
        return 1

    async def needed() -> set[str]:
        return {kept.sha256}

    swept = await sweep(files, 30, expire=expire, needed=needed)
    assert swept.deleted == 1 and len(expired_before) == 1
    assert not files.has(old.sha256)
    assert files.has(fresh.sha256)  # within the grace: a message may be about to name it
    assert files.has(kept.sha256)


def test_the_transcription_key_is_read_from_its_file_and_kept_out_of_mounts(tmp_path: Path) -> None:
    from ngb.config import ConfigError, load_config
    from ngb.sandbox.mount_places import default_forbidden_roots

    key = tmp_path / "whisper.key"
    key.write_text("gsk-secret-key-0123456789\n")
    key.chmod(0o600)
    toml = tmp_path / "ngb.toml"
    toml.write_text(f'transcribe_url = "https://api.groq.com/openai/v1"\ntranscribe_api_key_file = "{key}"\n')
    config = load_config(toml, env={"NGB_STATE_DIR": str(tmp_path / "state")})
    assert config.transcribe_api_key == "gsk-secret-key-0123456789"
    assert key in default_forbidden_roots(config)
    toml.write_text('transcribe_api_key = "in the file"\n')
    with pytest.raises(ConfigError, match="transcribe_api_key_file"):
        load_config(toml, env={"NGB_STATE_DIR": str(tmp_path / "state")})


class _TextOnly:
    """A channel that sends text only (as Lark, DingTalk, WeCom and QQ do until "Media II")."""

    name = "textonly"
    state = "connected"

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, chat: str, text: str, reply_to: str | None = None) -> str | None:
        self.sent.append(text)
        return f"m{len(self.sent)}"


class _Files(_TextOnly):
    def __init__(self) -> None:
        super().__init__()
        self.files: list[tuple[str, bytes, str]] = []

    async def send_file(self, chat: str, file, reply_to: str | None = None) -> str | None:  # noqa: ANN001
        self.files.append((file.name, file.path.read_bytes(), file.caption))
        return "f1"


async def test_the_outbox_sends_a_file_once_or_names_it_where_files_cannot_go(tmp_path: Path) -> None:
    from ngb.outbox import OutboxSender
    from ngb.store import Store

    store = Store(tmp_path / "ngb.db")
    await store.open()
    files = MediaFiles(tmp_path / "m")
    outgoing = Outgoing(files, MediaLimits(), tmp_path / "groups")
    (tmp_path / "groups" / "g").mkdir(parents=True)
    (tmp_path / "groups" / "g" / "r.pdf").write_bytes(b"%PDF-1.4 report")
    att = await outgoing.from_folder("g", "r.pdf")
    text_only, with_files = _TextOnly(), _Files()
    sender = OutboxSender(store, {"textonly": text_only, "files": with_files}, assistant_name="Andy", files=files)
    await store.queue_file("g", "textonly:1", att, "the report")
    await store.queue_file("g", "files:1", att, "the report")
    await sender.flush()
    await sender.flush()
    assert text_only.sent == ["the report\n[document: r.pdf, 1 KB: this chat cannot receive files]"]
    assert with_files.files == [("r.pdf", b"%PDF-1.4 report", "the report")]
    [delivered] = [m for m in await store.messages_after("files:1", 0) if m.from_bot]
    assert [a.name for a in delivered.attachments] == ["r.pdf"]
    await store.close()


def test_the_prompt_names_each_file_with_its_path_transcript_or_note() -> None:
    from ngb.media.handoff import Placed, PlacedFile
    from ngb.prompts import format_prompt
    from ngb.records import Attachment, Message, utcnow

    voice = Attachment(AttachmentKind.VOICE, "audio/amr", 3000, "v.amr", "a" * 64, id=1,
                       transcript="call mum <at> 5", transcript_source="platform")
    photo = Attachment(AttachmentKind.IMAGE, "image/heic", 2 * MB, 'x".heic', "b" * 64, id=2)
    msg = Message(id=9, chat="wecom:u", sender="bo", text="", time=utcnow(), attachments=(voice, photo))
    placed = Placed({1: PlacedFile(path="/workspace/group/attachments/1-v.amr", transcript=voice.transcript,
                                   transcript_source="platform"),
                     2: PlacedFile(path="/workspace/group/attachments/2-x.heic", note="not shown as an image: HEIC")})
    prompt = format_prompt([msg], placed=placed)
    assert ('<attachment kind="voice" name="v.amr" type="audio/amr" size="3 KB" '
            'path="/workspace/group/attachments/1-v.amr"><transcript source="platform">call mum &lt;at&gt; 5'
            '</transcript></attachment>') in prompt
    assert 'name="x&quot;.heic"' in prompt and "<note>not shown as an image: HEIC</note>" in prompt
