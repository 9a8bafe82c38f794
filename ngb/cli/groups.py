"""`ngb groups`: list, add and remove registered chats, their senders, allow-lists and web
settings (through the running daemon's API when one answers, else on the state directly)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx

from ..config import Config
from ..records import Group, ThreadMode, WebMode
from .support import daemon_client, fail, with_store

WEB_MODES = [m.value for m in WebMode]


def add_group_commands(sub: Any) -> None:
    """Register `ngb groups ...` on the `ngb` subparsers."""
    groups = sub.add_parser("groups", help="list, add or remove registered chats")
    gsub = groups.add_subparsers(dest="groups_cmd", required=True)
    gl = gsub.add_parser("list")
    gl.add_argument("--json", action="store_true")
    ga = gsub.add_parser("add")
    ga.add_argument("chat", help="e.g. local:family, telegram:-1001234")
    ga.add_argument("--folder", required=True, help="the group's folder name under state/groups/")
    ga.add_argument("--main", action="store_true", help="make this the main (admin) group")
    ga.add_argument("--no-trigger", action="store_true", help="answer every message, not only ones with the trigger")
    ga.add_argument("--allow", action="append", default=[], metavar="SENDER_ID",
                    help="only this sender (the platform's user id, never a name) may use the bot; repeatable")
    ga.add_argument("--unlisted-context", action="store_true",
                    help="show other senders' messages to the agent as context, marked as unlisted")
    ga.add_argument("--web", choices=WEB_MODES, default=None,
                    help="the web for this group's agent (default: the daemon's web_main/web_default)")
    ga.add_argument("--threads", choices=("shared", "per_thread"), default=None,
                    help="one agent session per chat (shared) or per thread (default: the daemon's `threads`)")
    ga.add_argument("--previews", choices=("on", "off"), default=None,
                    help="live previews: the reply grows in the chat while written (default: the daemon's `previews`)")
    gr = gsub.add_parser("remove")
    gr.add_argument("chat")
    gs = gsub.add_parser("senders", help="who wrote in a chat lately: the ids allow-lists take, with names")
    gs.add_argument("chat")
    gs.add_argument("--json", action="store_true")
    for name, helptext in (("allow", "add sender ids to a group's allow-list"),
                           ("disallow", "remove sender ids from a group's allow-list (empty list: everyone)")):
        gp = gsub.add_parser(name, help=helptext)
        gp.add_argument("chat")
        gp.add_argument("sender_ids", nargs="+", metavar="SENDER_ID")
    gw = gsub.add_parser("web", help="show or change a group's web settings (docs/web-access.md)")
    gw.add_argument("chat")
    gw.add_argument("--mode", choices=[*WEB_MODES, "default"],
                    help="off, allowlist, open, or default (the daemon's web_main/web_default)")
    for flag, helptext in (("--allow", "add host patterns (example.com, *.example.com) to the allow list"),
                           ("--deny", "add host patterns to the deny list"),
                           ("--remove-allow", "remove host patterns from the allow list"),
                           ("--remove-deny", "remove host patterns from the deny list")):
        gw.add_argument(flag, nargs="+", action="extend", default=[], metavar="PATTERN", help=helptext)
    gw.add_argument("--json", action="store_true")
    gset = gsub.add_parser("set", help="change a group's conversation settings (docs/conversations.md)")
    gset.add_argument("chat")
    gset.add_argument("--threads", choices=("shared", "per_thread", "default"),
                      help="one agent session per chat or per thread; default: the daemon's `threads`")
    gset.add_argument("--previews", choices=("on", "off", "default"),
                      help="live previews in this chat; default: the daemon's `previews`")
    groups.set_defaults(fn=cmd_groups)


def cmd_groups(config: Config, args: argparse.Namespace) -> int:
    from ..folders import validate_folder
    from ..identity import normalise_sender_ids
    from ..records import to_json

    client = daemon_client(config)
    if args.groups_cmd == "list":
        if client:
            groups = client.get("/api/groups").json()
        else:
            groups = [to_json(g) for g in with_store(config, lambda r: _async(r.all()))]
        if args.json:
            print(json.dumps(groups, indent=2))
            return 0
        if not groups:
            print("no groups registered")
        for g in groups:
            flags = [f for f, on in (("main", g["is_main"]), ("no-trigger", not g["requires_trigger"]),
                                     (f"web={g.get('web')}", g.get("web") is not None),
                                     (f"threads={g.get('threads')}", g.get("threads") is not None),
                                     (f"previews={'on' if g.get('previews') else 'off'}", g.get("previews") is not None)) if on]
            print(f"{g['chat']:<30} folder={g['folder']:<20} {' '.join(flags)}")
        return 0
    if args.groups_cmd == "add":
        try:
            validate_folder(args.folder)
        except ValueError as exc:
            return fail(str(exc))
        if ":" not in args.chat:
            return fail(f"chat {args.chat!r} must look like <channel>:<id>, e.g. local:family or telegram:-1001234")
        try:
            allowed = normalise_sender_ids(args.chat, args.allow)
        except ValueError as exc:
            return fail(str(exc))
        if client:
            r = client.post(
                "/api/groups",
                json={"chat": args.chat, "folder": args.folder, "is_main": args.main, "requires_trigger": not args.no_trigger,
                      "allowed_senders": list(allowed), "unlisted_context": args.unlisted_context, "web": args.web,
                      "previews": None if args.previews is None else args.previews == "on",
                      "threads": args.threads},
            )
            if r.status_code >= 400:
                return fail(r.json().get("error", r.text))
        else:
            group = Group(chat=args.chat, folder=args.folder, is_main=args.main, requires_trigger=not args.no_trigger,
                          allowed_senders=allowed, unlisted_context=args.unlisted_context,
                          web=None if args.web is None else WebMode(args.web),
                          previews=None if args.previews is None else args.previews == "on",
                          threads=None if args.threads is None else ThreadMode(args.threads))
            try:
                with_store(config, lambda r: r.add(group))
            except ValueError as exc:
                return fail(str(exc))
        print(f"registered {args.chat} (folder {args.folder})")
        return 0
    if args.groups_cmd == "remove":
        if client:
            r = client.delete(f"/api/groups/{args.chat}")
            if r.status_code == 404:
                return fail(f"no group for chat {args.chat}", 1)
        elif with_store(config, lambda r: r.remove(args.chat)) is None:
            return fail(f"no group for chat {args.chat}", 1)
        print(f"removed {args.chat} (its folder stays on disk)")
        return 0
    if args.groups_cmd == "senders":
        return _groups_senders(config, client, args)
    if args.groups_cmd in ("allow", "disallow"):
        return _groups_allow(config, client, args)
    if args.groups_cmd == "web":
        return _groups_web(config, client, args)
    if args.groups_cmd == "set":
        return _groups_set(config, client, args)
    return fail("usage: ngb groups list|add|remove|senders|allow|disallow|web|set")


def _groups_senders(config: Config, client: httpx.Client | None, args: argparse.Namespace) -> int:
    from ..identity import id_allowed
    from ..records import to_json

    if ":" not in args.chat:
        return fail(f"chat {args.chat!r} must look like <channel>:<id>, e.g. telegram:-1001234")
    if client:
        r = client.get("/api/senders", params={"chat": args.chat})
        if r.status_code >= 400:
            return fail(r.json().get("error", r.text))
        rows = r.json()
    else:
        async def read(registry: Any) -> list[dict[str, Any]]:
            group = registry.get(args.chat)
            return [{**to_json(s), "allowed": id_allowed(group, s.sender_id)} for s in await registry.store.recent_senders(args.chat)]

        rows = with_store(config, read)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no messages from anyone in {args.chat} yet")
        return 0
    print(f"{'SENDER ID (for allow-lists)':<40} {'NAME (shown only)':<24} {'MSGS':>5}  LAST              ALLOWED")
    for row in rows:
        allowed = {None: "-", True: "yes", False: "no"}[row["allowed"]]
        print(f"{row['sender_id'] or '(none)':<40} {row['name'][:24]:<24} {row['messages']:>5}  {row['last_time'][:16]}  {allowed}")
    return 0


def _groups_allow(config: Config, client: httpx.Client | None, args: argparse.Namespace) -> int:
    import attrs

    from ..identity import normalise_sender_ids

    try:
        ids = normalise_sender_ids(args.chat, args.sender_ids)
    except ValueError as exc:
        return fail(str(exc))

    def changed(current: tuple[str, ...] | list[str]) -> list[str]:
        if args.groups_cmd == "allow":
            return list(dict.fromkeys([*current, *ids]))
        return [s for s in current if s not in ids]

    if client:
        r = client.get(f"/api/groups/{args.chat}")
        if r.status_code == 404:
            return fail(f"no group for chat {args.chat}", 1)
        new = changed(r.json()["allowed_senders"])
        r = client.patch(f"/api/groups/{args.chat}", json={"allowed_senders": new})
        if r.status_code >= 400:
            return fail(r.json().get("error", r.text))
    else:
        async def edit(registry: Any) -> list[str] | None:
            group = registry.get(args.chat)
            if group is None:
                return None
            new = changed(group.allowed_senders)
            await registry.store.update_group(attrs.evolve(group, allowed_senders=tuple(new)))
            return new

        new = with_store(config, edit)
        if new is None:
            return fail(f"no group for chat {args.chat}", 1)
    print(f"{args.chat}: " + (f"allowed senders: {', '.join(new)}" if new else "everyone may use the bot (no allow-list)"))
    return 0


def _patterns(items: list[str]) -> list[str]:
    """Host patterns as the store keeps them; HostPatternError (a ValueError) names a bad one."""
    from ..host_patterns import parse_host_pattern

    return list(dict.fromkeys(parse_host_pattern(p) for p in items))


def _web_effective(config: Config, group: dict[str, Any]) -> str:
    from ..sandbox.web_policy import effective_mode

    return str(effective_mode(Group(chat=group["chat"], folder=group["folder"], is_main=group["is_main"],
                                    web=WebMode(group["web"]) if group.get("web") else None), config))


def _groups_web(config: Config, client: httpx.Client | None, args: argparse.Namespace) -> int:
    """Show a group's web settings, or change them (only what the options name)."""
    from ..host_patterns import HostPatternError
    from ..records import to_json

    try:
        add_allow, add_deny = _patterns(args.allow), _patterns(args.deny)
        drop_allow, drop_deny = set(_patterns(args.remove_allow)), set(_patterns(args.remove_deny))
    except HostPatternError as exc:
        return fail(str(exc))
    changing = args.mode is not None or any((add_allow, add_deny, drop_allow, drop_deny))

    def changes(current: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if args.mode is not None:
            out["web"] = None if args.mode == "default" else args.mode
        if add_allow or drop_allow:
            out["web_allow"] = [p for p in dict.fromkeys([*current["web_allow"], *add_allow]) if p not in drop_allow]
        if add_deny or drop_deny:
            out["web_deny"] = [p for p in dict.fromkeys([*current["web_deny"], *add_deny]) if p not in drop_deny]
        return out

    if client:
        r = client.get(f"/api/groups/{args.chat}")
        if r.status_code == 404:
            return fail(f"no group for chat {args.chat}", 1)
        group = r.json()
        if changing:
            r = client.patch(f"/api/groups/{args.chat}", json=changes(group))
            if r.status_code >= 400:
                return fail(r.json().get("error", r.text))
            group = r.json()
    else:
        import attrs

        async def edit(registry: Any) -> dict[str, Any] | None:
            found: Group | None = registry.get(args.chat)
            if found is None:
                return None
            if changing:
                new = changes(to_json(found))
                if "web" in new:
                    new["web"] = None if new["web"] is None else WebMode(new["web"])
                fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in new.items()}
                found = attrs.evolve(found, **fields)
                await registry.store.update_group(found)
            return dict(to_json(found))

        got = with_store(config, edit)
        if got is None:
            return fail(f"no group for chat {args.chat}", 1)
        group = got
    effective = group.get("web_effective") or _web_effective(config, group)
    if args.json:
        print(json.dumps({k: group.get(k) for k in ("chat", "folder", "web", "web_allow", "web_deny")}
                         | {"web_effective": effective}, indent=2))
        return 0
    origin = "its own setting" if group.get("web") else "the daemon's default for " + ("the main group" if group["is_main"] else "groups")
    print(f"{args.chat}: web {effective} ({origin})")
    print(f"  allow: {', '.join(group['web_allow']) or '(none)'}")
    print(f"  deny:  {', '.join(group['web_deny']) or '(none)'}")
    return 0


