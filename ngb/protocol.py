"""The container wire: every frame between the daemon and the agent runner, as typed records.

One JSON object per line (ngb/framing.py); its ``type`` names the frame. Frames the daemon sends
(:data:`OutFrame`: start, input, prescript, stop) and frames the runner sends back
(:data:`BackFrame`: hello, output, preview, result, session, prescript_result, error, log) are attrs
classes, each union (un)structured by one cattrs converter with ``type`` as the tag. The field
names are the JSON keys of docs/agent-protocol.md. :func:`decode` never raises: a frame that is
not one of ours, or whose fields have the wrong types, comes back as one :class:`BadFrame` whose
``reason`` is safe to send to the peer.

The runner inside the container imports this very file (agent/ngb_agent/protocol.py is a link to
it), so it depends on attrs and cattrs only, never on the rest of ngb.
"""

from __future__ import annotations

import functools
from typing import Any, Union

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override
from cattrs.strategies import configure_tagged_union

PROTOCOL_VERSION = 1
TAG = "type"
_OMIT = {"omit": True}  # field metadata: left out of the JSON while it has its default


# -- the daemon -> runner frames -----------------------------------------------------------------


@attrs.frozen
class Start:
    """Opens the session: resume ``session_id`` (None: a new one); ``tools``: the plugins' extra tools."""

    session_id: str | None = None
    group: str | None = attrs.field(default=None, metadata=_OMIT)
    is_main: bool | None = attrs.field(default=None, metadata=_OMIT)
    tools: list[Any] = attrs.field(factory=list, metadata=_OMIT)
    isolated: bool = attrs.field(default=False, metadata=_OMIT)
    # Send ``preview`` frames while the agent writes (the chat shows the reply growing)
    previews: bool = attrs.field(default=False, metadata=_OMIT)


def _not_blank(field: str) -> Any:
    def check(_inst: object, _attr: object, value: str) -> None:
        if not value.strip():
            raise ValueError(f"{field} is empty")

    return check


@attrs.frozen
class ImageRef:
    """An image file in the group's folder (a path inside the container) for the model to see."""

    path: str
    media_type: str


@attrs.frozen
class Input:
    """One batch of chat messages (or a task's prompt) for the agent; ``images`` go with the prompt
    as image blocks of the user turn (the runner reads them from the group's folder)."""

    batch: int
    prompt: str = attrs.field(validator=_not_blank("input.prompt"))
    images: list[ImageRef] = attrs.field(factory=list, metadata=_OMIT)


