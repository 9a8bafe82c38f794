"""Web access end to end (issue "Web access"): the real agent image, Docker engine and Claude Code
CLI in a `--network none` container, against the local fake of the Anthropic API and a local HTTPS
site on 127.0.0.2 whose throwaway CA the daemon hands to the container (web_extra_ca_file). The
site is let through the door's address rule by web_allow_networks, as an operator would for a
server on their LAN; its port by web_ports."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ngb.daemon import Daemon
from tests.conftest import api_headers, make_config
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.web_site import WebSite, make_pki
from tests.test_e2e_docker import tool_results

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BIG = "<html><body>" + "<p>lorem ipsum dolor sit amet</p>" * 100_000 + "</body></html>"  # 3.3 MB
PAGE = "<html><head><title>Weather</title></head><body><p>Berlin: sunny, 21 degrees.</p></body></html>"


class Live:
    def __init__(self, daemon: Daemon, fake: FakeAnthropic, site: WebSite) -> None:
        self.daemon, self.fake, self.site = daemon, fake, site
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{daemon.config.web_port}", headers=api_headers(daemon.config), timeout=30)
        self.sent = 0

    async def turn(self, text: str, timeout: float = 120) -> None:
        """Post to main and wait for the bot's answer to it."""
        r = await self.http.post("/api/chats/main/messages", json={"sender": "alice", "text": text})
        assert r.status_code == 202, r.text
        self.sent += 1
        with trio.fail_after(timeout):
            while True:
                r = await self.http.get("/api/chats/main/messages", params={"after": 0})
                if sum(m["from_bot"] for m in r.json()) >= self.sent:
                    return
                await trio.sleep(0.1)

    async def run_python(self, code: str) -> str:
        """Run ``code`` with the container's python3 through the agent's Bash tool; its output."""
        command = f"echo {base64.b64encode(code.encode()).decode()} | base64 -d | python3 -"
        await self.turn(f"[[tool:Bash {json.dumps({'command': command})}]]")
        return tool_results(self.fake)[-1]

    async def web_log(self) -> list[dict[str, Any]]:
        r = await self.http.get("/api/web", params={"group": "main", "limit": 100})
        assert r.status_code == 200, r.text
        return list(r.json()["recent"])


@pytest.fixture
async def live(tmp_path: Path, agent_image: str) -> AsyncIterator[Live]:
    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        site = WebSite(pages={"/weather": PAGE, "/big": BIG}, pki=make_pki("127.0.0.2"))
        await nursery.start(site.serve)
        config = make_config(tmp_path, NGB_MODEL_UPSTREAM=fake.url, ANTHROPIC_API_KEY="sk-ant-test-key-0123456789",
                             NGB_IDLE_TIMEOUT="30", NGB_INSTANCE=f"web{os.getpid()}", NGB_CONTAINER_MEMORY="768m",
                             NGB_WEB_ALLOW_NETWORKS="127.0.0.2/32", NGB_WEB_PORTS=f"80,443,{site.port}", NGB_WEB_TURN_MB="1",
                             NGB_WEB_DENY="ads.example.com",
                             NGB_WEB_EXTRA_CA_FILE=str(site.write_ca(tmp_path / "site-ca.pem")))
        daemon = Daemon(config)
        await nursery.start(daemon.run)
        live = Live(daemon, fake, site)
        try:
            yield live
        finally:
            await live.http.aclose()
            nursery.cancel_scope.cancel()


def searches(live: Live) -> list[Any]:
    """The model requests that offered the API's own web search."""
    return [r for r in live.fake.message_requests if "web_search_" in json.dumps((r.json or {}).get("tools", []))]


FETCH = """
import ssl, urllib.request, urllib.error
ctx = ssl.create_default_context(cafile="/run/ngb/extra-ca.pem")  # the site's CA (web_extra_ca_file)
try:
    with urllib.request.urlopen({url!r}, timeout=20, context=ctx) as r:
        print("STATUS", r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print("REFUSED", e.code, e.reason)  # plain HTTP: the door's answer
except OSError as e:
    print("REFUSED", e)  # HTTPS: "Tunnel connection failed: 403 web: ..."
except Exception as e:
    print("FAILED", type(e).__name__, e)
"""


