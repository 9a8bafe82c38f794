"""Files in the terminal chat client (``ngb chat --file PATH``, ``/file PATH``): the multipart POST
it sends (parsed by the fake daemon of tests/test_chat_client.py with Quart's own form parser), the
bytes it carries, and the ``[kind: name (size) url]`` lines it prints for attachments."""

from __future__ import annotations

import argparse
import io
import os
import re

import pytest

from ngb.cli import chat as chat_client
from ngb.cli.chat import EXIT_ERROR, EXIT_OK, format_message, run_chat, send_and_wait
from ngb.cli.chat_files import attachment_lines, files_to_send, size_text

try:
    from test_chat_client import PipeInput, free_port, png, serve_fake, wait_for
except ImportError:  # tests/ became a package
    from tests.test_chat_client import PipeInput, free_port, png, serve_fake, wait_for


@pytest.fixture
async def daemon(nursery):
    return await serve_fake(nursery)


def test_attachment_lines():
    msg = {
        "id": 1,
        "attachments": [
            {"id": 1, "name": "cat.png", "mime": "image/png", "size": 12_300, "kind": "image", "url": "/api/files/1"},
            {"id": 2, "name": "evil\x1b[31m\nname.pdf", "size": 2_621_440, "kind": "document", "url": "/api/files/2"},
            {"id": 3, "name": "gone.ogg", "size": 512, "kind": "voice"},  # no url: no link
            "junk",
        ],
    }
    assert attachment_lines(msg, "http://127.0.0.1:8080/") == [
        "[image: cat.png (12 KB) http://127.0.0.1:8080/api/files/1]",
        "[document: evil [31m name.pdf (2.5 MB) http://127.0.0.1:8080/api/files/2]",
        "[voice: gone.ogg (512 B)]",
    ]
    assert size_text(31 * 1024 * 1024) == "31 MB"
    # a message of files only: the first file on the head line, the rest indented under it
    text = format_message({"id": 1, "sender": "Andy", "text": "", "from_bot": True, "time": "x", **msg}, "http://h")
    lines = text.splitlines()
    assert lines[0] == "[--:--] Andy (bot): [image: cat.png (12 KB) http://h/api/files/1]"
    assert lines[1].startswith(" " * 8 + "[document: ")


async def test_send_files_one_shot(daemon, tmp_path):
    """--file with --send: one multipart POST with the fields and the exact bytes; the bot's reply
    and its files are printed, each file as a line with its absolute URL."""
    image = tmp_path / "dot.png"
    image.write_bytes(png(3, 2))
    blob = tmp_path / "data.bin"
    blob.write_bytes(os.urandom(700_000))  # binary, larger than one read chunk
    out, err = io.StringIO(), io.StringIO()
    rc = await send_and_wait(
        daemon.url, "main", "look at these", sender="me", token=None, wait=5, settle=0.2,
        stdout=out, stderr=err, files=files_to_send([image, blob]),
    )
    assert rc == EXIT_OK, err.getvalue()
    [upload] = daemon.uploads
    assert re.fullmatch(r"multipart/form-data; boundary=\S+", upload["content_type"])
    assert upload["fields"] == {"sender": ["me"], "text": ["look at these"]}
    assert [(f["name"], f["mime"], f["data"]) for f in upload["files"]] == [
        ("dot.png", "image/png", image.read_bytes()),
        ("data.bin", "application/octet-stream", blob.read_bytes()),
    ]
    assert daemon.messages["main"][0]["attachments"][0]["name"] == "dot.png"
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"\[\d\d:\d\d\] Andy \(bot\): Echo: look at these", lines[0])
    size = len(image.read_bytes())
    assert lines[1:] == [
        f"        [image: dot.png ({size} B) {daemon.url}/api/files/1]",
        f"        [other: data.bin (684 KB) {daemon.url}/api/files/2]",
    ]


async def test_file_without_text_and_with_token(nursery, tmp_path):
    d = await serve_fake(nursery, token="s3cret")
    doc = tmp_path / "notes.txt"
    doc.write_text("remember the milk\n")
    out = io.StringIO()
    rc = await send_and_wait(
        d.url, "main", "", sender="me", token="s3cret", wait=5, settle=0.2, stdout=out,
        files=files_to_send([doc]),
    )
    assert rc == EXIT_OK
    [upload] = d.uploads
    assert upload["authorization"] == "Bearer s3cret"
    assert upload["fields"]["text"] == [""]
    assert upload["files"][0]["data"] == b"remember the milk\n"
    assert f"[document: notes.txt (18 B) {d.url}/api/files/1]" in out.getvalue()


async def test_too_large_is_one_line_with_the_limit(daemon, tmp_path):
    daemon.max_request_bytes = 4096
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 10_000)
    err = io.StringIO()
    rc = await send_and_wait(
        daemon.url, "main", "", sender="me", token=None, wait=1, stdout=io.StringIO(), stderr=err,
        files=files_to_send([big]),
    )
    assert rc == EXIT_ERROR
    assert err.getvalue().count("\n") == 1
    assert "too large" in err.getvalue() and "> 4 KB" in err.getvalue()
    assert daemon.messages["main"] == []


