"""Two daemons on one host (two state directories), even with the same ``instance``, never remove
each other's agent containers: each container carries its daemon's id (``ngb.owner``), kept in
that daemon's store, and the start-up clean-up removes only its own (and an older version's,
which had no owner label). Real Docker engine, real daemons with the real Docker launcher."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import trio

from ngb.daemon import Daemon
from ngb.sandbox.runtime import LABEL_GROUP, LABEL_INSTANCE, LABEL_OWNER, LABEL_ROLE
from tests.conftest import make_config

pytestmark = [pytest.mark.docker]

INSTANCE = f"own{os.getpid()}"


def sleeper(client: Any, image: str, labels: dict[str, str]) -> Any:
    """A container labelled as an agent container (the agent image, doing nothing for a while)."""
    return client.containers.run(image, ["sleep", "600"], detach=True, network_mode="none",
                                 labels={LABEL_INSTANCE: INSTANCE, LABEL_ROLE: "agent", LABEL_GROUP: "main", **labels})


def exists(client: Any, container: Any) -> bool:
    try:
        client.containers.get(container.id)
        return True
    except docker.errors.NotFound:
        return False


@pytest.fixture
async def start_daemon(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start a daemon with the real Docker launcher on state dir ``tmp_path/<name>``."""
    async with trio.open_nursery() as nursery:
        async def start(name: str) -> tuple[Daemon, Callable[[], Any]]:
            daemon = Daemon(make_config(tmp_path / name, NGB_INSTANCE=INSTANCE,
                                        NGB_MODEL_UPSTREAM="http://127.0.0.1:9"))
            scope, ended = trio.CancelScope(), trio.Event()

            async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                try:
                    with scope:
                        await daemon.run(task_status=task_status)
                finally:
                    ended.set()

            async def stop() -> None:
                scope.cancel()
                await ended.wait()

            await nursery.start(run)
            return daemon, stop

        yield start
        nursery.cancel_scope.cancel()


async def test_a_second_daemon_on_another_state_dir_leaves_the_first_ones_containers(
        start_daemon, docker_client, agent_image) -> None:
    first, stop_first = await start_daemon("a")
    assert first.daemon_id and first.runtime.owner == first.daemon_id
    theirs = sleeper(docker_client, agent_image, {LABEL_OWNER: first.daemon_id})
    legacy = sleeper(docker_client, agent_image, {})  # started by a version without owner labels
    try:
        second, _ = await start_daemon("b")  # same instance name, its own state dir
        assert second.daemon_id != first.daemon_id
        assert exists(docker_client, theirs), "the second daemon removed the first one's container"
        assert not exists(docker_client, legacy), "an older version's orphan stays behind"
        assert [c["id"] for c in await first.runtime.live_containers()] == [theirs.id[:12]]
        assert await second.runtime.live_containers() == []

        # The first daemon is killed and restarts on its own state dir: its id is the same, and the
        # container it left behind is an orphan it removes.
        await stop_first()
        again, _ = await start_daemon("a")
        assert again.daemon_id == first.daemon_id
        assert not exists(docker_client, theirs)
    finally:
        for c in (theirs, legacy):
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
