"""The model socket's rules on a request head, decided before any body byte is read: the caller's
key must be its group's placeholder, the method and path must be exactly one of the forwarded
routes (compared byte for byte on the raw request target), the declared body must fit, and a
billed route must be admitted by the budgets. ``judge_head`` applies them in that order;
ngb/sandbox/model_proxy.py answers what it returns."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

import attrs
import h11

from .model_http import content_length

log = logging.getLogger(__name__)

# The only routes forwarded, matched byte for byte on the raw request target's path (POST only).
ROUTES = {b"/v1/messages": "messages", b"/v1/messages/count_tokens": "count_tokens"}
ROUTE_PATHS = {name: path.decode() for path, name in ROUTES.items()}
BILLED_ROUTES = frozenset({"messages"})  # count_tokens costs nothing: never refused over a budget


REFUSAL_TEXT = {
    "fragment": "a fragment (#) in the request target",
    "not_a_path": "the request target is not a path",
    "encoded": "a percent-encoded character in the path",
    "double_slash": "an empty path segment (//)",
    "dot_segment": "a . or .. path segment",
    "variant": "not the exact route (case or trailing slash)",
    "path": "not a route the agent may use",
    "method": "only POST is forwarded",
}


def target_route(method: bytes, target: bytes) -> tuple[str | None, str]:
    """(route name, "") for a request the proxy forwards, else (None, why it is refused).

    The path is compared byte for byte with the routes: there is nothing to decode or normalise,
    and anything that an upstream or a gateway could decode or normalise differently (a fragment,
    percent-encoding, ``//``, dot segments, case, a trailing slash) is refused outright."""
    if b"#" in target:
        return None, "fragment"
    if not target.startswith(b"/"):
        return None, "not_a_path"
    path = target.split(b"?", 1)[0]
    if b"%" in path:
        return None, "encoded"
    if b"//" in path:
        return None, "double_slash"
    if any(segment in (b".", b"..") for segment in path.split(b"/")):
        return None, "dot_segment"
    route = ROUTES.get(path)
    if route is None:
        return None, "variant" if path.lower().rstrip(b"/") in ROUTES else "path"
    if method != b"POST":
        return None, "method"
    return route, ""


def has_key(request: h11.Request, placeholder: bytes) -> bool:
    """Does the request carry ``placeholder`` as ``x-api-key`` or ``Authorization: Bearer``?"""
    ok = False
    for name, value in request.headers:
        if name == b"x-api-key":
            candidate = value.strip()
        elif name == b"authorization" and value[:7].lower() == b"bearer ":
            candidate = value[7:].strip()
        else:
            continue
        ok = ok or hmac.compare_digest(candidate, placeholder)
    return ok


@attrs.frozen
class HeadRefusal:
    """Why a request is refused from its head alone, and how to answer it (Anthropic-shaped)."""

    status: int
    reason: str  # the metric's label: auth, a target_route reason, too_large, budget
    why: str  # the log line
    message: str  # the error message the caller sees
    keep_alive: bool = True  # False: the body is not read, the connection closes
    extra: tuple[tuple[bytes, bytes], ...] = ()


@attrs.frozen
class HeadPass:
    route: str  # a name of ROUTES


def judge_head(request: h11.Request, group: str, placeholder: bytes, max_body: int,
               admit: Callable[[str], str | None] | None, too_large_message: str) -> HeadPass | HeadRefusal:
    """The door's decision on one request head: the key, the route, the declared length, the budget."""
    method = request.method.decode("ascii", "replace")
    shown = request.target.decode("ascii", "replace")[:200]
    if not has_key(request, placeholder):
        return HeadRefusal(401, "auth", f"refused {method} {shown}: missing or wrong API key for this group",
                           "invalid x-api-key: this key is not valid on this model socket")
    route, reason = target_route(request.method, request.target)
    if route is None:
        return HeadRefusal(403, reason, f"refused {method} {shown}: {REFUSAL_TEXT[reason]}",
                           f"{method} {shown} is not allowed on this model socket: only POST /v1/messages and "
                           "POST /v1/messages/count_tokens are forwarded")
    length = content_length(request)
    if length is not None and length > max_body:
        return HeadRefusal(413, "too_large", f"refused {method} {shown}: Content-Length {length} over {max_body}",
                           too_large_message, keep_alive=False)
    if route in BILLED_ROUTES and admit is not None:
        try:
            refusal = admit(group)
        except Exception:  # a bug in the budget check must not open the tap: refuse
            log.exception("model proxy: group %s: the budget check failed", group)
            refusal = "the spending check failed; see the daemon's log"
        if refusal is not None:
            return HeadRefusal(400, "budget", f"refused {method} {shown} over budget", refusal,
                               extra=((b"x-should-retry", b"false"),))
    return HeadPass(route)
