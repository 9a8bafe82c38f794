"""/healthz, /status, /metrics and /debug/actors: what the daemon is doing, without reading logs.

Numbers that cost a database query (outbox depth, unanswered messages) come from a small cache
that refreshes at most once per `SAMPLE_TTL` seconds with a single query in flight, so fifty
dashboards or scrapers polling at once add one query a second to the store, not fifty.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio
from quart import Response, request
from quart_trio import QuartTrio

from .. import __version__
from ..records import parse_time, utcnow
from . import queries
from .api_channels import channel_json
from .common import ApiError

if TYPE_CHECKING:
    from .backend import WebBackend

SAMPLE_TTL = 1.0
SNAPSHOT_TTL = 0.25  # /status and /metrics bodies are shared by the requests of a quarter second


class Cached:
    """An async value refreshed at most every `ttl` seconds, one refresh at a time."""

    def __init__(self, fetch: Callable[[], Awaitable[Any]], ttl: float = SAMPLE_TTL) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._value: Any = None
        self._at = -1e9
        self._lock = trio.Lock()

    async def get(self) -> Any:
        if trio.current_time() - self._at < self._ttl:
            return self._value
        async with self._lock:
            if trio.current_time() - self._at >= self._ttl:
                self._value = await self._fetch()
                self._at = trio.current_time()
        return self._value


ALL_GROUPS = "(all)"  # the group label of the daemon's total in ngb_budget_* (no folder has that name)


def budget_figures(daemon: WebBackend, folders: list[str]) -> dict[tuple[str, str], tuple[float, float | None]]:
    """(group, period) -> (spent, cap or None) for ngb_budget_spent_usd / ngb_budget_cap_usd: the
    total always, a group where it spent something or has a cap (1,000 idle groups add no series)."""
    summary = daemon.budgets.summary(folders)
    out: dict[tuple[str, str], tuple[float, float | None]] = {}
    for group, data in [*summary["groups"].items(), (ALL_GROUPS, summary["total"])]:
        for period, spent, cap in (("day", data["today"]["cost_usd"], data["daily_cap_usd"]),
                                   ("month", data["month"]["cost_usd"], data["monthly_cap_usd"])):
            if group == ALL_GROUPS or spent or cap:
                out[(group, period)] = (float(spent), cap)
    return out


def disk_figures(daemon: WebBackend) -> tuple[int, int] | None:
    """(free, size) bytes of the state directory's file system, or None when it cannot be read."""
    try:
        usage = shutil.disk_usage(daemon.config.state_dir)
    except OSError:
        return None
    return usage.free, usage.total


def usage_json(daemon: WebBackend) -> dict[str, Any] | None:
    """Model usage and cost per group and in total, today and this month, with the caps in force
    (from the budgets' in-memory tallies: every response counted so far, no query)."""
    budgets = getattr(daemon, "budgets", None)
    if budgets is None:
        return None
    return budgets.summary(g.folder for g in daemon.registry.all())


BRIEF_USAGE = 20  # groups whose usage the brief status lists (the top spenders this month)


def top_spenders(usage: dict[str, Any], count: int) -> dict[str, Any]:
    """The usage part with its ``count`` biggest spenders this month (then today) only."""
    groups = usage.get("groups") or {}
    ranked = sorted(groups.items(), key=lambda kv: (-kv[1]["month"]["cost_usd"], -kv[1]["today"]["cost_usd"], kv[0]))
    return {**usage, "groups": dict(ranked[:count]), "groups_listed": min(count, len(groups)), "groups_total": len(groups)}


def live_containers(daemon: WebBackend) -> int:
    return sum(1 for h in daemon.supervisor.actors.values() if h.view.container_id)


def slots_in_use(daemon: WebBackend) -> int:
    return int(daemon.slots.borrowed_tokens)


