"""An in-process stand-in for the agent container, speaking the control protocol over a trio
memory channel pair. Used by the core's unit tests (actor, supervisor, slots, outbox) so they run
in milliseconds; the real container is exercised by the docker-marked end-to-end tests."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ngb.agent_link import ExitInfo, TurnFailed
from ngb.protocol import BackFrame, BadFrame, OutFrame, decode_back, encode
from ngb.records import Group


@attrs.define
class FakeBehaviour:
    reply: Callable[[str], list[str]] = lambda prompt: [f"Echo: {last_text(prompt)}"]
    delay: float = 0.0  # seconds before answering each batch
    crash_on: Callable[[str], bool] = lambda prompt: False  # exit mid-turn without a result
    crash_exit: ExitInfo = ExitInfo(exit_code=1)  # how a crash ends (ExitInfo(137, oom_killed=True): OOM)
    fail_start: bool = False


def last_text(prompt: str) -> str:
    texts = re.findall(r">([^<]*)</message>", prompt)
    return texts[-1] if texts else prompt


class FakeConnection:
    def __init__(self, container_id: str) -> None:
        self.container_id = container_id
        self.exit_info: ExitInfo | None = None
        self.to_agent_send, self.to_agent_receive = trio.open_memory_channel[dict[str, Any]](100)
        self.to_host_send, self.to_host_receive = trio.open_memory_channel[dict[str, Any] | None](100)

    async def send(self, frame: OutFrame) -> None:
        try:
            await self.to_agent_send.send(encode(frame))  # the fake agent reads the JSON objects
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TurnFailed("the agent connection closed") from exc

    async def receive(self) -> BackFrame | BadFrame | None:
        try:
            obj = await self.to_host_receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None
        return None if obj is None else decode_back(obj)


class FakeLauncher:
    """Counts live 'containers' so tests can assert the cap; records every prompt."""

    def __init__(self, behaviour: FakeBehaviour | None = None) -> None:
        self.behaviour = behaviour or FakeBehaviour()
        self.live = 0
        self.max_live = 0
        self.started = 0
        self.prompts: list[tuple[str, int, str]] = []  # (folder, container number, prompt)
        self.inputs: list[dict[str, Any]] = []  # every input frame, as sent (images included)
        self.start_order: list[str] = []
        self.starts: list[dict[str, Any]] = []  # every start frame, in order
        self.prescripts: list[dict[str, Any]] = []  # every prescript frame

    @asynccontextmanager
    async def session(self, group: Group) -> AsyncIterator[FakeConnection]:
        if self.behaviour.fail_start:
            raise TurnFailed("the agent container could not start: fake failure")
        self.started += 1
        number = self.started
        self.start_order.append(group.folder)
        self.live += 1
        self.max_live = max(self.max_live, self.live)
        conn = FakeConnection(f"fake-{number}")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._agent, group, conn, number)
                try:
                    yield conn
                finally:
                    with trio.CancelScope(shield=True):
                        with trio.move_on_after(1):
                            await conn.to_agent_send.send({"type": "stop"})
                    nursery.cancel_scope.cancel()
        finally:
            self.live -= 1
            if conn.exit_info is None:
                conn.exit_info = ExitInfo(exit_code=0)

    async def _agent(self, group: Group, conn: FakeConnection, number: int) -> None:
        b = self.behaviour
        session_id = None
        async for frame in conn.to_agent_receive:
            if frame["type"] == "start":
                self.starts.append(frame)
                session_id = frame.get("session_id") or f"sess-{group.folder}-{number}"
                await conn.to_host_send.send(
                    {"type": "session", "session_id": session_id, "resumed": bool(frame.get("session_id"))}
                )
            elif frame["type"] == "input":
                prompt = frame["prompt"]
                self.prompts.append((group.folder, number, prompt))
                self.inputs.append(frame)
                if b.delay:
                    await trio.sleep(b.delay)
                if b.crash_on(prompt):
                    conn.exit_info = b.crash_exit
                    await conn.to_host_send.send(None)
                    return
                for text in b.reply(prompt):
                    await conn.to_host_send.send({"type": "output", "batch": frame["batch"], "text": text})
                await conn.to_host_send.send(
                    {
                        "type": "result",
                        "batch": frame["batch"],
                        "session_id": session_id,
                        "is_error": False,
                        "usage": {},
                    }
                )
            elif frame["type"] == "prescript":
                self.prescripts.append(frame)
                await conn.to_host_send.send(await run_prescript(frame))
            elif frame["type"] == "stop":
                await conn.to_host_send.send(None)
                return


async def run_prescript(frame: dict[str, Any]) -> dict[str, Any]:
    """What agent/runner.py answers to a prescript frame, done on the host with /bin/sh."""
    result: dict[str, Any] = {
        "type": "prescript_result",
        "id": frame["id"],
        "exit_code": None,
        "timed_out": False,
        "stdout": "",
        "stderr": "",
        "error": None,
        "truncated": False,
    }
    with trio.move_on_after(float(frame.get("timeout") or 60)) as scope:
        proc = await trio.run_process(
            ["/bin/sh", "-c", frame["command"]],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        result.update(
            exit_code=proc.returncode,
            stdout=proc.stdout.decode(errors="replace"),
            stderr=proc.stderr.decode(errors="replace")[-2000:],
        )
    if scope.cancelled_caught:
        result["timed_out"] = True
    return result


def wake_json(wake: bool, data: Any = None) -> str:
    """A pre-script command printing the verdict."""
    return "echo " + shlex.quote(json.dumps({"wakeAgent": wake, "data": data}))
