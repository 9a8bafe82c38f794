"""Tests of the terminal chat client (ngb/cli/chat.py) against a fake local-chat API.

The fake daemon here (FakeDaemon + serve_fake) implements the local chat HTTP API in
memory, with a bot that answers "Echo: ..." after 50 ms (and sends the files it got back).
It takes files as the daemon does (multipart/form-data POST, ``attachments`` in message JSON,
``GET /api/files/<id>``), answers with the daemon's Content-Security-Policy, and refuses a
state change from the page (no bearer header) that is neither JSON nor carries X-Requested-With.
tests/test_chat_page.py and tests/test_chat_files_client.py reuse it.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import struct
import zlib
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import Response, request, send_from_directory
from quart_trio import QuartTrio

from ngb.cli import chat as chat_client
from ngb.cli.chat import (
    EXIT_ERROR,
    EXIT_NO_REPLY,
    EXIT_OK,
    base_url_for,
    format_message,
    normalize_chat,
    run_chat,
    send_and_wait,
)
from ngb.media.limits import megabytes
from ngb.web.security import content_security_policy

STATIC_DIR = Path(__file__).resolve().parent.parent / "ngb" / "web" / "static"
TRIGGER = "@Andy"
MB = 1024 * 1024


def png(width: int, height: int, rgb: tuple[int, int, int] = (220, 70, 60)) -> bytes:
    """A real PNG of one colour (browsers decode it; its size is checked in the page tests)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def kind_of(mime: str) -> str:
    if mime.startswith("image/"):
        return "image"
    if mime in ("audio/ogg", "audio/opus"):
        return "voice"
    if mime.startswith("audio/"):
        return "audio"
    if mime.startswith("video/"):
        return "video"
    if mime.startswith("text/") or mime in ("application/pdf", "application/json"):
        return "document"
    return "other"


