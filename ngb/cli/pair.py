"""`ngb pair`: direct messages from strangers waiting for you (docs/conversations.md): list them,
approve one (its chat becomes its own group) or deny it. Through the running daemon's API when one
answers, else on the state directly (a message to the chat then waits in the outbox for the
daemon)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import Config
from .support import daemon_client, fail, with_store


def add_pair_commands(sub: Any) -> None:
    """Register `ngb pair ...` on the `ngb` subparsers."""
    pair = sub.add_parser("pair", help="strangers' direct messages: list, approve or deny their pairing codes")
    psub = pair.add_subparsers(dest="pair_cmd", required=True)
    pl = psub.add_parser("list", help="the pairings waiting (--all: approved and denied ones too)")
    pl.add_argument("--all", action="store_true")
    pl.add_argument("--json", action="store_true")
    for name, helptext in (("approve", "register the chat as its own group and tell it"),
                           ("deny", "refuse it; the chat hears nothing more")):
        p = psub.add_parser(name, help=helptext)
        p.add_argument("code", help="the code the chat was given (ABCD-EFGH; case and dash do not matter)")
    pair.set_defaults(fn=cmd_pair)


def cmd_pair(config: Config, args: argparse.Namespace) -> int:
    client = daemon_client(config)
    if args.pair_cmd == "list":
        if client:
            r = client.get("/api/pairings", params={} if args.all else {"state": "pending"})
            if r.status_code >= 400:
                return fail(r.json().get("error", r.text))
            rows = list(r.json())
        else:
            rows = with_store(config, lambda registry: _offline_list(registry, args.all))
        return _print(rows, args)
    if client:
        r = client.post(f"/api/pairings/{args.code}/{args.pair_cmd}")
        if r.status_code >= 400:
            return fail(r.json().get("error", r.text))
        body = r.json()
    else:
        try:
            body = with_store(config, lambda registry: _offline_decide(config, registry, args.pair_cmd, args.code))
        except ValueError as exc:
            return fail(str(exc))
    if args.pair_cmd == "approve":
        print(f"approved: {body['chat']} is now group {body['folder']} (its messages are answered; "
              f"ngb groups list)")
    else:
        print(f"denied: {body['chat']}")
    return 0


async def _offline_list(registry: Any, everything: bool) -> list[dict[str, Any]]:
    from ..records import PairingState
    from ..web.api_pairings import pairing_json

    return [pairing_json(p) for p in await registry.store.pairings(None if everything else PairingState.PENDING)]


async def _offline_decide(config: Config, registry: Any, action: str, code: str) -> dict[str, Any]:
    from ..pairing import Pairings
    from ..records import to_json

    notices: list[tuple[str, str]] = []
    pairings = Pairings(registry.store, registry, notify=lambda chat, text: notices.append((chat, text)), config=config)
    result = await (pairings.approve(code) if action == "approve" else pairings.deny(code))
    for chat, text in notices:  # delivered by the daemon's outbox when it runs
        await registry.store.queue_message("", chat, text)
    return dict(to_json(result))


def _print(rows: list[dict[str, Any]], args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no pairings waiting" if not args.all else "no pairings")
        return 0
    print(f"{'CODE':<10} {'STATE':<9} {'CHAT':<32} {'SENDER':<24} ASKED (UTC)")
    for p in rows:
        state = "expired" if p["state"] == "pending" and p["expired"] else p["state"]
        who = f"{p['sender']} ({p['sender_id']})" if p["sender_id"] else p["sender"]
        print(f"{p['code']:<10} {state:<9} {p['chat'][:32]:<32} {who[:24]:<24} {p['created'][:16].replace('T', ' ')}")
    return 0
