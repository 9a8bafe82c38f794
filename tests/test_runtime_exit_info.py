"""How an agent container ended, when the engine reports an OOM kill a moment after the exit.

The engine learns of an OOM kill from its own event, which can arrive just after the exit: an
inspect right after a SIGKILL exit may still say OOMKilled=false (seen in CI: the group was told
"the agent connection closed" instead of "the agent ran out of memory"). The engine's timing cannot
be forced on a real engine, so these tests script the inspect answers; tests/test_e2e_docker.py
runs the real out-of-memory case."""

from __future__ import annotations

from typing import Any

import docker

from ngb.sandbox.runtime import DockerRuntime


class ScriptedApi:
    """inspect_container answers from a script (the last answer repeats); stop/remove are recorded."""

    def __init__(self, states: list[dict[str, Any]]) -> None:
        self.states = states
        self.inspects = 0
        self.stopped: list[str] = []

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        state = self.states[min(self.inspects, len(self.states) - 1)]
        self.inspects += 1
        return {"State": state}

    def stop(self, container_id: str, timeout: int) -> None:
        self.stopped.append(container_id)

    def remove_container(self, container_id: str, force: bool) -> None:
        pass


def runtime(states: list[dict[str, Any]]) -> tuple[DockerRuntime, ScriptedApi]:
    api = ScriptedApi(states)
    client = docker.DockerClient.__new__(docker.DockerClient)  # no engine connection: only .api is used
    client.api = api  # type: ignore[assignment]
    return DockerRuntime("t", client=client), api


KILLED = {"Running": False, "ExitCode": 137, "OOMKilled": False}
OOM = {"Running": False, "ExitCode": 137, "OOMKilled": True}


def test_late_oom_event_is_waited_for() -> None:
    rt, api = runtime([KILLED, KILLED, KILLED, OOM])
    info = rt._exit_info_sync("c1")
    assert info.oom_killed and info.describe() == "the agent ran out of memory"
    assert api.inspects == 4


def test_a_plain_exit_is_not_waited_for() -> None:
    rt, api = runtime([{"Running": False, "ExitCode": 1, "OOMKilled": False}])
    info = rt._exit_info_sync("c1")
    assert not info.oom_killed and info.describe() == "the agent exited with status 1" and api.inspects == 1


def test_a_kill_that_never_becomes_oom_gives_up_after_the_settle_time(monkeypatch: Any) -> None:
    monkeypatch.setattr("ngb.sandbox.runtime.OOM_SETTLE", 0.2)
    rt, api = runtime([KILLED])
    info = rt._exit_info_sync("c1")
    assert not info.oom_killed and info.exit_code == 137 and 2 <= api.inspects <= 10


async def test_our_own_stop_is_not_mistaken_for_a_late_oom() -> None:
    # running when we stop it: the 137 is our SIGKILL, reported at once without waiting
    rt, api = runtime([{"Running": True, "ExitCode": 0, "OOMKilled": False}, KILLED])
    info = await rt.stop_and_remove("c1", grace=0)
    assert info.exit_code == 137 and not info.oom_killed and api.inspects == 2 and api.stopped == ["c1"]


async def test_stop_after_the_container_died_on_its_own_still_sees_the_oom() -> None:
    rt, api = runtime([KILLED, KILLED, KILLED, OOM])
    info = await rt.stop_and_remove("c1", grace=2)
    assert info.oom_killed
