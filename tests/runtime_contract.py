"""What every container runtime must do (ngb/sandbox/runtime_api.ContainerRuntime), as tests any
implementation runs: subclass ``RuntimeContract`` in the runtime's test module and give it these
fixtures (tests/test_runtime_contract_docker.py does, for Docker):

- ``runtime``: a runtime of one daemon (an instance and an owner id) on a working engine;
- ``other_runtime``: another daemon's runtime on the same engine, same instance, other owner;
- ``same_owner``: a new runtime of the first daemon (as after its restart);
- ``dead_runtime``: a runtime whose engine does not answer;
- ``image``: an image with /bin/sh and ``python``, the path of a Python in it;
- ``spec``: a factory ``spec(folder, command, **fields) -> ContainerSpec``.

The contract is behaviour a user relies on: a container runs what it is given and its exit is
reported (an out-of-memory kill named as such); it sees only its mounts, writable only where they
are, as the uid it was given, with no network; it is listed as this daemon's and never as
another's; a stop ends even a container that ignores SIGTERM; the clean-up at start removes this
daemon's leftovers and never another daemon's; an engine that does not answer is told apart from a
spec the engine refuses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import trio

from ngb.sandbox.runtime_api import BindMount


async def ended(runtime: Any, container_id: str, timeout: float = 30) -> Any:
    with trio.fail_after(timeout):
        return await runtime.wait(container_id)


class RuntimeContract:
    async def test_runs_its_command_and_reports_the_exit(self, runtime: Any, spec: Any) -> None:
        cid = await runtime.start(spec("exits", ["/bin/sh", "-c", "exit 3"]))
        try:
            info = await ended(runtime, cid)
            assert (info.exit_code, info.oom_killed, info.error) == (3, False, None)
            assert (await runtime.exit_info(cid)).exit_code == 3
        finally:
            await runtime.stop_and_remove(cid, grace=0)
        assert "exits" not in {c["group"] for c in await runtime.live_containers()}

    async def test_sees_only_its_mounts_as_its_uid_without_a_network(self, runtime: Any, spec: Any, image: Any,
                                                                    tmp_path: Path) -> None:
        rw, ro = tmp_path / "rw", tmp_path / "ro"
        rw.mkdir()
        ro.mkdir()
        (ro / "given.txt").write_text("read me")
        # modes set, not left to the umask (a daemon started earlier in this process sets 077)
        os.chmod(rw, 0o777)
        os.chmod(ro, 0o755)
        os.chmod(ro / "given.txt", 0o644)
        probe = ("import os, socket\n"
                 "out = open('/w/report.txt', 'w')\n"
                 "out.write(f'uid={os.getuid()}\\n')\n"
                 "out.write('read=' + open('/r/given.txt').read() + '\\n')\n"
                 "for path in ('/r/new.txt', '/var/tmp/new.txt'):\n"
                 "    try:\n"
                 "        open(path, 'w').write('x'); out.write(f'wrote {path}\\n')\n"
                 "    except OSError as exc: out.write(f'refused {path}\\n')\n"
                 "try:\n"
                 "    socket.create_connection(('1.1.1.1', 53), timeout=2); out.write('network\\n')\n"
                 "except OSError: out.write('no network\\n')\n"
                 "out.write('secret=' + str(os.path.exists('/host-secret')) + '\\n')\n")
        s = spec("mounts", [image.python, "-c", probe],
                 mounts=[BindMount(str(rw), "/w", read_only=False), BindMount(str(ro), "/r", read_only=True)])
        cid = await runtime.start(s)
        try:
            assert (await ended(runtime, cid)).exit_code == 0
        finally:
            await runtime.stop_and_remove(cid, grace=0)
        report = (rw / "report.txt").read_text().splitlines()
        uid = s.user.split(":")[0]
        assert report == [f"uid={uid}", "read=read me", "refused /r/new.txt", "refused /var/tmp/new.txt", "no network",
                          "secret=False"]

    async def test_a_memory_limit_kill_is_named(self, runtime: Any, spec: Any, image: Any) -> None:
        hog = "b = bytearray(400 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1"
        cid = await runtime.start(spec("hog", [image.python, "-c", hog], memory="64m"))
        try:
            info = await ended(runtime, cid)
        finally:
            await runtime.stop_and_remove(cid, grace=0)
        assert info.oom_killed and info.describe() == "the agent ran out of memory"

    async def test_listed_as_ours_never_as_anothers_and_stopped_even_when_deaf(
            self, runtime: Any, other_runtime: Any, spec: Any) -> None:
        deaf = "trap '' TERM; while true; do sleep 1; done"  # ignores SIGTERM
        cid = await runtime.start(spec("deaf", ["/bin/sh", "-c", deaf]))
        try:
            assert "deaf" in {c["group"] for c in await runtime.live_containers()}
            assert "deaf" not in {c["group"] for c in await other_runtime.live_containers()}
            with trio.fail_after(20):
                info = await runtime.stop_and_remove(cid, grace=1)
            assert info.exit_code not in (None, 0) or info.error is None
        finally:
            await runtime.stop_and_remove(cid, grace=0)
        assert "deaf" not in {c["group"] for c in await runtime.live_containers()}

    async def test_the_cleanup_at_start_removes_our_leftovers_never_anothers(
            self, runtime: Any, other_runtime: Any, same_owner: Any, spec: Any) -> None:
        ours = await runtime.start(spec("left", ["/bin/sh", "-c", "sleep 600"]))
        theirs = await other_runtime.start(spec("theirs", ["/bin/sh", "-c", "sleep 600"]))
        try:
            removed = await same_owner.cleanup_orphans()  # the first daemon, restarted
            assert len(removed) == 1 and "left" in removed[0]
            assert "left" not in {c["group"] for c in await same_owner.live_containers()}
            assert "theirs" in {c["group"] for c in await other_runtime.live_containers()}
        finally:
            await runtime.stop_and_remove(ours, grace=0)
            await other_runtime.stop_and_remove(theirs, grace=0)

    async def test_a_second_start_of_a_group_replaces_its_leftover(self, runtime: Any, spec: Any) -> None:
        first = await runtime.start(spec("twice", ["/bin/sh", "-c", "sleep 600"]))
        second = await runtime.start(spec("twice", ["/bin/sh", "-c", "sleep 600"]))
        try:
            listed = [c for c in await runtime.live_containers() if c["group"] == "twice"]
            assert [c["id"] for c in listed] == [second[:12]]  # a group has one container at most
            assert (await runtime.exit_info(first)).error == "the agent container disappeared"
        finally:
            await runtime.stop_and_remove(second, grace=0)

    async def test_an_engine_that_does_not_answer_is_told_from_a_refused_spec(
            self, runtime: Any, dead_runtime: Any, spec: Any) -> None:
        assert await runtime.ping() and not await dead_runtime.ping()
        with pytest.raises(Exception) as down:  # noqa: B017 - whatever the engine's client raises
            await dead_runtime.start(spec("down", ["/bin/true"]))
        assert dead_runtime.unreachable(down.value)
        with pytest.raises(Exception) as refused:  # noqa: B017
            await runtime.start(spec("refused", ["/bin/true"], image="ngb-no-such-image:never"))
        assert not runtime.unreachable(refused.value)
        assert not await dead_runtime.wait_reachable(0.6)