class FakeDaemon:
    """In-memory stand-in for the daemon's local chat API."""

    def __init__(
        self,
        *,
        token: str | None = None,
        sse: bool = True,
        bot_delay: float = 0.05,
        chats: tuple[str, ...] = ("main", "team"),
        static_dir: Path | None = None,
    ):
        self.token = token
        self.sse = sse
        self.bot_delay = bot_delay
        self.chats = list(chats)
        self.static_dir = static_dir
        self.messages: dict[str, list[dict]] = {c: [] for c in chats}
        self.next_id = 1
        self.changed = trio.Event()
        self.hits: list[tuple[str, str]] = []
        self.nursery: trio.Nursery | None = None
        self.url = ""
        self.files: dict[int, tuple[dict, bytes]] = {}  # id -> (attachment JSON, bytes)
        self.uploads: list[dict] = []  # every multipart POST: headers, fields and the file parts
        self.max_file_bytes = 20 * MB  # one file; past it the file becomes a note in the text
        self.max_request_bytes = 30 * MB  # the whole body; past it 413

    # ---- state
    def add_file(self, name: str, data: bytes, mime: str) -> dict:
        file_id = len(self.files) + 1
        item = {
            "id": file_id, "name": name, "mime": mime, "size": len(data), "kind": kind_of(mime),
            "url": f"/api/files/{file_id}",
        }
        self.files[file_id] = (item, data)
        return item

    def add(
        self, chat: str, sender: str, text: str, from_bot: bool = False, attachments: list[dict] | None = None
    ) -> dict:
        msg = {
            "id": self.next_id,
            "sender": sender,
            "text": text,
            "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "from_bot": from_bot,
            "attachments": list(attachments or []),
        }
        self.next_id += 1
        self.messages[chat].append(msg)
        self.changed.set()
        self.changed = trio.Event()
        return msg

    def triggered(self, chat: str, text: str) -> bool:
        return chat == "main" or text.strip().lower().startswith(TRIGGER.lower())

    async def _bot_reply(self, chat: str, text: str, attachments: list[dict] | None = None) -> None:
        await trio.sleep(self.bot_delay)
        self.add(chat, "Andy", f"Echo: {text}", from_bot=True, attachments=attachments)

    def hit_count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.hits if m == method and re.search(pattern, p))

    # ---- app
    def make_app(self) -> QuartTrio:
        app = QuartTrio(__name__, static_folder=None)  # its own /static route serves the page's files
        app.config["MAX_CONTENT_LENGTH"] = None  # the fake's own limit below answers 413 as JSON
        daemon = self
        csp = content_security_policy(daemon.static_dir or STATIC_DIR)

        def err(status: int, message: str):
            return {"error": message}, status

        def authorized() -> bool:
            if not daemon.token:
                return True
            if request.headers.get("Authorization", "") == f"Bearer {daemon.token}":
                return True
            return request.cookies.get("ngb_token") == daemon.token

        @app.before_request
        async def _record():
            daemon.hits.append((request.method, request.path))
            if request.path.startswith("/api/") and request.path != "/api/login" and not authorized():
                return err(401, "missing or wrong API token")
            if (
                request.method == "POST"
                and not request.headers.get("Authorization", "").startswith("Bearer ")
                and not (request.content_type or "").startswith("application/json")
                and not request.headers.get("X-Requested-With")
            ):
                return err(415, "state changes need a JSON body or X-Requested-With")
            return None

        @app.after_request
        async def _headers(response: Response) -> Response:
            response.headers.setdefault("Content-Security-Policy", csp)
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            return response

        @app.get("/")
        async def _index():
            return await send_from_directory(daemon.static_dir or STATIC_DIR, "chat.html")

        @app.get("/static/<path:name>")
        async def _static(name: str):
            return await send_from_directory(daemon.static_dir or STATIC_DIR, name)

        @app.post("/api/login")
        async def _login():
            body = await request.get_json(silent=True) or {}
            if not daemon.token or body.get("token") != daemon.token:
                return err(401, "wrong token")
            resp = Response(json.dumps({"ok": True}), mimetype="application/json")
            resp.set_cookie("ngb_token", daemon.token, httponly=True, samesite="Strict")
            return resp

        @app.get("/api/info")
        async def _info():
            return {"trigger": TRIGGER, "assistant": "Andy", "version": "test"}

        @app.get("/api/chats")
        async def _chats():
            return [
                {"chat": f"local:{c}", "name": c, "registered": True, "is_main": c == "main"}
                for c in daemon.chats
            ]

        def chat_or_404(chat: str):
            if chat not in daemon.messages:
                return None
            return daemon.messages[chat]

        def after_arg() -> int:
            try:
                return int(request.args.get("after", "0"))
            except ValueError:
                return 0

        @app.get("/api/chats/<chat>/messages")
        async def _list(chat: str):
            msgs = chat_or_404(chat)
            if msgs is None:
                return err(404, f"no local chat named {chat!r}")
            after = after_arg()
            return [m for m in msgs if m["id"] > after][-200:]

        async def _post_files(chat: str):
            if (request.content_length or 0) > daemon.max_request_bytes:
                size, limit = megabytes(request.content_length or 0), megabytes(daemon.max_request_bytes)
                # answered before the body is read: the connection is closed (else it would hang)
                return {"error": f"the message is too large: {size} > {limit}"}, 413, {"Connection": "close"}
            form = await request.form
            parts = (await request.files).getlist("file")
            sender, text = form.get("sender"), form.get("text", "")
            upload = {
                "content_type": request.headers.get("Content-Type", ""),
                "authorization": request.headers.get("Authorization"),
                "fields": {k: form.getlist(k) for k in form},
                "files": [],
            }
            notes, attachments = [], []
            for part in parts:
                data = part.read()
                upload["files"].append({"name": part.filename, "mime": part.content_type, "data": data})
                mime = part.content_type or "application/octet-stream"
                if len(data) > daemon.max_file_bytes:
                    size, limit = megabytes(len(data)), megabytes(daemon.max_file_bytes)
                    notes.append(f"[{kind_of(mime)}: too large, {size} > {limit}]")
                    continue
                attachments.append(daemon.add_file(part.filename or "file", data, mime))
            daemon.uploads.append(upload)
            if not sender or not (text.strip() or parts):
                return err(400, "sender and text or a file are required")
            text = "\n".join([text, *notes]) if text and notes else text or "\n".join(notes)
            msg = daemon.add(chat, sender, text, attachments=attachments)
            if daemon.triggered(chat, text) and daemon.nursery is not None:
                daemon.nursery.start_soon(daemon._bot_reply, chat, text, attachments)
            return {"id": msg["id"]}, 202

        @app.get("/api/files/<int:file_id>")
        async def _file(file_id: int):
            if file_id not in daemon.files:
                return err(404, "no such file")
            item, data = daemon.files[file_id]
            return Response(
                data,
                mimetype=item["mime"],
                headers={"Content-Disposition": f'inline; filename="{item["name"]}"'},
            )

        @app.post("/api/chats/<chat>/messages")
        async def _post(chat: str):
            if chat_or_404(chat) is None:
                return err(404, f"no local chat named {chat!r}")
            if (request.content_type or "").startswith("multipart/form-data"):
                return await _post_files(chat)
            body = await request.get_json(silent=True)
            if (
                not isinstance(body, dict)
                or not isinstance(body.get("text"), str)
                or not body["text"].strip()
            ):
                return err(400, "text is required")
            sender = str(body.get("sender") or "me")
            msg = daemon.add(chat, sender, body["text"])
            if daemon.triggered(chat, body["text"]) and daemon.nursery is not None:
                daemon.nursery.start_soon(daemon._bot_reply, chat, body["text"])
            return {"id": msg["id"]}, 202

        @app.get("/api/chats/<chat>/events")
        async def _events(chat: str):
            msgs = chat_or_404(chat)
            if msgs is None:
                return err(404, f"no local chat named {chat!r}")
            if not daemon.sse:
                return err(500, "event stream broken on purpose")
            after = after_arg()

            async def gen():
                last = after
                while True:
                    for m in [m for m in msgs if m["id"] > last]:
                        last = m["id"]
                        yield f"data: {json.dumps(m)}\n\n".encode()
                    event = daemon.changed
                    with trio.move_on_after(15) as scope:
                        await event.wait()
                    if scope.cancelled_caught:
                        yield b": ping\n\n"

            resp = Response(gen(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})
            resp.timeout = None
            return resp

        return app


