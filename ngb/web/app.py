"""The web server: hypercorn + quart-trio in the daemon's nursery.

Serves the local chat (page + API), /healthz, /status, /metrics, /debug/actors and the REST API.
When NGB_API_TOKEN is set every API call needs it (Bearer header, or the HttpOnly cookie that
/api/login sets for the page); /healthz stays open for systemd and load balancers.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response, request, send_from_directory
from quart_trio import QuartTrio

from .. import __version__
from ..channels.local import local_chat
from ..folders import validate_folder
from ..records import Group, InboundMessage, Message, format_time, to_json
from ..router import MessageRejected
from ..store import StoreUnavailable

if TYPE_CHECKING:
    from ..daemon import Daemon

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
CHAT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
COOKIE = "ngb_token"
OPEN_PATHS = {"/healthz", "/", "/api/login", "/api/info", "/favicon.ico"}


def error(status: int, message: str) -> tuple[dict[str, str], int]:
    return {"error": message}, status


def message_json(m: Message) -> dict[str, Any]:
    return {"id": m.id, "sender": m.sender, "text": m.text, "time": format_time(m.time), "from_bot": m.from_bot}


def create_app(daemon: Daemon) -> QuartTrio:
    app = QuartTrio(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = daemon.config.max_body_bytes
    app.config["JSON_SORT_KEYS"] = False
    token = daemon.config.api_token

    def authorized() -> bool:
        if not token:
            return True
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else request.cookies.get(COOKIE, "")
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())

    @app.before_request
    async def guard() -> Any:
        path = request.path
        if path in OPEN_PATHS or path.startswith("/static/"):
            return None
        if not authorized():
            return error(401, "missing or wrong API token (send 'Authorization: Bearer <NGB_API_TOKEN>')")
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and request.cookies.get(COOKIE) and not request.headers.get("Authorization"):
            # Cookie-authenticated state changes must come from our own page (CSRF): JSON only.
            if not (request.content_type or "").startswith("application/json"):
                return error(415, "state changes need a JSON body")
        return None

    @app.errorhandler(413)
    async def too_large(_exc: Any) -> Any:
        return error(413, f"request body over {daemon.config.max_body_bytes} bytes")

    @app.errorhandler(404)
    async def not_found(_exc: Any) -> Any:
        return error(404, "not found")

    @app.errorhandler(405)
    async def not_allowed(_exc: Any) -> Any:
        return error(405, "method not allowed")

    @app.errorhandler(StoreUnavailable)
    async def store_down(exc: Exception) -> Any:
        return error(503, f"the database is not available right now: {exc}")

    # -- pages -----------------------------------------------------------------------------
    @app.get("/")
    async def index() -> Any:
        return await send_from_directory(STATIC, "chat.html")

    @app.get("/static/<path:name>")
    async def static_file(name: str) -> Any:
        return await send_from_directory(STATIC, name)

    # -- health ----------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz() -> Any:
        problems = []
        if not daemon.supervisor.running:
            problems.append("supervisor not running")
        try:
            await daemon.store.run(lambda c: c.execute("SELECT 1").fetchone())
        except Exception as exc:  # noqa: BLE001 - report, never raise
            problems.append(f"store: {exc}")
        if daemon.shutting_down:
            problems.append("shutting down")
        if problems:
            return {"ok": False, "reason": "; ".join(problems)}, 503
        return {"ok": True}

    @app.get("/status")
    async def status() -> Any:
        live = sum(1 for h in daemon.supervisor.actors.values() if h.view.container_id)
        return {
            "version": __version__,
            "uptime_seconds": round(time.time() - daemon.started_at, 1),
            "channels": {name: {"state": c.state} for name, c in daemon.channels.items()},
            "groups": [
                {"chat": g.chat, "folder": g.folder, "is_main": g.is_main, "requires_trigger": g.requires_trigger}
                for g in daemon.registry.all()
            ],
            "containers": {"live": live, "cap": daemon.config.max_containers},
            "queues": {
                "outbox": await daemon.store.outbox_depth(),
                "inboxes": {f: h.inbox_depth() for f, h in daemon.supervisor.actors.items()},
                "waiting_for_slot": sum(1 for h in daemon.supervisor.actors.values() if h.view.state == "waiting_slot"),
            },
            "last_error": daemon.last_error,
        }

    @app.get("/metrics")
    async def metrics() -> Any:
        return Response(daemon.metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/debug/actors")
    async def debug_actors() -> Any:
        return [actor_json(daemon, folder) for folder in daemon.supervisor.actors]

    @app.get("/debug/actors/<folder>")
    async def debug_actor(folder: str) -> Any:
        if folder not in daemon.supervisor.actors:
            return error(404, f"no actor for group {folder!r}")
        return actor_json(daemon, folder)

    # -- local chat API ----------------------------------------------------------------------
    @app.get("/api/info")
    async def info() -> Any:
        return {"trigger": daemon.config.trigger, "assistant": daemon.config.assistant_name, "version": __version__}

    @app.post("/api/login")
    async def login() -> Any:
        body = await request.get_json(silent=True)
        given = body.get("token") if isinstance(body, dict) else None
        if not token:
            return {"ok": True}
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
            return error(401, "wrong token")
        response = Response(json.dumps({"ok": True}), content_type="application/json")
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=request.scheme == "https")
        return response

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

    def chat_or_error(name: str) -> str | tuple[dict[str, str], int]:
        if name.startswith("local:"):
            name = name[len("local:") :]
        if not CHAT_NAME_RE.match(name):
            return error(400, "chat names are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return local_chat(name)

    @app.post("/api/chats/<name>/messages")
    async def post_message(name: str) -> Any:
        chat = chat_or_error(name)
        if not isinstance(chat, str):
            return chat
        body = await request.get_json(silent=True)
        if not isinstance(body, dict):
            return error(400, 'body must be a JSON object {"sender": "...", "text": "..."}')
        sender, text = body.get("sender"), body.get("text")
        if not isinstance(sender, str) or not sender.strip() or len(sender) > 100:
            return error(400, "'sender' must be a non-empty string of at most 100 characters")
        if not isinstance(text, str):
            return error(400, "'text' must be a string")
        if not daemon.router.accepting:
            return error(503, "the daemon is shutting down")
        client_id = body.get("client_id")
        platform_id = f"web-{client_id}" if isinstance(client_id, str) and 0 < len(client_id) <= 100 else None
        inbound = InboundMessage(
            chat=chat,
            sender=sender.strip(),
            sender_id=sender.strip(),
            text=text,
            platform_id=platform_id or f"web-{time.time_ns()}-{id(body)}",
        )
        try:
            message = await daemon.router.handle(inbound)
        except MessageRejected as exc:
            return error(413 if "limit" in str(exc) else 400, str(exc))
        return {"id": message.id}, 202

    @app.get("/api/chats/<name>/messages")
    async def get_messages(name: str) -> Any:
        chat = chat_or_error(name)
        if not isinstance(chat, str):
            return chat
        after = request.args.get("after", "0")
        limit = request.args.get("limit", "200")
        if not after.isdigit() or not limit.isdigit():
            return error(400, "'after' and 'limit' must be non-negative integers")
        if int(after) == 0 and not await known_chat(chat):
            return error(404, f"no chat {chat}")
        messages = await daemon.store.messages_after(chat, int(after), min(int(limit), 1000))
        return [message_json(m) for m in messages]

    async def known_chat(chat: str) -> bool:
        return daemon.registry.get(chat) is not None or any(r["chat"] == chat for r in await daemon.store.chats())

    @app.get("/api/chats/<name>/events")
    async def events(name: str) -> Any:
        chat = chat_or_error(name)
        if not isinstance(chat, str):
            return chat
        after = request.args.get("after", "0")
        if not after.isdigit():
            return error(400, "'after' must be a non-negative integer")
        receive = daemon.events.subscribe(chat)
        backlog = await daemon.store.messages_after(chat, int(after), 200) if int(after) > 0 else []

        async def stream() -> Any:
            last = int(after)
            try:
                for m in backlog:
                    last = m.id
                    yield f"id: {m.id}\ndata: {json.dumps(message_json(m))}\n\n".encode()
                while True:
                    with trio.move_on_after(15) as idle:
                        m = await receive.receive()
                    if idle.cancelled_caught:
                        yield b": ping\n\n"
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

    # -- groups API (used by `ngb groups` while the daemon runs) ------------------------------
    @app.get("/api/groups")
    async def groups() -> Any:
        return [to_json(g) for g in daemon.registry.all()]

    @app.post("/api/groups")
    async def add_group() -> Any:
        body = await request.get_json(silent=True)
        if not isinstance(body, dict):
            return error(400, "body must be a JSON object")
        try:
            folder = validate_folder(str(body.get("folder", "")))
            group = Group(
                chat=str(body.get("chat", "")),
                folder=folder,
                is_main=bool(body.get("is_main", False)),
                requires_trigger=bool(body.get("requires_trigger", True)),
            )
            await daemon.registry.add(group)
        except ValueError as exc:
            return error(400, str(exc))
        return to_json(group), 201

    @app.delete("/api/groups/<path:chat>")
    async def remove_group(chat: str) -> Any:
        group = await daemon.registry.remove(chat)
        if group is None:
            return error(404, f"no group for chat {chat}")
        return to_json(group)

    return app


def actor_json(daemon: Daemon, folder: str) -> dict[str, Any]:
    handle = daemon.supervisor.actors[folder]
    view = handle.view
    now = trio.current_time()
    data = to_json_view(view)
    data["inbox_depth"] = handle.inbox_depth()
    data["container_age_seconds"] = round(now - view.container_started, 1) if view.container_started else None
    data["slot_wait_seconds"] = round(now - view.slot_wait_started, 1) if view.slot_wait_started else None
    data["task_tree"] = task_tree(handle.task) if handle.task is not None else None
    return data


def to_json_view(view: Any) -> dict[str, Any]:
    import attrs

    data = attrs.asdict(view)
    data.pop("container_started", None)
    data.pop("slot_wait_started", None)
    data["current_batches"] = {str(k): v for k, v in view.current_batches.items()}
    return data


def task_tree(task: trio.lowlevel.Task, depth: int = 0) -> dict[str, Any]:
    node: dict[str, Any] = {"name": task.name}
    children = [t for n in task.child_nurseries for t in n.child_tasks]
    if children and depth < 8:
        node["children"] = [task_tree(t, depth + 1) for t in children]
    return node


async def serve_web(daemon: Daemon, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    app = create_app(daemon)
    cfg = HypercornConfig()
    host = daemon.config.web_host
    cfg.bind = [f"[{host}]:{daemon.config.web_port}" if ":" in host else f"{host}:{daemon.config.web_port}"]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("ngb.web.hypercorn")
    cfg.graceful_timeout = 1.0
    cfg.keep_alive_timeout = 30
    await serve(app, cfg, shutdown_trigger=trio.sleep_forever, task_status=task_status)  # type: ignore[arg-type]


