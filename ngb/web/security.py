"""Who may call what: the API token (bearer header or the HttpOnly cookie the login sets), CSRF
checks on state changes, DNS-rebinding protection, and the security headers on every response.

Rules (docs/api.md, "Security"):
- With NGB_API_TOKEN set, everything but OPEN_PATHS needs it. The config refuses a non-loopback
  web_host without a token, so an exposed server always has one.
- Without a token the server is loopback-only; the Host header must then name a loopback host, so a
  web page that rebinds its DNS name to 127.0.0.1 cannot drive the API.
- A POST without a bearer header (the pages' cookie, or nothing when there is no token) must be
  JSON (a cross-site form cannot send that without a CORS preflight, which we never approve), and
  a present Origin must be our own; browsers' Sec-Fetch-Site "cross-site" is refused outright.
  PUT/PATCH/DELETE always need a preflight cross-site, so they cannot be forged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from quart import Response, request
from quart_trio import QuartTrio

from ..config import is_loopback_host
from .common import error, read_json

if TYPE_CHECKING:
    from ..daemon import Daemon

COOKIE = "ngb_token"
OPEN_PATHS = {"/healthz", "/", "/dashboard", "/api/login", "/api/logout", "/api/info", "/favicon.ico"}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
_SCRIPT_RE = re.compile(r"<script>(.*?)</script>", re.S)


def inline_script_hashes(static: Path) -> list[str]:
    """CSP source expressions for the inline <script> blocks of our own pages (no 'unsafe-inline')."""
    out = []
    for page in sorted(static.glob("*.html")):
        for body in _SCRIPT_RE.findall(page.read_text(encoding="utf-8")):
            digest = base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode()
            out.append(f"'sha256-{digest}'")
    return out


def content_security_policy(static: Path) -> str:
    scripts = " ".join(["'self'", *inline_script_hashes(static)])
    return (
        "default-src 'self'; "
        f"script-src {scripts}; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def install(app: QuartTrio, daemon: Daemon, static: Path) -> None:
    token = daemon.config.api_token
    configured_host = daemon.config.web_host.lower().strip("[]")
    csp = content_security_policy(static)

    def given_token() -> tuple[str, bool]:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return header[7:].strip(), True
        return request.cookies.get(COOKIE, ""), False

    def authorized() -> bool:
        if not token:
            return True
        given, _ = given_token()
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())

    def host_allowed() -> bool:
        if token:
            return True
        name = _host_name(request.headers.get("Host", ""))
        return name in ("localhost", configured_host) or is_loopback_host(name)

    def same_origin() -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        if origin == "null":
            return False
        return urlsplit(origin).netloc.lower() == request.headers.get("Host", "").lower()

    @app.before_request
    async def guard() -> Any:
        if not host_allowed():
            return error(421, "this server only answers to loopback host names (set NGB_API_TOKEN to expose it)")
        path = request.path
        method = request.method
        if method in STATE_CHANGING:
            if request.headers.get("Sec-Fetch-Site") == "cross-site" or not same_origin():
                return error(403, "cross-site requests may not change state")
            _, bearer = given_token()
            if method == "POST" and not bearer and not (request.content_type or "").startswith("application/json"):
                return error(415, "state changes need a JSON body (Content-Type: application/json)")
        if path in OPEN_PATHS or path.startswith("/static/"):
            return None
        if not authorized():
            return error(401, "missing or wrong API token (send 'Authorization: Bearer <NGB_API_TOKEN>' or log in)")
        return None

    @app.after_request
    async def headers(response: Response) -> Response:
        h = response.headers
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "no-referrer")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Content-Security-Policy", csp)
        h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        h.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        if request.path.startswith(("/api/", "/debug/", "/status")) and "Cache-Control" not in h:
            h["Cache-Control"] = "no-store"
        return response

    @app.post("/api/login")
    async def login() -> Any:
        body = await read_json()
        given = body.get("token") if isinstance(body, dict) else None
        if not token:
            return {"ok": True}
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
            return error(401, "wrong token")
        response = Response(json.dumps({"ok": True}), content_type="application/json")
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=request.scheme == "https", path="/")
        return response

    @app.post("/api/logout")
    async def logout() -> Any:
        response = Response(json.dumps({"ok": True}), content_type="application/json")
        response.delete_cookie(COOKIE, path="/")
        return response