async def test_the_agent_reaches_the_web_only_through_the_door(live: Live) -> None:
    site = live.site.url
    # 1. The CLI's WebFetch reaches the HTTPS site through the door; the page's text goes to the
    #    model (WebFetch hands the page to a model call with the prompt, the fake echoes it back).
    fetch = {"url": f"{site}/weather", "prompt": "What is the weather?"}
    await live.turn(f"[[tool:WebFetch {json.dumps(fetch)}]]")
    assert any("Berlin: sunny, 21 degrees." in json.dumps(r.json) for r in live.fake.message_requests)
    assert "GET /weather HTTP/1.1" in live.site.requests
    allowed = [e for e in await live.web_log() if e["verdict"] == "allowed"]
    assert allowed and allowed[0]["host"] == "127.0.0.2" and allowed[0]["method"] == "CONNECT"
    assert allowed[0]["bytes_down"] > len(PAGE), allowed[0]

    # A page past the turn's byte budget (web_turn_mb=1) is cut, and the agent is told why.
    await live.turn(f"[[tool:WebFetch {json.dumps({**fetch, 'url': f'{site}/big'})}]]")
    last = json.dumps(live.fake.message_requests[-1].json)
    assert "- web: this turn's 1 MB of web traffic are used (web_turn_mb): the connection to 127.0.0.2:" in last, \
        last[-3000:]

    # The model's own web search: the CLI's WebSearch asks the API with its web_search tool.
    await live.turn('[[tool:WebSearch {"query": "weather in Berlin"}]]')
    [search] = searches(live)
    assert search.json["tools"][0]["blocked_domains"] == ["ads.example.com"], search.json["tools"]  # web_deny

    # 2. Any program in the container goes the same way (HTTPS_PROXY), and a refusal names its rule.
    out = await live.run_python(FETCH.format(url=f"{site}/weather"))
    assert "STATUS 200" in out and "Berlin: sunny" in out, out
    out = await live.run_python(FETCH.format(url="https://10.0.0.5/"))
    assert "REFUSED" in out and "403 web: 10.0.0.5 is a private address" in out, out
    out = await live.run_python(FETCH.format(url="http://169.254.169.254/latest/meta-data/"))
    assert "REFUSED 403 web: 169.254.169.254 is a cloud metadata address" in out, out

    # 3. Without the proxy nothing leaves the container: it has no network.
    direct = "import os\nfor k in ('HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy'):\n    os.environ.pop(k, None)\n"
    hits = len(live.site.requests)
    out = await live.run_python(direct + FETCH.format(url=f"{site}/weather"))
    assert "Connection refused" in out and "Berlin" not in out, out  # 127.0.0.2 there is the container's own
    out = await live.run_python(direct + FETCH.format(url="https://192.0.2.1/"))
    assert "Network is unreachable" in out, out
    assert len(live.site.requests) == hits

    # 4. Allow-listed by name is not enough: "localhost" resolves to loopback, refused after the lookup.
    r = await live.http.patch("/api/groups/local:main", json={"web": "allowlist", "web_allow": ["localhost"]})
    assert r.status_code == 200 and r.json()["web_effective"] == "allowlist", r.text
    out = await live.run_python(FETCH.format(url=f"http://localhost:{live.site.port}/weather"))
    assert "REFUSED 403 web:" in out and "is a loopback address (localhost resolves to it)" in out, out
    out = await live.run_python(FETCH.format(url=f"{site}/weather"))  # an address: not a name on the list
    assert "403 web: 127.0.0.2 is an address; this group reaches only the host names on its allow list" in out, out

    # 5. The operator turns the group's web off: the next request is refused with that rule, live.
    r = await live.http.patch("/api/groups/local:main", json={"web": "off"})
    assert r.status_code == 200 and r.json()["web_effective"] == "off", r.text
    out = await live.run_python(FETCH.format(url=f"{site}/weather"))
    assert "REFUSED" in out and "403 web: off for this group" in out, out
    assert len(live.site.requests) == hits
    # WebFetch itself says only "proxy refused the connection"; the runner adds the door's rule
    # to what the model sees after the call (a new URL: WebFetch keeps pages for 15 minutes)
    await live.turn(f"[[tool:WebFetch {json.dumps({**fetch, 'url': f'{site}/weather?again'})}]]")
    last = json.dumps(live.fake.message_requests[-1].json)
    assert "during this tool call:\\n- web: off for this group" in last, last[-3000:]
    assert len(live.site.requests) == hits

    # ... and so is the model's own web search, before it reaches the API.
    await live.turn('[[tool:WebSearch {"query": "weather in Berlin"}]]')
    assert len(searches(live)) == 1
    said = tool_results(live.fake)[-1]
    assert "API Error: 400 web: off for this group (the model's web search too)" in said, said
    assert "authenticate" not in said, said

    # The log has each decision, with the rule; the day's sums count them.
    log = await live.web_log()
    rules = {e["rule"] for e in log if e["verdict"] == "refused"}
    assert any(r.startswith("web: 10.0.0.5 is a private address") for r in rules), rules
    assert any(r.startswith("web: off for this group") for r in rules), rules
    usage = (await live.http.get("/api/web", params={"group": "main"})).json()["usage"]
    assert usage[0]["refused"] == 6 and usage[0]["bytes_down"] > 2 * len(PAGE), usage
    metrics = (await live.http.get("/metrics")).text
    assert 'ngb_web_requests_total{group="main",verdict="refused"} 6.0' in metrics, metrics
    assert any(line.startswith('ngb_web_bytes_total{direction="down",group="main"}') for line in metrics.splitlines())
