"""The daemon behind Debian's nginx, configured as docs/deployment.md says (tests/nginx_proxy.py):
the chat page and its login over HTTPS, a reply arriving over the event stream through the proxy,
and the client's address taken from X-Forwarded-For only when nginx (a trusted proxy) sent it.

Clients use other loopback addresses (127.0.0.2, .3, .4) as their source, so "a client" and "the
proxy" (127.0.0.1) are told apart as they would be on a real network."""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from tests.nginx_proxy import Nginx

WRONG = "not-the-token-at-all-0123456789"


@pytest.fixture
async def behind_nginx(run_daemon: Any) -> AsyncIterator[tuple[Any, Nginx]]:
    running = await run_daemon(NGB_TRUSTED_PROXIES="127.0.0.1")
    nginx = await trio.to_thread.run_sync(Nginx, running.daemon.config.web_port)
    try:
        yield running, nginx
    finally:
        await trio.to_thread.run_sync(nginx.stop)


def client(base_url: str, source: str, cafile: Any = None) -> httpx.AsyncClient:
    """A client whose connections come from the loopback address ``source``."""
    verify: Any = ssl.create_default_context(cafile=str(cafile)) if cafile else True
    transport = httpx.AsyncHTTPTransport(local_address=source, verify=verify)
    return httpx.AsyncClient(base_url=base_url, transport=transport, timeout=15)


async def test_the_chat_page_and_its_login_over_https(behind_nginx: tuple[Any, Nginx]) -> None:
    running, nginx = behind_nginx
    async with client(nginx.url, "127.0.0.2", nginx.cert) as web:
        page = await web.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower(), page.text[:200]
        login = await web.get("/", params={"token": running.token})
        assert login.status_code == 303, login.text[:200]
        cookie = login.headers["set-cookie"]
        assert "ngb_token=" in cookie and "Secure" in cookie, cookie  # HTTPS, as nginx said
        assert (await web.get("/api/chats")).status_code == 200  # the cookie signs the browser in
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{nginx.http_port}") as plain:
        moved = await plain.get("/dashboard")
        assert moved.status_code == 301 and moved.headers["location"].startswith("https://"), moved.headers
    # Straight to the daemon from a client that is no proxy: its X-Forwarded-Proto is not believed
    async with client(running.base_url, "127.0.0.3") as direct:
        login = await direct.get("/", params={"token": running.token}, headers={"X-Forwarded-Proto": "https"})
        assert login.status_code == 303 and "Secure" not in login.headers["set-cookie"], login.headers


async def test_a_reply_arrives_over_the_event_stream_through_the_proxy(behind_nginx: tuple[Any, Nginx]) -> None:
    running, nginx = behind_nginx
    auth = {"Authorization": f"Bearer {running.token}"}
    async with client(nginx.url, "127.0.0.2", nginx.cert) as web:
        async with web.stream("GET", "/api/chats/main/events", params={"after": "0"}, headers=auth) as events:
            assert events.status_code == 200 and events.headers["content-type"].startswith("text/event-stream")
            lines = events.aiter_lines()
            assert (await lines.__anext__()).startswith(": connected")  # the first byte passed unbuffered
            posted = await web.post("/api/chats/main/messages", json={"sender": "alice", "text": "through nginx?"},
                                    headers=auth)
            assert posted.status_code == 202, posted.text
            seen: list[dict[str, Any]] = []
            with trio.fail_after(15):
                async for line in lines:
                    if line.startswith("data: "):
                        seen.append(json.loads(line[6:]))
                        if seen[-1]["from_bot"]:
                            break
    assert [m["text"] for m in seen if not m["from_bot"]] == ["through nginx?"]
    assert seen[-1]["from_bot"] and seen[-1]["text"], seen


async def test_client_addresses_behind_the_proxy_and_spoofed_forwarded_for(
    behind_nginx: tuple[Any, Nginx], caplog: pytest.LogCaptureFixture
) -> None:
    """Wrong tokens lock out the address that sent them: behind nginx that is each client's own
    address, not nginx's; an X-Forwarded-For a client writes itself never moves it elsewhere."""
    running, nginx = behind_nginx
    caplog.set_level(logging.WARNING, "ngb.web.security")

    async def login(web: httpx.AsyncClient, token: str, spoof: str) -> int:
        r = await web.post("/api/login", json={"token": token}, headers={"X-Forwarded-For": spoof})
        return r.status_code

    async with client(nginx.url, "127.0.0.2", nginx.cert) as guesser, \
            client(nginx.url, "127.0.0.4", nginx.cert) as neighbour, \
            client(running.base_url, "127.0.0.3") as direct:
        for i in range(5):  # a new made-up address each time: it must not help
            assert await login(guesser, WRONG, f"198.51.100.{i}") == 401
        assert await login(guesser, running.token, "198.51.100.77") == 429  # locked out, even with the token
        assert await login(neighbour, running.token, "127.0.0.2") == 200  # another client behind nginx: not
        # a client talking to the daemon directly names the proxy, or anyone: it stays itself
        for i in range(5):
            assert await login(direct, WRONG, "127.0.0.1" if i % 2 else f"203.0.113.{i}") == 401
        assert await login(direct, running.token, "127.0.0.1") == 429
    lines = [r.getMessage() for r in caplog.records if "wrong API token from" in r.getMessage()]
    assert any("from 127.0.0.2 " in m for m in lines) and any("from 127.0.0.3 " in m for m in lines), lines
    assert not any("198.51.100." in m or "203.0.113." in m for m in lines), lines


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("127.0.0.1", ["203.0.113.5"], "203.0.113.5"),  # one trusted proxy
    ("127.0.0.1", ["198.51.100.1, 203.0.113.5"], "203.0.113.5"),  # the client wrote the left part itself
    ("127.0.0.1", ["203.0.113.5, 10.0.0.7"], "203.0.113.5"),  # two proxies of ours: skip both
    ("127.0.0.1", ["198.51.100.1", "203.0.113.5"], "203.0.113.5"),  # the header twice: the last is nearest
    ("127.0.0.1", ["[2001:db8::1]:4711"], "2001:db8::1"),
    ("127.0.0.1", ["203.0.113.5:4711"], "203.0.113.5"),
    ("127.0.0.1", ["unknown"], "127.0.0.1"),  # junk: the proxy itself
    ("127.0.0.1", [], "127.0.0.1"),
    ("::ffff:127.0.0.1", ["203.0.113.5"], "203.0.113.5"),  # a v4 proxy on a dual-stack socket
    ("192.0.2.9", ["203.0.113.5"], "192.0.2.9"),  # not a proxy of ours: its header is not read
])
def test_which_address_is_the_client(peer: str, forwarded: list[str], expected: str) -> None:
    from ngb.web.forwarded import TrustedProxies

    assert TrustedProxies.parse(["127.0.0.1", "10.0.0.0/8"]).client_of(peer, forwarded) == expected
