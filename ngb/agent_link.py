"""The daemon's handle on one running agent: a Launcher starts it for a group, an AgentConnection
carries the typed frames of ngb/protocol.py both ways, and ExitInfo says how it ended. The actor
uses these; ngb/sandbox/launcher.py implements them with Docker, tests/fakes/agent.py in memory."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

import attrs

from .framing import FrameError
from .protocol import BackFrame, BadFrame, OutFrame
from .records import Group


@attrs.frozen
class ExitInfo:
    """How an agent container ended."""

    exit_code: int | None = None
    oom_killed: bool = False
    error: str | None = None

    def describe(self) -> str:
        if self.oom_killed:
            return "the agent ran out of memory"
        if self.error:
            return self.error
        if self.exit_code not in (0, None):
            return f"the agent exited with status {self.exit_code}"
        return "the agent stopped"


class TurnFailed(Exception):
    """The agent could not be started or reached; the message says why (for the chat and the log)."""


class AgentConnection(Protocol):
    """The control channel of one running agent (see docs/agent-protocol.md)."""

    container_id: str
    exit_info: ExitInfo | None

    async def send(self, frame: OutFrame) -> None: ...

    async def receive(self) -> BackFrame | BadFrame | FrameError | None: ...


class Launcher(Protocol):
    """Starts an agent for a group; leaving the context stops and removes it."""

    def session(self, group: Group) -> AbstractAsyncContextManager[AgentConnection]: ...
