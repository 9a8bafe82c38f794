"""The model socket's rules on a request head, decided before any body byte is read: the caller's
key must be its group's placeholder, and the method and path must be exactly one of the forwarded
routes (compared byte for byte on the raw request target). ngb/sandbox/model_proxy.py applies them."""

from __future__ import annotations

import hmac

import h11

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
