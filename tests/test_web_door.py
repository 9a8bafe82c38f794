"""The egress door on the host (issue 19): the group's web.sock, real unix and TCP sockets, real
sites on loopback (opened on purpose with web_allow_networks), and a resolver the test controls so
that a name can answer a private or a metadata address (DNS rebinding) without a DNS server.

What a user would notice: an allowed page arrives whole through a tunnel or as plain HTTP; a refused
one says which rule refused it ("web: 10.0.0.5 is a private address"); a name that resolves to the
host, the LAN or a metadata service is refused whatever the allow list says, and so is a second
answer that changed; a turn's byte budget and an idle site cut the connection; each request is
recorded with its group, verdict and bytes."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from ngb.config import Config
from ngb.records import Group, WebMode, WebRequest, WebVerdict
from ngb.sandbox.web_door import WebDoor, WebLimits
from ngb.sandbox.web_policy import WebRules, address_kind, rules_for

LOOP = (ipaddress.ip_network("127.0.0.0/8"),)


class Resolver:
    """host -> a list of answers, one per lookup (the last one repeats)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list:
        self.calls.append(host)
        if host not in self.answers:
            raise OSError(-2, "Name or service not known")
        seq = self.answers[host]
        n = sum(1 for c in self.calls if c == host) - 1
        return [ipaddress.ip_address(a) for a in seq[min(n, len(seq) - 1)]]


async def site(nursery: trio.Nursery, handler: Callable) -> int:
    listeners = await nursery.start(trio.serve_tcp, handler, 0)
    return listeners[0].socket.getsockname()[1]


def page_handler(body: bytes, seen: list[bytes] | None = None):
    async def handler(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            data += chunk
        if seen is not None:
            seen.append(data)
        try:
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        except trio.BrokenResourceError:
            pass  # the door cut it (a limit)
        await stream.aclose()

    return handler


class Door:
    def __init__(self, tmp: Path, rules: WebRules, limits: WebLimits, resolver: Resolver | None = None,
                 day_bytes: Callable[[str, str], Awaitable[int]] | None = None) -> None:
        self.records: list[WebRequest] = []
        self.door = WebDoor(limits, resolver=resolver or Resolver({}), on_request=self.records.append,
                            day_bytes=day_bytes)
        self.rules = rules
        self.path = tmp / "web.sock"

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self.door.serve_group, self.rules.folder, self.path, lambda: self.rules)

    async def settled(self, n: int) -> list[WebRequest]:
        """The records once ``n`` requests are recorded (a tunnel is recorded after both sides closed)."""
        with trio.fail_after(5):
            while len(self.records) < n:
                await trio.sleep(0.005)
        return self.records

    async def ask(self, head: str, then: bytes = b"") -> tuple[bytes, trio.SocketStream]:
        stream = await trio.open_unix_socket(str(self.path))
        await stream.send_all(head.encode() + then)
        return await read_head(stream), stream

    async def exchange(self, head: str, then: bytes = b"") -> bytes:
        """Everything the door sends back until it closes."""
        stream = await trio.open_unix_socket(str(self.path))
        await stream.send_all(head.encode() + then)
        out = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                out += chunk
        await stream.aclose()
        return out


