"""The container wire (ngb/protocol.py): every frame round-trips with the JSON keys of
docs/agent-protocol.md, and anything else decodes to one BadFrame, never an exception."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ngb import protocol as p

ROOT = Path(__file__).resolve().parents[1]

FRAMES = [
    (p.Start(session_id=None, group="g", is_main=False), {"type": "start", "session_id": None, "group": "g", "is_main": False}),
    (
        p.Start(session_id="s", group="g", is_main=True, tools=[{"name": "x"}], isolated=True),
        {"type": "start", "session_id": "s", "group": "g", "is_main": True, "tools": [{"name": "x"}], "isolated": True},
    ),
    (p.Input(batch=3, prompt="hi"), {"type": "input", "batch": 3, "prompt": "hi"}),
    (p.Prescript(id="p1", command="true", timeout=60.0), {"type": "prescript", "id": "p1", "command": "true", "timeout": 60.0}),
    (p.Stop(), {"type": "stop"}),
    (p.Hello(p.PROTOCOL_VERSION), {"type": "hello", "version": p.PROTOCOL_VERSION}),
    (p.Output(batch=1, text="hello"), {"type": "output", "batch": 1, "text": "hello"}),
    (p.Preview(batch=1, text="hel"), {"type": "preview", "batch": 1, "text": "hel"}),
    (
        p.Start(session_id=None, group="g", is_main=False, previews=True),
        {"type": "start", "session_id": None, "group": "g", "is_main": False, "previews": True},
    ),
    (p.Session(session_id="s", resumed=True, note=None), {"type": "session", "session_id": "s", "resumed": True, "note": None}),
    (p.Error(error="boom"), {"type": "error", "error": "boom"}),
    (p.Log(level="info", message="ready"), {"type": "log", "level": "info", "message": "ready"}),
    (
        p.PrescriptResult(id="p1", exit_code=0, stdout="{}"),
        {"type": "prescript_result", "id": "p1", "exit_code": 0, "timed_out": False, "truncated": False,
         "stdout": "{}", "stderr": "", "error": None},
    ),
    (
        p.Result(batch=2, session_id="s", usage={"input_tokens": 1}, cost_usd=0.5, merged_into=3),
        {"type": "result", "batch": 2, "session_id": "s", "is_error": False, "error": None,
         "usage": {"input_tokens": 1}, "cost_usd": 0.5, "num_turns": None, "duration_ms": None,
         "subtype": None, "api_error_status": None, "merged_into": 3},
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("frame", "wire"), FRAMES, ids=[p.tag_of(f) + str(i) for i, (f, _) in enumerate(FRAMES)]
)
def test_every_frame_round_trips_with_its_json_keys(frame: p.Frame, wire: dict) -> None:
    assert p.encode(frame) == wire
    assert list(p.encode(frame))[0] == "type"
    decode = p.decode_out if p.tag_of(frame) in p.OUT_TAGS else p.decode_back
    assert decode(json.loads(json.dumps(wire))) == frame


def test_every_tag_is_covered() -> None:
    assert {p.tag_of(f) for f, _ in FRAMES} == set(p.TAGS)


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({}, "frame has no string 'type'"),
        ({"type": 7}, "frame has no string 'type'"),
        ({"type": "bogus"}, "unknown frame type 'bogus'"),
        ({"type": "hello", "version": 1}, "unknown frame type 'hello'"),  # the runner never gets one
        ({"type": "input", "batch": "one", "prompt": "x"}, "input.batch"),
        ({"type": "input", "batch": True, "prompt": "x"}, "input.batch"),
        ({"type": "input", "batch": 3}, "input.prompt"),
        ({"type": "input", "batch": 3, "prompt": "  "}, "input.prompt is empty"),
        ({"type": "start", "tools": "x"}, "start.tools"),
        ({"type": "start", "is_main": "yes"}, "start.is_main"),
        ({"type": "prescript", "id": "p", "command": " "}, "prescript.command is empty"),
        ({"type": "prescript", "id": "p", "command": "true", "timeout": 0}, "prescript.timeout"),
    ],
)
def test_bad_frames_from_the_host_are_one_typed_error(obj: dict, reason: str) -> None:
    bad = p.decode_out(obj)
    assert isinstance(bad, p.BadFrame)
    assert reason in bad.reason


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "start", "session_id": None},  # the daemon never gets one
        {"type": "output", "batch": 1, "text": 5},
        {"type": "result", "batch": "x"},
        {"type": "result", "usage": []},
        {"type": "session"},
        {"type": "prescript_result"},
        {"type": "hello", "version": "1"},
        {"type": "hello"},  # no version: not taken for the current one
    ],
)
def test_bad_frames_from_the_runner_are_one_typed_error(obj: dict) -> None:
    assert isinstance(p.decode_back(obj), p.BadFrame)


def test_the_runner_imports_this_very_module() -> None:
    """agent/ngb_agent/protocol.py is a link to ngb/protocol.py (the image build copies its
    content), so both ends always agree on every frame."""
    runner_side = ROOT / "agent" / "ngb_agent" / "protocol.py"
    assert runner_side.resolve() == (ROOT / "ngb" / "protocol.py").resolve()