async def serve_fake(nursery: trio.Nursery, **kwargs) -> FakeDaemon:
    """Start a FakeDaemon on a free loopback port inside ``nursery``."""
    daemon = FakeDaemon(**kwargs)
    daemon.nursery = nursery
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.1
    binds = await nursery.start(partial(serve, daemon.make_app(), config))
    daemon.url = binds[0]
    return daemon


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def daemon(nursery):
    return await serve_fake(nursery)


# ------------------------------------------------------------------ pure helpers


def test_format_message_plain_and_bot():
    msg = {"id": 1, "sender": "me", "text": "hi", "time": "2024-05-01T10:07:00Z", "from_bot": False}
    local = datetime(2024, 5, 1, 10, 7, tzinfo=UTC).astimezone().strftime("%H:%M")
    assert format_message(msg) == f"[{local}] me: hi"
    bot = dict(msg, sender="Andy", text="line1\nline2", from_bot=True)
    assert format_message(bot) == f"[{local}] Andy (bot): line1\n        line2"
    assert format_message({"id": 2, "sender": "x", "text": "t", "time": "garbage"}) == "[--:--] x: t"


def test_normalize_and_base_url():
    assert normalize_chat("local:main") == "main"
    assert normalize_chat(" team ") == "team"
    assert base_url_for("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert base_url_for("::", 9) == "http://[::1]:9"
    assert base_url_for("127.0.0.1", 8123) == "http://127.0.0.1:8123"


# ------------------------------------------------------------------ send mode


async def test_send_prints_reply_and_returns_0(daemon):
    out, err = io.StringIO(), io.StringIO()
    rc = await send_and_wait(
        daemon.url, "main", "hello there", sender="me", token=None, wait=5, settle=0.2, stdout=out, stderr=err
    )
    assert rc == EXIT_OK, err.getvalue()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"\[\d\d:\d\d\] Andy \(bot\): Echo: hello there", lines[0])
    assert err.getvalue() == ""
    assert daemon.messages["main"][0]["sender"] == "me"


