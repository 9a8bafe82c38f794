"""The web server: hypercorn + quart-trio in the daemon's nursery.

Serves the local chat (page + API), the dashboard, /healthz, /status, /metrics, /debug/actors and
the REST API (docs/api.md, docs/openapi.json). When NGB_API_TOKEN is set every API call needs it
(Bearer header, or the HttpOnly cookie that /api/login sets for the pages); /healthz stays open
for systemd and load balancers. The modules:

    security.py      token, CSRF, Host check, security headers, /api/login
    status.py        /healthz /status /metrics /debug/actors
    chat_api.py      the local chat API (/api/info, /api/chats/...)
    api_groups.py    /api/groups, /api/sessions
    api_messages.py  /api/messages, /api/search
    api_usage.py     /api/usage, /api/budgets (docs/budgets.md)
    api_tasks.py     /api/tasks (every change goes through ngb/tasks/service.py)
    api_web.py       /api/web (the egress door's log and web usage: docs/web-access.md)
    api_pairings.py  /api/pairings (strangers' DMs waiting for the operator: docs/conversations.md)
    api_docs.py      /docs (Swagger UI) and /openapi.json
    api_activity.py  /api/activity (the dashboard's charts)
    forwarded.py     the client's address and scheme behind a trusted reverse proxy
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response, g, request, send_from_directory
from quart_trio import QuartTrio

from ..channels.base import Callbacks, offers
from ..store import StoreUnavailable
from . import (
    api_activity,
    api_channels,
    api_docs,
    api_files,
    api_groups,
    api_messages,
    api_pairings,
    api_tasks,
    api_usage,
    api_web,
    chat_api,
    security,
    status,
)
from .common import ApiError, error, message_json
from .forwarded import ForwardedHeaders, TrustedProxies
from .status import actor_json, task_tree, to_json_view
from .uploads import UploadAwareRequest, upload_limit

if TYPE_CHECKING:
    from .backend import WebBackend

__all__ = ["create_app", "serve_web", "actor_json", "task_tree", "to_json_view", "message_json", "error"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
COOKIE = security.COOKIE
OPEN_PATHS = security.OPEN_PATHS
CHAT_NAME_RE = chat_api.CHAT_NAME_RE


def create_app(daemon: WebBackend) -> QuartTrio:
    app = QuartTrio(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = daemon.config.max_body_bytes
    # File uploads to the chat API get their own, larger limit (web/uploads.py).
    request_class: Any = type("Request", (UploadAwareRequest,), {"upload_limit": upload_limit(daemon.config)})
    app.request_class = request_class
    app.config["JSON_SORT_KEYS"] = False
    metrics = daemon.metrics

    @app.before_request
    async def started() -> None:
        g.started = trio.current_time()

    # Platform callbacks (WeCom callback mode: /channels/wecom/callback; Telegram webhook mode: the
    # path of its webhook_url). Answered before the API guard: the platform cannot send our API
    # token, and behind a reverse proxy the Host is the public name; each request proves itself with
    # the platform's signature (WeCom) or secret header (Telegram) instead.
    callbacks = {path: c for c in daemon.channels.values() if offers(c, Callbacks) and (path := c.callback_path)}

    @app.before_request
    async def platform_callback() -> Any:
        channel = callbacks.get(request.path)
        if channel is None:
            return None
        body = await request.get_data(cache=True, as_text=False, parse_form_data=False) if request.method == "POST" else b""
        extra: dict[str, Any] = {"headers": request.headers} if _takes_headers(channel.handle_callback) else {}
        code, text = await channel.handle_callback(request.method, request.args, body, request.remote_addr, **extra)
        return Response(text, status=code, content_type="text/plain; charset=utf-8")

    security.install(app, daemon, STATIC)
    # the client's address and scheme behind a trusted reverse proxy (forwarded.py)
    app.asgi_app = ForwardedHeaders(app.asgi_app, TrustedProxies.parse(daemon.config.trusted_proxies))  # type: ignore[method-assign,assignment]

    @app.after_request
    async def count(response: Any) -> Any:
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            # Read what is left of the body before answering. A handler that refuses a request
            # early (bad chat name, no auth) leaves it unread, and then a keep-alive connection
            # could stall on its next request (found by tests/test_fuzz_api.py).
            try:
                await request.get_data(cache=False)
            except Exception:  # noqa: BLE001 - too large / broken: the answer is already decided
                response.headers["Connection"] = "close"  # the rest of that body is not read
        begun = getattr(g, "started", None)
        if begun is not None:
            metrics.http_latency.observe(trio.current_time() - begun)
        metrics.http_requests.labels(request.method, str(response.status_code)).inc()
        return response

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Any:
        return error(exc.status, exc.message)

    @app.errorhandler(413)
    async def too_large(_exc: Any) -> Any:
        # The rest of the body stays unread: close the connection rather than parse it as the
        # next request (a kept-alive connection stalled there; tests/test_fuzz_api.py).
        limit = request.max_content_length or daemon.config.max_body_bytes  # an upload's own limit
        body, status = error(413, f"request body over {limit} bytes")
        return body, status, {"Connection": "close"}

    @app.errorhandler(404)
    async def not_found(_exc: Any) -> Any:
        return error(404, "not found")

    @app.errorhandler(405)
    async def not_allowed(_exc: Any) -> Any:
        return error(405, "method not allowed")

    @app.errorhandler(400)
    async def bad_request(_exc: Any) -> Any:
        return error(400, "bad request")

    @app.errorhandler(StoreUnavailable)
    async def store_down(exc: Exception) -> Any:
        metrics.error("store")
        return error(503, f"the database is not available right now: {exc}")

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Any:
        if hasattr(exc, "code") and isinstance(exc.code, int) and 400 <= exc.code < 600:  # werkzeug HTTPException
            return error(exc.code, getattr(exc, "description", None) or "error")
        log.exception("web: unexpected error in %s %s", request.method, request.path)
        metrics.error("web")
        return error(500, f"internal error ({type(exc).__name__}); see the daemon's log")

    # -- pages -----------------------------------------------------------------------------
    @app.get("/")
    async def index() -> Any:
        return await send_from_directory(STATIC, "chat.html")

    @app.get("/dashboard")
    async def dashboard() -> Any:
        return await send_from_directory(STATIC, "dashboard.html")

    @app.get("/static/<path:name>")
    async def static_file(name: str) -> Any:
        return await send_from_directory(STATIC, name)

    status.register(app, daemon)
    chat_api.register(app, daemon)
    api_files.register(app, daemon)
    api_groups.register(app, daemon)
    api_messages.register(app, daemon)
    api_usage.register(app, daemon)
    api_web.register(app, daemon)
    api_pairings.register(app, daemon)
    api_channels.register(app, daemon)
    api_docs.register(app, daemon, STATIC)
    api_activity.register(app, daemon)
    app.config["NGB_API_TASKS_ADDED"] = api_tasks.register(app, daemon)
    return app


async def serve_web(daemon: WebBackend, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    app = create_app(daemon)
    cfg = HypercornConfig()
    host = daemon.config.web_host
    cfg.bind = [f"[{host}]:{daemon.config.web_port}" if ":" in host else f"{host}:{daemon.config.web_port}"]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("ngb.web.hypercorn")
    cfg.graceful_timeout = 1.0
    cfg.keep_alive_timeout = 30
    cfg.backlog = 1024
    await serve(app, cfg, shutdown_trigger=trio.sleep_forever, task_status=task_status)  # type: ignore[arg-type]


def _takes_headers(handler: Any) -> bool:
    """Whether a channel's handle_callback accepts the request headers (a plugin's older one may not)."""
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "headers" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
