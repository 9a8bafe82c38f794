"""The model API's own web tools under a group's web policy (docs/web-access.md).

Anthropic's API can search and fetch the web itself (server tools ``web_search_*`` and
``web_fetch_*``, billed per use: ngb/prices.py). Those requests never pass the egress door, so the
model proxy applies the group's web rules to the request body before forwarding it:

* web ``off``: a request that offers one of them is refused with the rule ("web: off for this
  group ..."): the CLI's WebSearch tool then tells the agent so;
* ``allowlist``: each such tool gets ``allowed_domains`` = the allow list (``*.example.com``
  becomes ``example.com``; the API's lists always include subdomains), minus the denied ones; a
  narrower list the agent asked for is kept;
* ``open``: the deny list becomes ``blocked_domains`` (added to the agent's own), or, when the
  agent asked for ``allowed_domains`` (the API takes one of the two), denied domains are removed
  from it.

A body that does not mention a server web tool is forwarded byte for byte, without parsing."""

from __future__ import annotations

import json
from typing import Any

from ..records import WebMode
from .web_policy import WebRules

SERVER_WEB_TOOLS = (b"web_search_", b"web_fetch_")


class WebToolRefused(Exception):
    """The group may not use the model's web tools; the message names the rule."""


def _domain(pattern: str) -> str:
    return pattern[2:] if pattern.startswith("*.") else pattern


def _covered(domain: str, by: str) -> bool:
    return domain == by or domain.endswith("." + by)


def _kind(tool_type: str) -> str:
    return "web search" if tool_type.startswith("web_search_") else "web fetch"


def _strings(value: Any) -> list[str]:
    return [str(v).strip().lower() for v in value if isinstance(v, str) and v.strip()] if isinstance(value, list) else []


def apply_web_rules(body: bytes, rules: WebRules) -> bytes:
    """The request body to forward, with the group's rules applied to every server web tool it
    offers; raises WebToolRefused when the group may not use them."""
    if not any(marker in body for marker in SERVER_WEB_TOOLS):
        return body
    try:
        data = json.loads(body)
    except ValueError:
        return body  # not JSON: the API answers 400 itself
    tools = data.get("tools") if isinstance(data, dict) else None
    if not isinstance(tools, list):
        return body
    changed = False
    denied = [_domain(p) for p in rules.deny]
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(kind, str) or not kind.startswith(("web_search_", "web_fetch_")):
            continue
        assert isinstance(tool, dict)
        if rules.mode is WebMode.OFF:
            raise WebToolRefused(f"web: off for this group (the model's {_kind(kind)} too)")
        asked = _strings(tool.get("allowed_domains"))
        if rules.mode is WebMode.ALLOWLIST:
            allowed = [d for d in dict.fromkeys(_domain(p) for p in rules.allow)
                       if not any(_covered(d, x) for x in denied)]  # fmt: skip
            if asked:  # the agent's narrower list, where each entry is inside the allow list
                allowed = [d for d in asked if any(_covered(d, a) for a in allowed)]
            if not allowed:
                raise WebToolRefused(f"web: this group's allow list has nothing the model's {_kind(kind)} may reach")
            tool["allowed_domains"] = allowed
            tool.pop("blocked_domains", None)
        elif asked:
            kept = [d for d in asked if not any(_covered(d, x) for x in denied)]
            if not kept:
                raise WebToolRefused(f"web: every domain asked for the model's {_kind(kind)} is on the deny list")
            tool["allowed_domains"] = kept
        elif denied:
            tool["blocked_domains"] = list(dict.fromkeys([*_strings(tool.get("blocked_domains")), *denied]))
        else:
            continue
        changed = True
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() if changed else body