async def test_send_accepts_local_prefix_and_trigger_in_group(daemon):
    out = io.StringIO()
    rc = await send_and_wait(
        daemon.url, "local:team", "@Andy ping", sender="bob", token=None, wait=5, settle=0.2, stdout=out
    )
    assert rc == EXIT_OK
    assert "Echo: @Andy ping" in out.getvalue()


async def test_send_without_reply_returns_3(daemon):
    out, err = io.StringIO(), io.StringIO()
    with trio.fail_after(5):
        rc = await send_and_wait(
            daemon.url, "team", "no trigger here", sender="me", token=None, wait=0.6, stdout=out, stderr=err
        )
    assert rc == EXIT_NO_REPLY
    assert out.getvalue() == ""
    assert "no reply" in err.getvalue()


async def test_daemon_down_gives_one_line_error():
    url = f"http://127.0.0.1:{free_port()}"
    out, err = io.StringIO(), io.StringIO()
    rc = await send_and_wait(url, "main", "hi", sender="me", token=None, wait=1, stdout=out, stderr=err)
    assert rc == EXIT_ERROR
    assert err.getvalue() == f'ngb chat: cannot reach the daemon at {url}: is "ngb run" running?\n'
    rc = await run_chat(url, "main", sender="me", token=None, stdin=io.StringIO(""), stdout=out, stderr=err)
    assert rc == EXIT_ERROR
    assert err.getvalue().count("\n") == 2
    assert out.getvalue() == ""


async def test_unknown_chat(daemon):
    err = io.StringIO()
    rc = await send_and_wait(
        daemon.url, "nope", "hi", sender="me", token=None, wait=1, stdout=io.StringIO(), stderr=err
    )
    assert rc == EXIT_ERROR
    assert err.getvalue().startswith('ngb chat: unknown chat "nope"')
    assert err.getvalue().count("\n") == 1


async def test_401_asks_for_token(nursery):
    d = await serve_fake(nursery, token="s3cret")
    err = io.StringIO()
    rc = await send_and_wait(
        d.url, "main", "hi", sender="me", token=None, wait=1, stdout=io.StringIO(), stderr=err
    )
    assert rc == EXIT_ERROR
    assert "set NGB_API_TOKEN" in err.getvalue()
    assert err.getvalue().count("\n") == 1

    err = io.StringIO()
    rc = await send_and_wait(
        d.url, "main", "hi", sender="me", token="wrong", wait=1, stdout=io.StringIO(), stderr=err
    )
    assert rc == EXIT_ERROR
    assert "rejected the API token" in err.getvalue()

    err = io.StringIO()
    rc = await run_chat(
        d.url, "main", sender="me", token=None, stdin=io.StringIO(""), stdout=io.StringIO(), stderr=err
    )
    assert rc == EXIT_ERROR
    assert "set NGB_API_TOKEN" in err.getvalue()

    out = io.StringIO()
    rc = await send_and_wait(d.url, "main", "hi", sender="me", token="s3cret", wait=5, settle=0.2, stdout=out)
    assert rc == EXIT_OK
    assert "Echo: hi" in out.getvalue()


async def test_sse_failure_falls_back_to_polling(nursery):
    d = await serve_fake(nursery, sse=False)
    out, err = io.StringIO(), io.StringIO()
    with trio.fail_after(10):
        rc = await send_and_wait(
            d.url, "main", "poll me", sender="me", token=None, wait=5, settle=0.2, stdout=out, stderr=err
        )
    assert rc == EXIT_OK, err.getvalue()
    assert "Andy (bot): Echo: poll me" in out.getvalue()
    assert d.hit_count("GET", r"/events$") >= 1
    assert d.hit_count("GET", r"/messages$") >= 1


async def test_sse_is_preferred(daemon):
    out = io.StringIO()
    rc = await send_and_wait(
        daemon.url, "main", "stream", sender="me", token=None, wait=5, settle=0.2, stdout=out
    )
    assert rc == EXIT_OK
    assert daemon.hit_count("GET", r"/events$") >= 1
    assert daemon.hit_count("GET", r"/messages$") == 0


