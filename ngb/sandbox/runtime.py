"""The container runtime: the docker SDK, always called off the trio loop.

Every agent container runs as the agent's uid (``agent_uid``, default 1000; ngb/hostperms.py) with a read-only root filesystem, all capabilities dropped,
no-new-privileges, memory/pids/cpu limits, no network, and labels naming the daemon instance, the
daemon that started it (``ngb.owner``: an id kept in that daemon's store, so one per state
directory) and the group, so that containers orphaned by a killed daemon are found and removed at
start, and two daemons on one host (two state directories, even with the same ``instance``) never
list, stop or remove each other's containers. A container of an older version without the owner
label is removed by the first daemon of its instance that starts.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import docker
import docker.errors
import trio
from docker.types import Mount as DockerMount

from ..agent_link import ExitInfo
from .runtime_api import BindMount, ContainerSpec, RuntimeUnavailable

__all__ = ["BindMount", "ContainerSpec", "DockerRuntime", "RuntimeUnavailable"]  # the records' old home

log = logging.getLogger(__name__)

OOM_SETTLE = 2.0  # seconds to wait for the engine's OOM event after a SIGKILL exit (see _exit_info_sync)

LABEL_INSTANCE = "ngb.instance"
LABEL_GROUP = "ngb.group"
LABEL_ROLE = "ngb.role"
LABEL_OWNER = "ngb.owner"


class DockerRuntime:
    """runtime_api.ContainerRuntime on the local Docker engine (the docker SDK, off the trio loop)."""

    def __init__(self, instance: str, client: docker.DockerClient | None = None, *, owner: str = "") -> None:
        self.instance = instance
        self.owner = owner  # the daemon's id ("" only in tests: then the instance alone names ours)
        self._client = client
        self._limiter = trio.CapacityLimiter(8)

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.from_env(timeout=60)
            except docker.errors.DockerException as exc:
                raise RuntimeUnavailable(f"cannot reach the Docker engine: {exc}") from exc
        return self._client

    async def _call(self, fn: Any, *args: Any, abandon: bool = False, **kwargs: Any) -> Any:
        return await trio.to_thread.run_sync(
            lambda: fn(*args, **kwargs), limiter=None if abandon else self._limiter, abandon_on_cancel=abandon
        )

    async def ping(self) -> bool:
        try:
            return bool(await self._call(self.client.ping))
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            return False

    def unreachable(self, exc: BaseException) -> bool:
        """The engine's socket refused, vanished or timed out (it is restarting or down)."""
        import requests

        return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, RuntimeUnavailable))

    async def cleanup_orphans(self) -> list[str]:
        """Remove every agent container of this instance: at start none of them can be ours."""

        def clean() -> list[str]:
            removed = []
            for c in self._list([f"{LABEL_INSTANCE}={self.instance}"], all=True):
                labels = c.get("Labels") or {}
                theirs = self.owner and labels.get(LABEL_OWNER) not in (None, self.owner)
                if not theirs and self._remove_quietly(c["Id"]):  # ours, or an older version's
                    removed.append(_name(c))
            return removed

        removed = await self._call(clean)
        if removed:
            log.warning("runtime: removed %d orphaned agent container(s): %s", len(removed), ", ".join(removed))
        return removed

    async def start(self, spec: ContainerSpec) -> str:
        name = f"ngb-{self.instance}-{spec.folder}-{secrets.token_hex(3)}".lower()
        mounts = []
        for m in spec.mounts:
            mount = DockerMount(m.target, m.source, type="bind", read_only=m.read_only)
            # Non-recursive: a filesystem mounted below a read-only source must not appear writable.
            mount["BindOptions"] = {"NonRecursive": True}
            mounts.append(mount)
        uid, _, gid = spec.user.partition(":")
        if not uid.isdigit() or not gid.isdigit() or int(uid) == 0:
            raise ValueError(f"agent containers run as a numeric non-root uid:gid, not {spec.user!r}")
        kwargs: dict[str, Any] = dict(
            image=spec.image,
            name=name,
            detach=True,
            user=spec.user,
            read_only=True,
            tmpfs={
                "/tmp": f"rw,nosuid,nodev,size={spec.tmpfs_tmp_size},mode=1777",
                "/home/agent": f"rw,nosuid,nodev,size={spec.tmpfs_home_size},uid={uid},gid={gid},mode=0700",
            },
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            mem_limit=spec.memory,
            memswap_limit=spec.memory,
            pids_limit=spec.pids,
            nano_cpus=int(spec.cpus * 1e9),
            network_mode=spec.network,
            mounts=mounts,
            environment=spec.environment,
            labels={LABEL_INSTANCE: self.instance, LABEL_GROUP: spec.folder, LABEL_ROLE: "agent",
                    **({LABEL_OWNER: self.owner} if self.owner else {})},
            init=True,
            stdin_open=False,
        )
        if spec.command is not None:
            kwargs["entrypoint"] = list(spec.command)

        def run() -> Any:
            self._remove_leftovers_sync(spec.folder)
            return self.client.containers.run(**kwargs)

        container = await self._call(run)
        log.info("runtime: started %s for group %s (%s)", name, spec.folder, container.short_id)
        return str(container.id)

    def _remove_leftovers_sync(self, folder: str) -> None:
        """A group has at most one container, and the actor starts one only when it has none: any
        container of this instance and group still there is a leftover (its removal failed while
        the engine was down or restarting) and goes now, not at the daemon's next start."""
        for c in self._list([*self._ours(), f"{LABEL_GROUP}={folder}"], all=True):
            if self._remove_quietly(c["Id"]):
                log.warning("runtime: removed leftover container %s of group %s", _name(c), folder)

    def _ours(self) -> list[str]:
        """The label filter of this daemon's containers."""
        return [f"{LABEL_INSTANCE}={self.instance}", *([f"{LABEL_OWNER}={self.owner}"] if self.owner else [])]

    def _list(self, labels: list[str], *, all: bool) -> list[dict[str, Any]]:  # noqa: A002 - Docker's name
        """Containers with these labels, as the engine lists them (one call: no inspect per container,
        so one that goes away meanwhile cannot make the listing fail)."""
        return list(self.client.api.containers(all=all, filters={"label": labels}))

    def _remove_quietly(self, container_id: str) -> bool:
        try:
            self.client.api.remove_container(container_id, force=True)
            return True
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # removal already in progress
                return False
            raise

    async def wait_reachable(self, timeout: float) -> bool:
        """Wait (pinging every half second) until the engine answers; False after `timeout`."""
        with trio.move_on_after(timeout):
            while not await self.ping():  # noqa: ASYNC110 - polling another process; no event to wait on
                await trio.sleep(0.5)
            return True
        return False

    async def wait(self, container_id: str) -> ExitInfo:
        """Block (abandonably) until the container exits; report how it ended."""

        def wait_sync() -> ExitInfo:
            try:
                self.client.api.wait(container_id)
            except docker.errors.NotFound:
                return ExitInfo(error="the agent container disappeared")
            except Exception as exc:  # noqa: BLE001 - engine restarts, timeouts
                return ExitInfo(error=f"lost track of the agent container: {exc}")
            return self._exit_info_sync(container_id)

        return await self._call(wait_sync, abandon=True)

    def _exit_info_sync(self, container_id: str, *, settle: bool = True) -> ExitInfo:
        """How the container ended. The engine learns of an OOM kill from a separate event that
        can arrive just after the exit itself: a container that died of SIGKILL (137) on its own
        is inspected again for up to OOM_SETTLE seconds before we say it was not the memory
        limit (settle=False when we sent the kill ourselves)."""
        deadline = time.monotonic() + (OOM_SETTLE if settle else 0.0)
        while True:
            try:
                state = self.client.api.inspect_container(container_id)["State"]
            except docker.errors.NotFound:
                return ExitInfo(error="the agent container disappeared")
            except Exception as exc:  # noqa: BLE001 - the engine is down or restarting
                return ExitInfo(error=f"lost track of the agent container: {exc}")
            info = ExitInfo(exit_code=state.get("ExitCode"), oom_killed=bool(state.get("OOMKilled")))
            killed = not state.get("Running") and info.exit_code == 137
            if info.oom_killed or not killed or time.monotonic() >= deadline:
                return info
            time.sleep(0.05)

    def _ended_by_itself(self, container_id: str) -> bool:
        try:
            return not self.client.api.inspect_container(container_id)["State"].get("Running")
        except Exception:  # noqa: BLE001 - gone or engine down: stop() says which
            return False

    async def exit_info(self, container_id: str) -> ExitInfo:
        return await self._call(self._exit_info_sync, container_id)

    async def stop_and_remove(self, container_id: str, grace: float = 5.0) -> ExitInfo:
        def stop() -> ExitInfo:
            ended = self._ended_by_itself(container_id)  # before our stop can be the cause
            try:
                self.client.api.stop(container_id, timeout=max(0, int(grace)))
            except docker.errors.NotFound:
                return ExitInfo(error="the agent container disappeared")
            except Exception as exc:  # noqa: BLE001 - fall through to a forced removal
                log.warning("runtime: stop of %s failed: %s", container_id[:12], exc)
            info = self._exit_info_sync(container_id, settle=ended)
            try:
                self.client.api.remove_container(container_id, force=True)
            except docker.errors.NotFound:
                pass
            except Exception as exc:  # noqa: BLE001 - engine down: the group's next start removes it
                log.warning("runtime: removal of %s failed: %s", container_id[:12], exc)
            return info

        return await self._call(stop)

    async def live_containers(self) -> list[dict[str, str]]:
        def ls() -> list[dict[str, str]]:
            return [
                {"id": c["Id"][:12], "name": _name(c), "group": (c.get("Labels") or {}).get(LABEL_GROUP, ""),
                 "status": c.get("State", "")}
                for c in self._list(self._ours(), all=False)
            ]

        return await self._call(ls)


def _name(listed: dict[str, Any]) -> str:
    """A listed container's name (the engine lists them as ["/name"])."""
    names = listed.get("Names") or []
    return str(names[0]).lstrip("/") if names else str(listed.get("Id", ""))[:12]
