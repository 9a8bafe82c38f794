"""Groups and sessions.

    GET    /api/groups                   every registered group (the shape `ngb groups` reads)
    POST   /api/groups                   register a chat: GroupCreate -> 201 Group
    GET    /api/groups/<chat>            one group with its actor summary
    PATCH  /api/groups/<chat>            settings: GroupSettings (trigger, requires_trigger,
                                         allowed_senders, mounts, sender/group rate limits, web,
                                         web_allow, web_deny) -> Group
    DELETE /api/groups/<chat>            unregister (the folder stays on disk) -> Group
    GET    /api/senders?chat=<chat>      who wrote in a chat lately: id (what allow-lists take),
                                         name, count, last time, allowed by the group or not
    GET    /api/sessions                 folder -> stored session id
    DELETE /api/sessions/<folder>        forget the group's session: the next turn starts fresh
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs
from quart import request
from quart_trio import QuartTrio

from ..folders import validate_folder
from ..host_patterns import HostPatternError, parse_host_pattern
from ..identity import SenderIdError, id_allowed, normalise_sender_ids
from ..records import Group, ThreadMode, WebMode, to_json
from ..sandbox.web_policy import effective_mode
from .common import ApiError, check_text, int_arg, json_body, str_arg

if TYPE_CHECKING:
    from .backend import WebBackend

log = logging.getLogger(__name__)

MAX_SENDERS = 500
MAX_MOUNTS = 20
MAX_WEB_PATTERNS = 500
WEB_MODES = ", ".join(m.value for m in WebMode)


@attrs.frozen(kw_only=True)
class MountSpec:
    host_path: str
    container_name: str | None = None
    read_write: bool = False


@attrs.frozen(kw_only=True)
class GroupCreate:
    chat: str
    folder: str
    is_main: bool = False
    requires_trigger: bool = True
    trigger: str | None = None
    allowed_senders: list[str] = attrs.field(factory=list)
    mounts: list[MountSpec] = attrs.field(factory=list)
    sender_rate_per_minute: int | None = None
    group_rate_per_minute: int | None = None
    unlisted_context: bool = False
    web: str | None = None
    web_allow: list[str] = attrs.field(factory=list)
    web_deny: list[str] = attrs.field(factory=list)
    previews: bool | None = None  # null: the daemon's `previews`
    threads: str | None = None  # shared | per_thread; null: the daemon's `threads`


@attrs.frozen(kw_only=True)
class GroupSettings:
    """A PATCH body: only the keys present change; `trigger: null` means the daemon's trigger."""

    requires_trigger: bool | None = None
    trigger: str | None = None
    allowed_senders: list[str] | None = None
    mounts: list[MountSpec] | None = None
    sender_rate_per_minute: int | None = None
    group_rate_per_minute: int | None = None
    unlisted_context: bool | None = None
    web: str | None = None  # null: the daemon's default
    web_allow: list[str] | None = None
    web_deny: list[str] | None = None
    previews: bool | None = None  # null: the daemon's `previews`
    threads: str | None = None  # shared | per_thread; null: the daemon's `threads`


def thread_mode(value: str | None) -> ThreadMode | None:
    if value is None:
        return None
    try:
        return ThreadMode(value)
    except ValueError:
        raise ApiError(400, "'threads' must be shared, per_thread or null (the daemon's)") from None


def check_rate(key: str, value: int | None) -> int | None:
    """A per-group rate limit: null (the daemon's default), 0 (no limit) or 1-10000 a minute."""
    if value is not None and (isinstance(value, bool) or not 0 <= value <= 10_000):
        raise ApiError(400, f"'{key}' must be null, 0 (no limit) or a number of messages a minute up to 10000")
    return value


def check_settings(trigger: str | None, senders: list[str] | None, mounts: list[MountSpec] | None) -> None:
    if trigger is not None:
        check_text("trigger", trigger, max_len=50)
        if any(ch.isspace() for ch in trigger.strip()):
            raise ApiError(400, "'trigger' must be one word, e.g. @Andy")
    if senders is not None:
        if len(senders) > MAX_SENDERS:
            raise ApiError(400, f"'allowed_senders' has more than {MAX_SENDERS} entries")
        for s in senders:
            check_text("allowed_senders[]", s, max_len=200)
    if mounts is not None:
        if len(mounts) > MAX_MOUNTS:
            raise ApiError(400, f"'mounts' has more than {MAX_MOUNTS} entries")
        for m in mounts:
            check_text("mounts[].host_path", m.host_path, max_len=4096)
            if not m.host_path.startswith(("/", "~")):
                raise ApiError(400, "'mounts[].host_path' must be an absolute path (or start with ~)")
            if m.container_name is not None:
                check_text("mounts[].container_name", m.container_name, max_len=64)
                if "/" in m.container_name or m.container_name in (".", ".."):
                    raise ApiError(400, "'mounts[].container_name' must be a plain name")


