"""The container runtime contract (tests/runtime_contract.py) against the one runtime of today:
Docker (ngb/sandbox/runtime.py) on the real engine, with the agent image."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import Any

import attrs
import docker
import pytest

from ngb.hostperms import container_user
from ngb.sandbox.runtime import DockerRuntime
from ngb.sandbox.runtime_api import ContainerSpec
from tests.runtime_contract import RuntimeContract

pytestmark = [pytest.mark.docker]

INSTANCE = f"contract{os.getpid()}"
OWNER = "owner-" + secrets.token_hex(4)


@attrs.frozen
class Image:
    name: str
    python: str  # a Python inside it


@pytest.fixture
def image(agent_image: str) -> Image:
    return Image(agent_image, "/opt/agent/bin/python")


@pytest.fixture
def runtime(docker_client: Any) -> DockerRuntime:
    return DockerRuntime(INSTANCE, docker_client, owner=OWNER)


@pytest.fixture
def other_runtime(docker_client: Any) -> DockerRuntime:
    return DockerRuntime(INSTANCE, docker_client, owner="another-" + secrets.token_hex(4))


@pytest.fixture
def same_owner(docker_client: Any) -> DockerRuntime:
    return DockerRuntime(INSTANCE, docker.from_env(), owner=OWNER)


@pytest.fixture
def dead_runtime() -> DockerRuntime:
    return DockerRuntime(INSTANCE, docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41", timeout=2),
                         owner=OWNER)


@pytest.fixture
def spec(image: Image) -> Callable[..., ContainerSpec]:
    def make(folder: str, command: list[str], **fields: Any) -> ContainerSpec:
        base: dict[str, Any] = {"image": image.name, "folder": folder, "mounts": [], "environment": {},
                                "memory": "256m", "user": container_user(1000), "command": tuple(command)}
        return ContainerSpec(**{**base, **fields})

    return make


class TestDockerRuntime(RuntimeContract):
    pass
