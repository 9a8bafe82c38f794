"""Where the implementations behind runtime_api.py are chosen: the local Docker engine and unix
sockets in the run folder, today. A Kubernetes runtime or a TLS transport would be picked here, by
configuration, and nothing else would change (docs/scaling.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..records import Group
from .launcher import ContainerLauncher
from .runtime import DockerRuntime
from .transport import UnixSocketTransport


def local_launcher(config: Any, owner: str, *, proxy: Any, tools: Any, web_door: Any,
                   current_group: Callable[[str], Group | None]) -> tuple[DockerRuntime, ContainerLauncher]:
    """The runtime (the daemon lists and cleans its containers through it) and the launcher on it."""
    runtime = DockerRuntime(config.instance, owner=owner)
    launcher = ContainerLauncher(runtime=runtime, transport=UnixSocketTransport(config.run_dir, config.agent_uid),
                                 proxy=proxy, tools=tools, config=config, current_group=current_group,
                                 web_door=web_door)
    return runtime, launcher