def web_mode(value: str | None) -> WebMode | None:
    """A group's web mode: off, allowlist, open, or null (the daemon's default)."""
    if value is None:
        return None
    try:
        return WebMode(value)
    except ValueError:
        raise ApiError(400, f"'web' must be one of {WEB_MODES}, or null (the daemon's default); got {value[:50]!r}") from None


def web_patterns(key: str, items: list[str] | None) -> tuple[str, ...]:
    """Host patterns (example.com, *.example.com), normalized and without repeats; anything else
    (a URL, an address, a port, a misplaced '*') is a 400 saying what is wrong."""
    if not items:
        return ()
    if len(items) > MAX_WEB_PATTERNS:
        raise ApiError(400, f"'{key}' has more than {MAX_WEB_PATTERNS} entries")
    out: list[str] = []
    for item in items:
        check_text(f"{key}[]", item, max_len=300)
        try:
            pattern = parse_host_pattern(item)
        except HostPatternError as exc:
            raise ApiError(400, f"'{key}': {exc}") from None
        if pattern not in out:
            out.append(pattern)
    return tuple(out)


def record_json(daemon: WebBackend, group: Group) -> dict[str, Any]:
    """A group as the API shows it: its record and the web mode in force."""
    return {**to_json(group), "web_effective": str(effective_mode(group, daemon.config))}


def sender_ids(chat: str, senders: list[str]) -> tuple[str, ...]:
    """The allow-list as platform user ids (ngb/identity.py); a name is a 400."""
    try:
        return normalise_sender_ids(chat, senders)
    except SenderIdError as exc:
        raise ApiError(400, str(exc)) from None


def mount_dicts(mounts: list[MountSpec]) -> tuple[dict[str, Any], ...]:
    return tuple(attrs.asdict(m) for m in mounts)


async def apply_group(daemon: WebBackend, new: Group) -> None:
    """Store new settings and make the running daemon use them at once: the registry (the router
    reads it on every message), the actor (its trigger check) and the next container (mounts)."""
    await daemon.registry.update(new)  # the daemon hands it to the group's actor and wakes it


def group_json(daemon: WebBackend, group: Group) -> dict[str, Any]:
    data = record_json(daemon, group)
    handle = daemon.supervisor.actors.get(group.folder)
    data["effective_trigger"] = group.trigger or daemon.config.trigger
    data["actor"] = (
        {
            "state": handle.view.state,
            "container_id": handle.view.container_id,
            "session_id": handle.view.session_id,
            "turns": handle.view.turns,
            "crash_count": handle.view.crash_count,
        }
        if handle is not None
        else None
    )
    return data


