"""The model API's own web tools (web_search, web_fetch: run by the API, billed per use) under a
group's web rules, in the model proxy (ngb/sandbox/model_web_tools.py): off refuses them with the
rule, allowlist pins allowed_domains to the allow list, open turns the deny list into
blocked_domains; a body without them goes through byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from ngb.records import WebMode
from ngb.sandbox.model_proxy import ModelProxy
from ngb.sandbox.model_web_tools import WebToolRefused, apply_web_rules
from ngb.sandbox.web_policy import WebRules
from tests.fakes.anthropic import FakeAnthropic
from tests.test_model_proxy_door import KEY, PH, Raw

SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
FETCH = {"type": "web_fetch_20250910", "name": "web_fetch"}


def body(*tools: dict[str, Any]) -> bytes:
    return json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 64, "tools": list(tools),
                       "messages": [{"role": "user", "content": "Perform a web search for the query: ngb"}]}).encode()


def rules(mode: WebMode, allow: tuple[str, ...] = (), deny: tuple[str, ...] = ()) -> WebRules:
    return WebRules(folder="g", mode=mode, allow=allow, deny=deny)


def tools_of(data: bytes) -> list[dict[str, Any]]:
    return list(json.loads(data)["tools"])


def test_a_body_without_server_web_tools_is_untouched_whatever_the_mode() -> None:
    plain = body({"name": "WebSearch", "input_schema": {"type": "object"}})
    for mode in WebMode:
        assert apply_web_rules(plain, rules(mode, deny=("x.example",))) is plain


@pytest.mark.parametrize("tool", [SEARCH, FETCH])
def test_off_refuses_the_models_web_tools_with_the_rule(tool: dict[str, Any]) -> None:
    with pytest.raises(WebToolRefused, match=r"^web: off for this group \(the model's web (search|fetch) too\)$"):
        apply_web_rules(body(tool), rules(WebMode.OFF))


def test_allowlist_pins_the_allowed_domains() -> None:
    r = rules(WebMode.ALLOWLIST, allow=("example.com", "*.wikipedia.org", "bad.example.com"), deny=("bad.example.com",))
    [search, fetch] = tools_of(apply_web_rules(body(SEARCH, {**FETCH, "blocked_domains": ["x.org"]}), r))
    assert search["allowed_domains"] == ["example.com", "wikipedia.org"] and search["max_uses"] == 5
    assert fetch["allowed_domains"] == ["example.com", "wikipedia.org"] and "blocked_domains" not in fetch
    # the agent's own narrower list is kept where it lies inside the allow list; the rest dropped
    [search] = tools_of(apply_web_rules(body({**SEARCH, "allowed_domains": ["en.wikipedia.org", "evil.org"]}), r))
    assert search["allowed_domains"] == ["en.wikipedia.org"]
    with pytest.raises(WebToolRefused, match="allow list has nothing"):
        apply_web_rules(body({**SEARCH, "allowed_domains": ["evil.org"]}), r)
    with pytest.raises(WebToolRefused, match="allow list has nothing"):
        apply_web_rules(body(SEARCH), rules(WebMode.ALLOWLIST))


def test_open_turns_the_deny_list_into_blocked_domains() -> None:
    r = rules(WebMode.OPEN, deny=("*.tracker.example", "evil.org"))
    [search] = tools_of(apply_web_rules(body({**SEARCH, "blocked_domains": ["ads.example"]}), r))
    assert search["blocked_domains"] == ["ads.example", "tracker.example", "evil.org"]
    # allowed_domains asked by the agent (the API takes one list): the denied ones are dropped
    [search] = tools_of(apply_web_rules(body({**SEARCH, "allowed_domains": ["a.evil.org", "ok.org"]}), r))
    assert search["allowed_domains"] == ["ok.org"] and "blocked_domains" not in search
    with pytest.raises(WebToolRefused, match="deny list"):
        apply_web_rules(body({**SEARCH, "allowed_domains": ["evil.org"]}), r)
    unchanged = body(SEARCH)
    assert apply_web_rules(unchanged, rules(WebMode.OPEN)) is unchanged


async def test_the_proxy_refuses_or_rewrites_before_anything_goes_upstream(nursery: trio.Nursery, tmp_path: Path) -> None:
    fake = await FakeAnthropic.start(nursery)
    mode = {"g": WebMode.OFF}
    proxy = ModelProxy(fake.url, KEY, retries=0,
                       web_rules=lambda group: rules(mode[group], allow=("docs.example.com",)))
    sock = tmp_path / "model.sock"
    await nursery.start(proxy.serve_group, "g", sock, PH)
    raw = await Raw.open(sock)
    status, _, answer = await raw.request("POST", "/v1/messages", body(SEARCH))
    assert status == 400 and answer["error"]["type"] == "invalid_request_error", answer
    assert answer["error"]["message"] == "web: off for this group (the model's web search too)"
    assert fake.message_requests == []
    # the same connection goes on; the next request, under allowlist, reaches the API pinned
    mode["g"] = WebMode.ALLOWLIST
    status, _, answer = await raw.request("POST", "/v1/messages", body(SEARCH))
    assert status == 200, answer
    [sent] = fake.message_requests
    assert sent.json["tools"][0]["allowed_domains"] == ["docs.example.com"]
    await raw.aclose()
    await proxy.aclose()