async def test_several_replies_are_all_printed(daemon):
    async def second_reply():
        await trio.sleep(0.3)
        daemon.add("main", "Andy", "and one more thing", from_bot=True)

    daemon.nursery.start_soon(second_reply)
    out = io.StringIO()
    rc = await send_and_wait(
        daemon.url, "main", "hi", sender="me", token=None, wait=5, settle=1.0, stdout=out
    )
    assert rc == EXIT_OK
    assert "Echo: hi" in out.getvalue()
    assert "and one more thing" in out.getvalue()


# ------------------------------------------------------------------ interactive mode


class PipeInput:
    """A stdin stand-in fed from the test; readline blocks like a terminal."""

    def __init__(self):
        r, w = os.pipe()
        self.reader = os.fdopen(r, "r", encoding="utf-8")
        self.writer = os.fdopen(w, "w", encoding="utf-8")

    def type(self, line: str) -> None:
        self.writer.write(line + "\n")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


async def wait_for(predicate) -> None:
    """Check ``predicate`` every 20 ms; fail after 5 s."""
    with trio.fail_after(5):
        while True:
            if predicate():
                return
            await trio.sleep(0.02)


@pytest.mark.parametrize("sse", [True, False])
async def test_interactive_session(nursery, sse):
    d = await serve_fake(nursery, sse=sse)
    d.add("main", "alice", "earlier message")
    d.add("main", "Andy", "earlier **reply**", from_bot=True)

    stdin, out, err = PipeInput(), io.StringIO(), io.StringIO()
    result: list[int] = []

    async def client():
        result.append(
            await run_chat(d.url, "main", sender="me", token=None, stdin=stdin.reader, stdout=out, stderr=err)
        )

    nursery.start_soon(client)
    await wait_for(lambda: "Ctrl-D" in out.getvalue())
    text = out.getvalue()
    assert "alice: earlier message" in text
    assert "Andy (bot): earlier **reply**" in text

    stdin.type("hello bot")
    await wait_for(lambda: "Echo: hello bot" in out.getvalue())

    # Someone else (e.g. the web page) writes in the same chat: it shows up too.
    async with httpx.AsyncClient(base_url=d.url) as http:
        resp = await http.post("/api/chats/main/messages", json={"sender": "web", "text": "from the page"})
        assert resp.status_code == 202
    await wait_for(lambda: "Echo: from the page" in out.getvalue())

    stdin.close()  # Ctrl-D
    await wait_for(lambda: bool(result))
    assert result == [EXIT_OK], err.getvalue()

    text = out.getvalue()
    assert "me: hello bot" not in text  # own lines are not echoed back
    assert "web: from the page" in text
    assert text.count("Echo: hello bot") == 1
    assert text.count("Echo: from the page") == 1
    assert err.getvalue() == ""


async def test_interactive_hint_without_trigger(daemon):
    out = io.StringIO()
    stdin = io.StringIO("just talking\n@Andy hi\n")
    rc = await run_chat(daemon.url, "team", sender="me", token=None, stdin=stdin, stdout=out)
    assert rc == EXIT_OK
    assert "only answers messages starting with @Andy" in out.getvalue()
    assert len(daemon.messages["team"]) >= 2


# ------------------------------------------------------------------ CLI glue


def test_main_from_args_daemon_down(capsys, monkeypatch):
    import argparse

    monkeypatch.delenv("NGB_API_TOKEN", raising=False)
    parser = argparse.ArgumentParser()
    chat_client.add_arguments(parser)
    args = parser.parse_args(["main", "--send", "hi", "--wait", "1"])
    assert args.name == "main" and args.send == "hi" and args.wait == 1.0

    class Cfg:
        web_host = "0.0.0.0"
        web_port = free_port()
        api_token = None

    rc = chat_client.main_from_args(args, Cfg())
    assert rc == EXIT_ERROR
    err = capsys.readouterr().err
    assert (
        err
        == f'ngb chat: cannot reach the daemon at http://127.0.0.1:{Cfg.web_port}: is "ngb run" running?\n'
    )
