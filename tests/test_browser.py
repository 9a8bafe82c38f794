"""The agent's browser (issue 19 item 4): headless Chromium in the agent image, driven over the
DevTools pipe (agent/ngb_agent/browser.py), reaching the web only through the egress door.

The first tests need no Docker: the pipe's framing, the pipe against a fake peer, the tools'
answers without a browser or without the web, where screenshots may go. The last one runs the real
image, daemon and Claude Code CLI against the fake model and a plain-HTTP site on 127.0.0.2."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from ngb_agent.browser import NO_BROWSER, NO_WEB, Browser  # noqa: E402
from ngb_agent.browser_tools import BrowserTools, cut, screenshot_path  # noqa: E402
from ngb_agent.cdp_pipe import BrowserError, CdpPipe, MessageSplitter, encode_message  # noqa: E402

from tests.test_e2e_web import Live  # noqa: E402 - the same live daemon handle

# -- without Docker ---------------------------------------------------------------------------------


def test_messages_are_nul_separated_json_and_split_across_reads() -> None:
    a, b = encode_message({"id": 1, "method": "Page.navigate", "params": {"url": "x\u0000y"}}), encode_message({"id": 2})
    assert a.endswith(b"\0") and a.count(b"\0") == 1  # a NUL inside a string is escaped by JSON
    s = MessageSplitter()
    stream = a + b + encode_message({"method": "Page.loadEventFired", "params": {}})
    got = []
    for i in range(0, len(stream), 7):  # 7-byte reads: messages span them
        got += s.feed(stream[i : i + 7])
    assert [m.get("id") for m in got] == [1, 2, None]
    assert got[0]["params"]["url"] == "x\u0000y"
    with pytest.raises(BrowserError, match="longer than 10 bytes"):
        MessageSplitter(limit=10).feed(b'{"id": 1, "result": {}}')


# A stand-in for Chromium: reads commands on fd 3, answers on fd 4 (an event first), and leaves a
# child of its own that must die with it (the process group).
FAKE_PEER = r"""
import json, os, subprocess, sys
child = subprocess.Popen(["sleep", "300"])
open(sys.argv[1], "w").write(str(child.pid))
buf = b""
while True:
    data = os.read(3, 65536)
    if not data:
        break
    buf += data
    while b"\0" in buf:
        raw, buf = buf.split(b"\0", 1)
        msg = json.loads(raw)
        os.write(4, json.dumps({"method": "Fake.event", "params": {"for": msg["id"]}}).encode() + b"\0")
        if msg["method"] == "Fake.fail":
            answer = {"id": msg["id"], "error": {"code": -32000, "message": "no such thing"}}
        else:
            answer = {"id": msg["id"], "result": {"echo": msg["params"], "session": msg.get("sessionId")}}
        os.write(4, json.dumps(answer).encode() + b"\0")
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_pipe_talks_to_a_peer_on_fds_3_and_4_and_kills_its_group(tmp_path: Path) -> None:
    async def main() -> None:
        pipe = CdpPipe()
        events: list[dict] = []
        pipe.listeners.append(events.append)
        child_file = tmp_path / "child"
        await pipe.start([sys.executable, "-c", FAKE_PEER, str(child_file)])
        big = "x" * 300_000  # more than one pipe buffer each way
        assert await pipe.send("Fake.echo", {"a": 1, "big": big}, session="S1") == {
            "echo": {"a": 1, "big": big}, "session": "S1"}
        many = await asyncio.gather(*(pipe.send("Fake.echo", {"n": n}) for n in range(20)))
        assert [m["echo"]["n"] for m in many] == list(range(20))
        with pytest.raises(BrowserError, match="Fake.fail: no such thing"):
            await pipe.send("Fake.fail")
        assert len(events) == 22 and events[0] == {"method": "Fake.event", "params": {"for": 1}}
        child = int(child_file.read_text())
        assert pipe.proc is not None
        peer = pipe.proc.pid
        assert _alive(child) and os.getpgid(child) == peer  # its own process group
        await pipe.kill()
        for _ in range(50):
            if not _alive(child):
                break
            await asyncio.sleep(0.05)
        assert not _alive(peer) and not _alive(child)
        with pytest.raises(BrowserError, match="closed"):
            await pipe.send("Fake.echo")

    asyncio.run(main())


def test_tools_say_why_without_a_browser_or_without_the_web(tmp_path: Path) -> None:
    async def main() -> None:
        none = await BrowserTools(Browser(8788, tmp_path, executable=str(tmp_path / "no-chromium"))).call(
            "browser_open", {"url": "http://example.com/"})
        assert none["is_error"] and none["content"][0]["text"] == f"error: {NO_BROWSER}"
        off = await BrowserTools(Browser(0, tmp_path, executable=sys.executable)).call(
            "browser_read", {})
        assert off["is_error"] and off["content"][0]["text"] == f"error: {NO_WEB}"

    asyncio.run(main())


