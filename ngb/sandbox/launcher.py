"""The launcher: one agent container with its host endpoints, as an async context manager.

On enter: the agent transport opens the session's endpoints (control, requests, model, web; today
unix sockets in the group's run folder, mounted at /run/ngb: transport.py), the container runtime
starts the container with them (today Docker: runtime.py), and the runner's `hello` is awaited. On
exit: `stop` is sent, the container gets a grace period, then it is stopped and removed; the
endpoints go away. This module is written against the interfaces of runtime_api.py only.

The endpoints are reachable by the daemon and the agent only; the control endpoint takes the first
connection the transport admits and reads it strictly (a too-long or unfinished frame ends the
session), see ngb/framing.py.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from .. import errors
from ..agent_link import ExitInfo, TurnFailed
from ..config.environment import host_timezone
from ..framing import FRAME_TIMEOUT, FrameError, FrameWriter, LineReader
from ..hostperms import DEFAULT_AGENT_UID, container_user, share_dir
from ..protocol import PROTOCOL_VERSION, BackFrame, BadFrame, Hello, OutFrame, Stop, decode_back, encode
from ..records import Group, WebMode
from .model_proxy import ModelProxy
from .mounts import default_forbidden_roots, load_allowlist, resolve_mounts
from .runtime_api import AgentTransport, BindMount, ContainerRuntime, ContainerSpec, SessionEndpoints
from .tool_socket import serve_requests
from .tools import ToolService
from .web_door import WebDoor
from .web_policy import rules_for

log = logging.getLogger(__name__)

MODEL_PORT = 8787
WEB_PORT = 8788  # the runner's proxy on the container's loopback, forwarded to web.sock (the egress door)
ENGINE_WAIT = 30.0  # how long a container start waits for a Docker engine that does not answer


class AgentStream:
    """The control channel of one running agent over the transport's stream."""

    def __init__(self, container_id: str, stream: trio.SocketStream) -> None:
        self.container_id = container_id
        self.exit_info: ExitInfo | None = None
        self._stream = stream
        self._reader = LineReader(stream, strict=True, frame_timeout=FRAME_TIMEOUT)
        self._writer = FrameWriter(stream)
        self.closed = False

    async def send(self, frame: OutFrame) -> None:
        try:
            await self._writer.send(encode(frame))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise TurnFailed("the agent connection closed") from exc

    async def receive(self) -> BackFrame | BadFrame | FrameError | None:
        if self.closed:
            return None
        try:
            obj = await self._reader.next_frame()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        return decode_back(obj) if isinstance(obj, dict) else obj


