"""Who a message the fake Discord creates would notify, by Discord's rules for ``allowed_mentions``."""

from __future__ import annotations

import re
from typing import Any


def pinged(content: str, allowed: dict[str, Any] | None, reply_to: dict[str, Any] | None = None) -> set[str]:
    """Who a message notifies, as Discord decides it: ``"everyone"``, ``"role:<id>"``, ``"user:<id>"``
    (the bot is taken to hold Mention Everyone and every role to be mentionable: the worst case)."""
    users = set(re.findall(r"<@!?(\d+)>", content))
    roles = set(re.findall(r"<@&(\d+)>", content))
    everyone = bool(re.search(r"@(everyone|here)\b", content))
    replied = str(reply_to["author"]["id"]) if reply_to is not None else None
    if allowed is None:  # no allowed_mentions: everything in the content pings, and the replied-to author
        out = {f"user:{u}" for u in users} | {f"role:{r}" for r in roles} | ({"everyone"} if everyone else set())
        return out | ({f"user:{replied}"} if replied else set())
    parse = set(allowed.get("parse") or [])
    out = set()
    out |= {f"user:{u}" for u in users if "users" in parse or u in {str(x) for x in allowed.get("users") or []}}
    out |= {f"role:{r}" for r in roles if "roles" in parse or r in {str(x) for x in allowed.get("roles") or []}}
    if everyone and "everyone" in parse:
        out.add("everyone")
    if replied and allowed.get("replied_user"):
        out.add(f"user:{replied}")
    return out