async def read_head(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
    return data


def rules(mode: WebMode = WebMode.OPEN, **kw) -> WebRules:
    kw.setdefault("allow_networks", LOOP)
    return WebRules(folder="family", mode=mode, **kw)


LIMITS = WebLimits(turn_bytes=0, day_bytes=0, max_connections=4, connect_timeout=3, idle_timeout=5)


async def test_tunnel_reaches_an_allowed_site_and_is_recorded(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        port = await site(nursery, page_handler(b"<h1>hello through the tunnel</h1>"))
        door = Door(tmp_path, rules(ports=(port,)), LIMITS)
        await door.start(nursery)
        reply = await door.exchange(
            f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        await door.settled(1)
        nursery.cancel_scope.cancel()
    assert reply.startswith(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK")
    assert reply.endswith(b"<h1>hello through the tunnel</h1>")
    [rec] = door.records
    assert (rec.folder, rec.verdict, rec.method, rec.host, rec.port) == ("family", WebVerdict.ALLOWED, "CONNECT", "127.0.0.1", port)
    assert rec.address == "127.0.0.1" and rec.bytes_down == len(reply) - len(b"HTTP/1.1 200 Connection established\r\n\r\n")
    assert rec.bytes_up == len(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


async def test_plain_http_is_forwarded_in_origin_form_without_proxy_headers(tmp_path: Path) -> None:
    seen: list[bytes] = []
    async with trio.open_nursery() as nursery:
        port = await site(nursery, page_handler(b"plain page", seen))
        door = Door(tmp_path, rules(ports=(port,)), LIMITS, Resolver({"site.test": [["127.0.0.1"]]}))
        await door.start(nursery)
        reply = await door.exchange(
            f"GET http://site.test:{port}/a/b?c=1 HTTP/1.1\r\nHost: site.test:{port}\r\n"
            "Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\n\r\n"
        )
        await door.settled(1)
        nursery.cancel_scope.cancel()
    assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"plain page")
    head = seen[0].decode()
    assert head.startswith("GET /a/b?c=1 HTTP/1.1\r\n")
    assert f"Host: site.test:{port}" in head and "Connection: close" in head
    assert "Proxy-" not in head and "c2VjcmV0" not in head
    assert door.records[0].host == "site.test" and door.records[0].method == "GET"


@pytest.mark.parametrize(
    ("mode", "target", "answers", "why"),
    [
        (WebMode.OFF, "example.com:443", {}, "web: off for this group"),
        (WebMode.OPEN, "example.com:8080", {}, "web: port 8080 is not allowed (web_ports: 80, 443)"),
        (WebMode.ALLOWLIST, "example.org:443", {}, "web: example.org is not on this group's allow list"),
        (WebMode.ALLOWLIST, "10.0.0.5:443", {}, "web: 10.0.0.5 is an address; this group reaches only the host names"),
        (WebMode.OPEN, "10.0.0.5:443", {}, "web: 10.0.0.5 is a private address"),
        (WebMode.OPEN, "ads.tracker.test:443", {}, "web: ads.tracker.test is on the deny list (*.tracker.test)"),
        (WebMode.ALLOWLIST, "intranet.example.com:443", {"intranet.example.com": [["93.184.216.34", "192.168.1.20"]]},
         "web: 192.168.1.20 is a private address (intranet.example.com resolves to it)"),
        (WebMode.ALLOWLIST, "meta.example.com:80", {"meta.example.com": [["169.254.169.254"]]},
         "web: 169.254.169.254 is a cloud metadata address (meta.example.com resolves to it)"),
        (WebMode.OPEN, "[::ffff:10.1.2.3]:443", {}, "web: 10.1.2.3 is a private address (inside ::ffff:10.1.2.3)"),
        (WebMode.OPEN, "[64:ff9b::a9fe:a9fe]:443", {}, "web: 169.254.169.254 is a cloud metadata address"),
        (WebMode.OPEN, "nowhere.test:443", {}, "web: nowhere.test does not resolve"),
    ],
)
async def test_refusals_name_the_rule(tmp_path: Path, mode: WebMode, target: str, answers: dict, why: str) -> None:
    r = WebRules(folder="family", mode=mode, allow=("*.example.com",), deny=("*.tracker.test",),
                 allow_networks=(ipaddress.ip_network("169.254.0.0/16"),))
    async with trio.open_nursery() as nursery:
        door = Door(tmp_path, r, LIMITS, Resolver(answers))
        await door.start(nursery)
        reply = await door.exchange(f"CONNECT {target} HTTP/1.1\r\n\r\n")
        nursery.cancel_scope.cancel()
    status, _, rest = reply.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 40") or status.startswith(b"HTTP/1.1 50")
    assert why in status.decode(), status  # the reason phrase carries the rule (clients show it)
    assert rest.endswith(status.split(b" ", 2)[2] + b"\n")  # and the body too
    [rec] = door.records
    assert rec.verdict == WebVerdict.REFUSED and why in rec.rule and rec.bytes_down == 0


async def test_a_name_that_changes_its_answer_is_checked_again(tmp_path: Path) -> None:
    """DNS rebinding: the first lookup is a site the group may reach, the second points at the LAN."""
    async with trio.open_nursery() as nursery:
        port = await site(nursery, page_handler(b"ok"))
        resolver = Resolver({"rebind.test": [["127.0.0.1"], ["10.0.0.7"]]})
        door = Door(tmp_path, rules(ports=(port,)), LIMITS, resolver)
        await door.start(nursery)
        first = await door.exchange(f"GET http://rebind.test:{port}/ HTTP/1.1\r\n\r\n")
        second = await door.exchange(f"GET http://rebind.test:{port}/ HTTP/1.1\r\n\r\n")
        nursery.cancel_scope.cancel()
    assert first.endswith(b"ok")
    assert second.startswith(b"HTTP/1.1 403 web: 10.0.0.7 is a private address (rebind.test resolves to it)")
    assert resolver.calls == ["rebind.test", "rebind.test"]


async def test_the_turn_budget_cuts_a_download_and_refuses_until_the_next_turn(tmp_path: Path) -> None:
    big = b"x" * (3 * 1024 * 1024)
    async with trio.open_nursery() as nursery:
        port = await site(nursery, page_handler(big))
        limits = WebLimits(turn_bytes=1024 * 1024, day_bytes=0, max_connections=4, connect_timeout=3, idle_timeout=5)
        door = Door(tmp_path, rules(ports=(port,)), limits)
        await door.start(nursery)
        first = await door.exchange(f"GET http://127.0.0.1:{port}/big HTTP/1.1\r\n\r\n")
        second = await door.exchange(f"GET http://127.0.0.1:{port}/big HTTP/1.1\r\n\r\n")
        door.door.new_turn("family")
        third = await door.exchange(f"GET http://127.0.0.1:{port}/big HTTP/1.1\r\n\r\n")
        await door.settled(3)
        nursery.cancel_scope.cancel()
    assert 1024 * 1024 <= len(first) < len(big)  # cut a chunk past the budget, not the whole file
    assert second.startswith(b"HTTP/1.1 429 web: this turn's 1 MB of web traffic are used (web_turn_mb)")
    assert len(third) >= 1024 * 1024  # a new turn, a new budget
    assert door.records[0].rule.startswith("web: this turn's 1 MB")
    assert door.records[1].verdict == WebVerdict.REFUSED


async def test_the_day_budget_counts_what_the_store_holds_for_today(tmp_path: Path) -> None:
    """web_day_mb: the door starts the day from the stored sums (a restart does not reset it)."""
    asked: list[tuple[str, str]] = []

    async def stored(folder: str, day: str) -> int:
        asked.append((folder, day))
        return 900 * 1024  # used before this daemon started

    async with trio.open_nursery() as nursery:
        port = await site(nursery, page_handler(b"y" * (200 * 1024)))
        limits = WebLimits(turn_bytes=0, day_bytes=1024 * 1024, max_connections=4, connect_timeout=3, idle_timeout=5)
        door = Door(tmp_path, rules(ports=(port,)), limits, day_bytes=stored)
        await door.start(nursery)
        first = await door.exchange(f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n")
        door.door.new_turn("family")  # a new turn does not give a new day
        second = await door.exchange(f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\n\r\n")
        await door.settled(2)
        nursery.cancel_scope.cancel()
    assert asked == [("family", datetime.now(UTC).date().isoformat())]
    assert 124 * 1024 <= len(first) < 200 * 1024, len(first)  # cut once the day's 1 MB were used
    assert second.startswith(b"HTTP/1.1 429 web: today's 1 MB of web traffic for this group are used (web_day_mb)")


async def test_a_site_that_hangs_is_cut_at_the_idle_timeout(tmp_path: Path) -> None:
    async def hang(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port = await site(nursery, hang)
        limits = WebLimits(turn_bytes=0, day_bytes=0, max_connections=4, connect_timeout=3, idle_timeout=0.5)
        door = Door(tmp_path, rules(ports=(port,)), limits)
        await door.start(nursery)
        with trio.fail_after(5):
            reply = await door.exchange(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n", b"hello?")
        await door.settled(1)
        nursery.cancel_scope.cancel()
    assert reply == b"HTTP/1.1 200 Connection established\r\n\r\n"
    assert door.records[0].rule == "web: no traffic for 0.5 s (web_idle_timeout)"


async def test_connections_at_once_are_limited_per_group(tmp_path: Path) -> None:
    async def hang(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port = await site(nursery, hang)
        limits = WebLimits(turn_bytes=0, day_bytes=0, max_connections=2, connect_timeout=3, idle_timeout=30)
        door = Door(tmp_path, rules(ports=(port,)), limits)
        await door.start(nursery)
        opened = [await door.ask(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n") for _ in range(2)]
        assert all(h.startswith(b"HTTP/1.1 200") for h, _ in opened)
        third = await door.exchange(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n")
        for _, s in opened:
            await s.aclose()
        nursery.cancel_scope.cancel()
    assert third.startswith(b"HTTP/1.1 429 web: too many connections at once (2, web_max_connections)")


async def test_one_group_at_its_limits_does_not_slow_another(tmp_path: Path) -> None:
    """Group A holds all its connections on a site that hangs (and is refused more); group B, on
    the same door, is served, up to its own turn budget."""

    async def hang(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    page = b"p" * 200_000
    async with trio.open_nursery() as nursery:
        slow = await site(nursery, hang)
        fast = await site(nursery, page_handler(page))
        limits = WebLimits(turn_bytes=100_000, day_bytes=0, max_connections=2, connect_timeout=3, idle_timeout=30)
        records: list[WebRequest] = []
        door = WebDoor(limits, resolver=Resolver({}), on_request=records.append)
        a = WebRules(folder="a", mode=WebMode.OPEN, ports=(slow, fast), allow_networks=LOOP)
        b = WebRules(folder="b", mode=WebMode.OPEN, ports=(slow, fast), allow_networks=LOOP)
        await nursery.start(door.serve_group, "a", tmp_path / "a.sock", lambda: a)
        await nursery.start(door.serve_group, "b", tmp_path / "b.sock", lambda: b)

        async def ask(sock: str, head: str) -> tuple[bytes, trio.SocketStream]:
            stream = await trio.open_unix_socket(str(tmp_path / sock))
            await stream.send_all(head.encode())
            return await read_head(stream), stream

        held = [await ask("a.sock", f"CONNECT 127.0.0.1:{slow} HTTP/1.1\r\n\r\n") for _ in range(2)]
        assert all(h.startswith(b"HTTP/1.1 200") for h, _ in held)
        refused, s = await ask("a.sock", f"CONNECT 127.0.0.1:{fast} HTTP/1.1\r\n\r\n")
        await s.aclose()
        assert refused.startswith(b"HTTP/1.1 429 web: too many connections")
        stream = await trio.open_unix_socket(str(tmp_path / "b.sock"))
        await stream.send_all(f"GET http://127.0.0.1:{fast}/ HTTP/1.1\r\n\r\n".encode())
        got = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                got += chunk
        await stream.aclose()
        for _, held_stream in held:
            await held_stream.aclose()
        nursery.cancel_scope.cancel()
    # b's counts are its own: its page came, cut only at its own 100 kB turn budget
    assert got.startswith(b"HTTP/1.1 200 OK") and 100_000 <= len(got) < len(page), len(got)
    assert {r.folder for r in records if r.verdict is WebVerdict.REFUSED} == {"a"}


@pytest.mark.parametrize(
    ("head", "status"),
    [
        ("GARBAGE\r\n\r\n", b"400"),
        ("GET /relative HTTP/1.1\r\n\r\n", b"400"),
        ("GET https://example.com/ HTTP/1.1\r\n\r\n", b"400"),
        ("CONNECT example.com HTTP/1.1\r\n\r\n", b"400"),
        ("GET http://user:pw@example.com/ HTTP/1.1\r\n\r\n", b"400"),
        ("GET http://example.com/ HTTP/1.1\r\n" + "X-Pad: " + "a" * 20000 + "\r\n\r\n", b"431"),
    ],
)
async def test_a_malformed_request_gets_a_clear_error(tmp_path: Path, head: str, status: bytes) -> None:
    async with trio.open_nursery() as nursery:
        door = Door(tmp_path, rules(), LIMITS)
        await door.start(nursery)
        reply = await door.exchange(head)
        nursery.cancel_scope.cancel()
    assert reply.startswith(b"HTTP/1.1 " + status + b" web: ")


async def test_the_recorder_hands_requests_to_the_store_in_batches(tmp_path: Path) -> None:
    written: list[list[WebRequest]] = []

    async def write(batch: list[WebRequest]) -> None:
        written.append(batch)

    async with trio.open_nursery() as nursery:
        door = Door(tmp_path, rules(mode=WebMode.OFF), LIMITS)
        await door.start(nursery)
        nursery.start_soon(door.door.recorder.run, write)
        for _ in range(3):
            await door.exchange("CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        with trio.fail_after(5):
            while sum(len(b) for b in written) < 3:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert [r.host for b in written for r in b] == ["example.com"] * 3


async def test_what_the_recorder_had_not_written_is_flushed_at_shutdown(tmp_path: Path) -> None:
    written: list[WebRequest] = []

    async def write(batch: list[WebRequest]) -> None:
        written.extend(batch)

    async with trio.open_nursery() as nursery:
        door = Door(tmp_path, rules(mode=WebMode.OFF), LIMITS)
        await door.start(nursery)
        for _ in range(3):  # no recorder runs: they wait in the queue
            await door.exchange("CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        await door.settled(3)
        nursery.cancel_scope.cancel()
    assert await door.door.recorder.flush(write) == 3 and len(written) == 3
    assert await door.door.recorder.flush(write) == 0 and len(written) == 3


def test_rules_for_a_group_follow_its_mode_then_the_daemons_defaults() -> None:
    config = Config(web_allow=("docs.python.org",), web_deny=("*.ads.test",), web_allow_networks=("192.168.5.0/24",))
    main = rules_for(Group("local:main", "main", is_main=True), config)
    other = rules_for(Group("local:family", "family"), config)
    own = rules_for(Group("local:work", "work", web=WebMode.ALLOWLIST, web_allow=("*.example.com",), web_deny=("x.test",)), config)
    assert (main.mode, other.mode, own.mode) == (WebMode.OPEN, WebMode.OFF, WebMode.ALLOWLIST)
    assert own.allow == ("docs.python.org", "*.example.com") and own.deny == ("*.ads.test", "x.test")
    assert own.check_target("docs.python.org", 443) == ("docs.python.org", None)
    assert own.check_target("API.Example.COM.", 443) == ("api.example.com", None)
    assert own.check_target("example.com", 443)[1] == "web: example.com is not on this group's allow list"
    assert own.check_address(ipaddress.ip_address("192.168.5.9")) is None  # opened on purpose
    assert own.check_address(ipaddress.ip_address("192.168.6.9")) == "web: 192.168.6.9 is a private address"


@pytest.mark.parametrize(
    ("address", "kind"),
    [("8.8.8.8", None), ("2606:4700::1111", None), ("127.0.0.1", "a loopback address"), ("::1", "a loopback address"),
     ("10.1.1.1", "a private address"), ("172.20.0.1", "a private address"), ("192.168.0.1", "a private address"),
     ("fd12::1", "a private address"), ("169.254.1.1", "a link-local address"), ("fe80::1", "a link-local address"),
     ("100.64.0.1", "a shared (carrier-grade NAT) address"), ("0.0.0.0", "an unspecified address"),
     ("224.0.0.1", "a multicast address"), ("240.0.0.1", "a private address")],
)
def test_address_kinds(address: str, kind: str | None) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


async def test_the_runner_fetches_the_refusals_and_cuts_once(tmp_path: Path) -> None:
    """A refused CONNECT shows in WebFetch only as "proxy refused the connection", a cut download
    as a broken one: the door keeps both for the runner, which asks through the door itself
    (agent/ngb_agent/host.py WebForwarder.notes) after a tool call that used the web."""
    big = b"x" * (3 * 1024 * 1024)
    notes = "GET http://notes.door.invalid/notes HTTP/1.1\r\nHost: notes.door.invalid\r\n\r\n"
    async with trio.open_nursery() as nursery:
        port = await site(nursery, page_handler(big))
        limits = WebLimits(turn_bytes=1024 * 1024, day_bytes=0, max_connections=4, connect_timeout=3, idle_timeout=5)
        door = Door(tmp_path, rules(ports=(443, port)), limits)
        await door.start(nursery)
        empty = await door.exchange(notes)
        await door.exchange("CONNECT 10.0.0.5:443 HTTP/1.1\r\n\r\n")
        await door.exchange(f"GET http://127.0.0.1:{port}/big HTTP/1.1\r\n\r\n")
        first = await door.exchange(notes)
        again = await door.exchange(notes)
        await door.settled(2)
        nursery.cancel_scope.cancel()
    assert empty.startswith(b"HTTP/1.1 200 OK") and empty.endswith(b"\r\n\r\n[]")
    said = json.loads(first.partition(b"\r\n\r\n")[2])
    assert said[0] == "web: 10.0.0.5 is a private address"
    assert said[1].startswith(f"web: this turn's 1 MB of web traffic are used (web_turn_mb): the connection to "
                              f"127.0.0.1:{port} was cut after "), said
    assert again.endswith(b"\r\n\r\n[]"), "each note is handed over once"
    assert len(door.records) == 2, "asking for the notes is not a web request"


async def test_a_flood_of_refusals_is_logged_thirty_lines_a_minute_and_stored_in_full(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import ngb.sandbox.web_door as web_door

    caplog.set_level("WARNING", logger="ngb.sandbox.web_door")
    monkeypatch.setattr(web_door, "LOG_WINDOW", 1.0)
    async with trio.open_nursery() as nursery:
        door = Door(tmp_path, rules(), LIMITS)
        await door.start(nursery)
        for _ in range(45):
            await door.exchange("CONNECT 10.0.0.5:443 HTTP/1.1\r\n\r\n")
        await door.settled(45)
        await trio.sleep(1.0)  # the window (a minute in the daemon) has passed
        await door.exchange("CONNECT 10.0.0.5:443 HTTP/1.1\r\n\r\n")
        await door.settled(46)
        nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if r.name == "ngb.sandbox.web_door"]
    assert len(lines) == 31, lines[-3:]
    assert lines[-1].endswith("(15 more refusals were not logged; ngb web log has them)"), lines[-1]
    assert len(door.records) == 46 and all(r.verdict is WebVerdict.REFUSED for r in door.records)