@attrs.define(eq=False, kw_only=True)
class ContainerLauncher:
    """agent_link.Launcher on a ContainerRuntime and an AgentTransport."""

    runtime: ContainerRuntime
    transport: AgentTransport
    proxy: ModelProxy
    tools: ToolService
    config: Any
    _current_group: Callable[[str], Group | None]
    web_door: WebDoor | None = None
    agent_uid: int = attrs.field(
        init=False, default=attrs.Factory(lambda self: getattr(self.config, "agent_uid", DEFAULT_AGENT_UID), takes_self=True)
    )

    def _mounts(self, group: Group, endpoints: SessionEndpoints) -> list[BindMount]:
        cfg = self.config
        group_dir = (cfg.groups_dir / group.folder).resolve()
        session_dir = (cfg.state_dir / "sessions" / group.folder).resolve()
        session_dir.mkdir(parents=True, exist_ok=True)
        share_dir(session_dir, self.agent_uid)
        global_dir = cfg.global_dir.resolve()
        global_dir.mkdir(parents=True, exist_ok=True)
        share_dir(global_dir, self.agent_uid)  # main writes it; the others read it
        mounts = [
            BindMount(str(group_dir), "/workspace/group", read_only=False),
            BindMount(str(global_dir), "/workspace/global", read_only=not group.is_main),
            BindMount(str(session_dir), "/home/agent/.claude", read_only=False),
            *endpoints.mounts,
        ]
        if group.mounts:
            try:
                allowlist = load_allowlist(Path(cfg.mount_allowlist).expanduser())
            except Exception as exc:  # noqa: BLE001 - a bad allowlist refuses extras, never the container
                log.error("mounts: allowlist %s unusable, extra mounts refused: %s", cfg.mount_allowlist, exc)
                return mounts
            allowed, refused = resolve_mounts(
                list(group.mounts),
                allowlist,
                folder=group.folder,
                is_main=group.is_main,
                forbidden_roots=default_forbidden_roots(cfg),
            )
            for r in refused:
                log.warning("mounts: group %s: refused %s: %s", group.folder, r.request.host_path, r.reason)
            mounts += [BindMount(str(m.host_path), m.container_path, m.read_only) for m in allowed]
        return mounts

    @asynccontextmanager
    async def session(self, group: Group) -> AsyncIterator[AgentStream]:
        # The body runs inside this launcher's nursery; give the caller its own exception back,
        # not a one-element ExceptionGroup.
        try:
            async with self._session(group) as conn:
                yield conn
        except BaseExceptionGroup as group_exc:
            single = errors.single(group_exc)
            if single is None:
                raise
            raise single from None

    @asynccontextmanager
    async def _session(self, group: Group) -> AsyncIterator[AgentStream]:
        try:
            async with self.transport.open(group.folder) as endpoints:
                async with self._container(group, endpoints) as conn:
                    yield conn
        except OSError as exc:
            raise TurnFailed(f"the group's endpoints cannot be made private: {exc}") from exc

    @asynccontextmanager
    async def _container(self, group: Group, endpoints: SessionEndpoints) -> AsyncIterator[AgentStream]:
        cfg = self.config
        placeholder = "ngb-placeholder-" + secrets.token_urlsafe(24)
        folder = group.folder
        container_id: str | None = None
        conn: AgentStream | None = None
        async with trio.open_nursery() as nursery:
            try:
                control = await endpoints.listener("control")
                await nursery.start(
                    partial(serve_requests, agent_uid=self.agent_uid),
                    await endpoints.listener("requests"),
                    lambda: self._current_group(folder) or group,
                    self.tools,
                )
                await nursery.start(self.proxy.serve_group, folder, await endpoints.listener("model"), placeholder)
                web_env: dict[str, str] = {}
                if self.web_door is not None:
                    await nursery.start(
                        self.web_door.serve_group, folder, await endpoints.listener("web"),
                        lambda: rules_for(self._current_group(folder) or group, cfg),
                    )
                    mode = rules_for(self._current_group(folder) or group, cfg).mode
                    web_env = web_environment(mode, _copy_extra_ca(cfg, cfg.run_dir / folder))
                spec = ContainerSpec(
                    image=cfg.image,
                    folder=folder,
                    mounts=self._mounts(group, endpoints),
                    environment={
                        "NGB_GROUP": folder,
                        "NGB_IS_MAIN": "1" if group.is_main else "0",
                        "NGB_MODEL_PORT": str(MODEL_PORT),
                        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{MODEL_PORT}",
                        "ANTHROPIC_API_KEY": placeholder,
                        "HOME": "/home/agent",
                        "CLAUDE_CONFIG_DIR": "/home/agent/.claude",
                        "TZ": host_timezone(),
                        **endpoints.environment,
                        **web_env,
                    },
                    memory=cfg.container_memory,
                    pids=cfg.container_pids,
                    cpus=cfg.container_cpus,
                    network=cfg.container_network,
                    user=container_user(self.agent_uid),
                )
                container_id = await self._start(spec)
                conn = await self._accept(control, endpoints, container_id, nursery, folder)
                try:
                    yield conn
                finally:
                    with trio.CancelScope(shield=True):
                        with trio.move_on_after(3):
                            if conn.exit_info is None:
                                try:
                                    await conn.send(Stop())
                                    with trio.move_on_after(2):
                                        while await conn.receive() is not None:
                                            pass
                                except TurnFailed:
                                    pass  # already gone
            finally:
                with trio.CancelScope(shield=True):
                    if container_id is not None:
                        info = await self.runtime.stop_and_remove(container_id, grace=2)
                        if conn is not None and conn.exit_info is None:
                            conn.exit_info = info
                    nursery.cancel_scope.cancel()

    async def _start(self, spec: ContainerSpec) -> str:
        """Start the container. An engine that does not answer (restarting for an upgrade, or after
        a crash) is not the turn's fault: wait up to ENGINE_WAIT for it before giving up. Any other
        failure (image missing, bad mount) fails the turn at once."""
        deadline = trio.current_time() + ENGINE_WAIT
        while True:
            try:
                return await self.runtime.start(spec)
            except Exception as exc:  # noqa: BLE001 - image missing, engine down, bad mount
                if not self.runtime.unreachable(exc) or trio.current_time() >= deadline:
                    raise TurnFailed(f"the agent container could not start: {exc}") from exc
                log.warning("launcher: the Docker engine does not answer (%s); waiting for it", exc)
                await trio.sleep(1.0)
                await self.runtime.wait_reachable(max(0.0, deadline - trio.current_time()))

    async def _accept(
        self, control: trio.SocketListener, endpoints: SessionEndpoints, container_id: str, nursery: trio.Nursery,
        folder: str = "?",
    ) -> AgentStream:
        """Wait for the runner to connect and say hello, or for the container to die trying."""
        exited: list[ExitInfo] = []
        accepted: list[trio.SocketStream] = []
        with trio.move_on_after(self.config.start_timeout if hasattr(self.config, "start_timeout") else 60) as scope:
            async with trio.open_nursery() as race:

                async def watch() -> None:
                    exited.append(await self.runtime.wait(container_id))
                    race.cancel_scope.cancel()

                async def accept() -> None:
                    while True:
                        stream = await control.accept()
                        if endpoints.admits(stream):
                            break
                        log.warning("control[%s]: a connection from another peer than the agent was refused", folder)
                        await stream.aclose()  # nothing read from it
                    accepted.append(stream)
                    race.cancel_scope.cancel()

                race.start_soon(watch)
                race.start_soon(accept)
        await control.aclose()
        if not accepted:
            if exited:
                raise TurnFailed(f"the agent container exited before connecting ({exited[0].describe()})")
            raise TurnFailed("the agent did not connect in time" if scope.cancelled_caught else "the agent did not connect")
        conn = AgentStream(container_id, accepted[0])
        with trio.move_on_after(30):
            hello = await conn.receive()
            if isinstance(hello, Hello) and hello.version != PROTOCOL_VERSION:
                raise TurnFailed(f"the agent speaks protocol version {hello.version}, this daemon {PROTOCOL_VERSION}: "
                                 "rebuild the agent image (ngb doctor)")
            if isinstance(hello, Hello):

                async def watch_exit() -> None:
                    info = await self.runtime.wait(container_id)
                    conn.exit_info = info
                    await trio.sleep(0.5)  # let buffered frames be read first
                    conn.closed = True
                    await accepted[0].aclose()

                nursery.start_soon(watch_exit)
                return conn
        raise TurnFailed("the agent connected but did not say hello")


