"""JSON requests and events over one websocket (ngb/channels/ws_rpc.py), against an in-memory socket."""

from __future__ import annotations

import json
import math
from collections.abc import Hashable
from typing import Any

import pytest
import trio
from trio.testing import wait_all_tasks_blocked
from trio_websocket import CloseReason, ConnectionClosed

from ngb.channels import wecom
from ngb.channels.onebot_actions import OneBotConnection
from ngb.channels.ws_rpc import JsonRpcSocket, PendingRequests, Route


class FakeWs:
    """What JsonRpcSocket uses of a trio-websocket connection: frames pushed by the test are read,
    frames sent are kept; drop() ends the connection as a closed socket does."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self._push, self._incoming = trio.open_memory_channel[str](math.inf)
        self.reason: CloseReason | None = None
        self.aclosed = False

    def push(self, frame: Any) -> None:
        self._push.send_nowait(frame if isinstance(frame, str) else json.dumps(frame))

    def drop(self, code: int = 1006, reason: str = "gone") -> None:
        self.reason = CloseReason(code, reason)
        self._push.close()

    def sent_frames(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.sent]

    async def send_message(self, text: str) -> None:
        await trio.lowlevel.checkpoint()
        if self.reason is not None:
            raise ConnectionClosed(self.reason)
        self.sent.append(text)

    async def get_message(self) -> str:
        try:
            return await self._incoming.receive()
        except trio.EndOfChannel:
            raise ConnectionClosed(self.reason) from None

    async def aclose(self) -> None:
        self.aclosed = True
        self.drop(1000, "closed by us")


class Rpc(JsonRpcSocket):
    """A protocol for the tests: {"id": k, ...} answers request k, {"event": ...} is an event,
    {"ack": ...} an answer to nothing, {"bad": ...} malformed, anything else unexpected."""

    def __init__(self, ws: FakeWs) -> None:
        super().__init__(ws, "test socket")
        self.notes: list[tuple[str, Any]] = []

    def route(self, frame: dict[str, Any]) -> Hashable:
        if "event" in frame:
            return Route.EVENT
        if "bad" in frame:
            raise ValueError("bad frame")
        if "id" in frame:
            return frame["id"]
        return Route.LATE if "ack" in frame else Route.UNEXPECTED

    def malformed_frame(self, raw: Any, reason: ValueError) -> None:
        self.notes.append(("malformed", str(reason)))

    def unexpected_frame(self, raw: Any) -> None:
        self.notes.append(("unexpected", raw))

    def late_response(self, raw: Any) -> None:
        self.notes.append(("late", raw))


async def with_reader(nursery: trio.Nursery) -> tuple[FakeWs, Rpc]:
    ws = FakeWs()
    rpc = Rpc(ws)
    nursery.start_soon(rpc.reader)
    return ws, rpc


async def test_concurrent_requests_each_get_their_own_answer(nursery) -> None:
    ws, rpc = await with_reader(nursery)
    answers: dict[str, Any] = {}

    async def ask(key: str) -> None:
        answers[key] = await rpc.request(key, {"id": key, "q": f"question {key} 你好"}, timeout=10)

    async with trio.open_nursery() as asking:
        for key in ("a", "b", "c"):
            asking.start_soon(ask, key)
        await wait_all_tasks_blocked()
        assert sorted(f["id"] for f in ws.sent_frames()) == ["a", "b", "c"]
        assert "你好" in ws.sent[0]  # sent as UTF-8 text, not \u escapes
        assert len(rpc.pending) == 3
        ws.push({"id": "c", "answer": 3})
        ws.push({"event": "in between"})
        ws.push({"id": "a", "answer": 1})
        ws.push({"id": "b", "answer": 2})
    assert answers == {"a": {"id": "a", "answer": 1}, "b": {"id": "b", "answer": 2}, "c": {"id": "c", "answer": 3}}
    assert len(rpc.pending) == 0
    assert rpc.events_out.receive_nowait() == {"event": "in between"}
    assert rpc.notes == [] and rpc.malformed == 0


async def test_an_answer_arriving_before_the_send_returns_is_not_lost(nursery) -> None:
    ws, rpc = await with_reader(nursery)
    send = ws.send_message

    async def send_and_answer(text: str) -> None:
        ws.push({"id": json.loads(text)["id"], "fast": True})
        await trio.sleep(0.05)  # the reader routes the answer while the send still runs
        await send(text)

    ws.send_message = send_and_answer  # type: ignore[method-assign]
    assert await rpc.request("k", {"id": "k"}, timeout=5) == {"id": "k", "fast": True}


async def test_timeout_forgets_the_request_and_its_late_answer_is_dropped(nursery, autojump_clock) -> None:
    ws, rpc = await with_reader(nursery)
    with pytest.raises(trio.TooSlowError):
        await rpc.request("slow", {"id": "slow"}, timeout=2)
    assert len(rpc.pending) == 0
    ws.push({"id": "slow", "answer": "too late"})
    ws.push({"ack": "for nobody"})
    await wait_all_tasks_blocked()
    assert [kind for kind, _ in rpc.notes] == ["late", "late"]
    assert rpc.malformed == 0 and not rpc.closed.is_set()
    # the connection still works for the next request
    async with trio.open_nursery() as asking:
        result: list[Any] = []

        async def ask() -> None:
            result.append(await rpc.request("next", {"id": "next"}, timeout=2))

        asking.start_soon(ask)
        await wait_all_tasks_blocked()
        ws.push({"id": "next", "answer": "on time"})
    assert result == [{"id": "next", "answer": "on time"}]


async def test_connection_closing_wakes_every_waiting_request_with_no_answer(nursery) -> None:
    ws, rpc = await with_reader(nursery)
    answers: dict[str, Any] = {}

    async def ask(key: str) -> None:
        answers[key] = await rpc.request(key, {"id": key}, timeout=60)

    with trio.fail_after(5):  # woken by the close, not by their 60 s timeout
        async with trio.open_nursery() as asking:
            asking.start_soon(ask, "x")
            asking.start_soon(ask, "y")
            await wait_all_tasks_blocked()
            ws.drop()
    assert answers == {"x": None, "y": None}
    assert rpc.closed.is_set() and len(rpc.pending) == 0
    with trio.fail_after(5):
        assert [event async for event in rpc.events_out] == []  # the event queue ends too
    sent = len(ws.sent)
    with pytest.raises(ConnectionError, match="test socket closed"):
        await rpc.request("z", {"id": "z"}, timeout=60)
    assert len(ws.sent) == sent and len(rpc.pending) == 0  # nothing sent on a closed connection


async def test_nothing_is_sent_once_the_connection_is_marked_closed() -> None:
    ws = FakeWs()
    rpc = Rpc(ws)
    rpc.closed.set()  # e.g. a missed heartbeat gave it up while the socket lingers
    with pytest.raises(ConnectionError, match="^test socket closed$"):
        await rpc.request("k", {"id": "k"}, timeout=1)
    assert ws.sent == [] and len(rpc.pending) == 0


async def test_a_failed_send_is_a_connection_error_with_the_close_reason() -> None:
    ws = FakeWs()
    rpc = Rpc(ws)
    ws.reason = CloseReason(1011, "server error")
    with pytest.raises(ConnectionError, match="test socket closed: .*server error"):
        await rpc.request("k", {"id": "k"}, timeout=60)
    assert len(rpc.pending) == 0


async def test_events_keep_their_order_and_bad_frames_are_counted_not_fatal(nursery) -> None:
    ws, rpc = await with_reader(nursery)
    ws.push({"event": 1})
    ws.push("not json")
    ws.push("[1, 2]")
    ws.push({"bad": True})
    ws.push({"surprise": True})
    ws.push({"ack": "unknown"})
    ws.push({"id": "never asked"})
    ws.push({"event": 2})
    await wait_all_tasks_blocked()
    assert [rpc.events_out.receive_nowait(), rpc.events_out.receive_nowait()] == [{"event": 1}, {"event": 2}]
    assert rpc.malformed == 4  # not json, not an object, route's ValueError, unexpected; late ones are not
    assert [kind for kind, _ in rpc.notes] == ["malformed", "malformed", "malformed", "unexpected", "late", "late"]
    assert rpc.notes[1] == ("malformed", "not a JSON object") and rpc.notes[2] == ("malformed", "bad frame")
    assert not rpc.closed.is_set()


async def test_give_up_closes_the_socket_and_the_connection(nursery) -> None:
    ws, rpc = await with_reader(nursery)
    await rpc.give_up()
    assert ws.aclosed and rpc.closed.is_set()


def test_serials_are_unique_per_connection() -> None:
    first, second = Rpc(FakeWs()), Rpc(FakeWs())
    assert [first.next_serial() for _ in range(3)] == [1, 2, 3]
    assert second.next_serial() == 1


async def test_pending_requests_by_key() -> None:
    pending = PendingRequests()
    assert pending.resolve("nobody", {"x": 1}) is False
    with pending.expect("a") as a, pending.expect("b") as b:
        assert "a" in pending and pending.keys() == ["a", "b"]
        assert pending.resolve("b", {"for": "b"}) is True
        assert b.done.is_set() and b.response == {"for": "b"} and not a.done.is_set()
        pending.fail_all()
        assert a.done.is_set() and a.response is None
    assert len(pending) == 0 and pending.resolve("a", {}) is False


# -- the two protocols' field names -------------------------------------------------------------------------
async def test_onebot_matches_responses_by_echo(nursery) -> None:
    ws = FakeWs()
    conn = OneBotConnection(ws, "ws://fake")
    nursery.start_soon(conn.reader)
    result: list[Any] = []

    async def call() -> None:
        result.append(await conn.call("send_msg", {"message": "hi"}, 5))

    async with trio.open_nursery() as calling:
        calling.start_soon(call)
        await wait_all_tasks_blocked()
        [frame] = ws.sent_frames()
        assert frame == {"action": "send_msg", "params": {"message": "hi"}, "echo": "ngb-1"}
        ws.push({"post_type": "message", "echo": "ngb-1"})  # an event, whatever else it carries
        ws.push({"echo": "ngb-1", "status": "ok", "retcode": 0, "data": {"message_id": 7}})
    assert result == [{"message_id": 7}]
    assert conn.events_out.receive_nowait()["post_type"] == "message"
    ws.drop()
    await wait_all_tasks_blocked()
    with pytest.raises(ConnectionError, match="ws://fake closed"):
        await conn.call("send_msg", {}, 5)


async def test_wecom_matches_acks_by_req_id_and_cmd(nursery) -> None:
    ws = FakeWs()
    conn = wecom._Connection(ws)
    nursery.start_soon(conn.reader)
    result: dict[str, Any] = {}

    async def command(cmd: str, req_id: str) -> None:
        result[cmd] = await conn.command(cmd, {"n": cmd}, 5, req_id=req_id)

    async with trio.open_nursery() as sending:
        sending.start_soon(command, "aibot_send_msg", "r1")
        sending.start_soon(command, "aibot_respond_msg", "r2")
        await wait_all_tasks_blocked()
        assert {f["headers"]["req_id"]: f["cmd"] for f in ws.sent_frames()} == {
            "r1": "aibot_send_msg", "r2": "aibot_respond_msg"}
        ws.push({"cmd": "aibot_msg_callback", "headers": {"req_id": "r1"}, "body": {}})  # a callback, not an ack
        ws.push({"cmd": "aibot_send_msg", "headers": {"req_id": "r2"}, "errcode": 0})  # wrong cmd: not r2's ack
        await wait_all_tasks_blocked()
        assert result == {}
        ws.push({"headers": {"req_id": "r2"}, "errcode": 0, "body": "two"})  # no cmd: matched on req_id
        ws.push({"cmd": "aibot_send_msg", "headers": {"req_id": "r1"}, "errcode": 0, "body": "one"})
    assert result == {"aibot_send_msg": "one", "aibot_respond_msg": "two"}
    assert conn.events_out.receive_nowait()["cmd"] == "aibot_msg_callback"
    ws.push({"headers": "not a dict"})
    await wait_all_tasks_blocked()
    assert conn.malformed == 1