def actor_json(daemon: WebBackend, folder: str, pending: dict[str, Any] | None = None) -> dict[str, Any]:
    """One actor as /debug/actors shows it. Only the view, counters and task names: no secrets
    (the view never holds credentials, and the group's mounts are not included)."""
    handle = daemon.supervisor.actors[folder]
    view = handle.view
    now = trio.current_time()
    data = to_json_view(view)
    data["inbox_depth"] = handle.inbox_depth()
    data["container_age_seconds"] = round(now - view.container_started, 2) if view.container_started else None
    data["slot_wait_seconds"] = round(now - view.slot_wait_started, 2) if view.slot_wait_started else None
    since = daemon.turn_running_since(folder)
    data["current_turn"] = (
        {
            "batches": data["current_batches"],
            "up_to_message": max(view.current_batches.values()) if view.current_batches else None,
            "running_seconds": round(now - since, 2) if since is not None else None,
        }
        if view.current_batches
        else None
    )
    if pending is not None:
        oldest = pending.get("oldest_unanswered")
        data["unanswered_messages"] = pending.get("unanswered", 0)
        data["oldest_message_age_seconds"] = (
            round((utcnow() - parse_time(oldest)).total_seconds(), 2) if oldest else None
        )
        data["cursor"] = pending.get("cursor")
        data["stored_session_id"] = pending.get("stored_session_id")
    data["task_tree"] = task_tree(handle.task) if handle.task is not None else None
    return data


def to_json_view(view: Any) -> dict[str, Any]:
    data = attrs.asdict(view)
    data.pop("container_started", None)
    data.pop("slot_wait_started", None)
    data["current_batches"] = {str(k): v for k, v in view.current_batches.items()}
    return data


def task_tree(task: trio.lowlevel.Task, depth: int = 0) -> dict[str, Any]:
    node: dict[str, Any] = {"name": task.name}
    children = [t for n in task.child_nurseries for t in n.child_tasks]
    if children and depth < 8:
        node["children"] = [task_tree(t, depth + 1) for t in children]
    return node