def test_cli_file_option(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("NGB_API_TOKEN", raising=False)
    parser = argparse.ArgumentParser()
    chat_client.add_arguments(parser)
    a, b = tmp_path / "a.png", tmp_path / "b.txt"
    args = parser.parse_args(["team", "--file", str(a), "--file", str(b), "--wait", "1"])
    assert args.file == [str(a), str(b)] and args.send is None

    class Cfg:
        web_host = "127.0.0.1"
        web_port = free_port()
        api_token = None

    # a missing file: one line, nothing posted (the daemon is not even asked)
    rc = chat_client.main_from_args(args, Cfg())
    assert rc == EXIT_ERROR
    assert capsys.readouterr().err == f"ngb chat: cannot send {a}: no such file\n"
    # files there, no --send: a one-shot post of the files (here: the daemon is down)
    a.write_bytes(png(1, 1))
    b.write_text("x")
    rc = chat_client.main_from_args(args, Cfg())
    assert rc == EXIT_ERROR
    assert "cannot reach the daemon" in capsys.readouterr().err


async def test_interactive_file_command(nursery, tmp_path):
    d = await serve_fake(nursery)
    photo = tmp_path / "my cat.png"
    photo.write_bytes(png(4, 4))
    stdin, out, err = PipeInput(), io.StringIO(), io.StringIO()
    result: list[int] = []

    async def client():
        result.append(await run_chat(d.url, "main", sender="me", token=None, stdin=stdin.reader, stdout=out, stderr=err))

    nursery.start_soon(client)
    await wait_for(lambda: "Ctrl-D" in out.getvalue())
    assert "/file PATH" in out.getvalue()
    stdin.type(f"/file {tmp_path / 'missing.png'}")
    await wait_for(lambda: "no such file" in out.getvalue())
    stdin.type(f'/file "{photo}" what breed is this?')
    await wait_for(lambda: "Echo: what breed is this?" in out.getvalue())
    await wait_for(lambda: f"[image: my cat.png ({len(photo.read_bytes())} B) {d.url}/api/files/1]" in out.getvalue())
    d.max_request_bytes = 100  # too large: said, and the session goes on
    stdin.type(f"/file {photo}")
    await wait_for(lambda: "-- not sent: the daemon refused the message as too large" in out.getvalue())
    stdin.type("still here")
    await wait_for(lambda: "Echo: still here" in out.getvalue())
    stdin.close()
    await wait_for(lambda: bool(result))
    assert result == [EXIT_OK], err.getvalue()
    [upload] = d.uploads[:1]
    assert upload["fields"] == {"sender": ["me"], "text": ["what breed is this?"]}
    assert upload["files"][0]["name"] == "my cat.png"
    assert upload["files"][0]["data"] == photo.read_bytes()
    assert [m["text"] for m in d.messages["main"] if not m["from_bot"]] == ["what breed is this?", "still here"]


async def test_with_the_real_daemon(run_daemon, tmp_path):
    """``ngb chat --file`` against the real daemon (bearer token): the photo is stored with the
    message, the same bytes; a file over the per-file limit becomes the daemon's note while the
    message is taken; a body over the upload limit is a one-line 413 naming the limit, and the
    client's next message still goes through."""
    d = await run_daemon(NGB_MEDIA_MAX_FILE_MB="1", NGB_MEDIA_MAX_FILES="2")
    photo, big, huge = tmp_path / "cat.png", tmp_path / "big.bin", tmp_path / "huge.bin"
    photo.write_bytes(png(16, 16))
    big.write_bytes(os.urandom(1_500_000))
    huge.write_bytes(os.urandom(4 * 1024 * 1024))
    out, err = io.StringIO(), io.StringIO()
    rc = await send_and_wait(
        d.base_url, "main", "what is this?", sender="me", token=d.token, wait=10, settle=0.2,
        stdout=out, stderr=err, files=files_to_send([photo, big]),
    )
    assert rc == EXIT_OK, err.getvalue()
    [msg] = [m for m in await d.history("main") if not m["from_bot"]]
    [att] = msg["attachments"]
    assert att["name"] == "cat.png" and att["kind"] == "image"
    assert (await d.http.get(att["url"])).content == photo.read_bytes()
    assert "big.bin" in msg["text"] and "too large" in msg["text"] and "1 MB" in msg["text"]

    err = io.StringIO()
    rc = await send_and_wait(
        d.base_url, "main", "", sender="me", token=d.token, wait=1, stdout=io.StringIO(), stderr=err,
        files=files_to_send([huge]),
    )
    assert rc == EXIT_ERROR
    assert err.getvalue().startswith("ngb chat: the daemon refused the message as too large: "), err.getvalue()
    assert re.search(r"\d", err.getvalue())  # the daemon's limit, as it words it
    assert err.getvalue().count("\n") == 1
    out = io.StringIO()
    rc = await send_and_wait(
        d.base_url, "main", "still there?", sender="me", token=d.token, wait=10, settle=0.2, stdout=out
    )
    assert rc == EXIT_OK