def test_screenshots_stay_in_the_group_folder(tmp_path: Path) -> None:
    group = tmp_path / "group"
    group.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (group / "link").symlink_to(tmp_path / "elsewhere")
    dest, shown = screenshot_path(group, None)
    assert dest.parent == group / "screenshots" and dest.suffix == ".png" and shown == str(dest)
    assert screenshot_path(group, str(group / "a/b.png"))[0] == group / "a" / "b.png"
    for bad in ("../x.png", "/etc/x.png", "link/x.png", "shot.txt", "link/../../x.png"):
        with pytest.raises(BrowserError):
            screenshot_path(group, bad)
    assert not list((tmp_path / "elsewhere").iterdir())


def test_chromiums_background_hosts_are_answered_in_the_container() -> None:
    from ngb_agent.browser_proxy import is_background, target_host

    assert target_host(b"CONNECT update.googleapis.com:443 HTTP/1.1\r\nHost: x\r\n\r\n") == "update.googleapis.com"
    assert target_host(b"GET http://Example.COM./a?b HTTP/1.1\r\n\r\n") == "example.com"
    assert target_host(b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n") == "2001:db8::1"
    assert is_background("update.googleapis.com") and is_background("r1---sn-x.redirector.gvt1.com")
    assert not is_background("googleapis.com") and not is_background("notupdate.googleapis.com.evil")
    assert not is_background("example.com")


def test_the_browsers_proxy_keeps_the_doors_rule_for_a_refused_tunnel() -> None:
    """Chromium reports a refused tunnel only as net::ERR_TUNNEL_CONNECTION_FAILED (and tries it
    again on its own): the browser's proxy keeps the door's rule from the door's own answer."""
    from ngb_agent.browser_proxy import BrowserProxy, door_refusal

    from ngb.sandbox.web_head import answer

    rule = "web: 10.0.0.5 is a private address"
    assert door_refusal(answer(403, rule)) == rule
    assert door_refusal(b"HTTP/1.1 200 Connection established\r\n\r\n") is None
    assert door_refusal(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n") is None  # a site's own 403
    assert door_refusal(b"HTTP/1.1 200 OK\r\nX-NGB-Web: refused\r\n\r\n") is None  # not the door's status line
    proxy = BrowserProxy(8788)
    proxy.note_answer(b"CONNECT 10.0.0.5:443 HTTP/1.1\r\n\r\n", answer(403, rule))
    proxy.note_answer(b"CONNECT Example.com:443 HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 Connection established\r\n\r\n")
    assert proxy.refusals == {"10.0.0.5:443": rule}
    proxy.note_answer(b"CONNECT 10.0.0.5:443 HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 Connection established\r\n\r\n")
    assert proxy.refusals == {}, "a later success forgets the refusal"


def test_long_text_is_cut_with_a_note() -> None:
    text = "abcdefghij" * 5
    assert cut(text, 0, 100) == text
    first = cut(text, 0, 20)
    assert first.startswith("abcdefghijabcdefghij\n") and "browser_read with offset=20" in first
    assert cut(text, 40, 20).startswith("[characters 40-50 of 50]\nabcdefghij")


# -- the real image ---------------------------------------------------------------------------------

FORM = """<html><head><title>Sign-up</title></head><body>
<h1>Club sign-up</h1>
<label for="name">Name</label> <input id="name" placeholder="Your name">
<button id="join" onclick="document.getElementById('out').innerText =
  'Welcome, ' + document.getElementById('name').value + '!'">Join</button>
<p id="out">Nobody joined yet.</p>
<p>""" + "Long club rules. " * 3000 + """</p></body></html>"""


@pytest.fixture
async def live(tmp_path: Path, agent_image: str) -> AsyncIterator[Live]:
    from ngb.daemon import Daemon
    from tests.conftest import make_config
    from tests.fakes.anthropic import FakeAnthropic
    from tests.fakes.web_site import WebSite

    async with trio.open_nursery() as nursery:
        fake = await FakeAnthropic.start(nursery)
        site = WebSite(pages={"/form": FORM})
        await nursery.start(site.serve)
        config = make_config(tmp_path, NGB_MODEL_UPSTREAM=fake.url, ANTHROPIC_API_KEY="sk-ant-test-key-0123456789",
                             NGB_IDLE_TIMEOUT="60", NGB_INSTANCE=f"browser{os.getpid()}", NGB_CONTAINER_MEMORY="1g",
                             NGB_WEB_ALLOW_NETWORKS="127.0.0.2/32", NGB_WEB_PORTS=f"80,443,{site.port}")
        daemon = Daemon(config)
        await nursery.start(daemon.run)
        live = Live(daemon, fake, site)
        try:
            yield live
        finally:
            await live.http.aclose()
            nursery.cancel_scope.cancel()


def _tool(name: str, args: dict) -> str:
    return f"[[tool:mcp__browser__{name} {json.dumps(args)}]]"


# (no "<" or ">": the chat's text reaches the model with them escaped)
BROWSER_LEFT = "echo procs=$(grep -s chrom /proc/[0-9]*/comm | wc -l); echo profiles=$(ls /tmp | grep -c ngb-browser)"


@pytest.mark.docker
@pytest.mark.slow
async def test_the_agent_browses_through_the_door(live: Live, tmp_path: Path) -> None:
    from tests.fakes.anthropic import text_reply, tool_call
    from tests.test_e2e_docker import tool_results

    url = f"{live.site.url}/form"
    # 1. One turn: open the form, type a name, click Join, take a screenshot.
    live.fake.script(
        tool_call("mcp__browser__browser_open", {"url": url}),
        tool_call("mcp__browser__browser_fill", {"target": "Name", "text": "Ada"}),
        tool_call("mcp__browser__browser_click", {"target": "Join"}),
        tool_call("mcp__browser__browser_screenshot", {"path": "shots/form.png", "full_page": False}),
        text_reply("signed up"),
    )
    await live.turn("sign Ada up at the club")
    opened, filled, clicked, shot = tool_results(live.fake)[-4:]
    assert opened.startswith("Title: Sign-up\nURL: " + url), opened[:500]
    assert "Club sign-up" in opened and "Nobody joined yet." in opened, opened[:800]
    assert "#name (text): Name" in opened and "#join: Join" in opened, opened[:800]  # the form's controls
    assert "[text cut: characters 0-20000 of" in opened and len(opened) < 21_000  # the size limit, said
    assert filled.startswith("typed into input#name") and "Nobody joined yet." in filled, filled[:300]
    assert clicked.startswith('clicked button#join "Join"') and "Welcome, Ada!" in clicked, clicked[:500]
    assert json.loads(shot)["path"] == "/workspace/group/shots/form.png", shot
    png = (tmp_path / "state" / "groups" / "main" / "shots" / "form.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and json.loads(shot)["bytes"] == len(png) > 2000
    assert any(line.startswith("GET /form ") for line in live.site.requests)  # through the door to the site
    # Chromium's own background requests (its update check) never reach the door: only the page did.
    r = await live.http.get("/api/web", params={"group": "main", "limit": 100})
    hosts = {e["host"] for e in r.json()["recent"]}
    assert hosts == {"127.0.0.2"}, hosts

    # 2. After the turn the browser is gone: no process, no profile.
    await live.turn("[[tool:Bash " + json.dumps({"command": BROWSER_LEFT}) + "]]")
    assert "procs=0" in tool_results(live.fake)[-1] and "profiles=0" in tool_results(live.fake)[-1], \
        tool_results(live.fake)[-1]

    # 3. A refused HTTPS tunnel reaches the agent with the door's rule, not just Chromium's error code.
    await live.turn(_tool("browser_open", {"url": "https://10.0.0.5/"}))
    said = tool_results(live.fake)[-1]
    assert "the egress door refused 10.0.0.5:443: web: 10.0.0.5 is a private address" in said, said

    # 4. The group's web turned off: the page is refused with that rule, and the site sees nothing.
    hits = len(live.site.requests)
    r = await live.http.patch("/api/groups/local:main", json={"web": "off"})
    assert r.status_code == 200, r.text
    await live.turn(_tool("browser_open", {"url": url}))
    said = tool_results(live.fake)[-1]
    assert said.startswith("error: the egress door refused") and "web: off for this group" in said, said
    assert len(live.site.requests) == hits


def test_the_browser_tools_are_offered_only_when_they_can_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher tells the runner the group's web mode at the container's start
    (ngb/sandbox/launcher.py web_environment); with "off", or no Chromium, the model is not offered
    six browser tools it could only fail with."""
    from ngb_agent import agent_cli
    from ngb_agent.agent_cli import AgentCli
    from ngb_agent.settings import Config

    from ngb.records import WebMode
    from ngb.sandbox.launcher import web_environment

    env = web_environment(WebMode.OFF, None)
    assert (env["NGB_WEB_MODE"], env["NGB_WEB_PORT"], env["HTTPS_PROXY"], env["NO_PROXY"]) == (
        "off", "8788", "http://127.0.0.1:8788", "127.0.0.1")
    assert "NODE_EXTRA_CA_CERTS" not in env
    assert web_environment(WebMode.OPEN, "extra-ca.pem")["NODE_EXTRA_CA_CERTS"] == "/run/ngb/extra-ca.pem"

    chromium = tmp_path / "chromium"
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)
    monkeypatch.setenv("NGB_WORKSPACE", str(tmp_path))

    def servers(mode: str, executable: Path) -> set[str]:
        monkeypatch.setenv("NGB_WEB_PORT", "8788")
        monkeypatch.setenv("NGB_WEB_MODE", mode)
        monkeypatch.setattr(agent_cli, "Browser", lambda port, cwd: Browser(port, cwd, executable=str(executable)))
        cli = AgentCli(Config(), requests=None)  # type: ignore[arg-type]
        offered = set(cli.mcp_servers({}))
        spawned = json.loads(cli.predicted_spawn(tmp_path, "0", None)[0][-4])["mcpServers"]  # the early CLI agrees
        assert set(spawned) == offered, (spawned, offered)
        return offered

    assert servers("open", chromium) == {"ngb", "browser"}
    assert servers("allowlist", chromium) == {"ngb", "browser"}
    assert servers("off", chromium) == {"ngb"}
    assert servers("open", tmp_path / "no-chromium") == {"ngb"}
