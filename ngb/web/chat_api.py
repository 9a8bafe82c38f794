"""The local chat API: the promised interface of the chat page (`/`) and `ngb chat`.

    GET  /api/info                          trigger word, assistant name, version
    GET  /api/chats                         the local chats
    GET  /api/chats/<name>/messages?after=  history (the newest 200, or everything after an id)
    POST /api/chats/<name>/messages         {"sender", "text", "client_id"?} -> 202 {"id"}; or
                                            multipart/form-data: those fields + "file" parts
    GET  /api/files/<id>                    an attachment's bytes (web/api_files.py)
    GET  /api/chats/<name>/events?after=    server-sent events: one `data:` line per message
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from .. import __version__
from ..channels.local import local_chat
from ..errors import MessageRejected
from ..media.intake import Incoming, Taken, with_notes
from ..records import ChatPreview, InboundMessage
from . import queries
from .common import ApiError, error, message_json, read_json
from .uploads import upload_fetch

if TYPE_CHECKING:
    from .backend import WebBackend

CHAT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _number(raw: str) -> bool:
    """ASCII digits only, and not absurdly long: "²".isdigit() is True but int("²") raises, and
    int() refuses more than 4,300 digits (both were a 500)."""
    return raw.isascii() and raw.isdigit() and len(raw) <= 18


def local_chat_of(name: str) -> str:
    if name.startswith("local:"):
        name = name[len("local:") :]
    if not CHAT_NAME_RE.fullmatch(name):  # fullmatch: "$" would let "main\n" through
        raise ApiError(400, "chat names are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return local_chat(name)


def register(app: QuartTrio, daemon: WebBackend) -> None:
    @app.get("/api/info")
    async def info() -> Any:
        cfg = daemon.config
        return {"trigger": cfg.trigger, "assistant": cfg.assistant_name, "version": __version__,
                "max_file_bytes": cfg.media_max_file_mb * 1024 * 1024, "max_files": cfg.media_max_files}

    @app.get("/api/chats")
    async def chats() -> Any:
        rows = await daemon.store.chats()
        out = []
        for row in rows:
            if not row["chat"].startswith("local:"):
                continue
            group = daemon.registry.get(row["chat"])
            out.append(
                {
                    "chat": row["chat"],
                    "name": row["chat"].split(":", 1)[1],
                    "registered": group is not None,
                    "is_main": bool(group and group.is_main),
                }
            )
        return out

    async def read_form() -> tuple[dict[str, Any], list[Any]]:
        """A multipart POST: its fields (text defaults to "") and its ``file`` parts."""
        form = await request.form
        files = [f for f in (await request.files).getlist("file") if f.filename or f.content_length]
        body: dict[str, Any] = {key: form.get(key) for key in ("sender", "text", "client_id", "thread") if key in form}
        body.setdefault("text", "")
        return body, files

    async def take_files(chat: str, files: list[Any]) -> Taken:
        items = [(Incoming(name=f.filename, mime=f.mimetype or None), upload_fetch(f.stream)) for f in files]
        try:
            return await daemon.media.take_all(chat, items)
        finally:
            for f in files:
                f.close()

    @app.post("/api/chats/<name>/messages")
    async def post_message(name: str) -> Any:
        chat = local_chat_of(name)
        files: list[Any] = []
        if request.mimetype == "multipart/form-data":
            body, files = await read_form()
        else:
            body = await read_json()
        if not isinstance(body, dict):
            return error(400, 'body must be a JSON object {"sender": "...", "text": "..."}')
        sender, text = body.get("sender"), body.get("text")
        if not isinstance(sender, str) or not sender.strip() or len(sender) > 100:
            return error(400, "'sender' must be a non-empty string of at most 100 characters")
        if not isinstance(text, str):
            return error(400, "'text' must be a string")
        thread = body.get("thread", "")  # a thread of the local chat (docs/conversations.md), "" = none
        if not isinstance(thread, str) or len(thread) > 100 or not thread.isprintable():
            return error(400, "'thread' must be a string of at most 100 printable characters")
        if not daemon.router.accepting:
            return error(503, "the daemon is shutting down")
        taken = await take_files(chat, files) if files else Taken()
        if files and not text.strip() and not taken.attachments and not taken.notes:
            return error(400, "the message is empty")
        client_id = body.get("client_id")
        platform_id = f"web-{client_id}" if isinstance(client_id, str) and 0 < len(client_id) <= 100 else None
        inbound = InboundMessage(
            chat=chat,
            sender=sender.strip(),
            sender_id=sender.strip(),
            text=with_notes(text, taken.notes),
            platform_id=platform_id or f"web-{time.time_ns()}-{id(body)}",
            attachments=taken.attachments,
            thread=thread.strip(),
        )
        try:
            message = await daemon.router.handle(inbound)
        except MessageRejected as exc:
            daemon.metrics.error("message_rejected")
            return error(413 if "limit" in str(exc) else 400, str(exc))
        return {"id": message.id}, 202

    @app.get("/api/chats/<name>/messages")
    async def get_messages(name: str) -> Any:
        chat = local_chat_of(name)
        after = request.args.get("after", "0")
        limit = request.args.get("limit", "200")
        if not _number(after) or not _number(limit):
            return error(400, "'after' and 'limit' must be non-negative integers")
        if int(after) == 0 and not await queries.chat_known(daemon.store, chat):
            return error(404, f"no chat {chat}")
        messages = await daemon.store.messages_after(chat, int(after), min(int(limit), 1000))
        return [message_json(m) for m in messages]

    @app.get("/api/chats/<name>/events")
    async def events(name: str) -> Any:
        chat = local_chat_of(name)
        after = request.args.get("after", "0")
        if not _number(after):
            return error(400, "'after' must be a non-negative integer")
        receive = daemon.events.subscribe(chat)
        backlog = await daemon.store.messages_after(chat, int(after), 200) if int(after) > 0 else []

        async def stream() -> Any:
            last = int(after)
            try:
                yield b": connected\n\n"  # headers and a first byte now, so clients see the stream is up
                for old in backlog:
                    last = old.id
                    yield f"id: {old.id}\ndata: {json.dumps(message_json(old))}\n\n".encode()
                while True:
                    with trio.move_on_after(15) as idle:
                        m = await receive.receive()
                    if idle.cancelled_caught:
                        yield b": ping\n\n"
                        continue
                    if isinstance(m, ChatPreview):  # no id: a preview is not a message to resume from
                        yield f"event: preview\ndata: {json.dumps({'id': m.id, 'text': m.text})}\n\n".encode()
                        continue
                    if m.id <= last:
                        continue
                    last = m.id
                    yield f"id: {m.id}\ndata: {json.dumps(message_json(m))}\n\n".encode()
            except trio.EndOfChannel:
                return
            finally:
                receive.close()

        response = Response(stream(), content_type="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        response.timeout = None
        return response
