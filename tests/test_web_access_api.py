"""The web settings and the web-use log through the REST API, against a real Daemon (fake agent):
a group's web mode and host patterns (checked like every other setting), the mode in force, and
GET /api/web with the door's log and sums."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ngb.records import WebMode, WebRequest, WebVerdict, utcnow

TOKEN = "web-access-token-0123456789"


def logged(folder: str, host: str, *, minutes: int = 0, refused: bool = False, up: int = 0, down: int = 0) -> WebRequest:
    return WebRequest(folder=folder, time=utcnow() - timedelta(minutes=minutes), host=host, port=443, method="CONNECT",
                      verdict=WebVerdict.REFUSED if refused else WebVerdict.ALLOWED,
                      rule="web: 10.0.0.5 is a private address" if refused else "", bytes_up=up, bytes_down=down)


async def test_group_json_shows_the_web_in_force(run_daemon) -> None:
    d = await run_daemon()
    main = (await d.http.get("/api/groups/local:main")).json()
    assert (main["web"], main["web_effective"], main["web_allow"], main["web_deny"]) == (None, "open", [], [])
    r = await d.http.post("/api/groups", json={"chat": "local:team", "folder": "team"})
    assert r.status_code == 201 and (r.json()["web"], r.json()["web_effective"]) == (None, "off"), r.text
    listed = {g["folder"]: g["web_effective"] for g in (await d.http.get("/api/groups")).json()}
    assert listed == {"main": "open", "team": "off"}


async def test_the_daemon_default_decides_when_the_group_does_not(run_daemon) -> None:
    d = await run_daemon(NGB_WEB_DEFAULT="allowlist", NGB_WEB_MAIN="off")
    r = await d.http.post("/api/groups", json={"chat": "local:team", "folder": "team"})
    assert r.json()["web_effective"] == "allowlist"
    assert (await d.http.get("/api/groups/local:main")).json()["web_effective"] == "off"


async def test_create_and_change_a_groups_web(run_daemon) -> None:
    d = await run_daemon()
    r = await d.http.post("/api/groups", json={"chat": "local:team", "folder": "team", "web": "allowlist",
                                               "web_allow": ["Example.COM", "*.wikipedia.org", "example.com"]})
    assert r.status_code == 201, r.text
    assert (r.json()["web"], r.json()["web_effective"], r.json()["web_allow"]) == (
        "allowlist", "allowlist", ["example.com", "*.wikipedia.org"]), "normalized, without repeats"
    r = await d.http.patch("/api/groups/local:team", json={"web": "open", "web_deny": ["ads.example.com"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["web"], body["web_effective"], body["web_allow"], body["web_deny"]) == (
        "open", "open", ["example.com", "*.wikipedia.org"], ["ads.example.com"]), "only what was sent changes"
    # in force at once (the registry the door reads) and kept (the store)
    live = d.daemon.registry.get("local:team")
    assert live is not None and (live.web, live.web_deny) == (WebMode.OPEN, ("ads.example.com",))
    stored = await d.daemon.store.group("local:team")
    assert stored is not None and (stored.web, stored.web_allow) == (WebMode.OPEN, ("example.com", "*.wikipedia.org"))
    r = await d.http.patch("/api/groups/local:team", json={"web": None, "web_allow": []})
    assert (r.json()["web"], r.json()["web_effective"], r.json()["web_allow"]) == (None, "off", [])


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"web": "sometimes"}, "'web' must be one of off, allowlist, open"),
        ({"web": 1}, "expected str"),
        ({"web_allow": ["10.0.0.5"]}, "addresses are not host patterns"),
        ({"web_allow": ["https://example.com/page"]}, "not a URL"),
        ({"web_deny": ["example.com:8080"]}, "no port"),
        ({"web_deny": ["ex*ample.com"]}, "wildcard"),
        ({"web_allow": ["*.com"]}, "needs a domain with a dot"),
        ({"web_allow": ["exa mple.com"]}, "not a valid host name"),
        ({"web_allow": "example.com"}, "expected list"),
        ({"web_allow": ["x.example"] * 501}, "more than 500"),
    ],
)
async def test_bad_web_settings_are_refused_with_the_reason(run_daemon, body, needle) -> None:
    d = await run_daemon()
    r = await d.http.patch("/api/groups/local:main", json=body)
    assert r.status_code == 400 and needle in r.json()["error"], r.text
    r = await d.http.post("/api/groups", json={"chat": "local:team", "folder": "team", **body})
    assert r.status_code == 400 and needle in r.json()["error"], r.text
    main = d.daemon.registry.get("local:main")
    assert main is not None and (main.web, main.web_allow, main.web_deny) == (None, (), ())
    assert d.daemon.registry.get("local:team") is None


async def test_api_web_returns_the_log_and_the_sums(run_daemon) -> None:
    d = await run_daemon()
    await d.daemon.store.record_web([
        logged("main", "old.example", minutes=3, up=10, down=100),
        logged("main", "newest.example", up=1, down=2),
        logged("main", "10.0.0.5", minutes=1, refused=True),
        logged("ops", "ops.example", down=5),
    ])
    r = await d.http.get("/api/web", params={"group": "main", "limit": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["day"] == utcnow().date().isoformat()
    assert [x["host"] for x in body["recent"]] == ["newest.example", "10.0.0.5"]
    refused = body["recent"][1]
    assert (refused["verdict"], refused["rule"], refused["port"], refused["method"]) == (
        "refused", "web: 10.0.0.5 is a private address", 443, "CONNECT")
    assert body["usage"] == [{"folder": "main", "day": body["day"], "requests": 3, "refused": 1,
                              "bytes_up": 11, "bytes_down": 102}]
    everyone = (await d.http.get("/api/web")).json()
    assert len(everyone["recent"]) == 4 and {u["folder"] for u in everyone["usage"]} == {"main", "ops"}
    assert (await d.http.get("/api/web", params={"group": "MAIN", "limit": 0})).json()["recent"] == [], "limit 0: sums only"
    assert len((await d.http.get("/api/web", params={"group": "MAIN"})).json()["recent"]) == 3, "folders ignore case"
    for params, needle in (({"limit": "501"}, "'limit'"), ({"limit": "x"}, "'limit'"), ({"days": "0"}, "'days'"),
                           ({"group": "../etc"}, "'group'")):
        r = await d.http.get("/api/web", params=params)
        assert r.status_code == 400 and needle in r.json()["error"], (params, r.text)


async def test_api_web_needs_the_token(run_daemon) -> None:
    d = await run_daemon(NGB_API_TOKEN=TOKEN)
    async with d.anonymous() as anon:
        assert (await anon.get("/api/web")).status_code == 401
        r = await anon.get("/api/web", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["recent"] == []