def _positive(_inst: object, _attr: object, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError("prescript.timeout must be a positive number")


@attrs.frozen
class Prescript:
    """Run a scheduled task's pre-script in the sandbox and report (PrescriptResult)."""

    id: str = attrs.field(validator=_not_blank("prescript.id"))
    command: str = attrs.field(validator=_not_blank("prescript.command"))
    timeout: float | None = attrs.field(default=None, validator=_positive)


@attrs.frozen
class Stop:
    """End the session; the runner exits."""


# -- the runner -> daemon frames -----------------------------------------------------------------


@attrs.frozen
class Hello:
    """The runner's first frame: the protocol it speaks (required: a hello without one is a bad
    frame, not the current version)."""

    version: int


@attrs.frozen
class Output:
    """Text of the agent for the chat, answering batch ``batch`` (and every open one before it)."""

    batch: int | None = None
    text: str = ""


@attrs.frozen
class Preview:
    """The text the agent has written so far of its next ``output`` for batch ``batch`` (sent
    only when ``start.previews``, at most a few times a second). The ``output`` that follows
    replaces it; a preview is never stored or delivered as an answer."""

    batch: int | None = None
    text: str = ""


@attrs.frozen
class Result:
    """A turn ended: batch ``batch`` (and every open one before it) is answered."""

    batch: int | None = None
    session_id: str | None = None
    is_error: bool = False
    error: str | None = None
    usage: dict[str, int] = attrs.field(factory=dict)
    cost_usd: float | None = None
    num_turns: int | None = None
    duration_ms: int | None = None
    subtype: str | None = None
    api_error_status: Any = None
    merged_into: int | None = attrs.field(default=None, metadata=_OMIT)


@attrs.frozen
class Session:
    """The agent's session id (a new one, or the one resumed); ``note`` says why it changed."""

    session_id: str
    resumed: bool = False
    note: str | None = None


@attrs.frozen
class PrescriptResult:
    """How a pre-script ended; the daemon decides what it means (ngb/tasks/runs.py)."""

    id: str
    exit_code: int | None = None
    timed_out: bool = False
    truncated: bool = False
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    timeout: float | None = attrs.field(default=None, metadata=_OMIT)


@attrs.frozen
class Error:
    """Something the runner could not do (a bad frame, the agent failing to start...)."""

    error: str


@attrs.frozen
class Log:
    """A line for the daemon's log."""

    level: str = "info"
    message: str = ""


@attrs.frozen
class BadFrame:
    """A frame that is not one of ours or has fields of the wrong type; ``reason`` says which."""

    reason: str


OutFrame = Union[Start, Input, Prescript, Stop]  # noqa: UP007 - a runtime union for cattrs
BackFrame = Union[Hello, Output, Preview, Result, Session, PrescriptResult, Error, Log]  # noqa: UP007
Frame = Union[OutFrame, BackFrame]  # noqa: UP007

OUT_TAGS: dict[str, type] = {"start": Start, "input": Input, "prescript": Prescript, "stop": Stop}
BACK_TAGS: dict[str, type] = {
    "hello": Hello,
    "output": Output,
    "preview": Preview,
    "result": Result,
    "session": Session,
    "prescript_result": PrescriptResult,
    "error": Error,
    "log": Log,
}
TAGS = {**OUT_TAGS, **BACK_TAGS}
_TAG_OF = {cls: tag for tag, cls in TAGS.items()}


# -- the converter ---------------------------------------------------------------------------------


def _strict(kind: type | tuple[type, ...], name: str) -> Any:
    """A structure hook that takes only values of ``kind`` (JSON true is not the integer 1)."""

    def structure(value: Any, _type: Any) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {name}, got a boolean")
        if not isinstance(value, kind):
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        return value

    return structure


def _converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_structure_hook(int, _strict(int, "an integer"))
    number = _strict((int, float), "a number")
    conv.register_structure_hook(float, lambda value, t: float(number(value, t)))
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(bool, _strict(bool, "a boolean"))
    conv.register_structure_hook_func(lambda t: t == list[Any], _strict(list, "a list"))
    for cls in TAGS.values():
        omitted = {
            a.name: override(omit_if_default=True) for a in attrs.fields(cls) if a.metadata.get("omit")
        }
        # mypy matches a **dict against the named _cattrs_* flags too; its keys are field names
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **omitted))  # type: ignore[arg-type]
    for union in (OutFrame, BackFrame):
        configure_tagged_union(union, conv, tag_generator=_TAG_OF.__getitem__, tag_name=TAG)
    return conv


@functools.cache
def converter() -> cattrs.Converter:
    """The wire's converter, built on first use: its generated code costs ~30 ms, which a daemon
    should not pay before it is ready to serve (bench/short.py, ready)."""
    return _converter()


def encode(frame: Frame) -> dict[str, Any]:
    """The JSON object of a frame, ``type`` first."""
    union = OutFrame if _TAG_OF[type(frame)] in OUT_TAGS else BackFrame
    data: dict[str, Any] = converter().unstructure(frame, unstructure_as=union)
    return {TAG: data.pop(TAG), **data}


def _say(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, ValueError):  # a validator's words: "input.prompt is empty"
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def _decode(obj: dict[str, Any], tags: dict[str, type], union: Any) -> Any:
    tag = obj.get(TAG)
    if not isinstance(tag, str):
        return BadFrame(f"frame has no string {TAG!r}")
    if tag not in tags:
        return BadFrame(f"unknown frame type {tag!r}")
    try:
        return converter().structure(obj, union)
    except cattrs.BaseValidationError as exc:
        return BadFrame("; ".join(cattrs.transform_error(exc, path=tag, format_exception=_say)))
    except (TypeError, ValueError, KeyError) as exc:  # a validator, or a shape cattrs did not expect
        return BadFrame(f"bad {tag} frame: {exc}")


def decode_out(obj: dict[str, Any]) -> OutFrame | BadFrame:
    """A JSON object the daemon sent, as its frame (the runner's side), or what is wrong with it."""
    return _decode(obj, OUT_TAGS, OutFrame)


def decode_back(obj: dict[str, Any]) -> BackFrame | BadFrame:
    """A JSON object the runner sent, as its frame (the daemon's side), or what is wrong with it."""
    return _decode(obj, BACK_TAGS, BackFrame)


def tag_of(frame: Frame) -> str:
    """The ``type`` a frame has on the wire."""
    return _TAG_OF[type(frame)]