def register(app: QuartTrio, daemon: WebBackend) -> dict[str, Cached]:
    metrics = daemon.metrics
    metrics.info.info({"version": __version__})
    metrics.sampled_counter(
        "ngb_store_write_retries", "Database writes retried after a transient error", lambda: daemon.store.write_errors
    )
    outbox = Cached(lambda: queries.outbox_counts(daemon.store))

    async def unanswered_fetch() -> dict[str, dict[str, Any]]:
        chats = {f: h.group.chat for f, h in list(daemon.supervisor.actors.items())}
        return await queries.pending_summary(daemon.store, chats)

    pending = Cached(unanswered_fetch)

    async def safe(cache: Cached, default: Any) -> Any:
        try:
            return await cache.get()
        except Exception:  # noqa: BLE001 - status must answer even when the store is down
            return default

    @app.get("/healthz")
    async def healthz() -> Any:
        problems = []
        if not daemon.supervisor.running:
            problems.append("supervisor not running")
        try:
            with trio.fail_after(2):
                await daemon.store.ping()
        except trio.TooSlowError:
            problems.append("store: no answer within 2s")
        except Exception as exc:  # noqa: BLE001 - report, never raise
            problems.append(f"store: {exc}")
        if daemon.shutting_down:
            problems.append("shutting down")
        if problems:
            return {"ok": False, "reason": "; ".join(problems)}, 503
        return {"ok": True}

    async def status_body(brief: bool = False) -> dict[str, Any]:
        """The status; ``brief`` (the dashboard's, every second) leaves out what grows with the
        groups: the group list, the inboxes and all but the BRIEF_USAGE top spenders' usage."""
        actors = list(daemon.supervisor.actors.items())
        box = await safe(outbox, {"pending": None, "failed": None, "retrying": None})
        states = Counter(h.view.state for _, h in actors)
        body: dict[str, Any] = {
            "version": __version__,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(daemon.started_at)),
            "uptime_seconds": round(time.time() - daemon.started_at, 1),
            "shutting_down": daemon.shutting_down,
            "channels": {name: channel_json(c) for name, c in daemon.channels.items()},
            "groups": [
                {
                    "chat": g.chat,
                    "folder": g.folder,
                    "is_main": g.is_main,
                    "requires_trigger": g.requires_trigger,
                    "state": (daemon.supervisor.actors[g.folder].view.state if g.folder in daemon.supervisor.actors else None),
                }
                for g in daemon.registry.all()
            ],
            "containers": {"live": live_containers(daemon), "cap": daemon.config.max_containers, "slots_in_use": slots_in_use(daemon)},
            "actors": dict(states),
            "queues": {
                "outbox": box["pending"],
                "outbox_failed": box["failed"],
                "outbox_retrying": box["retrying"],
                "inboxes": {f: h.inbox_depth() for f, h in actors},
                "waiting_for_slot": states.get("waiting_slot", 0),
            },
            "outbox_retries": daemon.outbox.retries,
            "delivered": daemon.outbox.delivered,
            "last_error": daemon.last_error,
            "usage": usage_json(daemon),
            "plugins": daemon.plugins.plugins,
        }
        if brief:
            del body["groups"], body["queues"]["inboxes"]
            body["groups_registered"] = len(daemon.registry.all())
            if body["usage"] is not None:
                body["usage"] = top_spenders(body["usage"], BRIEF_USAGE)
        return body

    async def status_encoded(brief: bool = False) -> bytes:
        return (app.json.dumps(await status_body(brief)) + "\n").encode()

    # The encoded body is what is shared: fifty dashboards polling cost one encoding per snapshot.
    status_snapshot = Cached(status_encoded, ttl=SNAPSHOT_TTL)
    brief_snapshot = Cached(lambda: status_encoded(brief=True), ttl=SNAPSHOT_TTL)

    @app.get("/status")
    async def status() -> Any:
        snapshot = brief_snapshot if request.args.get("brief") in ("1", "true") else status_snapshot
        return Response(await snapshot.get(), content_type="application/json")

    async def metrics_body() -> bytes:
        actors = list(daemon.supervisor.actors.items())
        box = await safe(outbox, None)
        summary = await safe(pending, None)
        metrics.refresh(
            live_containers=live_containers(daemon),
            cap=daemon.config.max_containers,
            slots_in_use=slots_in_use(daemon),
            actor_states=Counter(h.view.state for _, h in actors),
            inbox_depths={f: depth for f, h in actors if (depth := h.inbox_depth())},  # 0 where absent
            channels={name: c.state for name, c in daemon.channels.items()},
            outbox=box,
            unanswered={f: v["unanswered"] for f, v in summary.items() if v["unanswered"]} if summary else None,
            outbox_retries=daemon.outbox.retries,
            budgets=budget_figures(daemon, []),  # the groups that spent (the tallies), and the total
            disk=disk_figures(daemon),
        )
        # encoded in a worker thread: with 1,000 groups it is tens of ms the loop would stall for
        return await trio.to_thread.run_sync(metrics.render)

    metrics_snapshot = Cached(metrics_body, ttl=SNAPSHOT_TTL)

    @app.get("/metrics")
    async def metrics_route() -> Any:
        return Response(await metrics_snapshot.get(), content_type="text/plain; version=0.0.4; charset=utf-8")

    async def summaries() -> dict[str, dict[str, Any]]:
        chats = {f: h.group.chat for f, h in list(daemon.supervisor.actors.items())}
        try:
            return await queries.pending_summary(daemon.store, chats)
        except Exception:  # noqa: BLE001 - the in-memory part is still worth showing
            return {}

    @app.get("/debug/actors")
    async def debug_actors() -> Any:
        """Every actor; ``?folders=a,b`` those only, ``?active=1`` those with a container, work
        queued or not idle (the dashboard asks for what it shows, not for 1,000 actors)."""
        summary = await summaries()
        handles = daemon.supervisor.actors
        folders = list(handles)
        if (wanted := request.args.get("folders")) is not None:
            keep = set(wanted.split(","))
            folders = [f for f in folders if f in keep]
        if request.args.get("active") in ("1", "true"):
            folders = [f for f in folders if handles[f].view.container_id or handles[f].view.state != "idle"
                       or handles[f].inbox_depth()]
        return [actor_json(daemon, folder, summary.get(folder)) for folder in folders]

    @app.get("/debug/actors/<folder>")
    async def debug_actor(folder: str) -> Any:
        if folder not in daemon.supervisor.actors:
            raise ApiError(404, f"no actor for group {folder!r}")
        summary = await summaries()
        data = actor_json(daemon, folder, summary.get(folder))
        data["thread_sessions"] = await daemon.store.thread_sessions(folder)  # a per_thread group's
        return data

    return {"outbox": outbox, "pending": pending, "status": status_snapshot, "metrics": metrics_snapshot}