def register(app: QuartTrio, daemon: WebBackend) -> None:
    def find(chat: str) -> Group:
        group = daemon.registry.get(chat)
        if group is None:
            raise ApiError(404, f"no group for chat {chat}")
        return group

    @app.get("/api/groups")
    async def groups() -> Any:
        """Every group; ``?q=`` those whose chat or folder holds it, ``?limit=&offset=`` one page
        (the total in ``X-Total-Count``)."""
        found = daemon.registry.all()
        if q := (request.args.get("q") or "").strip().lower():
            found = [g for g in found if q in g.chat.lower() or q in g.folder.lower()]
        total = len(found)
        offset = int_arg("offset", 0)
        limit = int_arg("limit", 0, hi=1000)
        page = found[offset: offset + limit] if limit else found[offset:]
        return [record_json(daemon, g) for g in page], 200, {"X-Total-Count": str(total)}

    @app.post("/api/groups")
    async def add_group() -> Any:
        body, _ = await json_body(GroupCreate)
        check_text("chat", body.chat, max_len=300)
        check_settings(body.trigger, body.allowed_senders, body.mounts)
        try:
            folder = validate_folder(body.folder)
            group = Group(
                chat=body.chat,
                folder=folder,
                is_main=body.is_main,
                requires_trigger=body.requires_trigger,
                trigger=body.trigger.strip() if body.trigger else None,
                allowed_senders=sender_ids(body.chat, body.allowed_senders),
                unlisted_context=bool(body.unlisted_context),
                mounts=mount_dicts(body.mounts),
                sender_rate_per_minute=check_rate("sender_rate_per_minute", body.sender_rate_per_minute),
                group_rate_per_minute=check_rate("group_rate_per_minute", body.group_rate_per_minute),
                web=web_mode(body.web),
                web_allow=web_patterns("web_allow", body.web_allow),
                web_deny=web_patterns("web_deny", body.web_deny),
                previews=body.previews,
                threads=thread_mode(body.threads),
            )
            group = await daemon.registry.add(group)
        except ValueError as exc:
            raise ApiError(409 if "already" in str(exc) else 400, str(exc)) from None
        return record_json(daemon, group), 201

    @app.get("/api/groups/<path:chat>")
    async def get_group(chat: str) -> Any:
        return group_json(daemon, find(chat))

    @app.patch("/api/groups/<path:chat>")
    async def patch_group(chat: str) -> Any:
        group = find(chat)
        body, raw = await json_body(GroupSettings)
        check_settings(body.trigger, body.allowed_senders, body.mounts)
        changes: dict[str, Any] = {}
        if "requires_trigger" in raw:
            if body.requires_trigger is None:
                raise ApiError(400, "'requires_trigger' must be true or false")
            changes["requires_trigger"] = body.requires_trigger
        if "trigger" in raw:
            changes["trigger"] = body.trigger.strip() if body.trigger else None
        if "allowed_senders" in raw:
            changes["allowed_senders"] = sender_ids(chat, body.allowed_senders or [])
        if "unlisted_context" in raw:
            if body.unlisted_context is None:
                raise ApiError(400, "'unlisted_context' must be true or false")
            changes["unlisted_context"] = body.unlisted_context
        if "mounts" in raw:
            changes["mounts"] = mount_dicts(body.mounts or [])
        for key in ("sender_rate_per_minute", "group_rate_per_minute"):
            if key in raw:
                changes[key] = check_rate(key, getattr(body, key))
        if "web" in raw:
            changes["web"] = web_mode(body.web)
        for key in ("web_allow", "web_deny"):
            if key in raw:
                changes[key] = web_patterns(key, getattr(body, key))
        if "previews" in raw:
            changes["previews"] = body.previews
        if "threads" in raw:
            changes["threads"] = thread_mode(body.threads)
        if not changes:
            raise ApiError(
                400,
                "nothing to change: send requires_trigger, trigger, allowed_senders, unlisted_context,"
                " mounts, sender_rate_per_minute, group_rate_per_minute, web, web_allow, web_deny, previews or threads",
            )
        new = attrs.evolve(group, **changes)
        await apply_group(daemon, new)
        log.info("group %s: settings changed (%s)", chat, ", ".join(sorted(changes)))
        return group_json(daemon, new)

    @app.delete("/api/groups/<path:chat>")
    async def remove_group(chat: str) -> Any:
        group = await daemon.registry.remove(chat)
        if group is None:
            raise ApiError(404, f"no group for chat {chat}")
        return record_json(daemon, group)

    @app.get("/api/senders")
    async def senders() -> Any:
        chat = str_arg("chat", max_len=300, required=True)
        assert chat is not None
        if ":" not in chat:
            raise ApiError(400, "'chat' must look like <channel>:<id>, e.g. telegram:-1001234")
        group = daemon.registry.get(chat)
        return [{**to_json(s), "allowed": id_allowed(group, s.sender_id)} for s in await daemon.store.recent_senders(chat)]

    @app.get("/api/sessions")
    async def sessions() -> Any:
        rows = await daemon.store.run(
            lambda c: [dict(r) for r in c.execute("SELECT folder, session_id, updated_at FROM sessions ORDER BY folder")]
        )
        return rows

    @app.delete("/api/sessions/<folder>")
    async def reset_session(folder: str) -> Any:
        group = daemon.registry.by_folder(folder)
        if group is None:
            raise ApiError(404, f"no group with folder {folder!r}")
        supervisor = daemon.supervisor
        handle = supervisor.actors.get(group.folder)
        if handle is not None and handle.view.container_id:
            if supervisor.actor_busy(group.folder):
                raise ApiError(409, "the group's agent is answering right now; reset the session when it is idle")
            # Stop the idle container first, or it would save its session id again.
            if not await supervisor.stop_idle_container(group.folder, timeout=10):
                raise ApiError(409, "the group's container did not stop in time (or took work); try again")
        previous = await daemon.store.session_id(group.folder)
        await daemon.store.set_session(group.folder, None)
        supervisor.session_forgotten(group.folder)
        log.info("group %s: session reset (was %s)", group.folder, previous)
        return {"folder": group.folder, "reset": previous is not None, "previous_session_id": previous}