async def _async(value: Any) -> Any:
    return value


def _groups_set(config: Config, client: httpx.Client | None, args: argparse.Namespace) -> int:
    """Change a group's threads and previews settings (only those the options name)."""
    import attrs

    changes: dict[str, Any] = {}
    if args.threads is not None:
        changes["threads"] = None if args.threads == "default" else args.threads
    if args.previews is not None:
        changes["previews"] = None if args.previews == "default" else args.previews == "on"
    if not changes:
        return fail("nothing to change: give --threads and/or --previews")
    if client:
        r = client.patch(f"/api/groups/{args.chat}", json=changes)
        if r.status_code >= 400:
            return fail(r.json().get("error", r.text), 1 if r.status_code == 404 else 2)
    else:
        async def edit(registry: Any) -> bool:
            found: Group | None = registry.get(args.chat)
            if found is None:
                return False
            fields = dict(changes)
            if fields.get("threads") is not None:
                fields["threads"] = ThreadMode(fields["threads"])
            await registry.store.update_group(attrs.evolve(found, **fields))
            return True

        if not with_store(config, edit):
            return fail(f"no group for chat {args.chat}", 1)
    said = [f"threads {args.threads}" if args.threads else "", f"previews {args.previews}" if args.previews else ""]
    print(f"{args.chat}: {', '.join(x for x in said if x)} (from the group's next container)")
    return 0
