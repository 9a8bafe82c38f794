"""Who may call what: the API token (bearer header or the HttpOnly cookie the login sets), CSRF
checks on state changes, DNS-rebinding protection, wrong-token limits, and the security headers on
every response.

Rules (docs/api.md, "Security"):
- There is always a token: NGB_API_TOKEN (or api_token_file), else the one the daemon generated into
  the state dir (ngb/api_token.py). Everything but OPEN_PATHS needs it. The config refuses a
  non-loopback web_host without a configured token, and any token under 16 characters.
- The login: POST /api/login {"token"}, or opening a page with ?token=... (the link the ready line
  prints): both set the HttpOnly cookie; the link then redirects to the page without the token.
- Wrong tokens are counted per client address in a FAILURE_WINDOW-second window: each login (POST
  or link) counts, a bearer header or cookie counts once per distinct wrong value (a browser's stale
  cookie is one mistake, not one per request). Past FAILURE_LIMIT, logins from that address answer
  429 (Retry-After) without looking at the token, and wrong bearer/cookie tokens are answered only
  after PENALTY_DELAY seconds. A right bearer/cookie token is never refused: the daemon's own `ngb`
  commands share 127.0.0.1 with every other local user, who must not be able to lock them out; a
  guesser there meets the 16-character minimum (the generated token has 256 bits), the delay, and
  the log. The first FAILURE_LIMIT failures per window are logged one line each, then one line.
- Without a configured token (generated one) the server is loopback-only; the Host header must then
  name a loopback host, so a web page that rebinds its DNS name to 127.0.0.1 cannot drive the API.
- A POST without a bearer header (the pages' cookie, or nothing when there is no token) must be
  JSON, or multipart/form-data with an X-Requested-With header (the chat page's files): a cross-site
  form can send neither without a CORS preflight, which we never approve; and a present Origin must
  be our own; browsers' Sec-Fetch-Site "cross-site" is refused outright.
  PUT/PATCH/DELETE always need a preflight cross-site, so they cannot be forged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import trio
from quart import Response, request
from quart_trio import QuartTrio

from ..api_token import ensure_api_token
from ..config import is_loopback_host
from .common import error, read_json

if TYPE_CHECKING:
    from .backend import WebBackend

log = logging.getLogger(__name__)

COOKIE = "ngb_token"
LINK_PAGES = ("/", "/dashboard", "/docs")  # pages a login link (?token=...) may open
FAILURE_LIMIT = 5
FAILURE_WINDOW = 60.0
PENALTY_DELAY = 1.0
MAX_TRACKED_ADDRESSES = 4096
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


class WrongTokens:
    """Wrong tokens per client address in a sliding window (bounded: the addresses seen longest
    ago are forgotten past MAX_TRACKED_ADDRESSES)."""

    def __init__(
        self, limit: int = FAILURE_LIMIT, window: float = FAILURE_WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._seen: dict[str, deque[tuple[float, str]]] = {}

    def _recent(self, address: str) -> deque[tuple[float, str]]:
        seen = self._seen.get(address)
        if seen is None:
            return deque()
        cutoff = self.clock() - self.window
        while seen and seen[0][0] <= cutoff:
            seen.popleft()
        if not seen:
            del self._seen[address]
        return seen

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try a token again, or None when it may now."""
        seen = self._recent(address)
        if len(seen) < self.limit:
            return None
        return max(1, math.ceil(seen[-self.limit][0] + self.window - self.clock()))

    def record(self, address: str, given: str, *, distinct: bool = False) -> tuple[int, bool]:
        """Count a wrong token; with `distinct`, a value already counted in the window is not
        counted again. Returns the failures in the window, and whether this one was counted."""
        seen = self._recent(address)
        digest = hashlib.sha256(given.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        if distinct and any(d == digest for _, d in seen):
            return len(seen), False
        seen.append((self.clock(), digest))
        self._seen[address] = seen
        while len(self._seen) > MAX_TRACKED_ADDRESSES:
            del self._seen[next(iter(self._seen))]
        return len(seen), True


def install(app: QuartTrio, daemon: WebBackend, static: Path) -> None:
    web_token = daemon.web_token or ensure_api_token(daemon.config)
    token = web_token.value
    configured_host = daemon.config.web_host.lower().strip("[]")
    csp = content_security_policy(static)
    wrong = WrongTokens()

    def given_token() -> tuple[str, bool]:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return header[7:].strip(), True
        return request.cookies.get(COOKIE, ""), False

    def matches(given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode())

    def client() -> str:
        return request.remote_addr or "unknown"

    def too_many(address: str) -> Any:
        wait = wrong.retry_after(address)
        if wait is None:
            return None
        body, status = error(429, f"too many wrong API tokens from your address; try again in {wait} s")
        return body, status, {"Retry-After": str(wait)}

    def failed(address: str, given: str, how: str, *, distinct: bool = False) -> int:
        """Count and log a wrong token; returns the failures from `address` in the window."""
        count, counted = wrong.record(address, given, distinct=distinct)
        if not counted:
            return count
        daemon.metrics.error("web_auth")
        if count < wrong.limit:
            log.warning("web: wrong API token from %s (%s)", address, how)
        elif count == wrong.limit:
            log.warning(
                "web: %d wrong API tokens from %s within %gs (last: %s); its logins get 429 and its wrong "
                "tokens a %gs delay until the window clears; further ones are only counted "
                '(ngb_errors_total{kind="web_auth"})',
                count, address, wrong.window, how, PENALTY_DELAY,
            )
        return count

    def host_allowed() -> bool:
        if web_token.configured:
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

    def login_response(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        response = Response(body, status=status, headers=headers, content_type="application/json")
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=request.scheme == "https", path="/")
        return response

    def link_login() -> Any:
        """A page opened with ?token=...: sign the browser in, then show the page without it."""
        given = request.args.get("token", "")
        rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
        target = request.path + (f"?{urlencode(rest)}" if rest else "")
        address = client()
        if (refused := too_many(address)) is not None:
            return refused
        if not matches(given):
            failed(address, given, f"login link {request.path}")
            return Response("", status=303, headers={"Location": target, "Cache-Control": "no-store"})
        response = login_response("", 303, {"Location": target, "Cache-Control": "no-store"})
        response.content_type = "text/plain"
        return response

    @app.before_request
    async def guard() -> Any:
        if not host_allowed():
            return error(421, "this server only answers to loopback host names (set NGB_API_TOKEN to expose it)")
        path = request.path
        method = request.method
        if method == "GET" and path in LINK_PAGES and "token" in request.args:
            return link_login()
        if method in STATE_CHANGING:
            if request.headers.get("Sec-Fetch-Site") == "cross-site" or not same_origin():
                return error(403, "cross-site requests may not change state")
            _, bearer = given_token()
            if method == "POST" and not bearer and not (request.content_type or "").startswith("application/json"):
                # A form post (the chat page's files) counts only with X-Requested-With: a header a
                # cross-site form cannot add, and no cross-site script can without our preflight.
                if not (request.mimetype == "multipart/form-data" and request.headers.get("X-Requested-With")):
                    return error(
                        415,
                        "state changes need a JSON body (Content-Type: application/json), or a "
                        "multipart/form-data body with an X-Requested-With header",
                    )
        if path in OPEN_PATHS or path.startswith("/static/"):
            return None
        given, bearer = given_token()
        if not given:
            return error(401, "this API needs its token (send 'Authorization: Bearer <token>', or log in)")
        if not matches(given):
            how = f"{'bearer' if bearer else 'cookie'} {method} {path}"
            if failed(client(), given, how, distinct=True) >= wrong.limit:
                await trio.sleep(PENALTY_DELAY)  # slows a guesser; a right token never waits
            return error(401, "wrong API token (send 'Authorization: Bearer <token>', or log in)")
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
        address = client()
        if (refused := too_many(address)) is not None:
            return refused
        body = await read_json()
        given = body.get("token") if isinstance(body, dict) else None
        if not isinstance(given, str) or not matches(given):
            failed(address, given if isinstance(given, str) else "", "login")
            return error(401, "wrong token")
        return login_response(json.dumps({"ok": True}))

    @app.post("/api/logout")
    async def logout() -> Any:
        response = Response(json.dumps({"ok": True}), content_type="application/json")
        response.delete_cookie(COOKIE, path="/")
        return response
