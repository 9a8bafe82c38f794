"""Shared pieces of the web API: JSON errors, strict cattrs structuring of request bodies, query
argument parsing. Every error the API returns is JSON: {"error": "<what to fix>"}."""

from __future__ import annotations

import json
from typing import Any, TypeVar, get_args, get_origin

import cattrs
from quart import request

from ..records import Attachment, Message, format_time

T = TypeVar("T")

MAX_PAGE = 200


class ApiError(Exception):
    """Raised by handlers; turned into {"error": message} with the status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error(status: int, message: str) -> tuple[dict[str, str], int]:
    return {"error": message}, status


def attachment_json(a: Attachment) -> dict[str, Any]:
    out: dict[str, Any] = {"id": a.id, "name": a.name, "mime": a.mime, "size": a.size, "kind": str(a.kind),
                           "url": f"/api/files/{a.id}"}
    if a.transcript:
        out["transcript"] = a.transcript
    if a.gone:
        out["gone"] = True
    return out


def message_json(m: Message) -> dict[str, Any]:
    out = {"id": m.id, "sender": m.sender, "text": m.text, "time": format_time(m.time), "from_bot": m.from_bot,
           "attachments": [attachment_json(a) for a in m.attachments]}
    if m.thread:  # the thread or topic it is in (docs/conversations.md)
        out["thread"] = m.thread
    if m.reaction_to is not None:  # a reaction (the text is its emoji) on the message of that platform id
        out["reaction_to"] = m.reaction_to
    return out


def message_json_full(m: Message) -> dict[str, Any]:
    return {**message_json(m), "chat": m.chat}


# -- strict request structuring ---------------------------------------------------------------
def _strict(kind: type, name: str) -> Any:
    def hook(value: Any, _t: Any) -> Any:
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"expected {name}")
        if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise TypeError(f"expected {name}")
        if kind in (str, bool) and not isinstance(value, kind):
            raise TypeError(f"expected {name}")
        return value

    return hook


def _make_request_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(bool, _strict(bool, "true or false"))
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(float, _strict(float, "a number"))

    def list_hook(t: Any) -> Any:
        (item,) = get_args(t) or (Any,)

        def hook(value: Any, _t: Any) -> list[Any]:
            if not isinstance(value, list):
                raise TypeError("expected a list")
            return [conv.structure(v, item) for v in value]

        return hook

    conv.register_structure_hook_factory(lambda t: get_origin(t) is list, list_hook)
    return conv


request_converter = _make_request_converter()


def structure(data: Any, cls: type[T]) -> T:
    """Structure a JSON body into an attrs request record, or raise ApiError(400) saying what is
    wrong and where (e.g. "expected a string @ $.chat")."""
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        return request_converter.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        problems = cattrs.transform_error(exc, path="$")
        raise ApiError(400, "; ".join(problems)[:500]) from None
    except (TypeError, ValueError) as exc:
        raise ApiError(400, str(exc)[:500]) from None


async def read_json() -> Any:
    """The request's JSON body, or None when it is not JSON. Quart's `silent=True` only covers
    JSON syntax errors: bytes that are not UTF-8 raised UnicodeDecodeError (a 500), and very deep
    nesting RecursionError, and lone surrogates UnicodeEncodeError later in the store: all of them are
    a bad body, not a server error."""
    try:
        data = await request.get_json(silent=True)
        # JSON may spell lone surrogates ("\\ud800"), which no UTF-8 store or socket accepts.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError, RecursionError):
        return None
    return data


async def json_body(cls: type[T]) -> tuple[T, dict[str, Any]]:
    """The request's JSON body as a record, plus the raw dict (to tell 'absent' from 'null')."""
    data = await read_json()
    if data is None:
        raise ApiError(400, "the body must be a JSON object (Content-Type: application/json)")
    return structure(data, cls), data


def int_arg(name: str, default: int, *, lo: int = 0, hi: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # "²".isdigit(), yet int("²") raises
        raise ApiError(400, f"'{name}' must be a non-negative integer")
    value = int(raw)
    if value < lo or (hi is not None and value > hi):
        raise ApiError(400, f"'{name}' must be between {lo} and {hi}")
    return value


def str_arg(name: str, *, max_len: int = 200, required: bool = False) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        if required:
            raise ApiError(400, f"'{name}' is required")
        return None
    if len(raw) > max_len:
        raise ApiError(400, f"'{name}' is longer than {max_len} characters")
    return raw


def check_text(name: str, value: str | None, *, max_len: int, allow_empty: bool = False) -> None:
    if value is None:
        return
    if not allow_empty and not value.strip():
        raise ApiError(400, f"'{name}' must not be empty")
    if len(value) > max_len:
        raise ApiError(400, f"'{name}' is longer than {max_len} characters")
