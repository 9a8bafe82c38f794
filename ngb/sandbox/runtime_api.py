"""The seam between the daemon and whatever runs agent containers: the records a runtime takes and
gives, and the two interfaces the launcher is written against (docs/scaling.md).

- ``ContainerRuntime``: start a container from a ``ContainerSpec``, watch it (``wait``), say how it
  ended (``exit_info``), stop and remove it, list this daemon's live ones and remove those a killed
  daemon left (``cleanup_orphans``), and tell an engine that does not answer from a spec it refuses
  (``unreachable``). ``DockerRuntime`` (runtime.py) is the one implementation today; a Kubernetes
  runtime (a pod per session through the official client) would be a new module beside it.
- ``AgentTransport`` (transport.py): where one session's endpoints live on the host (the control
  channel, tool requests, the model proxy, the egress door), what the container mounts and is told
  to reach them, and which peer is admitted. ``UnixSocketTransport`` is the implementation today.

Every implementation must pass the contract suite (tests/runtime_contract.py), which
tests/test_runtime_contract_docker.py runs against Docker. The actor and the launcher import these
interfaces only; ngb/daemon.py, the composition root, picks the implementations.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import attrs
import trio

from ..agent_link import ExitInfo


class RuntimeUnavailable(RuntimeError):
    """The container engine cannot be reached at all (no socket, no permission)."""


@attrs.frozen
class BindMount:
    source: str  # a folder or file on the host
    target: str  # where the container sees it
    read_only: bool


@attrs.frozen
class ContainerSpec:
    """One agent container: what it runs, what it sees, what it may use."""

    image: str
    folder: str  # the group's folder: the container's label and name
    mounts: Sequence[BindMount]
    environment: dict[str, str]
    memory: str = "1g"
    pids: int = 256
    cpus: float = 1.0
    network: str = "none"
    tmpfs_home_size: str = "256m"
    tmpfs_tmp_size: str = "128m"
    user: str = "1000:1000"  # uid:gid, never root (hostperms.container_user)
    command: tuple[str, ...] | None = None  # instead of the image's entrypoint (probes, the contract suite)


class ContainerRuntime(Protocol):
    """Runs agent containers for one daemon (its instance and owner id): never another daemon's."""

    async def ping(self) -> bool:
        """The engine answers."""
        ...

    async def wait_reachable(self, timeout: float) -> bool:
        """Wait until the engine answers; False after ``timeout``."""
        ...

    def unreachable(self, exc: BaseException) -> bool:
        """``exc`` (from ``start``) means the engine did not answer (worth waiting for), not that
        it refused the spec (a missing image, a bad mount: the turn fails at once)."""
        ...

    async def start(self, spec: ContainerSpec) -> str:
        """Start it (any leftover container of the same group removed first); its id."""
        ...

    async def wait(self, container_id: str) -> ExitInfo:
        """Until it exits, however that happens; how it ended (never raises)."""
        ...

    async def exit_info(self, container_id: str) -> ExitInfo:
        """How it ended (or that it is gone)."""
        ...

    async def stop_and_remove(self, container_id: str, grace: float = 5.0) -> ExitInfo:
        """Stop it (``grace`` seconds, then killed) and remove it; how it ended."""
        ...

    async def live_containers(self) -> list[dict[str, str]]:
        """This daemon's running containers: ``id``, ``name``, ``group`` (its folder), ``status``."""
        ...

    async def cleanup_orphans(self) -> list[str]:
        """Remove every container this daemon's instance left (at start none can be in use); the
        names removed. Another daemon's containers are never touched."""
        ...


class SessionEndpoints(Protocol):
    """One container session's endpoints on the host (control, requests, model, web)."""

    mounts: list[BindMount]  # what the container mounts to reach them
    environment: dict[str, str]  # what it is told about them

    async def listener(self, name: str) -> trio.SocketListener:
        """Listen on the endpoint ``name``: reachable by this session's agent only."""
        ...

    def admits(self, stream: trio.SocketStream) -> bool:
        """Whether a connection to an endpoint comes from this session's agent."""
        ...

    def close(self) -> None:
        """The endpoints go away (the session ended)."""
        ...


class AgentTransport(Protocol):
    def open(self, folder: str) -> AbstractAsyncContextManager[SessionEndpoints]:
        """A session's endpoints for the group ``folder``, closed when the block ends; raises
        OSError when they cannot be made private."""
        ...