EXTRA_CA = "extra-ca.pem"


def web_environment(mode: WebMode, extra_ca: str | None) -> dict[str, str]:
    """The container's environment for the egress door: every program's proxy is the runner's web
    port; only the model forwarder's own address goes direct ("localhost" and every other name go
    through the door, which resolves and checks them). NGB_WEB_MODE is the group's mode when the
    container starts: with "off" the runner offers no browser tools (a later change of the mode
    reaches the door at once, the tool list with the next container)."""
    proxy = f"http://127.0.0.1:{WEB_PORT}"
    env = {
        "NGB_WEB_PORT": str(WEB_PORT),
        "NGB_WEB_MODE": str(mode),
        "HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy, "https_proxy": proxy,
        "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
    }  # fmt: skip
    if extra_ca is not None:
        env["NODE_EXTRA_CA_CERTS"] = f"/run/ngb/{extra_ca}"
    return env


def _copy_extra_ca(cfg: Any, run_dir: Path) -> str | None:
    """The web_extra_ca_file setting's certificates, copied into the group's run folder (mounted
    read-only at /run/ngb) for the container's CLI to trust; None when none is set or it cannot be read."""
    source = getattr(cfg, "web_extra_ca_file", None)
    if source is None:
        return None
    try:
        data = Path(source).expanduser().read_bytes()
    except OSError as exc:
        log.error("web: web_extra_ca_file %s cannot be read (%s); the agent trusts only the public CAs", source, exc)
        return None
    if b"-----BEGIN CERTIFICATE-----" not in data or b"PRIVATE KEY" in data:
        log.error("web: web_extra_ca_file %s is not a PEM file of certificates only; not used", source)
        return None
    target = run_dir / EXTRA_CA
    target.write_bytes(data)
    target.chmod(0o644)
    return EXTRA_CA
