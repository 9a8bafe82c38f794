"""The daemon: one trio nursery tree (docs/architecture.md draws it in full).

    root nursery
    ├─ supervisor   (GroupActors)
    ├─ outbox sender
    ├─ scheduler    (due tasks -> the owning group's actor; see ngb/tasks/scheduler.py)
    ├─ channels     (the local chat and every platform of ngb/channels/registry.py)
    └─ web          (hypercorn + quart-trio; it sees this daemon as ngb/web/backend.WebBackend)

Shutdown: the first SIGTERM/SIGINT stops intake, lets running turns finish up to the grace period,
stops containers and flushes the store; a second signal exits at once.
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from . import __version__
from .activity import Activity
from .actor import ActorMedia, ActorSettings, ActorView, GroupActor
from .actor_commands import Wake, WakeReason
from .agent_link import Launcher
from .api_token import WebToken, ensure_api_token, login_link
from .budgets import Budgets
from .channels import build_channels
from .channels.base import Channel
from .channels.local import local_chat
from .config import Config
from .events import ChatEvents
from .groups import GroupRegistry
from .hostperms import PRIVATE_UMASK, tighten_state
from .media.files import MediaFiles
from .media.handoff import Handoff
from .media.intake import MediaIntake
from .media.limits import limits_from_config
from .media.outgoing import Outgoing
from .media.retention import sweep_forever
from .metrics import Metrics
from .ops.backup import StateLock, daemon_holding
from .ops.sdnotify import run_notifier
from .outbox import OutboxSender
from .pairing import Pairings
from .plugins import PluginManager
from .previews import Previews
from .reactions import AckReactions
from .records import Group, Message, channel_of
from .router import Router, UnregisteredQuota
from .sandbox.model_proxy import ModelProxy, Usage
from .sandbox.tools import ToolContext, ToolService
from .sandbox.web_door import WebDoor, WebLimits
from .sandbox.web_policy import WebRules, rules_for
from .store import Store
from .supervisor import Supervisor
from .tasks.scheduler import Scheduler
from .turn_metrics import TurnMetrics
from .typing_indicator import TypingIndicator

log = logging.getLogger(__name__)

MAIN_FOLDER = "main"


class StateDirBusy(RuntimeError):
    """Another daemon holds this state directory's lock."""


class Daemon:
    """Owns every long-lived service; `run()` is the root of the nursery tree."""

    def __init__(self, config: Config, *, launcher_factory: Callable[[Daemon], Launcher] | None = None) -> None:
        self.config = config
        self.started_at = time.time()
        self.metrics = Metrics()
        self.store = Store(config.db_path)
        self.events = ChatEvents()
        self.registry = GroupRegistry(self.store, config.groups_dir, config.global_dir, agent_uid=config.agent_uid)
        self.slots = trio.CapacityLimiter(config.max_containers)
        self.media_files = MediaFiles(config.media_dir)  # the bytes of every attachment (docs/media.md)
        self.media_limits = limits_from_config(config)
        self.media = MediaIntake(self.media_files, self.media_limits, chat_bytes=self.store.chat_media_bytes)
        self.channels: dict[str, Channel] = build_channels(config, memory=self.store, media=self.media,
                                                           local_previews=self.events.publish)
        self.plugins = PluginManager(config)  # docs/plugins.md
        self.plugins.load()
        self.channels.update(self.plugins.build_channels(config, taken=self.channels))
        self.outbox = OutboxSender(
            self.store, self.channels, assistant_name=config.assistant_name, on_delivered=self._delivered,
            files=self.media_files,
        )
        self.previews = Previews(self.channels, interval=config.preview_interval,
                                 on_edit=lambda channel: self.metrics.preview_edits.labels(channel).inc())
        self.supervisor = Supervisor(self._make_actor, on_crash=self._actor_crashed)
        self.pairings = Pairings(self.store, self.registry, notify=lambda chat, text: self._notify("", chat, text),
                                 config=config)
        self.typing = TypingIndicator(self.channels, self._chat_of)
        self.reactions = AckReactions(self.channels, self._chat_of, ack=config.ack_reaction, done=config.done_reaction,
                                      failed=config.failed_reaction)
        self.router = Router(
            self.store,
            self.registry,
            self.events,
            wake=lambda folder, mid: self.supervisor.wake(folder, Wake(WakeReason.MESSAGE, mid)),
            notify=self._notify,
            trigger=config.trigger,
            max_message_chars=config.max_message_chars,
            sender_rate_per_minute=config.sender_rate_per_minute,
            group_rate_per_minute=config.group_rate_per_minute,
            on_routed=self._routed,
            unregistered=UnregisteredQuota(
                config.unregistered_per_chat_per_hour, config.unregistered_per_hour, config.unregistered_keep
            ),
            on_dropped=lambda chat: self.metrics.unregistered_dropped.labels(channel_of(chat)).inc(),
            on_direct=self.pairings.direct_message,
        )
        self.scheduler = Scheduler(self.store, lambda folder: self.supervisor.wake(folder, Wake(WakeReason.TASK)))
        self.outgoing = Outgoing(self.media_files, self.media_limits, config.groups_dir)
        self.tools = ToolService(
            ToolContext(
                self.store,
                self.registry,
                self.outbox.wake,
                config.trigger,
                min_interval=config.min_task_interval,
                on_tasks_changed=self.scheduler.poke,
                plugins=self.plugins,
                outgoing=self.outgoing,
                sends_per_turn=self.media_limits.sends_per_turn,
                pairings=self.pairings,
                react=self.reactions.react_current,
            )
        )
        self.actor_media = ActorMedia(
            handoff=Handoff(self.media_files, self.media_limits, config.groups_dir, agent_uid=config.agent_uid,
                            save_transcript=self.store.set_transcript),
            outgoing=self.outgoing,
            new_turn=self._new_turn,
        )
        self.web_door = WebDoor(
            WebLimits.from_config(config),
            day_bytes=self._web_day_bytes,
            on_request=self.metrics.web_request,
            agent_uid=config.agent_uid,
        )
        self.budgets = Budgets(self.store, config, notify=self._budget_notice)
        self.proxy = ModelProxy(
            config.model_upstream,
            config.anthropic_api_key,
            retries=config.model_retries,
            stall_timeout=config.model_stall_timeout,
            max_body=config.model_max_body_bytes,
            on_refused=lambda group, reason: self.metrics.model_proxy_refused.labels(group, reason).inc(),
            on_usage=self._usage,
            admit=self.budgets.admit,
            web_rules=self._web_rules,
        )
        self._launcher_factory = launcher_factory
        self.launcher: Launcher | None = None
        self.runtime: Any = None
        self.daemon_id = ""  # set by open() from the store (the ngb.owner label of our containers)
        self.ready = trio.Event()
        self.web_token: WebToken | None = None  # the web API's token, set by run() (ngb/api_token.py)
        self.stopped = trio.Event()  # set when run() has ended and let go of the state dir
        self.last_error: str | None = None
        self.shutting_down = False
        self.activity = Activity(self.store)  # the dashboard's charts (ngb/activity.py)
        self.turn_metrics = TurnMetrics(
            self.metrics, lambda: sum(1 for h in self.supervisor.actors.values() if h.view.container_id), self.activity
        )
        self._root: trio.Nursery | None = None
        self.registry.on_added.append(self._group_added)
        self.registry.on_removed.append(self._group_removed)
        self.registry.on_updated.append(self.supervisor.update_group)

    # -- wiring ----------------------------------------------------------------------------
    def _default_launcher(self) -> Launcher:  # Docker and unix sockets: ngb/sandbox/compose.py
        from .sandbox.compose import local_launcher

        self.runtime, launcher = local_launcher(self.config, self.daemon_id, proxy=self.proxy, tools=self.tools,
                                                web_door=self.web_door, current_group=self.registry.by_folder)
        return launcher

    def _new_turn(self, folder: str) -> None:
        """A group's turn began: its per-turn counts (files sent, web bytes) start again."""
        self.tools.new_turn(folder)
        self.web_door.new_turn(folder)

    def _web_rules(self, folder: str) -> WebRules | None:
        """A group's web rules now (the model proxy applies them to the model's own web tools)."""
        group = self.registry.by_folder(folder)
        return None if group is None else rules_for(group, self.config)

    async def _web_day_bytes(self, folder: str, day: str) -> int:
        return int(await self.store.web_bytes_on(folder, day))

    def _make_actor(self, group: Group, view: ActorView) -> GroupActor:
        assert self.launcher is not None
        current = self.registry.get(group.chat) or group
        return GroupActor(
            current,
            store=self.store,
            launcher=self.launcher,
            slots=self.slots,
            settings=ActorSettings.from_config(self.config),
            outbox_wake=self.outbox.wake,
            view=view,
            on_event=lambda kind, data: self._actor_event(group.folder, kind, data),
            draining=lambda: self.supervisor.draining,
            plugins=self.plugins,
            budgets=self.budgets,
            media=self.actor_media,
            previews=self.previews,
            make_room=self.supervisor.make_room,
        )

    async def _start_agents(self) -> None:
        """The launcher (Docker's client is imported here, off the path to a serving web), the
        cleanup of containers an earlier run left, then one actor per registered group."""
        self.launcher = self._launcher_factory(self) if self._launcher_factory else self._default_launcher()
        if self.runtime is not None:
            try:
                await self.runtime.cleanup_orphans()
            except Exception as exc:  # noqa: BLE001 - the chat still works; turns report the problem
                self.last_error = f"docker: {exc}"
                log.error("runtime: cannot clean up orphaned containers: %s", exc)
        for group in self.registry.all():
            self.supervisor.start_actor(group)

    def _group_added(self, group: Group) -> None:
        if self.supervisor.running and self.launcher is not None:  # else _start_agents starts it
            self.supervisor.start_actor(group)

    def _chat_of(self, folder: str) -> str | None:
        group = self.registry.by_folder(folder)
        return group.chat if group is not None else None

    def _group_removed(self, group: Group) -> None:
        if self._root is not None:
            self._root.start_soon(self.supervisor.stop_actor, group.folder)

    def _notify(self, folder: str, chat: str, text: str) -> None:
        async def queue() -> None:
            await self.store.queue_message(folder, chat, text)
            self.outbox.wake()

        if self._root is not None:
            self._root.start_soon(queue)

    def _routed(self, message: Message, outcome: str) -> None:
        self.plugins.message_stored(message)  # every new inbound message, once, after its commit
        self.metrics.messages_in.labels(channel_of(message.chat)).inc()
        self.turn_metrics.routed(message, outcome)
        self.activity.message_in(self.registry.folder_of(message.chat))

    def _delivered(self, message: Message) -> None:
        self.events.publish(message)
        self.plugins.reply_delivered(self.registry.get(message.chat), message)
        self.metrics.messages_out.labels(channel_of(message.chat)).inc()
        self.activity.message_out(self.registry.folder_of(message.chat))

    def _usage(self, group: str, usage: Usage) -> None:
        self.metrics.model_tokens.labels(group, "input").inc(usage.input_tokens)
        self.metrics.model_tokens.labels(group, "output").inc(usage.output_tokens)
        self.activity.cost(group, self.budgets.record(group, usage))

    def _budget_notice(self, folder: str, text: str) -> None:
        group = self.registry.by_folder(folder)
        if group is not None:
            self._notify(group.folder, group.chat, text)

    def turn_running_since(self, folder: str) -> float | None:
        """When the group's oldest open batch went to its agent (trio clock), or None."""
        return self.turn_metrics.running_since(folder)

    def _actor_crashed(self, folder: str, exc: BaseException) -> None:
        self.metrics.actor_restarts.labels(folder).inc()
        self.metrics.errors.labels("actor_crash").inc()
        self.last_error = f"actor {folder}: {type(exc).__name__}: {exc}"

    def _actor_event(self, folder: str, kind: str, data: dict[str, Any]) -> None:
        self.typing.event(folder, kind, data)
        self.reactions.event(folder, kind, data)
        self.turn_metrics.event(folder, kind, data)

    # -- life ------------------------------------------------------------------------------
    async def open(self) -> None:
        """Open the state and make sure the main local chat exists on a fresh install."""
        for path in (self.config.state_dir, self.config.groups_dir, self.config.global_dir, self.config.run_dir):
            path.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        db = self.config.db_path  # an older install's 0755 folder and 0644 database: closed now
        tighten_state(self.config.state_dir, [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")])
        await self.registry.load()
        if await self.store.meta("seeded") is None:
            if self.registry.get(self.config.main_chat) is None and self.registry.main() is None:
                await self.registry.add(Group(chat=self.config.main_chat, folder=MAIN_FOLDER, is_main=True))
            await self.store.ensure_chat(local_chat("main"), "main")
            await self.store.set_meta("seeded", "1")
        # Who started a container (its ngb.owner label): one id per state directory, kept with the
        # state, so two daemons on one host never touch each other's containers (ngb/sandbox/runtime.py).
        self.daemon_id = await self.store.meta("daemon_id") or ""
        if not self.daemon_id:
            self.daemon_id = secrets.token_hex(8)
            await self.store.set_meta("daemon_id", self.daemon_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from .web.app import serve_web

        # Everything the daemon creates is its own (ngb/hostperms.py); restored when run() ends.
        umask = os.umask(PRIVATE_UMASK)
        try:
            await self._run(serve_web, task_status)
        finally:
            os.umask(umask)

    async def _run(self, serve_web: Any, task_status: trio.TaskStatus[None]) -> None:
        # One daemon per state directory: two would each run an actor per group and answer every
        # message twice. (`ngb restore` refuses while the lock is held, too.)
        self.state_lock = StateLock(self.config.run_dir)
        if not self.state_lock.acquire():
            holder = daemon_holding(self.config.run_dir) or "another process"
            raise StateDirBusy(
                f"another daemon ({holder}) already runs on {self.config.state_dir}; stop it first "
                "(systemctl stop nanogridbot), or give this one its own state_dir"
            )
        self.plugins.host.store, self.plugins.host.outbox_wake = self.store, self.outbox.wake
        await self.open()
        self.web_token = ensure_api_token(self.config)
        try:
            async with trio.open_nursery() as root:
                self._root = root
                root.start_soon(self._signals, root)
                await root.start(run_notifier, self.ready)
                await root.start(self.budgets.run)  # before any container can use the model
                await root.start(self.activity.run)
                await root.start(self.previews.run)
                await root.start(self.supervisor.run)
                await root.start(self.outbox.run)
                await root.start(self.plugins.run)
                await root.start(self.typing.run)
                await root.start(self.reactions.run)
                for channel in self.channels.values():
                    await root.start(channel.run, self.router.handle)
                # The web before the container side: status and the chat answer while the engine
                # is slow to answer (or absent); what arrives meanwhile is stored and waits.
                await root.start(serve_web, self)
                await self._start_agents()
                await root.start(self.scheduler.run)
                root.start_soon(partial(self.turn_metrics.sample_forever, self.store, self.channels, self.media,
                                        self.actor_media.handoff))
                root.start_soon(self.web_door.recorder.run, self.store.record_web)
                root.start_soon(partial(sweep_forever, self.media_files, self.media_limits.retention_days,
                                        expire=self.store.expire_attachments, needed=self.store.needed_hashes))
                gc.freeze()  # the start-up heap (every actor): full collections no longer walk it (docs/scaling.md)
                self.ready.set()
                log.info("NanoGridBot %s ready: chat at %s", __version__, login_link(self.config, self.web_token))
                task_status.started()
        finally:
            self._root = None
            with trio.CancelScope(shield=True):
                with trio.move_on_after(5):  # the web requests the recorder had not written yet
                    await self.web_door.recorder.flush(self.store.record_web)
                await self.store.close()
            self.state_lock.release()
            self.stopped.set()
            log.info("NanoGridBot stopped")

    async def _signals(self, root: trio.Nursery) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if self.shutting_down:
                    log.warning("second signal: exiting now")
                    os._exit(1)
                log.info("%s: stopping intake, finishing running turns (up to %gs)", signal.Signals(signum).name, self.config.shutdown_grace)
                root.start_soon(self.shutdown, root)

    async def shutdown(self, root: trio.Nursery) -> None:
        self.shutting_down = True
        self.router.accepting = False
        self.supervisor.begin_drain()
        with trio.move_on_after(self.config.shutdown_grace):
            await self.supervisor.wait_idle()  # running turns finish; nothing new starts
            if any(c.state == "connected" for c in self.channels.values()):
                with trio.move_on_after(2):  # let the last replies reach the outbox's channels
                    await self.outbox.wait_idle()
        root.cancel_scope.cancel()
